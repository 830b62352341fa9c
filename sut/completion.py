"""The driver thread that brings results back: aggregator -> Completer -> LoadGen.

It also watches the workers: a worker whose serving loop ended (process killed, node lost) has
its batches returned to the queue, and when no worker is left the run is aborted, so LoadGen is
never left waiting.
"""

from __future__ import annotations

import logging
import threading
import time

from sut.dispatch import Completer

log = logging.getLogger(__name__)

_DRAIN_WAIT_S = 0.2
_WORKER_CHECK_EVERY_S = 0.5


class CompletionLoop:
    def __init__(self, pool, completer: Completer) -> None:
        self._pool = pool
        self._completer = completer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> "CompletionLoop":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        import ray

        aggregator = self._pool.aggregator
        # Two drains in flight: while one batch of results is being completed, the next is
        # already on its way.
        in_flight = [aggregator.drain.remote(_DRAIN_WAIT_S), aggregator.drain.remote(_DRAIN_WAIT_S)]
        last_check = time.monotonic()
        try:
            while not self._stop.is_set():
                items = ray.get(in_flight.pop(0))
                in_flight.append(aggregator.drain.remote(_DRAIN_WAIT_S))
                for item in items:
                    self._completer.handle(item)
                if time.monotonic() - last_check >= _WORKER_CHECK_EVERY_S:
                    last_check = time.monotonic()
                    self._check_workers()
        except BaseException as error:  # noqa: BLE001 - any failure here must end the run
            self.error = error
            self._completer.abort(f"the completion path failed: {type(error).__name__}: {error}")

    def _check_workers(self) -> None:
        lost = self._pool.check_workers()
        if lost and self._pool.live_workers() == 0:
            names = ", ".join(f"{worker} ({why})" for worker, why in self._pool.lost_workers)
            self._completer.abort(f"no worker left: {names}")
