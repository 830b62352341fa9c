"""Benchmark: the raw backend against the SUT, side by side in one run, same model and data.

    python scripts/bench.py                     # the embedded ResNet-50 (random weights)
    python scripts/bench.py --profile resnet50-onnxruntime --model resnet50_v1.onnx \
        --dataset-path /data/imagenet --count 500

Prints, on this machine:
  1. raw backend: best samples/s of a tight onnxruntime loop (no harness, no Ray, no LoadGen),
     at --max-batchsize, on the same pre-processed inputs;
  2. SUT Offline: samples/s LoadGen measured through the whole Ray pipeline, and its ratio to 1;
  3. SUT Offline with the null backend: the harness's own ceiling;
  4. SUT Server with the null backend: the highest target QPS that stayed VALID (p99 within the
     bound) among a rising series.
Each SUT run is `python -m sut` in its own process (LoadGen's rules are per process), joined to
one Ray instance that this script starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="resnet50-onnxruntime")
    parser.add_argument("--model", help="default: the embedded ResNet-50")
    parser.add_argument("--dataset-path", help="default: the embedded synthetic ImageNet")
    parser.add_argument("--count", type=int)
    parser.add_argument("--max-batchsize", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each SUT run")
    parser.add_argument("--server-qps", default="100,200,400,800,1600,3200,6400,12800",
                        help="target QPS series for the null-backend Server ceiling")
    parser.add_argument("--server-latency", type=float,
                        help="Server p99 bound in seconds (default: LoadGen's rule for the model, "
                             "15 ms for resnet50)")
    parser.add_argument("--cache_dir", default=".")
    parser.add_argument("--output", default="bench_output")
    return parser.parse_args(argv)


def raw_backend_samples_per_second(args, config, images, repeats: int = 5) -> float:
    """Best of `repeats` timed passes over the loaded samples, batch by batch."""
    from actors.backends import BackendOptions, create_backend
    from datasets.cache import SampleSource, ensure_preprocessed
    from datasets.registry import get_dataset

    spec = get_dataset(config.dataset)
    folder = ensure_preprocessed(images, spec, config.data_format, config.cache_dir,
                                 use_ray=False, show_progress=False)
    source = SampleSource(folder, images, spec.sample_shape(config.data_format),
                          spec.stored_dtype)
    inputs = spec.normalize(source.read(list(range(len(images)))), config.data_format)
    backend = create_backend(config.backend, BackendOptions(
        model_path=config.model, inputs=config.inputs, outputs=config.outputs,
        layout=config.data_format, sample_shape=spec.sample_shape(config.data_format),
        threads=os.cpu_count() or 1))
    size = args.max_batchsize
    batches = [inputs[i:i + size] for i in range(0, len(inputs), size)]
    backend.predict(batches[0])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            backend.predict(batch)
        best = max(best, len(inputs) / (time.perf_counter() - started))
    return best


def model_and_data_flags(args) -> list[str]:
    """The CLI flags naming the model and data, shared by every run of the benchmark."""
    flags = ["--profile", args.profile, "--cache_dir", args.cache_dir]
    if args.model:
        flags += ["--model", args.model, "--dataset-path", args.dataset_path]
    if args.count:
        flags += ["--count", str(args.count)]
    return flags


def sut_run(args, address, extra: list[str], user_conf: Path, name: str) -> dict:
    output = Path(args.output) / name
    command = [sys.executable, "-m", "sut", "--address", address, "--output", str(output),
               "--user_conf", str(user_conf), "--max-batchsize", str(args.max_batchsize),
               *model_and_data_flags(args)]
    done = subprocess.run(command + extra, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    tests = json.loads((output / "results.json").read_text())["tests"]
    # The embedded models also run an accuracy pass: report the performance test.
    return next(test for test in tests if test["mode"] != "accuracy")


def write_user_conf(folder: Path, model_name: str, seconds: int, offline_qps: float) -> Path:
    path = folder / "user.conf"
    ms = seconds * 1000
    path.write_text(f"{model_name}.Offline.min_duration = {ms}\n"
                    f"{model_name}.Offline.min_query_count = 1\n"
                    f"{model_name}.Offline.target_qps = {offline_qps}\n"
                    f"{model_name}.Server.min_duration = {ms}\n"
                    # enough queries for LoadGen's early-stopping check of the p99 bound
                    f"{model_name}.Server.min_query_count = 1000\n")
    return path


def main(argv=None) -> int:
    import ray

    from sut.cli import resolve

    args = parse_args(argv)
    config, images = resolve(model_and_data_flags(args))
    import onnxruntime

    print(f"machine: {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}, "
          f"model {config.model}, {len(images)} images, batch {args.max_batchsize}")
    raw = raw_backend_samples_per_second(args, config, images)
    print(f"1. raw backend loop           {raw:10.1f} samples/s", flush=True)

    ray.init(include_dashboard=False, logging_level="WARNING")
    address = ray.get_runtime_context().gcs_address
    folder = Path(tempfile.mkdtemp())
    workers = ["--workers", str(args.workers)]
    offline = sut_run(args, address, ["--scenario", "Offline", *workers],
                      write_user_conf(folder, config.model_name, args.seconds, raw), "offline")
    print(f"2. SUT Offline                {offline['value']:10.1f} samples/s  "
          f"({offline['result']}; {offline['value'] / raw:.2f} of raw)", flush=True)
    # LoadGen issues expected QPS x duration samples in Offline: aim near the harness's rate.
    null_conf = write_user_conf(folder, config.model_name, min(args.seconds, 10), 10_000)
    null_offline = sut_run(args, address, ["--scenario", "Offline", "--backend", "null",
                                           *workers], null_conf, "null_offline")
    print(f"3. SUT Offline, null backend  {null_offline['value']:10.1f} samples/s "
          f"(harness ceiling, {null_offline['result']})", flush=True)
    best = None
    for qps in [float(q) for q in args.server_qps.split(",")]:
        bound = ["--max-latency", str(args.server_latency)] if args.server_latency else []
        server = sut_run(args, address, ["--scenario", "Server", "--backend", "null", "--qps",
                                         str(qps), *bound, *workers], null_conf,
                         f"null_server_{qps:g}")
        p99 = server["latency_ns"].get("99.00_percentile_latency_ns", 0) / 1e6
        print(f"   Server null @ {qps:8.0f} QPS: {server['result']:8s} completed "
              f"{server['value']:9.1f}/s  p99 {p99:7.2f} ms", flush=True)
        if server["result"] != "VALID":
            break
        best = (qps, p99)
    if best:
        print(f"4. SUT Server, null backend   {best[0]:10.0f} QPS VALID (p99 {best[1]:.2f} ms)")
    else:
        print("4. SUT Server, null backend   no tested QPS was VALID")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
