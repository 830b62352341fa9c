"""Resize every COCO image to one size and scale its annotations to match (the reference's flags).

    python scripts/upscale_coco.py --inputs /data/coco --outputs /data/coco-1200 \
        --size 1200 1200 --format png

Reads  <inputs>/<annotations>   (default annotations/instances_val2017.json)
       <inputs>/<images>/...    (default val2017/)
Writes <outputs>/<images>/<name>.<format>   every image, W x H, 3 channels (BGR as cv2 writes it)
       <outputs>/<annotations>             the same JSON with, per image, width = W, height = H and
                                           the new extension, and per annotation bbox [x, y, w, h],
                                           area and segmentation scaled by sx = W / width and
                                           sy = H / height. Ids, categories and other keys are kept.

Like the reference tool: cv2, INTER_LINEAR, the aspect ratio is not kept (each axis has its own
factor), area is scaled by sx * sy. Unlike it: polygons are scaled and RLE masks (crowd
annotations) are resized with nearest-neighbour, so segmentations stay in the image's frame; EXIF
orientation is ignored, because COCO's boxes are drawn on the stored pixels; and every input is
checked before any image is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

FORMATS = ("png", "jpg")
# COCO's boxes and sizes are in the stored pixel frame, so EXIF rotation must not be applied;
# IMREAD_COLOR gives 3 channels for grayscale, CMYK and RGBA inputs alike.
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class UpscaleError(Exception):
    """Bad input: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Job:
    """One image to resize: where it is, where it goes, and the size the annotations claim."""

    source: Path
    target: Path
    width: int
    height: int


def load_annotations(path: Path) -> dict:
    """The COCO JSON at `path`, checked to have the keys this tool reads."""
    if not path.is_file():
        raise UpscaleError(f"annotations file not found: {path} (give --inputs and "
                           f"--annotations so that <inputs>/<annotations> is the COCO JSON)")
    try:
        with open(path) as f:
            dataset = json.load(f)
    except json.JSONDecodeError as e:
        raise UpscaleError(f"annotations file {path} is not valid JSON: {e}") from e
    for key in ("images", "annotations"):
        if not isinstance(dataset.get(key), list):
            raise UpscaleError(f"annotations file {path} has no '{key}' list; is it a COCO "
                               f"instances file?")
    return dataset


def check_dataset(dataset: dict, image_dir: Path, annotations_path: Path) -> None:
    """Every image entry names a file that exists and a positive size; every annotation names
    an image entry. Raises UpscaleError naming the first problems found, before any work."""
    ids = set()
    missing = []
    for image in dataset["images"]:
        ids.add(image["id"])
        if not (isinstance(image.get("width"), int) and isinstance(image.get("height"), int)
                and image["width"] > 0 and image["height"] > 0):
            raise UpscaleError(f"image {image.get('file_name')!r} in {annotations_path} has no "
                               f"positive integer width/height: {image.get('width')!r} x "
                               f"{image.get('height')!r}")
        if not (image_dir / image["file_name"]).is_file():
            missing.append(str(image_dir / image["file_name"]))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise UpscaleError(f"{len(missing)} image(s) named in {annotations_path} not found: "
                           f"{shown}")
    orphans = sorted({a["image_id"] for a in dataset["annotations"]} - ids, key=str)
    if orphans:
        raise UpscaleError(f"{annotations_path} has annotations for image id(s) "
                           f"{orphans[:5]} that are not in its 'images' list")


def new_file_name(file_name: str, fmt: str) -> str:
    """`file_name` with its extension replaced by `fmt` (any extension length)."""
    return f"{os.path.splitext(file_name)[0]}.{fmt}"


