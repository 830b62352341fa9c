"""Download the MLPerf OpenImages validation subset and write its COCO-format annotations.

    python scripts/download_openimages.py -d /data/open-images-v6-mlperf            # all images
    python scripts/download_openimages.py -d /data/openimages-small -m 100          # first 100

Writes (the layout the reference's tools/openimages_mlperf.sh makes):

    <dataset-dir>/annotations/validation-annotations-bbox.csv    OpenImages V6 validation boxes
    <dataset-dir>/annotations/class-descriptions-boxable.csv     LabelName -> DisplayName
    <dataset-dir>/annotations/openimages-mlperf.json             COCO format, see build_coco()
    <dataset-dir>/validation/data/<ImageID>.jpg                  the images

The subset is every validation image with at least one box of the 264 MLPerf RetinaNet classes
(MLPERF_CLASSES); only boxes of those classes are kept. --max-images N keeps the first N such
ImageIDs in sorted order (the reference draws N at random with seed 42 instead). Files already
present are not downloaded again, so an interrupted run resumes where it stopped, and a folder
copied from elsewhere with the CSVs and images in place converts without any network.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

# The 264 class names of the MLPerf RetinaNet subset, in category-id order 0..263. Source:
# MLPERF_CLASSES in mlcommons/inference vision/classification_and_detection/tools/
# openimages_mlperf.sh (the same list is in mlcommons/training's single_stage_detector scripts).
MLPERF_CLASSES = (
    "Airplane", "Antelope", "Apple", "Backpack", "Balloon", "Banana", "Barrel", "Baseball bat",
    "Baseball glove", "Bee", "Beer", "Bench", "Bicycle", "Bicycle helmet", "Bicycle wheel",
    "Billboard", "Book", "Bookcase", "Boot", "Bottle", "Bowl", "Bowling equipment", "Box", "Boy",
    "Brassiere", "Bread", "Broccoli", "Bronze sculpture", "Bull", "Bus", "Bust", "Butterfly",
    "Cabinetry", "Cake", "Camel", "Camera", "Candle", "Candy", "Cannon", "Canoe", "Carrot", "Cart",
    "Castle", "Cat", "Cattle", "Cello", "Chair", "Cheese", "Chest of drawers", "Chicken",
    "Christmas tree", "Coat", "Cocktail", "Coffee", "Coffee cup", "Coffee table", "Coin",
    "Common sunflower", "Computer keyboard", "Computer monitor", "Convenience store", "Cookie",
    "Countertop", "Cowboy hat", "Crab", "Crocodile", "Cucumber", "Cupboard", "Curtain", "Deer",
    "Desk", "Dinosaur", "Dog", "Doll", "Dolphin", "Door", "Dragonfly", "Drawer", "Dress", "Drum",
    "Duck", "Eagle", "Earrings", "Egg (Food)", "Elephant", "Falcon", "Fedora", "Flag", "Flowerpot",
    "Football", "Football helmet", "Fork", "Fountain", "French fries", "French horn", "Frog",
    "Giraffe", "Girl", "Glasses", "Goat", "Goggles", "Goldfish", "Gondola", "Goose", "Grape",
    "Grapefruit", "Guitar", "Hamburger", "Handbag", "Harbor seal", "Headphones", "Helicopter",
    "High heels", "Hiking equipment", "Horse", "House", "Houseplant", "Human arm", "Human beard",
    "Human body", "Human ear", "Human eye", "Human face", "Human foot", "Human hair", "Human hand",
    "Human head", "Human leg", "Human mouth", "Human nose", "Ice cream", "Jacket", "Jeans",
    "Jellyfish", "Juice", "Kitchen & dining room table", "Kite", "Lamp", "Lantern", "Laptop",
    "Lavender (Plant)", "Lemon", "Light bulb", "Lighthouse", "Lily", "Lion", "Lipstick", "Lizard",
    "Man", "Maple", "Microphone", "Mirror", "Mixing bowl", "Mobile phone", "Monkey", "Motorcycle",
    "Muffin", "Mug", "Mule", "Mushroom", "Musical keyboard", "Necklace", "Nightstand",
    "Office building", "Orange", "Owl", "Oyster", "Paddle", "Palm tree", "Parachute", "Parrot",
    "Pen", "Penguin", "Personal flotation device", "Piano", "Picture frame", "Pig", "Pillow",
    "Pizza", "Plate", "Platter", "Porch", "Poster", "Pumpkin", "Rabbit", "Rifle", "Roller skates",
    "Rose", "Salad", "Sandal", "Saucer", "Saxophone", "Scarf", "Sea lion", "Sea turtle", "Sheep",
    "Shelf", "Shirt", "Shorts", "Shrimp", "Sink", "Skateboard", "Ski", "Skull", "Skyscraper",
    "Snake", "Sock", "Sofa bed", "Sparrow", "Spider", "Spoon", "Sports uniform", "Squirrel",
    "Stairs", "Stool", "Strawberry", "Street light", "Studio couch", "Suit", "Sun hat",
    "Sunglasses", "Surfboard", "Sushi", "Swan", "Swimming pool", "Swimwear", "Tank", "Tap", "Taxi",
    "Tea", "Teddy bear", "Television", "Tent", "Tie", "Tiger", "Tin can", "Tire", "Toilet",
    "Tomato", "Tortoise", "Tower", "Traffic light", "Train", "Tripod", "Truck", "Trumpet",
    "Umbrella", "Van", "Vase", "Vehicle registration plate", "Violin", "Wall clock",
    "Waste container", "Watch", "Whale", "Wheel", "Wheelchair", "Whiteboard", "Window", "Wine",
    "Wine glass", "Woman", "Zebra", "Zucchini",
)


# OpenImages V6 validation boxes and class names (V6 reuses the V5 validation files), and the
# CVDF mirror of the images: the URLs the reference's tools/openimages.py fetches (it reaches the
# same bucket through boto3; plain HTTPS needs no extra dependency).
CSV_BASE_URL = "https://storage.googleapis.com/openimages/"
IMAGE_BASE_URL = "https://s3.amazonaws.com/open-images-dataset/"
BOXES_CSV = "validation-annotations-bbox.csv"
CLASSES_CSV = "class-descriptions-boxable.csv"
CSV_PATHS = {BOXES_CSV: "v5/validation-annotations-bbox.csv",  # file name -> path under the base
             CLASSES_CSV: "v5/class-descriptions-boxable.csv"}
IMAGE_PATH = "validation/{image_id}.jpg"  # under IMAGE_BASE_URL
OUTPUT_JSON = "openimages-mlperf.json"
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
               "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
CHUNK_BYTES = 1 << 16


class DatasetError(Exception):
    """Bad or missing input: the message names the file or value and the fix."""


class Unreachable(Exception):
    """A URL could not be reached at all (no network, DNS failure, refused, timed out)."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"cannot reach {url} ({reason})")
        self.url = url


