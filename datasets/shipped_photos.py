"""A real, labelled ImageNet evaluation set from photos an installed package ships.

foolbox carries 20 ImageNet validation photos as `foolbox/data/imagenet_<i>_<label>.jpg`, the
label (0..999) in the file name. They are read where the package installed them (never copied):
this module writes only a `val_map.txt` that lists them, into the caller's folder, and the run
uses the package's data folder as --dataset-path.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from harness_base import ConfigError


_PHOTO = re.compile(r"^imagenet_(\d+)_(\d+)\.jpg$")


def foolbox_photo_folder(extra: str) -> Path:
    """The installed foolbox's data folder, found from its distribution's file list (foolbox
    itself is not imported: it pulls heavy frameworks)."""
    try:
        distribution = metadata.distribution("foolbox")
    except metadata.PackageNotFoundError:
        raise ConfigError(f"the embedded default needs the photos of the 'foolbox' package: "
                          f"pip install -e \".[{extra}]\"") from None
    for entry in distribution.files or []:
        if entry.name.startswith("imagenet_") and entry.parent.name == "data":
            return Path(distribution.locate_file(entry)).parent
    raise ConfigError("the installed foolbox has no data/imagenet_*.jpg photos; reinstall it: "
                      f"pip install --force-reinstall -e \".[{extra}]\"")


def write_photo_list(folder: Path, list_path: Path) -> list[tuple[str, int]]:
    """Write `<file> <label>` for every imagenet_<i>_<label>.jpg in folder, ordered by <i>."""
    photos = []
    for path in folder.iterdir():
        match = _PHOTO.match(path.name)
        if match:
            photos.append((int(match.group(1)), path.name, int(match.group(2))))
    if not photos:
        raise ConfigError(f"no imagenet_<i>_<label>.jpg photos in {folder}")
    photos.sort()
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(f"{name} {label}\n" for _, name, label in photos))
    return [(name, label) for _, name, label in photos]
