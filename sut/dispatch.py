"""Both ends of the driver: LoadGen's queries go out as batches, results come back as completions.

`Dispatcher` runs on LoadGen's issue thread (and its own timer thread for Server batching): it
records each batch in the ledger, then hands it to the scheduler. `Completer` runs on the
completion thread: it turns each result into exactly one completion per sample, retries a
failed batch a bounded number of times, and on abort closes out everything still outstanding so
LoadGen never waits forever.

Both take their Ray and LoadGen ends as plain callables, so tests drive them without either.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Callable, Iterator

import numpy as np

from actors.messages import Batch, BatchFailure, BatchResult
from harness_base import first_line
from sut.batching import DynamicBatcher, split_into_batches
from sut.ledger import CompletionLedger

log = logging.getLogger(__name__)

# complete(batch, payload_data, payload_offsets): tell LoadGen every sample of the batch is done.
# payload_data is None for "no bytes" (performance mode, or closing out an aborted run).
CompleteFn = Callable[[Batch, "np.ndarray | None", "np.ndarray | None"], None]

_issuing = threading.local()


def sending_for_loadgen() -> bool:
    """True on a thread inside Dispatcher.issue: what it sends answers a query LoadGen is
    waiting on. A transport may run such a call on this thread (sut/serving.py LocalWorkers);
    anything else (warm-up, whose wait must keep its timeout; the completion thread, which
    must not answer itself) it sends the usual way."""
    return getattr(_issuing, "active", False)


class Completer:
    """Results -> completions, exactly once per sample."""

    def __init__(self, ledger: CompletionLedger, complete: CompleteFn,
                 resend: Callable[[list[Batch]], None], max_attempts: int = 3) -> None:
        self._ledger = ledger
        self._complete = complete
        self._resend = resend
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self.abort_reason: str | None = None
        self.retried_batches = 0
        self.on_batch_done: Callable[[], None] = lambda: None
        self._warm_up_ids: set[int] = set()
        self._warmed_up = threading.Event()

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    def expect_warm_up(self, batch_ids: list[int]) -> threading.Event:
        """These batches are warm-up traffic: their answers go nowhere; the event is set once
        all have come back (result or failure)."""
        with self._lock:
            self._warm_up_ids = set(batch_ids)
            self._warmed_up.clear()
            if not self._warm_up_ids:
                self._warmed_up.set()
        return self._warmed_up

    def handle(self, item: BatchResult | BatchFailure) -> None:
        if item.batch_id in self._warm_up_ids:
            with self._lock:
                self._warm_up_ids.discard(item.batch_id)
                if not self._warm_up_ids:
                    self._warmed_up.set()
            return
        if isinstance(item, BatchFailure):
            self._handle_failure(item)
            return
        batch = self._ledger.complete(item.batch_id)
        if batch is None:
            return  # answered before (a retried batch), or closed out by an abort
        self._complete(batch, item.payload_data, item.payload_offsets)
        self.on_batch_done()

    def _handle_failure(self, failure: BatchFailure) -> None:
        batch, attempts = self._ledger.failed(failure.batch_id)
        if batch is None:
            return
        log.warning("batch %d failed on worker %s (attempt %d of %d): %s", failure.batch_id,
                    failure.worker_id, attempts, self._max_attempts, failure.error.strip())
        if attempts < self._max_attempts:
            self.retried_batches += 1
            self._resend([batch])
        else:
            self.abort(f"batch {failure.batch_id} failed {attempts} times; last error on worker "
                       f"{failure.worker_id}: {first_line(failure.error)}")

    def abort(self, reason: str) -> None:
        """Stop the run: complete everything outstanding with empty answers (LoadGen needs every
        sample answered to return) and remember why, so the report says FAILED."""
        with self._lock:
            if self.abort_reason is None:
                self.abort_reason = reason
                log.error("aborting the run: %s", reason)
        for batch in self._ledger.close_all():
            self._complete(batch, None, None)

    def close_out(self, batch: Batch) -> None:
        """Answer a batch at once with no payload (used for samples issued after an abort)."""
        self._complete(batch, None, None)


class Dispatcher:
    """LoadGen's issue side: samples in, batches out.

    issue() is called on LoadGen's issue thread and never blocks on Ray (sending is an
    asynchronous actor call). For Server, a timer thread flushes partial batches when due.
    """

    def __init__(self, scenario: str, max_batchsize: int, ledger: CompletionLedger,
                 send: Callable[[list[Batch]], None], completer: Completer,
                 idle_worker: Callable[[], bool], batch_ids: Iterator[int],
                 batch_timeout_s: float = 0.001) -> None:
        self._max_batchsize = max_batchsize
        self._ledger = ledger
        self._send = send
        self._completer = completer
        self._idle_worker = idle_worker
        self._batch_ids = batch_ids
        self._wake = threading.Condition()
        self._batcher = (DynamicBatcher(max_batchsize, batch_timeout_s)
                         if scenario == "Server" else None)
        self._stopping = False
        self._timer: threading.Thread | None = None
        completer.on_batch_done = self.poke

    # -- LoadGen callbacks ------------------------------------------------------------------
    def issue(self, response_ids: np.ndarray, sample_indices: np.ndarray) -> None:
        if self._batcher is None:
            _issuing.active = True
            try:
                self._emit(split_into_batches(response_ids, sample_indices,
                                              self._max_batchsize))
            finally:
                _issuing.active = False
            return
        with self._wake:
            ready = self._batcher.add(response_ids, sample_indices, time.monotonic())
            due = self._batcher.take_due(time.monotonic(), idle_worker=self._idle_worker())
            if due is not None:
                ready.append(due)
            self._emit(ready)
            self._wake.notify()

    def flush(self) -> None:
        if self._batcher is not None:
            with self._wake:
                due = self._batcher.take_due(time.monotonic(), force=True)
                self._emit([due] if due is not None else [])

    def poke(self) -> None:
        """A batch completed: if a worker is now idle, send the partial Server batch."""
        if self._batcher is None or not self._batcher.pending():
            return
        with self._wake:
            due = self._batcher.take_due(time.monotonic(), idle_worker=self._idle_worker())
            self._emit([due] if due is not None else [])

    def warm_up(self, sample_index: int, sizes: list[int], timeout_s: float = 60.0) -> bool:
        """Send one batch of each size (one sample repeated) through the whole path (scheduler,
        workers, completion thread) and wait for them, so the first timed queries do
        not pay for first calls. Nothing reaches LoadGen. Returns False if they did not all
        come back in time."""
        pieces = [(np.zeros(size, np.uint64), np.full(size, sample_index, np.int64))
                  for size in sizes]
        warm = [Batch(next(self._batch_ids), ids, indices) for ids, indices in pieces]
        done = self._completer.expect_warm_up([batch.batch_id for batch in warm])
        self._send(warm)
        return done.wait(timeout_s)

    def measure_round_trip(self, sample_index: int, rounds: int = 5,
                           timeout_s: float = 10.0) -> float | None:
        """The median time one single-sample warm-up batch takes through the whole path and
        back, over `rounds` sent one after another; None if one did not come back in time."""
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            if not self.warm_up(sample_index, [1], timeout_s):
                return None
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    @property
    def window_s(self) -> float | None:
        return None if self._batcher is None else self._batcher.timeout_s

    def set_window(self, seconds: float) -> None:
        """Change the Server batching window (after measuring the path)."""
        if self._batcher is not None:
            with self._wake:
                self._batcher.timeout_s = seconds
                self._wake.notify()

    # -- internals --------------------------------------------------------------------------
    def _emit(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if not pieces:
            return
        batches = [Batch(next(self._batch_ids), ids, indices) for ids, indices in pieces]
        refused = self._ledger.record(batches)  # all of them, once the run is aborting
        for batch in refused:
            self._completer.close_out(batch)
        if not refused:
            self._send(batches)

    def start(self) -> "Dispatcher":
        if self._batcher is not None:
            self._timer = threading.Thread(target=self._flush_when_due, name="server-batcher",
                                           daemon=True)
            self._timer.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._timer is not None:
            self._timer.join(timeout=5)
        self.flush()

    def _flush_when_due(self) -> None:
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                deadline = self._batcher.deadline(now)
                if deadline is None:
                    self._wake.wait()
                elif deadline > now:
                    self._wake.wait(deadline - now)
                else:
                    due = self._batcher.take_due(now, idle_worker=self._idle_worker())
                    self._emit([due] if due is not None else [])


def batch_id_counter() -> Iterator[int]:
    """Batch ids for a whole session: unique across tests, so a late answer from one test can
    never be taken for a batch of the next. (itertools.count is atomic under the GIL.)"""
    return itertools.count()
