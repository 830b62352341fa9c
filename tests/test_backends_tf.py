"""The tensorflow and tflite backends give the known answers, directly and through the whole
Ray pipeline; quantised TFLite models get their input quantised and outputs dequantised; bad
models and flags are refused with messages that name them."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from actors.backends import BackendOptions, create_backend
from harness_base import EXIT_BAD_INPUT, ConfigError
from sut.cli import main

tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

import known_answer_tf  # noqa: E402  (after the skips: it builds with tensorflow)

PROFILE_NAMES = {"inputs": ("input_tensor:0",), "outputs": ("ArgMax:0",)}  # resnet50-tf's
VARIANTS = {  # variant -> (backend, model kind, BackendOptions fields)
    "tensorflow-frozen": ("tensorflow", "frozen", PROFILE_NAMES),
    "tensorflow-saved_model": ("tensorflow", "saved_model", PROFILE_NAMES),
    "tensorflow-saved_model-own-signature": ("tensorflow", "saved_model", {}),
    "tflite-float": ("tflite", "tflite-float", PROFILE_NAMES),
    "tflite-int8": ("tflite", "tflite-int8", PROFILE_NAMES),
    # a known --max-batchsize: batches padded to power-of-two buckets, or cut beyond the largest
    "tflite-float-buckets": ("tflite", "tflite-float", {**PROFILE_NAMES, "max_batchsize": 4}),
    "tflite-int8-buckets": ("tflite", "tflite-int8", {**PROFILE_NAMES, "max_batchsize": 4}),
    # fixed batch size 1: batches run chunk by chunk
    "tensorflow-frozen-batch1": ("tensorflow", "frozen-batch1", PROFILE_NAMES),
    "tflite-float-batch1": ("tflite", "tflite-float-batch1", PROFILE_NAMES),
}


@pytest.fixture(scope="module")
def known_inputs_nhwc(known_set):
    return known_set.harness_inputs("NHWC")


def backend_for(backend: str, model, **options):
    return create_backend(backend, BackendOptions(model_path=str(model), layout="NHWC",
                                                  sample_shape=(224, 224, 3), threads=2,
                                                  **options))


def known_backend(variant, known_set, model_dir, **options):
    backend, kind, names = VARIANTS[variant]
    model = known_answer_tf.known_tf_model(known_set, model_dir, kind)
    return backend_for(backend, model, **{**names, **options})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tf_backends_give_the_known_answers(variant, known_set, model_dir, known_inputs_nhwc):
    inputs, labels = known_inputs_nhwc
    backend = known_backend(variant, known_set, model_dir)
    assert backend.describe()["fixed_batch"] == (1 if variant.endswith("batch1") else None)
    for batch in (inputs[:1], inputs[1:6], inputs[6:]):  # several batch sizes
        assert all(len(output) == len(batch) for output in backend.predict(batch))
    class_ids = np.concatenate([backend.predict(inputs[i:i + 5])[0]
                                for i in range(0, len(inputs), 5)])
    assert (class_ids - 1).tolist() == labels.tolist()


@pytest.mark.parametrize("variant", ["tensorflow-frozen", "tflite-float"])
def test_one_pixel_one_unit_off_is_not_recognised(variant, known_set, model_dir,
                                                  known_inputs_nhwc):
    """float64 graph and float32 TFLite alike see a single unit in a single pixel."""
    inputs, _ = known_inputs_nhwc
    shifted = inputs.copy()
    shifted[:, 100, 120, 1] += 1.0
    backend = known_backend(variant, known_set, model_dir)
    assert (backend.predict(shifted)[0] == known_answer_tf.REJECT_CLASS).all()


def test_int8_input_is_quantised_with_the_models_parameters(known_set, model_dir,
                                                            known_inputs_nhwc):
    """The int8 model recognises the images only when the input is quantised with its own
    scale and zero point: the same inputs quantised otherwise are all rejected."""
    from actors.backends.tflite_backend import quantize

    inputs, labels = known_inputs_nhwc
    model = known_answer_tf.known_tf_model(known_set, model_dir, "tflite-int8")
    interpreter = litert.Interpreter(model_path=str(model))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    scale, zero_point = detail["quantization"]
    assert detail["dtype"] == np.int8 and scale != 1.0 and zero_point != 0

    def class_ids(quantized):
        interpreter.set_tensor(detail["index"], quantized)
        interpreter.invoke()
        found = [d for d in interpreter.get_output_details() if d["dtype"] == np.int32]
        return interpreter.get_tensor(found[0]["index"])

    assert (class_ids(quantize(inputs, scale, zero_point, np.int8)) - 1).tolist() == \
        labels.tolist()
    for wrong_scale, wrong_zero_point in [(scale, 0), (1.0, zero_point),
                                          (scale, zero_point + 1), (scale * 1.1, zero_point)]:
        ids = class_ids(quantize(inputs, wrong_scale, wrong_zero_point, np.int8))
        assert (ids == known_answer_tf.REJECT_CLASS).all(), (wrong_scale, wrong_zero_point)


def test_int8_outputs_are_dequantised(known_set, model_dir, known_inputs_nhwc):
    """The int8 model's `distance` output (mean clipped difference to the nearest known
    tensor) comes back in input units: 0 for the known images, 3 for them shifted by 3."""
    inputs, _ = known_inputs_nhwc
    backend = known_backend("tflite-int8", known_set, model_dir,
                            outputs=("ArgMax:0", known_answer_tf.DISTANCE))
    _, distance = backend.predict(inputs[:4])
    assert distance.dtype == np.float32
    np.testing.assert_allclose(distance, 0.0, atol=0.05)
    class_ids, distance = backend.predict(inputs[:4] + np.float32(3.0))
    np.testing.assert_allclose(distance, 3.0, atol=0.1)
    assert (class_ids == known_answer_tf.REJECT_CLASS).all()


def _dynamic_batch_tflite(path):
    """[N, 2, 2, 3] float32 -> a matmul [N, 4] and its argmax [N]: integer-valued floats
    throughout, so every batch size gives bit-identical rows."""
    weights = tf.constant(np.arange(48, dtype=np.float32).reshape(12, 4) % 7 - 3)

    @tf.function(input_signature=[tf.TensorSpec([None, 2, 2, 3], tf.float32, name="image")])
    def model(image):
        scores = tf.matmul(tf.reshape(image, [-1, 12]), weights)
        return {"scores": scores, "class_id": tf.argmax(scores, axis=1, output_type=tf.int32)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model)
    path.write_bytes(converter.convert())
    return path


def test_dynamic_batch_runs_padded_to_its_bucket_with_one_interpreter_each(tmp_path,
                                                                           monkeypatch):
    """The Server batcher sends every size 1..--max-batchsize: each runs padded to its
    power-of-two bucket, gives exactly the rows it gives sample by sample, and only one
    interpreter per bucket is ever built (resizing reallocates every tensor)."""
    from actors.backends import tflite_backend
    from actors.backends.buckets import batch_size_buckets

    interpreter_class = tflite_backend._interpreter_class()
    built = []

    def counting_interpreter(**kwargs):
        built.append(interpreter_class(**kwargs))
        return built[-1]

    monkeypatch.setattr(tflite_backend, "_interpreter_class", lambda: counting_interpreter)
    max_batchsize = 8
    backend = create_backend("tflite", BackendOptions(
        model_path=str(_dynamic_batch_tflite(tmp_path / "dynamic.tflite")), layout="NHWC",
        sample_shape=(2, 2, 3), threads=1, max_batchsize=max_batchsize))
    samples = (np.arange(19 * 12, dtype=np.float32).reshape(19, 2, 2, 3) * 37 % 11) - 5
    per_sample = [backend.predict(samples[i:i + 1]) for i in range(len(samples))]
    for _ in range(2):  # the second sweep is the steady state: nothing more is built
        for size in [*range(1, max_batchsize + 1), len(samples)]:  # 19: beyond every bucket
            outputs = backend.predict(samples[:size])
            for k, output in enumerate(outputs):
                expected = np.concatenate([per_sample[i][k] for i in range(size)])
                assert output.dtype == expected.dtype
                np.testing.assert_array_equal(output, expected, err_msg=f"size {size}")
    built_batch_sizes = sorted(int(i.get_input_details()[0]["shape"][0]) for i in built)
    assert built_batch_sizes == batch_size_buckets(max_batchsize) == [1, 2, 4, 8]
    assert backend.describe()["batch_buckets"] == [1, 2, 4, 8]


@pytest.mark.parametrize("variant, backend, kind", [
    ("frozen", "tensorflow", "frozen"),
    ("saved_model", "tensorflow", "saved_model"),
    ("tflite", "tflite", "tflite-float"),
])
def test_tf_backends_through_the_whole_pipeline(variant, backend, kind, run_known, known_set,
                                                model_dir):
    model = known_answer_tf.known_tf_model(known_set, model_dir, kind)
    if kind == "saved_model":
        model = model / "saved_model.pb"  # --model must be a file; this one names its folder
    run = run_known("Offline", "--accuracy", "--backend", backend, "--inputs",
                    "input_tensor:0", "--outputs", "ArgMax:0", "--max-batchsize", "4",
                    model=model, profile="resnet50-tf")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    details = run.results()["setup"]["worker_details"][0]
    assert details["backend"] == backend
    if backend == "tensorflow":
        assert details["format"] == ("frozen_graph" if kind == "frozen" else "saved_model")


def test_uint8_graph_input_gets_rounded_clipped_uint8(tmp_path):
    """Like SSD-MobileNet's image_tensor:0: the float32 batch is cast to the graph's uint8."""
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, 2, 2, 3], name="image_tensor")
        tf.identity(tf.reduce_sum(tf.cast(image, tf.int64), axis=[1, 2, 3]), name="pixel_sum")
        tf.identity(tf.cast(image, tf.float32)[:, 0, 0, 0], name="first_pixel")
    model = tmp_path / "uint8_input.pb"
    model.write_bytes(graph.as_graph_def().SerializeToString())
    backend = create_backend("tensorflow", BackendOptions(
        model_path=str(model), layout="NHWC", sample_shape=(2, 2, 3),
        inputs=("image_tensor:0",), outputs=("pixel_sum:0", "first_pixel:0")))
    batch = np.full((3, 2, 2, 3), 200.0, dtype=np.float32)
    batch[1, 0, 0, 0], batch[2, 0, 0, 0] = 300.0, -7.0  # beyond uint8: clipped, not wrapped
    batch[0, 0, 0, 0] = 99.6  # rounded
    pixel_sum, first_pixel = backend.predict(batch)
    assert first_pixel.tolist() == [100.0, 255.0, 0.0]
    assert pixel_sum.tolist() == [11 * 200 + 100, 11 * 200 + 255, 11 * 200 + 0]


def test_frozen_graph_without_names_is_refused_through_the_cli(
        known_set, model_dir, tmp_path, ray_address, cache_dir, capsys):
    """A worker's ConfigError reaches the user as a bad-input exit naming the flags."""
    model = known_answer_tf.known_tf_model(known_set, model_dir, "frozen")
    code = main(["--output", str(tmp_path / "out"), "--cache_dir", str(cache_dir),
                 "--address", ray_address, "--profile", "resnet50-onnxruntime",
                 "--backend", "tensorflow", "--data-format", "NHWC", "--model", str(model),
                 "--dataset-path", str(known_set.dataset_path), "--scenario", "Offline"])
    assert code == EXIT_BAD_INPUT
    assert "give both --inputs and --outputs" in capsys.readouterr().err


