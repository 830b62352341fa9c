"""The table of datasets: one frozen row per `--dataset` key of the reference harness.

A row says how to list the samples, how to pre-process one image (the cached, geometric half),
how to normalise a batch on the worker, and how to turn model outputs into payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from datasets import postprocess, transforms
from datasets.imagenet import read_val_map
from sut.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "classification" (detection comes with the COCO/OpenImages datasets)
    image_size: tuple[int, int]  # (height, width) of the model input
    crop: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # BGR image -> uint8 HWC RGB
    normalize: Callable[[np.ndarray, str], np.ndarray]  # uint8 batch, layout -> float32
    postprocess: postprocess.ArgMaxOutput | postprocess.ArgMaxScores
    list_samples: Callable = read_val_map
    # Bump when the geometric half changes: it is part of the cache key.
    recipe_version: int = 1

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


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown --dataset {name!r}; choose one of {sorted(DATASETS)}") from None
