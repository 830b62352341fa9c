"""Benchmark: the harness against the raw backend and against itself, side by side in one run.

    python scripts/bench.py                     # the embedded ResNet-50 (random weights)
    python scripts/bench.py --profile resnet50-onnxruntime --model resnet50_v1.onnx \
        --dataset-path /data/imagenet --count 500
    python scripts/bench.py --only server,offline   # some sections only

Sections (each SUT run is `python -m sut` in its own process, since LoadGen reads its rules
once a process, joined to one Ray instance that this script starts with 4 logical GPUs):
  server   null backend, Server: the highest QPS that LoadGen reports VALID at the model's
           bound (15 ms p99 for resnet50), searched by doubling then bisecting (a rate counts
           INVALID when two runs of it are), with its p99 and the hot path's messages per
           second (one call and its reply per batch group; socket messages over the channel
           transport, Ray messages over --transport calls)
  stream   null SingleStream p90 and MultiStream p99: the harness's own latency, in us (and
           SingleStream's over --transport channel and calls); and the ONNX model's SingleStream
           p90 beside the raw backend's batch-1 p90 (median of --model-repeats runs)
  offline  null Offline samples/s at batch 32 and 256, with --workers 2, and with
           --gpus 4 --device cpu (4 logical GPUs); and the ONNX model's Offline samples/s
           against the raw onnxruntime loop at --max-batchsize, run just before and just
           after it for as long (--model-seconds, 40), --model-repeats times (median ratio)

With --reference DIR (a checkout of mlcommons/inference, or its
vision/classification_and_detection/python folder) every null-backend figure and the model's
SingleStream and Offline runs are also measured on the MLCommons reference harness, with the
same data, model, user.conf and LoadGen, one run after the other, and printed with the ratio:
these VMs move by 2x from one day to the next, so only a side-by-side figure compares.
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

import numpy as np

SECTIONS = ("server", "stream", "offline")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="resnet50-onnxruntime")
    parser.add_argument("--model", help="default: the embedded ResNet-50")
    parser.add_argument("--dataset-path", help="default: the embedded synthetic ImageNet")
    parser.add_argument("--count", type=int)
    parser.add_argument("--max-batchsize", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each SUT run")
    parser.add_argument("--model-seconds", type=int, default=40,
                        help="duration of the model's Offline run and of each raw loop beside "
                             "it: a batch of 32 takes ~1.4 s on 2 vCPUs, so 10 s runs differ "
                             "by +-4%% from one to the next")
    parser.add_argument("--model-repeats", type=int, default=3,
                        help="runs of each model comparison (SingleStream, Offline), "
                             "alternating with the reference's and the raw loop's: on these "
                             "VMs one run moves by 5-10 %%, so the medians are compared")
    parser.add_argument("--server-start-qps", type=float, default=1000)
    parser.add_argument("--server-max-qps", type=float, default=64000)
    parser.add_argument("--server-min-qps", type=float, default=100,
                        help="halve from the start rate down to this while no rate is VALID")
    parser.add_argument("--server-precision", type=float, default=0.05,
                        help="bisect until the VALID and INVALID rates are this close")
    parser.add_argument("--server-latency", type=float,
                        help="Server p99 bound in seconds (default: LoadGen's rule for the model)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--reference", metavar="DIR",
                        help="the MLCommons reference harness to measure beside this one: a "
                             "checkout of mlcommons/inference or its "
                             "vision/classification_and_detection/python folder")
    parser.add_argument("--cache_dir", default=".")
    parser.add_argument("--output", default="bench_output")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    if args.reference:
        args.reference_main = reference_main(args.reference)
        if args.reference_main is None:
            parser.error(f"--reference {args.reference}: no main.py there nor in "
                         "vision/classification_and_detection/python below it (git clone "
                         "https://github.com/mlcommons/inference gives it)")
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    return args


# -- the raw backend: no harness, no Ray, no LoadGen ------------------------------------------

def raw_inputs(config, images):
    from datasets.cache import SampleSource, ensure_preprocessed
    from datasets.registry import get_dataset

    spec = get_dataset(config.dataset)
    folder = ensure_preprocessed(images, spec, config.data_format, config.cache_dir,
                                 use_ray=False, show_progress=False)
    source = SampleSource(folder, images, spec.sample_shape(config.data_format),
                          spec.stored_dtype)
    return spec.normalize(source.read(list(range(len(images)))), config.data_format)


def raw_backend(config):
    from actors.backends import BackendOptions, create_backend
    from datasets.registry import get_dataset

    spec = get_dataset(config.dataset)
    return create_backend(config.backend, BackendOptions(
        model_path=config.model, inputs=config.inputs, outputs=config.outputs,
        layout=config.data_format, sample_shape=spec.sample_shape(config.data_format),
        threads=os.cpu_count() or 1))


def raw_samples_per_second(backend, inputs, batch: int, seconds: float) -> float:
    """Samples/s of back-to-back predictions over the samples, batch by batch, for about as
    long as a SUT run lasts (an average over time, as LoadGen's figure is)."""
    batches = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]
    backend.predict(batches[0])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for chunk in batches:
            backend.predict(chunk)
            done += len(chunk)
    return done / (time.perf_counter() - started)


