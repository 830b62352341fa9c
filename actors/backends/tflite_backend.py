"""TFLite (LiteRT): float and int8/uint8-quantised .tflite flatbuffers, on the CPU.

Quantised models get their input quantised with the model's own scale and zero point, and
their quantised outputs dequantised, so the post-processing sees the same values as for a float
model; integer outputs without quantisation (class ids) pass through.

Resizing an interpreter reallocates every tensor, so each batch shape gets its own
interpreter. A model whose batch dimension is dynamic pads every batch with zero rows up to its
power-of-two bucket (batch_size_buckets(--max-batchsize)) and keeps one interpreter per bucket:
the Server batcher's sizes 1..max would otherwise build and evict interpreters all the time.
Without a known --max-batchsize it runs whole batches at their own size, the few recent sizes
kept. A fixed-batch model runs chunk by chunk.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from actors.backends import import_framework
from actors.backends.base import BackendOptions
from actors.backends.buckets import batch_size_buckets, bucket_for, pad_rows
from actors.backends.common import (cast_for_model, check_sample_shape, fixed_batch_of,
                                    predict_in_fixed_chunks, refuse_other_formats)
from harness_base import ConfigError, first_line

KEPT_BATCH_SIZES = 4  # interpreters kept, one per recent batch size (more with buckets)


def _interpreter_class():
    return import_framework("tflite", "ai_edge_litert.interpreter", "ai-edge-litert").Interpreter


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """q = round(x / scale) + zero_point, clipped to the integer type's range."""
    info = np.iinfo(dtype)
    quantized = np.rint(values / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
               axis: int) -> np.ndarray:
    """(q - zero_point) * scale, per tensor or per channel along `axis`."""
    shape = [1] * values.ndim
    if len(scales) > 1:
        shape[axis] = len(scales)
    return ((values.astype(np.float32) - zero_points.reshape(shape).astype(np.float32))
            * scales.reshape(shape).astype(np.float32))


