"""Backend registry: `--backend` name -> the class that implements it, imported on demand.

Importing a backend's module pulls its framework (onnxruntime, torch, tensorflow), so the table
names modules instead of classes; only the chosen backend is ever imported. Each row also says
what the backend reads and can do: the configuration checks, scripts/run_local.sh's words and
the error messages are derived from it. `--backend
package.module:Class` plugs in a class of one's own that follows the Backend protocol (base.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from actors.backends.base import Backend, BackendOptions
from harness_base import ConfigError


@dataclass(frozen=True)
class BackendRow:
    """One backend: everything the configuration checks, the launcher and the error messages
    need to know about it without importing its framework."""

    name: str  # --backend
    module: str
    class_name: str
    extra: str  # the setup.cfg extra that installs its framework ("": the core install)
    model_formats: tuple[str, ...]  # of MODEL_FORMATS: the model files it reads
    aliases: tuple[str, ...] = ()  # other --backend names for it (the reference's)
    launcher_word: str | None = None  # its word in scripts/run_local.sh, as the reference's
    devices: tuple[str, ...] = ("cpu", "gpu")
    normalizes_on_device: bool = False  # can take uint8 rows and normalise them on its device
    torch_options: bool = False  # --precision, --compile, --channels-last and --cuda-graphs

    @property
    def install_command(self) -> str:
        return f'pip install -e ".[{self.extra}]"' if self.extra else "pip install -e ."

    @property
    def reads_model_file(self) -> bool:
        return self.model_formats != ("none",)


# What a model file is, as refuse_other_formats tells them apart.
MODEL_FORMATS = ("onnx", "torch-zip", "torch-state-dict", "tf-graph", "tf-saved-model",
                 "tflite", "none")

BACKEND_ROWS: tuple[BackendRow, ...] = (
    BackendRow("onnxruntime", "actors.backends.onnxruntime_backend", "OnnxRuntimeBackend", "",
               ("onnx",), launcher_word="onnxruntime"),
    BackendRow("null", "actors.backends.null_backend", "NullBackend", "", ("none",),
               normalizes_on_device=True),
    BackendRow("pytorch", "actors.backends.pytorch_backend", "PyTorchBackend", "torch",
               ("torch-zip", "torch-state-dict"), aliases=("pytorch-native",),
               launcher_word="pytorch", normalizes_on_device=True, torch_options=True),
    BackendRow("tensorflow", "actors.backends.tensorflow_backend", "TensorFlowBackend", "tf",
               ("tf-graph", "tf-saved-model"), launcher_word="tf"),
    BackendRow("tflite", "actors.backends.tflite_backend", "TfLiteBackend", "tflite",
               ("tflite",), launcher_word="tflite", devices=("cpu",)),
    BackendRow("tvm-onnx", "actors.backends.tvm_backend", "TvmOnnxBackend", "tvm", ("onnx",),
               launcher_word="tvm-onnx"),
    BackendRow("tvm-pytorch", "actors.backends.tvm_backend", "TvmPyTorchBackend", "tvm",
               ("torch-zip",), launcher_word="tvm-pytorch"),
)

# --backend name (aliases included) -> its row.
BACKENDS: dict[str, BackendRow] = {name: row for row in BACKEND_ROWS
                                   for name in (row.name, *row.aliases)}


def backends_reading(model_format: str) -> list[str]:
    """The backends (by name) that read a model file of this format, for error messages."""
    return [row.name for row in BACKEND_ROWS if model_format in row.model_formats]


def backends_with(capability: str) -> list[str]:
    """The backends (by name) whose row has this capability set, for error messages."""
    return [row.name for row in BACKEND_ROWS if getattr(row, capability)]


def import_framework(backend: str, module: str, package: str | None = None):
    """The framework a backend runs on, imported when the backend is built; if it is missing, a
    ConfigError that names the extra installing it (from the backend's row)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--backend {backend} needs {package or module}: "
                          f"{BACKENDS[backend].install_command}") from None


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
    row = BACKENDS[name]
    try:
        module = importlib.import_module(row.module)
    except ImportError as error:
        raise ConfigError(f"--backend {name} cannot load ({error}): install its framework with "
                          f"{row.install_command}") from None
    return getattr(module, row.class_name)


def create_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["BACKENDS", "BACKEND_ROWS", "Backend", "BackendOptions", "BackendRow",
           "backend_class", "backends_reading", "check_backend_name", "create_backend",
           "import_framework"]
