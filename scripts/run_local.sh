#!/bin/sh
# The reference harness's launcher on this SUT (see sut/run_local.py):
#   MODEL_DIR=... DATA_DIR=... scripts/run_local.sh onnxruntime resnet50 cpu --scenario Offline
exec "${PYTHON:-python}" -m sut.run_local "$@"
