"""MLPerf's compliance tests TEST01 and TEST04 on this SUT (`--compliance TEST01|TEST04`).

The audit.config LoadGen reads is written into a scratch folder of this run and named to
LoadGen explicitly, then deleted: no audit file is left where a later run could pick it up.

TEST01 (caching, wrong answers in performance mode): LoadGen logs a sample of the performance
run's payloads (accuracy_log_sampling_target, with TEST01's seed); each must match the payload
the reference accuracy run gave for the same qsl_idx (the rules compare the first value), and
the performance must be within 10 % of the reference performance run's (20 % for SingleStream
under 200 us and MultiStream under 1.6 ms). TEST04 (caching of repeated samples): the same
sample issued throughout; its performance must not exceed the reference's by 10 % (20 % as
above). Both write verify_accuracy.txt / verify_performance.txt with a TEST PASS or TEST FAIL
line and the folders the submission checker reads:

    <output>/<TEST>/verify_*.txt, accuracy/mlperf_log_accuracy.json (TEST01),
    performance/run_1/mlperf_log_summary.txt and mlperf_log_detail.txt
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.accuracy import read_accuracy_log
from harness_base import ConfigError
from sut.mlperf_rules import RULES, TEST01_RNG_SEED
from sut.report import read_loadgen_results

TESTS = ("TEST01", "TEST04")
# The figure each scenario is judged by, in mlperf_log_detail.txt.
SCORE_KEY = {"Offline": "result_samples_per_second",
             "SingleStream": "early_stopping_latency_ss",
             "MultiStream": "early_stopping_latency_ms",
             "Server": "result_completed_samples_per_sec"}
LATENCY_SCENARIOS = ("SingleStream", "MultiStream")


def audit_config(test: str, model: str, scenario: str) -> str:
    rules = RULES.get(model)
    if test == "TEST01":
        if rules is None or rules.test01_sampling_target is None:
            raise ConfigError(f"--compliance TEST01: the MLPerf rules have no TEST01 for "
                              f"{model} (resnet50 and retinanet have one)")
        return (f"*.{scenario}.mode = 2\n"
                f"*.{scenario}.accuracy_log_rng_seed = {TEST01_RNG_SEED}\n"
                f"*.{scenario}.accuracy_log_sampling_target = {rules.test01_sampling_target}\n")
    if test == "TEST04":
        if rules is None or not rules.test04:
            raise ConfigError(f"--compliance TEST04: the MLPerf rules have no TEST04 for "
                              f"{model} (resnet50 has one)")
        return (f"*.{scenario}.mode = 2\n*.{scenario}.performance_issue_unique = 0\n"
                f"*.{scenario}.performance_issue_same = 1\n"
                f"*.{scenario}.performance_issue_same_index = 3\n")
    raise ConfigError(f"--compliance {test}: choose one of {', '.join(TESTS)}")


@dataclass(frozen=True)
class Reference:
    """The submission runs a compliance test is judged against."""

    performance_dir: Path  # holds mlperf_log_detail.txt and mlperf_log_summary.txt
    accuracy_log: Path | None  # the accuracy run's mlperf_log_accuracy.json (TEST01)


def find_reference(folder: str | None, test: str, scenario: str) -> Reference:
    """From a checker-style results folder (accuracy/, performance/run_1/) or a folder holding
    this harness's accuracy/ and performance/ outputs; refused before anything runs."""
    if not folder:
        raise ConfigError(f"--compliance {test} needs --compliance-reference DIR: the folder of "
                          "the submission's accuracy and performance runs of this scenario "
                          "(DIR/accuracy/, DIR/performance/ or DIR/performance/run_1/)")
    root = Path(folder)
    performance = performance_folder(root)
    if performance is None:
        raise ConfigError(f"--compliance-reference {root}: no performance/run_1/ or performance/ "
                          "with an mlperf_log_detail.txt in it")
    detail = read_loadgen_results(performance)
    if detail.get("effective_scenario") != scenario:
        raise ConfigError(f"--compliance-reference {root}: its performance run is "
                          f"{detail.get('effective_scenario')}, this test {scenario}")
    if detail.get("result_validity") != "VALID":
        raise ConfigError(f"--compliance-reference {root}: its performance run is "
                          f"{detail.get('result_validity')}; a compliance test is judged "
                          "against a VALID one")
    accuracy = root / "accuracy" / "mlperf_log_accuracy.json"
    if test == "TEST01" and not accuracy.is_file():
        raise ConfigError(f"--compliance-reference {root}: TEST01 compares with the accuracy "
                          f"run's log, and {accuracy} is missing")
    return Reference(performance, accuracy if accuracy.is_file() else None)


def performance_folder(root: Path) -> Path | None:
    """A scenario folder's performance run: performance/run_1/ (the checker's layout) or
    performance/ (this harness's output), the one holding a detail log."""
    return next((path for path in (root / "performance" / "run_1", root / "performance")
                 if (path / "mlperf_log_detail.txt").is_file()), None)


