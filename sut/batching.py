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

from dataclasses import dataclass, field

import numpy as np


def split_into_batches(response_ids: np.ndarray, sample_indices: np.ndarray,
                       max_batchsize: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut parallel arrays of ids and indices into consecutive batches of at most max_batchsize."""
    if max_batchsize < 1:
        raise ValueError(f"max_batchsize must be >= 1, got {max_batchsize}")
    return [(response_ids[start:start + max_batchsize],
             sample_indices[start:start + max_batchsize])
            for start in range(0, len(sample_indices), max_batchsize)]


def batch_size_buckets(max_batchsize: int) -> list[int]:
    """Every power of two below --max-batchsize, and that size itself: the shapes a GPU worker
    runs once at start-up, because CUDA graphs and TensorRT engines are built per shape and
    must not be built inside a timed test."""
    sizes, size = [], 1
    while size < max_batchsize:
        sizes.append(size)
        size *= 2
    return sizes + [max(1, max_batchsize)]


def server_batch_timeout_s(target_latency_ns: int) -> float:
    """The Server batcher's window: a tenth of the latency bound. A sample waits at most
    this long for company, and batches leave at most about once a window under load (see
    DynamicBatcher); the rest of the bound is left for the queue, the inference and the way
    back."""
    return max(target_latency_ns, 1) * 1e-9 / 10.0


@dataclass
class DynamicBatcher:
    """Groups Server samples into batches that leave when one of these holds:

    - the batch is full;
    - its oldest sample has waited `timeout_s` (the window);
    - a worker is idle and the last batch left at least `timeout_s` ago.

    The last rule sends a lone sample at once when the load is light, while under load
    batches leave at most once a window (plus one per full batch): the Ray messages per
    second stay bounded by 1 / timeout_s + rate / max_batchsize, whatever the arrival rate.
    Not thread-safe: the caller holds a lock."""

    max_batchsize: int
    timeout_s: float
    _ids: list[int] = field(default_factory=list)
    _indices: list[int] = field(default_factory=list)
    _oldest_at: float | None = None
    _last_left_at: float = float("-inf")

    def add(self, response_ids, sample_indices, now: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Add samples; return the batches that became full."""
        full = []
        for response_id, index in zip(response_ids, sample_indices):
            if not self._ids:
                self._oldest_at = now
            self._ids.append(int(response_id))
            self._indices.append(int(index))
            if len(self._ids) >= self.max_batchsize:
                full.append(self._take(now))
        return full

    def take_due(self, now: float, idle_worker: bool = False, force: bool = False):
        """The pending partial batch if it is due (window, idle worker, or forced), else None."""
        if not self._ids:
            return None
        if (force or now - self._oldest_at >= self.timeout_s
                or (idle_worker and now - self._last_left_at >= self.timeout_s)):
            return self._take(now)
        return None

    def deadline(self) -> float | None:
        """When the pending partial batch times out; None if nothing is pending."""
        return None if not self._ids else self._oldest_at + self.timeout_s

    def pending(self) -> int:
        return len(self._ids)

    def _take(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        batch = (np.asarray(self._ids, dtype=np.uint64), np.asarray(self._indices, dtype=np.int64))
        self._ids, self._indices, self._oldest_at = [], [], None
        self._last_left_at = now
        return batch