@dataclass(frozen=True)
class Box:
    """One row of the boxes CSV, of an MLPerf class; coordinates normalised to 0..1."""

    image_id: str
    category_id: int
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    is_occluded: int
    is_truncated: int
    is_group_of: int
    is_depiction: int
    is_inside: int


# ---- conversion: pure functions over local files ------------------------------------------------

def read_class_descriptions(path: Path) -> list[tuple[str, str]]:
    """(LabelName, DisplayName) rows of class-descriptions-boxable.csv (it has no header)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [tuple(row[:2]) for row in csv.reader(f) if row]
    if rows and rows[0] == ("LabelName", "DisplayName"):
        rows = rows[1:]
    if not rows or any(len(row) != 2 for row in rows):
        raise DatasetError(f"{path} is not a class-descriptions CSV (LabelName,DisplayName rows)")
    return rows


def label_categories(descriptions: Iterable[tuple[str, str]],
                     classes: Sequence[str]) -> dict[str, int]:
    """LabelName -> category id, where a class's id is its position in `classes`."""
    by_name: dict[str, list[str]] = {}
    for label, name in descriptions:
        by_name.setdefault(name, []).append(label)
    doubles = sorted(name for name, count in Counter(classes).items() if count > 1)
    if doubles:
        raise DatasetError(f"class names given more than once: {doubles}")
    unknown = [name for name in classes if name not in by_name]
    if unknown:
        raise DatasetError(f"{len(unknown)} class name(s) not in the OpenImages class "
                           f"descriptions: {unknown[:10]}; names are case-sensitive "
                           f"DisplayNames such as 'Human face'")
    ambiguous = [name for name in classes if len(by_name[name]) > 1]
    if ambiguous:
        raise DatasetError(f"class name(s) {ambiguous} match more than one LabelName")
    return {by_name[name][0]: category_id for category_id, name in enumerate(classes)}


