"""The channel's wire (actors/channel.py) on this machine's loopback, without Ray."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from actors.channel import (ChannelError, ChannelServer, connect, new_key, recv_frame,
                            send_frame)


def _failed(batches, error):
    return [("failed", batch, type(error).__name__) for batch in batches]


@pytest.fixture
def served():
    """A server whose handler doubles each 'batch' (an int); yields (server, driver socket)."""
    opened = []

    def start(handler=lambda batches: [2 * batch for batch in batches], slots=2):
        key = new_key()
        server = ChannelServer(handler, _failed, key, slots=slots).start()
        sock = connect(server.address, key)
        opened.append((server, sock))
        return server, sock

    yield start
    for server, sock in opened:
        sock.close()
        server.close()


def test_each_call_is_answered_with_its_own_id(served):
    _, sock = served()
    for call_id in range(50):
        send_frame(sock, (call_id, [call_id, call_id + 1]))
        assert recv_frame(sock) == (call_id, [2 * call_id, 2 * call_id + 2])


def test_a_call_is_answered_while_another_still_runs(served):
    """Two slots: call 0 holds its thread; call 1 is read and answered by the other."""
    release = threading.Event()

    def handler(batches):
        if batches == ["slow"]:
            assert release.wait(10)
        return batches

    _, sock = served(handler)
    send_frame(sock, (0, ["slow"]))
    send_frame(sock, (1, ["fast"]))
    assert recv_frame(sock) == (1, ["fast"])
    release.set()
    assert recv_frame(sock) == (0, ["slow"])


def test_a_handler_that_raises_answers_failures_and_the_channel_goes_on(served):
    def handler(batches):
        if batches == [13]:
            raise MemoryError("no room")
        return batches

    _, sock = served(handler)
    send_frame(sock, (0, [13]))
    assert recv_frame(sock) == (0, [("failed", 13, "MemoryError")])
    send_frame(sock, (1, [14]))
    assert recv_frame(sock) == (1, [14])


def test_a_wrong_key_is_refused_and_nothing_it_sends_is_read():
    called = []
    key = new_key()
    server = ChannelServer(lambda batches: called.append(batches) or batches, _failed, key).start()
    try:
        with pytest.raises(ChannelError):
            connect(server.address, new_key())
        # A client that skips the handshake and sends a frame at once is dropped unread.
        raw = socket.create_connection(server.address, timeout=5)
        raw.recv(16)
        send_frame(raw, (0, ["payload" * 20]))
        raw.settimeout(5)
        try:
            assert raw.recv(100) == b""  # closed on us
        except ConnectionResetError:
            pass  # closed on us with our bytes unread
        raw.close()
        assert called == []
        # The right key still gets in afterwards.
        sock = connect(server.address, key)
        send_frame(sock, (7, [1]))
        assert recv_frame(sock) == (7, [1]) and called == [[1]]
        sock.close()
    finally:
        server.close()


def test_the_listener_closes_once_the_driver_is_in(served):
    server, _ = served()
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).recv(1)


def test_the_driver_sees_the_end_when_the_worker_goes(served):
    server, sock = served()
    server.close()
    with pytest.raises(ChannelError):
        recv_frame(sock)


def test_the_worker_stops_serving_when_the_driver_goes(served):
    server, sock = served()
    sock.close()
    assert server.closed.wait(5)


def test_no_connection_in_time_closes_the_listener():
    server = ChannelServer(lambda batches: batches, _failed, new_key(),
                           accept_timeout_s=0.2).start()
    assert server.closed.wait(5)
    time.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).recv(1)


def test_a_key_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        ChannelServer(lambda batches: batches, _failed, b"short")
