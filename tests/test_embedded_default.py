"""`python -m sut` with no arguments: the trained EfficientNet-Lite0 on foolbox's 20 ImageNet
photos, exported once; and the random-weight ResNet-50 behind --profile resnet50-onnxruntime."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import known_answer
from datasets.shipped_photos import foolbox_photo_folder, write_photo_list
from harness_base import ConfigError
from sut.embedded import efficientnet_lite0


def direct_onnxruntime_top1(model_path, photo_folder, lines) -> int:
    """The exported model run outside the harness, on inputs computed here from the SPEC's
    MobileNet recipe (INTER_LINEAR short side 256, centre crop 224, (x/255-0.5)*2)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = np.stack([known_answer.spec_preprocess(photo_folder / name, "mobilenet", "NCHW")
                       for name, _ in lines])
    scores = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return int(sum(int(p) == label for p, (_, label) in zip(scores.argmax(1), lines)))


def test_default_run_scores_the_trained_model_like_onnxruntime_directly(run_cli, cache_dir,
                                                                        tmp_path):
    run = run_cli(timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained ImageNet weights" in run.stdout
    results = run.results()
    accuracy_test, performance_test = results["tests"]
    assert accuracy_test["mode"] == "accuracy" and accuracy_test["scenario"] == "Offline"
    assert performance_test["mode"] == "performance"
    assert performance_test["result"] in ("VALID", "INVALID") and performance_test["value"] > 0

    photos = foolbox_photo_folder("embedded")
    lines = write_photo_list(photos, tmp_path / "val_map.txt")
    assert len(lines) == 20
    model = cache_dir / "ray-sut" / "embedded" / "efficientnet-lite0" / "efficientnet-lite0.onnx"
    expected = direct_onnxruntime_top1(model, photos, lines)
    assert expected == 18  # measured when the issue was written
    assert accuracy_test["accuracy"]["good"] == expected
    assert f"accuracy={100 * expected / 20:.3f}%, good={expected}, total=20" in run.stdout
    entries = json.loads((run.output / "accuracy" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(20))

    # A second run reuses the export and the pre-processed cache.
    stamp = model.stat().st_mtime_ns
    again = run_cli("--accuracy")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "exporting" not in again.stdout and "pre-processing" not in again.stderr
    assert model.stat().st_mtime_ns == stamp
    assert again.results()["tests"][0]["accuracy"]["good"] == expected


def test_random_resnet50_stays_available_by_profile(run_cli):
    run = run_cli("--profile", "resnet50-onnxruntime", "--accuracy", "--count", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RANDOM (untrained) weights" in run.stdout
    assert run.results()["tests"][0]["accuracy"]["total"] == 8


def test_corrupted_export_is_detected_by_its_checksum_and_rebuilt(tmp_path):
    onnx_path = efficientnet_lite0.ensure_exported(tmp_path)
    assert efficientnet_lite0.is_intact(onnx_path)
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    assert not efficientnet_lite0.is_intact(onnx_path)
    rebuilt = efficientnet_lite0.ensure_exported(tmp_path)
    assert efficientnet_lite0.is_intact(rebuilt)


def test_missing_model_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ConfigError, match=r'efficientnet_lite_pytorch.*pip install -e "\.\[embedded\]"'):
        efficientnet_lite0.export(tmp_path)


def test_missing_photo_package_names_the_extra(monkeypatch):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(ConfigError, match=r'foolbox.*\.\[embedded\]'):
        foolbox_photo_folder("embedded")


@pytest.mark.parametrize("in_the_way", ["embedded folder is a file", "user.conf is a folder"])
def test_something_in_the_way_of_the_embedded_assets_is_named(tmp_path, in_the_way):
    from sut.embedded import embedded_folder, ensure_embedded_assets
    from harness_base import ConfigError

    folder = embedded_folder(tmp_path)
    if in_the_way == "embedded folder is a file":
        folder.parent.mkdir(parents=True)
        folder.write_text("not a folder")
    else:
        (folder / "user.conf").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"--cache_dir .*cannot prepare the embedded model"):
        ensure_embedded_assets(tmp_path, "resnet50-onnxruntime")