def read_boxes(path: Path, categories: dict[str, int]) -> list[Box]:
    """The rows of the boxes CSV whose LabelName is in `categories`, in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks the column(s) {missing}; is it "
                               f"{BOXES_CSV}?")
        boxes = []
        for line, row in enumerate(reader, start=2):
            category_id = categories.get(row["LabelName"])
            if category_id is None:
                continue
            try:
                boxes.append(Box(row["ImageID"], category_id,
                                 float(row["XMin"]), float(row["XMax"]),
                                 float(row["YMin"]), float(row["YMax"]),
                                 int(row["IsOccluded"]), int(row["IsTruncated"]),
                                 int(row["IsGroupOf"]), int(row["IsDepiction"]),
                                 int(row["IsInside"])))
            except ValueError as e:
                raise DatasetError(f"{path} line {line}: {e}") from e
    return boxes


def select_image_ids(boxes: Iterable[Box], max_images: int | None = None) -> list[str]:
    """The sorted ImageIDs that have boxes; with `max_images`, the first that many."""
    image_ids = sorted({box.image_id for box in boxes})
    return image_ids if max_images is None else image_ids[:max_images]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as cv2.imread decodes it (EXIF orientation applied), the
    size the reference's conversion records and the SUT's pre-processing sees."""
    image = cv2.imread(str(path))
    if image is None:
        raise DatasetError(f"cannot decode image {path}; delete it and run again to download it "
                           f"afresh")
    return image.shape[1], image.shape[0]


def build_coco(boxes: Iterable[Box], classes: Sequence[str],
               sizes: dict[str, tuple[int, int]]) -> dict:
    """COCO dict of the images in `sizes` (ImageID -> (width, height) in pixels).

    Images are sorted by ImageID with ids 1..N; their boxes follow in that order (CSV order within
    an image) with ids 1..M; boxes of other images are left out. bbox is [x, y, w, h] in pixels
    (XMin * width, YMin * height, (XMax - XMin) * width, (YMax - YMin) * height), area = w * h,
    iscrowd = IsGroupOf; categories are 0..len(classes)-1 in the order of `classes`.
    """
    image_ids = sorted(sizes)
    number = {image_id: n for n, image_id in enumerate(image_ids, start=1)}
    images = [{"id": number[image_id], "file_name": f"{image_id}.jpg",
               "height": sizes[image_id][1], "width": sizes[image_id][0],
               "license": None, "coco_url": None} for image_id in image_ids]
    kept = sorted((box for box in boxes if box.image_id in number),
                  key=lambda box: number[box.image_id])  # stable: CSV order within an image
    annotations = []
    for ann_id, box in enumerate(kept, start=1):
        width, height = sizes[box.image_id]
        bbox = [box.x_min * width, box.y_min * height,
                (box.x_max - box.x_min) * width, (box.y_max - box.y_min) * height]
        annotations.append({
            "id": ann_id, "image_id": number[box.image_id], "category_id": box.category_id,
            "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": box.is_group_of,
            "IsOccluded": box.is_occluded, "IsInside": box.is_inside,
            "IsDepiction": box.is_depiction, "IsTruncated": box.is_truncated,
            "IsGroupOf": box.is_group_of})
    categories = [{"id": i, "name": name, "supercategory": None}
                  for i, name in enumerate(classes)]
    return {"info": {"dataset": "openimages_mlperf", "version": "v6"}, "licenses": [],
            "categories": categories, "images": images, "annotations": annotations}


