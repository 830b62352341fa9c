"""What the harness costs on big detection samples: the null backend against the worker's
unavoidable work (gather the batch, normalise it), side by side in one run.

    python scripts/bench_detection.py                    # coco-1200 (SSD-ResNet34), 64 images
    python scripts/bench_detection.py --profile retinanet-onnxruntime --images 64

Writes a synthetic COCO-format set (random pictures, one box each) under --workdir, then
  1. gather + normalise: a loop over the pre-processed samples, batch by batch, normalising the
     gathered copy in place as the worker does (no Ray);
  2. SUT Offline with the null backend: `python -m sut` on the same set, LoadGen's samples/s;
and prints both and their ratio. No model runs: this isolates the harness.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def write_set(root: Path, images: int, openimages: bool) -> None:
    folder = root / ("validation/data" if openimages else "val2017")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries, boxes = [], []
    for i in range(images):
        picture = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (640, 480))
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), picture)
        entries.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480})
        boxes.append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                      "bbox": [10, 10, 100, 100], "area": 10000.0, "iscrowd": 0})
    name = "openimages-mlperf.json" if openimages else "instances_val2017.json"
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / name).write_text(json.dumps(
        {"images": entries, "annotations": boxes, "categories": [{"id": 1, "name": "one"}]}))


def gather_and_normalize(config, images, batch: int, seconds: float) -> float:
    from datasets.cache import SampleSource, ensure_preprocessed
    from datasets.registry import get_dataset

    spec = get_dataset(config.dataset)
    layout = config.data_format
    folder = ensure_preprocessed(images, spec, layout, config.cache_dir, use_ray=False,
                                 show_progress=False)
    store = SampleSource(folder, images, spec.sample_shape(layout), spec.stored_dtype).read(
        list(range(len(images))))
    starts = range(0, len(images) - batch + 1, batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in starts:
            spec.normalize(store[np.arange(start, start + batch)], layout, reuse=True)
            done += batch
    return done / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="ssd-resnet34-onnxruntime")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-batchsize", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workdir", default="bench_detection")
    parser.add_argument("--address", help="join a running Ray instance (default: start one)")
    args = parser.parse_args(argv)
    if args.images < args.max_batchsize:
        parser.error("--images must be at least --max-batchsize (one whole batch)")
    from datasets.registry import get_dataset
    from sut.cli import resolve

    root = Path(args.workdir).resolve()
    openimages = args.profile.startswith("retinanet")
    # One synthetic set per layout and size: profiles can share --workdir.
    data = root / f"{'openimages' if openimages else 'coco'}-{args.images}"
    if not data.exists():
        write_set(data, args.images, openimages)
    flags = ["--profile", args.profile, "--backend", "null",
             "--dataset-path", str(data), "--cache_dir", str(root), "--max-batchsize",
             str(args.max_batchsize), "--scenario", "Offline"]
    config, images = resolve(flags)
    loop = gather_and_normalize(config, images, args.max_batchsize, args.seconds)
    conf = root / "user.conf"
    # Offline issues target_qps x duration samples: ask for more than the loop sustained, so
    # the query outlasts the minimum duration.
    conf.write_text(f"*.Offline.min_duration = {args.seconds * 1000}\n"
                    "*.Offline.min_query_count = 1\n"
                    f"*.Offline.target_qps = {1.5 * loop:.0f}\n")
    output = root / "sut"
    join = ["--address", args.address] if args.address else []
    done = subprocess.run([sys.executable, "-m", "sut", *flags, *join, "--user_conf", str(conf),
                           "--output", str(output)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"SUT run failed:\n{done.stderr[-3000:]}")
    test = json.loads((output / "results.json").read_text())["tests"][0]
    sut = test["value"]
    stored = np.dtype(get_dataset(config.dataset).stored_dtype).name
    print(f"{config.dataset} ({config.data_format}, {stored} samples), batch "
          f"{args.max_batchsize}, {len(images)} images")
    print(f"gather + normalise loop : {loop:10.1f} samples/s")
    print(f"SUT Offline, null       : {sut:10.1f} samples/s  ({sut / loop:.2f} of the loop, "
          f"{test['result']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
