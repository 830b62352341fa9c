"""The worker core, pre-processing, cache, payloads and scoring, without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

import known_answer
from actors.backends import BackendOptions
from actors.messages import Batch
from actors.worker import InferenceWorker
from datasets import transforms
from datasets.accuracy import read_val_map_labels, score_imagenet
from datasets.cache import SampleSource, cached_file, ensure_preprocessed, preprocess_one
from datasets.imagenet import read_val_map
from datasets.postprocess import ArgMaxOutput, ArgMaxScores
from datasets.registry import DATASETS, get_dataset


@pytest.fixture(scope="module")
def loaded(known_set, tmp_path_factory):
    """The known set pre-processed into a fresh cache without Ray, as uint8 NCHW."""
    spec = get_dataset("imagenet")
    images = read_val_map(known_set.dataset_path)
    folder = ensure_preprocessed(images, spec, "NCHW", tmp_path_factory.mktemp("cache"),
                                 use_ray=False, show_progress=False)
    return images, SampleSource(folder, images, spec.sample_shape("NCHW"), np.uint8)


def make_worker(model, payloads=True) -> InferenceWorker:
    options = BackendOptions(model_path=str(model), layout="NCHW", sample_shape=(3, 224, 224),
                             threads=1)
    worker = InferenceWorker("w0", "onnxruntime", options, "imagenet")
    worker.set_payloads(payloads)
    return worker


def labels_of(result) -> list[int]:
    return np.frombuffer(result.payload_data.tobytes(), np.float32).astype(int).tolist()


def test_worker_answers_in_the_batch_order_whatever_the_storage_order(
        loaded, known_set, model_dir):
    images, source = loaded
    worker = make_worker(known_set.model(model_dir, "vgg", "NCHW"))
    # Store the samples in a scrambled order, as LoadGen's load sets are.
    order = np.random.default_rng(0).permutation(len(images))
    row_of = np.empty(len(images), np.int64)
    row_of[order] = np.arange(len(images))
    worker.set_samples(source.read(order.tolist()), row_of)
    wanted = [3, 0, 15, 7, 7]
    result = worker.infer(Batch(1, np.arange(5, dtype=np.uint64), np.array(wanted)))
    assert labels_of(result) == [int(images.labels[i]) for i in wanted]
    assert result.payload_offsets.tolist() == [0, 4, 8, 12, 16, 20]


def test_worker_with_a_wrong_row_mapping_gives_wrong_answers(loaded, known_set, model_dir):
    """The known-answer check sees a sample mix-up: shift the mapping by one row."""
    images, source = loaded
    worker = make_worker(known_set.model(model_dir, "vgg", "NCHW"))
    count = len(images)
    worker.set_samples(source.read(list(range(count))), (np.arange(count) + 1) % count)
    result = worker.infer(Batch(1, np.arange(count, dtype=np.uint64), np.arange(count)))
    assert sum(a == b for a, b in zip(labels_of(result), images.labels.tolist())) == 0


def test_worker_in_performance_mode_sends_no_bytes(loaded, known_set, model_dir):
    images, source = loaded
    worker = make_worker(known_set.model(model_dir, "vgg", "NCHW"), payloads=False)
    worker.set_samples(source.read([0, 1]), np.array([0, 1] + [-1] * (len(images) - 2)))
    result = worker.infer(Batch(4, np.array([9, 8], np.uint64), np.array([1, 0])))
    assert result.payload_data is None and result.batch_id == 4
    with pytest.raises(RuntimeError, match="not loaded"):
        worker.infer(Batch(5, np.array([9], np.uint64), np.array([2])))


def test_fixed_batch_model_runs_any_batch_size(known_set, model_dir, tmp_path, loaded):
    """A model exported for batch 1 (like the MLPerf RetinaNet ONNX) still takes batches."""
    import onnx

    images, source = loaded
    model = onnx.load(str(known_set.model(model_dir, "vgg", "NCHW")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "batch1.onnx"
    onnx.save(model, str(path))
    worker = make_worker(path)
    worker.set_samples(source.read(list(range(len(images)))), np.arange(len(images)))
    result = worker.infer(Batch(0, np.arange(3, dtype=np.uint64), np.array([2, 1, 0])))
    assert labels_of(result) == [int(images.labels[i]) for i in [2, 1, 0]]


# --- pre-processing ---------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, recipe", [("imagenet", "vgg"),
                                             ("imagenet_mobilenet", "mobilenet")])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cached_uint8_plus_worker_normalisation_is_bit_exact_with_the_spec(
        known_set, dataset, recipe, layout):
    spec = get_dataset(dataset)
    for name, _ in known_set.lines:
        expected = known_answer.spec_preprocess(known_set.dataset_path / name, recipe, layout)
        stored = preprocess_one(known_set.dataset_path / name, spec, layout)
        assert stored.dtype == np.uint8 and stored.shape == spec.sample_shape(layout)
        got = spec.normalize(stored[None], layout)[0]
        assert got.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name


def test_pytorch_variant_follows_torchvision_geometry_and_normalisation():
    """Short side 256 with PIL bilinear, long side truncated, crop offsets rounded; then
    (x/255 - mean) / std in float32."""
    from PIL import Image

    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    crop = transforms.crop_imagenet_pytorch(bgr, (224, 224))
    rgb = Image.fromarray(bgr[:, :, ::-1].copy())
    new_w = int(256 * 451 / 300)  # 384
    resized = np.asarray(rgb.resize((new_w, 256), Image.BILINEAR))
    top, left = round((256 - 224) / 2), round((new_w - 224) / 2)
    assert np.array_equal(crop, resized[top:top + 224, left:left + 224])
    got = transforms.normalize_torchvision(crop[None], "NHWC")[0]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    assert np.array_equal(got, ((crop.astype(np.float32) / np.float32(255)) - mean) / std)


def test_ctrl_c_stops_preprocessing_on_ray(known_set, tmp_path, ray_address, monkeypatch):
    """Pre-processing 50,000 images takes minutes: a Ctrl-C must end it, not wait it out."""
    import threading

    import harness_base

    signalled = threading.Event()
    signalled.set()
    monkeypatch.setattr(harness_base, "_stop", signalled)
    spec = get_dataset("imagenet")
    images = read_val_map(known_set.dataset_path)
    with pytest.raises(KeyboardInterrupt):
        ensure_preprocessed(images, spec, "NCHW", tmp_path, use_ray=True, show_progress=False)


def test_cache_is_reused_and_keyed_by_layout(known_set, tmp_path):
    spec = get_dataset("imagenet")
    images = read_val_map(known_set.dataset_path, count=3)
    first = ensure_preprocessed(images, spec, "NCHW", tmp_path, use_ray=False,
                                show_progress=False)
    stamp = cached_file(first, images.files[0]).stat().st_mtime_ns
    again = ensure_preprocessed(images, spec, "NCHW", tmp_path, use_ray=False,
                                show_progress=False)
    assert again == first and cached_file(first, images.files[0]).stat().st_mtime_ns == stamp
    other = ensure_preprocessed(images, spec, "NHWC", tmp_path, use_ray=False,
                                show_progress=False)
    assert other != first
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["layout"] == "NCHW" and manifest["dtype"] == "uint8"
    assert list(first.glob("*.tmp*")) == []


def test_reference_preprocessed_dir_is_read_as_model_ready_float32(known_set, tmp_path):
    """--preprocessed_dir: the reference's float32 .npy files are fed as they are."""
    from datasets.cache import reference_preprocessed_source

    images = read_val_map(known_set.dataset_path, count=2)
    spec = get_dataset("imagenet")
    folder = tmp_path / "preprocessed" / "imagenet" / "NCHW"
    folder.mkdir(parents=True)
    for name in images.files:
        np.save(folder / name, known_answer.spec_preprocess(images.root / name, "vgg", "NCHW"))
    source = reference_preprocessed_source(tmp_path, images, spec, "NCHW")
    assert source.normalized and source.read([1, 0]).dtype == np.float32


