#!/usr/bin/env bash
# The reference's run_and_time.sh on this SUT: build the CPU or GPU image, then run
# scripts/run_local.sh inside it with $MODEL_DIR, $DATA_DIR and $OUTPUT_DIR mounted, and time it.
#   MODEL_DIR=/models DATA_DIR=/data/imagenet2012 \
#       scripts/run_and_time.sh onnxruntime resnet50 gpu --scenario Server --qps 2000
# The words and flags are run_local.sh's (backend model device, then flags of python -m sut);
# $GPUS, $EXTRA_OPS pass through. The pre-processed cache persists in $CACHE_DIR (default
# $OUTPUT_DIR/cache); $IMAGE names the image (default ray-mlperf-vision-<device>).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: MODEL_DIR=... DATA_DIR=... scripts/run_and_time.sh backend [model] [cpu|gpu] [flags]"

device=cpu
for word in "$@"; do
    case "$word" in
        -*) break ;;
        cpu|gpu) device=$word ;;
    esac
done
for variable in MODEL_DIR DATA_DIR; do
    value=${!variable:-}
    if [ -z "$value" ] || [ ! -d "$value" ]; then
        echo "error: \$$variable must name an existing folder (got '${value}'). $usage" >&2
        exit 2
    fi
done
if ! command -v docker >/dev/null 2>&1; then
    echo "error: docker is not installed here; run scripts/run_local.sh without a container." >&2
    exit 2
fi
output=${OUTPUT_DIR:-$PWD/output/docker-$device}
cache=${CACHE_DIR:-$output/cache}
image=${IMAGE:-ray-mlperf-vision-$device}
mkdir -p "$output" "$cache"

docker build -t "$image" -f "docker/Dockerfile.$device" .

gpu_flags=""
if [ "$device" = gpu ]; then
    gpu_flags="--gpus all"
fi
start=$(date +%s)
# Ray keeps its objects in /dev/shm: Docker's default 64 MB would spill them to disk.
set +e
# shellcheck disable=SC2086
docker run --rm $gpu_flags --shm-size=16g \
    -e MODEL_DIR=/models -e DATA_DIR=/data -e OUTPUT_DIR=/output \
    -e GPUS="${GPUS:-}" -e EXTRA_OPS="--cache_dir /cache ${EXTRA_OPS:-}" \
    -v "$MODEL_DIR:/models:ro" -v "$DATA_DIR:/data:ro" -v "$output:/output" -v "$cache:/cache" \
    "$image" scripts/run_local.sh "$@" 2>&1 | tee "$output/output.txt"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
echo "run_and_time: $((end - start)) s in the container; logs and results.json in $output"
exit $status
