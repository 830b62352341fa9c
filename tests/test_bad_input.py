"""Bad input fails before LoadGen starts, with a message naming the file or flag and the fix.

These call the CLI in-process (sut.cli.main) on the session's Ray instance: a run that fails
before LoadGen never builds LoadGen settings, so it can share the test process.
"""

from __future__ import annotations

import sys
import types

import numpy as np

import pytest

from harness_base import EXIT_BAD_INPUT, ConfigError
from sut.cli import main


@pytest.fixture
def cli(tmp_path, ray_address, cache_dir, capsys):
    """Run main() in-process; return (exit code, stderr). Asserts LoadGen never started."""

    def call(*args: str):
        output = tmp_path / "out"
        code = main(["--output", str(output), "--cache_dir", str(cache_dir), *args])
        assert not (output / "mlperf_log_detail.txt").exists(), "LoadGen must not have started"
        return code, capsys.readouterr().err

    return call


@pytest.fixture
def good_args(known_set, model_dir):
    model = known_set.model(model_dir, "vgg", "NCHW")
    return ["--profile", "resnet50-onnxruntime", "--model", str(model),
            "--dataset-path", str(known_set.dataset_path), "--scenario", "Offline"]


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_missing_model_file(cli, good_args, tmp_path):
    code, err = cli(*replace_flag(good_args, "--model", str(tmp_path / "nope.onnx")))
    assert code == EXIT_BAD_INPUT
    assert "nope.onnx" in err and "no such file" in err


def test_file_that_is_not_an_onnx_model(cli, good_args, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"this is not a protobuf")
    code, err = cli(*replace_flag(good_args, "--model", str(bogus)))
    assert code == EXIT_BAD_INPUT
    assert str(bogus) in err and "cannot load" in err


def test_input_name_not_in_the_model(cli, good_args):
    code, err = cli(*good_args, "--inputs", "image:0")
    assert code == EXIT_BAD_INPUT
    assert "has no input 'image:0'" in err and "input_tensor:0" in err and "--inputs" in err


def test_output_name_not_in_the_model(cli, good_args):
    code, err = cli(*good_args, "--outputs", "softmax_tensor:0")
    assert code == EXIT_BAD_INPUT
    assert "softmax_tensor:0" in err and "ArgMax:0" in err and "--outputs" in err


def test_model_layout_does_not_match_the_profile(cli, good_args, known_set, model_dir):
    nhwc_model = known_set.model(model_dir, "vgg", "NHWC")
    code, err = cli(*replace_flag(good_args, "--model", str(nhwc_model)))
    assert code == EXIT_BAD_INPUT
    assert "[N, 224, 224, 3]" in err.replace("'N'", "N") and "--data-format NHWC" in err


def test_missing_dataset_folder(cli, good_args, tmp_path):
    code, err = cli(*replace_flag(good_args, "--dataset-path", str(tmp_path / "no_such_dir")))
    assert code == EXIT_BAD_INPUT
    assert "no_such_dir" in err and "--dataset-path" in err