def _onnx_model(known_set, folder):
    return known_set.model(folder, "vgg", "NCHW")


def _renamed_onnx_model(known_set, folder):
    path = folder / "an_onnx_model.pb"
    path.write_bytes(_onnx_model(known_set, folder).read_bytes())
    return path


def _torchscript_model(known_set, folder):
    pytest.importorskip("torch")
    return known_set.torch_model(folder, "torchscript")


def _tf_model(kind):
    return lambda known_set, folder: known_answer_tf.known_tf_model(known_set, folder, kind)


@pytest.mark.parametrize("backend, make_model, options, expected", [
    ("tensorflow", _tf_model("frozen"), {}, "give both --inputs and --outputs"),
    ("tensorflow", _tf_model("frozen"), {"inputs": ("input_tensor:0",)},
     "give both --inputs and --outputs"),
    ("tensorflow", _tf_model("frozen"), {**PROFILE_NAMES, "outputs": ("Softmax:0",)},
     "has no tensor 'Softmax:0'. Fix --outputs"),
    ("tensorflow", _onnx_model, PROFILE_NAMES, "is an ONNX file.*--backend onnxruntime"),
    ("tensorflow", _renamed_onnx_model, PROFILE_NAMES, "not a frozen TensorFlow GraphDef"),
    ("tensorflow", _torchscript_model, PROFILE_NAMES, "zip archive.*--backend pytorch"),
    ("tensorflow", _tf_model("tflite-float"), PROFILE_NAMES, "TFLite flatbuffer.*--backend "
                                                             "tflite"),
    ("tensorflow", _tf_model("saved_model"), {"outputs": ("scores",)},
     "has no output 'scores'.*keys \\['ArgMax'\\]"),
    ("tensorflow", _tf_model("frozen"), {**PROFILE_NAMES, "device": "gpu"},
     "--device gpu: this tensorflow sees no GPU"),
    ("tflite", _onnx_model, {}, "is an ONNX file.*--backend onnxruntime"),
    ("tflite", _renamed_onnx_model, {}, "not a TFLite flatbuffer"),
    ("tflite", _torchscript_model, {}, "zip archive.*--backend pytorch"),
    ("tflite", _tf_model("tflite-float"), {"outputs": ("scores",)},
     "has no output 'scores'.*signature keys \\['ArgMax'\\]"),
    ("tflite", _tf_model("tflite-float"), {"device": "gpu"},
     "--device gpu: the tflite backend runs on the CPU only"),
])
def test_tf_bad_input_is_named(backend, make_model, options, expected, known_set, model_dir):
    if options.get("device") == "gpu" and backend == "tensorflow" and \
            tf.config.list_physical_devices("GPU"):
        pytest.skip("tensorflow sees a GPU here")
    with pytest.raises(ConfigError, match=expected):
        backend_for(backend, make_model(known_set, model_dir), **options)