# --- payloads and scoring ---------------------------------------------------------------------

def test_payloads_are_one_float32_label_per_sample_with_the_offset():
    payloads = ArgMaxOutput(offset=-1)([np.array([1, 1000, 0])], np.arange(3))
    assert [np.frombuffer(payloads.sample(i), np.float32)[0] for i in range(3)] == [0, 999, -1]
    scores = np.zeros((2, 1001), np.float32)
    scores[0, 5], scores[1, 1000] = 1, 1
    payloads = ArgMaxScores(offset=-1)([scores], np.arange(2))
    assert payloads.data.view(np.float32).tolist() == [4.0, 999.0]


def test_null_outputs_are_well_formed_for_every_dataset():
    for spec in DATASETS.values():
        outputs = spec.postprocess.null_outputs(3)
        assert len(spec.postprocess(outputs, np.arange(3))) == 3


def hex_label(value: float) -> str:
    return np.array([value], np.float32).tobytes().hex().upper()


def test_score_imagenet_counts_each_index_once_and_matches_the_reference_line(tmp_path):
    labels = [("a.jpg", 5), ("b.jpg", 7), ("c.jpg", 9)]
    entries = [{"seq_id": 0, "qsl_idx": 1, "data": hex_label(7)},
               {"seq_id": 1, "qsl_idx": 0, "data": hex_label(5)},
               {"seq_id": 2, "qsl_idx": 1, "data": hex_label(3)},  # duplicate: ignored
               {"seq_id": 3, "qsl_idx": 2, "data": hex_label(1)}]
    top1 = score_imagenet(entries, labels)
    assert (top1.good, top1.total, top1.duplicates) == (2, 3, 1)
    assert top1.line() == "accuracy=66.667%, good=2, total=3"
    assert top1.mistakes == (("c.jpg", 9, 1),)


