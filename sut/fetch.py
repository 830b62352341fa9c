"""`python -m sut fetch NAME ...`: model files and data sets by name, verified.

    python -m sut fetch resnet50-onnxruntime          # the profile's model file
    python -m sut fetch resnet50_v1.onnx              # one file by its name
    python -m sut fetch coco-val2017                  # images and annotations, unpacked
    python -m sut fetch --list                        # every known file, and what is here

Models go to --models-dir (else $MODEL_DIR, else the user's data folder), where a run with
--profile and no --model finds them; data sets to --data-dir (else $DATA_DIR, ...). ImageNet
cannot be downloaded: scripts/imagenet_val_map.py prepares a copy you have.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import zipfile
from pathlib import Path

from harness_base import EXIT_OK, ConfigError, RunFailed, exit_code_of, progress_bar
from sut.downloads import Checksum, Fetched, fetch_file, recorded_checksum
from sut.known_files import (DATA_SETS, MODEL_FILES, DataSet, KnownFile, data_folder,
                             files_for, models_folder)

ARCHIVES = ".archives"  # downloaded archives, under the models or data folder
COMPLETE_MARK = ".fetched"  # written last into an unpacked data set


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sut fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="a profile, a model file name, or a data set (coco-val2017)")
    parser.add_argument("--list", action="store_true", help="every known file and its state")
    parser.add_argument("--models-dir", help="where model files go (default $MODEL_DIR, else "
                                             f"{models_folder(None)})")
    parser.add_argument("--data-dir", help="where data sets go (default $DATA_DIR, else "
                                           f"{data_folder(None)})")
    parser.add_argument("--mirror", help="fetch every file from this base URL by its file name "
                                         "(a mirror inside your network) instead of its origin")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of(lambda: _fetch(args), failed="fetch failed", interrupted=(
        "interrupted: what arrived is kept (.part); run the same fetch again to resume."))


def _fetch(args: argparse.Namespace) -> int:
    if args.list:
        print(listing(models_folder(args.models_dir), data_folder(args.data_dir)))
        return EXIT_OK
    if not args.names:
        raise ConfigError("name what to fetch (a profile such as resnet50-onnxruntime, a "
                          "model file, or coco-val2017), or give --list")
    jobs = [(name, DATA_SETS.get(name) or files_for(name)) for name in args.names]
    for name, what in jobs:
        if isinstance(what, DataSet):
            fetch_data_set(what, data_folder(args.data_dir), args.mirror, not args.no_progress)
        else:
            for row in what:
                fetch_model_file(row, models_folder(args.models_dir), args.mirror,
                                 not args.no_progress)
    return EXIT_OK


def _url(row: KnownFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{row.archive}" if mirror else row.url


def _published(row: KnownFile) -> Checksum | None:
    return Checksum.parse(row.checksum) if row.checksum else None


def fetch_model_file(row: KnownFile, folder: Path, mirror: str | None = None,
                     show_progress: bool = True) -> Path:
    """Download (or find and check) one model file; a member row is taken out of its archive."""
    target = folder / row.file
    if row.member is None:
        fetched = fetch_file(_url(row, mirror), target, _published(row), row.size, show_progress)
        _say(row, fetched)
        return target
    if target.is_file():
        print(f"{row.file}: present in {folder} (taken from {row.archive})", flush=True)
        return target
    archive = fetch_file(_url(row, mirror), folder / ARCHIVES / row.archive, _published(row),
                         row.size, show_progress)
    _say(KnownFile(row.archive, row.url, row.checksum, checksum_source=row.checksum_source),
         archive)
    extract_member(archive.path, row.member, target)
    print(f"{row.file}: taken out of {row.archive} into {folder}", flush=True)
    return target


def fetch_data_set(data: DataSet, folder: Path, mirror: str | None = None,
                   show_progress: bool = True) -> Path:
    """Download and check every archive, unpack them into <folder>/<name>/, check the layout.
    The unpacking happens beside the target and is renamed into place when complete."""
    target = folder / data.name
    if (target / COMPLETE_MARK).is_file():
        print(f"{data.name}: present in {target}", flush=True)
        return target
    if target.exists():
        raise ConfigError(f"{target} exists but is not a finished fetch of {data.name} (no "
                          f"{COMPLETE_MARK}): move it away or delete it, then fetch again.")
    unpacking = folder / f".{data.name}.unpacking"
    shutil.rmtree(unpacking, ignore_errors=True)
    archives = []
    for row in data.archives:
        fetched = fetch_file(_url(row, mirror), folder / ARCHIVES / row.file, _published(row),
                             row.size, show_progress)
        _say(row, fetched)
        archives.append(fetched.path)
    for path in archives:
        unpack(path, unpacking, show_progress)
    missing = [name for name in data.expects if not (unpacking / name).exists()]
    if missing:
        shutil.rmtree(unpacking, ignore_errors=True)
        raise RunFailed(f"{data.name}: the archives unpacked without {missing}; nothing was "
                        "kept. Are they the published files (a --mirror serving others?)")
    (unpacking / COMPLETE_MARK).write_text(
        "".join(f"{row.file} {row.checksum or 'sha256:' + recorded_checksum(path).hex}\n"
                for row, path in zip(data.archives, archives)), encoding="utf-8")
    unpacking.rename(target)
    for path in archives:  # the unpacked set is what runs read; the archives would double it
        path.unlink()
    print(f"{data.name}: unpacked into {target} (archives deleted); {data.profiles_note}",
          flush=True)
    return target


def _say(row: KnownFile, fetched: Fetched) -> None:
    what = "downloaded" if fetched.downloaded else "present"
    if fetched.recorded:
        print(f"{row.file}: {what}, {fetched.path}. No checksum is published for it: its "
              f"SHA-256 {fetched.checksum.hex} is recorded in {fetched.path.name}.sha256 and "
              "later fetches are checked against it.", flush=True)
    elif row.checksum:
        print(f"{row.file}: {what}, {fetched.path}, {fetched.checksum.algorithm} verified "
              f"against the published one ({row.checksum_source}).", flush=True)
    else:
        print(f"{row.file}: {what}, {fetched.path}, SHA-256 matches the one recorded at its "
              "first download.", flush=True)


# ---- archives ------------------------------------------------------------------------------

def _members(archive: Path) -> list[tuple[str, bool]]:
    """(name, is a regular file) of every member; refuses one that would land outside."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            entries = [(info.filename, not info.is_dir()) for info in handle.infolist()]
    else:
        try:
            with tarfile.open(archive) as handle:
                entries = []
                for info in handle.getmembers():
                    if not (info.isfile() or info.isdir()):
                        raise RunFailed(f"{archive}: member {info.name!r} is a link or device; "
                                        "refused (not a published archive?)")
                    entries.append((info.name, info.isfile()))
        except tarfile.TarError as error:
            raise RunFailed(f"{archive}: not a zip or tar archive ({error})") from None
    for name, _ in entries:
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts:
            raise RunFailed(f"{archive}: member {name!r} would be written outside the folder; "
                            "refused (not a published archive?)")
    return entries


