"""What a record says about a run: the command, the configuration, the versions, the machine,
the model file's SHA-256, and each test's outcome; written when the run ends, however it ends.

The database is opened (and checked) when the run starts, so a bad --results-db is refused
before anything runs; the record is written at the end, also for a failed run, an interrupted
one, and one the process is ended in the middle of (through the interrupts module's last words).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness_base import EXIT_BAD_INPUT, EXIT_OK, ConfigError
from sut.records import RunStore, default_path, new_run_id, now_iso
from sut.report import read_json

REPO = Path(__file__).resolve().parent.parent
GROUP_VARIABLE = "RAY_SUT_RUN_GROUP"  # set by a parent (--repetitions) for its children
# Frameworks whose versions a record keeps, where installed (pip distribution names).
FRAMEWORKS = ("onnxruntime", "onnxruntime-gpu", "torch", "tensorflow", "tensorflow-cpu",
              "ai-edge-litert", "apache-tvm")


def add_record_flags(parser) -> None:
    group = parser.add_argument_group("run records")
    group.add_argument("--results-db", help="the results database (default $RAY_SUT_RESULTS_DB, "
                                            f"else {default_path()})")
    group.add_argument("--no-record", action="store_true", help="do not record this run")
    group.add_argument("--tag", action="append", default=[], metavar="WORD|KEY=VALUE",
                       help="tag the record (repeatable), e.g. --tag nightly --tag batch=64")
    group.add_argument("--mlflow-uri", help="also log the record to this MLflow tracking URI "
                                            "(pip install -e .[mlflow])")


def parse_tags(words: list[str]) -> dict[str, str]:
    tags = {}
    for word in words:
        key, _, value = word.partition("=")
        if not key.strip() or any(c in key for c in " \t\n"):
            raise ConfigError(f"--tag {word!r}: give a word or key=value (no spaces in the key)")
        tags[key.strip()] = value.strip()
    return tags


class Recorder:
    """One run's record, begun before the run and finished once."""

    def __init__(self, args, kind: str, command: list[str]) -> None:
        self.enabled = not getattr(args, "no_record", False)
        self.tags = parse_tags(getattr(args, "tag", []) or [])
        self.record = {"id": new_run_id(), "kind": kind, "status": "running",
                       "started": now_iso(), "command": command, "tags": self.tags,
                       "group": os.environ.get(GROUP_VARIABLE) or None}
        self.store: RunStore | None = None
        self._finished = False
        self.mlflow_uri = getattr(args, "mlflow_uri", None)
        if self.mlflow_uri:
            from sut.mlflow_log import check_mlflow

            check_mlflow(self.mlflow_uri)
        if self.enabled:
            self.store = RunStore(default_path(getattr(args, "results_db", None)))
            self.path = self.store.path

    def describe(self, config, sample_count: int | None = None) -> None:
        """What ran: the resolved configuration, versions, host, model file, dataset."""
        setup = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        self.record.update(config=setup, profile=setup.get("profile"),
                           dataset=setup.get("dataset"), sample_count=sample_count,
                           versions=versions(),
                           host=host(), model_sha256=model_sha256(setup.get("model")))

    def finish(self, exit_code: int, output: str | None, results_file: str = "results.json",
               status: str | None = None) -> str | None:
        """Write the record (once), from what the run left in its output folder; returns its
        id, or None when not recording. A store that fails now is said, not raised: the run's
        own exit status stands."""
        if self._finished or not self.enabled:
            return None
        self._finished = True
        folder = Path(output).resolve() if output else None
        results = read_json(folder / results_file) if folder else None
        results = results or {}
        tests = results.get("tests", [])
        if results_file == "qps_scan.json":  # a scan: the accuracy stage, then the bounds
            tests = [{"scenario": "Offline", "mode": "accuracy", "accuracy": results["accuracy"],
                      "output_dir": str(folder / "accuracy")}] if results.get("accuracy") else []
            self.record["scan"] = {key: results.get(key)
                                   for key in ("bounds", "final_result", "faults")}
        self.record.update(
            ended=now_iso(), exit_code=exit_code, output_dir=str(folder) if folder else None,
            status=status or ("completed" if exit_code == EXIT_OK else "bad input"
                              if exit_code == EXIT_BAD_INPUT else "interrupted"
                              if exit_code >= 128 else "failed"),
            tests=[test_summary(test) for test in tests if isinstance(test, dict)],
            workers=(results.get("setup") or {}).get("worker_details"))
        try:
            self.store.add(self.record)
        except ConfigError as error:
            print(f"warning: the run was not recorded: {error}", file=sys.stderr, flush=True)
            return None
        print(f"recorded as run {self.record['id'][:12]} in {self.path}", flush=True)
        if self.mlflow_uri:
            from sut.mlflow_log import log_record

            log_record(self.mlflow_uri, self.record, folder / results_file if folder else None)
        return self.record["id"]


def test_summary(test: dict) -> dict:
    """A test as a record keeps it: the results.json entry, with the percentiles people
    compare lifted out."""
    latency = test.get("latency_ns") or {}
    summary = dict(test)
    if summary.get("output_dir"):  # relative to where the run was started
        summary["output_dir"] = str(Path(summary["output_dir"]).resolve())
    for name, key in (("p50_ns", "50.00_percentile_latency_ns"),
                      ("p90_ns", "90.00_percentile_latency_ns"),
                      ("p99_ns", "99.00_percentile_latency_ns")):
        value = latency.get(key) or latency.get(key.replace("latency", "per_query_latency"))
        if value is not None:
            summary[name] = value
    accuracy = test.get("accuracy") or {}
    if "accuracy_percent" in accuracy:
        summary["accuracy_value"] = accuracy["accuracy_percent"]
    elif "mAP" in accuracy:
        summary["accuracy_value"] = accuracy["mAP"] * 100.0
    return summary


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("ray-mlperf-vision", "mlcommons-loadgen", "ray", "numpy", *FRAMEWORKS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    commit = _git("rev-parse", "HEAD")
    if commit:
        found["git_commit"] = commit
        found["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return found


def _git(*words: str) -> str | None:
    if not (REPO / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(REPO), *words], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def host() -> dict:
    """The machine, as far as it tells without privileges."""
    found = {"hostname": platform.node(), "os": platform.platform(),
             "logical_cpus": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")]
        if models:
            found["cpu_model"] = models[0]
        found["sockets"] = len({line for line in cpuinfo.splitlines()
                                if line.startswith("physical id")}) or None
        meminfo = Path("/proc/meminfo").read_text()
        kib = next(int(line.split()[1]) for line in meminfo.splitlines()
                   if line.startswith("MemTotal"))
        found["memory_gib"] = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    gpus = _nvidia_gpus()
    if gpus:
        found["gpus"] = gpus
    return found


def _nvidia_gpus() -> list[dict]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def model_sha256(model: str | None) -> str | None:
    """Of the file; of a folder (a SavedModel), over its files' names and contents in order."""
    if not model:
        return None
    path = Path(model)
    files = ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
             if path.is_dir() else [])
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def command_line(argv: list[str]) -> list[str]:
    return [Path(sys.executable).name, "-m", "sut", *argv]
