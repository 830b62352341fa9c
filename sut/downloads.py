"""Resumable, verified HTTP downloads (plain Python: the `fetch` command's mechanics).

A file is written to `<name>.part` and renamed into place only once its checksum is right, so a
folder never holds a half-downloaded or corrupted file under its real name. A `.part` left by a
cut connection or a Ctrl-C is continued with an HTTP Range request (from zero if the server
ignores it). Where no checksum is published, the SHA-256 of the first download is written to
`<name>.sha256` and later fetches are checked against it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness_base import RunFailed, progress_bar

CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 20.0  # also the longest silence tolerated mid-download
RESUME_ATTEMPTS = 5  # a connection cut this many times in one fetch ends it (run again)
RECORDED_SUFFIX = ".sha256"


class Unreachable(RunFailed):
    """The host could not be reached at all (no route, DNS, refused, timed out)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # md5 or sha256, as published
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Checksum":
        algorithm, _, value = text.partition(":")
        if algorithm not in ("md5", "sha256") or not value:
            raise ValueError(f"checksum {text!r}: write it as md5:<hex> or sha256:<hex>")
        return cls(algorithm, value.lower())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def file_digest(path: Path, algorithm: str, show_progress: bool = False) -> str:
    digest = hashlib.new(algorithm)
    size = path.stat().st_size
    with open(path, "rb") as handle, progress_bar(size, f"checking {path.name}", "B",
                                                  show_progress and size > 64 * CHUNK_BYTES) as bar:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def recorded_checksum(target: Path) -> Checksum | None:
    """The SHA-256 written at the first download of a file that has no published checksum."""
    record = target.with_name(target.name + RECORDED_SUFFIX)
    if not record.is_file():
        return None
    return Checksum("sha256", record.read_text(encoding="utf-8").split()[0])


def verify(path: Path, expected: Checksum, show_progress: bool = False) -> bool:
    return file_digest(path, expected.algorithm, show_progress) == expected.hex


@dataclass(frozen=True)
class Fetched:
    path: Path
    checksum: Checksum
    downloaded: bool  # False: already present and verified
    recorded: bool  # True: no checksum was published; this SHA-256 was recorded now


def fetch_file(url: str, target: Path, published: Checksum | None, size: int | None = None,
               show_progress: bool = True) -> Fetched:
    """Make `target` the verified file at `url`. Raises Unreachable or RunFailed (a checksum
    mismatch: the bad bytes are deleted first)."""
    expected = published or recorded_checksum(target)
    if target.is_file():
        if expected is None or verify(target, expected, show_progress):
            checksum = expected or _record(target)
            return Fetched(target, checksum, downloaded=False, recorded=expected is None)
        target.unlink()  # damaged or replaced since: fetch it again
    part = target.with_name(target.name + ".part")
    _download(url, part, size, show_progress)
    if expected is not None and not verify(part, expected, show_progress):
        actual = file_digest(part, expected.algorithm)
        part.unlink()
        raise RunFailed(f"{url}: the download's {expected.algorithm} is {actual}, the published "
                        f"one {expected.hex}; the file was deleted. Run the fetch again (a "
                        "proxy or mirror serving another file gives the same result).")
    os.replace(part, target)
    checksum = expected or _record(target)
    return Fetched(target, checksum, downloaded=True, recorded=expected is None)


def _record(target: Path) -> Checksum:
    checksum = Checksum("sha256", file_digest(target, "sha256"))
    record = target.with_name(target.name + RECORDED_SUFFIX)
    record.write_text(f"{checksum.hex}  {target.name}\n", encoding="utf-8")
    return checksum


def _download(url: str, part: Path, size: int | None, show_progress: bool) -> None:
    """Append to `part` until the server says the file is complete, resuming after a cut. The
    folder and the progress bar appear only once the server has answered."""
    cuts, bar = 0, None
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            response = _open(url, have)
            if response is None:
                return  # the range starts at the end: nothing more to send
            if bar is None:
                bar = progress_bar(size, f"fetching {part.name.removesuffix('.part')}", "B",
                                   show_progress)
                bar.unit_scale, bar.unit_divisor = True, 1024
            try:
                total = _receive(response, part, have, bar)
            except (http.client.IncompleteRead, ConnectionError, socket.timeout,
                    TimeoutError) as error:
                if part.exists() and part.stat().st_size > have and cuts < RESUME_ATTEMPTS:
                    cuts += 1
                    continue  # progress was made: resume from where it stopped
                raise RunFailed(f"{url}: the connection was lost ({error or type(error).__name__})"
                                f" after {part.stat().st_size if part.exists() else 0:,} bytes; "
                                "what arrived is kept: run the fetch again to resume.") from None
            if total is None or part.stat().st_size >= total:
                return
    finally:
        if bar is not None:
            bar.close()


def _open(url: str, have: int):
    """The response to a request from byte `have`; None if the file is complete already."""
    request = urllib.request.Request(url, headers={"User-Agent": "ray-mlperf-vision fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            return None
        raise RunFailed(f"{url}: the server answered HTTP {error.code} {error.reason}. Check "
                        "the URL (or --mirror), or try later.") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"cannot reach {url} ({reason}). Without a network route to the host "
                          "nothing can be fetched: download the file elsewhere and copy it "
                          "into the folder, or give --mirror.") from None


def _receive(response, part: Path, have: int, bar) -> int | None:
    """Write the response's body to `part` (appended when it answers the range); returns the
    file's full size when the server tells it."""
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        bar.n = have if resumed else 0
        if bar.total is None and total is not None:
            bar.total = total
        bar.refresh()
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)
        return total
