"""Backend registry: `--backend` name -> the class that implements it, imported on demand.

Importing a backend's module pulls its framework (onnxruntime, torch, tensorflow), so the table
names modules instead of classes; only the chosen backend is ever imported. `--backend
package.module:Class` plugs in a class of one's own that follows the Backend protocol (base.py).
"""

from __future__ import annotations

import importlib

from actors.backends.base import Backend, BackendOptions
from sut.errors import ConfigError

# name -> (module, class, the setup.cfg extra that installs its framework)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("actors.backends.onnxruntime_backend", "OnnxRuntimeBackend", "(core)"),
    "null": ("actors.backends.null_backend", "NullBackend", "(core)"),
    "pytorch": ("actors.backends.pytorch_backend", "PyTorchBackend", "torch"),
    # the reference's name for its PyTorch backend (the resnet50-pytorch profile uses it)
    "pytorch-native": ("actors.backends.pytorch_backend", "PyTorchBackend", "torch"),
}

# Backends the reference offers that this harness does not have yet: a clear refusal, not a
# fall-through.
PLANNED_BACKENDS = {
    "tensorflow": "tf", "tflite": "tflite",
    "tvm-onnx": "tvm", "tvm-pytorch": "tvm",
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
    if name in PLANNED_BACKENDS:
        raise ConfigError(f"--backend {name} is not implemented in this harness yet; available: "
                          f"{sorted(BACKENDS)}. An ONNX export of the model runs with "
                          "--backend onnxruntime.")
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
    module_name, class_name, _ = BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["BACKENDS", "PLANNED_BACKENDS", "Backend", "BackendOptions", "backend_class",
           "check_backend_name", "create_backend"]
