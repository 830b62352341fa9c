"""How LoadGen's queries become batches. Plain Python, no Ray, no LoadGen.

A Ray actor call costs a fraction of a millisecond; one sample on a GPU costs microseconds. So
every scenario sends batches, never single samples, except where the scenario itself is one
sample at a time (SingleStream):

- Offline: one huge query is cut into batches of max_batchsize.
- MultiStream: one query (8 samples) is one batch.
- SingleStream: one sample, one batch, at once.
- Server: single-sample queries arrive at random; `DynamicBatcher` groups them.

Invariant of every function here: each sample given in comes out in exactly one batch, in the
order given, and no batch is empty.
"""

from __future__ import annotations

import numpy as np


def split_into_batches(response_ids: np.ndarray, sample_indices: np.ndarray,
                       max_batchsize: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut parallel arrays of ids and indices into consecutive batches of at most max_batchsize."""
    if max_batchsize < 1:
        raise ValueError(f"max_batchsize must be >= 1, got {max_batchsize}")
    return [(response_ids[start:start + max_batchsize],
             sample_indices[start:start + max_batchsize])
            for start in range(0, len(sample_indices), max_batchsize)]


def server_batch_timeout_s(target_latency_ns: int, round_trip_s: float | None = None) -> float:
    """The Server batcher's window. A sample waits at most this long for company, and under
    load batches leave about once a window (see DynamicBatcher), so the window sets the Ray
    calls per second.

    Four measured round trips of a call (the path's own service time, taken by the warm-up),
    kept between a tenth and a third of the latency bound; a tenth when nothing was measured.
    On 2 vCPUs a call costs about 1.2 ms, so for resnet50's 15 ms bound the window is 5 ms:
    at most ~200 calls/s whatever the rate, which left room to hold 10,000 QPS where a 1.5 ms
    window (~700 calls/s) broke the bound above 8,000 (scripts/bench.py)."""
    bound_s = max(target_latency_ns, 1) * 1e-9
    if round_trip_s is None:
        return bound_s / 10.0
    return min(bound_s / 3.0, max(bound_s / 10.0, 4.0 * round_trip_s))


_ONE_CREDIT = 1.0 - 1e-9  # a credit earned to float rounding counts as one


class DynamicBatcher:
    """Groups Server samples into batches that leave when one of these holds:

    - the batch is full;
    - its oldest sample has waited `timeout_s` (the window);
    - a worker is idle and a send credit is in hand.

    Credits accrue at one per window, up to `burst`, and every batch that leaves spends one (a
    full batch, or one that leaves on its window, may leave the balance owing, down to
    -burst). Under light load a lone sample leaves at once, and a burst of arrivals does not
    wait either; under load partial batches leave about once a window at most, and not at all
    while full batches use the credits up: the Ray messages per second stay near the larger of
    1 / timeout_s and rate / max_batchsize, whatever the arrival rate. Samples are copied into
    two preallocated arrays a slice at a time: no Python object per sample. Not thread-safe:
    the caller holds a lock."""

    def __init__(self, max_batchsize: int, timeout_s: float, burst: int = 4) -> None:
        self.max_batchsize = max_batchsize
        self.timeout_s = timeout_s
        self.burst = burst
        self._ids = np.empty(max_batchsize, dtype=np.uint64)
        self._indices = np.empty(max_batchsize, dtype=np.int64)
        self._count = 0
        self._oldest_at: float | None = None
        self._credits = float(burst)
        self._credited_at: float | None = None

    def add(self, response_ids, sample_indices, now: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Add samples; return the batches that became full."""
        response_ids = np.asarray(response_ids, dtype=np.uint64)
        sample_indices = np.asarray(sample_indices, dtype=np.int64)
        full, start, total = [], 0, len(sample_indices)
        while start < total:
            if not self._count:
                self._oldest_at = now
            take = min(self.max_batchsize - self._count, total - start)
            end = self._count + take
            self._ids[self._count:end] = response_ids[start:start + take]
            self._indices[self._count:end] = sample_indices[start:start + take]
            self._count, start = end, start + take
            if self._count >= self.max_batchsize:
                self._spend_credit(now)
                full.append(self._take())
        return full

    def take_due(self, now: float, idle_worker: bool = False, force: bool = False):
        """The pending partial batch if it is due (window, idle worker with a credit, or
        forced), else None."""
        if not self._count:
            return None
        if (force or now - self._oldest_at >= self.timeout_s
                or (idle_worker and self._credits_at(now) >= _ONE_CREDIT)):
            self._spend_credit(now)
            return self._take()
        return None

    def deadline(self, now: float) -> float | None:
        """When to look at the pending partial batch again: its window's end, or sooner when
        the next credit accrues (it leaves then if a worker is idle); None if nothing is
        pending."""
        if not self._count:
            return None
        due = self._oldest_at + self.timeout_s
        credits = self._credits_at(now)
        if credits < _ONE_CREDIT:
            due = min(due, now + (1.0 - credits) * self.timeout_s)
        return due

    def pending(self) -> int:
        return self._count

    def _credits_at(self, now: float) -> float:
        if self._credited_at is None:
            return self._credits
        earned = (now - self._credited_at) / self.timeout_s if self.timeout_s > 0 else self.burst
        return min(float(self.burst), self._credits + earned)

    def _spend_credit(self, now: float) -> None:
        self._credits = max(self._credits_at(now) - 1.0, -float(self.burst))
        self._credited_at = now

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        batch = (self._ids[:self._count].copy(), self._indices[:self._count].copy())
        self._count, self._oldest_at = 0, None
        return batch
