"""The TVM backends (tvm-onnx, tvm-pytorch) give the known answers, directly and through the
whole Ray pipeline; models TVM cannot take and bad flags are refused with messages that name
them."""

from __future__ import annotations

import numpy as np
import pytest

from actors.backends import BackendOptions
from harness_base import EXIT_BAD_INPUT, ConfigError
from sut.cli import main

tvm = pytest.importorskip("tvm")

from actors.backends.tvm_backend import TvmOnnxBackend, TvmPyTorchBackend  # noqa: E402
from known_answer import REJECT_CLASS  # noqa: E402


def onnx_model(known_set, folder, **options):
    return known_set.model(folder, "vgg", "NCHW", **options)


def fixed_batch_onnx_model(known_set, folder, batch=4):
    """The known-answer ONNX model with its batch size fixed in the file."""
    import onnx

    path = folder / f"known_vgg-NCHW-batch{batch}.onnx"
    if not path.exists():
        model = onnx.load(str(onnx_model(known_set, folder)))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
        onnx.save(model, str(path))
    return path


def torch_model(known_set, folder):
    pytest.importorskip("torch")
    return known_set.torch_model(folder, "export", for_tvm=True)


VARIANTS = {  # variant -> (backend class, how to get its model, fixed batch)
    "onnx": (TvmOnnxBackend, onnx_model, None),
    "onnx-symbolic-shape": (TvmOnnxBackend, lambda k, f: onnx_model(k, f, symbolic_shape=True),
                            None),
    "onnx-batch4": (TvmOnnxBackend, fixed_batch_onnx_model, 4),
    "torch.export": (TvmPyTorchBackend, torch_model, None),
}


def tvm_backend(backend_class, model, **options):
    return backend_class(BackendOptions(model_path=str(model), layout="NCHW",
                                        sample_shape=(3, 224, 224), threads=2, **options))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tvm_gives_the_known_answers(variant, known_set, model_dir, known_inputs):
    inputs, labels = known_inputs
    backend_class, make_model, fixed_batch = VARIANTS[variant]
    backend = tvm_backend(backend_class, make_model(known_set, model_dir))
    details = backend.describe()
    assert details["fixed_batch"] == fixed_batch and details["target"] == "llvm"
    for batch in (inputs[:1], inputs[1:6], inputs[6:]):  # several batch sizes
        outputs = backend.predict(batch)
        assert len(outputs) == 1 and len(outputs[0]) == len(batch)
    class_ids = np.concatenate([backend.predict(inputs[i:i + 5])[0]
                                for i in range(0, len(inputs), 5)])
    assert (class_ids - 1).tolist() == labels.tolist()


def test_tvm_and_onnxruntime_agree_and_see_one_unit(known_set, model_dir, known_inputs):
    """TVM keeps the model's float64 arithmetic: a single unit in a single pixel is seen."""
    from actors.backends.onnxruntime_backend import OnnxRuntimeBackend

    inputs, _ = known_inputs
    model = onnx_model(known_set, model_dir)
    backend = tvm_backend(TvmOnnxBackend, model)
    ort_ids = OnnxRuntimeBackend(BackendOptions(model_path=str(model))).predict(inputs)[0]
    assert backend.predict(inputs)[0].tolist() == ort_ids.tolist()
    shifted = inputs.copy()
    shifted[:, 1, 100, 120] += 1.0
    assert (backend.predict(shifted)[0] == REJECT_CLASS).all()


def test_scores_keep_the_declared_dtype(known_set, model_dir, known_inputs):
    """TVM's OneHot widens float32 scores to float64; the backend returns what the model
    declares."""
    inputs, labels = known_inputs
    backend = tvm_backend(TvmOnnxBackend, onnx_model(known_set, model_dir, kind="scores"),
                          outputs=("ArgMax:0",))
    scores = backend.predict(inputs[:7])[0]
    assert scores.dtype == np.float32 and scores.shape == (7, 1001)
    assert (scores.argmax(axis=1) - 1).tolist() == labels[:7].tolist()


