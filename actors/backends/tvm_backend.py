"""Apache TVM (Relax, apache-tvm 0.27): compile an ONNX model or a torch.export program.

The model is imported with TVM's Relax frontend and compiled once, at startup, for the
`llvm` CPU target (or `cuda`), then run by the Relax virtual machine. The batch axis stays
symbolic, so one compiled module serves every batch size the harness sends; a model whose
batch size is fixed in the file is run chunk by chunk, the last chunk padded.

TVM's default CPU build schedules nothing: its kernels are plain loops on one thread, with
no tuning (a ResNet-50 image takes ~3 s, 80x onnxruntime). The backend shows that a model
compiles and gives the right answers with TVM; tuned speed needs TVM's meta_schedule, out of
scope here. TVM's Python API changes with each release (tir -> tirx, nd.array ->
runtime.tensor): this is written for 0.27.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from actors.backends import BACKENDS
from actors.backends.base import BackendOptions
from actors.backends.common import (cast_for_model, check_sample_shape, fixed_batch_of,
                                    predict_in_fixed_chunks)
from harness_base import ConfigError

log = logging.getLogger(__name__)


def _reason(error: BaseException) -> str:
    """TVM's message without the Python/C++ traceback it often carries: its first lines."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.startswith((" ", "\t", "Traceback", "File "))]
    text = " | ".join(lines[:3])[:500]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _TvmBackend:
    """Compile at startup, then run batches on the Relax VM. A subclass's _import(path,
    options) reads the model file, sets input_name, input_dtype and fixed_batch, and returns
    the Relax IRModule."""

    preferred_layout = "NCHW"
    fmt = ""
    alternative = ""  # the backend to suggest for a model TVM cannot take

    def __init__(self, options: BackendOptions) -> None:
        if options.threads:  # read when TVM's thread pool starts, so set it before any run
            os.environ["TVM_NUM_THREADS"] = str(options.threads)
        try:
            import tvm
            from tvm import relax
        except ImportError:
            raise ConfigError(f"--backend {self.name} needs Apache TVM: "
                              f"{BACKENDS[self.name].install_command}  (the apache-tvm "
                              "package)") from None
        self.tvm = tvm
        path = Path(options.model_path)
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file.")
        self.device, self.target = self._device_and_target(tvm, options.device)
        self.output_dtypes: list = []  # per output: the dtype the model declares, if known
        self.output_index: list[int] | None = None  # which of the model's outputs to return
        started = time.perf_counter()
        try:
            module = self._import(path, options)
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - the frontends raise many unrelated types
            raise ConfigError(f"--model {path}: TVM cannot import it ({_reason(error)}). Run "
                              f"this model with --backend {self.alternative}.") from None
        self.import_s = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        try:
            executable = tvm.compile(module, target=self.target)
        except Exception as error:  # noqa: BLE001
            raise ConfigError(f"--model {path}: TVM cannot compile it for {self.target.kind.name}"
                              f" ({_reason(error)}). Run this model with --backend "
                              f"{self.alternative}.") from None
        self.compile_s = round(time.perf_counter() - started, 2)
        log.info("tvm imported %s in %.2f s, compiled it for %s in %.2f s", path.name,
                 self.import_s, self.target.kind.name, self.compile_s)
        self.vm = relax.VirtualMachine(executable, self.device)
        self._main = self.vm["main"]
        self.threads = options.threads

    @staticmethod
    def _device_and_target(tvm, device: str):
        if device == "cpu":
            return tvm.cpu(0), tvm.target.Target("llvm")
        if not tvm.cuda(0).exist:
            raise ConfigError("--device gpu: TVM sees no CUDA device (no GPU or driver, or an "
                              "apache-tvm build without CUDA). Use --device cpu.")
        return tvm.cuda(0), tvm.target.Target.from_device(tvm.cuda(0))

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        return predict_in_fixed_chunks(self._run, cast_for_model(batch, self.input_dtype),
                                       self.fixed_batch)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self._main(self.tvm.runtime.tensor(np.ascontiguousarray(batch), self.device))
        outputs = [result] if hasattr(result, "numpy") else list(result)
        if self.output_index is not None:
            outputs = [outputs[k] for k in self.output_index]
        arrays = [output.numpy() for output in outputs]
        # TVM may widen a declared type (its ONNX OneHot gives float64 for float32 values).
        return [array.astype(dtype, copy=False) if dtype is not None else array
                for array, dtype in zip(arrays, self.output_dtypes or [None] * len(arrays))]

    def describe(self) -> dict:
        return {"backend": self.name, "format": self.fmt, "target": str(self.target.kind.name),
                "device": str(self.device), "input": self.input_name,
                "fixed_batch": self.fixed_batch, "import_s": self.import_s,
                "compile_s": self.compile_s,
                "threads": self.threads, "tvm": self.tvm.__version__}


