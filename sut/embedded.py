"""The embedded default: a model and a dataset built offline, so `python -m sut` runs anywhere.

Built once into the cache folder, then reused:

    <cache>/embedded/
        resnet50_v1.5_random.onnx   ResNet-50 v1.5 shape and tensor names, RANDOM weights
        imagenet-synthetic/         64 generated photos-to-be (JPEG/PNG, a few grayscale)
            val_map.txt             '<file> <label>', labels drawn at random
        user.conf                   short LoadGen durations for a demonstration run
        READY                       written last: a half-built folder is rebuilt

The weights are not trained and the labels are random, so its accuracy is that of chance: the
default run measures the harness and the throughput of a ResNet-50-sized model, and shows the
accuracy pipeline working end to end; it does not show a real accuracy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sut.resnet50_onnx import build_resnet50

_VERSION = "1"
_IMAGES = 64

NOTE_RANDOM_WEIGHTS = ("embedded default: ResNet-50 v1.5-shaped model with RANDOM (untrained) "
                       "weights on 64 synthetic images with random labels: the throughput is "
                       "real, the accuracy is chance (about 0.1%).")

_USER_CONF = """\
# Written by the embedded default run: short durations for a demonstration, not a submission.
resnet50.Offline.min_duration = 10000
resnet50.Offline.min_query_count = 100
resnet50.Offline.target_qps = 25
resnet50.Server.min_duration = 10000
resnet50.Server.min_query_count = 100
resnet50.Server.target_qps = 10
resnet50.SingleStream.min_duration = 5000
resnet50.SingleStream.min_query_count = 32
resnet50.MultiStream.min_duration = 5000
resnet50.MultiStream.min_query_count = 16
"""


@dataclass(frozen=True)
class EmbeddedAssets:
    model: Path
    dataset_path: Path
    user_conf: Path


def embedded_folder(cache_root: str | Path) -> Path:
    return Path(cache_root) / "ray-sut" / "embedded"


def ensure_embedded_assets(cache_root: str | Path) -> EmbeddedAssets:
    folder = embedded_folder(cache_root)
    assets = EmbeddedAssets(folder / "resnet50_v1.5_random.onnx",
                            folder / "imagenet-synthetic", folder / "user.conf")
    ready = folder / "READY"
    if ready.is_file() and ready.read_text().strip() == _VERSION:
        return assets
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    print(f"building the embedded default in {folder} (once; random-weight ResNet-50 and "
          f"{_IMAGES} synthetic images) ...", flush=True)
    build_resnet50(assets.model, seed=0)
    write_synthetic_imagenet(assets.dataset_path, _IMAGES, seed=0)
    assets.user_conf.write_text(_USER_CONF)
    ready.write_text(_VERSION)
    return assets


def write_synthetic_imagenet(folder: Path, count: int, seed: int) -> Path:
    """Images of varied size and aspect (JPEG, PNG, some grayscale) and a val_map.txt."""
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        height, width = int(rng.integers(200, 480)), int(rng.integers(200, 640))
        image = synthetic_photo(rng, height, width)
        if index % 16 == 5:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        name = f"ILSVRC2012_val_{index + 1:08d}." + ("png" if index % 8 == 3 else "JPEG")
        cv2.imwrite(str(folder / name), image)
        lines.append(f"{name} {int(rng.integers(0, 1000))}")
    (folder / "val_map.txt").write_text("\n".join(lines) + "\n")
    return folder


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A BGR uint8 picture with smooth gradients, shapes and noise (so resizing matters)."""
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([(xs / width) * rng.uniform(50, 255), (ys / height) * rng.uniform(50, 255),
                     np.full_like(xs, rng.uniform(0, 255))], axis=-1)
    image = base.astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, center, int(rng.integers(10, max(11, min(height, width) // 3))),
                       color, -1)
        else:
            corner = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(image, center, corner, color, -1)
    noise = rng.normal(0, 8, size=image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
