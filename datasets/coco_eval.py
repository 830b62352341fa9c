"""Scoring a detection accuracy log with pycocotools: pure functions under the CLIs.

Follows the reference tools (accuracy-coco.py, accuracy-openimages.py): the first entry of each
qsl_idx counts; qsl_idx picks the ground-truth image (`image_map[qsl_idx]`); each 7-float record
[qsl_idx, ymin, xmin, ymax, xmax, score, class] becomes a COCO result with the box scaled by
that image's width and height; with an inverse map, class k becomes `([0] + catIds)[k]`; an
image without detections still counts (its ground truth becomes misses); COCOeval (bbox) over
exactly the images in the log; mAP = stats[0].
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.detections import RECORD


@dataclass
class DetectionScore:
    mean_ap: float  # COCO mAP@[.5:.95], 0..1
    images: int  # distinct samples scored
    detections: int
    no_results: int  # images answered with no detection
    duplicates: int  # log entries ignored (the same qsl_idx again)
    index_mismatches: int  # records whose own qsl_idx disagrees with the log entry's
    unmapped_classes: int = 0  # detections whose class is outside the inverse map (dropped)
    missing: int = 0  # expected images absent from the log (scored as all missed)
    stats: list[float] = field(default_factory=list)  # COCOeval's 12 summary numbers
    summary: str = ""  # COCOeval's printed table

    def line(self) -> str:
        """The reference tools' output line."""
        return f"mAP={100.0 * self.mean_ap:.3f}%"


def inverse_class_map(annotations: dict) -> list[int]:
    """Contiguous model class k -> category id: ([0] + the file's category ids, in file order,
    as pycocotools' getCatIds gives them)[k]."""
    return [0] + [category["id"] for category in annotations["categories"]]


