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
    """How long the Server batcher may hold the oldest sample: a tenth of the latency bound.

    The rest of the bound is left for the queue, the inference and the way back; the batcher
    also flushes early whenever a worker would otherwise sit idle (see DynamicBatcher).
    """
    return max(target_latency_ns, 1) * 1e-9 / 10.0


@dataclass
class DynamicBatcher:
    """Groups Server samples: a batch leaves when full, when its oldest sample has waited
    timeout_s, or at once while a worker has room (idle_worker). Not thread-safe: the caller
    holds a lock."""

    max_batchsize: int
    timeout_s: float
    _ids: list[int] = field(default_factory=list)
    _indices: list[int] = field(default_factory=list)
    _oldest_at: float | None = None

    def add(self, response_ids, sample_indices, now: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Add samples; return the batches that became full."""
        full = []
        for response_id, index in zip(response_ids, sample_indices):
            if not self._ids:
                self._oldest_at = now
            self._ids.append(int(response_id))
            self._indices.append(int(index))
            if len(self._ids) >= self.max_batchsize:
                full.append(self._take())
        return full

    def take_due(self, now: float, idle_worker: bool = False, force: bool = False):
        """The pending partial batch if it is due (timeout, idle worker, or forced), else None."""
        if not self._ids:
            return None
        if force or idle_worker or now - self._oldest_at >= self.timeout_s:
            return self._take()
        return None

    def deadline(self) -> float | None:
        """When the pending partial batch times out; None if nothing is pending."""
        return None if not self._ids else self._oldest_at + self.timeout_s

    def pending(self) -> int:
        return len(self._ids)

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        batch = (np.asarray(self._ids, dtype=np.uint64), np.asarray(self._indices, dtype=np.int64))
        self._ids, self._indices, self._oldest_at = [], [], None
        return batch
