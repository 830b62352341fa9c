"""Backend registry: `--backend` name -> the class that implements it, imported on demand.

Importing a backend's module pulls its framework (onnxruntime, torch, tensorflow), so the table
names modules instead of classes; only the chosen backend is ever imported.
"""

from __future__ import annotations

import importlib

from actors.backends.base import Backend, BackendOptions
from sut.errors import ConfigError

# name -> (module, class, the setup.cfg extra that installs its framework)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("actors.backends.onnxruntime_backend", "OnnxRuntimeBackend", "(core)"),
    "null": ("actors.backends.null_backend", "NullBackend", "(core)"),
}

# Backends the reference offers that this harness does not have yet: a clear refusal, not a
# fall-through.
PLANNED_BACKENDS = {
    "tensorflow": "tf", "pytorch": "torch", "pytorch-native": "torch", "tflite": "tflite",
    "tvm-onnx": "tvm", "tvm-pytorch": "tvm",
}


def check_backend_name(name: str) -> None:
    if name in BACKENDS:
        return
    if name in PLANNED_BACKENDS:
        raise ConfigError(f"--backend {name} is not implemented in this harness yet; available: "
                          f"{sorted(BACKENDS)}. An ONNX export of the model runs with "
                          "--backend onnxruntime.")
    raise ConfigError(f"unknown --backend {name!r}; choose one of {sorted(BACKENDS)}")


def backend_class(name: str) -> type:
    check_backend_name(name)
    module_name, class_name, _ = BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["BACKENDS", "PLANNED_BACKENDS", "Backend", "BackendOptions", "backend_class",
           "check_backend_name", "create_backend"]
