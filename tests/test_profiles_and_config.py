"""The tables (profiles, datasets, backends) and the precedence that resolves a run."""

from __future__ import annotations

import dataclasses
import re

import pytest

from actors.backends import BACKENDS
from datasets.registry import DATASETS
from harness_base import ConfigError
from sut.cli import build_parser
from sut.config import resolve_config
from sut.profiles import PROFILES, Profile


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_names_a_registered_dataset_and_a_known_backend(name):
    profile = PROFILES[name]
    assert profile.dataset is None or profile.dataset in DATASETS
    assert profile.backend is None or profile.backend in BACKENDS
    assert profile.data_format in (None, "NCHW", "NHWC")


def test_profiles_are_frozen_rows():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["resnet50-onnxruntime"].dataset = "imagenet_mobilenet"  # type: ignore[misc]
    variant = dataclasses.replace(PROFILES["resnet50-onnxruntime"], max_batchsize=8)
    assert isinstance(variant, Profile) and PROFILES["resnet50-onnxruntime"].max_batchsize is None


def parse(tmp_path, *args):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    return resolve_config(build_parser().parse_args(
        ["--model", str(model), "--dataset-path", str(tmp_path), "--scenario", "Offline",
         *args]))


def test_command_line_beats_profile_beats_defaults(tmp_path):
    config = parse(tmp_path, "--profile", "resnet50-tf", "--backend", "onnxruntime")
    assert config.backend == "onnxruntime"  # command line over the profile's tensorflow
    assert config.data_format == "NHWC"  # the profile's, over onnxruntime's NCHW
    assert config.inputs == ("input_tensor:0",) and config.outputs == ("ArgMax:0",)
    assert config.max_batchsize == 32  # from defaults
    assert config.model_name == "resnet50"
    config = parse(tmp_path, "--profile", "resnet50-tf", "--backend", "onnxruntime",
                   "--data-format", "NCHW", "--max-batchsize", "8", "--outputs", "a,b")
    assert (config.data_format, config.max_batchsize, config.outputs) == ("NCHW", 8, ("a", "b"))


def test_backend_layout_is_the_last_word_on_layout(tmp_path):
    assert parse(tmp_path, "--profile", "resnet50-onnxruntime").data_format == "NCHW"


def test_flags_map_to_a_frozen_config(tmp_path):
    config = parse(tmp_path, "--profile", "mobilenet-onnxruntime", "--accuracy", "--time", "60",
                   "--qps", "12.5", "--max-latency", "0.05", "--count", "100", "--gpus", "2",
                   "--device", "cpu")
    assert config.dataset == "imagenet_mobilenet" and config.modes == ("accuracy",)
    assert (config.time_s, config.qps, config.max_latency_s, config.count) == (60, 12.5, 0.05, 100)
    assert (config.gpus, config.device, config.num_workers) == (2, "cpu", 2)
    assert parse(tmp_path, "--gpus", "3").device == "gpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.count = 5  # type: ignore[misc]


def test_find_peak_performance_is_for_server_only(tmp_path):
    with pytest.raises(ConfigError, match="Server"):
        parse(tmp_path, "--find-peak-performance")


@pytest.mark.parametrize("flag", ["--count", "--max-batchsize", "--threads", "--time", "--qps",
                                  "--max-latency", "--samples-per-query"])
def test_non_positive_numbers_are_refused(tmp_path, flag):
    with pytest.raises(ConfigError, match=flag):
        parse(tmp_path, flag, "0")