def _score(detail: dict, path: Path) -> tuple[str, float]:
    scenario = detail.get("effective_scenario")
    key = SCORE_KEY.get(scenario)
    if key is None or detail.get(key) is None:
        raise ConfigError(f"{path}: no {key or 'scenario'} in its mlperf_log_detail.txt")
    return scenario, float(detail[key])


def _threshold(scenario: str, latency_ns: float) -> float:
    short = (scenario == "SingleStream" and latency_ns <= 200_000) or (
        scenario == "MultiStream" and latency_ns <= 1_600_000)
    return 0.20 if short else 0.10


def verify_performance(test: str, reference: Reference, test_dir: Path) -> list[str]:
    """The verify_performance.txt lines, ending in TEST PASS or TEST FAIL: ..."""
    ref_detail, test_detail = (read_loadgen_results(reference.performance_dir),
                               read_loadgen_results(test_dir))
    ref_scenario, ref_score = _score(ref_detail, reference.performance_dir)
    test_scenario, test_score = _score(test_detail, test_dir)
    lines = [f"reference score = {ref_score}", f"test score = {test_score}"]
    if test_scenario != ref_scenario:
        return lines + ["TEST FAIL: the test and reference scenarios differ"]
    if test_detail.get("result_validity") != "VALID":
        return lines + ["TEST FAIL: the test's results are INVALID"]
    if ref_scenario == "Server" and (test_detail.get("effective_target_latency_ns")
                                     != ref_detail.get("effective_target_latency_ns")):
        return lines + ["TEST FAIL: the Server target latency differs"]
    latency = ref_scenario in LATENCY_SCENARIOS
    threshold = _threshold(ref_scenario, ref_score)
    if test == "TEST01":
        passed = ref_score * (1 - threshold) <= test_score <= ref_score * (1 + threshold)
        lines.append(f"allowed: within {threshold:.0%} of the reference")
    else:  # TEST04: the same sample repeated must not run faster than distinct ones
        as_rate = (1e9 / test_score, 1e9 / ref_score) if latency else (test_score, ref_score)
        passed = as_rate[0] < as_rate[1] * (1 + threshold)
        lines.append(f"allowed: at most {threshold:.0%} faster than the reference")
    return lines + ["TEST PASS" if passed else "TEST FAIL: test score out of bounds"]


def verify_accuracy(reference: Reference, test_dir: Path, dtype=np.float32) -> list[str]:
    """TEST01's check: each payload the performance run logged against the accuracy run's."""
    by_index: dict[int, str] = {}
    for entry in read_accuracy_log(reference.accuracy_log):
        by_index.setdefault(entry["qsl_idx"], entry["data"])
    sampled = read_accuracy_log(test_dir / "mlperf_log_accuracy.json")
    matched = mismatched = missing = differ_anywhere = 0
    for entry in sampled:
        expected = by_index.get(entry["qsl_idx"])
        if expected is None:
            missing += 1
            continue
        matched += 1
        got, want = (np.frombuffer(bytes.fromhex(text), dtype) for text in
                     (entry["data"], expected))
        if got.size == 0 or want.size == 0:
            mismatched += got.size != want.size
        elif got[0] != want[0]:
            mismatched += 1
        differ_anywhere += entry["data"] != expected
    lines = [f"num_acc_log_entries = {len(by_index)}", f"num_perf_log_entries = {len(sampled)}",
             f"num_perf_log_qsl_idx_match = {matched}",
             f"num_perf_log_data_mismatch = {mismatched}",
             f"num_missing_qsl_idxs = {missing}",
             f"payloads differing anywhere (not judged) = {differ_anywhere}"]
    if not sampled:
        return lines + ["TEST FAIL: the performance run logged no payloads (were they sent?)"]
    return lines + ["TEST PASS" if mismatched == 0 and matched > 0 else "TEST FAIL"]


def verify(test: str, reference: Reference, test_dir: Path, output: Path) -> dict:
    """Write <output>/<test>/ as the checker reads it; returns the verdicts."""
    folder = output / test
    run_folder = folder / "performance" / "run_1"
    run_folder.mkdir(parents=True, exist_ok=True)
    outcome = {"test": test, "folder": str(folder)}
    performance = verify_performance(test, reference, test_dir)
    (folder / "verify_performance.txt").write_text("\n".join(performance) + "\n")
    outcome["performance"] = performance[-1]
    if test == "TEST01":
        accuracy = verify_accuracy(reference, test_dir)
        (folder / "verify_accuracy.txt").write_text("\n".join(accuracy) + "\n")
        outcome["accuracy"] = accuracy[-1]
        (folder / "accuracy").mkdir(exist_ok=True)
        shutil.copy2(test_dir / "mlperf_log_accuracy.json", folder / "accuracy")
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        shutil.copy2(test_dir / name, run_folder)
    outcome["passed"] = all(outcome.get(key, "TEST PASS") == "TEST PASS"
                            for key in ("performance", "accuracy"))
    return outcome
