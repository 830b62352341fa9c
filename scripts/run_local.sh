#!/bin/sh
# The reference harness's launcher on this SUT (see sut/run_local.py):
#   MODEL_DIR=... DATA_DIR=... scripts/run_local.sh onnxruntime resnet50 cpu --scenario Offline
# $PYTHON picks the interpreter (default: python, else python3) of the environment where the
# project is installed (pip install -e .).
python=${PYTHON:-$(command -v python || command -v python3)}
exec "$python" -m sut.run_local "$@"
