"""The result aggregator: every worker's results meet here on their way to LoadGen.

It runs in the driver, on the completion thread, where LoadGen's QuerySamplesComplete has to be
called anyway: a separate aggregator actor cost two Ray hops per batch (see sut/scheduler.py).
It drops a second result for a batch already answered (a batch retried after its worker was
given up can be answered twice) and keeps per-worker counts and failures for the report.
"""

from __future__ import annotations

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
        self.duplicates = 0
        self.batches_by_worker: dict[str, int] = defaultdict(int)
        self.busy_seconds_by_worker: dict[str, float] = defaultdict(float)
        self.failures: list[BatchFailure] = []

    def submit(self, item: BatchResult | BatchFailure) -> bool:
        """Accept a result or failure; False for a result of a batch answered before (or a
        failure of one), which goes no further."""
        if isinstance(item, BatchFailure):
            if item.batch_id in self._answered:
                return False
            self.failures.append(item)
            return True
        if not self._answered.add(item.batch_id):
            self.duplicates += 1
            return False
        self.batches_by_worker[item.worker_id] += 1
        self.busy_seconds_by_worker[item.worker_id] += item.infer_seconds
        return True

    def stats(self) -> dict:
        return {"duplicates_dropped": self.duplicates,
                "batches_by_worker": dict(self.batches_by_worker),
                "busy_seconds_by_worker": dict(self.busy_seconds_by_worker),
                "failures": [(f.batch_id, f.worker_id, f.error) for f in self.failures]}
