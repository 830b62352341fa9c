"""`python -m sut submission`: the MLPerf Inference v6 submission tree from finished runs, and
`--check` of a tree against the submission checker's rules (sut/submission_check.py).

    python -m sut submission --submitter ORG --system NAME --division closed \\
        --category edge --output DIR --from RUNS [RUNS ...]
    python -m sut submission --check DIR

Each RUNS folder is one model and scenario as the README's sequence leaves it: `accuracy/`
(an accuracy run), `performance/` (a performance run) and, where the rules ask for them, the
folders `--compliance` wrote (`TEST01/`, `TEST04/`, at any depth below RUNS). The tree:

    <division>/<ORG>/systems/<NAME>.json       filled from this machine; the rest listed
    <division>/<ORG>/src/                      how the results were made (this project)
    <division>/<ORG>/results/<NAME>/<model>/<Scenario>/
        performance/run_1/mlperf_log_{summary,detail}.txt
        accuracy/{mlperf_log_detail.txt, accuracy.txt, mlperf_log_accuracy.json}
        TEST01/, TEST04/, measurements.json, user.conf, README.md
    full_logs/...                              the untruncated accuracy logs

An accuracy log is truncated as MLCommons's tool does (its first and last 4,096 characters
joined by "..."), and the SHA-256 of the full log is appended to accuracy.txt as hash=....
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness_base import EXIT_FAILED, EXIT_OK, ConfigError, RunFailed, exit_code_of
from sut.compliance import performance_folder
from sut.mlperf_rules import RULES, closed_category_problem
from sut.report import read_json, read_loadgen_results

DIVISIONS = ("closed", "open")
CATEGORIES = ("edge", "datacenter", "datacenter,edge")
STATUSES = ("available", "preview", "rdi")
TRUNCATE_CHARS = 4096
MAX_ACCURACY_LOG_BYTES = 10240  # the checker's limit for mlperf_log_accuracy.json
SHORT_RUN_MARK = "RULE OVERRIDES"  # in the README of a result made with --allow-short-runs
# The system description's keys, in the checker's order; those it lets be empty last.
SYSTEM_KEYS = (
    "division", "submitter", "status", "system_name", "number_of_nodes",
    "host_processor_model_name", "host_processors_per_node", "host_processor_core_count",
    "host_memory_capacity", "host_storage_capacity", "host_storage_type",
    "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack",
    "host_memory_configuration", "host_networking", "host_networking_topology",
    "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "cooling",
    "host_network_card_count",
    "host_processor_frequency", "host_processor_caches", "host_processor_interconnect",
    "accelerator_frequency", "accelerator_on-chip_memories", "hw_notes", "sw_notes",
    "system_type_detail")
MAY_BE_EMPTY = {"host_processor_frequency", "host_processor_caches",
                "host_processor_interconnect", "accelerator_frequency",
                "accelerator_on-chip_memories", "hw_notes", "sw_notes", "system_type_detail",
                "accelerator_interconnect_topology"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sut submission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", metavar="DIR", help="check a tree; list every problem")
    parser.add_argument("--submitter")
    parser.add_argument("--system")
    parser.add_argument("--division", choices=DIVISIONS, default="closed")
    parser.add_argument("--category", choices=CATEGORIES)
    parser.add_argument("--status", choices=STATUSES, default="available")
    parser.add_argument("--output", help="the folder the tree goes into (new or empty)")
    parser.add_argument("--from", dest="sources", nargs="+", metavar="RUNS", default=[],
                        help="finished runs, one folder per model and scenario")
    parser.add_argument("--allow-short-runs", action="store_true",
                        help="take runs shortened below the rules (marked as such in the "
                             "tree; for trying the tool, never for a submission)")
    parser.add_argument("--scenarios", help="make the runs instead of --from: these "
                                            "scenarios (comma-separated), each run that is "
                                            "missing in --runs-dir made with the flags after "
                                            "--, e.g. -- --profile resnet50-onnxruntime "
                                            "--dataset-path /data/imagenet2012 --gpus 8")
    parser.add_argument("--runs-dir", help="where --scenarios keeps its runs (default "
                                           "<output>-runs); a finished run there is reused")
    from sut.run_record import add_record_flags

    add_record_flags(parser)
    return parser


def main(argv: list[str]) -> int:
    own, run_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    args = build_parser().parse_args(own)
    args.argv, args.run_flags = argv, run_flags
    return exit_code_of(lambda: _run(args), failed="submission failed")


def _run(args: argparse.Namespace) -> int:
    from sut.submission_check import check_tree

    if args.check:
        problems = check_tree(Path(args.check))
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print(f"{args.check}: {len(problems)} problem(s)" if problems else
              f"{args.check}: no problem found")
        return EXIT_FAILED if problems else EXIT_OK
    from sut.run_record import Recorder, command_line

    missing = [flag for flag, value in (("--submitter", args.submitter), ("--system",
               args.system), ("--category", args.category), ("--output", args.output),
               ("--from or --scenarios", args.sources or args.scenarios)) if not value]
    if missing:
        raise ConfigError(f"submission: give {' '.join(missing)} (or --check DIR)")
    if args.sources and args.scenarios:
        raise ConfigError("submission: --from takes finished runs, --scenarios makes them; "
                          "give one")
    if args.scenarios:
        model = _profile_model(args.run_flags)
        why_not = (closed_category_problem(model, args.category)
                   if args.division == "closed" and model else None)
        if why_not:
            raise ConfigError(f"submission: {why_not}")
        args.sources = [str(folder) for folder in run_missing(args)]
    recorder = Recorder(args, "submission", command_line(["submission", *args.argv]))
    recorder.describe({key: value for key, value in vars(args).items() if key != "argv"})
    tree = build_tree(args)
    problems = check_tree(Path(args.output))
    recorder.record["submission"] = {"tree": str(tree.root), "results": tree.results,
                                     "to_fill": tree.to_fill, "problems": problems}
    recorder.finish(EXIT_OK, args.output)
    print(f"{tree.root}: {len(tree.results)} result(s)")
    if tree.to_fill:
        print(f"fill in by hand in {tree.system_file}: {', '.join(tree.to_fill)}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return EXIT_OK


def _profile_model(run_flags: list[str]) -> str | None:
    """The MLPerf model the --profile after -- runs, so a category the closed division does
    not take for it is refused before an hour of runs; None if no profile names one."""
    from sut.cli import build_parser
    from sut.profiles import PROFILES

    name = build_parser().parse_known_args(run_flags)[0].profile
    return PROFILES[name].model_name if name in PROFILES else None


# The runs one result needs, in order: folder name and the flags that make it.
_STEPS = (("accuracy", ["--accuracy"]), ("performance", []),
          ("test01", ["--compliance", "TEST01"]), ("test04", ["--compliance", "TEST04"]))
_OWN_FLAGS = ("--scenario", "--output", "--accuracy", "--compliance", "--compliance-reference")


def run_missing(args: argparse.Namespace) -> list[Path]:
    """Make what each scenario lacks, one `python -m sut` process per run (LoadGen reads its
    rules once per process), with the rules' settings unless the flags say otherwise; a run
    finished before is kept. Returns the scenario folders for build_tree."""
    import subprocess
    import sys

    from sut.config import SCENARIOS
    from sut.run_series import argv_without, split_scenarios

    scenarios = split_scenarios(args.scenarios)
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise ConfigError(f"--scenarios {args.scenarios}: {', '.join(unknown)} is no scenario; "
                          f"choose from {', '.join(SCENARIOS)}")
    clashes = [flag for flag in _OWN_FLAGS if any(word == flag or word.startswith(flag + "=")
                                                  for word in args.run_flags)]
    if clashes:
        raise ConfigError(f"submission --scenarios: {' '.join(clashes)} after -- is set by the "
                          "command itself; drop it")
    runs_dir = Path(args.runs_dir or f"{Path(args.output)}-runs")
    base = [sys.executable, "-m", "sut", *argv_without(args.run_flags)]
    folders = []
    for scenario in scenarios:
        folder = runs_dir / scenario
        for name, extra in _STEPS:
            step = folder / name
            if name.startswith("test"):
                test = extra[1]
                model = ((read_json(folder / "performance" / "results.json") or {}).get("setup")
                         or {}).get("model_name")
                rules = RULES.get(model)
                if rules is None or (test == "TEST01" and rules.test01_sampling_target is None) \
                        or (test == "TEST04" and not rules.test04):
                    continue  # the rules have no such test for this model
                extra = extra + ["--compliance-reference", str(folder)]
                done = (step / test / "verify_performance.txt").is_file()
            else:
                done = _finished(step, name)
            if done:
                print(f"== {scenario} {name}: finished before, kept ({step})", flush=True)
                continue
            print(f"== {scenario} {name} -> {step}", flush=True)
            code = subprocess.run([*base, "--scenario", scenario, "--output", str(step),
                                   *extra]).returncode
            if code != EXIT_OK:
                raise RunFailed(f"the {scenario} {name} run ended with exit {code} (its output "
                                f"is {step}); fix it and run the same command again: finished "
                                "runs are kept")
        folders.append(folder)
    return folders


def _finished(step: Path, name: str) -> bool:
    results = read_json(step / "results.json") or {}
    tests = results.get("tests") or []
    if name == "accuracy":
        return any(test.get("mode") == "accuracy" and test.get("accuracy") for test in tests)
    return read_loadgen_results(step).get("result_validity") == "VALID"


@dataclass
class Tree:
    root: Path
    system_file: Path
    results: list[tuple[str, str]]
    to_fill: list[str]


@dataclass(frozen=True)
class Source:
    folder: Path
    model: str
    scenario: str
    performance: Path
    accuracy: Path
    compliance: dict  # TEST01/TEST04 -> the folder --compliance wrote


def _check_name(flag: str, value: str) -> None:
    if not _NAME.match(value):
        raise ConfigError(f"{flag} {value!r}: letters, digits, '.', '_' and '-' only (it names "
                          "folders of the tree)")


def _read_source(folder: Path, allow_short: bool, division: str, category: str) -> Source:
    if not folder.is_dir():
        raise ConfigError(f"--from {folder}: no such folder")
    performance = performance_folder(folder)
    accuracy = folder / "accuracy"
    if performance is None:
        raise ConfigError(f"--from {folder}: no performance/ run with an mlperf_log_detail.txt")
    if not (accuracy / "mlperf_log_accuracy.json").is_file():
        raise ConfigError(f"--from {folder}: no accuracy/ run (its mlperf_log_accuracy.json): "
                          "run the same profile with --accuracy --output "
                          f"{folder / 'accuracy'}")
    detail = read_loadgen_results(performance)
    if detail.get("result_validity") != "VALID":
        raise ConfigError(f"--from {folder}: the performance run is "
                          f"{detail.get('result_validity', 'unfinished')}; a submission takes "
                          "VALID runs only")
    results = read_json(performance / "results.json") or {}
    model = (results.get("setup") or {}).get("model_name")
    if not model:
        raise ConfigError(f"--from {folder}: {performance / 'results.json'} does not say the "
                          "model (was it made by python -m sut?)")
    why_not = closed_category_problem(model, category) if division == "closed" else None
    if why_not:
        raise ConfigError(f"--from {folder}: {why_not}")
    if detail.get("effective_min_duration_ms", 0) < 600000 and not allow_short:
        raise ConfigError(f"--from {folder}: the run lasted at least "
                          f"{detail.get('effective_min_duration_ms')} ms by its settings, the "
                          "rules ask 600000 (a --time or user.conf override?). Run it with the "
                          "rules' settings (--allow-short-runs only marks a test tree)")
    compliance = {path.name: path for path in folder.rglob("TEST0[14]")
                  if (path / "verify_performance.txt").is_file()}
    return Source(folder, model, detail["effective_scenario"], performance, accuracy,
                  compliance)


def build_tree(args: argparse.Namespace) -> Tree:
    """Everything is read and checked before the first file is written."""
    _check_name("--submitter", args.submitter)
    _check_name("--system", args.system)
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} exists and is not empty: give a new folder")
    sources = [_read_source(Path(folder), args.allow_short_runs, args.division, args.category)
               for folder in args.sources]
    seen = {}
    for source in sources:
        key = (source.model, source.scenario)
        if key in seen:
            raise ConfigError(f"--from {seen[key]} and {source.folder} are both {key[0]} "
                              f"{key[1]}: give one run per model and scenario")
        seen[key] = source.folder
    root = output / args.division / args.submitter
    system, to_fill = system_description(args, sources)
    (root / "systems").mkdir(parents=True)
    system_file = root / "systems" / f"{args.system}.json"
    system_file.write_text(json.dumps(system, indent=2) + "\n")
    _write_src(root / "src")
    for source in sources:
        _write_result(root / "results" / args.system / source.model / source.scenario, source,
                      output / "full_logs" / source.model / source.scenario,
                      args.allow_short_runs)
    return Tree(root, system_file, [(s.model, s.scenario) for s in sources], to_fill)


def _write_src(folder: Path) -> None:
    from sut.run_record import versions

    folder.mkdir(parents=True)
    found = versions()
    (folder / "README.md").write_text(
        "# How these results were made\n\nWith ray-mlperf-vision "
        f"{found.get('ray-mlperf-vision', '?')} (git commit {found.get('git_commit', '?')}), "
        f"LoadGen {found.get('mlcommons-loadgen', '?')}, Ray {found.get('ray', '?')}: "
        "`python -m sut` with the flags in each result's README.md.\n")


def _write_result(folder: Path, source: Source, full_logs: Path, short: bool) -> None:
    run_folder = folder / "performance" / "run_1"
    run_folder.mkdir(parents=True)
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        shutil.copy2(source.performance / name, run_folder)
    accuracy = folder / "accuracy"
    accuracy.mkdir()
    shutil.copy2(source.accuracy / "mlperf_log_detail.txt", accuracy)
    full_logs.mkdir(parents=True)
    log = source.accuracy / "mlperf_log_accuracy.json"
    shutil.copy2(log, full_logs)
    text = log.read_text(encoding="utf-8")
    digest = hashlib.sha256(log.read_bytes()).hexdigest()
    (accuracy / "mlperf_log_accuracy.json").write_text(truncated(text), encoding="utf-8")
    (accuracy / "accuracy.txt").write_text(
        accuracy_line(source) + "\n" + f"hash={digest}\n", encoding="utf-8")
    for test, path in source.compliance.items():
        shutil.copytree(path, folder / test)
    results = read_json(source.performance / "results.json") or {}
    setup = results.get("setup") or {}
    measurements = {"input_data_types": "uint8" if setup.get("dataset", "").startswith("imagenet")
                    else "fp32",
                    "retraining": "no", "starting_weights_filename": Path(
                        setup.get("model") or "unknown").name,
                    "weight_data_types": "fp32", "weight_transformations": "none",
                    "starting_weights_sha256": _sha256(setup.get("model"))}
    (folder / "measurements.json").write_text(json.dumps(measurements, indent=2) + "\n")
    given = Path(setup["user_conf"]) if setup.get("user_conf") else None
    conf_text = given.read_text(encoding="utf-8") if given and given.is_file() else ""
    (folder / "user.conf").write_text(conf_text + _effective_conf(source))
    readme = [f"# {source.model} {source.scenario}", "",
              f"Made with python -m sut from {source.folder}.", ""]
    if short:
        detail = read_loadgen_results(source.performance)
        readme += [f"{SHORT_RUN_MARK}: this result was made with --allow-short-runs "
                   f"(min duration {detail.get('effective_min_duration_ms')} ms against the "
                   "rules' 600000): it is no valid submission.", ""]
    (folder / "README.md").write_text("\n".join(readme))


def _effective_conf(source: Source) -> str:
    """The run's target rate as LoadGen took it (a --qps flag included), after its user.conf."""
    detail = read_loadgen_results(source.performance)
    return (f"# as run (command-line settings included):\n{source.model}.{source.scenario}."
            f"target_qps = {detail.get('effective_target_qps', 1)}\n")


