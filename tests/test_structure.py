"""The shape of the code: one direction of imports, and the tables that must agree, checked row
by row (each test is generated from the tables themselves, so a new row is checked too)."""

from __future__ import annotations

import ast
import configparser
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.backends import BACKEND_ROWS, BACKENDS, MODEL_FORMATS
from actors.backends.pytorch_backend import ARCHITECTURES
from conftest import REPO
from datasets.registry import DATASETS
from sut.embedded import _BUILDERS
from sut.known_files import MODEL_FILES, NO_DOWNLOAD
from sut.profiles import DEFAULTS, PROFILES
from sut.run_local import BACKEND_WORDS, LAUNCHES, MODEL_WORDS, NOT_LAUNCHED

# Each layer may import only the layers below it: scripts -> sut -> actors -> datasets ->
# harness_base.
LAYERS = ("scripts", "sut", "actors", "datasets", "harness_base")


def _imported_roots(path: Path) -> set[str]:
    """The top-level names a file imports, at module level or inside functions."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _layer_files(layer: str) -> list[Path]:
    if layer == "harness_base":
        return [REPO / "harness_base.py"]
    return sorted((REPO / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_a_layer_imports_nothing_above_it(layer):
    above = set(LAYERS[:LAYERS.index(layer)])
    offending = {str(path.relative_to(REPO)): sorted(_imported_roots(path) & above)
                 for path in _layer_files(layer)}
    assert not {path: names for path, names in offending.items() if names}


def test_the_import_check_sees_a_function_level_import(tmp_path):
    """The check above must catch the import hidden in a function, the usual way back up."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from sut.errors import ConfigError\n")
    assert "sut" in _imported_roots(sample)


def test_module_paths_in_the_tables_point_down_or_outside():
    """Tables that name modules as strings (imported on demand) obey the same direction."""
    for row in BACKEND_ROWS:
        assert row.module.startswith("actors.backends."), row
    for name, (module, _, _) in ARCHITECTURES.items():
        assert module.split(".")[0] not in ("sut", "scripts"), name


def test_the_installed_project_imports_from_any_folder(tmp_path):
    """`python -m sut` is run from the user's data folder, not the checkout: every top-level
    module (harness_base.py too, a py_module) must come from the installed project."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", "import harness_base, sut.cli, actors, datasets;"
                           " print(harness_base.__file__)"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == REPO / "harness_base.py"


def test_help_imports_no_opencv_and_no_framework():
    probe = ("import runpy, sys\n"
             "sys.argv = ['sut', '--help']\n"
             "try:\n    runpy.run_module('sut', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('LOADED', ' '.join(sorted(m.split('.')[0] for m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    loaded = set(done.stdout.split("LOADED", 1)[1].split())
    assert "--backend" in done.stdout
    heavy = {"cv2", "torch", "onnxruntime", "tensorflow", "tvm", "ai_edge_litert", "ray",
             "mlperf_loadgen", "onnx"}
    assert not loaded & heavy


# -- the backend table ------------------------------------------------------------------------

def _extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return set(config["options.extras_require"])


@pytest.mark.parametrize("row", BACKEND_ROWS, ids=lambda row: row.name)
def test_each_backend_row_says_what_its_class_does(row):
    cls = getattr(importlib.import_module(row.module), row.class_name)
    assert cls.name == row.name
    assert hasattr(cls, "normalize_on_device") == row.normalizes_on_device
    assert set(row.model_formats) <= set(MODEL_FORMATS)
    assert set(row.devices) <= {"cpu", "gpu"} and row.devices
    assert row.extra == "" or row.extra in _extras()
    for name in (row.name, *row.aliases):
        assert BACKENDS[name] is row


def test_backend_names_and_launcher_words_are_unique():
    names = [name for row in BACKEND_ROWS for name in (row.name, *row.aliases)]
    words = [row.launcher_word for row in BACKEND_ROWS if row.launcher_word]
    assert len(names) == len(set(names)) and len(words) == len(set(words))
    assert set(BACKEND_WORDS) == set(words)


# -- the profiles and the tables keyed by them -----------------------------------------------

@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_names_a_backend_and_a_dataset_that_exist(name):
    profile = PROFILES[name]
    assert (profile.backend or DEFAULTS.backend) in BACKENDS
    assert (profile.dataset or DEFAULTS.dataset) in DATASETS


@pytest.mark.parametrize("words", sorted(LAUNCHES), ids="-".join)
def test_each_launcher_row_runs_the_backend_its_word_names(words):
    """`run_local.sh <backend word> <model word>` -> a profile of that model, run by the
    backend whose row carries that word."""
    model_word, backend_word = words
    launch = LAUNCHES[words]
    profile = PROFILES[launch.profile]
    assert model_word in MODEL_WORDS and backend_word in BACKEND_WORDS
    assert BACKENDS[launch.backend or profile.backend].launcher_word == backend_word
    assert profile.model_name == model_word.removesuffix("-tf")
    assert words not in NOT_LAUNCHED


# Launcher files no URL gives: made by the user (README, "Real MLPerf models").
MADE_BY_THE_USER = {"resnet50_v1.tflite", "resnet50-19c8e357.pt2"}


@pytest.mark.parametrize("name", sorted(set(PROFILES) - {DEFAULTS.name}))
def test_each_profile_has_a_file_to_fetch_or_says_why_not(name):
    fetched = [row.file for row in MODEL_FILES if name in row.profiles]
    assert (len(fetched) == 1) != (name in NO_DOWNLOAD), (name, fetched)


@pytest.mark.parametrize("words", sorted(LAUNCHES), ids="-".join)
def test_each_launcher_file_is_one_fetch_gives_under_that_name(words):
    launch = LAUNCHES[words]
    files = {row.file: row for row in MODEL_FILES}
    assert launch.model_file in files or launch.model_file in MADE_BY_THE_USER
    row = files.get(launch.model_file)
    if row is not None and row.profiles and launch.backend is None:
        assert launch.profile in row.profiles


@pytest.mark.parametrize("row", MODEL_FILES, ids=lambda row: row.file)
def test_each_known_file_row_is_well_formed(row):
    assert row.url.startswith(("https://", "http://")) and " " not in row.url
    assert row.checksum is None or (row.checksum_source and row.checksum.split(":")[0] in
                                    ("md5", "sha256"))
    assert all(profile in PROFILES for profile in row.profiles)
    assert "/" not in row.file


@pytest.mark.parametrize("profile", sorted(_BUILDERS))
def test_each_embedded_builder_is_for_a_profile(profile):
    assert profile in PROFILES


@pytest.mark.parametrize("model_name", sorted(ARCHITECTURES))
def test_each_pytorch_architecture_is_for_a_profile_that_runs_state_dicts(model_name):
    runs_it = [profile for profile in PROFILES.values() if profile.model_name == model_name
               and "torch-state-dict" in BACKENDS[profile.backend or DEFAULTS.backend]
               .model_formats]
    assert runs_it, f"no profile runs a {model_name} state dict"
    module, factory, _ = ARCHITECTURES[model_name]
    try:
        found = importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not installed here")
    assert callable(getattr(found, factory))
