"""The cloud benchmark's QPS scan: the highest rate whose tail latency stays within a bound.

The MLPerf cloud image-classification benchmark (see the seeds) reports, for each latency bound
(10, 50, 100 and 200 ms), the highest QPS whose 99th-percentile latency meets it: first with
equal spacing between requests ("linear"), then with exponential gaps ("exponential", the
Poisson traffic of LoadGen's Server scenario).

This module is the plain-Python core: arrival schedules, one open-loop trial, latency
statistics and the search. It knows nothing of Ray or LoadGen: a trial is given an `issue`
callable and receives completions through `complete`, as LoadGen would (sut/scan_runner.py
wires it to the workers).

Latency is measured from each request's *scheduled* time, not from when the issuing thread got
round to it, so a harness that falls behind pays for it. The scan sizes a system; the number to
submit still comes from a LoadGen Server run at the QPS it finds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ARRIVALS = ("linear", "exponential")
DEFAULT_LATENCIES_S = (0.01, 0.05, 0.1, 0.2)
TILES = (50.0, 80.0, 90.0, 95.0, 99.0, 99.9)


def arrival_times(kind: str, qps: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds from the start at which each of `count` requests is due."""
    if qps <= 0 or count < 1:
        raise ValueError(f"need qps > 0 and count >= 1, got {qps}, {count}")
    if kind == "linear":
        return np.arange(count, dtype=np.float64) / qps
    if kind == "exponential":
        gaps = rng.exponential(1.0 / qps, count)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    raise ValueError(f"unknown arrival kind {kind!r}; choose one of {ARRIVALS}")


@dataclass(frozen=True)
class TrialStats:
    """What one trial measured; latencies in seconds."""

    offered_qps: float
    qps: float  # completed requests / (last completion - first due time)
    mean: float
    seconds: float
    tiles: dict[float, float]  # percentile -> latency
    lost: int = 0  # requests not completed when the trial gave up waiting

    @classmethod
    def from_times(cls, offered_qps: float, due: np.ndarray, done: np.ndarray,
                   percentiles: tuple[float, ...] = TILES) -> "TrialStats":
        """due/done: absolute times per request; done is NaN where no completion came.
        Tiles are the cloud benchmark's, plus any other `percentiles` asked for."""
        tiles = sorted(set(TILES) | set(percentiles))
        finished = ~np.isnan(done)
        latencies = done[finished] - due[finished]
        if not len(latencies):
            return cls(offered_qps, 0.0, float("inf"), 0.0, {p: float("inf") for p in tiles},
                       int(len(done)))
        seconds = float(np.max(done[finished]) - due[0])
        return cls(offered_qps, float(len(latencies) / seconds) if seconds > 0 else 0.0,
                   float(latencies.mean()), seconds,
                   {p: float(np.percentile(latencies, p)) for p in tiles},
                   int(len(done) - len(latencies)))

    def meets(self, bound_s: float, percentile: float = 99.0) -> bool:
        """Every request answered (the trial waits several bounds past the last due time, so an
        unanswered request is far beyond the bound), and the percentile within the bound."""
        return self.lost == 0 and self.tiles[percentile] <= bound_s

    def line(self, name: str) -> str:
        """The cloud benchmark's trial line."""
        tiles = ",".join(f"{p:g}:{value:.4f}" for p, value in self.tiles.items())
        lost = f", lost={self.lost}" if self.lost else ""
        return (f"{name} qps={self.qps:.2f}, mean={self.mean:.6f}, time={self.seconds:.2f}, "
                f"tiles={tiles}{lost}")