def _sha256(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def truncated(text: str) -> str:
    """MLCommons's truncation: a log over the limit keeps its first and last 4,096 characters."""
    if len(text.encode("utf-8")) <= MAX_ACCURACY_LOG_BYTES:
        return text
    return text[:TRUNCATE_CHARS] + "..." + text[-TRUNCATE_CHARS:]


def accuracy_line(source: Source) -> str:
    """The reference accuracy script's line, from the accuracy run's own scoring."""
    results = read_json(source.accuracy / "results.json") or {}
    accuracy = next((test.get("accuracy") for test in results.get("tests", [])
                     if test.get("mode") == "accuracy"), None)
    if not accuracy:
        raise ConfigError(f"--from {source.folder}: {source.accuracy / 'results.json'} has no "
                          "scored accuracy test")
    if "accuracy_percent" in accuracy:
        return (f"accuracy={accuracy['accuracy_percent']:.3f}%, good={accuracy['good']}, "
                f"total={accuracy['total']}")
    return f"mAP={accuracy['mAP_percent']:.3f}%"


def system_description(args, sources: list[Source]) -> tuple[dict, list[str]]:
    """The system JSON from what this machine tells; the keys it cannot tell, to fill in."""
    from sut.run_record import host, versions

    machine, found = host(), versions()
    gpus = machine.get("gpus") or []
    frameworks = ", ".join(f"{name} {version}" for name, version in found.items()
                           if name in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorflow",
                                       "tensorflow-cpu", "ai-edge-litert", "apache-tvm"))
    storage = shutil.disk_usage(Path(args.output).resolve().anchor or "/").total
    system = {key: "" for key in SYSTEM_KEYS}
    system.update(
        division=args.division, submitter=args.submitter, status=args.status,
        system_name=args.system, number_of_nodes="1",
        host_processor_model_name=machine.get("cpu_model", ""),
        host_processors_per_node=str(machine.get("sockets") or ""),
        host_processor_core_count=str(machine.get("logical_cpus") or ""),
        host_memory_capacity=f"{machine['memory_gib']:g} GB" if machine.get("memory_gib")
        else "", host_storage_capacity=f"{storage / 1e9:.0f} GB",
        accelerators_per_node=str(len(gpus)),
        accelerator_model_name=gpus[0]["name"] if gpus else "N/A",
        accelerator_memory_capacity=gpus[0]["memory"] if gpus else "N/A",
        **({} if gpus else {key: "N/A" for key in ("accelerator_host_interconnect",
                                                    "accelerator_interconnect",
                                                    "accelerator_memory_configuration")}),
        framework=frameworks, operating_system=platform.platform(),
        system_type=args.category,
        other_software_stack=(f"Python {found.get('python')}, Ray {found.get('ray')}, "
                              f"LoadGen {found.get('mlcommons-loadgen')}, NumPy "
                              f"{found.get('numpy')}" + (f", NVIDIA driver {gpus[0]['driver']}"
                                                         if gpus else "")))
    to_fill = [key for key in SYSTEM_KEYS if not system[key] and key not in MAY_BE_EMPTY]
    return system, to_fill
