"""What a run reports: read LoadGen's detail log, write results.json, print a short summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

_PRIMARY_METRIC = {
    "Offline": ("result_samples_per_second", "samples/s"),
    "Server": ("result_completed_samples_per_sec", "samples/s"),
    "SingleStream": ("result_90.00_percentile_latency_ns", "ns (p90 latency)"),
    "MultiStream": ("result_99.00_percentile_per_query_latency_ns", "ns (p99 query latency)"),
}


def read_loadgen_results(output_dir: str | Path) -> dict:
    """The `result_*` and `effective_*` entries of mlperf_log_detail.txt, keyed without prefix
    noise. Empty if LoadGen wrote no detail log."""
    path = Path(output_dir) / "mlperf_log_detail.txt"
    found: dict = {}
    if not path.is_file():
        return found
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG"):])
        except json.JSONDecodeError:
            continue
        key = entry.get("key", "")
        if key.startswith(("result_", "effective_", "early_stopping")) or key == "num_errors":
            found[key] = entry.get("value")
    return found


def summarize_test(scenario: str, mode: str, output_dir: str | Path) -> dict:
    """One test's outcome as a flat dict for results.json."""
    raw = read_loadgen_results(output_dir)
    summary = {"scenario": scenario, "mode": mode, "output_dir": str(output_dir)}
    if mode != "accuracy":
        key, unit = _PRIMARY_METRIC[scenario]
        summary.update(result=raw.get("result_validity", "UNKNOWN"), metric=key.removeprefix(
            "result_"), value=raw.get(key), unit=unit)
        reason = (raw.get("result_invalid_reason") or "").strip()
        if not reason and summary["result"] == "INVALID":
            reason = (raw.get("early_stopping_result") or "").strip()
        if reason:
            summary["invalid_reason"] = reason
        latencies = {k.removeprefix("result_"): v for k, v in raw.items()
                     if k.startswith("result_") and k.endswith("latency_ns")}
        summary["latency_ns"] = latencies
        for extra in ("result_samples_per_second", "result_completed_samples_per_sec",
                      "result_scheduled_samples_per_sec", "effective_target_qps",
                      "effective_samples_per_query"):
            if extra in raw:
                summary[extra.removeprefix("result_")] = raw[extra]
    return summary


class CompletionTimeline:
    """Samples answered per bin of time since the test started: the report's throughput plot.
    One addition per batch; the bins grow as the test runs."""

    BIN_S = 0.5

    def __init__(self) -> None:
        self._started: float | None = None
        self._counts: list[int] = []

    def start(self) -> None:
        self._started = time.monotonic()

    def add(self, count: int) -> None:
        if self._started is None:
            return
        index = int((time.monotonic() - self._started) / self.BIN_S)
        if index >= len(self._counts):
            self._counts.extend([0] * (index + 1 - len(self._counts)))
        self._counts[index] += count

    def as_json(self) -> dict:
        return {"bin_s": self.BIN_S, "completed": list(self._counts)}


ABORTED_MARKER = "ABORTED.txt"


def mark_aborted(outcome: dict, reason: str, output_dir: str | Path) -> None:
    """An aborted test answered its outstanding samples empty so that LoadGen could return,
    and LoadGen counts them as answered: its VALID and its rates mean nothing. Say so wherever
    a person or a tool reads the test: results.json (result ABORTED; LoadGen's own verdict
    kept as loadgen_result), a marker file beside the logs, and the head of
    mlperf_log_summary.txt, whose 'Result is : VALID' no longer stands."""
    outcome["error"] = reason
    if "result" in outcome:
        outcome["loadgen_result"] = outcome["result"]
        outcome["result"] = "ABORTED"
    folder = Path(output_dir)
    note = (f"ABORTED: {reason}\nThis test did not finish. The samples still outstanding were "
            "closed out without answers, and LoadGen's logs here count them as answered: their "
            "validity, rates and latencies are not a result.\n")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ABORTED_MARKER).write_text(note)
        summary = folder / "mlperf_log_summary.txt"
        if summary.is_file():
            text = summary.read_text(errors="replace")
            if not text.startswith("ABORTED"):
                text = text.replace("Result is : VALID", "Result is : INVALID (aborted)")
                summary.write_text(note + "\n" + text)
    except OSError as error:  # the report itself must not fail on a full or read-only disk
        outcome["marker_error"] = str(error)


