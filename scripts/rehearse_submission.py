"""Rehearse the closed-division submission with the full rules, on any machine, with no dataset.

    python scripts/rehearse_submission.py --output rehearsal --checker DIR

DIR is a checkout of mlcommons/inference (its tools/submission checker judges the tree). The
script makes a stand-in for ImageNet's validation set (generated JPEGs of varied sizes, 50,000
by default, and a val_map.txt) and a stand-in model with MLPerf ResNet-50's tensors
(`input_tensor:0` float32 NCHW -> `ArgMax:0` int64, 1001 classes) that knows every one of those
images: it pools the pre-processed image, projects it on random directions, runs it through two
random convolutions (the work a real model's time is made of), and answers the label of the
image whose results were nearest when it was built. Then it runs the README's closed sequence on them,
unchanged:

  1. the Offline and Server rates and the SingleStream and MultiStream target latencies to ask
     for, from short runs (as a submitter finds them);
  2. `python -m sut submission --scenarios ...`: every run the rules ask for in the category
     (default datacenter,edge: all four scenarios; 600 s timed runs, accuracy over the whole
     set, TEST01 and TEST04), then the tree;
  3. the system fields no machine can tell, filled with "rehearsal";
  4. `python -m sut submission --check`, then the official checker (`--version v6.1`).

It prints how long each step took. Everything is kept in --output, and a second start reuses
what is finished (the images, the model, the runs). What it proves is the path, the rules and
the tree: the stand-in's accuracy (100 %) and rates say nothing about a real model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sut.mlperf_rules import CLOSED_SCENARIOS

PROFILE = "resnet50-onnxruntime"
FEATURES = 16  # of each of the two kinds (see _extractor)
CONV_CHANNELS = 32
SERVER_BOUND_MS = 15.0  # resnet50's Server p99 bound
SERVER_MIN_QUERIES = 270_336  # resnet50's Server min_query_count in LoadGen's rules
# What v6.1's closed division takes for resnet50: edge, or datacenter,edge (all four).
SCENARIOS = {category: ",".join(names)
             for category, names in CLOSED_SCENARIOS["resnet50"].items()}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="where everything goes (kept)")
    parser.add_argument("--checker", metavar="DIR",
                        help="a checkout of mlcommons/inference: its submission checker "
                             "judges the tree")
    parser.add_argument("--images", type=int, default=50_000,
                        help="images in the stand-in set (the rules' accuracy run covers "
                             "ImageNet's 50,000)")
    parser.add_argument("--category", choices=sorted(SCENARIOS), default="datacenter,edge")
    parser.add_argument("--submitter", default="Rehearsal")
    parser.add_argument("--system", default="rehearsal-node")
    parser.add_argument("--address", help="a running Ray cluster to use (default: each step "
                                          "starts a local Ray instance)")
    parser.add_argument("--run-flags", default="--threads 1",
                        help="more flags for every run (default \"--threads 1\": on a small "
                             "CPU machine one model thread leaves a core to the harness, which "
                             "keeps the Server tail short)")
    parser.add_argument("--short", action="store_true",
                        help="5 s runs and --allow-short-runs: tries the script itself; the "
                             "tree is marked as no valid submission")
    return parser.parse_args(argv)


# -- the stand-in set and model -----------------------------------------------------------------

def make_images(folder: Path, count: int, seed: int = 2026) -> None:
    """Photo-sized JPEGs (portrait, landscape, square; some gray), labels 0..999."""
    import cv2

    from harness_base import progress_bar

    val_map = folder / "val_map.txt"
    if val_map.is_file() and len(val_map.read_text().splitlines()) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 1000, size=count)
    lines = []
    with progress_bar(count, "stand-in images", "image", True) as progress:
        for i in range(count):
            height = int(rng.integers(200, 400))
            width = [height, int(rng.integers(200, 500)), int(height * 1.4)][i % 3]
            small = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
            if i % 7 == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
            cv2.imwrite(str(folder / name), image)
            lines.append(f"{name} {labels[i]}\n")
            progress.update(1)
    val_map.write_text("".join(lines))


def _extractor(shape: tuple[int, ...], seed: int):
    """The stand-in's work: the image pooled, then (a) a random projection of it, which tells
    the images apart, and (b) two random convolutions, the compute a real model's run time is
    made of: weights that stay in the cache, so that a sample already in the cache, as TEST04
    issues it, is not much faster. Returns (nodes, initializers) of a graph from
    `input_tensor:0` to `features` [N, 2 * FEATURES]."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels = shape[0]

    def weights(name, *dims):
        fan_in = int(np.prod(dims[1:])) if len(dims) > 2 else dims[0]
        return numpy_helper.from_array(
            (rng.standard_normal(dims) / np.sqrt(fan_in)).astype(np.float32), name)

    pooled = channels * (shape[1] // 8) * (shape[2] // 8)
    initializers = [numpy_helper.from_array(np.array(1 / 128, np.float32), "scale"),
                    weights("project", pooled, FEATURES),
                    weights("conv1", CONV_CHANNELS, channels, 3, 3),
                    weights("conv2", CONV_CHANNELS, CONV_CHANNELS, 3, 3),
                    weights("out", CONV_CHANNELS, FEATURES)]
    node = helper.make_node
    nodes = [node("Mul", ["input_tensor:0", "scale"], ["scaled"]),
             node("AveragePool", ["scaled"], ["pooled8"], kernel_shape=[8, 8], strides=[8, 8]),
             node("Flatten", ["pooled8"], ["flat"], axis=1),
             node("MatMul", ["flat", "project"], ["projected"]),
             node("AveragePool", ["scaled"], ["pooled4"], kernel_shape=[4, 4], strides=[4, 4]),
             node("Conv", ["pooled4", "conv1"], ["c1"], pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"]),
             node("Conv", ["r1", "conv2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             node("Relu", ["c2"], ["r2"]),
             node("GlobalAveragePool", ["r2"], ["summed"]),
             node("Flatten", ["summed"], ["summary"], axis=1),
             node("MatMul", ["summary", "out"], ["worked"]),
             node("Concat", ["projected", "worked"], ["features"], axis=1)]
    return nodes, initializers


def _save(path: Path, nodes, initializers, shape, output: str, output_type) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "rehearsal_stand_in",
        [helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(output, output_type, ["N", *(
            [2 * FEATURES] if output == "features" else [])])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if path is not None:
        import onnx

        onnx.save(model, str(path))
    return model.SerializeToString()


def make_model(path: Path, dataset: Path, cache_dir: Path, address: str | None,
               seed: int = 7) -> None:
    """The stand-in model: the features of each known image (computed here by the same graph
    from the harness's own pre-processed samples), and the label (+1) of the nearest."""
    if path.is_file():
        return
    import onnxruntime
    import ray
    from onnx import TensorProto, helper, numpy_helper

    from datasets.cache import SampleSource, ensure_preprocessed
    from datasets.imagenet import read_val_map
    from datasets.registry import get_dataset
    from harness_base import progress_bar

    images = read_val_map(dataset)
    spec = get_dataset("imagenet")
    ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    try:  # fills the cache the runs will read, on every CPU
        folder = ensure_preprocessed(images, spec, "NCHW", cache_dir, use_ray=True)
    finally:
        ray.shutdown()
    shape = spec.sample_shape("NCHW")
    source = SampleSource(folder, images, shape, spec.stored_dtype)
    nodes, initializers = _extractor(shape, seed)
    session = onnxruntime.InferenceSession(
        _save(None, nodes, initializers, shape, "features", TensorProto.FLOAT),
        providers=["CPUExecutionProvider"])
    features = np.empty((len(images), 2 * FEATURES), np.float32)
    with progress_bar(len(images), "stand-in model", "image", True) as progress:
        for start in range(0, len(images), 256):
            rows = list(range(start, min(start + 256, len(images))))
            batch = spec.normalize(source.read(rows), "NCHW")
            features[start:start + len(rows)] = session.run(None, {"input_tensor:0": batch})[0]
            progress.update(len(rows))
    # argmin over known images of |f - t|^2 = argmin of (|t|^2 - 2 f.t): one matrix product.
    initializers += [
        numpy_helper.from_array(np.ascontiguousarray(-2.0 * features.T), "minus_two_t"),
        numpy_helper.from_array((features.astype(np.float64) ** 2).sum(1).astype(np.float32),
                                "t_squared"),
        numpy_helper.from_array(images.labels.astype(np.int64) + 1, "classes")]
    nodes += [helper.make_node("MatMul", ["features", "minus_two_t"], ["cross"]),
              helper.make_node("Add", ["cross", "t_squared"], ["distance"]),
              helper.make_node("ArgMin", ["distance"], ["nearest"], axis=1, keepdims=0),
              helper.make_node("Gather", ["classes", "nearest"], ["ArgMax:0"], axis=0)]
    _save(path, nodes, initializers, shape, "ArgMax:0", TensorProto.INT64)


# -- the sequence -------------------------------------------------------------------------------

def sut(*args: str, check: bool = True) -> int:
    print("$ python -m sut " + " ".join(args), flush=True)
    code = subprocess.run([sys.executable, "-m", "sut", *args]).returncode
    if check and code != 0:
        raise SystemExit(f"python -m sut {args[0]} ... ended with exit {code}")
    return code


def performance_of(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    return next(test for test in results["tests"] if test["mode"] == "performance")


def find_rates(out: Path, run_flags: list[str], seconds: int) -> dict[str, float]:
    """Offline: the samples/s of a short run whose one query is sized by a first guess, then
    of one sized by that; the rules' run is asked for 30 % more, since an Offline run that
    answers its query before 600 s is INVALID (a higher guess only makes it longer). Server:
    from half the Offline rate, halved until a short run's p99 is under 60 % of the 15 ms
    bound (a short run is judged on its p99, not on LoadGen's early-stopping verdict, which
    needs the 600 s run's query count)."""
    rates_file = out / "rates.json"
    if rates_file.is_file():
        return json.loads(rates_file.read_text())
    probe = out / "probe"
    offline = 1000.0
    for attempt in ("offline_guess", "offline"):
        sut("--scenario", "Offline", "--time", str(seconds), "--qps", f"{offline:.0f}",
            "--output", str(probe / attempt), "--no-record", *run_flags)
        offline = performance_of(probe / attempt)["value"]
    server = offline / 2
    while True:
        folder = probe / f"server_{server:.0f}"
        sut("--scenario", "Server", "--time", str(seconds), "--qps", f"{server:.0f}", "--output",
            str(folder), "--no-record", *run_flags)
        p99_ms = performance_of(folder)["latency_ns"]["99.00_percentile_latency_ns"] / 1e6
        if p99_ms <= 0.6 * SERVER_BOUND_MS:
            break
        if server < 2:
            raise SystemExit("no Server rate holds the 15 ms bound on this machine")
        server /= 2
    rates = {"Offline": round(offline * 1.3), "Server": round(server)}
    if rates["Server"] * 600 < SERVER_MIN_QUERIES:
        print(f"   note: at {rates['Server']} QPS a Server run needs "
              f"{SERVER_MIN_QUERIES / rates['Server'] / 60:.0f} min for the rules' "
              f"{SERVER_MIN_QUERIES:,} queries, not 10")
    rates_file.write_text(json.dumps(rates))
    return rates


def find_latencies(out: Path, run_flags: list[str], seconds: int) -> dict[str, float]:
    """SingleStream and MultiStream: LoadGen makes 2 x min_duration / target_latency queries
    before a run, and a run that answers them all before 600 s is INVALID ("Decrease the
    expected latency"); the default targets (10 and 80 ms) are far above a fast model's (the
    stand-in's SingleStream query takes 0.4 ms: 120,000 queries, 45 s). Each target is the
    mean latency of a short run, which makes queries for about twice the run."""
    latencies_file = out / "latencies.json"
    if latencies_file.is_file():
        return json.loads(latencies_file.read_text())
    latencies = {}
    for scenario in ("SingleStream", "MultiStream"):
        folder = out / "probe" / scenario
        sut("--scenario", scenario, "--time", str(seconds), "--output", str(folder),
            "--no-record", *run_flags)
        mean_ns = performance_of(folder)["latency_ns"]["mean_latency_ns"]
        latencies[scenario] = max(round(mean_ns / 1e6, 3), 0.001)
    latencies_file.write_text(json.dumps(latencies))
    return latencies


def write_user_conf(path: Path, rates: dict[str, float], latencies: dict[str, float],
                    short: bool) -> None:
    lines = [f"resnet50.{scenario}.target_qps = {rate}" for scenario, rate in rates.items()]
    lines += [f"resnet50.{scenario}.target_latency = {milliseconds}"
              for scenario, milliseconds in latencies.items()]
    if short:  # and few enough queries for 5 s at the stand-in's rates
        lines += [f"resnet50.{scenario}.{key} = {value}"
                  for scenario in ("Offline", "Server", "SingleStream", "MultiStream")
                  for key, value in (("min_duration", 5000), ("min_query_count", 100))]
        # A 5 s Server run has ~3,000 queries: a dozen over 15 ms on a busy machine and early
        # stopping wants more of them, so the run is INVALID and no compliance test can be
        # judged against it. A short tree is a rule override anyway (--check says so).
        lines.append("resnet50.Server.target_latency = 100")
    path.write_text("\n".join(lines) + "\n")


def fill_system_fields(tree: Path) -> list[str]:
    """Fill what the submission command left for a person to fill; returns the keys."""
    filled = []
    for system_file in tree.glob("*/*/systems/*.json"):
        system = json.loads(system_file.read_text())
        from sut.submission import MAY_BE_EMPTY

        for key, value in system.items():
            if value == "" and key not in MAY_BE_EMPTY:
                system[key] = "rehearsal (not described)"
                filled.append(key)
        system_file.write_text(json.dumps(system, indent=2) + "\n")
    return filled


def run_checker(checker: Path, tree: Path) -> int:
    folder = checker / "tools" / "submission"
    if not (folder / "submission_checker" / "main.py").is_file():
        raise SystemExit(f"--checker {checker}: no tools/submission/submission_checker there "
                         "(git clone https://github.com/mlcommons/inference gives it)")
    command = [sys.executable, "-m", "submission_checker.main", "--input", str(tree.resolve()),
               "--version", "v6.1"]
    print("$ (cd " + str(folder) + " && " + " ".join(command[1:]) + ")", flush=True)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    report = done.stdout + done.stderr
    (tree.parent / "official_checker.txt").write_text(report)
    for line in report.splitlines():
        if re.search(r"ERROR|SUMMARY|Results=|errors", line):
            print("   " + line)
    return done.returncode


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset, model = out / "imagenet-stand-in", out / "stand-in.onnx"
    took: list[tuple[str, float]] = []

    def step(name: str, work):
        started = time.monotonic()
        result = work()
        took.append((name, time.monotonic() - started))
        print(f"== {name}: {took[-1][1] / 60:.1f} min", flush=True)
        return result

    step(f"{args.images:,} stand-in images", lambda: make_images(dataset, args.images))
    step("pre-processing and the stand-in model",
         lambda: make_model(model, dataset, out, args.address))
    run_flags = ["--profile", PROFILE, "--model", str(model), "--dataset-path", str(dataset),
                 "--cache_dir", str(out), *(["--address", args.address] if args.address else []),
                 *args.run_flags.split()]
    rates = step("the rates to ask for",
                 lambda: find_rates(out, run_flags, 5 if args.short else 30))
    latencies = step("the stream scenarios' target latencies",
                     lambda: find_latencies(out, run_flags, 5 if args.short else 30))
    user_conf = out / "user.conf"
    write_user_conf(user_conf, rates, latencies, args.short)
    print(f"   {user_conf}: " + ", ".join(f"{k} {v:,} QPS" for k, v in rates.items()) + ", "
          + ", ".join(f"{k} {v:g} ms" for k, v in latencies.items()))
    tree = out / "submission"
    submission = ["submission", "--submitter", args.submitter, "--system", args.system,
                  "--division", "closed", "--category", args.category, "--output", str(tree),
                  "--runs-dir", str(out / "runs"), "--scenarios", SCENARIOS[args.category],
                  *(["--allow-short-runs"] if args.short else []), "--",
                  *run_flags, "--user_conf", str(user_conf)]
    if tree.exists():
        import shutil

        shutil.rmtree(tree)  # rebuilt from the kept runs
    step("the runs the rules ask for, and the tree", lambda: sut(*submission))
    filled = fill_system_fields(tree)
    print(f"   filled with 'rehearsal': {', '.join(filled) or 'nothing'}")
    own = step("python -m sut submission --check", lambda: sut("submission", "--check",
                                                               str(tree), check=False))
    official = None
    if args.checker:
        official = step("the official checker", lambda: run_checker(Path(args.checker), tree))
    print("\nrehearsal: " + "; ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in took))
    print(f"rehearsal: --check {'found no problem' if own == 0 else 'found problems'}"
          + ("" if official is None else
             f"; the official checker {'passed' if official == 0 else 'failed'} "
             f"({tree.parent / 'official_checker.txt'})"))
    return 0 if own == 0 and official in (None, 0) else 3


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    sys.exit(main())
