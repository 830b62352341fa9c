"""`python -m sut fetch`: downloads from a local HTTP server (no network here), checked against
checksums, resumed after a cut, unpacked; and a run that finds the fetched model by itself."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import REPO
from harness_base import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from sut import fetch, known_files
from sut.known_files import DataSet, KnownFile


class FileServer:
    """Serves `files` (name -> bytes) on 127.0.0.1 with Range support. A name in `cut_once`
    is cut off after that many bytes on its first request (the full Content-Length is sent).
    Every request's (path, Range header) is logged."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.cut_once.pop(name, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.close_connection = True

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server():
    served = FileServer()
    yield served
    served.close()


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def _row(server: FileServer, name: str, data: bytes | None, checksum: str | None = None,
         **fields) -> KnownFile:
    if data is not None:
        server.files[name] = data
    return KnownFile(name, f"{server.url}/{name}", checksum, **fields)


def _use_rows(monkeypatch, *rows: KnownFile) -> None:
    monkeypatch.setattr(known_files, "MODEL_FILES", tuple(rows))
    monkeypatch.setattr(fetch, "MODEL_FILES", tuple(rows))


PAYLOAD = np.random.default_rng(3).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()


def test_a_good_file_is_downloaded_and_verified_then_found_again(server, tmp_path, monkeypatch,
                                                                 capsys):
    _use_rows(monkeypatch, _row(server, "model.onnx", PAYLOAD, _md5(PAYLOAD),
                                profiles=("resnet50-onnxruntime",), checksum_source="test"))
    argv = ["resnet50-onnxruntime", "--models-dir", str(tmp_path), "--no-progress"]
    assert fetch.main(argv) == EXIT_OK
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD
    assert "md5 verified against the published one" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.part"))
    assert fetch.main(argv) == EXIT_OK  # present: checked, not downloaded again
    assert "present" in capsys.readouterr().out
    assert len(server.requests) == 1
    # Damaged since: it is fetched again.
    (tmp_path / "model.onnx").write_bytes(PAYLOAD[:100])
    assert fetch.main(argv) == EXIT_OK
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_a_corrupted_download_is_deleted_and_reported(server, tmp_path, monkeypatch, capsys):
    served = bytearray(PAYLOAD)
    served[12345] ^= 0xFF  # one byte off
    _use_rows(monkeypatch, _row(server, "model.onnx", bytes(served), _md5(PAYLOAD)))
    assert fetch.main(["model.onnx", "--models-dir", str(tmp_path), "--no-progress"]) \
        == EXIT_FAILED
    error = capsys.readouterr().err
    assert "the file was deleted" in error and hashlib.md5(PAYLOAD).hexdigest() in error
    assert list(tmp_path.iterdir()) == []


def test_a_cut_download_resumes_where_it_stopped(server, tmp_path, monkeypatch):
    _use_rows(monkeypatch, _row(server, "model.onnx", PAYLOAD, _md5(PAYLOAD)))
    server.cut_once["model.onnx"] = 1_000_000
    assert fetch.main(["model.onnx", "--models-dir", str(tmp_path), "--no-progress"]) == EXIT_OK
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD
    assert server.requests == [("model.onnx", None), ("model.onnx", "bytes=1000000-")]


def test_a_part_left_by_an_earlier_fetch_is_continued(server, tmp_path, monkeypatch):
    _use_rows(monkeypatch, _row(server, "model.onnx", PAYLOAD, _md5(PAYLOAD)))
    (tmp_path / "model.onnx.part").write_bytes(PAYLOAD[:2_000_000])
    assert fetch.main(["model.onnx", "--models-dir", str(tmp_path), "--no-progress"]) == EXIT_OK
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD
    assert server.requests == [("model.onnx", "bytes=2000000-")]


def test_without_a_published_checksum_the_first_download_is_recorded(server, tmp_path,
                                                                    monkeypatch, capsys):
    _use_rows(monkeypatch, _row(server, "model.onnx", PAYLOAD))
    argv = ["model.onnx", "--models-dir", str(tmp_path), "--no-progress"]
    assert fetch.main(argv) == EXIT_OK
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert "No checksum is published" in capsys.readouterr().out
    assert (tmp_path / "model.onnx.sha256").read_text().split()[0] == sha
    # A later download is checked against the recorded one.
    (tmp_path / "model.onnx").unlink()
    server.files["model.onnx"] = PAYLOAD[::-1]
    assert fetch.main(argv) == EXIT_FAILED
    assert sha in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


