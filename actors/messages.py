"""The two messages that cross Ray: a batch of samples to infer, and its result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Samples to infer together. batch_id is unique within a run and never reused, so a batch
    that is retried after a fault keeps its id and a second result for it is recognisable."""

    batch_id: int
    response_ids: np.ndarray  # uint64: LoadGen's QuerySample.id, one per sample
    sample_indices: np.ndarray  # int64: QSL index of each sample

    def __len__(self) -> int:
        return len(self.sample_indices)


@dataclass(frozen=True)
class BatchResult:
    """The answer to one batch. payload is None in performance mode (no bytes travel back)."""

    batch_id: int
    worker_id: str
    payload_data: np.ndarray | None = None  # uint8, all samples' payloads back to back
    payload_offsets: np.ndarray | None = None  # int64, len(batch) + 1
    infer_seconds: float = 0.0


@dataclass(frozen=True)
class BatchFailure:
    """A batch whose inference raised: sent instead of a result so the batch can be retried."""

    batch_id: int
    worker_id: str
    error: str
