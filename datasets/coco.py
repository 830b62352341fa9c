"""Detection sets in COCO format: COCO val2017 and the MLPerf OpenImages subset.

Both keep their ground truth in one COCO-format JSON file (`images`, `annotations`,
`categories`); the QSL index of a sample is its position among the listed images, in the order
of the file's `images` array, as in the reference. Like the reference, every image is listed,
except for coco-1200-pt (the PyTorch SSD-ResNet34, whose loader maps classes), which leaves out
the images without annotations (48 of val2017, hence 4952 samples); the accuracy scripts'
--remove-48-empty-images maps indices the same way.

Unlike the reference (which silently skips a missing image and so renumbers every later
sample), a listed image that does not exist is an error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.imagenet import ImageList, check_listed_files_exist
from harness_base import ConfigError


@dataclass(frozen=True)
class DetectionImageList(ImageList):
    """An ImageList whose `labels` are the COCO image ids, plus what scoring needs."""

    annotations_file: Path
    heights: np.ndarray  # int64, ground-truth image size, used to scale normalised boxes
    widths: np.ndarray


@dataclass(frozen=True)
class CocoLayout:
    """Where a set keeps its annotations and images, relative to --dataset-path."""

    annotations: str  # the default --dataset-list
    images: str  # folder that `file_name` is relative to
    keep_empty: bool = True  # list images without annotations (all but coco-1200-pt do)


COCO_VAL2017 = CocoLayout("annotations/instances_val2017.json", "val2017")
OPENIMAGES_MLPERF = CocoLayout("annotations/openimages-mlperf.json", "validation/data")


def load_annotations(path: Path) -> dict:
    """Read a COCO-format file; every problem is a ConfigError that names the file."""
    if not path.is_file():
        raise ConfigError(f"annotations file {path} not found. Give --dataset-list (the COCO-"
                          "format JSON), or put it where the dataset keeps it under "
                          "--dataset-path.")
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError) as error:
        raise ConfigError(f"annotations file {path} is not readable JSON ({error}).") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(content, dict) or not isinstance(content.get(key), list):
            raise ConfigError(f"annotations file {path} has no '{key}' list: is it a COCO-format "
                              "instances file?")
    for number, image in enumerate(content["images"]):
        if not (isinstance(image, dict) and all(key in image for key in _IMAGE_KEYS)):
            raise ConfigError(f"annotations file {path}: images[{number}] lacks one of "
                              f"{list(_IMAGE_KEYS)}: is it a COCO-format instances file?")
        if not _is_whole(image["id"]):
            raise ConfigError(f"annotations file {path}: images[{number}] has id "
                              f"{image['id']!r}; COCO image ids are whole numbers.")
    # Checked now, before the run: pycocotools would fail on these after the whole run.
    for number, annotation in enumerate(content["annotations"]):
        box = annotation.get("bbox") if isinstance(annotation, dict) else None
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
                or not _is_whole(annotation.get("image_id"))):
            raise ConfigError(f"annotations file {path}: annotations[{number}] needs an "
                              "'image_id' (a whole number) and a 'bbox' of 4 numbers [x, y, "
                              f"width, height]; it has {str(annotation)[:120]}.")
    return content


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_IMAGE_KEYS = ("id", "file_name", "width", "height")


def non_empty_image_ids(content: dict) -> set[int]:
    return {annotation["image_id"] for annotation in content["annotations"]}


def listed_images(content: dict, keep_empty: bool) -> list[dict]:
    """The `images` entries that become samples, in file order."""
    if keep_empty:
        return list(content["images"])
    annotated = non_empty_image_ids(content)
    return [image for image in content["images"] if image["id"] in annotated]


def read_coco(dataset_path: str | Path, list_path: str | Path | None = None,
              count: int | None = None, check_files: bool = True, *,
              layout: CocoLayout = COCO_VAL2017) -> DetectionImageList:
    root = Path(dataset_path)
    if not root.is_dir():
        raise ConfigError(f"--dataset-path {root}: no such folder. Point it at the folder that "
                          f"holds {layout.annotations} and {layout.images}/.")
    annotations_file = Path(list_path) if list_path else root / layout.annotations
    content = load_annotations(annotations_file)
    images = listed_images(content, layout.keep_empty)
    if count:
        images = images[:count]
    if not images:
        raise ConfigError(f"{annotations_file} lists no images"
                          + ("" if layout.keep_empty else " with annotations") + ".")
    files = tuple(str(Path(layout.images) / image["file_name"]) for image in images)
    if check_files:
        check_listed_files_exist(root, files, annotations_file)
    return DetectionImageList(
        root=root, files=files,
        labels=np.asarray([image["id"] for image in images], dtype=np.int64),
        annotations_file=annotations_file,
        heights=np.asarray([image["height"] for image in images], dtype=np.int64),
        widths=np.asarray([image["width"] for image in images], dtype=np.int64))
