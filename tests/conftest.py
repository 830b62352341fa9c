"""Shared fixtures: one local Ray instance per test session, known-answer sets, a CLI runner.

Integration tests run the real CLI (`python -m sut`) in a subprocess joined to the session's Ray
instance with --address: LoadGen applies its built-in rules only once per process, so every run
gets a process of its own, as a user's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import known_answer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# Short LoadGen runs: tests check behaviour, not speed.
SHORT_USER_CONF = """\
*.Offline.min_duration = 500
*.Offline.min_query_count = 48
*.Offline.target_qps = 100
*.Server.min_duration = 1000
*.Server.min_query_count = 40
*.Server.target_qps = 40
*.SingleStream.min_duration = 300
*.SingleStream.min_query_count = 16
*.MultiStream.min_duration = 300
*.MultiStream.min_query_count = 8
"""


@pytest.fixture(scope="session", autouse=True)
def results_db(tmp_path_factory) -> Path:
    """Every run records itself (sut/run_record.py): into this session's own database, never
    into the user's (runs inherit the variable; a test that checks records names its own)."""
    path = tmp_path_factory.mktemp("records") / "results.db"
    os.environ["RAY_SUT_RESULTS_DB"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_address():
    import logging

    import ray

    # Workers import test-only plug-in backends (fault_backends.py) from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def short_user_conf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conf") / "user.conf"
    path.write_text(SHORT_USER_CONF)
    return path


@dataclass(frozen=True)
class KnownAnswerSet:
    dataset_path: Path
    lines: list  # (file, label) in QSL order

    def model(self, folder: Path, recipe: str, layout: str, **options) -> Path:
        """A known-answer ONNX model for this set, from the SPEC's pre-processing `recipe`."""
        tag = "-".join([recipe, layout] + [f"{k}={v}" for k, v in sorted(options.items())])
        path = folder / f"known_{tag}.onnx".replace(":", "_").replace("/", "_")
        if not path.exists():
            known_answer.build_model(path, *self._tensors_and_labels(recipe, layout), layout,
                                     **options)
        return path

    def torch_model(self, folder: Path, fmt: str, for_tvm: bool = False) -> Path:
        """The same known answers (vgg recipe, NCHW) as a TorchScript or torch.export file."""
        path = folder / ("known_vgg-NCHW.torchscript.pt" if fmt == "torchscript"
                         else "known_vgg-NCHW.pt2")
        if for_tvm:
            path = path.with_suffix(".tvm" + path.suffix)
        if not path.exists():
            known_answer.build_torch_model(path, *self._tensors_and_labels("vgg", "NCHW"), fmt,
                                           for_tvm=for_tvm)
        return path

    def harness_inputs(self, layout: str):
        """(float32 model inputs as the harness computes them, labels), for the imagenet set."""
        from datasets.cache import preprocess_one
        from datasets.imagenet import read_val_map
        from datasets.registry import get_dataset

        spec = get_dataset("imagenet")
        images = read_val_map(self.dataset_path)
        stored = np.stack([preprocess_one(images.path(i), spec, layout)
                           for i in range(len(images))])
        return spec.normalize(stored, layout), images.labels

    def _tensors_and_labels(self, recipe: str, layout: str):
        tensors = [known_answer.spec_preprocess(self.dataset_path / name, recipe, layout)
                   for name, _ in self.lines]
        return tensors, [label for _, label in self.lines]


@pytest.fixture(scope="session")
def known_set(tmp_path_factory) -> KnownAnswerSet:
    folder = tmp_path_factory.mktemp("known_images")
    lines = known_answer.write_images(folder, 16, seed=7)
    return KnownAnswerSet(folder, lines)


@pytest.fixture(scope="session")
def known_inputs(known_set):
    """The known set's NCHW model inputs as the harness computes them, and their labels."""
    return known_set.harness_inputs("NCHW")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    output: Path

    def results(self) -> dict:
        return json.loads((self.output / "results.json").read_text())

    def accuracy_log(self, mode_folder: str = "") -> list[dict]:
        return json.loads((self.output / mode_folder / "mlperf_log_accuracy.json").read_text())


@pytest.fixture
def run_cli(tmp_path, ray_address, cache_dir):
    """Run `python -m sut` joined to the session's Ray; returns a CliRun."""

    def run(*args: str, timeout: float = 300, join_ray: bool = True) -> CliRun:
        output = tmp_path / "output"
        command = [sys.executable, "-m", "sut", "--output", str(output),
                   "--cache_dir", str(cache_dir)]
        if join_ray:
            command += ["--address", ray_address]
        command += list(args)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=tmp_path, env=env)
        return CliRun(done.returncode, done.stdout, done.stderr, output)

    return run


def assert_each_sample_once(entries: list[dict], count: int) -> None:
    indices = sorted(entry["qsl_idx"] for entry in entries)
    assert indices == list(range(count)), "every qsl index exactly once"
    assert len({entry["seq_id"] for entry in entries}) == len(entries)


@pytest.fixture
def run_known(run_cli, known_set, model_dir, short_user_conf):
    """Run the CLI on the known-answer images with short LoadGen settings."""

    def run(scenario: str, *extra: str, model=None, profile: str = "resnet50-onnxruntime",
            dataset=None, with_model: bool = True):
        model = model or known_set.model(model_dir, "vgg", "NCHW")
        model_flags = ["--model", str(model)] if with_model else []
        return run_cli("--profile", profile, *model_flags,
                       "--dataset-path", str(dataset or known_set.dataset_path),
                       "--scenario", scenario, "--user_conf", str(short_user_conf), *extra)

    return run
