"""ImageNet validation listing: `val_map.txt` lines `<relative file> <label 0..999>`.

The QSL index of a sample is its line number in the list (after --count truncation), as in the
reference. Unlike the reference, a listed image that does not exist is an error, not a silent
skip: skipping renumbers every later sample and so scores the wrong labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness_base import ConfigError



@dataclass(frozen=True)
class ImageList:
    """The samples of a dataset, in QSL order."""

    root: Path
    files: tuple[str, ...]  # relative to root, as written in the list
    labels: np.ndarray  # int64, one per file

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]


IMAGENET_CLASSES = 1000  # val_map.txt labels 0..999; 1001-class models offset them themselves


def read_val_map(dataset_path: str | Path, list_path: str | Path | None = None,
                 count: int | None = None, check_files: bool = True) -> ImageList:
    """Read an ImageNet-style list; fail with a clear message on anything malformed."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise ConfigError(f"--dataset-path {root}: no such folder. Point it at the folder that "
                          "holds the images (the ImageNet validation set) and val_map.txt.")
    list_file = Path(list_path) if list_path else root / "val_map.txt"
    if list_file.is_dir():
        raise ConfigError(f"dataset list {list_file} is a folder: --dataset-list names the "
                          "list file itself (val_map.txt, '<file> <label>' per line).")
    if not list_file.is_file():
        raise ConfigError(f"dataset list {list_file} not found. Give --dataset-list, or put a "
                          "val_map.txt ('<file> <label>' per line) into --dataset-path.")
    files: list[str] = []
    labels: list[int] = []
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first name
        with open(list_file, encoding="utf-8-sig") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                parts = re.split(r"\s+", line.strip())
                if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
                    raise ConfigError(f"{list_file}:{line_number}: expected '<file> <label>' "
                                      f"(label 0 or more), got {line.strip()[:80]!r}")
                if int(parts[1]) >= IMAGENET_CLASSES:
                    raise ConfigError(f"{list_file}:{line_number}: label {parts[1][:24]} is not "
                                      f"an ImageNet class (0 to {IMAGENET_CLASSES - 1}): is it "
                                      "the list of another data set?")
                files.append(parts[0])
                labels.append(int(parts[1]))
                if count and len(files) >= count:
                    break
    except UnicodeDecodeError:
        raise ConfigError(f"dataset list {list_file} is not a UTF-8 text file: give "
                          "val_map.txt ('<file> <label>' per line).") from None
    if not files:
        raise ConfigError(f"{list_file} lists no images.")
    if check_files:
        check_listed_files_exist(root, files, list_file)
    return ImageList(root, tuple(files), np.asarray(labels, dtype=np.int64))


def check_listed_files_exist(root: Path, files, list_file: Path) -> None:
    """Every listed image must exist: skipping one would renumber the samples after it."""
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        shown = ", ".join(str(root / name) for name in missing[:3])
        raise ConfigError(f"{list_file} names {len(missing)} image(s) that do not exist "
                          f"(first: {shown}). Fix the list or the --dataset-path, or use "
                          "--count to take only the first ones.")
