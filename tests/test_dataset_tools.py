"""The dataset tools in scripts/: upscale_coco.py, download_openimages.py and imagenet_val_map.py,
on files made here."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import download_openimages as oi  # noqa: E402
import imagenet_val_map  # noqa: E402
import upscale_coco  # noqa: E402

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: refused at once, nothing leaves the host

# ---- a tiny COCO set ---------------------------------------------------------------------------
# Sizes chosen so that every scale factor to 64 x 64 is a power of two and the expected numbers
# are exact in binary floating point.
COCO_IMAGES = [  # id, file name, PIL mode, (width, height)
    (11, "000000000011.jpg", "RGB", (256, 128)),
    (22, "000000000022.jpg", "L", (32, 16)),      # grayscale
    (33, "000000000033.jpg", "CMYK", (128, 64)),  # CMYK JPEG
    (44, "000000000044.jpg", "RGB", (64, 256)),   # no annotations
]
CMYK_RGB = (200, 40, 90)


def crowd_rle(width: int, height: int, box: tuple[int, int, int, int]) -> dict:
    """Uncompressed RLE (column-major, as COCO crowd annotations store it) of a filled box."""
    x, y, w, h = box
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 1
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [height, width], "counts": counts}


COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 11, "category_id": 18, "bbox": [8.0, 16.0, 40.0, 20.0], "area": 800.0,
     "iscrowd": 0, "segmentation": [[8.0, 16.0, 48.0, 16.0, 48.0, 36.0]]},
    {"id": 2, "image_id": 11, "category_id": 1, "bbox": [64.0, 32.0, 128.0, 64.0],
     "area": 8192.0, "iscrowd": 1, "segmentation": crowd_rle(256, 128, (64, 32, 128, 64))},
    {"id": 3, "image_id": 22, "category_id": 1, "bbox": [2.0, 3.0, 10.0, 5.0], "area": 50.0,
     "iscrowd": 0, "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 8.0, 2.0, 8.0]]},
    {"id": 4, "image_id": 33, "category_id": 18, "bbox": [0.0, 0.0, 128.0, 64.0],
     "area": 8192.0, "iscrowd": 0, "segmentation": [[0.0, 0.0, 128.0, 0.0, 128.0, 64.0]]},
]
# Expected after --size 64 64: (sx, sy) = (1/4, 1/2), (2, 4), (1/2, 1) for images 11, 22, 33.
EXPECTED_BOXES = {1: ([2.0, 8.0, 10.0, 10.0], 100.0), 2: ([16.0, 16.0, 32.0, 32.0], 1024.0),
                  3: ([4.0, 12.0, 20.0, 20.0], 400.0), 4: ([0.0, 0.0, 64.0, 64.0], 4096.0)}


@pytest.fixture
def coco_dir(tmp_path) -> Path:
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    for _, name, mode, size in COCO_IMAGES:
        gradient = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
        image = Image.fromarray(gradient.astype(np.uint8))
        if mode == "CMYK":
            image = Image.new("RGB", size, CMYK_RGB)
        image.convert(mode).save(root / "val2017" / name, quality=95)
    dataset = {"info": {"description": "tiny"}, "licenses": [],
               "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
               "images": [{"id": i, "file_name": name, "width": size[0], "height": size[1]}
                          for i, name, _, size in COCO_IMAGES],
               "annotations": COCO_ANNOTATIONS}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    return root


def run_upscale(inputs: Path, outputs: Path, *extra: str) -> int:
    return upscale_coco.main(["--inputs", str(inputs), "--outputs", str(outputs), "--size", "64",
                              "64", "--threads", "2", *extra])


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_upscale_coco_resizes_images_and_scales_annotations(coco_dir, tmp_path, fmt):
    out = tmp_path / "coco-64"
    assert run_upscale(coco_dir, out, "--format", fmt) == 0
    original = json.loads((coco_dir / "annotations" / "instances_val2017.json").read_text())
    scaled = json.loads((out / "annotations" / "instances_val2017.json").read_text())

    assert [i["id"] for i in scaled["images"]] == [i for i, *_ in COCO_IMAGES]
    assert scaled["categories"] == original["categories"] and scaled["info"] == original["info"]
    for image in scaled["images"]:
        assert image["file_name"].endswith(f".{fmt}") and (image["width"], image["height"]) \
            == (64, 64)
        pixels = cv2.imread(str(out / "val2017" / image["file_name"]), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (64, 64, 3), image["file_name"]
    assert sorted(p.name for p in (out / "val2017").iterdir()) == \
        [f"{name[:-4]}.{fmt}" for _, name, _, _ in COCO_IMAGES]

    by_id = {a["id"]: a for a in scaled["annotations"]}
    assert sorted(by_id) == [1, 2, 3, 4]
    for ann_id, (bbox, area) in EXPECTED_BOXES.items():
        assert by_id[ann_id]["bbox"] == bbox and by_id[ann_id]["area"] == area, ann_id
        before = next(a for a in original["annotations"] if a["id"] == ann_id)
        assert {k: by_id[ann_id][k] for k in ("image_id", "category_id", "iscrowd")} == \
            {k: before[k] for k in ("image_id", "category_id", "iscrowd")}
    assert by_id[1]["segmentation"] == [[2.0, 8.0, 12.0, 8.0, 12.0, 18.0]]
    assert by_id[3]["segmentation"] == [[4.0, 12.0, 24.0, 12.0, 24.0, 32.0, 4.0, 32.0]]
    from pycocotools import mask as mask_utils
    rle = by_id[2]["segmentation"]
    assert rle["size"] == [64, 64]
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == 1024
    assert mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist() \
        == [16.0, 16.0, 32.0, 32.0]


def test_upscale_coco_converts_cmyk_colours(coco_dir, tmp_path):
    out = tmp_path / "coco-64"
    run_upscale(coco_dir, out, "--format", "png")
    bgr = cv2.imread(str(out / "val2017" / "000000000033.png"))
    assert np.abs(bgr[32, 32][::-1].astype(int) - CMYK_RGB).max() <= 3


def upscale_refused(capsys, *args) -> str:
    """Run the tool, expect the bad-input exit (2) and one error line; return that line."""
    assert run_upscale(*args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("upscale_coco: error: "), lines
    return lines[0]


@pytest.mark.parametrize("extra, named", [
    (["--size", "100000", "100000"], "at most 16384 pixels a side"),
], ids=["huge size"])
def test_upscale_coco_refuses_a_size_no_machine_holds(coco_dir, tmp_path, capsys, extra, named):
    assert named in upscale_refused(capsys, coco_dir, tmp_path / "out", *extra)


def test_upscale_coco_output_that_is_a_file_is_named(coco_dir, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    message = upscale_refused(capsys, coco_dir, tmp_path / "out")
    assert str(tmp_path / "out") in message and "--outputs" in message


def test_upscale_coco_missing_annotations_file(coco_dir, tmp_path, capsys):
    (coco_dir / "annotations" / "instances_val2017.json").unlink()
    failure = upscale_refused(capsys, coco_dir, tmp_path / "out")
    assert "annotations file not found" in failure
    assert "instances_val2017.json" in failure
    assert not (tmp_path / "out").exists()


def test_upscale_coco_missing_image_fails_before_any_work(coco_dir, tmp_path, capsys):
    (coco_dir / "val2017" / "000000000022.jpg").unlink()
    failure = upscale_refused(capsys, coco_dir, tmp_path / "out")
    assert "000000000022.jpg" in failure and "not found" in failure
    assert not (tmp_path / "out").exists()


def test_upscale_coco_annotation_of_unknown_image(coco_dir, tmp_path, capsys):
    path = coco_dir / "annotations" / "instances_val2017.json"
    dataset = json.loads(path.read_text())
    dataset["annotations"].append({**COCO_ANNOTATIONS[0], "id": 5, "image_id": 99})
    path.write_text(json.dumps(dataset))
    failure = upscale_refused(capsys, coco_dir, tmp_path / "out")
    assert "[99]" in failure and "not in its 'images' list" in failure


def test_upscale_coco_refuses_to_overwrite_its_inputs(coco_dir, capsys):
    failure = upscale_refused(capsys, coco_dir, coco_dir)
    assert "is the input folder" in failure


# ---- a tiny OpenImages set ---------------------------------------------------------------------
CLASS_CSV = "/m/01,Cat\n/m/02,Dog\n/m/03,Human face\n/m/04,Tree\n"
BOX_CSV = """\
ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside
cc00000000000003,xclick,/m/02,1,0.5,1.0,0.25,0.75,0,1,0,0,0
aa00000000000001,xclick,/m/01,1,0.25,0.75,0.0,0.5,1,0,0,0,0
aa00000000000001,xclick,/m/04,1,0.0,1.0,0.0,1.0,0,0,1,0,0
dd00000000000004,xclick,/m/04,1,0.0,0.5,0.0,0.5,0,0,0,0,0
bb00000000000002,xclick,/m/03,1,0.125,0.625,0.5,1.0,0,0,1,0,0
aa00000000000001,xclick,/m/02,1,0.5,1.0,0.5,1.0,0,0,0,1,1
"""
OI_SIZES = {"aa00000000000001": (64, 32), "bb00000000000002": (16, 64),
            "cc00000000000003": (128, 128), "dd00000000000004": (8, 8)}
OI_CLASSES = ("Dog", "Cat", "Human face")  # category ids 0, 1, 2; Tree is not asked for


def write_openimages(root: Path, with_images: bool = True) -> Path:
    """<root>/annotations/{the two CSVs} and, with_images, <root>/validation/data/<id>.jpg."""
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / oi.CLASSES_CSV).write_text(CLASS_CSV)
    (root / "annotations" / oi.BOXES_CSV).write_text(BOX_CSV)
    if with_images:
        (root / "validation" / "data").mkdir(parents=True)
        for image_id, size in OI_SIZES.items():
            Image.new("RGB", size, (10, 20, 30)).save(root / "validation" / "data" /
                                                      f"{image_id}.jpg")
    return root


def test_mlperf_class_list():
    assert len(oi.MLPERF_CLASSES) == 264 == len(set(oi.MLPERF_CLASSES))
    assert oi.MLPERF_CLASSES[:3] == ("Airplane", "Antelope", "Apple")
    assert oi.MLPERF_CLASSES[-1] == "Zucchini" and "Kitchen & dining room table" in \
        oi.MLPERF_CLASSES


def test_openimages_convert_builds_coco(tmp_path):
    coco = oi.convert(write_openimages(tmp_path / "oi"), OI_CLASSES)
    assert coco["categories"] == [{"id": 0, "name": "Dog", "supercategory": None},
                                  {"id": 1, "name": "Cat", "supercategory": None},
                                  {"id": 2, "name": "Human face", "supercategory": None}]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "aa00000000000001.jpg", 64, 32), (2, "bb00000000000002.jpg", 16, 64),
        (3, "cc00000000000003.jpg", 128, 128)]  # dd has only a Tree: not in the subset
    got = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
           for a in coco["annotations"]]
    assert got == [
        (1, 1, 1, [16.0, 0.0, 32.0, 16.0], 512.0, 0),   # aa Cat
        (2, 1, 0, [32.0, 16.0, 32.0, 16.0], 512.0, 0),  # aa Dog (the Tree row is left out)
        (3, 2, 2, [2.0, 32.0, 8.0, 32.0], 256.0, 1),    # bb Human face, IsGroupOf
        (4, 3, 0, [64.0, 32.0, 64.0, 64.0], 4096.0, 0),  # cc Dog
    ]
    aa_dog = coco["annotations"][1]
    assert (aa_dog["IsDepiction"], aa_dog["IsInside"], aa_dog["IsOccluded"]) == (1, 1, 0)
    assert coco["annotations"][0]["IsOccluded"] == 1


def test_openimages_max_images_takes_first_sorted_ids(tmp_path):
    root = write_openimages(tmp_path / "oi")
    coco = oi.convert(root, OI_CLASSES, max_images=2)
    assert [i["file_name"] for i in coco["images"]] == ["aa00000000000001.jpg",
                                                        "bb00000000000002.jpg"]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 2]


def test_openimages_result_loads_in_pycocotools(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO
    root = write_openimages(tmp_path / "oi")
    oi.write_json(oi.convert(root, OI_CLASSES), root / "annotations" / oi.OUTPUT_JSON)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "annotations" / oi.OUTPUT_JSON))
    assert coco.getCatIds() == [0, 1, 2] and coco.getImgIds() == [1, 2, 3]


def test_openimages_size_follows_exif_orientation_like_cv2(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (60, 20)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert oi.image_size(tmp_path / "r.jpg") == (20, 60)


def test_openimages_unknown_class_name(tmp_path):
    with pytest.raises(oi.DatasetError, match="'Unicorn'"):
        oi.convert(write_openimages(tmp_path / "oi"), ("Dog", "Unicorn"))


def test_openimages_offline_csv_download_fails_fast(tmp_path, capsys):
    with pytest.raises(SystemExit) as failure:
        oi.main(["-d", str(tmp_path / "oi"), "--csv-base-url", UNREACHABLE,
                 "--image-base-url", UNREACHABLE])
    message = str(failure.value.code)
    assert f"cannot reach {UNREACHABLE}v5/" in message
    assert "needs internet access" in message and "--dataset-path" in message


def test_openimages_offline_image_download_fails_fast(tmp_path):
    root = write_openimages(tmp_path / "oi", with_images=False)
    with pytest.raises(SystemExit) as failure:
        oi.main(["-d", str(root), "--classes", *OI_CLASSES, "--image-base-url", UNREACHABLE,
                 "--csv-base-url", UNREACHABLE])
    message = str(failure.value.code)
    assert f"cannot reach {UNREACHABLE}validation/aa00000000000001.jpg" in message
    assert "needs internet access" in message
    assert not (root / "annotations" / oi.OUTPUT_JSON).exists()


def test_openimages_converts_a_complete_copy_without_network(tmp_path):
    root = write_openimages(tmp_path / "oi")
    assert oi.main(["-d", str(root), "--classes", *OI_CLASSES, "-m", "3",
                    "--csv-base-url", UNREACHABLE, "--image-base-url", UNREACHABLE]) == 0
    coco = json.loads((root / "annotations" / oi.OUTPUT_JSON).read_text())
    assert len(coco["images"]) == 3 and len(coco["annotations"]) == 4


@pytest.fixture
def local_mirror(tmp_path):
    """An HTTP server on 127.0.0.1 laid out like the real hosts (v5/*.csv, validation/*.jpg)."""
    site = tmp_path / "site"
    write_openimages(site)
    (site / "v5").mkdir()
    for name in (oi.CLASSES_CSV, oi.BOXES_CSV):
        (site / "annotations" / name).rename(site / "v5" / name)
    (site / "validation" / "data").rename(site / "images")
    (site / "validation").rmdir()
    (site / "images").rename(site / "validation")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_openimages_downloads_then_converts(tmp_path, local_mirror):
    root = tmp_path / "download"
    assert oi.main(["-d", str(root), "--classes", *OI_CLASSES, "--threads", "2",
                    "--csv-base-url", local_mirror, "--image-base-url", local_mirror]) == 0
    assert sorted(p.name for p in (root / "validation" / "data").iterdir()) == \
        ["aa00000000000001.jpg", "bb00000000000002.jpg", "cc00000000000003.jpg"]
    coco = json.loads((root / "annotations" / oi.OUTPUT_JSON).read_text())
    assert coco == oi.convert(root, OI_CLASSES)
    assert [i["width"] for i in coco["images"]] == [64, 16, 128]


def test_openimages_missing_image_on_server_is_reported(tmp_path, local_mirror):
    root = tmp_path / "download"
    write_openimages(root, with_images=False)
    (root / "annotations" / oi.BOXES_CSV).write_text(
        BOX_CSV + "ab00000000000009,xclick,/m/01,1,0,1,0,1,0,0,0,0,0\n")
    with pytest.raises(SystemExit) as failure:
        oi.main(["-d", str(root), "--classes", *OI_CLASSES, "--threads", "2",
                 "--csv-base-url", local_mirror, "--image-base-url", local_mirror])
    message = str(failure.value.code)
    assert "1 of 4 image download(s) failed" in message and "ab00000000000009" in message
    assert "HTTP 404" in message
    assert not (root / "annotations" / oi.OUTPUT_JSON).exists()


# ---- the accuracy scripts on bad input ---------------------------------------------------------
# Each bad input is one line "error: ..." naming the file or flag, exit status 2, no traceback.
REPO = Path(__file__).resolve().parent.parent
GOOD_LABEL = np.array([5], np.float32).tobytes().hex().upper()
GOOD_BOXES = np.array([0, 0.1, 0.1, 0.6, 0.6, 0.9, 1], np.float32).tobytes().hex().upper()


def run_accuracy_tool(script: str, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_refused(done: subprocess.CompletedProcess, *named: str) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for name in named:
        assert name in done.stderr, (name, done.stderr)
    return done.stderr


def write_log(path: Path, *entries) -> Path:
    """A log of (qsl_idx, data) entries, or the raw text given as one string."""
    if len(entries) == 1 and isinstance(entries[0], str):
        path.write_text(entries[0])
    else:
        path.write_text(json.dumps([{"seq_id": n, "qsl_idx": index, "data": data}
                                    for n, (index, data) in enumerate(entries)]))
    return path


IMAGENET_BAD_LOGS = {  # name: (log contents, what the message names)
    "empty": ("", ["--mlperf-accuracy-file", "log.json", "empty"]),
    "garbage": ("this is no JSON", ["--mlperf-accuracy-file", "log.json", "not JSON"]),
    "truncated": ('[{"seq_id": 0, "qsl_idx": 0, "data": "0000A040"}',
                  ["--mlperf-accuracy-file", "log.json", "not JSON"]),
    "not an array": ('{"qsl_idx": 0}', ["--mlperf-accuracy-file", "log.json", "array"]),
    "no qsl_idx": ('[{"seq_id": 0, "data": "00"}]', ["--mlperf-accuracy-file", "entry 0"]),
    "bad hex": ('[{"seq_id": 0, "qsl_idx": 0, "data": "ZZ"}]',
                ["--mlperf-accuracy-file", "log.json", "not hex"]),
    "beyond the val file": ((5, GOOD_LABEL),
                            ["--mlperf-accuracy-file", "--imagenet-val-file", "val_map.txt",
                             "qsl_idx 5", "only 2 images"]),
}


@pytest.mark.parametrize("case", sorted(IMAGENET_BAD_LOGS))
def test_accuracy_imagenet_refuses_a_bad_log(tmp_path, case):
    contents, named = IMAGENET_BAD_LOGS[case]
    (tmp_path / "val_map.txt").write_text("a.jpg 5\nb.jpg 7\n")
    log = write_log(tmp_path / "log.json", contents)
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     log, "--imagenet-val-file", "val_map.txt"), *named)


IMAGENET_PARTIAL_LOGS = {  # name: (entries, what the message names)
    "empty payloads": ([(0, GOOD_LABEL), (1, "")],
                       ["--mlperf-accuracy-file", "1 of 2 entries have no payload",
                        "--allow-partial"]),
    "short of the val file": ([(0, GOOD_LABEL)],
                              ["answers 1 of the 2 images", "--imagenet-val-file",
                               "--allow-partial"]),
    "a detection log": ([(0, GOOD_BOXES), (1, GOOD_BOXES)],
                        ["qsl_idx 0", "7 float32 values", "detection log"]),
}


@pytest.mark.parametrize("case", sorted(IMAGENET_PARTIAL_LOGS))
def test_accuracy_imagenet_refuses_a_log_that_is_not_a_whole_run(tmp_path, case):
    """An interrupted run's log (empty payloads), a shorter one, or another task's: refused
    with one line, where a score would look right and be wrong."""
    entries, named = IMAGENET_PARTIAL_LOGS[case]
    (tmp_path / "val_map.txt").write_text("a.jpg 5\nb.jpg 7\n")
    log = write_log(tmp_path / "log.json", *entries)
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     log, "--imagenet-val-file", "val_map.txt"), *named)


def test_accuracy_imagenet_refuses_an_aborted_runs_log_unless_told(tmp_path):
    (tmp_path / "val_map.txt").write_text("a.jpg 5\nb.jpg 7\n")
    log = write_log(tmp_path / "log.json", (0, GOOD_LABEL), (1, GOOD_LABEL))
    (tmp_path / "ABORTED.txt").write_text("ABORTED: interrupted by SIGINT\n")
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     log, "--imagenet-val-file", "val_map.txt"),
                   "was aborted", "ABORTED.txt", "--allow-partial")
    done = run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file", log,
                             "--imagenet-val-file", "val_map.txt", "--allow-partial")
    assert done.returncode == 0 and "accuracy=50.000%, good=1, total=2" in done.stdout


@pytest.mark.parametrize("val_map, named", [
    (None, ["--imagenet-val-file", "val_map.txt", "no such file"]),
    ("a.jpg 5\nb.jpg\n", ["--imagenet-val-file", "val_map.txt", "line 2"]),
    ("a.jpg 5\nb.jpg seven\n", ["--imagenet-val-file", "val_map.txt", "line 2"]),
], ids=["missing", "no label", "label not a number"])
def test_accuracy_imagenet_refuses_a_bad_val_file(tmp_path, val_map, named):
    if val_map is not None:
        (tmp_path / "val_map.txt").write_text(val_map)
    log = write_log(tmp_path / "log.json", (0, GOOD_LABEL))
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     log, "--imagenet-val-file", "val_map.txt"), *named)


def test_accuracy_imagenet_refuses_a_missing_log(tmp_path):
    (tmp_path / "val_map.txt").write_text("a.jpg 5\n")
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     "nowhere.json", "--imagenet-val-file", "val_map.txt"),
                   "--mlperf-accuracy-file", "nowhere.json", "no such file")


@pytest.mark.parametrize("dtype, data", [("int64", GOOD_LABEL), ("float32", "FFFFFFFF")],
                         ids=["size", "nan"])
def test_accuracy_imagenet_names_dtype_when_the_payload_does_not_fit(tmp_path, dtype, data):
    (tmp_path / "val_map.txt").write_text("a.jpg 5\n")
    log = write_log(tmp_path / "log.json", (0, data))
    assert_refused(run_accuracy_tool("accuracy_imagenet.py", tmp_path, "--mlperf-accuracy-file",
                                     log, "--imagenet-val-file", "val_map.txt", "--dtype", dtype),
                   "--dtype", "qsl_idx 0")


DETECTION_TOOLS = {  # script: (dataset flag, annotations file under it)
    "accuracy_coco.py": ("--coco-dir", "annotations/instances_val2017.json"),
    "accuracy_openimages.py": ("--openimages-dir", "annotations/openimages-mlperf.json"),
}
DETECTION_GROUND_TRUTH = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
               {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                     "area": 25, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "thing"}]}


def run_detection_tool(script: str, tmp_path: Path, log, annotations: str | None = "valid",
                       *extra: str) -> subprocess.CompletedProcess:
    """The script on <tmp_path>/set holding `annotations` (valid ground truth, raw text, or no
    file for None)."""
    flag, relative = DETECTION_TOOLS[script]
    root = tmp_path / "set"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    if annotations is not None:
        (root / relative).write_text(json.dumps(DETECTION_GROUND_TRUTH)
                                     if annotations == "valid" else annotations)
    return run_accuracy_tool(script, tmp_path, flag, root, "--mlperf-accuracy-file", log,
                             "--output-file", tmp_path / "results.json", *extra)


def test_detection_tools_score_the_tiny_set(tmp_path):
    """The valid input the bad-input tests start from is scored as before."""
    log = write_log(tmp_path / "log.json", (0, GOOD_BOXES), (1, ""))
    for script in DETECTION_TOOLS:
        done = run_detection_tool(script, tmp_path, log)
        assert done.returncode == 0 and done.stdout == "mAP=100.000%\n", done.stderr


DETECTION_BAD_LOGS = {
    "missing": (None, ["--mlperf-accuracy-file", "log.json", "no such file"]),
    "empty": ("", ["--mlperf-accuracy-file", "log.json", "empty"]),
    "garbage": ("<html>", ["--mlperf-accuracy-file", "log.json", "not JSON"]),
    "no qsl_idx": ('[{"seq_id": 0, "data": ""}]', ["--mlperf-accuracy-file", "entry 0"]),
    "bad hex": ('[{"seq_id": 0, "qsl_idx": 0, "data": "0G"}]',
                ["--mlperf-accuracy-file", "log.json", "not hex"]),
    "odd payload": ('[{"seq_id": 0, "qsl_idx": 0, "data": "0000A0"}]',
                    ["--mlperf-accuracy-file", "log.json", "float32"]),
    "a classification log": (f'[{{"seq_id": 0, "qsl_idx": 0, "data": "{GOOD_LABEL}"}}]',
                             ["--mlperf-accuracy-file", "classification log"]),
    "short of the annotations": (f'[{{"seq_id": 0, "qsl_idx": 0, "data": "{GOOD_BOXES}"}}]',
                                 ["--mlperf-accuracy-file", "answers 1 of the", "--allow-partial"]),
    "empty list": ("[]", ["--mlperf-accuracy-file", "answers 0 of the", "--allow-partial"]),
}


@pytest.mark.parametrize("script", sorted(DETECTION_TOOLS))
@pytest.mark.parametrize("case", sorted(DETECTION_BAD_LOGS))
def test_detection_tools_refuse_a_bad_log(tmp_path, script, case):
    contents, named = DETECTION_BAD_LOGS[case]
    log = tmp_path / "log.json"
    if contents is not None:
        write_log(log, contents)
    assert_refused(run_detection_tool(script, tmp_path, log), *named)


@pytest.mark.parametrize("script", sorted(DETECTION_TOOLS))
@pytest.mark.parametrize("annotations, named", [
    (None, ["not found"]), ("not json", ["not readable JSON"]),
    ('{"images": []}', ["no 'annotations' list"]),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}',
     ["images[0] lacks one of"])], ids=["missing", "garbage", "not COCO", "no image size"])
def test_detection_tools_name_their_own_dataset_flag(tmp_path, script, annotations, named):
    flag, relative = DETECTION_TOOLS[script]
    log = write_log(tmp_path / "log.json", (0, GOOD_BOXES))
    message = assert_refused(run_detection_tool(script, tmp_path, log, annotations),
                             flag, relative, *named)
    assert "--dataset-list" not in message and "--dataset-path" not in message


@pytest.mark.parametrize("script", sorted(DETECTION_TOOLS))
def test_detection_tools_refuse_a_qsl_idx_beyond_the_listed_images(tmp_path, script):
    flag, relative = DETECTION_TOOLS[script]
    log = write_log(tmp_path / "log.json", (0, GOOD_BOXES), (2, ""))
    message = assert_refused(run_detection_tool(script, tmp_path, log),
                             "--mlperf-accuracy-file", flag, relative, "qsl_idx 2", "only 2 images")
    if script == "accuracy_openimages.py":  # a flag it does not have
        assert "--remove-48-empty-images" not in message


def test_accuracy_coco_suggests_dropping_remove_48_empty_images(tmp_path):
    log = write_log(tmp_path / "log.json", (0, GOOD_BOXES), (1, ""))
    assert_refused(run_detection_tool("accuracy_coco.py", tmp_path, log, "valid",
                                      "--remove-48-empty-images"),
                   "--coco-dir", "qsl_idx 1", "only 1 images with annotations",
                   "drop --remove-48-empty-images")


# ---- imagenet_val_map.py -------------------------------------------------------------------------

def _devkit(root: Path, image_count: int, seed: int) -> tuple[Path, list[str]]:
    """A devkit of 1,000 leaf classes whose ILSVRC2012_IDs are a shuffle of the sorted WNIDs
    (as in the real one), plus 3 non-leaf synsets; returns it and each image's WNID."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    wnids = [f"n{number:08d}" for number in rng.choice(10**8, 1000, replace=False)]
    by_id = list(rng.permutation(wnids))  # ILSVRC2012_ID i+1 -> by_id[i]
    rows = [(i + 1, wnid, 0) for i, wnid in enumerate(by_id)]
    rows += [(1001 + i, f"n9999999{i}", 5) for i in range(3)]
    synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"),
                                    ("num_children", "O")])
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    truth_ids = rng.integers(1, 1001, image_count)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{i}\n" for i in truth_ids))
    return data.parent, [by_id[i - 1] for i in truth_ids]


def _val_folder(root: Path, count: int) -> Path:
    folder = root / "val"
    folder.mkdir()
    for number in range(1, count + 1):
        cv2.imwrite(str(folder / f"ILSVRC2012_val_{number:08d}.JPEG"),
                    np.full((8, 8, 3), number % 256, np.uint8))
    return folder


def test_imagenet_val_map_from_the_devkit_gives_the_caffe_labels(tmp_path, capsys):
    from datasets.imagenet import read_val_map

    devkit, image_wnids = _devkit(tmp_path, 12, seed=1)
    images = _val_folder(tmp_path, 12)
    assert imagenet_val_map.main(["--images", str(images), "--devkit", str(devkit)]) == 0
    all_wnids = sorted(_all_wnids(devkit))
    expected = [all_wnids.index(wnid) for wnid in image_wnids]
    listed = read_val_map(images)
    assert list(listed.labels) == expected
    assert [Path(listed.path(i)).name for i in range(12)] == \
        [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 13)]


def _all_wnids(devkit: Path) -> list[str]:
    from scipy.io import loadmat

    synsets = loadmat(str(devkit / "data" / "meta.mat"), squeeze_me=True)["synsets"]
    return [str(row["WNID"]) for row in synsets if int(row["num_children"]) == 0]


def test_imagenet_val_map_refuses_a_count_or_name_mismatch(tmp_path, capsys):
    devkit, _ = _devkit(tmp_path, 12, seed=2)
    images = _val_folder(tmp_path, 10)  # two images short
    assert imagenet_val_map.main(["--images", str(images), "--devkit", str(devkit)]) == 2
    error = capsys.readouterr().err
    assert "holds 10 images, the labels list 12" in error and "--subset" in error
    assert not (images / "val_map.txt").exists()
    assert imagenet_val_map.main(["--images", str(images), "--devkit", str(devkit),
                                  "--subset"]) == 0
    assert len((images / "val_map.txt").read_text().splitlines()) == 10
    cv2.imwrite(str(images / "photo.JPEG"), np.zeros((4, 4, 3), np.uint8))
    assert imagenet_val_map.main(["--images", str(images), "--devkit", str(devkit),
                                  "--subset"]) == 2
    assert "photo.JPEG" in capsys.readouterr().err


def test_imagenet_val_map_from_caffe_val_txt(tmp_path, capsys):
    images = _val_folder(tmp_path, 3)
    val_txt = tmp_path / "val.txt"
    val_txt.write_text("ILSVRC2012_val_00000002.JPEG 7\nILSVRC2012_val_00000001.JPEG 999\n"
                       "ILSVRC2012_val_00000003.JPEG 0\n")
    assert imagenet_val_map.main(["--images", str(images), "--caffe-val-txt", str(val_txt)]) == 0
    assert (images / "val_map.txt").read_text() == (
        "ILSVRC2012_val_00000001.JPEG 999\nILSVRC2012_val_00000002.JPEG 7\n"
        "ILSVRC2012_val_00000003.JPEG 0\n")
    val_txt.write_text("ILSVRC2012_val_00000001.JPEG 1000\n")
    assert imagenet_val_map.main(["--images", str(images), "--caffe-val-txt", str(val_txt)]) == 2
    assert "val.txt:1" in capsys.readouterr().err