def format_summary(results: dict) -> str:
    """A few lines a person reads at the end of a run."""
    lines = ["", "=" * 64, "Run summary", "=" * 64]
    for note in results.get("notes", []):
        lines.append(f"NOTE: {note}")
    setup = results.get("setup", {})
    if setup:
        lines.append(f"model {setup.get('model')}  backend {setup.get('backend')}  dataset "
                     f"{setup.get('dataset')} ({setup.get('data_format')})  workers "
                     f"{setup.get('workers')} on {setup.get('device')}")
    for test in results.get("tests", []):
        head = f"{test['scenario']} {test['mode']}:"
        if test["mode"] == "accuracy":
            accuracy = test.get("accuracy", {})
            if "accuracy_percent" in accuracy:
                lines.append(f"{head} accuracy={accuracy['accuracy_percent']:.3f}%, "
                             f"good={accuracy['good']}, total={accuracy['total']}")
            elif "mAP_percent" in accuracy:
                lines.append(f"{head} mAP={accuracy['mAP_percent']:.3f}% over "
                             f"{accuracy['images']} images, {accuracy['detections']} "
                             "detections")
            else:
                lines.append(f"{head} {accuracy.get('error', 'no accuracy computed')}")
            if accuracy.get("verdict") in ("PASS", "FAIL"):
                counts = "" if accuracy.get("counts") else " (does not count: part of the set)"
                lines.append(f"{head} {accuracy['verdict']} against the target "
                             f"{accuracy['target_percent']:g}%{counts}")
        else:
            value = test.get("value")
            shown = (f"{value:,.2f}" if isinstance(value, float) else f"{value}")
            lines.append(f"{head} {test.get('result')}  {test.get('metric')} = {shown} "
                         f"{test.get('unit')}")
            latency = test.get("latency_ns", {}) if test["scenario"] != "Offline" else {}
            picks = [k for k in ("50.00_percentile_latency_ns", "90.00_percentile_latency_ns",
                                 "99.00_percentile_latency_ns") if k in latency]
            if picks:
                lines.append("    latency " + ", ".join(
                    f"p{k.split('_')[0].rstrip('0').rstrip('.')}={latency[k] / 1e6:.2f} ms"
                    for k in picks))
            if test.get("invalid_reason"):
                lines.append(f"    why INVALID: {test['invalid_reason'].strip()}")
                hint = _too_few_queries_hint(test, setup.get("model_name"))
                if hint:
                    lines.append(f"    fix: {hint}")
        if test.get("error"):
            lines.append(f"    FAILED: {test['error']}")
        if test.get("faults"):
            lines.append(f"    faults: {test['faults']}")
    if results.get("results_file"):
        lines.append(f"results: {results['results_file']}")
    lines.append("=" * 64)
    return "\n".join(lines)


def _too_few_queries_hint(test: dict, model: str | None) -> str | None:
    """SingleStream/MultiStream: LoadGen made 2 x min_duration / target_latency queries and the
    run answered them all too soon; the run's own mean latency is a target that fits."""
    from sut.config import STREAM_SCENARIOS

    mean_ns = (test.get("latency_ns") or {}).get("mean_latency_ns")
    if ("Decrease the expected latency" not in test["invalid_reason"] or not mean_ns
            or test["scenario"] not in STREAM_SCENARIOS):
        return None
    return (f"put '{model or '<model>'}.{test['scenario']}.target_latency = "
            f"{max(round(mean_ns / 1e6, 3), 0.001):g}' (this run's mean latency, in ms) in "
            "the --user_conf file, so LoadGen makes queries for the whole run")


def read_json(path: str | Path) -> dict | None:
    """A JSON file the harness wrote (results.json, ...); None if missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_results(results: dict, output_dir: str | Path) -> Path:
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    return path