def test_missing_val_map(cli, good_args, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = cli(*replace_flag(good_args, "--dataset-path", str(tmp_path / "empty")))
    assert code == EXIT_BAD_INPUT
    assert "val_map.txt" in err and "--dataset-list" in err


def test_val_map_names_a_missing_image(cli, good_args, known_set, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text((known_set.dataset_path / "val_map.txt").read_text()
                       + "not_there.JPEG 3\n")
    code, err = cli(*good_args, "--dataset-list", str(listing))
    assert code == EXIT_BAD_INPUT
    assert "not_there.JPEG" in err and "do not exist" in err


def test_a_byte_order_mark_in_val_map_is_no_part_of_the_first_name(known_set, tmp_path):
    import shutil

    from datasets.imagenet import read_val_map

    dataset = tmp_path / "bom"
    shutil.copytree(known_set.dataset_path, dataset)
    listing = dataset / "val_map.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes())
    images = read_val_map(dataset)
    assert images.files[0] == known_set.lines[0][0]


def test_unreadable_image(cli, good_args, known_set, tmp_path):
    import shutil

    dataset = tmp_path / "broken"
    shutil.copytree(known_set.dataset_path, dataset)
    (dataset / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with open(dataset / "val_map.txt", "a") as handle:
        handle.write("corrupt.jpg 1\n")
    code, err = cli(*replace_flag(good_args, "--dataset-path", str(dataset)))
    assert code == EXIT_BAD_INPUT
    assert "corrupt.jpg" in err and "cannot read image" in err


@pytest.mark.parametrize("line, named", [("img_000.jpg not-a-label", "expected '<file> <label>'"),
                                         ("img_000.jpg -3", "label 0 or more"),
                                         ("img_000.jpg 99999999999999999999",
                                          "label 99999999999999999999 is not an ImageNet class"),
                                         ("img_000.jpg 5000", "label 5000 is not an ImageNet")])
def test_malformed_val_map_line(cli, good_args, tmp_path, line, named):
    listing = tmp_path / "list.txt"
    listing.write_text(line + "\n")
    code, err = cli(*good_args, "--dataset-list", str(listing))
    assert code == EXIT_BAD_INPUT
    assert "list.txt:1" in err and named in err


@pytest.mark.parametrize("flag, value, expected", [
    ("--profile", "resnet51-onnxruntime", "unknown --profile 'resnet51-onnxruntime'"),
    ("--backend", "caffe", "unknown --backend 'caffe'"),
    ("--scenario", "Batch", "unknown --scenario 'Batch'"),
    ("--dataset", "imagenet-21k", "unknown --dataset 'imagenet-21k'"),
    ("--data-format", "CHWN", "--data-format 'CHWN'"),
])
def test_unknown_names_list_the_choices(cli, good_args, flag, value, expected):
    args = replace_flag(good_args, flag, value) if flag in good_args else [*good_args, flag, value]
    code, err = cli(*args)
    assert code == EXIT_BAD_INPUT
    assert expected in err and "choose one of" in err


def test_a_model_for_another_framework_names_the_backend_that_reads_it(cli, good_args):
    code, err = cli(*good_args, "--backend", "tensorflow")  # good_args hold an ONNX model
    assert code == EXIT_BAD_INPUT
    assert "is an ONNX file" in err and "--backend onnxruntime" in err


def test_more_gpus_than_ray_sees(cli, good_args):
    code, err = cli(*good_args, "--gpus", "64", "--device", "cpu")
    assert code == EXIT_BAD_INPUT
    assert "--gpus 64" in err and "Ray sees 4 GPU(s)" in err


def test_gpu_device_without_gpus(cli, good_args):
    code, err = cli(*good_args, "--device", "gpu")
    assert code == EXIT_BAD_INPUT
    assert "--device gpu needs --gpus" in err


def test_gpu_device_without_cuda_fails_in_the_worker_before_loadgen(cli, good_args):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    code, err = cli(*good_args, "--gpus", "1")
    assert code == EXIT_BAD_INPUT
    assert "--device gpu" in err and "CUDA" in err


def test_missing_user_conf(cli, good_args, tmp_path):
    code, err = cli(*good_args, "--user_conf", str(tmp_path / "user.conf"))
    assert code == EXIT_BAD_INPUT
    assert "--user_conf" in err and "user.conf" in err


def test_gpus_and_workers_together(cli, good_args):
    code, err = cli(*good_args, "--gpus", "1", "--workers", "2")
    assert code == EXIT_BAD_INPUT
    assert "exclusive" in err


@pytest.mark.parametrize("extra", [("--workers", "2"), ("--gpus", "2", "--device", "cpu")])
def test_in_process_transport_with_more_than_one_worker(cli, good_args, extra):
    code, err = cli(*good_args, "--transport", "in-process", *extra)
    assert code == EXIT_BAD_INPUT
    assert "--transport in-process runs one worker, in this process" in err


def test_only_one_of_model_and_dataset_path(cli, known_set):
    code, err = cli("--dataset-path", str(known_set.dataset_path))
    assert code == EXIT_BAD_INPUT
    assert "--model and --dataset-path" in err


def test_hugging_face_datasets_in_the_way_is_named(cli, good_args, monkeypatch):
    impostor = types.ModuleType("datasets")
    impostor.__file__ = "/site-packages/datasets/__init__.py"
    monkeypatch.setitem(sys.modules, "datasets", impostor)
    code, err = cli(*good_args)
    assert code == EXIT_BAD_INPUT
    assert "Hugging Face" in err and "/site-packages/datasets" in err


def test_a_channel_that_cannot_open_when_channels_were_asked_for(cli, good_args, monkeypatch):
    import sut.channels

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(sut.channels, "connect", refused)
    code, err = cli(*good_args, "--transport", "channel")
    assert code == EXIT_BAD_INPUT
    assert "--transport channel: cannot open a channel to worker-0" in err
    assert "Connection refused" in err and "--transport calls" in err


def test_unreachable_ray_address(tmp_path, cache_dir, good_args, capsys):
    """Checked before Ray is joined; run in a process of its own (this one is joined)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "sut", *good_args, "--address", "127.0.0.1:9",
                           "--output", str(tmp_path / "out"), "--cache_dir", str(cache_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_BAD_INPUT
    assert "--address 127.0.0.1:9" in done.stderr and "nothing answers" in done.stderr


@pytest.mark.parametrize("extra, expected", [
    (["--workers", "3"], "3 worker(s) x 1 thread(s) do not fit"),
    (["--threads", "64"], "--threads 64: no node has that many CPUs"),
])
def test_workers_that_ray_cannot_place(cli, good_args, extra, expected):
    code, err = cli(*good_args, *extra)
    assert code == EXIT_BAD_INPUT
    assert expected in err


@pytest.mark.parametrize("flag, value", [("--max-latency", "-0.01"), ("--qps", "0"),
                                         ("--samples-per-query", "-1"), ("--max-latency", "nan"),
                                         ("--qps", "inf"), ("--server-batch-timeout-ms", "nan"),
                                         ("--qps", "1e+09"),
                                         ("--time", "99999999999999999999"),
                                         ("--samples-per-query", "99999999999999999999")])
def test_non_positive_loadgen_numbers(cli, good_args, flag, value):
    code, err = cli(*good_args, flag, value)
    assert code == EXIT_BAD_INPUT
    assert f"{flag} {value}" in err


def test_model_emitting_scores_where_the_profile_expects_class_ids(cli, good_args, known_set,
                                                                   model_dir):
    """resnet50-onnxruntime reads ArgMax:0 as class ids; a model whose output is scores must be
    refused at startup, not scored as garbage labels."""
    scores_model = known_set.model(model_dir, "vgg", "NCHW", kind="scores")
    code, err = cli(*replace_flag(good_args, "--model", str(scores_model)))
    assert code == EXIT_BAD_INPUT
    assert "[2, 1001]" in err and "do not fit dataset 'imagenet'" in err


def test_reference_preprocessed_dir_in_the_other_layout(cli, good_args, known_set, tmp_path):
    folder = tmp_path / "pre"
    folder.mkdir()
    for name, _ in known_set.lines:
        np.save(folder / name, np.zeros((224, 224, 3), np.float32))  # NHWC files
    code, err = cli(*good_args, "--preprocessed_dir", str(folder))
    assert code == EXIT_BAD_INPUT
    assert "[224, 224, 3]" in err and "[3, 224, 224]" in err and "--data-format" in err


@pytest.mark.parametrize("flag", ["--output", "--cache_dir"])
def test_a_folder_that_cannot_be_made(cli, good_args, tmp_path, flag):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code, err = cli(*good_args, flag, str(a_file / "sub"))
    assert code == EXIT_BAD_INPUT
    assert f"{flag} {a_file / 'sub'}: cannot create that folder" in err


def test_config_and_list_files_that_are_not_text(cli, good_args, tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)))
    for flag in ("--user_conf", "--dataset-list"):
        code, err = cli(*good_args, flag, str(binary))
        assert code == EXIT_BAD_INPUT
        assert str(binary) in err and "UTF-8" in err


def test_dataset_list_that_is_a_folder(cli, good_args, tmp_path):
    code, err = cli(*good_args, "--dataset-list", str(tmp_path))
    assert code == EXIT_BAD_INPUT
    assert "is a folder" in err and "--dataset-list" in err


def test_model_folder_for_a_backend_that_reads_files(cli, good_args, tmp_path):
    code, err = cli(*replace_flag(good_args, "--model", str(tmp_path)))
    assert code == EXIT_BAD_INPUT
    assert f"--model {tmp_path} is a folder" in err


def test_accuracy_and_find_peak_performance_together(cli, good_args):
    code, err = cli(*replace_flag(good_args, "--scenario", "Server"), "--accuracy",
                    "--find-peak-performance")
    assert code == EXIT_BAD_INPUT
    assert "--accuracy and --find-peak-performance" in err


def test_model_that_cannot_run_the_batch_names_the_model(cli, good_args, tmp_path):
    """A model with a second input the run does not feed: refused at startup (exit 2) with the
    model named, not a worker crash (exit 3)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, [None, 3, 224, 224])
    other = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, [None])
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input_tensor:0"], ["flat"]),
         helper.make_node("Concat", ["flat", "b"], ["both"], axis=1),
         helper.make_node("ArgMax", ["both"], ["ArgMax:0"], axis=1, keepdims=0)],
        "two_inputs", [image, other], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "two_inputs.onnx"
    onnx.save(model, path)
    code, err = cli(*replace_flag(good_args, "--model", str(path)))
    assert code == EXIT_BAD_INPUT, err
    assert f"model {path}: a test inference" in err


