"""The table of files `python -m sut fetch` knows: MLPerf model files and the COCO archives.

Each row is a file as the reference's README links it, under the name its launcher expects,
with the checksum where one is published (and where: MLCommons's CM automation publishes md5
sums of the zenodo files, TensorFlow Datasets and Open Model Zoo SHA-256 sums). A row without
one gets its SHA-256 recorded on first download. A `member` row is one file taken out of the
archive at its URL (the checksum is the archive's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness_base import ConfigError, user_data_folder

_CM_RESNET50 = "mlcommons/mlperf-automations script/get-ml-model-resnet50/meta.yaml"
_CM_RETINANET = "mlcommons/mlperf-automations script/get-ml-model-retinanet/meta.yaml"
_TFDS_COCO = "tensorflow/datasets tensorflow_datasets/url_checksums/coco.txt"
_OMZ_SSD = "openvinotoolkit/open_model_zoo models/public/ssd-resnet34-1200-onnx/model.yml"


@dataclass(frozen=True)
class KnownFile:
    file: str  # its name in the models (or data) folder: the reference's download name
    url: str
    checksum: str | None  # "md5:<hex>" or "sha256:<hex>" as published; None: none published
    profiles: tuple[str, ...] = ()  # the profiles that run it (a run without --model finds it)
    size: int | None = None  # bytes, where published
    member: str | None = None  # the file is this member (by base name) of the archive at url
    checksum_source: str = ""

    @property
    def archive(self) -> str:
        """The name the download is stored under: the archive's for a member row."""
        return self.url.rsplit("/", 1)[-1].split("?")[0] if self.member else self.file


_ZENODO = "https://zenodo.org/record/"
_MOBILENET_TGZ = _ZENODO + "2269307/files/mobilenet_v1_1.0_224.tgz"

MODEL_FILES: tuple[KnownFile, ...] = (
    KnownFile("resnet50_v1.onnx", _ZENODO + "4735647/files/resnet50_v1.onnx",
              "md5:f6a4da60cd5f084d97efc2c1ddb10beb",
              ("resnet50-onnxruntime", "resnet50-tvm-onnx"), checksum_source=_CM_RESNET50),
    KnownFile("resnet50_v1.pb", _ZENODO + "2535873/files/resnet50_v1.pb",
              "md5:7b94a2da05dd30f6c0af23a46bc08886", ("resnet50-tf",),
              checksum_source=_CM_RESNET50),
    KnownFile("resnet50-19c8e357.pth", _ZENODO + "4588417/files/resnet50-19c8e357.pth",
              "md5:9e9c86b324d80e65229fab49b8d9a8e8", ("resnet50-pytorch",),
              checksum_source=_CM_RESNET50),
    KnownFile("mobilenet_v1_1.0_224.onnx", _ZENODO + "4735651/files/mobilenet_v1_1.0_224.onnx",
              None, ("mobilenet-onnxruntime",)),
    KnownFile("mobilenet_v1_1.0_224_frozen.pb", _MOBILENET_TGZ, None, ("mobilenet-tf",),
              member="mobilenet_v1_1.0_224_frozen.pb"),
    KnownFile("mobilenet_v1_1.0_224.tflite", _MOBILENET_TGZ, None,
              member="mobilenet_v1_1.0_224.tflite"),
    KnownFile("ssd_mobilenet_v1_coco_2018_01_28.onnx",
              _ZENODO + "4735652/files/ssd_mobilenet_v1_coco_2018_01_28.onnx", None,
              ("ssd-mobilenet-onnxruntime",)),
    KnownFile("ssd_mobilenet_v1_coco_2018_01_28.pb",
              "http://download.tensorflow.org/models/object_detection/"
              "ssd_mobilenet_v1_coco_2018_01_28.tar.gz", None, ("ssd-mobilenet-tf",),
              member="frozen_inference_graph.pb"),
    KnownFile("resnet34-ssd1200.onnx", _ZENODO + "3228411/files/resnet34-ssd1200.onnx",
              "sha256:b417a8186967f1e78670b0075aa72a10e5c7d1a6d5c08af9d13dc97f3d29ef0d",
              ("ssd-resnet34-onnxruntime",), size=80363696, checksum_source=_OMZ_SSD),
    KnownFile("ssd_resnet34_mAP_20.2.onnx", _ZENODO + "4735664/files/ssd_resnet34_mAP_20.2.onnx",
              None, ("ssd-resnet34-onnxruntime-tf",)),
    KnownFile("resnet34_tf.22.1.pb", _ZENODO + "3345892/files/tf_ssd_resnet34_22.1.zip", None,
              ("ssd-resnet34-tf",), member="resnet34_tf.22.1.pb"),
    KnownFile("resnext50_32x4d_fpn.onnx", _ZENODO + "6617879/files/resnext50_32x4d_fpn.onnx",
              "md5:4544f4e56e0a4684215831cc937ea45c", ("retinanet-onnxruntime",),
              checksum_source=_CM_RETINANET),
)