def extract_member(archive: Path, base_name: str, target: Path) -> None:
    """Take the one member called base_name (at any depth) out of the archive as target."""
    matches = [name for name, is_file in _members(archive)
               if is_file and Path(name).name == base_name]
    if len(matches) != 1:
        raise RunFailed(f"{archive}: {len(matches)} members named {base_name} (expected one)")
    part = target.with_name(target.name + ".part")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle, handle.open(matches[0]) as source, \
                open(part, "wb") as out:
            shutil.copyfileobj(source, out)
    else:
        with tarfile.open(archive) as handle, open(part, "wb") as out:
            shutil.copyfileobj(handle.extractfile(matches[0]), out)
    part.replace(target)


def unpack(archive: Path, folder: Path, show_progress: bool = True) -> None:
    entries = _members(archive)
    folder.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(entries), f"unpacking {archive.name}", "file", show_progress) as bar:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                for name, _ in entries:
                    handle.extract(name, folder)
                    bar.update(1)
        else:
            with tarfile.open(archive) as handle:
                for info in handle.getmembers():
                    handle.extract(info, folder, filter="data")
                    bar.update(1)


# ---- --list --------------------------------------------------------------------------------

def listing(models_dir: Path, data_dir: Path) -> str:
    rows = [("file", "size", "checksum", "here", "profiles")]
    for row in MODEL_FILES:
        rows.append(_state(row, models_dir, models_dir / row.file))
    for data in DATA_SETS.values():
        done = (data_dir / data.name / COMPLETE_MARK).is_file()
        for row in data.archives:
            state = _state(row, data_dir, data_dir / ARCHIVES / row.file)
            rows.append((f"{data.name}: {row.file}", state[1], state[2],
                         "unpacked" if done else state[3], ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4]
             for row in rows]
    return "\n".join([f"models: {models_dir}", f"data:   {data_dir}", "", *lines])


def _state(row: KnownFile, folder: Path, path: Path) -> tuple[str, str, str, str, str]:
    recorded = recorded_checksum(path)
    checksum = (row.checksum or (f"sha256:{recorded.hex} (recorded here)" if recorded else
                                 "none published (recorded at first download)"))
    if row.member:
        checksum = f"in {row.archive}; " + checksum if row.checksum else f"in {row.archive}"
    if path.is_file():
        here, size = "yes", path.stat().st_size
    else:
        partial = path.with_name(path.name + ".part")
        here = f"partial ({partial.stat().st_size:,} bytes)" if partial.is_file() else "no"
        size = row.size
    return (row.file, f"{size:,}" if size else "?", checksum, here, ", ".join(row.profiles))