def read_sizes(image_dir: Path, image_ids: Sequence[str], threads: int = 1,
               progress: bool = False) -> dict[str, tuple[int, int]]:
    """ImageID -> (width, height) of validation/data/<ImageID>.jpg, read on `threads` threads."""
    missing = [i for i in image_ids if not (image_dir / f"{i}.jpg").is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) not in {image_dir}, e.g. {missing[:3]}; "
                           f"run this tool again to download them")
    paths = [image_dir / f"{i}.jpg" for i in image_ids]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        found = pool.map(image_size, paths)
        sizes = list(tqdm(found, total=len(paths), desc="Reading image sizes", unit="img",
                          disable=not progress))
    return dict(zip(image_ids, sizes))


def subset(dataset_dir: Path, classes: Sequence[str],
           max_images: int | None = None) -> tuple[list[Box], list[str]]:
    """The MLPerf-class boxes in <dataset-dir>/annotations/ and the ImageIDs chosen from them."""
    annotations = dataset_dir / "annotations"
    for name in (CLASSES_CSV, BOXES_CSV):
        if not (annotations / name).is_file():
            raise DatasetError(f"{annotations / name} not found; run this tool with internet "
                               f"access to download it")
    categories = label_categories(read_class_descriptions(annotations / CLASSES_CSV), classes)
    boxes = read_boxes(annotations / BOXES_CSV, categories)
    image_ids = select_image_ids(boxes, max_images)
    if not image_ids:
        raise DatasetError(f"no image in {annotations / BOXES_CSV} has a box of the classes "
                           f"asked for")
    return boxes, image_ids


def convert(dataset_dir: Path, classes: Sequence[str], max_images: int | None = None,
            threads: int = 1, progress: bool = False) -> dict:
    """The COCO dict for <dataset-dir>, from its CSVs and images alone (no network)."""
    boxes, image_ids = subset(dataset_dir, classes, max_images)
    sizes = read_sizes(dataset_dir / "validation" / "data", image_ids, threads, progress)
    return build_coco(boxes, classes, sizes)