# Profiles whose model no published file gives as this harness reads it, and what to do.
_PICKLED = ("the reference's file is a pickled module that needs the reference's model code: "
            "export it to TorchScript or torch.export (.pt2) and pass it with --model")
NO_DOWNLOAD: dict[str, str] = {
    "resnet50-tvm-pytorch": "TVM reads a torch.export of the weights: fetch resnet50-pytorch, "
                            "then export it as README 'Real MLPerf models' shows",
    "ssd-mobilenet-pytorch": _PICKLED,
    "ssd-resnet34-pytorch": _PICKLED,
    "retinanet-pytorch": _PICKLED,
    "efficientnet-lite0-onnxruntime": "the embedded default exports it: run python -m sut",
    "efficientnet-lite0-pytorch": "the embedded default builds it: run python -m sut",
}


@dataclass(frozen=True)
class DataSet:
    name: str
    archives: tuple[KnownFile, ...]  # each unpacked into <data-dir>/<name>/
    expects: tuple[str, ...]  # paths that must exist in <data-dir>/<name>/ once unpacked
    profiles_note: str


DATA_SETS: dict[str, DataSet] = {
    "coco-val2017": DataSet(
        "coco-val2017",
        (KnownFile("val2017.zip", "http://images.cocodataset.org/zips/val2017.zip",
                   "sha256:4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
                   size=815585330, checksum_source=_TFDS_COCO),
         KnownFile("annotations_trainval2017.zip",
                   "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                   "sha256:113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
                   size=252907541, checksum_source=_TFDS_COCO)),
        ("val2017", "annotations/instances_val2017.json"),
        "the ssd-mobilenet profiles read it as it is (--dataset-path <that folder>); "
        "SSD-ResNet34 wants it upscaled first (scripts/upscale_coco.py)"),
}


def default_folder(flag_value: str | None, variable: str, leaf: str) -> Path:
    """--models-dir / --data-dir, else $MODEL_DIR / $DATA_DIR (the reference's variables), else
    a folder in the user's data folder ($XDG_DATA_HOME or ~/.local/share)."""
    if flag_value:
        return Path(flag_value).expanduser()
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    return user_data_folder() / leaf


def models_folder(flag_value: str | None = None) -> Path:
    return default_folder(flag_value, "MODEL_DIR", "models")


def data_folder(flag_value: str | None = None) -> Path:
    return default_folder(flag_value, "DATA_DIR", "data")


def files_for(name: str) -> tuple[KnownFile, ...]:
    """The model files a fetch NAME means: a profile's, or one file by its name."""
    by_profile = tuple(row for row in MODEL_FILES if name in row.profiles)
    if by_profile:
        return by_profile
    by_file = tuple(row for row in MODEL_FILES if name == row.file)
    if by_file:
        return by_file
    if name in NO_DOWNLOAD:
        raise ConfigError(f"{name}: nothing to fetch; {NO_DOWNLOAD[name]}.")
    raise ConfigError(f"fetch {name!r}: not a profile, model file or data set this harness "
                      "knows. `python -m sut fetch --list` shows every one.")


def profile_model(profile: str | None, models_dir: Path) -> Path | None:
    """The fetched model file of a profile, when it is in the models folder."""
    for row in MODEL_FILES:
        if profile in row.profiles and (models_dir / row.file).is_file():
            return models_dir / row.file
    return None


def profile_file_name(profile: str | None) -> str | None:
    return next((row.file for row in MODEL_FILES if profile in row.profiles), None)
