"""Ctrl-C (SIGINT) and SIGTERM for a driver whose main thread sits inside LoadGen's C++.

Python runs its signal handlers only on the main thread between bytecodes, and LoadGen's
StartTest holds the main thread until the test ends, so a plain KeyboardInterrupt would wait
for the whole run. Instead the signals are blocked in every thread and taken by a thread of
our own. During a LoadGen test it aborts the test (LoadGen then gets every sample answered and
returns) and the runner raises KeyboardInterrupt once LoadGen is done with its logs (raising it
while LoadGen's logger still flushes crashes the process at exit); outside a test it raises
KeyboardInterrupt in the main thread at once. Either way the worker pool is closed on the way
out, and should the process still be alive after GRACE_S, it exits, ending the local Ray
instance's processes it started first (its own children) so that no actor outlives it.

A runner leaves its last words for the forced exit (before_forced_exit): results.json and the
ABORTED marks, since LoadGen's own logs then stop mid-test.

`interrupt_main` alone does not stop a main thread that waits inside C code (ray.init, a
ray.wait loop), so the long steps before LoadGen also call harness_base.stop_if_requested
between waits; the flag they read lives there, below every layer that asks.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from typing import Callable

from harness_base import interrupted_exit_code, request_stop


log = logging.getLogger(__name__)

GRACE_S = 20.0
CHILDREN_WAIT_S = 0.5

_abort_callbacks: list[Callable[[str], None]] = []
_last_words: list[Callable[[str], None]] = []
_lock = threading.Lock()


def on_interrupt(abort: Callable[[str], None]) -> Callable[[], None]:
    """Call abort(reason) if a signal arrives; returns the function that unregisters it."""
    with _lock:
        _abort_callbacks.append(abort)
    return _unregister(_abort_callbacks, abort)


def before_forced_exit(write: Callable[[str], None]) -> Callable[[], None]:
    """Call write(reason) just before a forced exit (the grace ran out, or a second signal);
    returns the function that unregisters it."""
    with _lock:
        _last_words.append(write)
    return _unregister(_last_words, write)


def _unregister(registry: list, entry) -> Callable[[], None]:
    def unregister() -> None:
        with _lock:
            if entry in registry:
                registry.remove(entry)

    return unregister


def install() -> None:
    """Route SIGINT/SIGTERM to a watcher thread. Call before any other thread starts (threads
    inherit the blocked mask); only in a process that is the harness itself."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=_watch, args=(signals,), name="signals", daemon=True).start()


def _watch(signals) -> None:
    signum = signal.sigwait(signals)
    name = signal.Signals(signum).name
    log.warning("%s received: stopping the run", name)
    request_stop(signum)
    with _lock:
        callbacks = list(_abort_callbacks)
    for abort in callbacks:
        abort(f"interrupted by {name}")
    if not callbacks:
        _thread.interrupt_main()
    threading.Timer(GRACE_S, _exit_now, args=(name, GRACE_S)).start()
    signal.sigwait(signals)  # a second Ctrl-C: leave at once
    _exit_now(name, None)


_exiting = threading.Lock()


def claim_exit() -> bool:
    """True for the first caller only: whoever ends the process (this module's forced exit, or
    the runner's abort watchdog) writes the last words once and exits; others stand back."""
    return _exiting.acquire(blocking=False)


def _exit_now(name: str, waited_s: float | None) -> None:
    if not claim_exit():
        return  # the timer and a second signal at once: one exit is enough
    why = (f"the run had not stopped {waited_s:g} s after it" if waited_s is not None
           else "a second signal")
    reason = f"interrupted by {name}; the process was ended ({why})"
    say_last_words(reason)
    print(f"\ninterrupted by {name}; exiting.", flush=True)
    end_child_processes()
    os._exit(interrupted_exit_code())


def say_last_words(reason: str) -> None:
    """Every before_forced_exit writer, newest first (a test's marks and results.json before
    the run's record, which reads them); one that raises does not stop the others."""
    with _lock:
        last_words = list(reversed(_last_words))
    for write in last_words:
        try:
            write(reason)
        except Exception:  # noqa: BLE001 - the exit must happen
            log.exception("writing the aborted run's last words failed")


def end_child_processes() -> None:
    """SIGTERM every process this one started (a local Ray instance: GCS, raylet, workers),
    wait briefly, then SIGKILL what is left. Not ray.shutdown(): with the run's threads still
    inside Ray it waits, and can end the process with Ray's own exit code. A driver joined to a
    cluster has no such children; the cluster ends the job's actors itself."""
    try:
        children = _descendants(os.getpid())
        for pid in children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + CHILDREN_WAIT_S
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.05)
        for pid in children:
            _signal(pid, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def _descendants(root: int) -> list[int]:
    """Every process below root, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass
