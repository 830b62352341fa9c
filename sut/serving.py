"""The serving path: the driver's side of every test, whatever carries the calls.

    LoadGen issue -> Dispatcher -> BatchScheduler -> send(worker, call, batches)
                                                        | (a Ray actor call, or a thread)
    LoadGen complete <- Completer <- ResultCollector <- events (CallReturned / WorkerLost)

`ServingPool` is the plain logic around the scheduler: it turns the transport's events into
results for the Completer, gives up lost workers and keeps the report's counts. `WorkerPool`
(sut/cluster.py) is a ServingPool whose calls are Ray actor calls; `LocalWorkers` runs
InferenceWorkers on threads in this process (scripts/gpu_check.py, and tests that drive the
whole path without Ray). `ServingPath` builds and tears down the per-test objects (ledger,
Completer, Dispatcher, completion loop) for the run, the QPS scan and gpu_check alike.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from actors.messages import Batch, BatchFailure, BatchResult
from sut.batching import server_batch_timeout_s
from sut.completion import CompletionLoop
from sut.dispatch import CompleteFn, Completer, Dispatcher, sending_for_loadgen
from sut.ledger import CompletionLedger
from sut.result_collector import ResultCollector
from sut.scheduler import BatchScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallReturned:
    """A call's reply: one result or failure per batch it carried."""

    worker_id: str
    call_id: int
    items: list


@dataclass(frozen=True)
class WorkerLost:
    """The worker cannot answer any more (process killed, node lost, actor gone)."""

    worker_id: str
    why: str


