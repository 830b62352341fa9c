"""`scripts/run_local.sh backend model device [flags]`: the reference's launcher, on this SUT.

MLPerf submitters type `./run_local.sh onnxruntime resnet50 gpu --scenario Server` by habit.
As in the reference, the model file is looked up by name in $MODEL_DIR, the images are
$DATA_DIR, the output goes to $OUTPUT_DIR (default output/<backend>-<device>/<model>), and
$EXTRA_OPS and every further flag are passed on, here to `python -m sut`. `gpu` places one
worker per GPU: $GPUS of them (default 1). Mistakes are refused before anything starts, exit 2.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Mapping

from actors.backends import BACKEND_ROWS
from harness_base import ConfigError

@dataclass(frozen=True)
class Launch:
    model_file: str  # in $MODEL_DIR, named as the reference's downloads are
    profile: str
    backend: str | None = None  # where the profile's own backend is not the one asked for


# (model word, backend word) -> what runs; the reference's run_common.sh, row by row.
LAUNCHES: dict[tuple[str, str], Launch] = {
    ("resnet50", "tf"): Launch("resnet50_v1.pb", "resnet50-tf"),
    ("resnet50", "onnxruntime"): Launch("resnet50_v1.onnx", "resnet50-onnxruntime"),
    ("resnet50", "pytorch"): Launch("resnet50-19c8e357.pth", "resnet50-pytorch"),
    ("resnet50", "tflite"): Launch("resnet50_v1.tflite", "resnet50-tf", "tflite"),
    ("resnet50", "tvm-onnx"): Launch("resnet50_v1.onnx", "resnet50-tvm-onnx"),
    # TVM 0.27 reads torch.export programs, not the int8 TorchScript the reference compiles:
    # the torchvision-named weights exported (README, "Real MLPerf models").
    ("resnet50", "tvm-pytorch"): Launch("resnet50-19c8e357.pt2", "resnet50-tvm-pytorch"),
    ("mobilenet", "tf"): Launch("mobilenet_v1_1.0_224_frozen.pb", "mobilenet-tf"),
    ("mobilenet", "onnxruntime"): Launch("mobilenet_v1_1.0_224.onnx", "mobilenet-onnxruntime"),
    ("mobilenet", "tflite"): Launch("mobilenet_v1_1.0_224.tflite", "mobilenet-tf", "tflite"),
    ("ssd-mobilenet", "tf"): Launch("ssd_mobilenet_v1_coco_2018_01_28.pb", "ssd-mobilenet-tf"),
    ("ssd-mobilenet", "onnxruntime"): Launch("ssd_mobilenet_v1_coco_2018_01_28.onnx",
                                             "ssd-mobilenet-onnxruntime"),
    ("ssd-resnet34", "tf"): Launch("resnet34_tf.22.1.pb", "ssd-resnet34-tf"),
    ("ssd-resnet34", "onnxruntime"): Launch("resnet34-ssd1200.onnx", "ssd-resnet34-onnxruntime"),
    ("ssd-resnet34-tf", "onnxruntime"): Launch("ssd_resnet34_mAP_20.2.onnx",
                                               "ssd-resnet34-onnxruntime-tf"),
    ("retinanet", "onnxruntime"): Launch("resnext50_32x4d_fpn.onnx", "retinanet-onnxruntime"),
}
_PICKLED = ("the reference's {file} is a pickled module that needs the reference's model code; "
            "export it to TorchScript or torch.export (.pt2) and run python -m sut --profile "
            "{profile} --model <that file>")
# Reference rows whose files this harness cannot read, and why.
NOT_LAUNCHED: dict[tuple[str, str], str] = {
    ("ssd-resnet34", "pytorch"): _PICKLED.format(file="resnet34-ssd1200.pytorch",
                                                 profile="ssd-resnet34-pytorch"),
    ("retinanet", "pytorch"): _PICKLED.format(file="resnext50_32x4d_fpn.pth",
                                              profile="retinanet-pytorch"),
    ("mobilenet", "pytorch"): "the reference runs the MobileNet ONNX file through onnx2pytorch; "
                              "run that file with onnxruntime",
}
# The reference's backend words, from the backend table; the reference's default, tf, first.
BACKEND_WORDS = tuple(sorted((row.launcher_word for row in BACKEND_ROWS if row.launcher_word),
                             key=lambda word: word != "tf"))
OTHER_REFERENCE_WORDS = ("tvm-tflite", "ncnn", "tpu", "rocm")  # no counterpart here
MODEL_WORDS = ("resnet50", "mobilenet", "ssd-mobilenet", "ssd-resnet34", "ssd-resnet34-tf",
               "retinanet")
DEVICE_WORDS = ("cpu", "gpu")
LAUNCHER_WORDS = frozenset(BACKEND_WORDS + MODEL_WORDS + DEVICE_WORDS + OTHER_REFERENCE_WORDS)
USAGE = (f"usage: scripts/run_local.sh {'|'.join(BACKEND_WORDS)} "
         f"[{'|'.join(MODEL_WORDS)}] [cpu|gpu] [flags of python -m sut]")


def sut_argv(words: list[str], env: Mapping[str, str]) -> list[str]:
    """The launcher's words and environment -> the `python -m sut` command line."""
    chosen = {"backend": "tf", "model": "resnet50", "device": "cpu"}  # the reference's defaults
    given: dict[str, str] = {}
    position = 0
    while position < len(words) and not words[position].startswith("-"):
        word = words[position]
        kind = ("backend" if word in BACKEND_WORDS else "model" if word in MODEL_WORDS
                else "device" if word in DEVICE_WORDS else None)
        if kind and given.get(kind, word) != word:
            raise ConfigError(f"two {kind}s, {given[kind]!r} and {word!r}: give one. {USAGE}")
        if kind:
            chosen[kind] = given[kind] = word
        elif word in OTHER_REFERENCE_WORDS:
            raise ConfigError(f"{word!r}: the reference has it, this SUT does not. {USAGE}")
        else:
            raise ConfigError(f"{word!r} is no backend, model or device here. {USAGE}")
        position += 1
    backend, model, device = chosen["backend"], chosen["model"], chosen["device"]
    flags = words[position:]
    _refuse_words_among_flags(flags)
    for variable in ("MODEL_DIR", "DATA_DIR"):
        if not env.get(variable):
            raise ConfigError(f"${variable} is not set: export {variable}=<folder of the "
                              f"{'model files' if variable == 'MODEL_DIR' else 'images'}>. "
                              f"{USAGE}")
    if (model, backend) in NOT_LAUNCHED:
        raise ConfigError(f"{model} on {backend}: {NOT_LAUNCHED[model, backend]}")
    launch = LAUNCHES.get((model, backend))
    if launch is None:
        known = sorted(b for m, b in LAUNCHES if m == model)
        raise ConfigError(f"no {backend} launch for {model}; it runs with: {', '.join(known)}")
    gpus = env.get("GPUS") or "1"
    if device == "gpu" and not (gpus.isdigit() and int(gpus) > 0):
        raise ConfigError(f"$GPUS {gpus!r}: the number of GPUs, 1 or more")
    try:
        extra = shlex.split(env.get("EXTRA_OPS", ""))
    except ValueError as error:
        raise ConfigError(f"$EXTRA_OPS {env['EXTRA_OPS']!r}: {error}") from None
    argv = ["--profile", launch.profile, "--model", f"{env['MODEL_DIR']}/{launch.model_file}",
            "--dataset-path", env["DATA_DIR"],
            "--output", env.get("OUTPUT_DIR") or f"output/{backend}-{device}/{model}"]
    if launch.backend:
        argv += ["--backend", launch.backend]
    if device == "gpu":
        argv += ["--gpus", gpus, "--device", "gpu"]
    return argv + extra + flags


def _refuse_words_among_flags(flags: list[str]) -> None:
    """`run_local.sh --accuracy onnxruntime ...` would quietly run the defaults: the words must
    come first. A word that is the value of a flag (`--device gpu`) is fine."""
    from sut.cli import build_parser

    takes_value = {option for action in build_parser()._actions if action.nargs != 0
                   for option in action.option_strings}
    for index, word in enumerate(flags):
        if word in LAUNCHER_WORDS and not (index and flags[index - 1] in takes_value):
            raise ConfigError(f"{word!r} after the flags: put backend, model and device first. "
                              f"{USAGE}")


def main(argv: list[str] | None = None) -> int:
    import os

    from harness_base import EXIT_BAD_INPUT
    from sut.cli import main as sut_main

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n{__doc__}")
        return 0
    try:
        command = sut_argv(argv, os.environ)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("python -m sut " + shlex.join(command), flush=True)
    return sut_main(command, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())