class TfLiteBackend:
    name = "tflite"
    preferred_layout = "NHWC"

    def __init__(self, options: BackendOptions) -> None:
        interpreter_class = _interpreter_class()
        if options.device == "gpu":
            raise ConfigError("--device gpu: the tflite backend runs on the CPU only (no GPU "
                              "delegate here). Use --device cpu, or --backend tensorflow or "
                              "onnxruntime on a GPU.")
        path = Path(options.model_path)
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file.")
        refuse_other_formats(path, self.name, "a TFLite flatbuffer")
        self.model_bytes = path.read_bytes()
        if self.model_bytes[4:8] != b"TFL3":
            raise ConfigError(f"--model {path}: not a TFLite flatbuffer (no TFL3 identifier). "
                              "--backend tflite takes a .tflite file.")
        self.threads = options.threads
        self._make = lambda: interpreter_class(
            model_content=self.model_bytes, num_threads=options.threads or None)
        try:
            interpreter = self._make()
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"--model {path}: LiteRT cannot load it "
                              f"({first_line(error)}).") from None
        self._bind(interpreter, options, path)
        # Padded batch sizes; none for a fixed-batch model or an unknown --max-batchsize.
        self.buckets = (batch_size_buckets(options.max_batchsize)
                        if self.fixed_batch is None and options.max_batchsize >= 1 else [])
        self._kept = max(KEPT_BATCH_SIZES, len(self.buckets))  # every bucket stays built
        self._by_shape: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._by_shape[self._allocated_shape] = interpreter

    def _bind(self, interpreter, options: BackendOptions, path: Path) -> None:
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        signature_inputs, signature_outputs = self._signature_names(interpreter)
        model_input = (self._find(options.inputs[0], inputs, signature_inputs, path, "--inputs")
                       if options.inputs else inputs[0])
        self.input_index = model_input["index"]
        self.input_name = model_input["name"]
        self.input_dtype = model_input["dtype"]
        self.input_quantization = model_input["quantization"]  # (scale, zero point)
        signature = [int(d) for d in model_input["shape_signature"]]
        check_sample_shape(signature, options, f"model {path} input {self.input_name!r}")
        self._allocated_shape = tuple(int(d) for d in model_input["shape"])
        self.fixed_batch = fixed_batch_of(list(signature))
        chosen = ([self._find(name, outputs, signature_outputs, path, "--outputs")
                   for name in options.outputs] if options.outputs else outputs)
        self.output_names = [detail["name"] for detail in chosen]
        self._outputs = [(detail["index"], detail["quantization_parameters"])
                         for detail in chosen]

    @staticmethod
    def _signature_names(interpreter) -> tuple[dict, dict]:
        """Signature key -> tensor index, for models converted from a SavedModel, whose
        tensor names (serving_default_x:0, StatefulPartitionedCall:0) nobody would guess."""
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            return {}, {}
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        return ({key: d["index"] for key, d in runner.get_input_details().items()},
                {key: d["index"] for key, d in runner.get_output_details().items()})

    @staticmethod
    def _find(name: str, details: list[dict], signature_names: dict, path: Path,
              flag: str) -> dict:
        """A tensor by its name in the model (with or without `:0`) or by signature key."""
        by_index = {detail["index"]: detail for detail in details}
        for detail in details:
            if detail["name"] in (name, name.removesuffix(":0")):
                return detail
        for key in (name, name.removesuffix(":0")):
            if signature_names.get(key) in by_index:
                return by_index[signature_names[key]]
        raise ConfigError(f"model {path} has no {flag[2:-1]} {name!r}; its tensors are "
                          f"{[d['name'] for d in details]} (signature keys "
                          f"{sorted(signature_names)}). Fix {flag} (or the profile).")

    # -- inference ----------------------------------------------------------------------------
    def _model_input(self, batch: np.ndarray) -> np.ndarray:
        """Values are quantised with the model's scale and zero point, except an integer batch
        of the model's own type (coco-300's uint8 for a uint8 SSD-MobileNet): those are the
        model's values already, as the reference feeds them. uint8 pixels for an int8 model
        are real values 0..255 and get quantised like floats."""
        scale, zero_point = self.input_quantization
        if (scale and np.issubdtype(self.input_dtype, np.integer)
                and batch.dtype != np.dtype(self.input_dtype)):
            return quantize(batch, scale, zero_point, self.input_dtype)
        return cast_for_model(batch, self.input_dtype)

    def _model_output(self, values: np.ndarray, quantization: dict) -> np.ndarray:
        scales = quantization["scales"]
        if len(scales) and np.issubdtype(values.dtype, np.integer):
            return dequantize(values, scales, quantization["zero_points"],
                              quantization["quantized_dimension"])
        return values  # float outputs, and integer class ids

    def _interpreter_for(self, shape: tuple[int, ...]):
        interpreter = self._by_shape.get(shape)
        if interpreter is not None:
            self._by_shape.move_to_end(shape)
            return interpreter
        interpreter = self._make()
        interpreter.resize_tensor_input(self.input_index, list(shape), strict=True)
        interpreter.allocate_tensors()
        self._by_shape[shape] = interpreter
        if len(self._by_shape) > self._kept:
            self._by_shape.popitem(last=False)
        return interpreter

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._run(self._model_input(batch))

    def _run(self, model_input: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter_for(model_input.shape)
        interpreter.set_tensor(self.input_index, model_input)
        interpreter.invoke()
        return [self._model_output(interpreter.get_tensor(index), quantization)
                for index, quantization in self._outputs]

    def _invoke_padded(self, batch: np.ndarray) -> list[np.ndarray]:
        """A batch of at most the largest bucket, run at its bucket: zero rows (in the model's
        input type, after quantisation) fill it up, and their outputs are dropped."""
        real = len(batch)
        model_input = pad_rows(self._model_input(batch), bucket_for(real, self.buckets[-1]))
        return [output[:real] for output in self._run(model_input)]

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.buckets:
            return predict_in_fixed_chunks(self._invoke, batch, self.fixed_batch)
        if len(batch) <= self.buckets[-1]:
            return self._invoke_padded(batch)
        # Beyond the largest bucket (only callers that ignore --max-batchsize send that): chunks
        # of the largest bucket, so no interpreter outside the buckets is built or evicts one.
        return predict_in_fixed_chunks(self._invoke_padded, batch, self.buckets[-1])

    def describe(self) -> dict:
        scale, zero_point = self.input_quantization
        return {"backend": self.name, "device": "cpu", "input": self.input_name,
                "input_dtype": np.dtype(self.input_dtype).name,
                "input_quantization": [float(scale), int(zero_point)],
                "outputs": self.output_names, "fixed_batch": self.fixed_batch,
                "batch_buckets": self.buckets, "threads": self.threads}
