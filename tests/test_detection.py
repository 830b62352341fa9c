"""Object detection: pre-processing, post-processing, scoring and the whole Ray pipeline, checked
against known answers the tests build themselves (tests/known_detection.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

import known_detection as kd
from conftest import REPO, assert_each_sample_once
from datasets.cache import preprocess_one
from datasets.coco import read_coco
from datasets.coco_eval import detections_from_log, score_detections
from datasets.registry import get_dataset
from harness_base import ConfigError

COCO_FILES = ("val2017", "annotations/instances_val2017.json")
OPENIMAGES_FILES = ("validation/data", "annotations/openimages-mlperf.json")


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory) -> kd.DetectionSet:
    return kd.write_detection_set(tmp_path_factory.mktemp("coco"), 6, seed=11, images_folder=COCO_FILES[0],
                                  annotations_name=COCO_FILES[1], empty_index=2)


@pytest.fixture(scope="module")
def openimages_set(tmp_path_factory) -> kd.DetectionSet:
    return kd.write_detection_set(tmp_path_factory.mktemp("openimages"), 5, seed=12,
                                  images_folder=OPENIMAGES_FILES[0],
                                  annotations_name=OPENIMAGES_FILES[1])


def _harness_input(path: Path, dataset: str, layout: str) -> np.ndarray:
    spec = get_dataset(dataset)
    return spec.normalize(preprocess_one(path, spec, layout)[None], layout)[0]


# --- pre-processing on real photos that scikit-learn ships -----------------------------------

@pytest.mark.parametrize("dataset, layout", [
    ("coco-300", "NHWC"), ("coco-300-pt", "NCHW"), ("coco-1200", "NCHW"),
    ("coco-1200-tf", "NCHW"), ("openimages-800-retinanet", "NCHW"),
    ("openimages-800-retinanet", "NHWC")])
@pytest.mark.parametrize("photo", ["china.jpg", "flower.jpg"])
def test_preprocessing_is_bit_exact_on_a_shipped_photo(dataset, layout, photo):
    sklearn = pytest.importorskip("sklearn")
    path = Path(sklearn.__file__).parent / "datasets" / "images" / photo
    ours = _harness_input(path, dataset, layout)
    expected = kd.spec_detection_input(path, dataset, layout)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


def test_grayscale_and_cmyk_jpegs_become_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    rgb = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (400, 300))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.jpg", quality=95)
    cmyk = _harness_input(tmp_path / "cmyk.jpg", "coco-300", "NHWC")
    pil_rgb = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    expected = cv2.resize(pil_rgb, (300, 300), interpolation=cv2.INTER_LINEAR)
    assert cmyk.shape == (300, 300, 3)
    assert np.abs(cmyk.astype(int) - expected).mean() < 2  # two JPEG decoders, same colours
    gray = _harness_input(tmp_path / "gray.jpg", "coco-300", "NHWC")
    assert gray.shape == (300, 300, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


# --- listing and bad input ---------------------------------------------------------------------

def test_empty_images_are_listed_except_for_coco_1200_pt(coco_set):
    """As the reference: only the PyTorch SSD-ResNet34 set leaves them out (4952 of 5000)."""
    for name in ("coco-300", "coco-300-pt", "coco-1200", "coco-1200-onnx", "coco-1200-tf"):
        listed = get_dataset(name).list_samples(coco_set.root)
        assert listed.labels.tolist() == [i["id"] for i in coco_set.images]
    without_empty = get_dataset("coco-1200-pt").list_samples(coco_set.root)
    assert without_empty.labels.tolist() == [i["id"] for i in coco_set.listed(keep_empty=False)]
    assert len(without_empty) == len(coco_set.images) - 1


def test_missing_annotations_file_is_named(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(ConfigError, match="instances_val2017.json not found"):
        read_coco(tmp_path)


def test_annotations_naming_a_missing_image_are_refused(coco_set, tmp_path):
    content = json.loads(coco_set.annotations_file.read_text())
    content["images"][0]["file_name"] = "gone.jpg"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match="gone.jpg"):
        read_coco(coco_set.root, broken)


@pytest.mark.parametrize("where, change, named", [
    ("annotations", {"bbox": [10, 20]}, r"annotations\[0\] needs .*'bbox' of 4 numbers"),
    ("annotations", {"image_id": "7"}, r"annotations\[0\] needs an 'image_id'"),
    ("images", {"id": "seven"}, r"images\[0\] has id 'seven'"),
], ids=["two-number bbox", "string image_id", "string image id"])
def test_annotations_pycocotools_would_fail_on_are_refused_before_the_run(coco_set, tmp_path,
                                                                          where, change, named):
    content = json.loads(coco_set.annotations_file.read_text())
    content[where][0].update(change)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=named):
        read_coco(coco_set.root, broken)


def test_not_a_coco_file_is_refused(tmp_path):
    wrong = tmp_path / "val_map.json"
    wrong.write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match="no 'annotations' list"):
        read_coco(tmp_path, wrong)


# --- post-processing and scoring ---------------------------------------------------------------

def _log_from_payloads(payloads, indices) -> list[dict]:
    return [{"seq_id": n, "qsl_idx": int(index), "data": payloads.sample(n).hex().upper()}
            for n, index in enumerate(indices)]


def _image_map(listed: list[dict]) -> list[dict]:
    return [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in listed]


def _answers_as_outputs(tables: kd.AnswerTables, rows: np.ndarray, convention: str):
    if convention == "tf":
        return [tables.counts[rows], tables.boxes[rows], tables.scores[rows],
                tables.classes[rows]]
    return [tables.boxes[rows], tables.classes[rows].astype(np.int64), tables.scores[rows]]


@pytest.mark.parametrize("dataset, convention", [
    ("coco-300", "tf"), ("coco-1200-onnx", "xy"), ("coco-1200-tf", "tf-no-count"),
    ("openimages-800-retinanet", "pixels800")])
def test_ground_truth_through_the_post_processing_scores_one(dataset, convention, coco_set):
    spec = get_dataset(dataset)
    listed = coco_set.listed(keep_empty=False)
    table_convention = "tf" if convention == "tf-no-count" else convention
    tables = kd.answer_tables(coco_set, listed, table_convention,
                              contiguous_classes=spec.postprocess.use_inv_map)
    rows = np.arange(len(listed))
    outputs = _answers_as_outputs(tables, rows, "xy" if convention != "tf" else "tf")
    payloads = spec.postprocess(outputs, rows)
    score = score_detections(_log_from_payloads(payloads, rows), coco_set.annotations_file,
                             _image_map(listed), spec.postprocess.use_inv_map)
    assert score.mean_ap == pytest.approx(1.0)
    assert score.detections == sum(len(coco_set.boxes[i["id"]]) for i in listed)


def _tf_log(coco_set, perturb=None):
    listed = coco_set.listed(keep_empty=False)
    tables = kd.answer_tables(coco_set, listed, "tf")
    if perturb:
        tables = perturb(tables)
    rows = np.arange(len(listed))
    payloads = get_dataset("coco-300").postprocess(_answers_as_outputs(tables, rows, "tf"), rows)
    return _log_from_payloads(payloads, rows), _image_map(listed)


def _shift_one_box(tables):
    boxes = tables.boxes.copy()
    boxes[0, 0] += np.float32(0.05)
    return replace(tables, boxes=boxes)


def _swap_xy(tables):
    return replace(tables, boxes=tables.boxes[:, :, [1, 0, 3, 2]].copy())


def _contiguous_classes_without_inverse_map(tables):
    classes = tables.classes.copy()
    for category in kd.CATEGORY_IDS:
        classes[tables.classes == category] = sorted(kd.CATEGORY_IDS).index(category) + 1
    return replace(tables, classes=classes)


@pytest.mark.parametrize("perturb", [_shift_one_box, _swap_xy,
                                     _contiguous_classes_without_inverse_map])
def test_each_perturbation_lowers_the_map(perturb, coco_set):
    entries, image_map = _tf_log(coco_set)
    perfect = score_detections(entries, coco_set.annotations_file, image_map, False)
    entries, image_map = _tf_log(coco_set, perturb)
    worse = score_detections(entries, coco_set.annotations_file, image_map, False)
    assert perfect.mean_ap == pytest.approx(1.0)
    assert worse.mean_ap < 0.99


def test_a_dropped_image_lowers_the_map_of_a_run(coco_set):
    """The run knows which images it listed: one missing from the log counts as missed."""
    entries, image_map = _tf_log(coco_set)
    everything = {i["id"] for i in image_map}
    score = score_detections(entries[1:], coco_set.annotations_file, image_map, False,
                             expected_ids=everything)
    assert score.mean_ap < 0.99
    assert score.missing == 1


def test_the_scorer_agrees_with_pycocotools_run_directly(coco_set, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    listed = coco_set.listed(keep_empty=False)
    rng = np.random.default_rng(0)
    entries, direct = [], []
    for index, image in enumerate(listed):
        records = []
        w, h = image["width"], image["height"]
        # each true box jittered (sometimes with another class), plus random false boxes
        guesses = [((x / w, y / h, (x + bw) / w, (y + bh) / h), category)
                   for (x, y, bw, bh), category in coco_set.boxes[image["id"]]]
        for _ in range(rng.integers(0, 3)):
            x0, y0 = rng.uniform(0, 0.7, 2)
            guesses.append(((x0, y0, x0 + 0.2, y0 + 0.2), 1))
        for (x0, y0, x1, y1), category in guesses:
            x0, y0, x1, y1 = np.array([x0, y0, x1, y1]) + rng.normal(0, 0.01, 4)
            if rng.uniform() < 0.2:
                category = int(rng.choice(kd.CATEGORY_IDS))
            records.append([index, y0, x0, y1, x1, rng.uniform(0.05, 1), category])
            r = np.asarray(records[-1], np.float32).astype(np.float64)
            direct.append({"image_id": image["id"], "category_id": category, "score": r[5],
                           "bbox": [r[2] * w, r[1] * h, (r[4] - r[2]) * w, (r[3] - r[1]) * h]})
        data = np.asarray(records, np.float32).tobytes().hex().upper()
        entries.append({"seq_id": index, "qsl_idx": index, "data": data})
    ours = score_detections(entries, coco_set.annotations_file, _image_map(listed), False)
    ground_truth = COCO(str(coco_set.annotations_file))
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(direct), iouType="bbox")
    evaluation.params.imgIds = [i["id"] for i in listed]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert 0.0 < ours.mean_ap < 1.0
    assert ours.stats == pytest.approx(list(evaluation.stats), abs=1e-12)


def test_duplicates_count_once_and_empty_payloads_are_images_without_detections(coco_set):
    entries, image_map = _tf_log(coco_set)
    entries = entries + [dict(entries[0], seq_id=99)]
    entries[1] = dict(entries[1], data="")
    results, image_ids, counts = detections_from_log(entries, image_map)
    assert counts["duplicates"] == 1 and counts["no_results"] == 1
    assert len(image_ids) == len(image_map)


# --- the whole Ray pipeline ------------------------------------------------------------------

PIPELINE_CASES = {
    # profile: (set, dataset, layout, convention, input, outputs, fixed batch, unbatched)
    "ssd-mobilenet-onnxruntime": ("coco", "coco-300", "NHWC", "tf", "image_tensor:0",
                                  ["num_detections:0", "detection_boxes:0",
                                   "detection_scores:0", "detection_classes:0"], None, False),
    "ssd-resnet34-onnxruntime": ("coco", "coco-1200-onnx", "NCHW", "xy", "image",
                                 ["bboxes", "labels", "scores"], 1, False),
    "retinanet-onnxruntime": ("openimages", "openimages-800-retinanet-onnx", "NCHW",
                              "pixels800", "images", ["boxes", "labels", "scores"], 1, True),
}


def _known_model(profile: str, known: kd.DetectionSet, folder: Path, keep_empty=True,
                 contiguous=False) -> Path:
    _, dataset, layout, convention, input_name, outputs, batch, unbatched = \
        PIPELINE_CASES[profile]
    path = folder / f"known_{profile}{'' if keep_empty else '_annotated'}.onnx"
    if not path.exists():
        listed = known.listed(keep_empty)
        tensors = [kd.spec_detection_input(known.root / folder_of(dataset) / i["file_name"],
                                           dataset, layout) for i in listed]
        kd.build_detection_model(path, tensors, kd.answer_tables(known, listed, convention,
                                                                 contiguous),
                                 convention, input_name, outputs, batch, unbatched)
    return path


def folder_of(dataset: str) -> str:
    return OPENIMAGES_FILES[0] if dataset.startswith("openimages") else COCO_FILES[0]


def _run_accuracy(run_cli, short_user_conf, profile, model, known, *extra):
    return run_cli("--profile", profile, "--model", str(model), "--dataset-path",
                   str(known.root), "--scenario", "Offline", "--accuracy", "--max-batchsize",
                   "4", "--user_conf", str(short_user_conf), *extra)


@pytest.mark.parametrize("profile", sorted(PIPELINE_CASES))
def test_known_boxes_score_map_one_through_the_pipeline(profile, run_cli, short_user_conf,
                                                        model_dir, coco_set, openimages_set):
    known = coco_set if PIPELINE_CASES[profile][0] == "coco" else openimages_set
    run = _run_accuracy(run_cli, short_user_conf, profile, _known_model(profile, known,
                                                                        model_dir), known)
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = run.results()["tests"][0]["accuracy"]
    listed = known.listed(keep_empty=True)
    assert accuracy["mAP"] == pytest.approx(1.0)
    assert accuracy["images"] == len(listed) and accuracy["index_mismatches"] == 0
    # the COCO set's image without annotations is listed and answers with no detection
    assert accuracy["images_without_detections"] == (1 if known is coco_set else 0)
    assert "mAP=100.000%" in run.stdout
    entries = run.accuracy_log()
    assert_each_sample_once(entries, len(listed))
    for entry in entries:  # 7 float32 per ground-truth box, nothing else
        boxes = known.boxes[listed[entry["qsl_idx"]]["id"]]
        assert len(entry["data"]) // 2 == 7 * 4 * len(boxes)
    # The reference-style tool reads the same log to the same answer.
    if profile.startswith("retinanet"):
        tool = ["accuracy_openimages.py", "--openimages-dir", str(known.root)]
    else:
        tool = ["accuracy_coco.py", "--coco-dir", str(known.root)]
    scored = subprocess.run(
        [sys.executable, str(REPO / "scripts" / tool[0]), *tool[1:], "--mlperf-accuracy-file",
         str(run.output / "mlperf_log_accuracy.json"), "--output-file",
         str(run.output / "tool.json")], capture_output=True, text=True, cwd=REPO)
    assert scored.returncode == 0, scored.stderr
    assert "mAP=100.000%" in scored.stdout


def test_inverse_class_map_and_no_empty_images_in_coco_1200_pt(run_cli, short_user_conf,
                                                               model_dir, coco_set):
    """coco-1200-pt: contiguous classes mapped back to COCO ids, the image without annotations
    not listed; run with the ONNX stand-in for the PyTorch model."""
    model = _known_model("ssd-resnet34-onnxruntime", coco_set, model_dir, keep_empty=False,
                         contiguous=True)
    run = _run_accuracy(run_cli, short_user_conf, "ssd-resnet34-pytorch", model, coco_set,
                        "--backend", "onnxruntime")
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = run.results()["tests"][0]["accuracy"]
    assert accuracy["mAP"] == pytest.approx(1.0)
    assert accuracy["images"] == 5 and accuracy["images_without_detections"] == 0
    # The tool, told to count only annotated images, with classes through the map; without the
    # map only class 1 (COCO's id 1 too) matches: 1 of 5 categories.
    for flags, expected in (["--use-inv-map"], "mAP=100.000%"), ([], "mAP=20.000%"):
        scored = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "accuracy_coco.py"), "--coco-dir",
             str(coco_set.root), "--mlperf-accuracy-file",
             str(run.output / "mlperf_log_accuracy.json"), "--output-file",
             str(run.output / "tool.json"), "--remove-48-empty-images", *flags],
            capture_output=True, text=True, cwd=REPO)
        assert scored.returncode == 0, scored.stderr
        assert expected in scored.stdout


def test_a_wrong_box_order_through_the_pipeline_lowers_the_map(run_cli, short_user_conf,
                                                               model_dir, coco_set):
    """The coco-1200-onnx model (x, y order) read as coco-1200-tf's (y, x order, inverse map)."""
    model = _known_model("ssd-resnet34-onnxruntime", coco_set, model_dir)
    run = _run_accuracy(run_cli, short_user_conf, "ssd-resnet34-onnxruntime", model, coco_set,
                        "--dataset", "coco-1200-tf")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.results()["tests"][0]["accuracy"]["mAP"] < 0.5