def write_json(data: dict, path: Path) -> None:
    """Write `data` to `path` through a temporary file, so a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "w") as f:
        json.dump(data, f)
    os.replace(partial, path)


# ---- download -----------------------------------------------------------------------------------

def fetch(url: str, target: Path, timeout_s: float) -> None:
    """Download `url` to `target` through a temporary file. Raises Unreachable when the host
    cannot be reached at all, DatasetError when it answers with an error."""
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, \
                open(partial, "wb") as f:
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
    except urllib.error.HTTPError as e:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"{url} answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        partial.unlink(missing_ok=True)
        raise Unreachable(url, getattr(e, "reason", e)) from e
    except http.client.HTTPException as e:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"the download of {url} broke off ({e!r}); run again") from e
    os.replace(partial, target)


def offline_message(error: Unreachable) -> str:
    return (f"{error}.\n"
            f"download_openimages.py needs internet access: the annotation CSVs come from "
            f"{CSV_BASE_URL} and the images from {IMAGE_BASE_URL} (or the --csv-base-url / "
            f"--image-base-url given).\n"
            f"Without it, use a copy downloaded elsewhere: point the SUT's --dataset-path at a "
            f"folder holding annotations/{OUTPUT_JSON} and validation/data/<ImageID>.jpg, or put "
            f"annotations/{BOXES_CSV}, annotations/{CLASSES_CSV} and the images in place and run "
            f"this tool again: it downloads only what is missing.")


def download_csvs(annotations: Path, base_url: str, timeout_s: float) -> None:
    for name, url_path in CSV_PATHS.items():
        if not (annotations / name).is_file():
            print(f"Downloading {base_url}{url_path}")
            fetch(base_url + url_path, annotations / name, timeout_s)


def download_images(image_dir: Path, image_ids: Sequence[str], base_url: str, timeout_s: float,
                    threads: int) -> None:
    """Download the images not yet in `image_dir`: the first alone, so that an unreachable host
    fails at once, then the rest on `threads` threads. Raises DatasetError listing failures."""
    wanted = [i for i in image_ids if not (image_dir / f"{i}.jpg").is_file()]
    if not wanted:
        return

    def one(image_id: str) -> str | None:
        try:
            fetch(base_url + IMAGE_PATH.format(image_id=image_id), image_dir / f"{image_id}.jpg",
                  timeout_s)
        except (DatasetError, Unreachable) as e:
            return str(e)
        return None

    with tqdm(total=len(wanted), desc="Downloading images", unit="img") as bar:
        fetch(base_url + IMAGE_PATH.format(image_id=wanted[0]),
              image_dir / f"{wanted[0]}.jpg", timeout_s)
        bar.update(1)
        failures = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for error in pool.map(one, wanted[1:]):
                bar.update(1)
                if error:
                    failures.append(error)
    if failures:
        raise DatasetError(f"{len(failures)} of {len(wanted)} image download(s) failed, e.g. "
                           f"{failures[:3]}; run again to retry only those")


def download_openimages(dataset_dir: Path, classes: Sequence[str], max_images: int | None,
                        threads: int, timeout_s: float, csv_base_url: str = CSV_BASE_URL,
                        image_base_url: str = IMAGE_BASE_URL) -> tuple[Path, dict]:
    """The whole tool; returns the path of the COCO JSON written and its contents."""
    annotations = dataset_dir / "annotations"
    image_dir = dataset_dir / "validation" / "data"
    annotations.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    download_csvs(annotations, csv_base_url, timeout_s)
    boxes, image_ids = subset(dataset_dir, classes, max_images)
    download_images(image_dir, image_ids, image_base_url, timeout_s, threads)
    sizes = read_sizes(image_dir, image_ids, threads, progress=True)
    coco = build_coco(boxes, classes, sizes)
    output = annotations / OUTPUT_JSON
    write_json(coco, output)
    return output, coco


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--dataset-dir", "--dataset-path", required=True, type=Path,
                        help="folder to download into (annotations/ and validation/data/)")
    parser.add_argument("-m", "--max-images", type=int, default=None,
                        help="keep only the first N ImageIDs in sorted order (default: all)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help="OpenImages DisplayNames to keep, category ids in this order "
                             "(default: the 264 MLPerf RetinaNet classes)")
    parser.add_argument("--threads", type=int, default=16,
                        help="images downloaded at once (default: 16)")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="seconds to wait on a silent connection (default: 30)")
    parser.add_argument("--csv-base-url", default=CSV_BASE_URL,
                        help=f"where the annotation CSVs are (default: {CSV_BASE_URL})")
    parser.add_argument("--image-base-url", default=IMAGE_BASE_URL,
                        help=f"where validation/<ImageID>.jpg are (default: {IMAGE_BASE_URL})")
    args = parser.parse_args(argv)
    if args.max_images is not None and args.max_images <= 0:
        parser.error(f"--max-images must be positive, got {args.max_images}")
    classes = tuple(args.classes) if args.classes else MLPERF_CLASSES
    try:
        written, coco = download_openimages(args.dataset_dir, classes, args.max_images,
                                            args.threads, args.timeout_s, args.csv_base_url,
                                            args.image_base_url)
    except Unreachable as e:
        raise SystemExit(f"download_openimages: error: {offline_message(e)}") from None
    except DatasetError as e:
        raise SystemExit(f"download_openimages: error: {e}") from None
    print(f"wrote {written}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
          f"{len(coco['categories'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
