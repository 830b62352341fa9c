"""Model outputs -> MLPerf accuracy payloads, one payload per sample.

A post-processor turns the backend's outputs for one batch into one contiguous byte buffer and
the byte offsets of each sample's payload in it, so that a whole batch crosses Ray as one array
and the driver hands LoadGen pointers into it without copying.

Classification payload (reference format): one float32, the predicted ImageNet label 0..999.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Payloads:
    """Bytes for a batch: sample i is data[offsets[i]:offsets[i + 1]]."""

    data: np.ndarray  # uint8, contiguous
    offsets: np.ndarray  # int64, len = batch size + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sample(self, i: int) -> bytes:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()


def _labels_to_payloads(labels: np.ndarray) -> Payloads:
    values = np.ascontiguousarray(labels, dtype=np.float32).reshape(-1)
    offsets = np.arange(len(values) + 1, dtype=np.int64) * 4
    return Payloads(values.view(np.uint8), offsets)


@dataclass(frozen=True)
class ArgMaxOutput:
    """The model already emits class ids (the MLPerf ResNet-50's `ArgMax:0`): add the offset.

    offset is -1 for 1001-class models whose class 0 is "background" (reference
    PostProcessCommon(offset=-1)).
    """

    offset: int = 0

    def labels(self, outputs: list[np.ndarray]) -> np.ndarray:
        ids = np.asarray(outputs[0])
        if ids.ndim > 1 and int(np.prod(ids.shape[1:])) != 1:
            raise ValueError(f"expected one class id per sample, got an output of shape "
                             f"{list(ids.shape)}")
        return ids.reshape(-1).astype(np.int64) + self.offset

    def __call__(self, outputs: list[np.ndarray], sample_indices: np.ndarray) -> Payloads:
        return _labels_to_payloads(self.labels(outputs))

    def null_outputs(self, batch_size: int) -> list[np.ndarray]:
        """Well-formed outputs for the null backend: class ids of the right shape."""
        return [np.zeros(batch_size, dtype=np.int64)]


@dataclass(frozen=True)
class ArgMaxScores:
    """The model emits scores [N, classes]: take the arg-max over classes, add the offset.

    As the reference's PostProcessArgMax.
    """

    offset: int = 0
    num_classes: int = 1001

    def labels(self, outputs: list[np.ndarray]) -> np.ndarray:
        scores = np.asarray(outputs[0])
        return np.argmax(scores.reshape(len(scores), -1), axis=1).astype(np.int64) + self.offset

    def __call__(self, outputs: list[np.ndarray], sample_indices: np.ndarray) -> Payloads:
        return _labels_to_payloads(self.labels(outputs))

    def null_outputs(self, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((batch_size, self.num_classes), dtype=np.float32)]