class TvmOnnxBackend(_TvmBackend):
    """An .onnx file through tvm.relax.frontend.onnx; --inputs/--outputs pick by name."""

    name = "tvm-onnx"
    fmt = "onnx"
    alternative = "onnxruntime"

    def _import(self, path: Path, options: BackendOptions):
        import onnx
        from onnx.helper import tensor_dtype_to_np_dtype
        from tvm.relax.frontend.onnx import from_onnx

        try:
            model = onnx.load(str(path))
        except Exception as error:  # noqa: BLE001 - protobuf decode errors and the like
            model, reason = None, _reason(error)
        if model is None or not model.graph.node:
            detail = f" ({reason})" if model is None else ""
            with path.open("rb") as file:
                is_zip = file.read(2) == b"PK"
            if is_zip:  # torch.export and TorchScript files are zip archives
                detail += (", but a zip archive: a PyTorch file? A torch.export .pt2 runs with "
                           "--backend tvm-pytorch")
            raise ConfigError(f"--model {path}: not an ONNX model{detail}. --backend tvm-onnx "
                              "needs an .onnx file.")
        initialized = {tensor.name for tensor in model.graph.initializer}
        inputs = {i.name: i for i in model.graph.input if i.name not in initialized}
        wanted = options.inputs[0] if options.inputs else next(iter(inputs), None)
        if wanted not in inputs:
            raise ConfigError(f"model {path} has no input {wanted!r}; its inputs are "
                              f"{sorted(inputs)}. Fix --inputs (or the profile).")
        if len(inputs) > 1:
            raise ConfigError(f"model {path} takes {len(inputs)} inputs {sorted(inputs)}; the "
                              "harness feeds one. Use --backend onnxruntime for this model.")
        tensor_type = inputs[wanted].type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim]
        check_sample_shape(shape, options, f"model {path} input {wanted!r}")
        self.fixed_batch = fixed_batch_of(shape)
        self.input_name = wanted
        self.input_dtype = tensor_dtype_to_np_dtype(tensor_type.elem_type)
        self._bind_outputs(model, path, options)
        batch = self.fixed_batch or self.tvm.tirx.Var("batch", "int64")
        return from_onnx(model, shape_dict={wanted: [batch, *options.sample_shape]},
                         keep_params_in_input=False)

    def _bind_outputs(self, model, path: Path, options: BackendOptions) -> None:
        from onnx.helper import tensor_dtype_to_np_dtype

        available = [output.name for output in model.graph.output]
        unknown = [name for name in options.outputs if name not in available]
        if unknown:
            raise ConfigError(f"model {path} has no output(s) {unknown}; its outputs are "
                              f"{available}. Fix --outputs (or the profile).")
        self.output_names = list(options.outputs) or available
        self.output_index = [available.index(name) for name in self.output_names]
        declared = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
        self.output_dtypes = [tensor_dtype_to_np_dtype(declared[name]) if declared[name] else None
                              for name in self.output_names]

    def describe(self) -> dict:
        return {**super().describe(), "outputs": self.output_names}


class TvmPyTorchBackend(_TvmBackend):
    """A torch.export program (.pt2) through tvm.relax.frontend.torch.

    Like --backend pytorch, it takes the program's one input whatever its name and returns its
    outputs in their order (--inputs/--outputs name ONNX/TF tensors in the shared profiles).
    """

    name = "tvm-pytorch"
    fmt = "torch.export"
    alternative = "pytorch"

    def _import(self, path: Path, options: BackendOptions):
        try:
            import torch
        except ImportError:
            extras = f"{BACKENDS[self.name].extra},{BACKENDS['pytorch'].extra}"
            raise ConfigError(f"--backend {self.name} reads the model with torch: pip install "
                              f"-e \".[{extras}]\"") from None
        from tvm.relax.frontend.torch import from_exported_program

        try:
            program = torch.export.load(str(path))
        except Exception as error:  # noqa: BLE001
            raise ConfigError(f"--model {path}: not a torch.export program ({_reason(error)}). "
                              f"--backend {self.name} needs a .pt2 file saved with "
                              "torch.export.save; an ONNX export runs with --backend tvm-onnx."
                              ) from None
        names = program.graph_signature.user_inputs
        if len(names) != 1:
            raise ConfigError(f"model {path} takes {len(names)} inputs {list(names)}; the "
                              "harness feeds one.")
        example = next(node.meta["val"] for node in program.graph.nodes
                       if node.op == "placeholder" and node.name == names[0])
        shape = [dim if isinstance(dim, int) else None for dim in example.shape]
        check_sample_shape(shape, options, f"model {path} input {names[0]!r}")
        self.fixed_batch = fixed_batch_of(shape)
        self.input_name = names[0]
        self.input_dtype = torch.empty((), dtype=example.dtype).numpy().dtype
        module = from_exported_program(program, keep_params_as_input=False)
        # torch.export.Dim's maximum (often 4096) would make TVM plan every buffer for that
        # many samples: without it, memory follows the batch actually run.
        module["main"] = module["main"].without_attr("tir_var_upper_bound")
        return module
