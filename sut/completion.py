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
from sut.errors import first_line

log = logging.getLogger(__name__)

_DRAIN_WAIT_S = 0.2
_WORKER_CHECK_EVERY_S = 0.5
# Samples outstanding and not one result for this long: something is lost; end the run.
STALL_TIMEOUT_S = 600.0


class CompletionLoop:
    def __init__(self, pool, completer: Completer, ledger,
                 stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self._pool = pool
        self._completer = completer
        self._ledger = ledger
        self._stall_timeout_s = stall_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> "CompletionLoop":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop and join; False if the thread is still running after timeout_s."""
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        import ray

        aggregator = self._pool.aggregator
        # Exactly one drain in flight. With two, both wait on the aggregator and the results
        # can go to the one we are not waiting on, stalling the path by a whole drain timeout.
        pending = aggregator.drain.remote(_DRAIN_WAIT_S)
        last_check = last_progress = time.monotonic()
        warned = False
        try:
            while not self._stop.is_set():
                items = ray.get(pending)
                pending = aggregator.drain.remote(_DRAIN_WAIT_S)
                for item in items:
                    self._completer.handle(item)
                now = time.monotonic()
                if items or not self._ledger.outstanding_batches():
                    last_progress, warned = now, False
                elif (not warned and now - last_progress > self._stall_timeout_s / 10
                      and not self._completer.aborted):
                    warned = True
                    log.warning("no result for %.0f s with %d samples outstanding (a stuck "
                                "backend?); the run ends if none comes within %.0f s",
                                now - last_progress, self._ledger.outstanding_samples(),
                                self._stall_timeout_s)
                elif now - last_progress > self._stall_timeout_s and not self._completer.aborted:
                    self._completer.abort(f"no result for {self._stall_timeout_s:.0f} s with "
                                          f"{self._ledger.outstanding_samples()} samples "
                                          "outstanding")
                if now - last_check >= _WORKER_CHECK_EVERY_S:
                    last_check = now
                    self._check_workers()
            # Collect the drain still in flight: left pending at the aggregator, it would
            # swallow the results of the next test.
            for item in ray.get(pending):
                self._completer.handle(item)
        except BaseException as error:  # noqa: BLE001 - any failure here must end the run
            self.error = error
            self._completer.abort(f"the completion path failed: {type(error).__name__}: "
                                  f"{first_line(error)}")
            # This thread answered samples, so LoadGen keeps a logger for it: ending the thread
            # while LoadGen still runs crashes LoadGen (TlsLogger::SwapBuffers). Stay until the
            # test is over and stop() is called.
            self._stop.wait()

    def _check_workers(self) -> None:
        lost = self._pool.check_workers()
        if lost and self._pool.live_workers() == 0:
            names = ", ".join(f"{worker} ({why})" for worker, why in self._pool.lost_workers)
            self._completer.abort(f"no worker left: {names}")
