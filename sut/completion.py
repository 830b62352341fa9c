"""The driver thread that brings results back: pool events -> Completer -> LoadGen.

It also watches the run: when no worker is left the run is aborted, and when samples are
outstanding and nothing comes back for a long time (a stuck backend) the run is aborted too, so
LoadGen is never left waiting.
"""

from __future__ import annotations

import logging
import threading
import time

from harness_base import first_line
from sut.dispatch import Completer

log = logging.getLogger(__name__)

_EVENT_WAIT_S = 0.2
# Samples outstanding and not one result for this long: something is lost; end the run.
STALL_TIMEOUT_S = 600.0


class CompletionLoop:
    """Drains `pool.take_events`, applies each with `pool.accept`, hands the results to the
    Completer. The pool is anything with take_events/accept/live_workers/lost_workers
    (sut/serving.py), so tests drive this loop without Ray."""

    def __init__(self, pool, completer: Completer, ledger,
                 stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self._pool = pool
        self._completer = completer
        self._ledger = ledger
        self._stall_timeout_s = stall_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)
        self._apply_lock = threading.Lock()
        self._answered_at = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> "CompletionLoop":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop and join; False if the thread is still running after timeout_s."""
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def apply(self, events: list) -> None:
        """Apply events and answer their results, on whichever thread calls: the loop's own, or
        a transport that hands its replies over directly (sut/in_process.py), which saves a
        thread wake-up per call. One caller at a time, so the Completer sees one stream."""
        with self._apply_lock:
            for event in events:
                for item in self._pool.accept(event):
                    self._completer.handle(item)
                    self._answered_at = time.monotonic()

    def deliver(self, event) -> None:
        """One event handed over by a transport's own thread; a failure here ends the run as
        one in the loop does."""
        try:
            self.apply([event])
        except BaseException as error:  # noqa: BLE001 - any failure here must end the run
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._completer.abort(f"the completion path failed: {type(error).__name__}: "
                              f"{first_line(error)}")

    def _run(self) -> None:
        last_progress = time.monotonic()
        warned = False
        try:
            while not self._stop.is_set():
                seen = self._answered_at
                self.apply(self._pool.take_events(_EVENT_WAIT_S))
                answered = self._answered_at != seen
                if self._pool.live_workers() == 0 and not self._completer.aborted:
                    names = ", ".join(f"{worker} ({why})"
                                      for worker, why in self._pool.lost_workers)
                    self._completer.abort(f"no worker left: {names}")
                now = time.monotonic()
                if answered or not self._ledger.outstanding_batches():
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
        except BaseException as error:  # noqa: BLE001 - any failure here must end the run
            self._fail(error)
            # This thread answered samples, so LoadGen keeps a logger for it: ending the thread
            # while LoadGen still runs crashes LoadGen (TlsLogger::SwapBuffers). Stay until the
            # test is over and stop() is called.
            self._stop.wait()