def raw_single_ms(backend, inputs, seconds: float) -> tuple[float, float]:
    """p50 and p90 of one-sample predictions, back to back for `seconds`."""
    backend.predict(inputs[:1])
    times, deadline, i = [], time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        backend.predict(inputs[i % len(inputs):i % len(inputs) + 1])
        times.append(time.perf_counter() - started)
        i += 1
    p50, p90 = np.percentile(times, [50, 90]) * 1e3
    return float(p50), float(p90)


# -- SUT runs ---------------------------------------------------------------------------------

def model_and_data_flags(args) -> list[str]:
    """The CLI flags naming the model and data, shared by every run of the benchmark."""
    flags = ["--profile", args.profile, "--cache_dir", args.cache_dir]
    if args.model:
        flags += ["--model", args.model, "--dataset-path", args.dataset_path]
    if args.count:
        flags += ["--count", str(args.count)]
    return flags


def write_user_conf(folder: Path, model_name: str, seconds: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "user.conf"
    ms = seconds * 1000
    path.write_text(f"{model_name}.Offline.min_duration = {ms}\n"
                    f"{model_name}.Offline.min_query_count = 1\n"
                    f"{model_name}.Server.min_duration = {ms}\n"
                    # enough queries for LoadGen's early-stopping check of the p99 bound
                    f"{model_name}.Server.min_query_count = 1000\n"
                    f"{model_name}.SingleStream.min_duration = {ms}\n"
                    f"{model_name}.SingleStream.min_query_count = 100\n"
                    # LoadGen pre-generates queries for duration / expected latency: a low
                    # expectation (1 ms) leaves enough for the null backend's fast answers
                    f"{model_name}.SingleStream.target_latency = 1\n"
                    f"{model_name}.MultiStream.target_latency = 1\n"
                    f"{model_name}.MultiStream.min_duration = {ms}\n"
                    f"{model_name}.MultiStream.min_query_count = 100\n")
    return path


class Runner:
    def __init__(self, args, address: str, user_conf: Path, model_user_conf: Path) -> None:
        self.args, self.address, self.user_conf = args, address, user_conf
        self.model_user_conf = model_user_conf

    def __call__(self, name: str, *extra: str, batch: int | None = None,
                 user_conf: Path | None = None) -> dict:
        output = Path(self.args.output) / name
        command = [sys.executable, "-m", "sut", "--address", self.address, "--output",
                   str(output), "--user_conf", str(user_conf or self.user_conf), "--max-batchsize",
                   str(batch or self.args.max_batchsize), *model_and_data_flags(self.args),
                   *extra]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
        results = json.loads((output / "results.json").read_text())
        # The embedded models also run an accuracy pass: report the performance test.
        test = next(test for test in results["tests"] if test["mode"] != "accuracy")
        return {**test, "transport": results["setup"].get("transport")}


def reference_main(folder: str) -> Path | None:
    for candidate in (Path(folder), Path(folder) / "vision/classification_and_detection/python"):
        if (candidate / "main.py").is_file() and (candidate / "backend_null.py").is_file():
            return candidate / "main.py"
    return None


# The reference's null backend answers one [[0]] whatever the batch, which its post-processing
# cannot split into a batch's answers: as issue 13 measured it, the null model answers zeros of
# the right shape (the profile's output, ArgMax:0, one class index a sample). The rest is the
# reference's own main.py.
REFERENCE_NULL_SHIM = """
import runpy, sys
import numpy as np
main = sys.argv.pop(1)
sys.path.insert(0, main.rsplit("/", 1)[0])
import backend_null
backend_null.BackendNull.predict = lambda self, feed: [
    np.zeros(len(next(iter(feed.values()))), np.int64)]
sys.argv[0] = main
runpy.run_path(main, run_name="__main__")
"""


class ReferenceRunner:
    """The same runs on the MLCommons reference harness (one process, threads): its flags are
    the ones this harness copied, so a run's flags carry over but for those it has not."""

    ONLY_HERE = ("--workers", "--gpus", "--device")

    def __init__(self, args, config, runner: Runner) -> None:
        self.args, self.config, self.runner = args, config, runner

    def __call__(self, name: str, *extra: str, batch: int | None = None,
                 user_conf: Path | None = None) -> dict:
        from sut.report import summarize_test

        words = list(extra)
        for flag in self.ONLY_HERE:
            if flag in words:
                raise ValueError(f"the reference harness has no {flag}")
        output = Path(self.args.output) / f"reference_{name}"
        command = [sys.executable, "-c", REFERENCE_NULL_SHIM, str(self.args.reference_main),
                   "--profile", self.args.profile,
                   "--model", str(self.config.model), "--dataset-path",
                   str(self.config.dataset_path), "--cache_dir",
                   str(Path(self.args.output) / "reference_cache"), "--output", str(output),
                   "--user_conf", str(user_conf or self.runner.user_conf), "--max-batchsize",
                   str(batch or self.args.max_batchsize), *words]
        if self.args.count:
            command += ["--count", str(self.args.count)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"reference {name} failed ({' '.join(command)}):\n"
                             f"{done.stderr[-3000:]}")
        scenario = words[words.index("--scenario") + 1]
        return summarize_test(scenario, "performance", output)

    @property
    def model_user_conf(self) -> Path:
        return self.runner.model_user_conf


def side_by_side(label: str, ours: float, reference: float | None, unit: str,
                 higher_is_better: bool) -> str:
    """One figure with the reference harness's beside it and this harness's ratio to it."""
    if reference is None:
        return f"{label}: {ours:,.1f} {unit}"
    ratio = ours / reference if higher_is_better else reference / ours
    better = "higher" if higher_is_better else "lower"
    return (f"{label}: {ours:,.1f} {unit} against the reference's {reference:,.1f} {unit}: "
            f"{ratio:.2f}x ({better} is better)")


def paired(label: str, ours: list[float], theirs: list[float], higher_is_better: bool) -> str:
    """The ratio of each run to the reference's run right after it, and their median: a pair
    shares the machine's mood of the moment, which the medians of each side do not."""
    ratios = [(a / b if higher_is_better else b / a) for a, b in zip(ours, theirs)]
    better = "higher" if higher_is_better else "lower"
    return (f"{label}, run by run against the reference's next run: "
            f"{', '.join(f'{ratio:.2f}x' for ratio in ratios)}; median {np.median(ratios):.2f}x "
            f"({better} is better)")


def model_threads() -> list[str]:
    """The model's worker gets every core, as the raw loop does (Ray here has more logical
    CPUs than cores, for the 4-worker run)."""
    return ["--threads", str(os.cpu_count() or 1)]


def latency_ms(test: dict, key: str) -> float:
    return test["latency_ns"].get(key, 0) / 1e6


def server_search(run, args, who: str) -> tuple[float, dict | None]:
    """The highest VALID rate: double from --server-start-qps until a rate is INVALID (or halve
    until one is VALID), then bisect. Returns the rate and its test (None: none was VALID)."""
    bound = ["--max-latency", str(args.server_latency)] if args.server_latency else []

    def trial(qps: float) -> bool:
        # An INVALID rate is run once more before it counts: on these VMs one run in a few
        # breaks the bound at a rate the runs around it hold (p99 18 ms among runs of 8-11 ms
        # at 2,500 QPS), and one such run would stop the search there.
        for attempt in ("", " (again)"):
            test = run(f"null_server_{qps:.0f}{attempt and '_again'}", "--scenario", "Server",
                       "--backend", "null", "--qps", f"{qps:.0f}", *bound)
            print(f"   {who:12s} Server null @ {qps:8.0f} QPS: {test['result']:8s} completed "
                  f"{test['value']:9.1f}/s  p99 "
                  f"{latency_ms(test, '99.00_percentile_latency_ns'):7.2f} ms  "
                  f"{test.get('worker_calls_per_second', 0):7.1f} calls/s{attempt}", flush=True)
            tests[qps] = test
            if test["result"] == "VALID":
                return True
        return False

    tests: dict[float, dict] = {}
    good, bad = 0.0, None
    qps = args.server_start_qps
    if trial(qps):
        good = qps
        while qps * 2 <= args.server_max_qps:
            qps *= 2
            if not trial(qps):
                bad = qps
                break
            good = qps
    else:
        bad = qps
        while qps / 2 >= args.server_min_qps:
            qps /= 2
            if trial(qps):
                good = qps
                break
            bad = qps
    while bad is not None and good and (bad - good) / bad > args.server_precision:
        qps = round((good + bad) / 2)
        if trial(qps):
            good = qps
        else:
            bad = qps
    return good, tests.get(good)


def server_section(run: Runner, args, reference=None) -> None:
    good, best = server_search(run, args, "this harness")
    if best is None:
        print(f"server  this harness: no rate from {args.server_min_qps:.0f} QPS up was VALID")
    else:
        calls = best.get("worker_calls_per_second", 0)
        carrier = ("Ray messages/s" if best["transport"] == "calls" else
                   f"socket messages/s (transport {best['transport']}, no Ray message)")
        print(f"server  null backend Server: {good:.0f} QPS VALID, p99 "
              f"{latency_ms(best, '99.00_percentile_latency_ns'):.2f} ms; hot path "
              f"{calls:.0f} worker calls/s = {2 * calls:.0f} {carrier} for "
              f"{best['value']:.0f} samples/s ({best['value'] / max(calls, 1):.1f} samples a "
              "call)", flush=True)
    if reference is None:
        return
    reference_good, reference_best = server_search(reference, args, "reference")
    if reference_best is None:
        print(f"server  reference: no rate from {args.server_min_qps:.0f} QPS up was VALID")
        return
    print("server  " + side_by_side("null Server peak VALID QPS", good, reference_good, "QPS",
                                    True) +
          f"; the reference's p99 there "
          f"{latency_ms(reference_best, '99.00_percentile_latency_ns'):.2f} ms", flush=True)


def stream_section(run: Runner, args, config, images, reference=None) -> None:
    def null_streams(runner) -> tuple[dict, dict]:
        return (runner("null_singlestream", "--scenario", "SingleStream", "--backend", "null"),
                runner("null_multistream", "--scenario", "MultiStream", "--backend", "null"))

    single, multi = null_streams(run)
    print(f"stream  null SingleStream p90 {single['value'] / 1e3:.0f} us ({single['result']}); "
          f"null MultiStream p99 {multi['value'] / 1e3:.0f} us ({multi['result']}); transport "
          f"{single['transport']}", flush=True)
    # The worker actors' added latency: what a stream test pays with several workers or on a
    # cluster (sut/cluster.transport_for), over the channel and over Ray calls.
    for transport in ("channel", "calls"):
        if single["transport"] != transport:
            other = run(f"null_singlestream_{transport}", "--scenario", "SingleStream",
                        "--backend", "null", "--transport", transport)
            print(f"stream  null SingleStream p90 with --transport {transport} "
                  f"{other['value'] / 1e3:.0f} us ({other['result']})", flush=True)
    if reference is not None:
        ref_single, ref_multi = null_streams(reference)
        print("stream  " + side_by_side("null SingleStream p90", single["value"] / 1e3,
                                        ref_single["value"] / 1e3, "us", False), flush=True)
        print("stream  " + side_by_side("null MultiStream p99", multi["value"] / 1e3,
                                        ref_multi["value"] / 1e3, "us", False), flush=True)
    backend = raw_backend(config)
    raw_p50, raw_p90 = raw_single_ms(backend, raw_inputs(config, images), args.seconds)
    del backend
    ours, theirs = [], []
    for repeat in range(args.model_repeats):
        model = run(f"model_singlestream_{repeat}", "--scenario", "SingleStream",
                    *model_threads())
        ours.append((latency_ms(model, "50.00_percentile_latency_ns"), model["value"] / 1e6))
        line = (f"stream  model SingleStream run {repeat + 1}: p50 {ours[-1][0]:.2f} ms, p90 "
                f"{ours[-1][1]:.2f} ms ({model['result']}, transport {model['transport']})")
        if reference is not None:
            ref_model = reference(f"model_singlestream_{repeat}", "--scenario", "SingleStream",
                                  *model_threads())
            theirs.append((latency_ms(ref_model, "50.00_percentile_latency_ns"),
                           ref_model["value"] / 1e6))
            line += f"; reference p50 {theirs[-1][0]:.2f} ms, p90 {theirs[-1][1]:.2f} ms"
        print(line, flush=True)
    model_p50, model_p90 = (float(np.median([run_[i] for run_ in ours])) for i in (0, 1))
    print(f"stream  model SingleStream median of {len(ours)}: p50 {model_p50:.2f} ms, p90 "
          f"{model_p90:.2f} ms; raw backend batch 1: p50 {raw_p50:.2f} ms, p90 {raw_p90:.2f} "
          f"ms; added p50 {model_p50 - raw_p50:+.2f} ms, p90 {model_p90 - raw_p90:+.2f} ms",
          flush=True)
    if theirs:
        ref_p50, ref_p90 = (float(np.median([run_[i] for run_ in theirs])) for i in (0, 1))
        print("stream  " + side_by_side(f"model SingleStream p90 (medians of {len(ours)})",
                                        model_p90, ref_p90, "ms", False) +
              f" (p50 {model_p50:.2f} against the reference's {ref_p50:.2f} ms)", flush=True)
        print("stream  " + paired("model SingleStream p90", [run_[1] for run_ in ours],
                                  [run_[1] for run_ in theirs], False), flush=True)


def null_offline(runner, name: str, batch: int, *extra: str) -> dict:
    """LoadGen's one Offline query holds expected QPS x duration x 1.1 samples: a guess below
    the real rate ends the test early (INVALID), so such a run is repeated with the rate it
    measured."""
    expected = 20000.0
    for _ in range(3):
        test = runner(name, "--scenario", "Offline", "--backend", "null", "--qps",
                      f"{expected:.0f}", *extra, batch=batch)
        if test["result"] == "VALID" or test["value"] <= expected:
            return test
        expected = test["value"] * 1.05
    return test


def offline_section(run: Runner, args, config, images, reference=None) -> None:
    rows = [("batch 32, 1 worker", null_offline(run, "null_offline_32", 32)),
            ("batch 256, 1 worker", null_offline(run, "null_offline_256", 256)),
            ("batch 32, --workers 2", null_offline(run, "null_offline_32_w2", 32, "--workers",
                                                   "2")),
            ("batch 32, --gpus 4 --device cpu", null_offline(run, "null_offline_32_g4", 32,
                                                             "--gpus", "4", "--device", "cpu"))]
    for label, test in rows:
        print(f"offline null {label:32s} {test['value']:10.1f} samples/s ({test['result']})",
              flush=True)
    if reference is not None:
        for (label, test), batch in zip(rows[:2], (32, 256)):
            ref = null_offline(reference, f"null_offline_{batch}", batch)
            print("offline " + side_by_side(f"null {label}", test["value"], ref["value"],
                                            "samples/s", True) + f" ({ref['result']})",
                  flush=True)
    # The raw loop runs just before and just after each SUT run, each as long as it: the ratio
    # is to their mean, so a machine that drifts during the run does not count for or against.
    inputs = raw_inputs(config, images)
    before = raw_model_rate(config, inputs, args)
    ratios, ours, theirs = [], [], []
    for repeat in range(args.model_repeats):
        model = run(f"model_offline_{repeat}", "--scenario", "Offline", "--qps",
                    f"{before:.1f}", *model_threads(), user_conf=run.model_user_conf)
        after = raw_model_rate(config, inputs, args)
        ratios.append(model["value"] / ((before + after) / 2))
        ours.append(model["value"])
        print(f"offline model run {repeat + 1}: raw onnxruntime loop {before:.2f} before, "
              f"{after:.2f} after samples/s; SUT Offline {model['value']:.2f} samples/s "
              f"({model['result']}) = {ratios[-1]:.3f} of raw, batch {args.max_batchsize}, "
              f"{args.model_seconds} s each", flush=True)
        if reference is not None:
            # The reference's --qps is a whole number.
            ref_model = reference(f"model_offline_{repeat}", "--scenario", "Offline", "--qps",
                                  f"{max(1, round(after))}", *model_threads(),
                                  user_conf=reference.model_user_conf)
            theirs.append(ref_model["value"])
            print(f"offline model run {repeat + 1}: reference Offline {ref_model['value']:.2f} "
                  f"samples/s ({ref_model['result']})", flush=True)
        before = after
    print(f"offline model Offline against the raw onnxruntime loop: median {np.median(ratios):.3f}"
          f" of {len(ratios)} ({', '.join(f'{ratio:.3f}' for ratio in ratios)})", flush=True)
    if theirs:
        print("offline " + side_by_side(f"model Offline (medians of {len(ours)})",
                                        float(np.median(ours)), float(np.median(theirs)),
                                        "samples/s", True), flush=True)
        print("offline " + paired("model Offline", ours, theirs, True), flush=True)


def raw_model_rate(config, inputs, args) -> float:
    backend = raw_backend(config)
    try:
        return raw_samples_per_second(backend, inputs, args.max_batchsize, args.model_seconds)
    finally:
        del backend


def main(argv=None) -> int:
    import ray

    from sut.cli import resolve

    args = parse_args(argv)
    config, images = resolve(model_and_data_flags(args))
    import onnxruntime

    print(f"machine: {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}, Ray "
          f"{ray.__version__}, model {config.model}, {len(images)} images, "
          f"batch {args.max_batchsize}, {args.seconds} s a run", flush=True)
    # 4 logical GPUs (and at least 4 logical CPUs) for the --gpus 4 --device cpu run.
    ray.init(num_cpus=max(4, os.cpu_count() or 1), num_gpus=4, include_dashboard=False,
             logging_level="WARNING")
    try:
        confs = Path(tempfile.mkdtemp())
        run = Runner(args, ray.get_runtime_context().gcs_address,
                     write_user_conf(confs / "short", config.model_name, args.seconds),
                     write_user_conf(confs / "model", config.model_name, args.model_seconds))
        reference = ReferenceRunner(args, config, run) if args.reference else None
        if "server" in args.sections:
            server_section(run, args, reference)
        if "stream" in args.sections:
            stream_section(run, args, config, images, reference)
        if "offline" in args.sections:
            offline_section(run, args, config, images, reference)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
