"""The `channel` transport: the worker actors of sut/cluster.py, each reached on the hot path
through a socket of its own (actors/channel.py) instead of a Ray actor call.

Ray still places, starts, watches and stops the workers, shares the samples and carries every
control call (set_samples, set_payloads, describe); only `run_batches` and its answer travel
over the socket: one write out, one read back, two thread wake-ups where a Ray call takes
about eight (README, "Transports"). Everything around the call is the serving path's
(scheduler slots, ledger, retries, exactly-once).

Each worker's answers are read by a thread of its own and applied there (`direct_replies`,
as LocalWorkers does). A channel that ends while the pool is open means its worker is lost
(process killed, node gone): its unanswered batches go to the others, as with Ray calls. A
worker whose channel cannot be opened (a firewall between nodes, say) is reached through Ray
calls instead, with a warning, unless `--transport channel` asked for channels only.
"""

from __future__ import annotations

import logging
import socket
import threading

from actors.channel import connect, new_key, recv_frame, send_frame
from harness_base import ConfigError, first_line
from sut.cluster import WorkerPool
from sut.config import RunConfig
from sut.serving import CallReturned, WorkerLost

log = logging.getLogger(__name__)

_OPEN_TIMEOUT_S = 30.0


class ChannelPool(WorkerPool):
    transport = "channel"
    direct_replies = True

    def __init__(self, config: RunConfig, **options) -> None:
        super().__init__(config, **options)
        self._channels: dict[str, socket.socket] = {}
        self._send_locks: dict[str, threading.Lock] = {}
        self._readers: list[threading.Thread] = []
        self._closing = threading.Event()

    def _start(self) -> None:
        super()._start()
        self._open_channels()

    def _open_channels(self) -> None:
        import ray

        keys = {worker_id: new_key() for worker_id in self.workers}
        opened = {worker_id: handle.open_channel.remote(keys[worker_id], self.slots_per_worker)
                  for worker_id, handle in self.workers.items()}
        for worker_id, ref in opened.items():
            try:
                host, port = ray.get(ref, timeout=_OPEN_TIMEOUT_S)
                sock = connect((host, port), keys[worker_id], timeout_s=_OPEN_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - Ray calls still reach this worker
                if self.config.transport == "channel":
                    raise ConfigError(f"--transport channel: cannot open a channel to "
                                      f"{worker_id} ({first_line(error)}). Let the driver "
                                      "reach the workers' nodes on any TCP port, or use "
                                      "--transport calls.") from None
                log.warning("%s: no channel (%s); its batches go through Ray calls",
                            worker_id, first_line(error))
                continue
            self._channels[worker_id] = sock
            self._send_locks[worker_id] = threading.Lock()
            reader = threading.Thread(target=self._read, args=(worker_id, sock),
                                      name=f"channel-{worker_id}", daemon=True)
            reader.start()
            self._readers.append(reader)
        for description in self.descriptions:
            description["transport"] = ("channel" if description.get("worker_id")
                                        in self._channels else "calls")

    # -- the transport ------------------------------------------------------------------------
    def _send(self, worker_id: str, call_id: int, batches) -> None:
        sock = self._channels.get(worker_id)
        if sock is None:
            super()._send(worker_id, call_id, batches)  # no channel to it: a Ray call
            return
        try:
            with self._send_locks[worker_id]:
                send_frame(sock, (call_id, batches))
        except Exception as error:  # noqa: BLE001 - a call not sent must not hold its slot
            # Not applied here (this may be LoadGen's issue thread, holding the dispatcher):
            # the completion thread takes it, and the call's batches go to the others.
            self.events.put(WorkerLost(worker_id, f"its channel broke: "
                                                  f"{type(error).__name__}: {error}"))

    def _read(self, worker_id: str, sock: socket.socket) -> None:
        """Answers in, applied on this thread, until the channel ends."""
        try:
            while True:
                call_id, items = recv_frame(sock)
                self.reply(CallReturned(worker_id, call_id, items))
        except Exception as error:  # noqa: BLE001 - any end of the channel ends the worker
            if not self._closing.is_set():
                self.reply(WorkerLost(worker_id, f"its channel ended ({first_line(error)})"))
        # LoadGen crashes if a thread that answered samples ends while a test runs.
        self._closing.wait()

    def _forget_worker(self, worker_id: str) -> None:
        sock = self._channels.pop(worker_id, None)
        if sock is not None:
            _close(sock)
        super()._forget_worker(worker_id)

    def close(self) -> None:
        self._closing.set()
        for sock in list(self._channels.values()):
            _close(sock)
        for reader in self._readers:
            reader.join(timeout=5)
        super().close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
