"""The table of datasets: one frozen row per `--dataset` key of the reference harness.

A row says how to list the samples, how to pre-process one image (the cached, geometric half),
how to normalise a batch on the worker, and how to turn model outputs into payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import numpy as np

from datasets import detections, postprocess, transforms
from datasets.coco import COCO_VAL2017, OPENIMAGES_MLPERF, CocoLayout, read_coco
from datasets.imagenet import read_val_map
from harness_base import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "classification" or "detection"
    image_size: tuple[int, int]  # (height, width) of the model input
    crop: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # BGR image -> HWC RGB
    # (stored batch, layout, reuse=False) -> model input; reuse: the batch is a fresh copy that
    # may be normalised in place (float32 samples: saves a copy per batch on the worker)
    normalize: Callable[..., np.ndarray]
    postprocess: (postprocess.ArgMaxOutput | postprocess.ArgMaxScores
                  | detections.TfDetections | detections.ThresholdedDetections)
    # (dataset_path, list_path, count, check_files) -> ImageList
    list_samples: Callable = read_val_map
    # The model answers one image at a time with outputs that have no batch axis (the MLPerf
    # RetinaNet ONNX file): the worker feeds it sample by sample.
    unbatched_outputs: bool = False
    # What the geometric half gives, cached and shared: uint8, or float32 where the reference
    # resizes a float image (the detection recipes but coco-300) and fractions must survive.
    stored_dtype: type = np.uint8
    # Bump when the geometric half changes: it is part of the cache key.
    recipe_version: int = 1

    def normalization_table(self, layout: str) -> np.ndarray | None:
        """[3, 256] float32: the normalised value of each byte in each channel, or None where
        the model takes the uint8 image itself. Every recipe is a function of (channel, byte)
        alone, so table[c, x] has exactly the bits normalize() gives: a device can normalise
        a uint8 batch by lookup (see the pytorch backend). None too for float32 samples."""
        if self.stored_dtype != np.uint8:
            return None
        ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))  # [channel, byte]
        batch = ramp[None, :, None, :] if layout == "NCHW" else ramp.T[None, None]
        out = self.normalize(batch, layout)
        if out.dtype == np.uint8:
            return None
        table = out[0, :, 0, :] if layout == "NCHW" else out[0, 0].T
        return np.ascontiguousarray(table, dtype=np.float32)

    def model_input_dtype(self) -> np.dtype:
        """What normalize() gives: the dtype of a reference-style pre-processed file too."""
        return self.normalize(np.zeros((1, 1, 1, 3), self.stored_dtype), "NHWC").dtype

    def sample_shape(self, layout: str) -> tuple[int, int, int]:
        height, width = self.image_size
        return (3, height, width) if layout == "NCHW" else (height, width, 3)


DATASETS: dict[str, DatasetSpec] = {}


def _register(spec: DatasetSpec) -> None:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec


_register(DatasetSpec(
    name="imagenet", task="classification", image_size=(224, 224),
    crop=transforms.crop_imagenet_vgg, normalize=transforms.normalize_vgg,
    postprocess=postprocess.ArgMaxOutput(offset=-1)))
_register(DatasetSpec(
    name="imagenet_mobilenet", task="classification", image_size=(224, 224),
    crop=transforms.crop_imagenet_mobilenet, normalize=transforms.normalize_mobilenet,
    postprocess=postprocess.ArgMaxScores(offset=-1)))
# MobileNet's pre-processing for 1000-class models (no "background" class, so no offset):
# EfficientNet-Lite0, the trained embedded default.
_register(replace(DATASETS["imagenet_mobilenet"], name="imagenet_mobilenet_1000",
                  postprocess=postprocess.ArgMaxScores(offset=0, num_classes=1000)))
_register(DatasetSpec(
    name="imagenet_pytorch", task="classification", image_size=(224, 224),
    crop=transforms.crop_imagenet_pytorch, normalize=transforms.normalize_torchvision,
    postprocess=postprocess.ArgMaxScores(offset=0, num_classes=1000)))


def _coco(name: str, size: int, normalize, post, layout: CocoLayout = COCO_VAL2017,
          **extra) -> DatasetSpec:
    """A detection set: float resize kept as float32 (uint8 only where the reference truncates
    to uint8 itself: coco-300)."""
    truncated = normalize is transforms.keep_uint8
    return DatasetSpec(
        name=name, task="detection", image_size=(size, size),
        crop=transforms.resize_plain_truncated if truncated else transforms.resize_plain_float,
        stored_dtype=np.uint8 if truncated else np.float32, normalize=normalize,
        postprocess=post, list_samples=partial(read_coco, layout=layout), recipe_version=2,
        **extra)


# SSD-MobileNet: uint8 input, TF-style outputs (tf, onnx); PyTorch: [-1, 1], boxes/labels/scores.
_register(_coco("coco-300", 300, transforms.keep_uint8, detections.TfDetections()))
_register(_coco("coco-300-pt", 300, transforms.normalize_minus_one_to_one,
                detections.ThresholdedDetections(threshold=0.3)))
# SSD-ResNet34 at 1200 x 1200, torchvision statistics; the four post-processings of the
# reference. The PyTorch and TF models emit contiguous class ids (inverse map to COCO ids);
# the PyTorch set leaves out the images without annotations, as the reference's does.
_register(_coco("coco-1200", 1200, transforms.normalize_torchvision,
                detections.TfDetections()))
_register(_coco("coco-1200-onnx", 1200, transforms.normalize_torchvision,
                detections.ThresholdedDetections(threshold=0.5)))
_register(_coco("coco-1200-pt", 1200, transforms.normalize_torchvision,
                detections.ThresholdedDetections(threshold=0.05, use_inv_map=True),
                layout=replace(COCO_VAL2017, keep_empty=False)))
_register(_coco("coco-1200-tf", 1200, transforms.normalize_torchvision,
                detections.ThresholdedDetections(threshold=0.05, xy_first=False,
                                                 use_inv_map=True)))
# RetinaNet on the MLPerf OpenImages subset: x / 255, boxes in pixels of the input (800 x 800
# for MLPerf; the reference also lists 300 and 1200).
_RETINANET_BOXES = detections.ThresholdedDetections(threshold=0.05, pixel_size=(800, 800))
_register(_coco("openimages-800-retinanet", 800, transforms.normalize_unit,
                _RETINANET_BOXES, layout=OPENIMAGES_MLPERF))
_register(_coco("openimages-300-retinanet", 300, transforms.normalize_unit,
                detections.ThresholdedDetections(threshold=0.05, pixel_size=(300, 300)),
                layout=OPENIMAGES_MLPERF))
_register(_coco("openimages-1200-retinanet", 1200, transforms.normalize_unit,
                detections.ThresholdedDetections(threshold=0.05, pixel_size=(1200, 1200)),
                layout=OPENIMAGES_MLPERF))
_register(_coco("openimages-800-retinanet-onnx", 800, transforms.normalize_unit,
                _RETINANET_BOXES, layout=OPENIMAGES_MLPERF, unbatched_outputs=True))


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown --dataset {name!r}; choose one of {sorted(DATASETS)}") from None
