"""Backend registry: `--backend` name -> the class that implements it, imported on demand.

Importing a backend's module pulls its framework (onnxruntime, torch, tensorflow), so the table
names modules instead of classes; only the chosen backend is ever imported. `--backend
package.module:Class` plugs in a class of one's own that follows the Backend protocol (base.py).
"""

from __future__ import annotations

import importlib

from actors.backends.base import Backend, BackendOptions
from sut.errors import ConfigError

# name -> (module, class, the setup.cfg extra that installs its framework; "": the core)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("actors.backends.onnxruntime_backend", "OnnxRuntimeBackend", ""),
    "null": ("actors.backends.null_backend", "NullBackend", ""),
    "pytorch": ("actors.backends.pytorch_backend", "PyTorchBackend", "torch"),
    # the reference's name for its PyTorch backend (the resnet50-pytorch profile uses it)
    "pytorch-native": ("actors.backends.pytorch_backend", "PyTorchBackend", "torch"),
    "tensorflow": ("actors.backends.tensorflow_backend", "TensorFlowBackend", "tf"),
    "tflite": ("actors.backends.tflite_backend", "TfLiteBackend", "tflite"),
    "tvm-onnx": ("actors.backends.tvm_backend", "TvmOnnxBackend", "tvm"),
    "tvm-pytorch": ("actors.backends.tvm_backend", "TvmPyTorchBackend", "tvm"),
}


def _is_plugin(name: str) -> bool:
    """`package.module:Class`: a backend class of the user's own, importable on every node."""
    module, _, attribute = name.partition(":")
    return bool(module and attribute)


def check_backend_name(name: str) -> None:
    if name in BACKENDS:
        return
    if _is_plugin(name):
        backend_class(name)
        return
    raise ConfigError(f"unknown --backend {name!r}; choose one of {sorted(BACKENDS)}, or give "
                      "a class of your own as package.module:Class")


def backend_class(name: str) -> type:
    if _is_plugin(name):
        module_name, _, class_name = name.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"--backend {name}: cannot import it ({error}). A plug-in "
                              "backend is 'package.module:Class', importable on every node.") \
                from None
        if not callable(getattr(found, "predict", None)):
            raise ConfigError(f"--backend {name}: {class_name} has no predict(batch) method")
        return found
    check_backend_name(name)
    module_name, class_name, extra = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        install = f"pip install -e \".[{extra}]\"" if extra else "pip install -e ."
        raise ConfigError(f"--backend {name} cannot load ({error}): install its framework with "
                          f"{install}") from None
    return getattr(module, class_name)


def create_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["BACKENDS", "Backend", "BackendOptions", "backend_class",
           "check_backend_name", "create_backend"]