def scale_segmentation(segmentation, sx: float, sy: float, size: tuple[int, int]):
    """A COCO segmentation in the resized frame: polygons scaled per axis, RLE masks resized
    with nearest-neighbour and returned as compressed RLE of `size` (W, H)."""
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        return [[v * (sx if i % 2 == 0 else sy) for i, v in enumerate(polygon)]
                for polygon in segmentation]
    from pycocotools import mask as mask_utils

    height, width = segmentation["size"]
    rle = segmentation
    if isinstance(rle["counts"], list):  # uncompressed RLE, as crowd annotations store it
        rle = mask_utils.frPyObjects(rle, height, width)
    mask = mask_utils.decode(rle)
    resized = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    encoded = mask_utils.encode(np.asfortranarray(resized))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def scale_annotations(dataset: dict, size: tuple[int, int], fmt: str) -> dict:
    """A new COCO dict for images resized to `size` (W, H); `dataset` is not changed."""
    width, height = size
    factors = {image["id"]: (width / image["width"], height / image["height"])
               for image in dataset["images"]}
    images = [{**image, "file_name": new_file_name(image["file_name"], fmt),
               "width": width, "height": height} for image in dataset["images"]]
    annotations = []
    for ann in dataset["annotations"]:
        sx, sy = factors[ann["image_id"]]
        new = dict(ann)
        if "bbox" in ann:
            x, y, w, h = ann["bbox"]
            new["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        if "area" in ann:
            new["area"] = ann["area"] * sx * sy
        if ann.get("segmentation"):
            new["segmentation"] = scale_segmentation(ann["segmentation"], sx, sy, size)
        annotations.append(new)
    return {**dataset, "images": images, "annotations": annotations}


def resize_one(job: Job, size: tuple[int, int]) -> None:
    """Read, check, resize and write one image. Raises UpscaleError naming the file."""
    image = cv2.imread(str(job.source), READ_FLAGS)
    if image is None:
        raise UpscaleError(f"cannot decode image {job.source}")
    if image.shape[:2] != (job.height, job.width):
        raise UpscaleError(f"image {job.source} is {image.shape[1]} x {image.shape[0]} but the "
                           f"annotations say {job.width} x {job.height}; its boxes would be "
                           f"scaled wrongly")
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if not cv2.imwrite(str(job.target), resized):
        raise UpscaleError(f"cannot write {job.target}")


def resize_all(jobs: list[Job], size: tuple[int, int], threads: int) -> None:
    """Resize every job on `threads` threads (cv2 releases the GIL); stops at the first error."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(resize_one, job, size) for job in jobs]
        try:
            for future in tqdm(futures, desc="Resizing images", unit="img"):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


MAX_SIDE = 16384


def upscale_coco(inputs: Path, outputs: Path, images: str, annotations: str,
                 size: tuple[int, int], fmt: str, threads: int = 1) -> Path:
    """The whole tool; returns the path of the annotations file written."""
    if fmt not in FORMATS:
        raise UpscaleError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if len(size) != 2 or min(size) <= 0:
        raise UpscaleError(f"--size takes two positive integers W H, got {list(size)}")
    if max(size) > MAX_SIDE:
        raise UpscaleError(f"--size {size[0]} {size[1]}: at most {MAX_SIDE} pixels a side (an "
                           "image that size takes gigabytes; MLPerf's largest is 1200 1200)")
    if inputs.resolve() == outputs.resolve():
        raise UpscaleError(f"--outputs {outputs} is the input folder; choose another folder so "
                           f"the originals are not overwritten")
    annotations_in = inputs / annotations
    image_in = inputs / images
    dataset = load_annotations(annotations_in)
    check_dataset(dataset, image_in, annotations_in)
    size = (int(size[0]), int(size[1]))
    scaled = scale_annotations(dataset, size, fmt)

    image_out = outputs / images
    jobs = [Job(image_in / old["file_name"], image_out / new["file_name"],
                old["width"], old["height"])
            for old, new in zip(dataset["images"], scaled["images"])]
    for job in jobs:
        job.target.parent.mkdir(parents=True, exist_ok=True)
    resize_all(jobs, size, max(1, threads))

    annotations_out = outputs / annotations
    annotations_out.parent.mkdir(parents=True, exist_ok=True)
    partial = annotations_out.with_name(annotations_out.name + ".part")
    with open(partial, "w") as f:
        json.dump(scaled, f)
    os.replace(partial, annotations_out)
    return annotations_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", "-i", required=True, type=Path,
                        help="input COCO folder (holds the images and annotations folders)")
    parser.add_argument("--outputs", "-o", required=True, type=Path,
                        help="output folder for the resized copy")
    parser.add_argument("--images", "-im", default="val2017",
                        help="image folder, relative to --inputs (default: val2017)")
    parser.add_argument("--annotations", "-a", default="annotations/instances_val2017.json",
                        help="annotations file, relative to --inputs "
                             "(default: annotations/instances_val2017.json)")
    parser.add_argument("--size", required=True, type=int, nargs=2, metavar=("W", "H"),
                        help="output image width and height in pixels, e.g. 1200 1200")
    parser.add_argument("--format", "-f", default="jpg", choices=FORMATS,
                        help="output image format (default: jpg)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="images resized at once (default: the number of CPUs)")
    args = parser.parse_args(argv)
    try:
        written = upscale_coco(args.inputs, args.outputs, args.images, args.annotations,
                               tuple(args.size), args.format, args.threads)
    except UpscaleError as e:
        print(f"upscale_coco: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output path that is a file, a read-only folder, a full disk
        print(f"upscale_coco: error: {e.filename or args.outputs}: {e.strerror or e}. Give "
              "--outputs a folder that can be written.", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
