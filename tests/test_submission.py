"""The submission tree (python -m sut submission) built from short runs of the known-answer set,
every file's format, and --check catching each rule broken on purpose."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness_base import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sut import submission
from sut.submission import SYSTEM_KEYS, truncated
from sut.submission_check import SEEDS, _check_performance, check_tree

VALID_OFFLINE = ("--qps", "20000")  # long enough to be VALID (see test_compliance.py)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_address, cache_dir, known_set, model_dir, short_user_conf):
    """resnet50 Offline as the README's sequence leaves it: accuracy, performance, TEST01, TEST04."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    root = tmp_path_factory.mktemp("submission_runs") / "resnet50-Offline"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    base = [sys.executable, "-m", "sut", "--address", ray_address, "--cache_dir", str(cache_dir),
            "--profile", "resnet50-onnxruntime", "--model",
            str(known_set.model(model_dir, "vgg", "NCHW")), "--dataset-path",
            str(known_set.dataset_path), "--user_conf", str(short_user_conf), "--scenario",
            "Offline", *VALID_OFFLINE]
    for name, extra in (("accuracy", ["--accuracy"]), ("performance", []),
                        ("test01", ["--compliance", "TEST01", "--compliance-reference",
                                    str(root)]),
                        ("test04", ["--compliance", "TEST04", "--compliance-reference",
                                    str(root)])):
        done = subprocess.run(base + extra + ["--output", str(root / name)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == EXIT_OK, done.stderr[-3000:]
    return root


def _build(runs: Path, output: Path, *extra: str) -> int:
    return submission.main(["--submitter", "ACME", "--system", "box1", "--division", "closed",
                            "--category", "edge", "--output", str(output), "--from", str(runs),
                            *extra])


def test_the_tree_has_every_file_in_the_checkers_format(runs, tmp_path, capsys):
    output = tmp_path / "tree"
    assert _build(runs, output, "--allow-short-runs", "--results-db",
                  str(tmp_path / "r.db")) == EXIT_OK
    said = capsys.readouterr().out
    root = output / "closed" / "ACME"
    system = json.loads((root / "systems" / "box1.json").read_text())
    assert list(system) == list(SYSTEM_KEYS)
    assert (system["division"], system["submitter"], system["system_name"]) == (
        "closed", "ACME", "box1")
    assert system["number_of_nodes"] == "1" and system["accelerators_per_node"] == "0"
    assert "fill in by hand" in said and "cooling" in said  # what a machine cannot tell
    assert (root / "src" / "README.md").is_file()
    result = root / "results" / "box1" / "resnet50" / "Offline"
    for name in ("performance/run_1/mlperf_log_summary.txt",
                 "performance/run_1/mlperf_log_detail.txt", "accuracy/mlperf_log_detail.txt",
                 "accuracy/accuracy.txt", "accuracy/mlperf_log_accuracy.json",
                 "TEST01/verify_accuracy.txt", "TEST01/verify_performance.txt",
                 "TEST01/accuracy/mlperf_log_accuracy.json",
                 "TEST01/performance/run_1/mlperf_log_detail.txt",
                 "TEST04/verify_performance.txt", "measurements.json", "user.conf",
                 "README.md"):
        assert (result / name).is_file(), name
    full = output / "full_logs" / "resnet50" / "Offline" / "mlperf_log_accuracy.json"
    accuracy = (result / "accuracy" / "accuracy.txt").read_text().splitlines()
    assert accuracy == ["accuracy=100.000%, good=16, total=16",
                        f"hash={hashlib.sha256(full.read_bytes()).hexdigest()}"]
    measurements = json.loads((result / "measurements.json").read_text())
    assert all(measurements[key] for key in ("input_data_types", "retraining",
                                             "starting_weights_filename", "weight_data_types",
                                             "weight_transformations"))
    assert "RULE OVERRIDES" in (result / "README.md").read_text()
    from sut.records import RunStore

    with RunStore(tmp_path / "r.db") as store:
        (record,) = store.find()
    assert record["kind"] == "submission"
    assert record["submission"]["results"] == [["resnet50", "Offline"]]
    given = json.loads((runs / "performance" / "results.json").read_text())["setup"]["user_conf"]
    conf = (result / "user.conf").read_text()
    assert conf.startswith(Path(given).read_text())
    assert conf.endswith("resnet50.Offline.target_qps = 20000\n")


def test_check_lists_what_a_short_tree_breaks(runs, tmp_path, capsys):
    output = tmp_path / "tree"
    assert _build(runs, output, "--allow-short-runs") == EXIT_OK
    capsys.readouterr()
    assert submission.main(["--check", str(output)]) == EXIT_FAILED
    said = capsys.readouterr().out
    for words in ("rule overrides", "min_duration 500 ms < 600000",
                  "Offline samples per query",
                  "covers 16 samples, the rules 50,000", "scenario SingleStream missing",
                  "scenario MultiStream missing", "cooling is empty"):
        assert words in said, words
    assert "seed" not in said  # LoadGen's own seeds: nothing to say
    assert "verify_accuracy.txt: no TEST PASS" not in said  # TEST01's payloads matched


@pytest.mark.parametrize("damage, words", [
    (lambda r, s: (r / "TEST04").rename(r.parent / "gone04"), "TEST04: missing"),
    (lambda r, s: (r / "TEST01" / "verify_accuracy.txt").write_text("TEST FAIL\n"),
     "verify_accuracy.txt: no TEST PASS line"),
    (lambda r, s: (r / "accuracy" / "accuracy.txt").write_text(
        "accuracy=100.000%, good=16, total=16\n"), "no hash=<sha256> line"),
    (lambda r, s: (r / "accuracy" / "accuracy.txt").write_text(
        "accuracy=70.000%, good=35000, total=50000\nhash=" + "0" * 64 + "\n"),
     "below the target 75.6954%"),
    (lambda r, s: (r / "accuracy" / "mlperf_log_accuracy.json").write_text("x" * 20000),
     "over the 10,240 a truncated log may have"),
    (lambda r, s: (r / "measurements.json").write_text("{}"), "retraining missing or empty"),
    (lambda r, s: (r / "user.conf").write_text(""), "user.conf: missing or empty"),
    (lambda r, s: _edit_json(s, status="bogus"), "status 'bogus'"),
    (lambda r, s: _edit_json(s, division="open"), "division 'open', the folder says closed"),
    (lambda r, s: _edit_json(s, accelerators_per_node="two"), "is no whole number"),
    (lambda r, s: shutil.rmtree(s.parent.parent / "src"), "src: missing"),
    (lambda r, s: _edit_json(s, system_type="datacenter"),
     "resnet50 is no datacenter benchmark in v6.1's closed division; give --category 'edge' "
     "or 'datacenter,edge'"),
    (lambda r, s: r.parent.rename(r.parent.parent / "retinanet"),
     "retinanet is no model of MLPerf Inference v6.1's closed division"),
])
def test_check_catches_each_rule_broken_on_purpose(runs, tmp_path, capsys, damage, words):
    output = tmp_path / "tree"
    assert _build(runs, output, "--allow-short-runs") == EXIT_OK
    root = output / "closed" / "ACME"
    result = root / "results" / "box1" / "resnet50" / "Offline"
    assert not [p for p in check_tree(output) if words in p]
    damage(result, root / "systems" / "box1.json")
    assert [p for p in check_tree(output) if words in p], words


def _edit_json(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _detail(folder: Path, **values) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mlperf_log_detail.txt").write_text("".join(
        ':::MLLOG ' + json.dumps({"key": key, "value": value}) + "\n"
        for key, value in values.items()))
    return folder


GOOD_SERVER = {"effective_scenario": "Server", "result_validity": "VALID",
               **SEEDS, "effective_performance_sample_count": 1024,
               "effective_min_duration_ms": 600000, "early_stopping_met": True,
               "effective_target_latency_ns": 15_000_000}


@pytest.mark.parametrize("change, words", [
    ({"effective_qsl_rng_seed": 1}, "effective_qsl_rng_seed 1, the rules' seed"),
    ({"effective_performance_sample_count": 64}, "performance sample count 64 < 1024"),
    ({"effective_min_duration_ms": 60000}, "min_duration 60000 ms < 600000"),
    ({"early_stopping_met": False}, "early stopping not met"),
    ({"effective_target_latency_ns": 20_000_000}, "Server target latency 20 ms > 15 ms"),
    ({"result_validity": "INVALID"}, "result INVALID"),
])
def test_each_performance_rule(tmp_path, change, words):
    from sut.mlperf_rules import RULES

    assert _check_performance(_detail(tmp_path / "good", **GOOD_SERVER), "Server", "closed",
                              RULES["resnet50"]) == []
    problems = _check_performance(_detail(tmp_path / "bad", **{**GOOD_SERVER, **change}),
                                  "Server", "closed", RULES["resnet50"])
    assert len(problems) == 1 and words in problems[0], problems


def test_offline_samples_per_query_in_closed(tmp_path):
    from sut.mlperf_rules import RULES

    offline = {**GOOD_SERVER, "effective_scenario": "Offline",
               "effective_samples_per_query": 24575}
    offline.pop("early_stopping_met")
    problems = _check_performance(_detail(tmp_path, **offline), "Offline", "closed",
                                  RULES["resnet50"])
    assert len(problems) == 1 and "samples per query 24575 < 24576" in problems[0]
    assert _check_performance(tmp_path, "Offline", "open", RULES["resnet50"]) == []


def test_truncation_keeps_the_head_and_tail():
    text = "[" + "a" * 5000 + "b" * 6000 + "]"
    cut = truncated(text)
    assert cut == text[:4096] + "..." + text[-4096:]
    assert truncated("[short]") == "[short]"


def test_bad_input_is_refused_by_name_before_anything_is_written(runs, tmp_path, capsys):
    output = tmp_path / "tree"
    for extra, words in (
            (["--submitter", "AC/ME"], "--submitter 'AC/ME'"),
            ([], "lasted at least 500 ms by its settings"),  # shortened, no --allow-short-runs
    ):
        argv = ["--submitter", "ACME", "--system", "box1", "--category", "edge", "--output",
                str(output), "--from", str(runs), *extra]
        assert submission.main(argv) == EXIT_BAD_INPUT
        assert words in capsys.readouterr().err
        assert not output.exists()
    lonely = tmp_path / "lonely"
    shutil.copytree(runs / "performance", lonely / "performance")
    assert _build(lonely, output, "--allow-short-runs") == EXIT_BAD_INPUT
    assert "no accuracy/ run" in capsys.readouterr().err
    invalid = tmp_path / "invalid"
    shutil.copytree(runs, invalid)
    detail = invalid / "performance" / "mlperf_log_detail.txt"
    detail.write_text(detail.read_text().replace('"value": "VALID"', '"value": "INVALID"'))
    assert _build(invalid, output, "--allow-short-runs") == EXIT_BAD_INPUT
    assert "the performance run is INVALID" in capsys.readouterr().err
    argv = ["--submitter", "ACME", "--system", "box1", "--category", "datacenter",
            "--output", str(output), "--allow-short-runs"]
    assert submission.main(argv + ["--from", str(runs)]) == EXIT_BAD_INPUT
    assert "resnet50 is no datacenter benchmark in v6.1" in capsys.readouterr().err
    # --scenarios: refused from the profile, before a run is made.
    assert submission.main(argv + ["--scenarios", "Offline,Server", "--runs-dir",
                                   str(tmp_path / "runs"), "--", "--profile",
                                   "resnet50-onnxruntime"]) == EXIT_BAD_INPUT
    assert "give --category 'edge' or 'datacenter,edge'" in capsys.readouterr().err
    assert not output.exists() and not (tmp_path / "runs").exists()
    output.mkdir()
    (output / "x").write_text("x")
    assert _build(runs, output, "--allow-short-runs") == EXIT_BAD_INPUT
    assert "exists and is not empty" in capsys.readouterr().err


def test_scenarios_makes_the_missing_runs_then_the_tree(tmp_path, ray_address, cache_dir,
                                                        known_set, model_dir, short_user_conf,
                                                        capfd):
    runs_dir = tmp_path / "runs"
    flags = ["--address", ray_address, "--cache_dir", str(cache_dir), "--profile",
             "resnet50-onnxruntime", "--model", str(known_set.model(model_dir, "vgg", "NCHW")),
             "--dataset-path", str(known_set.dataset_path), "--user_conf",
             str(short_user_conf), *VALID_OFFLINE]

    def build(output: Path) -> int:
        return submission.main(["--submitter", "ACME", "--system", "box1", "--category",
                                "edge", "--output", str(output), "--scenarios", "Offline",
                                "--runs-dir", str(runs_dir), "--allow-short-runs", "--",
                                *flags])

    assert build(tmp_path / "tree") == EXIT_OK
    made = capfd.readouterr().out
    for step in ("accuracy", "performance", "test01", "test04"):
        assert f"== Offline {step} -> {runs_dir / 'Offline' / step}" in made
    result = tmp_path / "tree" / "closed" / "ACME" / "results" / "box1" / "resnet50" / "Offline"
    assert (result / "TEST01" / "verify_accuracy.txt").read_text().splitlines()[-1] == "TEST PASS"
    assert (result / "TEST04" / "verify_performance.txt").is_file()
    # A second tree reuses every finished run.
    assert build(tmp_path / "again") == EXIT_OK
    assert capfd.readouterr().out.count("finished before, kept") == 4
    assert submission.main(["--submitter", "ACME", "--system", "box1", "--category", "edge",
                            "--output", str(tmp_path / "x"), "--scenarios", "Offline", "--",
                            "--output", "elsewhere"]) == EXIT_BAD_INPUT
    assert "--output after -- is set by the command itself" in capfd.readouterr().err


def test_the_rehearsal_runs_the_closed_sequence_on_its_stand_in(tmp_path, ray_address):
    """scripts/rehearse_submission.py in its short mode on 40 generated images: the stand-in
    model knows every image (100 % in both scenarios' accuracy runs, so the pre-processing
    that built it and the runs' agree), every run the rules ask for is made, the tree is
    built, the system fields a machine cannot tell are filled, and --check finds nothing but
    what short runs over a partial set break."""
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "rehearsal"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "rehearse_submission.py"),
                           "--output", str(out), "--images", "40", "--short", "--address",
                           ray_address], capture_output=True, text=True, timeout=900)
    assert done.returncode == EXIT_FAILED, done.stderr[-3000:]  # --check: the short runs
    result = out / "submission" / "closed" / "Rehearsal" / "results" / "rehearsal-node" / "resnet50"
    for scenario in ("SingleStream", "MultiStream", "Offline", "Server"):  # datacenter,edge
        accuracy = (result / scenario / "accuracy" / "accuracy.txt").read_text()
        assert accuracy.startswith("accuracy=100.000%, good=40, total=40\nhash="), accuracy
        for test in ("TEST01", "TEST04"):
            assert (result / scenario / test / "verify_performance.txt").is_file()
    rates = json.loads((out / "rates.json").read_text())
    assert (result / "Server" / "user.conf").read_text().startswith(
        f"resnet50.Offline.target_qps = {rates['Offline']}\n"
        f"resnet50.Server.target_qps = {rates['Server']}\n")
    assert "filled with 'rehearsal': host_storage_type" in done.stdout
    checked = done.stdout[done.stdout.index("submission --check"):]
    problems = [line for line in checked.splitlines() if line.startswith("PROBLEM: ")]
    allowed = ("rule overrides", "min_duration 5000 ms < 600000", "samples per query",
               "covers 40 samples, the rules 50,000", "no TEST PASS line", "result INVALID",
               "early stopping not met", "Server target latency 100 ms > 15 ms")
    assert problems and all(any(words in line for words in allowed) for line in problems), \
        problems
    assert "rehearsal: 40 stand-in images" in done.stdout
