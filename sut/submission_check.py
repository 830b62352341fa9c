"""`python -m sut submission --check DIR`: the submission checker's rules (mlcommons/inference
tools/submission, v6.1) applied to a tree, every problem listed, none fixed.

Checked: the layout and required files; the system JSON's keys, values and names; per
performance log (TEST01/TEST04 ones too): LoadGen's v6.1 seeds, the performance sample count,
the 600000 ms minimum-duration setting, Offline samples per query (closed), early stopping
(SingleStream, MultiStream, Server), the Server latency bound; per accuracy run: the whole
dataset, the accuracy target (closed), the log's size and hash; the scenarios a category needs
and the models and categories the closed division takes (sut/mlperf_rules.py CLOSED_SCENARIOS); the
compliance tests (closed: TEST01, and TEST04 for resnet50) passing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sut.mlperf_rules import CLOSED_SCENARIOS, RULES, closed_category_problem
from sut.report import read_json, read_loadgen_results
from sut.submission import (CATEGORIES, MAX_ACCURACY_LOG_BYTES, SHORT_RUN_MARK, STATUSES,
                            SYSTEM_KEYS, MAY_BE_EMPTY)

SEEDS = {"effective_qsl_rng_seed": 2085463073848966840,
         "effective_sample_index_rng_seed": 2747215439041700203,
         "effective_schedule_rng_seed": 16159082839903944936}
MIN_DURATION_MS = 600000
OFFLINE_MIN_SAMPLES_PER_QUERY = 24576
MEASUREMENT_KEYS = ("input_data_types", "retraining", "starting_weights_filename",
                    "weight_data_types", "weight_transformations")


def check_tree(root: Path) -> list[str]:
    if not root.is_dir():
        return [f"{root}: no such folder"]
    problems: list[str] = []
    divisions = [path for path in root.iterdir() if path.is_dir() and path.name != "full_logs"]
    if not divisions:
        problems.append(f"{root}: no division folder (closed/ or open/)")
    for division in divisions:
        if division.name not in ("closed", "open"):
            problems.append(f"{division}: a division is closed or open")
            continue
        for submitter in (path for path in division.iterdir() if path.is_dir()):
            problems += _check_submitter(submitter, division.name)
    return problems


def _check_submitter(folder: Path, division: str) -> list[str]:
    problems = []
    if not (folder / "src").is_dir():
        problems.append(f"{folder / 'src'}: missing (the code that made the results)")
    systems = {path.stem: path for path in (folder / "systems").glob("*.json")}
    results = folder / "results"
    if not results.is_dir():
        return problems + [f"{results}: missing"]
    for system_folder in (path for path in results.iterdir() if path.is_dir()):
        system_file = systems.get(system_folder.name)
        if system_file is None:
            problems.append(f"{folder / 'systems' / (system_folder.name + '.json')}: missing "
                            f"for results/{system_folder.name}")
            category = None
        else:
            system, found = _check_system(system_file, division, folder.name,
                                          system_folder.name)
            problems += found
            category = system.get("system_type")
        for model_folder in (path for path in system_folder.iterdir() if path.is_dir()):
            problems += _check_model(model_folder, division, category)
    return problems


def _check_system(path: Path, division: str, submitter: str, name: str):
    try:
        system = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        return {}, [f"{path}: not JSON ({error})"]
    problems = [f"{path}: key {key} missing" for key in SYSTEM_KEYS if key not in system]
    problems += [f"{path}: {key} is empty (fill it in)" for key in SYSTEM_KEYS
                 if key in system and key not in MAY_BE_EMPTY and str(system[key]).strip() == ""]
    if system.get("division") != division:
        problems.append(f"{path}: division {system.get('division')!r}, the folder says "
                        f"{division}")
    if system.get("submitter") != submitter:
        problems.append(f"{path}: submitter {system.get('submitter')!r}, the folder says "
                        f"{submitter}")
    if system.get("system_name", "") == "":
        problems.append(f"{path}: system_name is empty")
    if system.get("status") not in STATUSES:
        problems.append(f"{path}: status {system.get('status')!r}, one of {STATUSES}")
    for key in ("number_of_nodes", "accelerators_per_node"):
        if not str(system.get(key, "")).isdigit():
            problems.append(f"{path}: {key} {system.get(key)!r} is no whole number")
    if system.get("system_type") not in CATEGORIES:
        problems.append(f"{path}: system_type {system.get('system_type')!r}, one of "
                        f"{sorted(CATEGORIES)}")
    return system, problems


def _check_model(folder: Path, division: str, category: str | None) -> list[str]:
    problems = []
    rules = RULES.get(folder.name)
    scenarios = {path.name for path in folder.iterdir() if path.is_dir()}
    if division == "closed":
        why_not = closed_category_problem(folder.name, category)
        if why_not:
            return [f"{folder}: {why_not}"]
        required = CLOSED_SCENARIOS[folder.name][category]
        for missing in sorted(set(required) - scenarios):
            problems.append(f"{folder}: scenario {missing} missing ({category} needs "
                            f"{', '.join(sorted(required))})")
    for scenario in sorted(scenarios):
        problems += _check_scenario(folder / scenario, folder.name, division, rules)
    return problems


def _check_scenario(folder: Path, model: str, division: str, rules) -> list[str]:
    problems = []
    for name in ("measurements.json", "user.conf", "README.md"):
        path = folder / name
        if not path.is_file() or not path.read_text(errors="replace").strip():
            problems.append(f"{path}: missing or empty")
    measurements = read_json(folder / "measurements.json")
    if measurements is not None:
        problems += [f"{folder / 'measurements.json'}: {key} missing or empty"
                     for key in MEASUREMENT_KEYS if not measurements.get(key)]
    readme = folder / "README.md"
    if readme.is_file() and SHORT_RUN_MARK in readme.read_text(errors="replace"):
        problems.append(f"{readme}: made with --allow-short-runs (rule overrides): not a "
                        "valid submission")
    run = folder / "performance" / "run_1"
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        if not (run / name).is_file():
            problems.append(f"{run / name}: missing")
    if (run / "mlperf_log_detail.txt").is_file():
        problems += _check_performance(run, folder.name, division, rules)
    problems += _check_accuracy(folder / "accuracy", division, rules)
    if division == "closed" and rules is not None:
        tests = ["TEST01"] + (["TEST04"] if rules.test04 else [])
        for test in tests:
            problems += _check_compliance(folder / test, test, folder.name, division, rules)
    return problems


def _check_performance(run: Path, scenario: str, division: str, rules) -> list[str]:
    detail = read_loadgen_results(run)
    where = run / "mlperf_log_detail.txt"
    problems = []
    if detail.get("effective_scenario") != scenario:
        problems.append(f"{where}: a {detail.get('effective_scenario')} run in the {scenario} "
                        "folder")
    if detail.get("result_validity") != "VALID":
        problems.append(f"{where}: result {detail.get('result_validity')}")
    for key, seed in SEEDS.items():
        if detail.get(key) != seed:
            problems.append(f"{where}: {key} {detail.get(key)}, the rules' seed is {seed}")
    minimum = rules.min_performance_sample_count if rules else None
    if minimum and (detail.get("effective_performance_sample_count") or 0) < minimum:
        problems.append(f"{where}: performance sample count "
                        f"{detail.get('effective_performance_sample_count')} < {minimum}")
    if (detail.get("effective_min_duration_ms") or 0) < MIN_DURATION_MS:
        problems.append(f"{where}: min_duration {detail.get('effective_min_duration_ms')} ms "
                        f"< {MIN_DURATION_MS} (the setting, in every division)")
    if scenario == "Offline" and division == "closed" and (
            detail.get("effective_samples_per_query") or 0) < OFFLINE_MIN_SAMPLES_PER_QUERY:
        problems.append(f"{where}: Offline samples per query "
                        f"{detail.get('effective_samples_per_query')} < "
                        f"{OFFLINE_MIN_SAMPLES_PER_QUERY}")
    if scenario in ("SingleStream", "MultiStream", "Server"):
        if detail.get("early_stopping_met") is not True:
            problems.append(f"{where}: early stopping not met")
    if scenario == "Server" and rules and rules.server_latency_ms:
        bound = detail.get("effective_target_latency_ns") or 0
        if bound > rules.server_latency_ms * 1e6:
            problems.append(f"{where}: Server target latency {bound / 1e6:g} ms > "
                            f"{rules.server_latency_ms:g} ms")
    return problems


def _check_accuracy(folder: Path, division: str, rules) -> list[str]:
    problems = []
    for name in ("mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name}: missing")
    log = folder / "mlperf_log_accuracy.json"
    if log.is_file() and log.stat().st_size > MAX_ACCURACY_LOG_BYTES:
        problems.append(f"{log}: {log.stat().st_size:,} bytes, over the "
                        f"{MAX_ACCURACY_LOG_BYTES:,} a truncated log may have")
    text = (folder / "accuracy.txt").read_text() if (folder / "accuracy.txt").is_file() else ""
    if text and not re.search(r"^hash=[0-9a-f]{64}$", text, re.MULTILINE):
        problems.append(f"{folder / 'accuracy.txt'}: no hash=<sha256> line of the full log")
    if not text or rules is None:
        return problems
    top1 = re.search(r"accuracy=([\d.]+)%, good=(\d+), total=(\d+)", text)
    mean_ap = re.search(r"mAP=([\d.]+)%", text)
    score = float(top1.group(1)) if top1 else float(mean_ap.group(1)) if mean_ap else None
    if score is None:
        return problems + [f"{folder / 'accuracy.txt'}: no accuracy=...% or mAP=...% line"]
    detail = read_loadgen_results(folder)
    count = detail.get("effective_accuracy_sample_count") or (int(top1.group(3)) if top1
                                                              else None)
    if top1 and int(top1.group(3)) != rules.dataset_size or count != rules.dataset_size:
        problems.append(f"{folder}: the accuracy run covers {count} samples, the rules "
                        f"{rules.dataset_size:,}")
    if division == "closed" and score < rules.target:
        problems.append(f"{folder / 'accuracy.txt'}: {score}% below the target {rules.target}%")
    return problems


def _check_compliance(folder: Path, test: str, scenario: str, division: str,
                      rules) -> list[str]:
    if not folder.is_dir():
        return [f"{folder}: missing (the closed division runs {test} for this model)"]
    problems = []
    verify = ["verify_performance.txt"] + (["verify_accuracy.txt"] if test == "TEST01" else [])
    for name in verify:
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif "TEST PASS" not in path.read_text(errors="replace"):
            problems.append(f"{path}: no TEST PASS line ({test} failed)")
    run = folder / "performance" / "run_1"
    if (run / "mlperf_log_detail.txt").is_file():
        problems += _check_performance(run, scenario, division, rules)
    else:
        problems.append(f"{run / 'mlperf_log_detail.txt'}: missing")
    return problems
