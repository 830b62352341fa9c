"""MLPerf's accuracy targets and the compliance tests TEST01/TEST04, on the known-answer set."""

from __future__ import annotations

import json

import pytest

from harness_base import EXIT_BAD_INPUT, EXIT_OK, ConfigError
from sut.compliance import audit_config
from sut.mlperf_rules import RULES, accuracy_verdict
from sut.report import read_loadgen_results


def test_accuracy_targets_are_the_closed_divisions():
    assert RULES["resnet50"].target == pytest.approx(75.6954)
    assert RULES["retinanet"].target == pytest.approx(37.1745)
    assert accuracy_verdict("resnet50", 75.6954, 50000) == {
        "verdict": "PASS", "target_percent": 75.6954, "counts": True,
        "rule": "99% of 76.46% top1 (MLPerf v6.1)"}
    assert accuracy_verdict("resnet50", 75.69, 50000)["verdict"] == "FAIL"
    partial = accuracy_verdict("retinanet", 40.0, 100)
    assert partial["verdict"] == "PASS" and not partial["counts"]
    assert "does not count" in partial["note"]
    assert accuracy_verdict("efficientnet-lite0", 90.0, 20)["verdict"] == "no target"


def test_audit_configs_carry_the_rules_settings():
    test01 = audit_config("TEST01", "resnet50", "Offline")
    assert "*.Offline.mode = 2" in test01
    assert "*.Offline.accuracy_log_rng_seed = 720381539243781796" in test01
    assert "*.Offline.accuracy_log_sampling_target = 4096" in test01
    assert "accuracy_log_sampling_target = 256" in audit_config("TEST01", "retinanet", "Server")
    test04 = audit_config("TEST04", "resnet50", "SingleStream")
    assert "*.SingleStream.performance_issue_same = 1" in test04
    assert "*.SingleStream.performance_issue_same_index = 3" in test04
    assert "*.SingleStream.performance_issue_unique = 0" in test04
    with pytest.raises(ConfigError, match="no TEST04 for retinanet"):
        audit_config("TEST04", "retinanet", "Offline")
    with pytest.raises(ConfigError, match="no TEST01 for efficientnet-lite0"):
        audit_config("TEST01", "efficientnet-lite0", "Offline")


def test_an_accuracy_run_says_its_verdict(run_known, known_set):
    run = run_known("Offline", "--accuracy")
    assert run.returncode == EXIT_OK, run.stderr
    accuracy = run.results()["tests"][0]["accuracy"]
    assert accuracy["verdict"] == "PASS" and accuracy["counts"] is False  # 16 of 50,000
    assert "accuracy verdict: PASS (100.000% against the target 75.6954%" in run.stdout
    assert "does not count" in run.stdout


# Offline issues expected QPS x min duration x 1.1 samples in its one query: enough here that
# the short test lasts its 0.5 s minimum and is VALID, as a compliance reference must be.
VALID_OFFLINE = ("--qps", "20000")


@pytest.fixture
def reference(run_known, tmp_path):
    """The submission's accuracy and performance runs of Offline, as the user makes them."""
    root = tmp_path / "reference"
    for mode, extra in (("accuracy", ["--accuracy"]), ("performance", [])):
        done = run_known("Offline", *extra, *VALID_OFFLINE, "--output", str(root / mode))
        assert done.returncode == EXIT_OK, done.stderr
    return root


def _lines(path):
    return path.read_text().splitlines()


def test_test01_samples_real_payloads_and_verifies_them(run_known, reference, tmp_path):
    run = run_known("Offline", *VALID_OFFLINE, "--compliance", "TEST01", "--compliance-reference",
                    str(reference), "--results-db", str(tmp_path / "r.db"))
    assert run.returncode == EXIT_OK, run.stderr
    folder = run.output / "TEST01"
    accuracy = _lines(folder / "verify_accuracy.txt")
    assert accuracy[-1] == "TEST PASS"
    sampled = json.loads((folder / "accuracy" / "mlperf_log_accuracy.json").read_text())
    assert sampled and all(entry["data"] for entry in sampled)  # payloads were sent
    assert f"num_perf_log_entries = {len(sampled)}" in accuracy
    performance = _lines(folder / "verify_performance.txt")
    ref = read_loadgen_results(reference / "performance")["result_samples_per_second"]
    test = read_loadgen_results(run.output)["result_samples_per_second"]
    assert performance[:2] == [f"reference score = {float(ref)}", f"test score = {float(test)}"]
    within = 0.9 * ref <= test <= 1.1 * ref
    assert performance[-1] == ("TEST PASS" if within else "TEST FAIL: test score out of bounds")
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (folder / "performance" / "run_1" / name).is_file()
    assert run.results()["compliance"]["accuracy"] == "TEST PASS"
    from sut.records import RunStore

    with RunStore(tmp_path / "r.db") as store:
        (record,) = store.find()
    assert record["kind"] == "compliance"
    # The audit file is gone: a later run samples nothing.
    assert not list(tmp_path.rglob("audit.config"))
    assert run_known("Offline", "--output", str(tmp_path / "later")).returncode == EXIT_OK
    assert read_loadgen_results(tmp_path / "later")["effective_accuracy_log_sampling_target"] == 0


