"""onnxruntime: CPU, or CUDA (TensorRT first where installed) when the provider really starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.backends.base import BackendOptions
from actors.backends.common import (cast_for_model, check_sample_shape, fixed_batch_of,
                                    predict_in_fixed_chunks)
from harness_base import ConfigError

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                "tensor(double)": np.float64}


class OnnxRuntimeBackend:
    name = "onnxruntime"
    preferred_layout = "NCHW"

    def __init__(self, options: BackendOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ConfigError("--backend onnxruntime needs the onnxruntime package: "
                              "pip install -e .  (or .[gpu] for onnxruntime-gpu)") from error
        path = Path(options.model_path)
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file. Download the model (see README, "
                              "'Real MLPerf models') or pass the right path.")
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.inter_op_num_threads = 1
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        providers = self._providers(ort, options)
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as error:  # onnxruntime raises several unrelated types here
            raise ConfigError(f"--model {path}: onnxruntime cannot load it ({error}). "
                              "--backend onnxruntime needs an .onnx file.") from error
        if options.device == "gpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ConfigError("--device gpu: onnxruntime's CUDA execution provider did not start "
                              "(CUDA or cuDNN libraries missing?). Use --device cpu, or install "
                              "a matching CUDA and the gpu extra: pip install -e .[gpu]")
        self._bind_input(options, path)
        self._bind_outputs(options, path)
        self.device = options.device

    @staticmethod
    def _providers(ort, options: BackendOptions) -> list:
        """CPU; or CUDA, preceded by TensorRT where this build has it (onnxruntime falls back to
        the next provider if TensorRT's libraries do not load: describe() shows what ran)."""
        if options.device == "cpu":
            return ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ConfigError("--device gpu: this onnxruntime build has no CUDA execution "
                              "provider. Install the gpu extra (pip install -e .[gpu]) or use "
                              "--device cpu.")
        providers: list = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" in available:
            import tempfile

            # Engines take minutes to build: keep them across runs.
            cache = Path(tempfile.gettempdir()) / "ray-sut-tensorrt-engines"
            providers.insert(0, ("TensorrtExecutionProvider", {
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_fp16_enable": options.precision == "fp16"}))
        return providers

    def _bind_input(self, options: BackendOptions, path: Path) -> None:
        model_inputs = {i.name: i for i in self.session.get_inputs()}
        if options.inputs:
            wanted = options.inputs[0]
            if wanted not in model_inputs:
                raise ConfigError(f"model {path} has no input {wanted!r}; its inputs are "
                                  f"{sorted(model_inputs)}. Fix --inputs (or the profile).")
            model_input = model_inputs[wanted]
        else:
            model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_dtype = _NUMPY_TYPES.get(model_input.type)
        if self.input_dtype is None:
            raise ConfigError(f"model {path} input {model_input.name!r} has type "
                              f"{model_input.type}, which this harness cannot feed.")
        shape = list(model_input.shape)
        check_sample_shape(shape, options, f"model {path} input {model_input.name!r}")
        self.fixed_batch = fixed_batch_of(shape)

    def _bind_outputs(self, options: BackendOptions, path: Path) -> None:
        available = [o.name for o in self.session.get_outputs()]
        if options.outputs:
            unknown = [name for name in options.outputs if name not in available]
            if unknown:
                raise ConfigError(f"model {path} has no output(s) {unknown}; its outputs are "
                                  f"{available}. Fix --outputs (or the profile).")
            self.output_names = list(options.outputs)
        else:
            self.output_names = available

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = cast_for_model(batch, self.input_dtype)
        return predict_in_fixed_chunks(
            lambda chunk: self.session.run(self.output_names, {self.input_name: chunk}),
            batch, self.fixed_batch)

    def describe(self) -> dict:
        return {"backend": self.name, "providers": self.session.get_providers(),
                "input": self.input_name, "outputs": self.output_names,
                "fixed_batch": self.fixed_batch}