@pytest.mark.parametrize("extra", [["--precision", "fp16"], ["--compile"], ["--channels-last"]])
def test_pytorch_only_flags_with_another_backend(cli, good_args, extra):
    code, err = cli(*good_args, *extra)
    assert code == EXIT_BAD_INPUT
    assert extra[0] in err and "only --backend pytorch has it" in err


def test_more_performance_samples_than_listed(cli, good_args, known_set):
    code, err = cli(*good_args, "--performance-sample-count", "1000")
    assert code == EXIT_BAD_INPUT
    assert f"--performance-sample-count 1000: the run lists only {len(known_set.lines)}" in err


@pytest.mark.parametrize("text", ["this is not an audit config\n", "*.*.mode=2\n"])
def test_audit_conf_without_a_setting(cli, good_args, tmp_path, text):
    """LoadGen skips lines it cannot parse (it needs spaces around '='), so a wrong file
    would audit nothing, silently."""
    garbage = tmp_path / "audit.config"
    garbage.write_text(text)
    code, err = cli(*good_args, "--audit_conf", str(garbage))
    assert code == EXIT_BAD_INPUT
    assert f"--audit_conf {garbage} has no 'model.scenario.key = value' line" in err


def test_a_compliance_audit_config_is_accepted(good_args, tmp_path):
    from sut.cli import build_parser
    from sut.config import resolve_config

    audit = tmp_path / "audit.config"
    audit.write_text("# TEST01\n*.*.mode = 2\nresnet50.*.accuracy_log_sampling_target = 128\n")
    args = build_parser().parse_args([*good_args, "--audit_conf", str(audit)])
    args.scenario = args.scenario or "SingleStream"
    assert resolve_config(args).audit_conf == str(audit)


