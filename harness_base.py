"""What every layer of the harness shares, at the bottom of its imports.

Imports flow one way: scripts -> sut -> actors -> datasets -> this module. Here: the two kinds
of failure a user is told about and the exit codes they give, the run-wide "stop" flag that a
signal sets (sut/interrupts.py routes the signals; the long loops below it only ask), and the
one progress bar.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # a ConfigError: found before LoadGen starts
EXIT_FAILED = 3  # a RunFailed, or a test that was aborted (a fault, no worker left)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention; a signal n gives 128 + n


class ConfigError(Exception):
    """Bad input found before LoadGen starts: the message names the file or flag and the fix."""


class RunFailed(Exception):
    """A run that started could not finish correctly (for example, no worker left)."""


def first_line(message: object) -> str:
    """The first line of an error's text, for one-line reports ('' for an empty message, which
    some frameworks raise)."""
    lines = str(message).strip().splitlines()
    return lines[0] if lines else ""


_stop = threading.Event()
_stop_signal: list[int] = []  # the number of the first signal taken


def request_stop(signal_number: int) -> None:
    """A signal arrived: every long step stops at its next check."""
    if not _stop_signal:
        _stop_signal.append(signal_number)
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_if_requested() -> None:
    """Raise KeyboardInterrupt if a stop was asked: called between the steps before a test and
    between the waits of long loops (pre-processing, workers starting)."""
    if _stop.is_set():
        raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """128 + the number of the signal that stopped the run (130 for SIGINT, 143 for SIGTERM);
    130 if none was taken (a KeyboardInterrupt from elsewhere)."""
    return 128 + _stop_signal[0] if _stop_signal else EXIT_INTERRUPTED


def exit_code_for(error: BaseException) -> int:
    """The exit status a run that raised `error` ends with."""
    if isinstance(error, ConfigError):
        return EXIT_BAD_INPUT
    if isinstance(error, KeyboardInterrupt):
        return interrupted_exit_code()
    return EXIT_FAILED


def exit_code_of(job: Callable[[], int], failed: str = "run failed",
                 interrupted: str = "interrupted") -> int:
    """job()'s exit status, with this project's errors turned into theirs and one line each on
    stderr: bad input 2, a failure 3, a signal 128 + its number."""
    try:
        return job()
    except (ConfigError, RunFailed, KeyboardInterrupt) as error:
        line = (f"error: {error}" if isinstance(error, ConfigError) else interrupted
                if isinstance(error, KeyboardInterrupt) else f"{failed}: {error}")
        print(line, file=sys.stderr)
        return exit_code_for(error)


def user_data_folder() -> Path:
    """Where the harness keeps what outlives a run (fetched models and data, the results
    database): $XDG_DATA_HOME/ray-mlperf-vision, else ~/.local/share/ray-mlperf-vision."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ray-mlperf-vision"


def progress_bar(total: int | None, description: str, unit: str, enabled: bool):
    """The one progress bar (tqdm on stderr): pre-processing, samples answered. total None: a
    running count (a performance run, whose length LoadGen decides)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not enabled,
                mininterval=0.5, dynamic_ncols=True)