class OpenLoopTrial:
    """Sends one request per due time, whatever the answers do, and times every completion.

    `complete(batch, payload_data, payload_offsets)` is the completion end (a
    sut.dispatch.CompleteFn): a second completion of a request is ignored. `run` gets the
    issuing end.
    """

    def __init__(self, schedule: np.ndarray, sample_indices: np.ndarray,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if len(schedule) != len(sample_indices):
            raise ValueError("one sample index per scheduled request")
        self._schedule = np.asarray(schedule, dtype=np.float64)
        self._indices = np.asarray(sample_indices, dtype=np.int64)
        self._clock = clock
        self._sleep = sleep
        self._done = np.full(len(schedule), np.nan)
        self._remaining = len(schedule)
        self._lock = threading.Lock()
        self._all_done = threading.Event()

    def complete(self, batch, payload_data=None, payload_offsets=None) -> None:
        now = self._clock()
        ids = np.asarray(batch.response_ids, dtype=np.int64)
        with self._lock:
            fresh = ids[np.isnan(self._done[ids])]
            self._done[fresh] = now
            self._remaining -= len(np.unique(fresh))
            if self._remaining <= 0:
                self._all_done.set()

    def run(self, issue: Callable[[np.ndarray, np.ndarray], None], offered_qps: float,
            wait_s: float, percentiles: tuple[float, ...] = TILES,
            stopped: Callable[[], bool] = lambda: False) -> TrialStats:
        """Issue on schedule, then wait up to wait_s for the last answers.

        `issue(response_ids, sample_indices)` receives every request that is due, in order
        (several at once when the thread woke late); response id i is request i of the schedule.
        `stopped()` true (the run is aborting) ends the issuing and the wait.
        """
        start = self._clock()
        sent, count = 0, len(self._schedule)
        while sent < count and not stopped():
            now = self._clock() - start
            due = int(np.searchsorted(self._schedule, now, side="right"))
            if due > sent:
                issue(np.arange(sent, due, dtype=np.uint64), self._indices[sent:due])
                sent = due
            else:
                self._sleep(min(self._schedule[sent] - now, 0.005))
        if sent == count:
            self._all_done.wait(wait_s)
        with self._lock:
            done = self._done.copy()
        return TrialStats.from_times(offered_qps, start + self._schedule, done, percentiles)


@dataclass
class BoundResult:
    """The search for one (arrival kind, latency bound)."""

    kind: str
    bound_s: float
    best_qps: int = -1  # -1: not even the lowest rate tried met the bound
    measured_latency: float | None = None  # the percentile at best_qps
    converged: bool = True  # False: stopped by a trial limit, not by the precision
    trials: list[tuple[int, TrialStats, bool]] = field(default_factory=list)


def find_max_qps(trial: Callable[[int], TrialStats], kind: str, bound_s: float,
                 start_qps: int, known_good: int = 0, percentile: float = 99.0,
                 max_qps: int | None = None, precision: float = 0.02,
                 max_doublings: int = 24, max_bisections: int = 10,
                 on_trial: Callable[[int, TrialStats, bool], None] = lambda *a: None
                 ) -> BoundResult:
    """Double the rate until a trial misses the bound, then bisect between the best rate that
    met it and the lowest that did not, to within `precision` (at least 1 QPS).

    known_good: a rate already known to meet this bound (it met a tighter one); the search
    starts above it. max_qps: the search reports it if it is met, and tries nothing higher.
    Rates are whole QPS, as the cloud benchmark reports them. A search cut short by
    max_doublings or max_bisections says so (converged=False).
    """
    result = BoundResult(kind, bound_s)
    ceiling = max_qps or float("inf")
    low, high = max(0, known_good), None
    if low and low >= ceiling:
        result.best_qps = low  # already met at the ceiling under a tighter bound
        return result
    qps = int(min(max(1, int(start_qps), 2 * low), ceiling))
    doublings = bisections = 0
    while True:
        stats = trial(qps)
        passed = stats.meets(bound_s, percentile)
        result.trials.append((qps, stats, passed))
        on_trial(qps, stats, passed)
        if passed:
            low = qps
            result.best_qps, result.measured_latency = qps, stats.tiles[percentile]
        else:
            high = qps
        if high is None:
            if qps >= ceiling:
                break
            if doublings == max_doublings:
                result.converged = False
                break
            doublings += 1
            qps = int(min(2 * qps, ceiling))
            continue
        if high - low <= max(1, int(precision * high)):
            break
        qps = (low + high) // 2
        if qps < 1 or qps in (low, high):
            break
        if bisections == max_bisections:
            result.converged = False
            break
        bisections += 1
    if result.best_qps < 0 and known_good > 0:
        result.best_qps = known_good  # every higher rate failed; the tighter bound's rate holds
    return result


def final_result(results: list[BoundResult]) -> dict[str, dict[str, int]]:
    """{'linear': {'0.01': 128, ...}, 'exponential': {...}}, as the cloud benchmark prints."""
    table: dict[str, dict[str, int]] = {}
    for result in results:
        table.setdefault(result.kind, {})[f"{result.bound_s:g}"] = result.best_qps
    return table
