"""The hot path's wire: one TCP connection between the driver and each worker actor.

A Ray actor call costs 1-2 ms of round trip on a 2-vCPU VM, and 5-15 ms in its tail when the
VM is busy (about eight thread hand-offs between two processes); the same batch over a plain
socket costs about 0.2 ms (README, "Transports"). So the `channel` transport keeps Ray for
what it is good at (placing, starting, stopping and watching the workers, sharing the samples
through the object store, every control call) and moves only `run_batches` onto a socket that
Ray helped set up:

    driver                                   worker actor (a thread per call slot)
    open_channel(key) -- Ray call -->         ChannelServer listens on the node's address
    connect(address, key)  -- TCP -->         accepts one connection; both prove the key
    send_frame((call_id, batches)) ------->   run_batches(batches)
    recv_frame() <-------------------------   send_frame((call_id, answers))

Frames are pickles behind an 8-byte length. Pickles run code when read, so nothing is read
before both ends have proved they hold the key (32 random bytes the driver gave the worker
through Ray; it never crosses the socket: each end answers the other's random challenge with
an HMAC), and the listener closes once the driver is in. Plain Python, no Ray: the tests drive
both ends on one machine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import socket
import struct
import threading
from typing import Callable

KEY_BYTES = 32
_NONCE_BYTES = 16
_LENGTH = struct.Struct("<Q")
# Larger than any frame of the hot path (a call of 8 batches of 256 samples' ids is ~40 KB;
# accuracy answers of detection models a few MB): a length beyond it is a broken stream.
MAX_FRAME_BYTES = 1 << 32


class ChannelError(ConnectionError):
    """The other end is gone, did not prove the key, or sent what is not a frame."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


# -- frames ------------------------------------------------------------------------------------

def send_frame(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_frame(sock: socket.socket):
    """The next object; raises ChannelError when the stream ends or breaks."""
    (length,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    if length > MAX_FRAME_BYTES:
        raise ChannelError(f"a frame of {length} bytes: the stream is broken")
    return pickle.loads(_recv_exact(sock, length))


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray(count)
    view, got = memoryview(buffer), 0
    while got < count:
        try:
            received = sock.recv_into(view[got:])
        except OSError as error:
            raise ChannelError(f"connection broken: {error}") from None
        if not received:
            raise ChannelError("connection closed by the other end")
        got += received
    return bytes(buffer)


# -- proving the key (neither end sends it) ------------------------------------------------------

def _proof(key: bytes, who: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(key, who + first + second, hashlib.sha256).digest()


def connect(address: tuple[str, int], key: bytes, timeout_s: float = 10.0) -> socket.socket:
    """The driver's end: connect, prove the key, check the worker's proof."""
    sock = socket.create_connection(address, timeout=timeout_s)
    try:
        server_nonce = _recv_exact(sock, _NONCE_BYTES)
        client_nonce = os.urandom(_NONCE_BYTES)
        sock.sendall(client_nonce + _proof(key, b"driver", server_nonce, client_nonce))
        answer = _recv_exact(sock, hashlib.sha256().digest_size)
        if not hmac.compare_digest(answer, _proof(key, b"worker", client_nonce, server_nonce)):
            raise ChannelError(f"{address[0]}:{address[1]} did not prove the worker's key")
    except BaseException:
        sock.close()
        raise
    _tune(sock)
    return sock


# A peer whose node vanishes (power, network) sends no FIN: without these a read on its
# channel would wait for ever, where a Ray call would have failed. Keep-alive probes find an
# idle connection dead in about 11 s; data left unacknowledged for 30 s does the same.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 5, 2, 3
UNACKED_TIMEOUT_MS = 30_000


def _tune(sock: socket.socket) -> None:
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
                        ("TCP_USER_TIMEOUT", UNACKED_TIMEOUT_MS)):
        if hasattr(socket, name):  # Linux has all four; elsewhere the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class ChannelServer:
    """The worker's end. Listens on `host` (port chosen by the system) until one connection
    proves the key within `accept_timeout_s`, then answers calls on `slots` threads: each
    thread reads the next call (one reader at a time), runs `handler(batches)` and writes the
    answer (one writer at a time), so one call gathers while another runs on the device.

    `handler` must return one answer per batch; if it raises, `on_error(batches, error)` makes
    the answers instead (failures the driver retries). The threads end when the connection
    does; `closed` is set then."""

    def __init__(self, handler: Callable[[list], list],
                 on_error: Callable[[list, BaseException], list], key: bytes, host: str = "127.0.0.1", slots: int = 2,
                 accept_timeout_s: float = 60.0) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the key must be {KEY_BYTES} bytes, got {len(key)}")
        self._handler, self._on_error, self._key = handler, on_error, key
        self._slots, self._accept_timeout_s = slots, accept_timeout_s
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(accept_timeout_s)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sock: socket.socket | None = None
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.closed = threading.Event()
        self.calls_answered = 0

    def start(self) -> "ChannelServer":
        threading.Thread(target=self._accept, name="channel-accept", daemon=True).start()
        return self

    def _accept(self) -> None:
        """Take the first connection that proves the key; drop any other. No connection in
        time: close, and the worker stays reachable through Ray calls only."""
        try:
            while self._sock is None:
                try:
                    sock, _ = self._listener.accept()
                except OSError:  # timed out, or closed
                    self.closed.set()
                    return
                if self._admit(sock):
                    self._sock = sock
                else:
                    sock.close()
        finally:
            self._listener.close()
        for slot in range(self._slots):
            threading.Thread(target=self._serve, name=f"channel-serve-{slot}",
                             daemon=True).start()

    def _admit(self, sock: socket.socket) -> bool:
        sock.settimeout(5.0)
        try:
            server_nonce = os.urandom(_NONCE_BYTES)
            sock.sendall(server_nonce)
            client_nonce = _recv_exact(sock, _NONCE_BYTES)
            proof = _recv_exact(sock, hashlib.sha256().digest_size)
            if not hmac.compare_digest(proof, _proof(self._key, b"driver", server_nonce,
                                                     client_nonce)):
                return False
            sock.sendall(_proof(self._key, b"worker", client_nonce, server_nonce))
        except (OSError, ChannelError):
            return False
        _tune(sock)
        return True

    def _serve(self) -> None:
        sock = self._sock
        try:
            while True:
                with self._read_lock:
                    call_id, batches = recv_frame(sock)
                try:
                    answers = self._handler(batches)
                except BaseException as error:  # noqa: BLE001 - answered as failures
                    answers = self._on_error(batches, error)
                with self._write_lock:
                    send_frame(sock, (call_id, answers))
                    self.calls_answered += 1
        except Exception:  # noqa: BLE001 - the driver closed the channel, is gone, or sent
            pass  # what is no frame: either way this channel is over
        finally:
            self.close()

    def close(self) -> None:
        self.closed.set()
        for sock in (self._sock, self._listener):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
