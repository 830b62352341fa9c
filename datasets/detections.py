"""Detection model outputs -> MLPerf detection payloads.

A payload is float32 records of 7 values, one per detection, concatenated:
`[qsl_idx, ymin, xmin, ymax, xmax, score, class]`, boxes normalised to 0..1. An image with no
detection answers with an empty payload (fewer than 7 floats means "no detection" to the
scorers).

Two output conventions exist in the reference:
- TF object-detection API (SSD-MobileNet tf/onnx, coco-300 and coco-1200): four outputs
  num_detections [N], boxes [N, K, 4] as (ymin, xmin, ymax, xmax), scores [N, K],
  classes [N, K]; the first num_detections rows count, no score threshold.
- boxes, labels, scores (SSD-ResNet34, RetinaNet): rows sorted by score; the first row under
  the threshold ends the list. Boxes are (xmin, ymin, xmax, ymax) except in the TF
  SSD-ResNet34; RetinaNet's are in pixels of the model input and are scaled to 0..1 here.

outputs[k][i] must give sample i's array: a batched array, or an object array holding one
array per sample (models whose outputs have no batch axis, see DatasetSpec.unbatched_outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.postprocess import Payloads

RECORD = 7


def records_to_payloads(per_sample: list[np.ndarray]) -> Payloads:
    """Concatenate each sample's [k, 7] float32 records into one buffer with offsets."""
    sizes = [len(records) * RECORD * 4 for records in per_sample]
    offsets = np.zeros(len(per_sample) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    parts = [np.ascontiguousarray(r, dtype=np.float32).reshape(-1) for r in per_sample]
    data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Payloads(np.ascontiguousarray(data).view(np.uint8), offsets)


def _records(index: int, boxes: np.ndarray, scores: np.ndarray,
             classes: np.ndarray) -> np.ndarray:
    """[k, 7] records for one sample from boxes already in (ymin, xmin, ymax, xmax) 0..1."""
    out = np.empty((len(scores), RECORD), dtype=np.float32)
    out[:, 0] = index
    out[:, 1:5] = boxes
    out[:, 5] = scores
    out[:, 6] = classes
    return out


class _RecordsPerSample:
    """A post-processor whose per_sample() gives each sample's [k, 7] records."""

    def __call__(self, outputs: list[np.ndarray], sample_indices) -> Payloads:
        return records_to_payloads(self.per_sample(outputs, sample_indices))


@dataclass(frozen=True)
class TfDetections(_RecordsPerSample):
    """num_detections, boxes (y, x order, normalised), scores, classes: as the reference's
    PostProcessCoco."""

    use_inv_map: bool = False
    max_detections: int = 100  # only for the null backend's well-formed outputs

    def per_sample(self, outputs: list[np.ndarray], sample_indices) -> list[np.ndarray]:
        if len(outputs) != 4:
            raise ValueError(f"expected 4 outputs (num_detections, boxes, scores, classes), "
                             f"got {len(outputs)}")
        counts, boxes, scores, classes = outputs
        result = []
        for i, index in enumerate(np.asarray(sample_indices).tolist()):
            n = int(np.asarray(counts[i]).reshape(-1)[0])
            sample_boxes = np.asarray(boxes[i]).reshape(-1, 4)[:n]
            result.append(_records(index, sample_boxes, np.asarray(scores[i]).reshape(-1)[:n],
                                   np.asarray(classes[i]).reshape(-1)[:n]))
        return result

    def null_outputs(self, batch_size: int) -> list[np.ndarray]:
        k = self.max_detections
        return [np.zeros(batch_size, np.float32), np.zeros((batch_size, k, 4), np.float32),
                np.zeros((batch_size, k), np.float32), np.zeros((batch_size, k), np.float32)]


@dataclass(frozen=True)
class ThresholdedDetections(_RecordsPerSample):
    """boxes, labels, scores, sorted by score, cut at the first score under the threshold:
    the reference's PostProcessCocoPt / -Onnx / -Tf and PostProcessOpenImagesRetinanet.

    xy_first: boxes come as (xmin, ymin, xmax, ymax) and are swapped into (y, x) order.
    pixel_size: (height, width) of the model input when boxes are in pixels (RetinaNet).
    """

    threshold: float
    xy_first: bool = True
    pixel_size: tuple[int, int] | None = None
    use_inv_map: bool = False
    max_detections: int = 200

    def per_sample(self, outputs: list[np.ndarray], sample_indices) -> list[np.ndarray]:
        if len(outputs) != 3:
            raise ValueError(f"expected 3 outputs (boxes, labels, scores), got {len(outputs)}")
        boxes, labels, scores = outputs
        result = []
        for i, index in enumerate(np.asarray(sample_indices).tolist()):
            sample_scores = np.asarray(scores[i], dtype=np.float32).reshape(-1)
            below = np.flatnonzero(sample_scores < self.threshold)
            keep = int(below[0]) if len(below) else len(sample_scores)
            sample_boxes = np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4)[:keep]
            if self.xy_first:
                sample_boxes = sample_boxes[:, [1, 0, 3, 2]]
            if self.pixel_size is not None:
                height, width = self.pixel_size
                sample_boxes = sample_boxes / np.array([height, width, height, width],
                                                       dtype=np.float32)
            result.append(_records(index, sample_boxes, sample_scores[:keep],
                                   np.asarray(labels[i]).reshape(-1)[:keep]))
        return result

    def null_outputs(self, batch_size: int) -> list[np.ndarray]:
        k = self.max_detections
        return [np.zeros((batch_size, k, 4), np.float32), np.zeros((batch_size, k), np.int64),
                np.zeros((batch_size, k), np.float32)]
