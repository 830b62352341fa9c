"""Write val_map.txt for an ImageNet 2012 validation folder (ImageNet cannot be downloaded).

    python scripts/imagenet_val_map.py --images /data/imagenet/val --devkit ILSVRC2012_devkit_t12
    python scripts/imagenet_val_map.py --images /data/imagenet/val --caffe-val-txt val.txt

Labels are the MLPerf (caffe) class numbers 0..999: the position of the image's WordNet id
among the 1,000 sorted ids. From the devkit they come from data/meta.mat (ILSVRC2012_ID ->
WNID; reading it needs scipy) and data/ILSVRC2012_validation_ground_truth.txt (one ILSVRC2012_ID
per image, in image order); CK's aux package ships the same labels as caffe's val.txt. The
folder must hold exactly the labelled images (ILSVRC2012_val_00000001.JPEG ...); --subset takes
a folder of some of them (CK's imagenet-2012-val-min). A count or name mismatch is refused.
Writes <images>/val_map.txt (the list `python -m sut --dataset-path <images>` reads).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

IMAGE_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
CLASSES = 1000


class MapError(Exception):
    """Bad input: the message names the file and the fix."""


def devkit_labels(devkit: Path) -> list[int]:
    """Caffe label of validation image 1, 2, ... from the devkit's ground truth and meta.mat."""
    data = devkit / "data" if (devkit / "data").is_dir() else devkit
    truth, meta = data / "ILSVRC2012_validation_ground_truth.txt", data / "meta.mat"
    for path in (truth, meta):
        if not path.is_file():
            raise MapError(f"{path} not found: --devkit names the unpacked ILSVRC2012_devkit_t12 "
                           "folder (its data/ holds the ground truth and meta.mat)")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise MapError("reading the devkit's meta.mat needs scipy: pip install -e "
                       "\".[imagenet-devkit]\" (or give --caffe-val-txt)") from None
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        wnid_of = {int(row["ILSVRC2012_ID"]): str(row["WNID"]) for row in synsets
                   if int(row["num_children"]) == 0 and int(row["ILSVRC2012_ID"]) <= CLASSES}
    except (KeyError, ValueError, TypeError, NotImplementedError) as error:
        raise MapError(f"{meta}: not the devkit's meta.mat ({error})") from None
    if sorted(wnid_of) != list(range(1, CLASSES + 1)):
        raise MapError(f"{meta}: {len(wnid_of)} leaf classes with ids 1..{CLASSES} "
                       f"(expected {CLASSES}): not the ILSVRC2012 devkit's meta.mat")
    caffe = {wnid: label for label, wnid in enumerate(sorted(wnid_of.values()))}
    labels = []
    for number, line in enumerate(truth.read_text(encoding="utf-8").split(), start=1):
        if not line.isdigit() or int(line) not in wnid_of:
            raise MapError(f"{truth}:{number}: {line!r} is no ILSVRC2012_ID 1..{CLASSES}")
        labels.append(caffe[wnid_of[int(line)]])
    return labels


def caffe_labels(val_txt: Path) -> dict[str, int]:
    """name -> label from caffe's val.txt ('ILSVRC2012_val_00000001.JPEG 65' per line)."""
    if not val_txt.is_file():
        raise MapError(f"--caffe-val-txt {val_txt}: no such file")
    labels: dict[str, int] = {}
    for number, line in enumerate(val_txt.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not IMAGE_NAME.match(parts[0]) or not parts[1].isdigit() \
                or int(parts[1]) >= CLASSES:
            raise MapError(f"{val_txt}:{number}: expected 'ILSVRC2012_val_NNNNNNNN.JPEG "
                           f"<label 0..{CLASSES - 1}>', got {line.strip()[:80]!r}")
        if parts[0] in labels:
            raise MapError(f"{val_txt}:{number}: {parts[0]} is listed twice")
        labels[parts[0]] = int(parts[1])
    return labels


def build_map(images: Path, labels: dict[str, int], subset: bool) -> list[tuple[str, int]]:
    if not images.is_dir():
        raise MapError(f"--images {images}: no such folder (the unpacked validation images)")
    present = sorted(path.name for path in images.iterdir()
                     if path.suffix.upper() == ".JPEG" or IMAGE_NAME.match(path.name))
    strange = [name for name in present if not IMAGE_NAME.match(name)]
    if strange:
        raise MapError(f"{images}: {len(strange)} file(s) not named ILSVRC2012_val_NNNNNNNN.JPEG,"
                       f" e.g. {strange[:3]}: is it the ILSVRC2012 validation folder?")
    unlabelled = [name for name in present if name not in labels]
    if unlabelled:
        raise MapError(f"{images}: {len(unlabelled)} image(s) have no label, e.g. "
                       f"{unlabelled[:3]}: the labels are of another set")
    if not subset and len(present) != len(labels):
        missing = sorted(set(labels) - set(present))
        raise MapError(f"{images} holds {len(present):,} images, the labels list "
                       f"{len(labels):,} (missing e.g. {missing[:3]}). Copy the whole set, or "
                       "give --subset for a folder of some of them.")
    if not present:
        raise MapError(f"{images}: no ILSVRC2012_val_*.JPEG images in it")
    return [(name, labels[name]) for name in present]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="the validation images folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--devkit", help="the unpacked ILSVRC2012_devkit_t12 folder")
    source.add_argument("--caffe-val-txt", help="caffe's val.txt (CK's aux package has it)")
    parser.add_argument("--subset", action="store_true",
                        help="the folder holds only some of the labelled images")
    parser.add_argument("--output", help="default: <images>/val_map.txt")
    args = parser.parse_args(argv)
    images = Path(args.images)
    output = Path(args.output) if args.output else images / "val_map.txt"
    try:
        if args.devkit:
            labels = {f"ILSVRC2012_val_{number:08d}.JPEG": label
                      for number, label in enumerate(devkit_labels(Path(args.devkit)), 1)}
        else:
            labels = caffe_labels(Path(args.caffe_val_txt))
        rows = build_map(images, labels, args.subset)
    except MapError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    part = output.with_name(output.name + ".part")
    part.write_text("".join(f"{name} {label}\n" for name, label in rows), encoding="utf-8")
    part.replace(output)
    print(f"{output}: {len(rows):,} images, labels 0..{CLASSES - 1} (MLPerf's caffe order)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