def test_the_tensorflow_ssd_mobilenet_profile_scores_map_one(run_cli, short_user_conf,
                                                             model_dir, coco_set):
    """ssd-mobilenet-tf: a frozen graph with the MLPerf tensor names, uint8 NHWC input."""
    pytest.importorskip("tensorflow")
    listed = coco_set.listed(keep_empty=True)
    tensors = [kd.spec_detection_input(coco_set.root / COCO_FILES[0] / i["file_name"],
                                       "coco-300", "NHWC") for i in listed]
    model = kd.build_tf_detection_graph(model_dir / "known_ssd_mobilenet.pb", tensors,
                                        kd.answer_tables(coco_set, listed, "tf"))
    run = _run_accuracy(run_cli, short_user_conf, "ssd-mobilenet-tf", model, coco_set)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.results()["tests"][0]["accuracy"]["mAP"] == pytest.approx(1.0)
    assert run.results()["setup"]["worker_details"][0]["backend"] == "tensorflow"


def test_per_image_dicts_from_pytorch_become_records():
    """RetinaNet in PyTorch returns one dict per image, each with its own number of boxes."""
    torch = pytest.importorskip("torch")
    from actors.backends.pytorch_backend import PyTorchBackend

    backend = PyTorchBackend.__new__(PyTorchBackend)
    backend.torch, backend.output_names = torch, ["boxes", "labels", "scores"]
    per_image = [{"boxes": torch.tensor([[80.0, 160.0, 400.0, 800.0]]),
                  "labels": torch.tensor([7]), "scores": torch.tensor([0.9])},
                 {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                  "scores": torch.zeros(0)}]
    outputs = backend._flatten(per_image)
    assert [len(column) for column in outputs] == [2, 2, 2]
    payloads = get_dataset("openimages-800-retinanet").postprocess(outputs, np.array([5, 6]))
    records = np.frombuffer(payloads.sample(0), np.float32)
    assert records.tolist() == pytest.approx([5, 0.2, 0.1, 1.0, 0.5, 0.9, 7])
    assert payloads.sample(1) == b""  # no detection: an empty answer, still an answer


