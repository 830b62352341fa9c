"""TensorFlow: frozen GraphDefs (.pb, the MLPerf ResNet-50 and SSD-MobileNet files) and
SavedModel directories. The module imports no TensorFlow until a backend is built.

A frozen graph is imported once into a wrapped function and pruned to the --inputs/--outputs
tensors, so each batch is one graph-mode call (no v1 Session per call, no unused branches). A
SavedModel runs its serving_default signature; its inputs/outputs may be named by signature
key or by the tensor names that `saved_model_cli show` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from actors.backends import import_framework
from actors.backends.base import BackendOptions
from actors.backends.common import (cast_for_model, check_sample_shape, fixed_batch_of,
                                    predict_in_fixed_chunks, refuse_other_formats)
from harness_base import ConfigError, first_line

SIGNATURE = "serving_default"


def _import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter out of logs
    return import_framework("tensorflow", "tensorflow")


def _tensor_name(name: str) -> str:
    """`input_tensor` and `input_tensor:0` name the same tensor."""
    return name if ":" in name else f"{name}:0"


class TensorFlowBackend:
    name = "tensorflow"
    preferred_layout = "NHWC"

    def __init__(self, options: BackendOptions) -> None:
        tf = self.tf = _import_tensorflow()
        self._configure_threads(options.threads)
        self.device = self._device(options.device)
        path = Path(options.model_path)
        if path.name == "saved_model.pb":
            path = path.parent  # the file inside a SavedModel directory names the directory
        if path.is_dir():
            self.kind = "saved_model"
            self._load_saved_model(path, options)
        elif path.is_file():
            self.kind = "frozen_graph"
            self._load_frozen_graph(path, options)
        else:
            raise ConfigError(f"--model {path}: no such file or SavedModel directory.")
        self.version = tf.__version__

    def _configure_threads(self, threads: int) -> None:
        """Set before TF's first op; a process that already ran TF keeps what it has."""
        threading = self.tf.config.threading
        try:
            threading.set_inter_op_parallelism_threads(1)  # one batch at a time: no op overlap
            if threads:
                threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TF already initialised in this process (several backends in one test)
        self.threads = threading.get_intra_op_parallelism_threads()

    def _device(self, device: str) -> str:
        if device != "gpu":
            return "/CPU:0"
        gpus = self.tf.config.list_physical_devices("GPU")
        if not gpus:
            raise ConfigError("--device gpu: this tensorflow sees no GPU (tensorflow-cpu, no "
                              "CUDA libraries, or no driver). Use --device cpu, or install "
                              "tensorflow with CUDA (pip install \"tensorflow[and-cuda]\").")
        for gpu in gpus:  # take memory as needed: other processes share the device
            try:
                self.tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised
        return "/GPU:0"

    # -- frozen GraphDef ----------------------------------------------------------------------
    def _load_frozen_graph(self, path: Path, options: BackendOptions) -> None:
        tf = self.tf
        refuse_other_formats(path, self.name, "a frozen TensorFlow graph")
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise ConfigError(f"--model {path}: not a frozen TensorFlow GraphDef ({error}). "
                              "--backend tensorflow takes a frozen .pb or a SavedModel "
                              "directory.") from None
        if not graph_def.node or not all(node.op for node in graph_def.node):
            raise ConfigError(f"--model {path}: not a frozen TensorFlow GraphDef (no graph "
                              "nodes in it; an ONNX file? it runs with --backend onnxruntime). "
                              "--backend tensorflow takes a frozen .pb or a SavedModel "
                              "directory.")
        placeholders = [node.name for node in graph_def.node if node.op == "Placeholder"]
        if not options.inputs or not options.outputs:
            raise ConfigError(f"--model {path} is a frozen graph: it names no inputs or outputs "
                              "of its own, so give both --inputs and --outputs (tensor names, "
                              f"e.g. input_tensor:0 and ArgMax:0; its placeholders are "
                              f"{placeholders[:10]}), or use a --profile that sets them.")
        try:
            wrapped = tf.compat.v1.wrap_function(
                lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        except Exception as error:  # noqa: BLE001 - import errors come in many types
            raise ConfigError(f"--model {path}: tensorflow cannot import the graph "
                              f"({first_line(error)}).") from None
        graph = wrapped.graph
        feed = self._graph_tensor(graph, options.inputs[0], path, "--inputs", placeholders)
        fetches = [self._graph_tensor(graph, name, path, "--outputs", self._sinks(graph_def))
                   for name in options.outputs]
        check_sample_shape(feed.shape.as_list() if feed.shape.rank is not None else None,
                           options, f"model {path} input {feed.name!r}")
        self.input_name = feed.name
        self.output_names = [tensor.name for tensor in fetches]
        self.input_dtype = feed.dtype.as_numpy_dtype
        self.fixed_batch = fixed_batch_of(feed.shape.as_list() if feed.shape.rank else None)
        self._run = wrapped.prune(feeds=[feed], fetches=fetches)

    @staticmethod
    def _graph_tensor(graph, name: str, path: Path, flag: str, candidates: list[str]):
        try:
            return graph.get_tensor_by_name(_tensor_name(name))
        except (KeyError, ValueError):
            raise ConfigError(f"model {path} has no tensor {name!r}. Fix {flag} (or the "
                              f"profile); candidates: {candidates[:10]}.") from None

    @staticmethod
    def _sinks(graph_def) -> list[str]:
        """Nodes no other node reads: the likely outputs, for an error message."""
        read = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
        return [node.name for node in graph_def.node
                if node.name not in read and node.op not in ("Const", "NoOp")]

    # -- SavedModel ---------------------------------------------------------------------------
    def _load_saved_model(self, path: Path, options: BackendOptions) -> None:
        tf = self.tf
        if not (path / "saved_model.pb").is_file():
            raise ConfigError(f"--model {path}: a directory without saved_model.pb, so not a "
                              "SavedModel. Pass a SavedModel directory or a frozen .pb file.")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as error:  # noqa: BLE001
            raise ConfigError(f"--model {path}: tensorflow cannot load the SavedModel "
                              f"({first_line(error)}).") from None
        if SIGNATURE not in loaded.signatures:
            raise ConfigError(f"--model {path}: the SavedModel has no {SIGNATURE!r} signature; "
                              f"it has {sorted(loaded.signatures)}. Re-export it with one.")
        self._loaded = loaded  # keeps the signature's variables alive
        signature = loaded.signatures[SIGNATURE]
        input_specs = signature.structured_input_signature[1]
        if len(input_specs) != 1:
            raise ConfigError(f"--model {path}: its {SIGNATURE} signature takes "
                              f"{sorted(input_specs)}; the harness feeds exactly one input.")
        input_names, output_names = self._signature_tensor_names(path)
        input_key = next(iter(input_specs))
        if options.inputs:
            self._signature_key(options.inputs[0], input_specs, input_names, path, "--inputs")
        available = signature.structured_outputs
        self.output_names = [
            self._signature_key(name, available, output_names, path, "--outputs")
            for name in options.outputs] or sorted(available)
        spec = input_specs[input_key]
        check_sample_shape(spec.shape.as_list() if spec.shape.rank is not None else None,
                           options, f"model {path} input {input_key!r}")
        self.input_name = input_key
        self.input_dtype = spec.dtype.as_numpy_dtype
        self.fixed_batch = fixed_batch_of(spec.shape.as_list() if spec.shape.rank else None)
        self._run = lambda inputs: self._call_signature(signature, inputs)

    def _call_signature(self, signature, inputs) -> list:
        outputs = signature(**{self.input_name: inputs})
        return [outputs[key] for key in self.output_names]

    def _signature_tensor_names(self, path: Path) -> tuple[dict, dict]:
        """tensor name -> signature key, read from the SignatureDef: for a TF1 export these are
        the graph's own names (input_tensor:0), which profiles and users pass."""
        from tensorflow.core.protobuf import saved_model_pb2

        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
        for meta_graph in saved.meta_graphs:
            if SIGNATURE in meta_graph.signature_def:
                found = meta_graph.signature_def[SIGNATURE]
                return ({info.name: key for key, info in found.inputs.items()},
                        {info.name: key for key, info in found.outputs.items()})
        return {}, {}

    @staticmethod
    def _signature_key(name: str, keys, tensor_names: dict, path: Path, flag: str) -> str:
        if name in keys or name.removesuffix(":0") in keys:  # a key, as a name or a tensor
            return name if name in keys else name.removesuffix(":0")
        if _tensor_name(name) in tensor_names:
            return tensor_names[_tensor_name(name)]
        raise ConfigError(f"model {path} has no {flag[2:-1]} {name!r}; its {SIGNATURE} "
                          f"signature has keys {sorted(keys)} (tensors "
                          f"{sorted(tensor_names)}). Fix {flag} (or the profile).")

    # -- inference ----------------------------------------------------------------------------
    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = cast_for_model(batch, self.input_dtype)
        return predict_in_fixed_chunks(self._infer, batch, self.fixed_batch)

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        with self.tf.device(self.device):
            outputs = self._run(self.tf.convert_to_tensor(batch))
        return [output.numpy() for output in outputs]

    def describe(self) -> dict:
        return {"backend": self.name, "format": self.kind, "device": self.device,
                "input": self.input_name, "outputs": self.output_names,
                "fixed_batch": self.fixed_batch, "threads": self.threads,
                "tensorflow": self.version}
