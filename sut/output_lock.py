"""One run per output folder: two runs writing one --output interleave LoadGen's logs and
overwrite each other's results.json, and what is left looks like one run. A run holds an
exclusive lock on a file in its folder (flock: the kernel drops it when the process ends, even
by SIGKILL); a second run finds it held and is refused before anything starts."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from harness_base import ConfigError


LOCK_NAME = ".ray-sut.lock"


@contextmanager
def output_lock(folder: str | Path, flag: str = "--output"):
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / LOCK_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{flag} {folder} is in use by another run ({holder}): two runs in "
                          f"one folder overwrite each other's logs. Give this run its own "
                          f"{flag}, or wait for the other to end.") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
