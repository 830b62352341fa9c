"""Batch-size buckets: the few batch shapes a shape-specialised backend runs at.

CUDA graphs, TensorRT engines and TFLite interpreters are built per input shape, and building
one inside a timed test would cost seconds. So such a backend runs a batch at its bucket (the
next power of two, capped at --max-batchsize), padded with zero rows whose outputs are dropped;
the worker builds every bucket once at start-up.
"""

from __future__ import annotations

import numpy as np


def batch_size_buckets(max_batchsize: int) -> list[int]:
    """Every power of two below max_batchsize, and that size itself."""
    sizes, size = [], 1
    while size < max_batchsize:
        sizes.append(size)
        size *= 2
    return sizes + [max(1, max_batchsize)]


def bucket_for(size: int, largest: int = 0) -> int:
    """The bucket a batch of `size` runs at: the next power of two, but never more than
    `largest` (--max-batchsize; 0, or a largest below size: no cap)."""
    bucket = 1
    while bucket < size:
        bucket *= 2
    return min(bucket, largest) if largest >= size else bucket


def pad_rows(batch: np.ndarray, size: int) -> np.ndarray:
    """The batch with zero rows appended up to `size` rows (itself when it has them)."""
    if len(batch) >= size:
        return batch
    padding = np.zeros((size - len(batch), *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding])
