"""What every model-file backend does alike: check the input shape against the samples the
harness feeds, cast a batch to the model's input type, run fixed-batch models chunk by chunk,
and name the right backend for a file of another framework."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.backends import BACKENDS, backends_reading
from actors.backends.base import BackendOptions
from actors.backends.buckets import pad_rows
from harness_base import ConfigError


def _known(dim) -> bool:
    """A fixed dimension (symbolic ones are None, -1 or a name, depending on the framework)."""
    return isinstance(dim, (int, np.integer)) and dim > 0


def check_sample_shape(shape: list | None, options: BackendOptions, where: str) -> None:
    """Refuse a model whose known input dimensions differ from the samples the harness feeds."""
    if shape is None:
        return  # unknown rank: the model takes what it is given
    expected = list(options.sample_shape)
    if len(shape) != 1 + len(expected):
        raise ConfigError(f"{where} has shape {list(shape)}; the harness feeds [batch, "
                          f"{', '.join(map(str, expected))}] ({options.layout}).")
    for got, want in zip(shape[1:], expected):
        if _known(got) and got != want:
            other = "NHWC" if options.layout == "NCHW" else "NCHW"
            raise ConfigError(f"{where} has shape {list(shape)}, but the {options.layout} "
                              f"layout gives samples of shape {tuple(expected)}. Pass "
                              f"--data-format {other} if the model is {other}, or pick the "
                              "profile/dataset that matches the model.")


def fixed_batch_of(shape: list | None) -> int | None:
    """The batch size a model insists on (the MLPerf SSD-ResNet34 and RetinaNet ONNX: 1)."""
    return int(shape[0]) if shape and _known(shape[0]) else None


def cast_for_model(batch: np.ndarray, dtype) -> np.ndarray:
    """The harness hands float32 (uint8 for SSD-MobileNet); integer inputs are rounded and
    clipped to their range instead of wrapping around."""
    dtype = np.dtype(dtype)
    if batch.dtype == dtype:
        return batch
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(batch.dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
    return batch.astype(dtype)


def predict_in_fixed_chunks(run, batch: np.ndarray, size: int | None) -> list[np.ndarray]:
    """run(batch) for a model with a fixed batch size: chunk by chunk, the last one padded."""
    if size is None or len(batch) == size:
        return list(run(batch))
    pieces: list[list[np.ndarray]] = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        pieces.append([out[:len(chunk)] for out in run(pad_rows(chunk, size))])
    return [np.concatenate([piece[k] for piece in pieces]) for k in range(len(pieces[0]))]


# A model file's format, told from its first bytes or suffix -> how a message names it.
_RECOGNISED = {"torch-zip": "a zip archive (a TorchScript or .pt2 file?)",
               "tflite": "a TFLite flatbuffer", "onnx": "an ONNX file"}


def _recognised_format(path: Path) -> str | None:
    head = b""
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[4:8] == b"TFL3":
        return "tflite"
    return "onnx" if path.suffix == ".onnx" else None


def refuse_other_formats(path: Path, backend: str, wanted: str) -> None:
    """Files of other frameworks get a message naming the backend that reads them (from the
    backend table)."""
    found = _recognised_format(path)
    row = BACKENDS.get(backend)
    if found is None or (row is not None and found in row.model_formats):
        return
    reader = backends_reading(found)[0]
    raise ConfigError(f"--model {path} is {_RECOGNISED[found]}, not {wanted}. Use --backend "
                      f"{reader}" + (" for PyTorch files." if found == "torch-zip" else "."))
