"""One benchmark run, start to finish.

    check inputs -> Ray up -> pre-process into the cache (Ray tasks) -> workers load the model
    -> for each test (performance and/or accuracy): LoadGen drives the SUT -> score, report

Everything up to "workers load the model" can fail with a ConfigError; LoadGen starts only after.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path


from datasets.accuracy import read_accuracy_log, score_imagenet
from datasets.cache import SampleSource, ensure_preprocessed, reference_preprocessed_source
from datasets.imagenet import ImageList
from datasets.registry import get_dataset
from harness_base import (EXIT_FAILED, ConfigError, RunFailed, first_line,
                          interrupted_exit_code, progress_bar, stop_if_requested, stop_requested)
from sut import interrupts, loadgen_bridge
from sut.cluster import WorkerPool, check_placement, connect, open_pool
from sut.config import RunConfig
from sut.dispatch import Completer, batch_id_counter
from sut.mlperf_rules import accuracy_verdict, verdict_line
from sut.output_lock import output_lock
from sut.report import (CompletionTimeline, format_summary, mark_aborted, summarize_test,
                        write_results)
from sut.serving import ServingPath
from sut.shared_samples import SharedSamples

log = logging.getLogger(__name__)

# After an abort every sample is answered at once, and LoadGen returns at once from an Offline
# test (one query). The other scenarios keep LoadGen's schedule to the end of the duration (it
# has no way to end a test early), so the process ends CUT_OFF_S after the abort, its marks and
# results.json written first; an Offline test that has not returned in ABORT_GRACE_S, likewise.
ABORT_GRACE_S = 60.0
CUT_OFF_S = 5.0


def prepare_samples(config: RunConfig, images: ImageList, show_progress: bool) -> SampleSource:
    spec = get_dataset(config.dataset)
    if config.preprocessed_dir:
        return reference_preprocessed_source(config.preprocessed_dir, images, spec,
                                             config.data_format)
    folder = ensure_preprocessed(images, spec, config.data_format, config.cache_dir,
                                 use_ray=True, show_progress=show_progress)
    return SampleSource(folder, images, spec.sample_shape(config.data_format), spec.stored_dtype)


def start_session(config: RunConfig, images: ImageList, show_progress: bool) -> SampleSource:
    """Join or start Ray, check the placement, pre-process: what every job does before its
    workers start. A Ctrl-C in between stops it here (KeyboardInterrupt), and one taken
    before (say while the embedded default's model was exported) never starts Ray."""
    stop_if_requested()
    connect(config)
    stop_if_requested()
    check_placement(config)
    source = prepare_samples(config, images, show_progress)
    stop_if_requested()
    return source


def run(config: RunConfig, images: ImageList, show_progress: bool = True) -> dict:
    """Run every test of the config; returns the results dict (also written as results.json)."""
    with output_lock(config.output):
        return _run(config, images, show_progress)


def _run(config: RunConfig, images: ImageList, show_progress: bool) -> dict:
    settings = loadgen_bridge.build_settings(config)
    loadgen_bridge.check_schedulable(settings, config)  # before Ray: LoadGen's memory
    source = start_session(config, images, show_progress)
    output = Path(config.output)
    results: dict = {"notes": list(config.notes), "tests": [], "setup": _setup(config)}
    batch_ids = batch_id_counter()
    with open_pool(config) as pool:
        results["setup"]["worker_details"] = pool.descriptions
        results["setup"]["transport"] = pool.transport
        for mode in config.modes:
            if stop_requested():
                break
            test_dir = output if len(config.modes) == 1 else output / mode
            outcome = run_test(config, pool, settings, mode, images, source, test_dir, batch_ids,
                               show_progress, results)
            results["tests"].append(outcome)
            if outcome.get("error"):
                break
    results["results_file"] = str(output / "results.json")
    write_results(results, output)
    stop_if_requested()
    return results


def _setup(config: RunConfig) -> dict:
    return {"model": config.model, "backend": config.backend, "dataset": config.dataset,
            "data_format": config.data_format, "profile": config.profile,
            "model_name": config.model_name, "scenario": config.scenario,
            "max_batchsize": config.max_batchsize, "workers": config.num_workers,
            "gpus": config.gpus, "device": config.device, "user_conf": config.user_conf}


def run_test(config: RunConfig, pool: WorkerPool, settings, mode: str, images: ImageList,
             source: SampleSource, test_dir: Path, batch_ids, show_progress: bool = True,
             results: dict | None = None) -> dict:
    # Samples answered: out of the set in an accuracy run; a running count in a performance run.
    progress = progress_bar(len(images) if mode == "accuracy" else None,
                            f"{config.scenario} {mode}", "sample", show_progress)

    timeline = CompletionTimeline()

    def complete(batch, payload_data, payload_offsets) -> None:
        loadgen_bridge.complete_samples(batch, payload_data, payload_offsets)
        progress.update(len(batch))
        timeline.add(len(batch))

    path = ServingPath(pool, config.scenario, config.max_batchsize, complete, batch_ids,
                       settings.server_target_latency_ns, config.server_batch_timeout_s)
    completer, dispatcher = path.completer, path.dispatcher
    # Payload bytes travel back only when LoadGen logs them: accuracy mode, or an audit
    # (compliance) config that samples the accuracy log during a performance run.
    pool.broadcast("set_payloads", mode == "accuracy" or bool(config.audit_conf))
    shared = SharedSamples(pool, source, len(images))

    def load(indices: list[int]) -> None:
        """LoadGen's load callback: put the samples in the object store; before a timed test,
        warm the whole path up with a few batches that LoadGen never sees."""
        shared.load(indices)
        if mode != "accuracy" and not completer.aborted:
            if not dispatcher.warm_up(indices[0], [1] * (4 * pool.live_workers())):
                log.warning("warm-up batches did not all return within 60 s")
            measured["round_trip_s"] = path.measure(indices[0])

    measured: dict = {}
    performance_count = loadgen_bridge.performance_sample_count(config, settings, len(images))
    unregister_interrupt = interrupts.on_interrupt(completer.abort)

    def write_cut_off(reason: str) -> None:
        """The process ends before LoadGen returns: results.json (the tests so far and this
        one, ABORTED) and the marks beside LoadGen's logs, which stop mid-test."""
        outcome = {"scenario": config.scenario, "mode": mode, "result": "ABORTED",
                   "note": "the process was ended before LoadGen returned: its logs here stop "
                           "mid-test"}
        mark_aborted(outcome, reason, test_dir)
        earlier = results or {"tests": []}
        write_results({**earlier, "tests": earlier["tests"] + [outcome]}, config.output)

    unregister_last_words = interrupts.before_forced_exit(write_cut_off)
    grace_s = ABORT_GRACE_S if config.scenario == "Offline" else CUT_OFF_S
    watchdog = _AbortWatchdog(completer, grace_s)
    failures_before = len(pool.failures())
    calls_before, batches_before = pool.scheduler.calls_sent, pool.scheduler.batches_sent
    busy_before = dict(pool.collector.busy_seconds_by_worker)
    started = time.monotonic()
    test_seconds = 0.0
    try:
        with path:
            watchdog.start()
            callbacks = [_never_raise(name, function, completer) for name, function in (
                ("issue_queries", dispatcher.issue), ("flush_queries", dispatcher.flush),
                ("load_query_samples", load), ("unload_query_samples", shared.unload))]
            test_started = time.monotonic()
            timeline.start()
            loadgen_bridge.run_test(settings, mode, len(images), performance_count, *callbacks,
                                    str(test_dir), trace=config.debug,
                                    audit_conf=config.audit_conf)
            test_seconds = time.monotonic() - test_started
    finally:
        unregister_interrupt()
        unregister_last_words()
        watchdog.stop()
        shared.unload()
        progress.close()
    outcome = summarize_test(config.scenario, mode, test_dir)
    outcome["wall_seconds"] = round(time.monotonic() - started, 3)
    outcome["retried_batches"] = completer.retried_batches
    outcome["samples_stored_on_nodes"] = shared.stored_on_nodes
    # The hot path's Ray messages: one call (and its reply) per entry of worker_calls.
    outcome["worker_calls"] = pool.scheduler.calls_sent - calls_before
    outcome["batches"] = pool.scheduler.batches_sent - batches_before
    if measured.get("round_trip_s") is not None:
        outcome["round_trip_ms"] = round(measured["round_trip_s"] * 1e3, 3)
        if config.scenario == "Server":
            outcome["server_window_ms"] = round(path.dispatcher.window_s * 1e3, 3)
    if test_seconds:
        outcome["worker_calls_per_second"] = round(outcome["worker_calls"] / test_seconds, 1)
        outcome["busy_share_by_worker"] = {
            worker: round((busy - busy_before.get(worker, 0.0)) / test_seconds, 4)
            for worker, busy in pool.collector.busy_seconds_by_worker.items()}
    if mode != "accuracy":
        outcome["timeline"] = timeline.as_json()
    faults = [f"{worker} lost: {why}" for worker, why in pool.lost_workers]
    faults += [f"batch {batch_id} failed on {worker}: {first_line(error)}"
               for batch_id, worker, error in pool.failures()[failures_before:]]
    if faults:
        outcome["faults"] = faults
    if completer.abort_reason:
        mark_aborted(outcome, completer.abort_reason, test_dir)
    elif mode == "accuracy":
        outcome["accuracy"] = score_test(config, images, test_dir)
    return outcome


def _never_raise(name: str, function, completer: Completer):
    """A LoadGen callback must not raise: an exception crossing into LoadGen's C++ kills the
    process. Log it and abort the run instead, so LoadGen finishes and the report says why."""

    def callback(*args):
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 - reported through the abort
            if isinstance(error, (ConfigError, RunFailed)):
                log.error("%s failed: %s", name, error)  # a message already, no traceback
            else:
                log.exception("%s failed", name)
            completer.abort(f"{name} failed: {type(error).__name__}: {error}")

    return callback


def score_test(config: RunConfig, images: ImageList, test_dir: Path) -> dict:
    """Score the accuracy log the way scripts/accuracy_*.py do, and print their line."""
    log_path = Path(test_dir) / "mlperf_log_accuracy.json"
    spec = get_dataset(config.dataset)
    if spec.task == "detection":
        scored = _score_detection(spec, images, log_path)
        percent, samples = scored["mAP_percent"], len(images)
    else:
        labels = list(zip(images.files, images.labels.tolist()))
        top1 = score_imagenet(read_accuracy_log(log_path), labels)
        print(top1.line(), flush=True)
        scored = {"accuracy_percent": top1.percent, "good": top1.good, "total": top1.total,
                  "duplicates_ignored": top1.duplicates, "accuracy_log": str(log_path)}
        percent, samples = top1.percent, top1.total
    verdict = accuracy_verdict(config.model_name, percent, samples)
    print(verdict_line(config.model_name, percent, verdict), flush=True)
    return {**scored, **verdict}


def _score_detection(spec, images, log_path: Path) -> dict:
    """mAP through pycocotools, each qsl index mapped to the image the SUT listed there."""
    from datasets.coco_eval import score_detections

    image_map = [{"id": int(i), "height": int(h), "width": int(w)}
                 for i, h, w in zip(images.labels, images.heights, images.widths)]
    results_file = log_path.with_name("detections_coco_format.json")
    score = score_detections(read_accuracy_log(log_path), images.annotations_file, image_map,
                             spec.postprocess.use_inv_map, output_file=results_file,
                             expected_ids={entry["id"] for entry in image_map})
    print(score.line(), flush=True)
    return {"mAP": score.mean_ap, "mAP_percent": 100.0 * score.mean_ap, "images": score.images,
            "detections": score.detections, "images_without_detections": score.no_results,
            "duplicates_ignored": score.duplicates, "index_mismatches": score.index_mismatches,
            "samples_missing_from_log": score.missing,
            "coco_stats": score.stats, "detections_file": str(results_file),
            "accuracy_log": str(log_path)}


class _AbortWatchdog:
    """Ends the process if LoadGen has not returned grace_s after an abort (a fault's, or a
    signal's: the exit code then says which signal), writing the marks first."""

    def __init__(self, completer: Completer, grace_s: float) -> None:
        self._completer = completer
        self._grace_s = grace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="abort-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            if self._completer.aborted:
                if self._stop.wait(self._grace_s) or not interrupts.claim_exit():
                    return
                reason = (f"{self._completer.abort_reason}; the process was ended (LoadGen had "
                          f"not returned {self._grace_s:g} s later)")
                try:
                    interrupts.say_last_words(reason)  # this test's marks, then the record
                finally:
                    print(f"\nFAILED: {reason}; exiting.", flush=True)
                    interrupts.end_child_processes()
                    os._exit(interrupted_exit_code() if stop_requested() else EXIT_FAILED)


def print_summary(results: dict) -> None:
    print(format_summary(results), flush=True)