def detections_from_log(entries: list[dict], image_map: list[dict],
                        inv_map: list[int] | None = None):
    """(COCO results, image ids scored, counts) from accuracy-log entries.

    image_map[qsl_idx] is the ground-truth image: a dict with id, width and height.
    """
    results: list[dict] = []
    image_ids: set[int] = set()
    seen: set[int] = set()
    no_results = mismatches = unmapped = 0
    for entry in entries:
        index = entry["qsl_idx"]
        if index in seen:
            continue
        seen.add(index)
        image = image_map[index]
        image_ids.add(int(image["id"]))
        raw = bytes.fromhex(entry["data"])
        check_payload_size(index, raw)
        data = np.frombuffer(raw, np.float32)
        if len(data) < RECORD:
            no_results += 1
            continue
        width, height = float(image["width"]), float(image["height"])
        records = data[:len(data) // RECORD * RECORD].reshape(-1, RECORD)
        for own_index, ymin, xmin, ymax, xmax, score, label in records.tolist():
            if int(own_index) != index:
                mismatches += 1
            category = int(label)
            if inv_map:
                if not 0 <= category < len(inv_map):
                    unmapped += 1  # no such class: it cannot match anything
                    continue
                category = inv_map[category]
            results.append({
                "image_id": int(image["id"]),
                "category_id": category,
                "bbox": [xmin * width, ymin * height, (xmax - xmin) * width,
                         (ymax - ymin) * height],
                "score": score})
    counts = {"duplicates": len(entries) - len(seen), "no_results": no_results,
              "index_mismatches": mismatches, "unmapped_classes": unmapped}
    return results, image_ids, counts


def coco_map(annotations_file: str | Path, results: list[dict], image_ids: set[int],
             output_file: str | Path | None = None) -> tuple[list[float], str]:
    """COCOeval (bbox) restricted to image_ids; returns (stats, printed summary)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if output_file:
        Path(output_file).write_text(json.dumps(results, indent=1))
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        ground_truth = COCO(str(annotations_file))
    if not results:  # pycocotools cannot load an empty result list: nothing found, mAP 0
        return [0.0] * 12, "no detections at all: mAP 0"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        found = ground_truth.loadRes(results)
        evaluation = COCOeval(ground_truth, found, iouType="bbox")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # COCOeval reports -1 where a category has no ground truth among the images; keep it.
    return [float(value) for value in evaluation.stats], printed.getvalue()


def score_detections(entries: list[dict], annotations_file: str | Path, image_map: list[dict],
                     use_inv_map: bool, annotations: dict | None = None,
                     output_file: str | Path | None = None,
                     expected_ids: set[int] | None = None) -> DetectionScore:
    """mAP of the logged detections. expected_ids: the images the run listed; one absent from
    the log is scored with all its objects missed (the reference tools score only what the
    log holds, so a lost sample would go unnoticed)."""
    if annotations is None:
        with open(annotations_file, encoding="utf-8") as handle:
            annotations = json.load(handle)
    inv_map = inverse_class_map(annotations) if use_inv_map else None
    results, image_ids, counts = detections_from_log(entries, image_map, inv_map)
    missing = len(set(expected_ids or ()) - image_ids)
    image_ids |= set(expected_ids or ())
    stats, summary = coco_map(annotations_file, results, image_ids, output_file)
    return DetectionScore(mean_ap=max(stats[0], 0.0), images=len(image_ids),
                          detections=len(results), stats=stats, summary=summary,
                          missing=missing, **counts)


def image_map_of(annotations: dict, remove_empty: bool) -> list[dict]:
    """QSL index -> ground-truth image, as the SUT lists them: every image, or (COCO's
    --remove-48-empty-images) only those with annotations, in file order."""
    from datasets.coco import listed_images

    return listed_images(annotations, keep_empty=not remove_empty)


def check_payload_size(index: int, raw: bytes) -> None:
    """A detection payload is whole 7-float32 records (none: no detection)."""
    if len(raw) % (4 * RECORD):
        from harness_base import ConfigError

        raise ConfigError(f"qsl_idx {index}: a payload of {len(raw)} bytes is no whole number of "
                          f"{RECORD}-float32 detection records: a classification log (score it "
                          "with accuracy_imagenet.py)?")


def score_log_file(accuracy_file: str | Path, annotations_file: str | Path, use_inv_map: bool,
                   remove_empty: bool, output_file: str | Path | None, *,
                   dataset_flag: str, allow_partial: bool = False) -> DetectionScore:
    """What the accuracy scripts do: read the log and the ground truth, score. dataset_flag: the
    script's option for the folder that holds annotations_file, named in error messages."""
    from datasets.accuracy import read_accuracy_log
    from datasets.coco import load_annotations
    from harness_base import ConfigError

    if not Path(annotations_file).is_file():
        raise ConfigError(f"annotations file {annotations_file} not found: point {dataset_flag} at "
                          "the dataset folder that holds it.")
    try:
        annotations = load_annotations(Path(annotations_file))
    except ConfigError as error:
        raise ConfigError(f"{error} Point {dataset_flag} at a dataset folder with a good copy.") \
            from None
    image_map = image_map_of(annotations, remove_empty)
    entries = read_accuracy_log(accuracy_file, "--mlperf-accuracy-file")
    too_far = [e["qsl_idx"] for e in entries if e["qsl_idx"] >= len(image_map)]
    if too_far:
        raise ConfigError(f"--mlperf-accuracy-file {accuracy_file} has qsl_idx {max(too_far)}, but "
                          f"{annotations_file} lists only {len(image_map)} images"
                          + (" with annotations: wrong " + dataset_flag
                             + ", or drop --remove-48-empty-images?" if remove_empty
                             else f": wrong {dataset_flag}?"))
    try:
        for entry in entries:
            check_payload_size(entry["qsl_idx"], bytes.fromhex(entry["data"]))
    except ConfigError as error:
        raise ConfigError(f"--mlperf-accuracy-file {accuracy_file}, {error}") from None
    if not allow_partial:
        marker = Path(accuracy_file).parent / "ABORTED.txt"
        if marker.is_file():
            raise ConfigError(f"--mlperf-accuracy-file {accuracy_file}: the run that wrote it "
                              f"was aborted ({marker} says why). Score a complete run, or pass "
                              "--allow-partial to score it anyway.")
        answered = len({entry["qsl_idx"] for entry in entries})
        if answered < len(image_map):
            raise ConfigError(f"--mlperf-accuracy-file {accuracy_file} answers {answered} of the "
                              f"{len(image_map)} images {annotations_file} lists. Score a "
                              "complete run, or pass --allow-partial for a run of part of the "
                              "set (--count).")
    try:
        return score_detections(entries, annotations_file, image_map, use_inv_map, annotations,
                                output_file)
    except ConfigError as error:
        raise ConfigError(f"--mlperf-accuracy-file {accuracy_file}, {error}") from None


def accuracy_cli(argv: list[str], *, dataset_flag: str, annotations: str, default_output: str,
                 with_remove_empty: bool, doc: str) -> int:
    """The shared command line of scripts/accuracy_coco.py and scripts/accuracy_openimages.py."""
    import argparse

    from harness_base import ConfigError

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--mlperf-accuracy-file", required=True,
                        help="path to mlperf_log_accuracy.json")
    parser.add_argument(dataset_flag, required=True, dest="dataset_dir",
                        help=f"dataset folder (holds {annotations})")
    parser.add_argument("--verbose", action="store_true", help="print COCOeval's table")
    parser.add_argument("--output-file", default=default_output,
                        help="where to write the detections in COCO results format")
    parser.add_argument("--use-inv-map", action="store_true",
                        help="map contiguous model classes to the file's category ids")
    if with_remove_empty:
        parser.add_argument("--remove-48-empty-images", action="store_true",
                            help="qsl indices count only images with annotations")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score a log of part of the set (a --count run) or of an aborted "
                             "run instead of refusing it")
    args = parser.parse_args(argv)
    try:
        score = score_log_file(args.mlperf_accuracy_file, Path(args.dataset_dir) / annotations,
                               args.use_inv_map, getattr(args, "remove_48_empty_images", False),
                               args.output_file, dataset_flag=dataset_flag,
                               allow_partial=args.allow_partial)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.verbose:
        print(score.summary, end="")
        print(f"found {score.no_results} images without detections, ignored "
              f"{score.duplicates} dupes")
    if score.unmapped_classes:
        print(f"WARNING: {score.unmapped_classes} detections have a class outside the inverse "
              "map and were dropped (--use-inv-map on a model with COCO ids?)")
    if score.index_mismatches:
        print(f"ERROR: {score.index_mismatches} records name another qsl_idx than their log "
              "entry")
    print(score.line())
    return 0
