"""The on-disk cache of pre-processed samples, filled once in parallel with Ray tasks.

Layout (one `.npy` per image, uint8 or float32 (DatasetSpec.stored_dtype), in the model's
layout, resumable and shared by every `--count`):

    <cache_dir>/ray-sut/preprocessed/<dataset>/<NCHW|NHWC>/<size>-r<recipe>-<images>/
        manifest.json           what produced these bytes (dataset, layout, size, recipe, images)
        <file from the list>.npy

Every setting that changes the bytes is in the path (<images> is a hash of the image folder's
path), so two configurations never share files; an image changed after its cached file was
written (modification or inode change time) is pre-processed again, as is a cached file that
is damaged (not .npy, another shape or dtype, cut short: read from its header), and a name
listed outside the image folder (absolute, or with '..') is cached under _outside/, never
beside the image.
The reference keeps float32 files under <cache_dir>/preprocessed/; we never write there.

Images are decoded and cropped by Ray tasks (on whichever node has CPUs); the driver writes the
results, so the cache needs no shared file system. A file appears under its final name only once
complete (write, then rename), so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.imagenet import ImageList
from datasets.registry import DatasetSpec, get_dataset
from harness_base import ConfigError, progress_bar, stop_if_requested

# A task returns at most this much (3 float32 1200x1200 images) and at most 32 images (ImageNet).
_BYTES_PER_TASK = 64 << 20
_WAIT_S = 0.5  # the longest a Ctrl-C waits to be seen while pre-processing


def cache_folder(cache_root: str | Path, spec: DatasetSpec, layout: str,
                 image_root: str | Path) -> Path:
    """The folder for one (dataset recipe, layout, size, image folder). The image folder is
    part of the key: two sets with the same file names (every ImageNet copy, say) never mix."""
    height, width = spec.image_size
    root_key = hashlib.sha256(str(Path(image_root).resolve()).encode()).hexdigest()[:12]
    return (Path(cache_root) / "ray-sut" / "preprocessed" / spec.name / layout
            / f"{height}x{width}-r{spec.recipe_version}-{root_key}")


def _is_fresh(cached: Path, source: Path) -> bool:
    """Cached after its image last changed. The image's inode change time counts as well as
    its modification time: a file copied in with an older mtime kept (`cp -p`, rsync -t)
    still gets a new ctime, which no tool can set back, so it is pre-processed again."""
    try:
        made = cached.stat().st_mtime_ns
        image = source.stat()
    except FileNotFoundError:
        return False
    return made >= image.st_mtime_ns and made >= image.st_ctime_ns


def sample_file_problem(path: Path, shape: tuple[int, ...], dtype) -> str | None:
    """Why a sample file cannot serve as a (shape, dtype) sample, or None when it can: read
    from its header and size alone, so every file is checked before LoadGen starts."""
    try:
        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":  # np.load would call it "pickled"
                return "not a NumPy .npy file: damaged or written by something else"
            handle.seek(0)
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return f".npy format version {version} (this harness writes 1.0)"
            found_shape, fortran_order, found_dtype = read_header(handle)
            size = os.fstat(handle.fileno()).st_size
            data_start = handle.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, EOFError) as error:
        return f"unreadable ({error})"
    if tuple(found_shape) != tuple(shape) or np.dtype(found_dtype) != np.dtype(dtype):
        return (f"holds {np.dtype(found_dtype)} {list(found_shape)}, expected "
                f"{np.dtype(dtype)} {list(shape)}")
    expected = data_start + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size != expected or fortran_order:
        return f"{size} bytes where a whole sample takes {expected}: cut short or padded"
    return None


def cached_file(folder: Path, relative_name: str) -> Path:
    """Where one listed image's sample lives: always inside `folder`. A listed name that is
    absolute or climbs out with '..' is kept under _outside/, named by a hash of the name
    as listed, never next to the image."""
    parts = Path(relative_name).parts
    if Path(relative_name).is_absolute() or ".." in parts or not parts:
        key = hashlib.sha256(relative_name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return folder / "_outside" / f"{key}-{Path(relative_name).name}.npy"
    return folder / (relative_name + ".npy")


def preprocess_one(path: Path, spec: DatasetSpec, layout: str) -> np.ndarray:
    """Decode one image and apply the dataset's geometric pre-processing (spec.stored_dtype)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"cannot read image {path}: OpenCV could not decode it. Replace the "
                          "file, or remove its line from the dataset list.")
    from datasets.transforms import to_layout

    return to_layout(spec.crop(image, spec.image_size), layout)