@pytest.mark.parametrize("size", [300, 800, 1200])
def test_retinanet_sets_scale_pixel_boxes_by_their_own_input_size(size):
    spec = get_dataset(f"openimages-{size}-retinanet")
    assert spec.sample_shape("NCHW") == (3, size, size)
    boxes = np.array([[[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]]], np.float32) * size
    outputs = [boxes, np.array([[7, 3]]), np.array([[0.9, 0.01]], np.float32)]
    records = np.frombuffer(spec.postprocess(outputs, np.array([4])).sample(0), np.float32)
    assert records.tolist() == pytest.approx([4, 0.2, 0.1, 1.0, 0.5, 0.9, 7])  # 0.01 < 0.05


def test_the_detection_benchmark_script_runs(tmp_path, ray_address):
    """scripts/bench_detection.py end to end, tiny and short: it must not rot unnoticed."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_detection.py"), "--images", "8",
         "--max-batchsize", "4", "--seconds", "1", "--workdir", str(tmp_path),
         "--profile", "retinanet-onnxruntime", "--address", ray_address],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SUT Offline, null" in done.stdout and "of the loop" in done.stdout


@pytest.mark.parametrize("writeable", [False, True])
def test_the_worker_normalises_its_own_copy_and_never_the_loaded_samples(writeable):
    """Float32 samples are normalised in place on the worker's gathered copy: the answer is
    the dataset's normalisation and the loaded (shared) samples stay as they were."""
    from actors.backends import BackendOptions
    from actors.messages import Batch
    from actors.worker import InferenceWorker

    spec = get_dataset("openimages-800-retinanet-onnx")
    worker = InferenceWorker("w", "null", BackendOptions(
        model_path="none", sample_shape=(3, 8, 8)), spec.name)
    store = np.random.default_rng(3).uniform(0, 255, (5, 3, 8, 8)).astype(np.float32)
    store.flags.writeable = writeable  # Ray's object store hands out read-only arrays
    before = store.copy()
    worker.set_samples(store, np.arange(5))
    inputs = worker.inputs_for(Batch(1, np.zeros(3, np.uint64), np.array([4, 0, 4])))
    assert np.array_equal(inputs, spec.normalize(before[[4, 0, 4]], "NCHW"))
    assert np.array_equal(store, before)
