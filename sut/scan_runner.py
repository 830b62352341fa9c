"""The QPS scan on the workers (scripts/qps_scan.py).

    check inputs -> Ray up -> pre-process -> workers load the model
    -> stage 1: LoadGen accuracy test on the first N images (Offline), scored as usual
    -> stages 2 and 3: for each arrival kind and latency bound, open-loop trials
       (sut/qps_scan.py) through the same serving path (sut/serving.py) as a LoadGen Server
       run, searching for the highest QPS that meets the bound

Trials bypass LoadGen, which has no equal-spacing scenario; each trial is a fresh ledger,
completer and dispatcher on the one worker pool. A trial waits a while for its last answers;
what it gave up on is dropped from the queue, so no backlog slows the next trial.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness_base import RunFailed, first_line, stop_if_requested
from sut import interrupts, loadgen_bridge
from sut.cluster import WorkerPool
from sut.config import RunConfig
from sut.dispatch import batch_id_counter
from sut.output_lock import output_lock
from sut.qps_scan import (DEFAULT_LATENCIES_S, BoundResult, OpenLoopTrial, arrival_times,
                          final_result, find_max_qps)
from sut.runner import run_test, start_session
from sut.serving import ServingPath
from sut.shared_samples import SharedSamples

log = logging.getLogger(__name__)

# After its last request is due, a trial waits this many latency bounds (at least
# MIN_WAIT_S) for the answers; a request still unanswered then is far beyond the bound.
WAIT_BOUNDS = 10
MIN_WAIT_S = 2.0
MAX_TRIAL_STRETCH = 4  # a slow trial may last up to this many --trial-seconds


@dataclass(frozen=True)
class ScanOptions:
    latencies_s: tuple[float, ...] = DEFAULT_LATENCIES_S
    arrivals: tuple[str, ...] = ("linear", "exponential")
    accuracy_count: int = 500  # 0: no accuracy stage
    trial_seconds: float = 5.0
    min_requests: int = 100  # per trial where that takes at most MAX_TRIAL_STRETCH trials' time
    start_qps: int = 10
    max_qps: int | None = None  # none: double until a rate misses the bound
    percentile: float = 99.0
    seed: int = 0


def first_images(images, count: int):
    """The first `count` samples of a listing (QSL indices unchanged)."""
    count = min(count, len(images))
    changes = {name: getattr(images, name)[:count]
               for name in ("files", "labels", "heights", "widths") if hasattr(images, name)}
    return dataclasses.replace(images, **changes)


def run_scan(config: RunConfig, images, options: ScanOptions, show_progress: bool = True) -> dict:
    """All stages; returns (and writes to <output>/qps_scan.json) what they found."""
    with output_lock(config.output):
        return _run_scan(config, images, options, show_progress)


def _run_scan(config: RunConfig, images, options: ScanOptions, show_progress: bool) -> dict:
    source = start_session(config, images, show_progress)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    batch_ids = batch_id_counter()
    results: dict = {"setup": {"model": config.model, "backend": config.backend,
                               "dataset": config.dataset, "workers": config.num_workers,
                               "device": config.device, "max_batchsize": config.max_batchsize,
                               "percentile": options.percentile,
                               "trial_seconds": options.trial_seconds}}
    bounds: list[BoundResult] = []

    def save() -> None:
        """After every bound, so a run that fails later keeps what it found."""
        results["bounds"] = [_bound_json(bound, options.percentile) for bound in bounds]
        results["final_result"] = final_result(bounds)
        results["faults"] = [f"{worker} lost: {why}" for worker, why in pool.lost_workers] + [
            f"batch {batch_id} failed on {worker}: {first_line(error)}"
            for batch_id, worker, error in pool.failures()]
        (output / "qps_scan.json").write_text(json.dumps(results, indent=2, default=str))

    with WorkerPool(config) as pool:
        stop_if_requested()
        if options.accuracy_count:
            results["accuracy"] = _accuracy_stage(config, pool, images, source, options,
                                                  output / "accuracy", batch_ids)
            save()
        try:
            _search_stages(config, pool, images, source, options, batch_ids, bounds, save)
        finally:
            save()
    print(f"===FINAL_RESULT: {results['final_result']}", flush=True)
    for fault in results["faults"]:
        print(f"fault: {fault}", flush=True)
    return results


def _accuracy_stage(config, pool, images, source, options, test_dir, batch_ids) -> dict:
    """LoadGen AccuracyOnly on the first N images, one Offline query: the usual scoring."""
    subset = first_images(images, options.accuracy_count)
    accuracy_config = _accuracy_config(config)
    settings = loadgen_bridge.build_settings(accuracy_config)
    outcome = run_test(accuracy_config, pool, settings, "accuracy", subset, source, test_dir,
                       batch_ids)
    stop_if_requested()
    if outcome.get("error"):
        raise RunFailed(f"accuracy stage: {outcome['error']}")
    return outcome.get("accuracy", {})


def _accuracy_config(config: RunConfig) -> RunConfig:
    return dataclasses.replace(config, scenario="Offline", modes=("accuracy",))


def _search_stages(config, pool, images, source, options, batch_ids, bounds, save) -> None:
    """Every (arrival kind, bound) search, appended to `bounds`; save() after each."""
    # LoadGen's rule for the model, as a Server run would load (the accuracy stage's
    # Offline settings carry the same per-model count, and a process reads the rules once).
    settings = loadgen_bridge.build_settings(_accuracy_config(config))
    count = loadgen_bridge.performance_sample_count(config, settings, len(images))
    loaded = np.arange(count, dtype=np.int64)
    pool.broadcast("set_payloads", False)
    shared = SharedSamples(pool, source, len(images))
    shared.load(loaded.tolist())
    rng = np.random.default_rng(options.seed)
    try:
        round_trip_s = _warm_up(config, pool, batch_ids, int(loaded[0]))
        for kind in options.arrivals:
            known_good = 0
            for bound_s in sorted(options.latencies_s):
                def trial(qps, kind=kind, bound_s=bound_s):
                    return _trial(config, pool, batch_ids, kind, bound_s, qps, loaded, options,
                                  rng, round_trip_s)

                def show(qps, stats, passed, kind=kind, bound_s=bound_s):
                    print(stats.line(f"{kind}/{bound_s:g}/{qps}"), flush=True)
                    if passed:
                        print("^taken", flush=True)

                result = find_max_qps(trial, kind, bound_s, options.start_qps, known_good,
                                      options.percentile, options.max_qps, on_trial=show)
                latency = ("" if result.measured_latency is None
                           else f" measured_latency={result.measured_latency:.6f}")
                print(f"===RESULT: {kind} target_latency={bound_s:g}{latency} "
                      f"qps={result.best_qps}", flush=True)
                if not result.converged:
                    print(f"WARNING: {kind}/{bound_s:g}: the search hit its trial limit; the "
                          "rate is a lower bound (try --start-qps nearer the answer)", flush=True)
                bounds.append(result)
                save()
                known_good = max(known_good, result.best_qps)
    finally:
        shared.unload()


@contextmanager
def _server_path(config, pool, batch_ids, complete, bound_s: float, round_trip_s=None):
    """The run's serving path (Server batching) for one trial, torn down after; its window
    comes from the bound and the round trip the warm-up measured, as in a LoadGen run."""
    path = ServingPath(pool, "Server", config.max_batchsize, complete, batch_ids,
                       int(bound_s * 1e9), config.server_batch_timeout_s, round_trip_s)
    unregister_interrupt = interrupts.on_interrupt(path.completer.abort)
    try:
        with path:
            yield path.dispatcher, path.completer
    finally:
        unregister_interrupt()
    stop_if_requested()
    if path.completer.aborted:
        raise RunFailed(path.completer.abort_reason)
    if not path.stopped_cleanly:
        raise RunFailed("the completion thread did not stop after a trial")


def _warm_up(config, pool, batch_ids, sample_index: int) -> float | None:
    """Warm the path up; returns its measured round trip."""
    with _server_path(config, pool, batch_ids, lambda *args: None, 0.05) as (dispatcher, _):
        if not dispatcher.warm_up(sample_index, [1] * (4 * pool.live_workers())):
            log.warning("warm-up batches did not all return within 60 s")
        return dispatcher.measure_round_trip(sample_index)


def _trial(config, pool, batch_ids, kind, bound_s, qps, loaded, options, rng, round_trip_s):
    # At least min_requests, so a slow rate still gives a percentile worth having, but never
    # longer than 4 trials: a search that walks down to a few QPS must not take minutes a step.
    seconds = max(options.trial_seconds,
                  min(options.min_requests / qps, MAX_TRIAL_STRETCH * options.trial_seconds))
    count = max(1, int(round(qps * seconds)))
    schedule = arrival_times(kind, qps, count, rng)
    samples = rng.choice(loaded, count)
    trial = OpenLoopTrial(schedule, samples)
    with _server_path(config, pool, batch_ids, trial.complete, bound_s,
                      round_trip_s) as (dispatcher, completer):
        return trial.run(dispatcher.issue, qps, max(MIN_WAIT_S, WAIT_BOUNDS * bound_s),
                         (options.percentile,), stopped=lambda: completer.aborted)


def _bound_json(bound: BoundResult, percentile: float) -> dict:
    return {"arrival": bound.kind, "latency_bound_s": bound.bound_s, "qps": bound.best_qps,
            f"p{percentile:g}_latency_s": bound.measured_latency, "converged": bound.converged,
            "trials": [{"qps": qps, "met_bound": passed, "achieved_qps": round(stats.qps, 3),
                        "mean_s": stats.mean, "seconds": round(stats.seconds, 3),
                        "lost": stats.lost,
                        "percentiles_s": {f"{p:g}": v for p, v in stats.tiles.items()}}
                       for qps, stats, passed in bound.trials]}