def test_a_huge_whole_number_is_not_a_crash():
    from sut.config import _check_positive

    _check_positive("--count", 10 ** 400)  # float() of it would overflow
    with pytest.raises(ConfigError, match="--count -5"):
        _check_positive("--count", -5)


def test_a_second_run_into_a_busy_output_folder_is_refused(cli, good_args, tmp_path):
    """Two runs sharing --output would interleave their logs: the second is refused, naming
    the folder and the run that holds it; once that run ends the folder is free again."""
    import os

    from sut.output_lock import output_lock

    with output_lock(tmp_path / "out"):
        code, err = cli(*good_args)
        assert code == EXIT_BAD_INPUT
        assert f"--output {tmp_path / 'out'} is in use by another run (pid {os.getpid()}" in err
    with output_lock(tmp_path / "out"):  # released: taken again at once
        pass


def test_a_rate_loadgen_cannot_hold_in_memory_is_refused(cli, good_args):
    """1,000,000 QPS for LoadGen's 600 s: 600 million queries built before the first is
    issued, which fills the memory instead of running. Refused before Ray starts."""
    code, err = cli(*good_args, "--qps", "1000000")  # Offline: the one query's samples
    assert code == EXIT_BAD_INPUT
    assert "--qps (Offline expected QPS) 1e+06 for 600 s" in err and "a shorter --time" in err


def test_a_server_schedule_loadgen_cannot_hold_is_refused_and_a_short_one_is_not():
    from types import SimpleNamespace

    from sut.config import RunConfig
    from harness_base import ConfigError
    from sut.loadgen_bridge import check_schedulable

    config = RunConfig(model="", dataset_path="", backend="null", dataset="imagenet",
                       data_format="NCHW", model_name="resnet50", scenario="Server")
    settings = SimpleNamespace(min_duration_ms=600_000, min_query_count=100,
                               server_target_qps=1e6, offline_expected_qps=1.0)
    with pytest.raises(ConfigError, match=r"--qps \(Server target QPS\) 1e\+06 for 600 s"):
        check_schedulable(settings, config)
    settings.min_duration_ms = 10_000  # --time 10: 10 million queries, fine
    check_schedulable(settings, config)
