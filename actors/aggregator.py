"""The result aggregator: every worker's results meet here on their way to LoadGen.

Workers send each batch's result (or failure) here; the driver's completion thread drains them
and calls LoadGen's QuerySamplesComplete, which only works in the driver process. The aggregator
drops a second result for a batch already answered (a batch retried after its worker died can
be answered twice) and keeps per-worker counts for the report.

`ResultCollector` is the plain logic; `AggregatorActor` wraps it as a threaded Ray actor whose
`drain` waits for results without blocking `submit`.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from actors.messages import BatchFailure, BatchResult


class SeenIds:
    """A set of non-negative ints that stays small when ids arrive roughly in order.

    Holds a low-water mark below which every id was seen, plus the seen ids above it, so a run
    of millions of batches costs memory only for the few that complete out of order.
    """

    def __init__(self) -> None:
        self._all_below = 0
        self._above: set[int] = set()

    def add(self, value: int) -> bool:
        """Record value; False if it was already there."""
        if value < self._all_below or value in self._above:
            return False
        self._above.add(value)
        while self._all_below in self._above:
            self._above.remove(self._all_below)
            self._all_below += 1
        return True

    def __contains__(self, value: int) -> bool:
        return value < self._all_below or value in self._above


class ResultCollector:
    """Collects results, drops duplicates, counts what each worker did."""

    def __init__(self) -> None:
        self._answered = SeenIds()
        self._ready: list[BatchResult | BatchFailure] = []
        self.duplicates = 0
        self.batches_by_worker: dict[str, int] = defaultdict(int)
        self.busy_seconds_by_worker: dict[str, float] = defaultdict(float)
        self.failures: list[BatchFailure] = []

    def submit(self, item: BatchResult | BatchFailure) -> bool:
        """Accept a result or failure; False (and nothing queued) for a duplicate result."""
        if isinstance(item, BatchFailure):
            if item.batch_id in self._answered:
                return False
            self.failures.append(item)
            self._ready.append(item)
            return True
        if not self._answered.add(item.batch_id):
            self.duplicates += 1
            return False
        self.batches_by_worker[item.worker_id] += 1
        self.busy_seconds_by_worker[item.worker_id] += item.infer_seconds
        self._ready.append(item)
        return True

    def take_ready(self) -> list[BatchResult | BatchFailure]:
        ready, self._ready = self._ready, []
        return ready

    def has_ready(self) -> bool:
        return bool(self._ready)

    def stats(self) -> dict:
        return {"duplicates_dropped": self.duplicates,
                "batches_by_worker": dict(self.batches_by_worker),
                "busy_seconds_by_worker": dict(self.busy_seconds_by_worker),
                "failures": [(f.batch_id, f.worker_id, f.error) for f in self.failures]}


class AggregatorActor:
    """Ray actor around ResultCollector. A threaded actor (max_concurrency above the number of
    workers plus two drains): a waiting `drain` never blocks a worker's `submit`."""

    def __init__(self) -> None:
        self._collector = ResultCollector()
        self._arrived = threading.Condition()

    def submit(self, item: BatchResult | BatchFailure) -> bool:
        with self._arrived:
            accepted = self._collector.submit(item)
            if accepted:
                self._arrived.notify_all()
        return accepted

    def drain(self, timeout_s: float) -> list:
        """Everything that arrived since the last drain; waits up to timeout_s for something."""
        with self._arrived:
            self._arrived.wait_for(self._collector.has_ready, timeout_s)
            return self._collector.take_ready()

    def stats(self) -> dict:
        with self._arrived:
            return self._collector.stats()

    def node_id(self) -> str:
        """The Ray node this actor runs on (for placement checks and reports)."""
        import ray

        return ray.get_runtime_context().get_node_id()
