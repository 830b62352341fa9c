"""--mlflow-uri: the run's record logged to MLflow as well (the optional `mlflow` extra).

One MLflow run per record, in the experiment "ray-mlperf-vision": the configuration as
parameters, the tags and status as tags, each test's metric, p50/p90/p99 and accuracy as
metrics named <Scenario>.<mode>.<what>, and results.json as an artifact.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness_base import ConfigError

EXPERIMENT = "ray-mlperf-vision"


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError("--mlflow-uri needs MLflow: pip install -e \".[mlflow]\"") from None
    return mlflow


def check_mlflow(uri: str) -> None:
    """Before the run: MLflow is installed and the URI is one it takes. A file store (a
    folder: file:///...) is what MLflow 3 keeps only on request; naming one is that request."""
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(uri)
    except Exception as error:  # noqa: BLE001 - MLflow raises its own types
        raise ConfigError(f"--mlflow-uri {uri}: MLflow does not take it ({error})") from None


def log_record(uri: str, record: dict, results_path: Path | None) -> None:
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=record["id"][:12]):
            config = record.get("config") or {}
            mlflow.log_params({key: json.dumps(value)[:500] for key, value in config.items()})
            mlflow.set_tags({"ray_sut.id": record["id"], "ray_sut.kind": record["kind"],
                             "ray_sut.status": record["status"],
                             **{f"tag.{key}": value for key, value in
                                record.get("tags", {}).items()}})
            metrics = {}
            for test in record.get("tests", []):
                prefix = f"{test.get('scenario')}.{test.get('mode')}"
                for name, key, scale in (("value", "value", 1.0), ("p50_ms", "p50_ns", 1e-6),
                                         ("p90_ms", "p90_ns", 1e-6), ("p99_ms", "p99_ns", 1e-6),
                                         ("accuracy", "accuracy_value", 1.0)):
                    if test.get(key) is not None:
                        metrics[f"{prefix}.{name}"] = float(test[key]) * scale
            if metrics:
                mlflow.log_metrics(metrics)
            if results_path is not None and results_path.is_file():
                mlflow.log_artifact(str(results_path))
    except Exception as error:  # noqa: BLE001 - the run's record stands without MLflow
        print(f"warning: not logged to MLflow at {uri}: {error}", file=sys.stderr, flush=True)
        return
    print(f"logged to MLflow at {uri} (experiment {EXPERIMENT})", flush=True)