@pytest.mark.parametrize("user_lines, expected", [
    ("", "64 100.0"),  # the retired model's rules
    ("ssd-resnet34.*.performance_sample_count_override = 32\n", "32 100.0"),  # user.conf wins
    ("*.*.performance_sample_count_override = 32\n", "32 100.0"),  # in any form
    ("*.Server.target_latency = 50\n", "64 50.0"),
])
def test_retired_models_get_their_old_mlperf_conf_rules(tmp_path, user_lines, expected):
    """LoadGen 6 no longer knows ssd-resnet34: its performance sample count (64) and Server
    bound (100 ms) come from the table, and a user.conf still overrides them."""
    import subprocess
    import sys

    from conftest import REPO

    conf = tmp_path / "user.conf"
    conf.write_text(user_lines)
    script = (
        "from sut.config import RunConfig\n"
        "from sut.loadgen_bridge import build_settings\n"
        f"c = RunConfig(model='m', dataset_path='d', backend='null', dataset='coco-1200-onnx',"
        f" data_format='NCHW', model_name='ssd-resnet34', scenario='Server',"
        f" user_conf={str(conf) if user_lines else None!r})\n"
        "s = build_settings(c)\n"
        "print(s.performance_sample_count_override, s.server_target_latency_ns / 1e6)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()


def test_a_second_build_in_one_process_keeps_loadgens_rules(tmp_path):
    """LoadGen reads its built-in rules on a process's first FromConfig only: a second build
    (same model, scenario and user.conf) must still have them, and only its own flags."""
    import subprocess
    import sys

    from conftest import REPO

    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Server.target_qps = 123\n")
    script = (
        "from sut.config import RunConfig\n"
        "from sut.loadgen_bridge import build_settings\n"
        "def build(**flags):\n"
        "    c = RunConfig(model='m', dataset_path='d', backend='null', dataset='imagenet',"
        f" data_format='NCHW', model_name='resnet50', scenario='Server', user_conf={str(conf)!r},"
        " **flags)\n"
        "    s = build_settings(c)\n"
        "    print(s.server_target_qps, s.server_target_latency_ns, "
        "s.performance_sample_count_override, s.min_duration_ms)\n"
        "build(time_s=5)\n"
        "build()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["123.0 15000000 1024 5000", "123.0 15000000 1024 600000"]


# -- scripts/run_local.sh: the reference's launcher -------------------------------------------
def test_run_local_maps_the_reference_words_to_a_profile_a_model_file_and_the_flags():
    from sut.run_local import LAUNCHES, sut_argv

    env = {"MODEL_DIR": "/m", "DATA_DIR": "/d", "EXTRA_OPS": "--time 60 --qps 200"}
    assert sut_argv(["onnxruntime", "resnet50", "gpu", "--scenario", "Server"], env) == [
        "--profile", "resnet50-onnxruntime", "--model", "/m/resnet50_v1.onnx",
        "--dataset-path", "/d", "--output", "output/onnxruntime-gpu/resnet50",
        "--gpus", "1", "--device", "gpu", "--time", "60", "--qps", "200", "--scenario", "Server"]
    # The reference's defaults (tf, resnet50, cpu); a TFLite file runs under the TF profile.
    assert sut_argv([], {"MODEL_DIR": "/m", "DATA_DIR": "/d"})[:4] == [
        "--profile", "resnet50-tf", "--model", "/m/resnet50_v1.pb"]
    argv = sut_argv(["tflite", "mobilenet"], {"MODEL_DIR": "/m", "DATA_DIR": "/d",
                                              "OUTPUT_DIR": "/o", "GPUS": "4"})
    assert argv[argv.index("--backend") + 1] == "tflite" and "/o" in argv
    assert "--gpus" not in argv
    # A launcher word as the value of a flag is a value, not a misplaced word.
    assert sut_argv(["onnxruntime", "--device", "gpu", "--model-name", "resnet50"],
                    {"MODEL_DIR": "/m", "DATA_DIR": "/d"})[-4:] == [
        "--device", "gpu", "--model-name", "resnet50"]
    for launch in LAUNCHES.values():  # every row names a real profile and backend
        assert launch.profile in PROFILES
        assert launch.backend is None or launch.backend in BACKENDS


@pytest.mark.parametrize("words, env, message", [
    (["resnet50"], {"DATA_DIR": "/d"}, "$MODEL_DIR is not set"),
    (["resnet50"], {"MODEL_DIR": "/m"}, "$DATA_DIR is not set"),
    (["tflite", "retinanet"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"},
     "no tflite launch for retinanet; it runs with: onnxruntime"),
    (["pytorch", "retinanet"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"},
     "resnext50_32x4d_fpn.pth is a pickled module"),
    (["tpu"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"}, "'tpu': the reference has it"),
    (["resnet5"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"}, "'resnet5' is no backend, model or"),
    (["onnxruntime", "tf", "resnet50"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"},
     "two backends, 'onnxruntime' and 'tf': give one"),
    (["--accuracy", "onnxruntime"], {"MODEL_DIR": "/m", "DATA_DIR": "/d"},
     "'onnxruntime' after the flags: put backend, model and device first"),
    (["gpu"], {"MODEL_DIR": "/m", "DATA_DIR": "/d", "GPUS": "0"}, "$GPUS '0'"),
    ([], {"MODEL_DIR": "/m", "DATA_DIR": "/d", "EXTRA_OPS": "--output 'a b"},
     "$EXTRA_OPS \"--output 'a b\": No closing quotation"),
])
def test_run_local_refuses_what_it_cannot_launch(words, env, message):
    from sut.run_local import sut_argv

    with pytest.raises(ConfigError, match=re.escape(message)):
        sut_argv(words, env)
