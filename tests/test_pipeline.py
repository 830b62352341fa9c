"""The whole pipeline through the real CLI on a local Ray instance, with known-answer models.

A known-answer model recognises each test image only if the harness fed it exactly the tensor
the SPEC prescribes (see known_answer.py), so 100 % top-1 here means pre-processing, layout,
batching, result order and every single sample were right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, assert_each_sample_once

SCENARIOS = ["Offline", "Server", "SingleStream", "MultiStream"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_known_answer_scores_100_percent_in_every_scenario(
        scenario, run_known):
    run = run_known(scenario, "--accuracy", "--max-batchsize", "4")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert_each_sample_once(run.accuracy_log(), 16)
    assert f"{scenario} accuracy: 100%" in run.stderr and "16/16" in run.stderr  # progress bar
    accuracy = run.results()["tests"][0]["accuracy"]
    assert (accuracy["good"], accuracy["total"]) == (16, 16)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_performance_run_reports_a_loadgen_result_in_every_scenario(
        scenario, run_known):
    run = run_known(scenario)
    assert run.returncode == 0, run.stderr[-3000:]
    test = run.results()["tests"][0]
    assert test["mode"] == "performance"
    assert test["result"] in ("VALID", "INVALID")
    assert test["value"] and test["value"] > 0
    assert (run.output / "mlperf_log_summary.txt").is_file()
    assert "Run summary" in run.stdout
    # Performance mode sends no payload bytes back, so LoadGen logs no accuracy entries.
    assert run.accuracy_log() == []


@pytest.mark.parametrize("scenario, flags, transport", [
    ("SingleStream", (), "in-process"),  # auto: one worker, a stream scenario
    ("MultiStream", (), "in-process"),
    ("SingleStream", ("--transport", "calls"), "calls"),
    ("MultiStream", ("--gpus", "2", "--device", "cpu"), "channel"),
    ("Server", (), "channel"),
    ("Server", ("--transport", "calls"), "calls"),
    ("Offline", ("--transport", "in-process"), "in-process"),
])
def test_every_transport_answers_every_sample_once_and_right(scenario, flags, transport,
                                                             run_known):
    run = run_known(scenario, "--accuracy", "--max-batchsize", "4", *flags)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert_each_sample_once(run.accuracy_log(), 16)
    results = run.results()
    assert results["setup"]["transport"] == transport
    assert all(w.get("transport", transport) == transport
               for w in results["setup"]["worker_details"])


def test_nhwc_profile_feeds_nhwc_batches(run_known, known_set, model_dir):
    """resnet50-tf's layout rule (NHWC, label offset -1) with an NHWC ONNX model."""
    model = known_set.model(model_dir, "vgg", "NHWC")
    run = run_known("Offline", "--backend", "onnxruntime", "--accuracy", model=model,
                    profile="resnet50-tf")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout


def test_mobilenet_profile_uses_mobilenet_preprocessing_and_argmax_of_scores(
        run_known, known_set, model_dir):
    model = known_set.model(model_dir, "mobilenet", "NCHW", kind="scores",
                            output_name="MobilenetV1/Predictions/Reshape_1:0")
    run = run_known("Server", "--accuracy", model=model, profile="mobilenet-onnxruntime")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout


@pytest.mark.parametrize("wrong, expected_good", [
    ({"recipe": "vgg_linear"}, 0),  # INTER_LINEAR instead of INTER_AREA
    ({"recipe": "bgr"}, 3),  # BGR order: only the 3 grayscale images look the same
    ({"recipe": "vgg", "symbolic_shape": True, "layout": "NHWC"}, 0),  # other layout
])
def test_known_answer_drops_when_the_pipeline_differs_from_the_spec(
        wrong, expected_good, run_known, known_set, model_dir):
    """The same check must fail for a pipeline that deviates: here the model expects the
    deviation, which is the same as the harness committing it."""
    options = dict(wrong)
    recipe, layout = options.pop("recipe"), options.pop("layout", "NCHW")
    model = known_set.model(model_dir, recipe, layout, **options)
    run = run_known("Offline", "--accuracy", model=model)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"good={expected_good}, total=16" in run.stdout


def test_one_wrong_sample_costs_exactly_one(run_known, known_set, tmp_path):
    """A val_map with one label changed: the score must show exactly that one sample."""
    import shutil

    dataset = tmp_path / "one_wrong"
    shutil.copytree(known_set.dataset_path, dataset)
    lines = (dataset / "val_map.txt").read_text().splitlines()
    name, label = lines[5].split()
    lines[5] = f"{name} {(int(label) + 1) % 1000}"
    (dataset / "val_map.txt").write_text("\n".join(lines) + "\n")
    run = run_known("Offline", "--accuracy", dataset=dataset)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=93.750%, good=15, total=16" in run.stdout


