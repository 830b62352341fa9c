"""The channel's wire (actors/channel.py) on this machine's loopback, without Ray; then its
pool (sut/channels.py) on the session's Ray instance, with a null-backend worker."""

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


def test_both_ends_probe_a_silent_peer(served):
    """A peer whose node vanishes sends no FIN; keep-alive and the unacknowledged-data bound
    turn that into a broken channel (a lost worker) instead of a read that waits for ever."""
    server, sock = served()
    assert server.closed.wait(0) is False
    for end in (sock, server._sock):
        assert end.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert end.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
        assert end.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert end.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000


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


# -- the pool on Ray -----------------------------------------------------------------------------

@pytest.fixture
def null_config(ray_address, known_set, tmp_path):
    from sut.cli import resolve

    config, _ = resolve(["--profile", "resnet50-onnxruntime", "--backend", "null",
                         "--dataset-path", str(known_set.dataset_path), "--scenario", "Server",
                         "--address", ray_address, "--output", str(tmp_path / "out"),
                         "--cache_dir", str(tmp_path / "cache")])
    return config


def _one_call_round_trip(pool):
    """Load two samples on the worker, send one batch, return the event that answers it."""
    import numpy as np
    import ray

    from actors.messages import Batch

    pool.broadcast("set_samples", ray.put(np.zeros((2, 3, 224, 224), np.uint8)),
                   np.array([0, 1]), False)
    pool.put([Batch(7, np.array([70], np.uint64), np.array([1], np.int64))])
    return pool.events.get(timeout=60)


def test_the_pool_sends_its_calls_over_the_channel(null_config):
    from sut.channels import ChannelPool
    from sut.serving import CallReturned

    with ChannelPool(null_config) as pool:
        assert [d["transport"] for d in pool.descriptions] == ["channel"]
        event = _one_call_round_trip(pool)
        assert isinstance(event, CallReturned)
        assert [item.batch_id for item in event.items] == [7]
        assert pool._channels  # the call went over the socket, not Ray


def test_a_worker_without_a_channel_is_reached_through_ray_calls(null_config, monkeypatch,
                                                                 caplog):
    import sut.channels
    from sut.channels import ChannelPool
    from sut.serving import CallReturned

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(sut.channels, "connect", refused)
    with ChannelPool(null_config) as pool:
        assert [d["transport"] for d in pool.descriptions] == ["calls"]
        event = _one_call_round_trip(pool)
        assert isinstance(event, CallReturned) and event.items[0].batch_id == 7
    assert "worker-0: no channel (" in caplog.text and "Ray calls" in caplog.text