def _preprocess_chunk(paths: list[str], dataset_name: str, layout: str) -> list[np.ndarray]:
    spec = get_dataset(dataset_name)
    return [preprocess_one(Path(p), spec, layout) for p in paths]


def _write_atomically(target: Path, array: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + f".tmp{os.getpid()}")
    with open(temporary, "wb") as handle:
        np.save(handle, array)
    os.replace(temporary, target)


def _write_manifest(folder: Path, spec: DatasetSpec, layout: str, image_root: Path) -> None:
    manifest = {"dataset": spec.name, "images": str(Path(image_root).resolve()),
                "layout": layout, "image_size": list(spec.image_size),
                "recipe_version": spec.recipe_version,
                "dtype": np.dtype(spec.stored_dtype).name,
                "sample_shape": list(spec.sample_shape(layout))}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    if not path.exists():
        path.write_text(json.dumps(manifest, indent=1))


def ensure_preprocessed(images: ImageList, spec: DatasetSpec, layout: str,
                        cache_root: str | Path, use_ray: bool = True,
                        show_progress: bool = True) -> Path:
    """Pre-process every listed image not yet cached; return the cache folder.

    With use_ray, chunks of images run as Ray tasks, one CPU each, across the cluster.
    A cache folder that cannot be written (a file where a folder belongs, no permission, a
    full disk) is a ConfigError naming the path, before LoadGen starts.
    """
    try:
        return _ensure_preprocessed(images, spec, layout, cache_root, use_ray, show_progress)
    except OSError as error:
        where = error.filename or cache_root
        raise ConfigError(f"--cache_dir {cache_root}: cannot write the pre-processed samples "
                          f"({error.strerror or error}: {where}). Give a --cache_dir that can "
                          "be written, or remove what is in the way.") from None


