"""`python -m sut` with no arguments: builds its assets once, runs Offline + accuracy."""

from __future__ import annotations

import json


def test_default_run_builds_once_then_runs_offline_and_accuracy(run_cli):
    run = run_cli(timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "building the embedded default" in run.stdout
    assert "RANDOM (untrained) weights" in run.stdout  # said plainly, before and after
    results = run.results()
    performance, accuracy = results["tests"]
    assert (performance["scenario"], performance["mode"]) == ("Offline", "performance")
    assert performance["result"] in ("VALID", "INVALID") and performance["value"] > 0
    assert accuracy["mode"] == "accuracy" and accuracy["accuracy"]["total"] == 64
    line = (f"accuracy={accuracy['accuracy']['accuracy_percent']:.3f}%, "
            f"good={accuracy['accuracy']['good']}, total=64")
    assert line in run.stdout
    entries = json.loads((run.output / "accuracy" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(64))

    # A second run reuses the built model and the pre-processed cache.
    again = run_cli("--backend", "null", "--count", "8")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "building the embedded default" not in again.stdout
    assert "pre-processing" not in again.stderr + again.stdout
