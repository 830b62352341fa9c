"""Cluster entry point: the same run as `python -m sut`, joined to a running Ray cluster.

On the head node of `ray up cluster.yaml` (or anywhere `ray.init(address="auto")` reaches):

    python scripts/run.py --profile resnet50-onnxruntime --model resnet50_v1.onnx \
        --dataset-path /data/imagenet --scenario Offline --gpus 8

The LoadGen driver runs where this script runs; the workers go wherever Ray has the GPUs.
--address defaults to auto here; pass another to override.
"""

from __future__ import annotations

import argparse
import sys

from sut.cli import main


def name_this_script(parser: argparse.ArgumentParser) -> None:
    parser.prog = "scripts/run.py"
    parser.description = ("MLPerf Inference vision SUT on a running Ray cluster: the flags of "
                          "`python -m sut`, with --address auto unless given.")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(arg == "--address" or arg.startswith("--address=") for arg in argv):
        argv = ["--address", "auto", *argv]
    sys.exit(main(argv, handle_signals=True, extend_parser=name_this_script))
