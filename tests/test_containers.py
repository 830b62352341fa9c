"""The Docker files, read as text (these machines have no Docker daemon): they install only
through the project's own extras, copy only paths that exist, and run_and_time.sh builds and
runs what it should (checked against a stand-in `docker` that records its arguments)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def _extras() -> dict[str, list[str]]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return {name: [line.strip() for line in value.splitlines() if line.strip()]
            for name, value in parser["options.extras_require"].items()}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_there_is_a_cpu_and_a_gpu_image():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_copied_path_exists(dockerfile):
    copies = [args.split() for op, args in _instructions(dockerfile) if op == "COPY"]
    assert copies
    for words in copies:
        for source in words[:-1]:
            assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, not in the repo"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_pip_installs_only_the_project_with_its_own_extras(dockerfile):
    extras = _extras()
    pinned = {requirement for values in extras.values() for requirement in values}
    args = dict(re.findall(r'^ARG (\w+)="?([^"\n]*)"?$', dockerfile.read_text(), re.MULTILINE))
    installs = []
    for op, command in _instructions(dockerfile):
        if op != "RUN":
            continue
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    assert installs, f"{dockerfile.name} installs nothing"
    project = [words for words in installs if "--no-deps" not in words]
    for words in project:
        targets = [word for word in words if not word.startswith("-")]
        assert len(targets) == 1 and targets[0].startswith(".["), words
        named = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], targets[0])[2:-1]
        assert all(extra in extras for extra in named.split(",") if extra), named
    for words in (words for words in installs if "--no-deps" in words):
        # Only a swap of a requirement the extras name (onnxruntime-gpu for onnxruntime).
        targets = [word for word in words if not word.startswith("-")]
        assert targets and all(target in pinned for target in targets), targets


def test_the_gpu_image_takes_the_gpu_extra():
    text = (REPO / "docker" / "Dockerfile.gpu").read_text()
    assert re.search(r'^ARG EXTRAS="[^"]*\bgpu\b', text, re.MULTILINE)
    assert text.splitlines()[next(i for i, line in enumerate(text.splitlines())
                                  if line.startswith("FROM"))].split()[1].startswith("nvidia/cuda")


def test_cluster_yaml_docker_section_parses_once_uncommented():
    text = (REPO / "cluster.yaml").read_text()
    config = yaml.safe_load(text)
    assert "docker" not in config  # commented out: the default stays the AMI's Python
    lines = text.splitlines()
    start = lines.index("# docker:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    section = yaml.safe_load("\n".join(block))["docker"]
    assert "ray-mlperf-vision-gpu" in section["image"]
    assert "--gpus all" in section["run_options"]
    assert "docker/Dockerfile.gpu" in text


def _fake_docker(folder: Path) -> Path:
    """A `docker` that appends its arguments to docker.log and prints a line as a run would."""
    folder.mkdir()
    script = folder / "docker"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$(dirname "$0")/docker.log"\n'
                      'echo "fake docker $1"\n')
    script.chmod(0o755)
    return folder / "docker.log"


def test_run_and_time_builds_the_image_then_runs_the_launcher_inside(tmp_path):
    log = _fake_docker(tmp_path / "bin")
    models, data = tmp_path / "models", tmp_path / "data"
    models.mkdir(), data.mkdir()
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
               MODEL_DIR=str(models), DATA_DIR=str(data), OUTPUT_DIR=str(tmp_path / "out"),
               GPUS="2")
    done = subprocess.run([str(REPO / "scripts" / "run_and_time.sh"), "onnxruntime",
                           "resnet50", "gpu", "--scenario", "Server", "--qps", "100"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    build, run = log.read_text().splitlines()
    assert build == "build -t ray-mlperf-vision-gpu -f docker/Dockerfile.gpu ."
    assert run.startswith("run --rm --gpus all")
    for mount in (f"{models}:/models:ro", f"{data}:/data:ro", f"{tmp_path / 'out'}:/output"):
        assert f"-v {mount}" in run
    assert "-e GPUS=2" in run
    assert run.endswith("ray-mlperf-vision-gpu scripts/run_local.sh onnxruntime resnet50 gpu "
                        "--scenario Server --qps 100")
    assert "run_and_time:" in done.stdout and (tmp_path / "out" / "output.txt").is_file()


def test_run_and_time_refuses_a_missing_model_dir_before_docker(tmp_path):
    log = _fake_docker(tmp_path / "bin")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
               DATA_DIR=str(tmp_path))
    env.pop("MODEL_DIR", None)
    done = subprocess.run([str(REPO / "scripts" / "run_and_time.sh"), "onnxruntime"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "$MODEL_DIR" in done.stderr
    assert not log.exists()
