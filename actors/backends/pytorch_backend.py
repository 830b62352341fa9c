"""PyTorch: TorchScript, torch.export programs, or state dicts of known architectures.

The file decides how it is read, in this order: a TorchScript archive (`torch.jit.save`, the
MLPerf int8 ResNet-50 among them), a `torch.export` program (`.pt2`), then a weights-only state
dict (`torch.load(weights_only=True)`: no pickled code runs) for an architecture named by
--model-name. Options: fp32/fp16/bf16, channels_last, torch.compile, CUDA graphs; on a GPU the
batch goes to the device once, from pinned memory.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from actors.backends import import_framework
from actors.backends.base import BackendOptions
from actors.backends.common import refuse_other_formats
from harness_base import ConfigError, first_line

# --model-name -> (module, factory, what to install), for files holding only a state dict.
ARCHITECTURES = {
    # torchvision's ResNet-50 rebuilt with its parameter names: no torchvision needed
    "resnet50": ("actors.models.resnet50_torch", "resnet50", "this project"),
    "efficientnet-lite0": ("efficientnet_lite_pytorch", "EfficientNet",
                           "efficientnet-lite-pytorch (the 'embedded' extra)"),
}


def _is_exported_program(path: Path) -> bool:
    """A torch.export archive records its format; a torch.save state dict (also a zip) does
    not. Asking torch.export.load instead would log a traceback for every state dict."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("archive_format") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def lookup_normalized(torch, images, table, offsets):
    """float32 images from uint8 ones: table[channel * 256 + byte], bit for bit the harness's
    normalisation (the table holds its outputs)."""
    return table[images.long() + offsets]


class PyTorchBackend:
    name = "pytorch"
    preferred_layout = "NCHW"

    def __init__(self, options: BackendOptions) -> None:
        torch = self.torch = import_framework("pytorch", "torch")
        path = Path(options.model_path)
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file.")
        if options.device == "gpu":
            if not torch.cuda.is_available():
                raise ConfigError("--device gpu: this torch sees no CUDA device (a CPU build, "
                                  "or no driver). Use --device cpu, or a CUDA build of torch.")
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
            if options.threads:
                torch.set_num_threads(options.threads)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16,
                      "bf16": torch.bfloat16}[options.precision]
        self.memory_format = (torch.channels_last if options.channels_last
                              else torch.contiguous_format)
        self.kind, model = self._load(path, options)
        if options.compile and self.kind == "torchscript":
            raise ConfigError("--compile needs an eager model (a torch.export .pt2 file or a "
                              "state dict); a TorchScript file runs as it is.")
        model = model.to(self.device)
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if options.compile else model
        if options.cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError("--cuda-graphs needs --device gpu (CUDA graphs run on a GPU).")
            if options.compile:
                raise ConfigError("--cuda-graphs and --compile: pick one (torch.compile's "
                                  "'reduce-overhead' mode captures graphs itself).")
            from actors.backends.cuda_graphs import GraphedModel

            self.model = GraphedModel(torch, self.model, options.max_batchsize)
        self.cuda_graphs = options.cuda_graphs
        self._table = None  # (flat [3 * 256] table, channel offsets) once normalize_on_device
        self.output_names = list(options.outputs)
        self.precision = options.precision

    def _load(self, path: Path, options: BackendOptions):
        torch = self.torch
        refuse_other_formats(path, "pytorch", "a PyTorch model")
        try:
            return "torchscript", torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError:
            pass  # not a TorchScript archive
        if _is_exported_program(path):
            return "torch.export", torch.export.load(str(path)).module()
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torch's own text suggests unsafe unpickling
            raise ConfigError(f"--model {path}: not a TorchScript file, an exported program "
                              "(.pt2) or a state dict of tensors. Is it a model for another "
                              "framework?") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"--model {path}: holds a {type(state).__name__}, not a state "
                              "dict, a TorchScript or an exported program.")
        return "state dict", self._build_with_weights(state, options.model_name, path)

    def _build_with_weights(self, state: dict, model_name: str, path: Path):
        if model_name not in ARCHITECTURES:
            raise ConfigError(f"--model {path} is a state dict; it needs an architecture, but "
                              f"--model-name {model_name!r} is none of {sorted(ARCHITECTURES)}. "
                              "Export the model to TorchScript or ONNX instead.")
        module_name, factory, install = ARCHITECTURES[model_name]
        try:
            build = getattr(importlib.import_module(module_name), factory)
        except ImportError:
            raise ConfigError(f"a {model_name} state dict needs {install}: install it, or "
                              "use a TorchScript or ONNX export of the model.") from None
        model = build.from_name(model_name) if hasattr(build, "from_name") else build()
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ConfigError(f"--model {path}: its weights do not fit {model_name} "
                              f"({first_line(error)})") from None
        return model.eval()

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.type == "cuda":
                inputs = inputs.pin_memory().to(self.device, non_blocking=True)
            if self._table is not None and inputs.dtype == torch.uint8:
                inputs = lookup_normalized(torch, inputs, *self._table)
            inputs = inputs.to(dtype=self.dtype, memory_format=self.memory_format)
            outputs = self.model(inputs)
            return [output if isinstance(output, np.ndarray) else self._to_numpy(output)
                    for output in self._flatten(outputs)]

    def normalize_on_device(self, table: np.ndarray, layout: str) -> bool:
        """Take uint8 batches from now on and normalise them on the device by table lookup
        (the worker asks this on a GPU)."""
        torch = self.torch
        channel_axis = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
        offsets = (torch.arange(3, dtype=torch.int64) * 256).reshape(channel_axis)
        self._table = (torch.from_numpy(table).reshape(-1).to(self.device),
                       offsets.to(self.device))
        return True

    def _flatten(self, outputs) -> list:
        if isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], dict):
            return self._per_image_dicts(outputs)
        if isinstance(outputs, dict):
            names = self.output_names or list(outputs)
            missing = [name for name in names if name not in outputs]
            if missing:
                raise ConfigError(f"the model has no output(s) {missing}; it returns "
                                  f"{list(outputs)}. Fix --outputs.")
            return [outputs[name] for name in names]
        if isinstance(outputs, (list, tuple)):
            return list(outputs)
        return [outputs]

    def _per_image_dicts(self, outputs: list[dict]) -> list[np.ndarray]:
        """Detection models (torchvision style, the MLPerf RetinaNet) return one dict per
        image: each named output becomes an object array holding one array per image."""
        names = self.output_names or list(outputs[0])
        missing = [name for name in names if name not in outputs[0]]
        if missing:
            raise ConfigError(f"the model has no output(s) {missing}; each image's dict holds "
                              f"{list(outputs[0])}. Fix --outputs.")
        columns = []
        for name in names:
            column = np.empty(len(outputs), dtype=object)
            for i, per_image in enumerate(outputs):
                column[i] = self._to_numpy(per_image[name])
            columns.append(column)
        return columns

    def _to_numpy(self, tensor) -> np.ndarray:
        if tensor.dtype in (self.torch.float16, self.torch.bfloat16):
            tensor = tensor.float()  # NumPy has no bfloat16; scores are compared in float32
        return tensor.detach().cpu().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "format": self.kind, "device": str(self.device),
                "precision": self.precision, "cuda_graphs": self.cuda_graphs,
                "normalizes_on_device": self._table is not None,
                "torch": self.torch.__version__}