def test_test01_fails_when_a_payload_differs_from_the_accuracy_run(run_known, reference):
    log = reference / "accuracy" / "mlperf_log_accuracy.json"
    entries = json.loads(log.read_text())
    for entry in entries:  # every label one off: 4-byte float32 labels, first value differs
        value = bytearray.fromhex(entry["data"])
        value[3] ^= 0x01
        entry["data"] = value.hex().upper()
    log.write_text(json.dumps(entries))
    run = run_known("Offline", *VALID_OFFLINE, "--compliance", "TEST01", "--compliance-reference",
                    str(reference))
    assert run.returncode == EXIT_OK, run.stderr
    verdict = _lines(run.output / "TEST01" / "verify_accuracy.txt")
    assert verdict[-1] == "TEST FAIL" and "num_perf_log_data_mismatch = 0" not in verdict


def test_test04_verifies_performance_against_the_reference(run_known, reference):
    run = run_known("Offline", *VALID_OFFLINE, "--compliance", "TEST04", "--compliance-reference",
                    str(reference))
    assert run.returncode == EXIT_OK, run.stderr
    folder = run.output / "TEST04"
    assert not (folder / "verify_accuracy.txt").exists()
    assert read_loadgen_results(run.output)["effective_performance_issue_same"] is True
    ref = read_loadgen_results(reference / "performance")["result_samples_per_second"]
    test = read_loadgen_results(run.output)["result_samples_per_second"]
    verdict = _lines(folder / "verify_performance.txt")[-1]
    assert verdict == ("TEST PASS" if test < 1.1 * ref else "TEST FAIL: test score out of bounds")


def test_compliance_input_is_refused_before_anything_runs(run_known, reference):
    cases = ((["--compliance", "TEST01"], "needs --compliance-reference"),
             (["--compliance", "TEST01", "--compliance-reference", str(reference / "nothing")],
              "no performance/run_1/ or performance/"),
             (["--compliance", "TEST04", "--compliance-reference", str(reference),
               "--model-name", "retinanet"], "no TEST04 for retinanet"),
             (["--compliance", "TEST01", "--compliance-reference", str(reference),
               "--accuracy"], "drop the other flag"))
    for extra, words in cases:
        run = run_known("Offline", *extra)
        assert run.returncode == EXIT_BAD_INPUT, (extra, run.stderr)
        assert words in run.stderr
        assert not (run.output / "mlperf_log_detail.txt").exists()
    run = run_known("SingleStream", "--compliance", "TEST01", "--compliance-reference",
                    str(reference))
    assert run.returncode == EXIT_BAD_INPUT and "its performance run is Offline" in run.stderr


def test_a_stream_run_that_ran_out_of_queries_names_the_target_latency_that_fits():
    """LoadGen's own advice ("Decrease the expected latency") names no number; the summary
    gives the user.conf line with this run's mean latency."""
    from sut.report import format_summary

    test = {"scenario": "SingleStream", "mode": "performance", "result": "INVALID",
            "metric": "90.00_percentile_latency_ns", "value": 394108, "unit": "ns",
            "latency_ns": {"mean_latency_ns": 358133},
            "invalid_reason": "Decrease the expected latency so the loadgen pre-generates "
                              "more queries."}
    said = format_summary({"setup": {"model_name": "resnet50"}, "tests": [test]})
    assert ("fix: put 'resnet50.SingleStream.target_latency = 0.358' (this run's mean "
            "latency, in ms) in the --user_conf file") in said
    other = dict(test, invalid_reason="Reduce target QPS to improve latency.")
    assert "fix:" not in format_summary({"tests": [other]})