def test_list_shows_every_file_its_checksum_and_whether_it_is_here(tmp_path, capsys):
    (tmp_path / "resnet50_v1.onnx").write_bytes(b"x" * 10)
    assert fetch.main(["--list", "--models-dir", str(tmp_path), "--data-dir",
                       str(tmp_path / "data")]) == EXIT_OK
    out = capsys.readouterr().out
    for row in known_files.MODEL_FILES:
        assert row.file in out
    line = next(line for line in out.splitlines() if line.startswith("resnet50_v1.onnx "))
    assert "md5:f6a4da60cd5f084d97efc2c1ddb10beb" in line and " yes " in line
    line = next(line for line in out.splitlines() if line.startswith("resnet50_v1.pb "))
    assert " no " in line
    assert "coco-val2017: val2017.zip" in out and "815,585,330" in out


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_a_route_it_stops_at_once_and_names_the_url(tmp_path):
    mirror = f"http://127.0.0.1:{_closed_port()}/mirror"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "sut", "fetch", "resnet50-onnxruntime",
                           "--models-dir", str(tmp_path), "--mirror", mirror],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert f"cannot reach {mirror}/resnet50_v1.onnx" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_real_table_is_checked_through_a_mirror(server, tmp_path):
    """The published md5 of resnet50_v1.onnx refuses other bytes served under its name."""
    server.files["resnet50_v1.onnx"] = b"not the model"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "sut", "fetch", "resnet50-onnxruntime",
                           "--models-dir", str(tmp_path), "--mirror", server.url],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_FAILED
    assert "f6a4da60cd5f084d97efc2c1ddb10beb" in done.stderr and "deleted" in done.stderr


def test_unknown_names_and_no_download_profiles_are_refused(tmp_path, capsys):
    assert fetch.main(["no-such-model", "--models-dir", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "fetch --list" in capsys.readouterr().err
    assert fetch.main(["retinanet-pytorch", "--models-dir", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "pickled module" in capsys.readouterr().err


def test_a_member_of_an_archive_is_taken_out_under_its_launcher_name(server, tmp_path,
                                                                    monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("ssd/frozen_inference_graph.pb", PAYLOAD[:5000]),
                           ("ssd/other.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    server.files["ssd.tar.gz"] = buffer.getvalue()
    _use_rows(monkeypatch, KnownFile("ssd.pb", f"{server.url}/ssd.tar.gz",
                                     _md5(buffer.getvalue()), ("ssd-mobilenet-tf",),
                                     member="frozen_inference_graph.pb"))
    assert fetch.main(["ssd-mobilenet-tf", "--models-dir", str(tmp_path), "--no-progress"]) \
        == EXIT_OK
    assert (tmp_path / "ssd.pb").read_bytes() == PAYLOAD[:5000]


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_coco_is_fetched_unpacked_into_the_layout_the_runs_read(server, tmp_path, monkeypatch):
    from known_detection import write_detection_set

    from datasets.registry import get_dataset

    source = tmp_path / "source"
    known = write_detection_set(source, 4, seed=5, images_folder="val2017",
                                annotations_name="annotations/instances_val2017.json")
    images = _zip({f"val2017/{p.name}": p.read_bytes()
                   for p in sorted((source / "val2017").iterdir())})
    notes = _zip({"annotations/instances_val2017.json": known.annotations_file.read_bytes()})
    data = DataSet("coco-val2017", (
        _row(server, "val2017.zip", images, "sha256:" + hashlib.sha256(images).hexdigest()),
        _row(server, "annotations.zip", notes, _md5(notes))),
        ("val2017", "annotations/instances_val2017.json"), "note")
    monkeypatch.setitem(known_files.DATA_SETS, "coco-val2017", data)
    monkeypatch.setitem(fetch.DATA_SETS, "coco-val2017", data)
    folder = tmp_path / "data"
    argv = ["coco-val2017", "--data-dir", str(folder), "--no-progress"]
    assert fetch.main(argv) == EXIT_OK
    listed = get_dataset("coco-300").list_samples(str(folder / "coco-val2017"), None, None)
    assert len(listed) == 4
    assert sorted(p.name for p in (folder / "coco-val2017" / "val2017").iterdir()) == \
        sorted(image["file_name"] for image in known.images)
    assert not list((folder / ".archives").glob("*.zip"))  # the unpacked set replaces them
    assert fetch.main(argv) == EXIT_OK and len(server.requests) == 2  # present: no download


def test_an_archive_member_outside_the_folder_is_refused(server, tmp_path, monkeypatch, capsys):
    evil = _zip({"val2017/a.jpg": b"x", "../../escaped.txt": b"x"})
    data = DataSet("coco-val2017", (_row(server, "val2017.zip", evil, _md5(evil)),),
                   ("val2017",), "note")
    monkeypatch.setitem(fetch.DATA_SETS, "coco-val2017", data)
    assert fetch.main(["coco-val2017", "--data-dir", str(tmp_path / "d"), "--no-progress"]) \
        == EXIT_FAILED
    assert "outside the folder" in capsys.readouterr().err
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "d" / "coco-val2017").exists()


def test_a_run_without_model_finds_the_fetched_file(run_known, known_set, model_dir, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    missing = run_known("Offline", "--accuracy", "--models-dir", str(models), with_model=False)
    assert missing.returncode == EXIT_BAD_INPUT
    assert "python -m sut fetch resnet50-onnxruntime" in missing.stderr
    shutil.copy(known_set.model(model_dir, "vgg", "NCHW"), models / "resnet50_v1.onnx")
    found = run_known("Offline", "--accuracy", "--models-dir", str(models), with_model=False)
    assert found.returncode == EXIT_OK, found.stderr
    assert f"--model {models / 'resnet50_v1.onnx'}" in found.stdout
    assert found.results()["tests"][0]["accuracy"]["good"] == len(known_set.lines)