def test_nchw_batches_for_an_nhwc_model_are_refused(known_set, model_dir):
    model = known_answer_tf.known_tf_model(known_set, model_dir, "frozen")
    with pytest.raises(ConfigError, match="Pass --data-format NHWC"):
        create_backend("tensorflow", BackendOptions(
            model_path=str(model), layout="NCHW", sample_shape=(3, 224, 224), **PROFILE_NAMES))


@pytest.mark.parametrize("backend, missing, extra", [
    ("tensorflow", "tensorflow", '.[tf]'),
    ("tflite", "ai_edge_litert.interpreter", '.[tflite]'),
])
def test_missing_framework_names_the_extra(backend, missing, extra, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, missing, None)  # `import` now raises ImportError
    with pytest.raises(ConfigError, match=re.escape(f'pip install -e "{extra}"')):
        backend_for(backend, tmp_path / "model")


def test_uint8_images_reach_a_quantised_uint8_model_unchanged():
    """coco-300's uint8 pixels are the model's own values (SSD-MobileNet quantised, scale
    1/128, zero point 128): re-quantising them would saturate every pixel."""
    from actors.backends.tflite_backend import TfLiteBackend

    backend = TfLiteBackend.__new__(TfLiteBackend)
    backend.input_quantization, backend.input_dtype = (1 / 128, 128), np.uint8
    pixels = np.array([[0, 1, 64, 128, 200, 255]], dtype=np.uint8)
    assert backend._model_input(pixels).tolist() == pixels.tolist()
    reals = np.array([[-1.0, 0.0, 0.5]], dtype=np.float32)  # real values are quantised
    assert backend._model_input(reals).tolist() == [[0, 128, 192]]
    # uint8 pixels for an int8 model (scale 1, zero point -128): quantised, never wrapped
    backend.input_quantization, backend.input_dtype = (1.0, -128), np.int8
    assert backend._model_input(pixels).tolist() == [[-128, -127, -64, 0, 72, 127]]