class ServingPool:
    """Workers behind one scheduler. Subclasses provide `_send(worker_id, call_id, batches)`,
    which must end, some time later, in exactly one event for that call in `self.events`
    (CallReturned, or WorkerLost for its worker)."""

    slots_per_worker = 2
    batches_per_call = 8
    # Replies made on a thread of this process can be applied there (CompletionLoop.deliver)
    # instead of waking the completion thread: one thread hand-off less per call.
    direct_replies = False

    def __init__(self) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.reply = self.events.put
        self.scheduler: BatchScheduler | None = None
        self.collector = ResultCollector()
        self.lost_workers: list[tuple[str, str]] = []  # (worker id, why)

    def _start_scheduler(self, worker_ids: list[str]) -> None:
        self.scheduler = BatchScheduler(worker_ids, self._send, self.slots_per_worker,
                                        self.batches_per_call)

    def _send(self, worker_id: str, call_id: int, batches: list[Batch]) -> None:
        raise NotImplementedError

    def _forget_worker(self, worker_id: str) -> None:
        """Drop what the pool holds for a lost worker (its actor handle, say)."""

    # -- the dispatcher's side --------------------------------------------------------------
    def put(self, batches: list[Batch]) -> None:
        self.scheduler.put(batches)

    def retry(self, batches: list[Batch]) -> None:
        self.scheduler.put_front(batches)

    def live_workers(self) -> int:
        return self.scheduler.live_workers() if self.scheduler else 0

    def has_idle_worker(self) -> bool:
        return self.scheduler.has_idle_worker()

    # -- the completion loop's side ---------------------------------------------------------
    def take_events(self, timeout_s: float) -> list:
        """The events that arrived, waiting up to timeout_s for the first."""
        try:
            events = [self.events.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def accept(self, event) -> list[BatchResult | BatchFailure]:
        """Apply one event; returns the results and failures for the Completer (duplicates
        dropped)."""
        if isinstance(event, WorkerLost):
            if event.worker_id in self.scheduler.workers():
                returned = self.scheduler.lost(event.worker_id)
                self._forget_worker(event.worker_id)
                self.lost_workers.append((event.worker_id, event.why))
                log.error("lost %s (%s); %d batch(es) returned to the queue", event.worker_id,
                          event.why, len(returned))
            return []
        self.scheduler.returned(event.worker_id, event.call_id)
        return [item for item in event.items if self.collector.submit(item)]

    def failures(self) -> list[tuple[int, str, str]]:
        """Batches that raised in a worker so far: (batch id, worker id, error)."""
        return [(f.batch_id, f.worker_id, f.error) for f in list(self.collector.failures)]

    def clear(self) -> int:
        """Drop the batches still waiting for a worker (a trial or test is over)."""
        return self.scheduler.clear() if self.scheduler else 0


class LocalWorkers(ServingPool):
    """InferenceWorkers (or anything with run_batches) served on threads of this process,
    one thread per worker, calls in order: the Ray-free stand-in for WorkerPool. Under a
    ServingPath, replies are applied on the worker's thread.

    calls_inline: a call sent from Dispatcher.issue runs on that thread (LoadGen's issue
    thread, for a stream scenario's one query in flight), no serving thread woken. Every
    other call goes to the serving thread: one sent while the issuing thread runs or answers
    another (a retry from the Completer; the completion path is not re-entrant), warm-up
    batches (their wait keeps its timeout if the model hangs), and calls sent by the
    completion thread."""

    direct_replies = True

    def __init__(self, workers: dict[str, object], calls_inline: bool = False) -> None:
        super().__init__()
        self._calls_inline = calls_inline
        self._answering = threading.local()  # set while this thread runs or answers a call
        self._workers = dict(workers)
        self._inboxes: dict[str, queue.SimpleQueue] = {}
        self._threads = []
        for worker_id, worker in self._workers.items():
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            self._inboxes[worker_id] = inbox
            thread = threading.Thread(target=self._serve, args=(worker_id, worker, inbox),
                                      name=f"serve-{worker_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._start_scheduler(list(self._workers))

    def _send(self, worker_id: str, call_id: int, batches: list[Batch]) -> None:
        if (self._calls_inline and sending_for_loadgen()
                and not getattr(self._answering, "active", False)):
            self._answering.active = True
            try:
                self._call(worker_id, self._workers[worker_id], call_id, batches)
            finally:
                self._answering.active = False
        else:
            self._inboxes[worker_id].put((call_id, batches))

    def _call(self, worker_id: str, worker, call_id: int, batches: list[Batch]) -> bool:
        """Run one call and reply; False if the worker was lost in it."""
        try:
            items = worker.run_batches(batches)
        except BaseException as error:  # noqa: BLE001 - the worker is gone, as a dead actor
            self.reply(WorkerLost(worker_id, f"{type(error).__name__}: {error}"))
            return False
        self.reply(CallReturned(worker_id, call_id, items))
        return True

    def _serve(self, worker_id: str, worker, inbox: queue.SimpleQueue) -> None:
        # The thread lives until close() even after its worker is lost: it may have answered
        # samples, and LoadGen crashes if such a thread ends while a test runs.
        lost = False
        while True:
            call = inbox.get()
            if call is None:
                return
            if lost:
                continue
            call_id, batches = call
            self._answering.active = True
            lost = not self._call(worker_id, worker, call_id, batches)
            self._answering.active = False

    def close(self) -> None:
        for inbox in self._inboxes.values():
            inbox.put(None)
        for thread in self._threads:
            thread.join(5)


class ServingPath:
    """The per-test path on a pool: ledger, Completer, Dispatcher and completion loop, started
    on entering and torn down on leaving, with what the test gave up on dropped from the
    queue so no backlog slows the next one."""

    def __init__(self, pool: ServingPool, scenario: str, max_batchsize: int,
                 complete: CompleteFn, batch_ids, latency_bound_ns: int,
                 batch_window_s: float | None = None, round_trip_s: float | None = None,
                 stall_timeout_s: float | None = None) -> None:
        self.pool = pool
        self.ledger = CompletionLedger()
        self.completer = Completer(self.ledger, complete, pool.retry)
        self._latency_bound_ns = latency_bound_ns
        self._fixed_window_s = batch_window_s
        self.dispatcher = Dispatcher(scenario, max_batchsize, self.ledger, pool.put,
                                     self.completer, pool.has_idle_worker, batch_ids,
                                     self.window_for(round_trip_s))
        loop_options = {} if stall_timeout_s is None else {"stall_timeout_s": stall_timeout_s}
        self.completion = CompletionLoop(pool, self.completer, self.ledger, **loop_options)
        if pool.direct_replies:
            pool.reply = self.completion.deliver
        self.stopped_cleanly = True

    def window_for(self, round_trip_s: float | None) -> float:
        """The Server window: --server-batch-timeout-ms if given, else derived from the bound
        and the measured round trip (sut/batching.py)."""
        return self._fixed_window_s or server_batch_timeout_s(self._latency_bound_ns,
                                                              round_trip_s)

    def measure(self, sample_index: int) -> float | None:
        """Time the path with a few warm-up batches and size the Server window by it; returns
        the round trip (None if the warm-up did not come back)."""
        round_trip_s = self.dispatcher.measure_round_trip(sample_index)
        if round_trip_s is not None:
            self.dispatcher.set_window(self.window_for(round_trip_s))
        return round_trip_s

    def __enter__(self) -> "ServingPath":
        self.completion.start()
        self.dispatcher.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.dispatcher.stop()
        finally:
            if self.ledger.outstanding_batches():
                # What the test gave up on: out of the queue, and its late answers ignored.
                self.pool.clear()
                self.ledger.close_all()
            self.stopped_cleanly = self.completion.stop()
            self.pool.reply = self.pool.events.put  # late replies wait for the next test