@pytest.mark.parametrize("backend, make_model", [("tvm-onnx", onnx_model),
                                                 ("tvm-pytorch", torch_model)])
def test_tvm_through_the_whole_pipeline(backend, make_model, run_known, known_set, model_dir):
    run = run_known("Offline", "--accuracy", "--backend", backend, "--max-batchsize", "4",
                    model=make_model(known_set, model_dir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    details = run.results()["setup"]["worker_details"][0]
    assert details["backend"] in ("tvm-onnx", "tvm-pytorch")
    assert details["import_s"] > 0 and details["compile_s"] > 0


def test_missing_input_name_is_refused_through_the_cli(known_set, model_dir, tmp_path,
                                                        ray_address, cache_dir, capsys):
    """A worker's ConfigError reaches the user as a bad-input exit naming the flag."""
    code = main(["--output", str(tmp_path / "out"), "--cache_dir", str(cache_dir),
                 "--address", ray_address, "--profile", "resnet50-onnxruntime",
                 "--backend", "tvm-onnx", "--model", str(onnx_model(known_set, model_dir)),
                 "--dataset-path", str(known_set.dataset_path), "--scenario", "Offline",
                 "--inputs", "image:0"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "has no input 'image:0'" in err and "input_tensor:0" in err and "--inputs" in err


def _text_file(known_set, folder):
    path = folder / "notes.onnx"
    path.write_text("not a model\n")
    return path


def _dynamic_pad_model(known_set, folder):
    """A valid ONNX model (onnxruntime runs it) that TVM 0.27 cannot import: its Pad amounts
    come from the input's shape at run time. (The EfficientNet-Lite0 ONNX export fails alike:
    "Dynamic pads are not supported yet".)"""
    import onnx
    from onnx import TensorProto, helper

    path = folder / "dynamic_pad.onnx"
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Concat", ["shape", "shape"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["y"])]
    graph = helper.make_graph(
        nodes, "dynamic_pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _torchscript_model(known_set, folder):
    pytest.importorskip("torch")
    return known_set.torch_model(folder, "torchscript")


def _export_with_min_dim(known_set, folder):
    """known_answer's own torch.export model: it uses min(dim), which TVM's frontend lacks."""
    pytest.importorskip("torch")
    return known_set.torch_model(folder, "export")


@pytest.mark.parametrize("backend_class, make_model, options, expected", [
    (TvmOnnxBackend, _text_file, {}, "not an ONNX model.*--backend tvm-onnx needs an .onnx"),
    (TvmOnnxBackend, _torchscript_model, {}, "zip archive.*--backend tvm-pytorch"),
    (TvmOnnxBackend, onnx_model, {"inputs": ("image:0",)},
     r"has no input 'image:0'; its inputs are \['input_tensor:0'\]. Fix --inputs"),
    (TvmOnnxBackend, onnx_model, {"outputs": ("softmax_tensor:0",)},
     r"no output\(s\) \['softmax_tensor:0'\].*Fix --outputs"),
    (TvmOnnxBackend, onnx_model, {"device": "gpu"}, "--device gpu: TVM sees no CUDA device"),
    (TvmOnnxBackend, _dynamic_pad_model, {},
     r"TVM cannot import it \(ValueError: .+\)\. Run this model with --backend onnxruntime"),
    (TvmPyTorchBackend, onnx_model, {}, "not a torch.export program.*--backend tvm-onnx"),
    (TvmPyTorchBackend, _export_with_min_dim, {},
     r"TVM cannot import it.*min\.dim.*--backend pytorch"),
])
def test_tvm_bad_input_is_named(backend_class, make_model, options, expected, known_set,
                                model_dir):
    if options.get("device") == "gpu" and tvm.cuda(0).exist:
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match=expected):
        tvm_backend(backend_class, make_model(known_set, model_dir), **options)


def test_nhwc_samples_for_an_nchw_model_are_refused(known_set, model_dir):
    with pytest.raises(ConfigError, match="Pass --data-format NCHW"):
        TvmOnnxBackend(BackendOptions(model_path=str(onnx_model(known_set, model_dir)),
                                      layout="NHWC", sample_shape=(224, 224, 3)))