def test_swapped_answers_in_the_log_lower_the_score():
    labels = [("a", 1), ("b", 2)]
    right = [{"seq_id": 0, "qsl_idx": 0, "data": hex_label(1)},
             {"seq_id": 1, "qsl_idx": 1, "data": hex_label(2)}]
    swapped = [{"seq_id": 0, "qsl_idx": 0, "data": hex_label(2)},
               {"seq_id": 1, "qsl_idx": 1, "data": hex_label(1)}]
    assert score_imagenet(right, labels).good == 2
    assert score_imagenet(swapped, labels).good == 0


def test_accuracy_script_takes_the_reference_flags(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import accuracy_imagenet

    (tmp_path / "val_map.txt").write_text("a.jpg 5\nb.jpg 7\n")
    (tmp_path / "log.json").write_text(json.dumps([
        {"seq_id": 0, "qsl_idx": 0, "data": hex_label(5)},
        {"seq_id": 1, "qsl_idx": 1, "data": hex_label(6)}]))
    assert accuracy_imagenet.main(["--mlperf-accuracy-file", str(tmp_path / "log.json"),
                                   "--imagenet-val-file", str(tmp_path / "val_map.txt"),
                                   "--dtype", "float32", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "accuracy=50.000%, good=1, total=2" in out and "b.jpg, expected: 7, found 6" in out
    assert read_val_map_labels(tmp_path / "val_map.txt") == [("a.jpg", 5), ("b.jpg", 7)]


def test_cache_never_mixes_two_image_folders_with_the_same_names(known_set, tmp_path):
    """Every ImageNet copy names its files alike: the cache must key on the folder too, and
    notice an image replaced in place."""
    import os
    import shutil

    spec = get_dataset("imagenet")
    other = tmp_path / "other_copy"
    shutil.copytree(known_set.dataset_path, other)
    first_name = known_set.lines[0][0]
    shutil.copy(known_set.dataset_path / known_set.lines[1][0], other / first_name)
    cache = tmp_path / "cache"
    results = {}
    for root in (known_set.dataset_path, other):
        images = read_val_map(root, count=1)
        folder = ensure_preprocessed(images, spec, "NCHW", cache, use_ray=False,
                                     show_progress=False)
        results[root] = np.load(cached_file(folder, first_name))
    assert not np.array_equal(results[known_set.dataset_path], results[other])
    # Replace the image in place (newer file): the cached sample is rebuilt.
    shutil.copy(known_set.dataset_path / first_name, other / first_name)
    later = os.stat(other / first_name).st_mtime_ns + 10**9
    os.utime(other / first_name, ns=(later, later))
    images = read_val_map(other, count=1)
    folder = ensure_preprocessed(images, spec, "NCHW", cache, use_ray=False, show_progress=False)
    assert np.array_equal(np.load(cached_file(folder, first_name)), results[known_set.dataset_path])


def test_a_name_listed_outside_the_image_folder_is_cached_inside_the_cache(known_set,
                                                                           tmp_path):
    """val_map entries that are absolute or climb out with '..': their samples are written
    under the cache folder (never beside the image, where a run with another recipe would find
    them), and read back as the images' own; a read-only image folder does not matter."""
    import shutil

    spec = get_dataset("imagenet")
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    first, second = known_set.lines[0][0], known_set.lines[1][0]
    shutil.copy(known_set.dataset_path / first, tmp_path / "up.jpg")
    shutil.copy(known_set.dataset_path / second, elsewhere / "abs.jpg")
    (root / "val_map.txt").write_text(f"../up.jpg 1\n{elsewhere / 'abs.jpg'} 2\n")
    elsewhere.chmod(0o555)
    try:
        images = read_val_map(root)
        cache = tmp_path / "cache"
        folder = ensure_preprocessed(images, spec, "NCHW", cache, use_ray=False,
                                     show_progress=False)
    finally:
        elsewhere.chmod(0o755)
    written = sorted(path for path in tmp_path.rglob("*.npy"))
    assert written and all(cache in path.parents for path in written), written
    source = SampleSource(folder, images, spec.sample_shape("NCHW"), spec.stored_dtype)
    expected = [preprocess_one(tmp_path / "up.jpg", spec, "NCHW"),
                preprocess_one(elsewhere / "abs.jpg", spec, "NCHW")]
    assert np.array_equal(source.read([0, 1]), np.stack(expected))


def test_an_image_copied_in_with_its_old_time_kept_is_preprocessed_again(known_set, tmp_path):
    """`cp -p` (or rsync -t) puts another image in place with an older modification time: the
    cache must not serve the old sample for it."""
    import shutil

    spec = get_dataset("imagenet")
    root = tmp_path / "images"
    shutil.copytree(known_set.dataset_path, root)
    first, second = known_set.lines[0][0], known_set.lines[1][0]
    images = read_val_map(root, count=1)
    cache = tmp_path / "cache"
    folder = ensure_preprocessed(images, spec, "NCHW", cache, use_ray=False, show_progress=False)
    before = np.load(cached_file(folder, first))
    shutil.copy2(known_set.dataset_path / second, root / first)  # mtime of the old file kept
    import os

    old = os.stat(known_set.dataset_path / second).st_mtime_ns
    assert os.stat(root / first).st_mtime_ns == old < os.stat(cached_file(folder, first)).st_mtime_ns
    ensure_preprocessed(images, spec, "NCHW", cache, use_ray=False, show_progress=False)
    after = np.load(cached_file(folder, first))
    assert not np.array_equal(before, after)
    assert np.array_equal(after, preprocess_one(root / first, spec, "NCHW"))


def test_a_cache_folder_that_cannot_be_written_is_named(known_set, tmp_path):
    from harness_base import ConfigError

    cache = tmp_path / "cache"
    (cache / "ray-sut").mkdir(parents=True)
    (cache / "ray-sut" / "preprocessed").write_text("a file where the cache's folder belongs")
    images = read_val_map(known_set.dataset_path, count=2)
    with pytest.raises(ConfigError, match=r"--cache_dir .*cannot write the pre-processed"):
        ensure_preprocessed(images, get_dataset("imagenet"), "NCHW", cache, use_ray=False,
                            show_progress=False)


def test_samples_loadgen_names_many_times_are_read_and_stored_once(ray_address):
    """A MultiStream query larger than the loaded set makes LoadGen name each sample many
    times (100,000 names for 64 samples): each distinct sample is read once, and every name
    maps to the row holding its own sample."""
    import ray

    from sut.shared_samples import SharedSamples

    class Source:
        normalized = False
        asked: list[int] = []

        def read(self, indices):
            self.asked = list(indices)
            return np.asarray(indices, dtype=np.int64)[:, None] * np.ones((1, 3), np.int64)

    class Pool:
        def broadcast(self, method, ref, row_of_index, normalized):
            self.rows, self.ref = row_of_index, ref

    pool, source = Pool(), Source()
    names = [5, 2, 5, 9, 2, 5] * 1000
    SharedSamples(pool, source, total_count=10).load(names)
    assert sorted(source.asked) == [2, 5, 9]
    stored = ray.get(pool.ref)
    assert all(stored[pool.rows[index]].tolist() == [index] * 3 for index in names)
    assert all(pool.rows[index] == -1 for index in (0, 1, 3, 4, 6, 7, 8))


def test_a_damaged_file_in_a_reference_preprocessed_dir_is_named_before_the_run(known_set,
                                                                                tmp_path):
    from datasets.cache import reference_preprocessed_source
    from harness_base import ConfigError

    spec = get_dataset("imagenet")
    images = read_val_map(known_set.dataset_path, count=3)
    for name in images.files:
        np.save(tmp_path / name, np.zeros(spec.sample_shape("NCHW"), np.float32))
    cut = tmp_path / (images.files[2] + ".npy")
    cut.write_bytes(cut.read_bytes()[:-4])
    with pytest.raises(ConfigError, match=rf"{images.files[2]}\.npy .*cut short"):
        reference_preprocessed_source(tmp_path, images, spec, "NCHW")