def _ensure_preprocessed(images: ImageList, spec: DatasetSpec, layout: str,
                         cache_root: str | Path, use_ray: bool, show_progress: bool) -> Path:
    folder = cache_folder(cache_root, spec, layout, images.root)
    _write_manifest(folder, spec, layout, images.root)
    shape, dtype = spec.sample_shape(layout), spec.stored_dtype
    todo = [i for i, name in enumerate(images.files)
            if not _is_fresh(cached_file(folder, name), images.path(i))
            or sample_file_problem(cached_file(folder, name), shape, dtype) is not None]
    if not todo:
        return folder
    sample_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    per_task = max(1, min(32, _BYTES_PER_TASK // sample_bytes))
    chunks = [todo[start:start + per_task] for start in range(0, len(todo), per_task)]
    progress = progress_bar(len(todo), f"pre-processing {spec.name} ({layout})", "img",
                            show_progress)
    try:
        if use_ray:
            _run_chunks_on_ray(chunks, images, spec, layout, folder, progress)
        else:
            for chunk in chunks:
                arrays = _preprocess_chunk([str(images.path(i)) for i in chunk], spec.name, layout)
                _store_chunk(chunk, arrays, images, folder, progress)
    finally:
        progress.close()
    return folder


def _store_chunk(chunk, arrays, images: ImageList, folder: Path, progress) -> None:
    for index, array in zip(chunk, arrays):
        _write_atomically(cached_file(folder, images.files[index]), array)
    progress.update(len(chunk))


def _run_chunks_on_ray(chunks, images, spec, layout, folder, progress) -> None:
    import ray

    task = ray.remote(num_cpus=1, max_retries=2)(_preprocess_chunk)
    pending = {task.remote([str(images.path(i)) for i in chunk], spec.name, layout): chunk
               for chunk in chunks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_S)
            stop_if_requested()  # Ctrl-C: the tasks are cancelled below
            if not done:
                continue
            chunk = pending.pop(done[0])
            _store_chunk(chunk, ray.get(done[0]), images, folder, progress)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        raise
    except ray.exceptions.RayTaskError as error:
        for ref in pending:
            ray.cancel(ref)
        if isinstance(error.cause, ConfigError):  # the task's own message, without Ray's dress
            raise ConfigError(str(error.cause)) from None
        raise


@dataclass(frozen=True)
class SampleSource:
    """Where the pre-processed samples of a run are read from.

    normalized is False for this harness's cache (uint8, normalised on the worker) and True for
    a reference-style --preprocessed_dir (float32, fed to the model as is).
    """

    folder: Path
    images: ImageList
    sample_shape: tuple[int, ...]
    dtype: type
    normalized: bool = False

    def read(self, indices) -> np.ndarray:
        """Read samples into one contiguous array, in the order of `indices`."""
        out = np.empty((len(indices), *self.sample_shape), dtype=self.dtype)
        for row, index in enumerate(indices):
            path = cached_file(self.folder, self.images.files[index])
            try:
                with open(path, "rb") as handle:
                    if handle.read(6) != b"\x93NUMPY":  # np.load would call it "pickled"
                        raise ValueError("not a NumPy .npy file: damaged or written by "
                                         "something else")
                    handle.seek(0)
                    loaded = np.load(handle, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:  # damaged (writes are atomic)
                raise ConfigError(f"pre-processed file {path} cannot be read ({error}); delete "
                                  "it to have it rebuilt from its image.") from None
            if loaded.shape != tuple(self.sample_shape):
                raise ConfigError(f"pre-processed file {path} has shape {loaded.shape}, "
                                  f"expected {tuple(self.sample_shape)} (layout or size of "
                                  "another model?); delete it to have it rebuilt.")
            out[row] = loaded
        return out


def reference_preprocessed_source(preprocessed_dir: str | Path, images: ImageList,
                                  spec: DatasetSpec, layout: str) -> SampleSource:
    """Samples already pre-processed by the reference harness (`<name>.npy` model inputs),
    either directly in the folder or under its preprocessed/<dataset>/<layout>/ tree."""
    root = Path(preprocessed_dir)
    candidates = [root, root / "preprocessed" / spec.name / layout]
    for folder in candidates:
        first = cached_file(folder, images.files[0])
        if first.is_file():
            missing = [n for n in images.files if not cached_file(folder, n).is_file()]
            if missing:
                raise ConfigError(f"--preprocessed_dir {folder} lacks {len(missing)} of the "
                                  f"listed samples (first: {missing[0]}.npy).")
            shape = spec.sample_shape(layout)
            wanted = spec.model_input_dtype()  # float32; uint8 for coco-300, as the reference
            for name in images.files:
                problem = sample_file_problem(cached_file(folder, name), shape, wanted)
                if problem:
                    raise ConfigError(f"--preprocessed_dir: {cached_file(folder, name)} "
                                      f"{problem}; the run needs {np.dtype(wanted)} "
                                      f"{list(shape)} ({layout}). Check --data-format and the "
                                      "dataset, or pre-process that image again.")
            return SampleSource(folder, images, shape, wanted, normalized=True)
    raise ConfigError(f"--preprocessed_dir {root}: no {images.files[0]}.npy there nor under "
                      f"preprocessed/{spec.name}/{layout}/. Point it at the reference's "
                      "pre-processed folder, or drop the flag to pre-process here.")