def test_several_workers_on_logical_gpus_run_backends_on_cpu(run_known):
    run = run_known("Offline", "--accuracy", "--gpus", "2", "--device", "cpu",
                    "--max-batchsize", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    results = run.results()
    workers = results["setup"]["worker_details"]
    assert sorted(w["worker_id"] for w in workers) == ["worker-0", "worker-1"]
    assert all(w["providers"] == ["CPUExecutionProvider"] for w in workers)


def test_cpu_worker_pool(run_known):
    run = run_known("Server", "--accuracy", "--workers", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert len(run.results()["setup"]["worker_details"]) == 2


def test_count_limits_the_dataset_and_scores_only_those(run_known):
    run = run_known("Offline", "--accuracy", "--count", "5")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=5, total=5" in run.stdout
    assert_each_sample_once(run.accuracy_log(), 5)


def test_null_backend_runs_the_harness_without_inference(run_known):
    run = run_known("Offline", "--backend", "null", "--accuracy", with_model=False)
    assert run.returncode == 0, run.stderr[-3000:]
    entries = run.accuracy_log()
    assert_each_sample_once(entries, 16)
    # Well-formed payloads: class id 0 minus the offset, as float32.
    assert {entry["data"] for entry in entries} == {"000080BF"}


@pytest.mark.parametrize("damage", ["wrong shape", "truncated", "garbage", "wrong dtype"])
def test_a_damaged_cached_sample_is_rebuilt_before_loadgen_starts(
        run_known, known_set, cache_dir, tmp_path, damage):
    """A cached sample that is not a whole sample of the run's shape and dtype (newer than its
    image, so fresh by its times) is pre-processed again, and the run scores as if it had
    never been damaged: the damage never reaches LoadGen's load callback."""
    import shutil

    import numpy as np

    dataset = tmp_path / "broken_cache"
    shutil.copytree(known_set.dataset_path, dataset)
    assert run_known("Offline", "--count", "4", dataset=dataset).returncode == 0
    cached = next(_cached_files(cache_dir, dataset, "img_000.jpg"))
    good = cached.read_bytes()
    if damage == "wrong shape":
        np.save(cached, np.zeros((5, 5), np.uint8))
    elif damage == "wrong dtype":
        np.save(cached, np.load(cached).astype(np.float32))
    elif damage == "garbage":
        cached.write_bytes(b"garbage, not NumPy at all" * 100)
    else:
        cached.write_bytes(good[:-60])
    run = run_known("Offline", "--count", "4", "--accuracy", dataset=dataset)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=4, total=4" in run.stdout
    assert cached.read_bytes() == good


def _cached_files(cache_dir, dataset, name):
    import json

    for manifest in cache_dir.glob("ray-sut/preprocessed/imagenet/NCHW/*/manifest.json"):
        if json.loads(manifest.read_text())["images"] == str(dataset.resolve()):
            yield manifest.parent / (name + ".npy")


def test_run_local_sh_launches_like_the_reference(tmp_path, ray_address, cache_dir, known_set,
                                                  model_dir, short_user_conf):
    """MODEL_DIR/DATA_DIR/EXTRA_OPS and `backend model device`, as the reference's script."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "resnet50_v1.onnx").symlink_to(known_set.model(model_dir, "vgg", "NCHW"))
    env = dict(os.environ, MODEL_DIR=str(models), DATA_DIR=str(known_set.dataset_path),
               PYTHON=sys.executable, EXTRA_OPS=f"--address {ray_address} --cache_dir {cache_dir}",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    done = subprocess.run([str(REPO / "scripts" / "run_local.sh"), "onnxruntime", "resnet50",
                           "cpu", "--scenario", "Offline", "--accuracy", "--user_conf",
                           str(short_user_conf)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in done.stdout
    results = tmp_path / "output" / "onnxruntime-cpu" / "resnet50" / "results.json"
    assert json.loads(results.read_text())["setup"]["profile"] == "resnet50-onnxruntime"


def test_find_peak_performance_runs_loadgens_search_to_the_end(run_known):
    """LoadGen's FindPeakPerformance runs many Server tests inside one StartTest: loads,
    warm-ups and completions must hold across them."""
    run = run_known("Server", "--find-peak-performance", "--backend", "null", "--qps", "100",
                    "--max-latency", "0.05", model="none")
    assert run.returncode == 0, run.stderr[-3000:]
    test = run.results()["tests"][0]
    assert test["mode"] == "find_peak" and test["result"] in ("VALID", "INVALID")
    assert test["value"] >= 100  # the search starts at --qps and only moves up from a pass
    assert "Server find_peak:" in run.stdout
