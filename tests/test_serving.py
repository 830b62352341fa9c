"""The serving path (scheduler, Dispatcher, ledger, Completer, completion loop) on threads, no
Ray, no LoadGen, with failures injected: every sample answered once, with its own answer."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from actors.messages import BatchFailure, BatchResult
from sut.serving import LocalWorkers, ServingPath


class EchoWorker:
    """Answers each sample with its QSL index (8 bytes), so a wrong pairing shows. Faults:
    die_on_call (the worker is lost during that call), fail_batch (that batch fails once),
    hang (never answers)."""

    def __init__(self, name: str, die_on_call: int | None = None,
                 fail_batch: int | None = None, hang: bool = False) -> None:
        self.name, self.calls = name, 0
        self.die_on_call, self.fail_batch, self.hang = die_on_call, fail_batch, hang
        self.release = threading.Event()

    def run_batches(self, batches):
        self.calls += 1
        if self.hang:
            self.release.wait()
        if self.calls == self.die_on_call:
            raise SystemExit("killed")  # LocalWorkers reports the worker lost
        answers = []
        for batch in batches:
            if batch.batch_id == self.fail_batch:
                self.fail_batch = None
                answers.append(BatchFailure(batch.batch_id, self.name, "injected"))
                continue
            data = batch.sample_indices.astype(np.int64).view(np.uint8)
            offsets = np.arange(len(batch) + 1, dtype=np.int64) * 8
            answers.append(BatchResult(batch.batch_id, self.name, data, offsets))
        return answers


class Answers:
    """LoadGen's QuerySamplesComplete stand-in: response id -> the index its payload names."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[int] = []
        self.index_of: dict[int, int | None] = {}
        self.all_in = threading.Event()
        self.expected = 0

    def __call__(self, batch, data, offsets) -> None:
        with self.lock:
            for i, response_id in enumerate(batch.response_ids.tolist()):
                self.seen.append(response_id)
                self.index_of[response_id] = (None if data is None else int(
                    np.frombuffer(data[offsets[i]:offsets[i + 1]].tobytes(), np.int64)[0]))
            if len(self.seen) >= self.expected:
                self.all_in.set()


def serve(workers, scenario, count, max_batchsize=4, one_by_one=False, stall_s=None):
    pool = LocalWorkers({worker.name: worker for worker in workers})
    answers = Answers()
    answers.expected = count
    path = ServingPath(pool, scenario, max_batchsize, answers, itertools.count(), 15_000_000,
                       batch_window_s=0.002, stall_timeout_s=stall_s)
    ids = np.arange(count, dtype=np.uint64) + 10_000
    indices = (np.arange(count, dtype=np.int64) * 7) % 50
    try:
        with path:
            if one_by_one:
                for i in range(count):
                    path.dispatcher.issue(ids[i:i + 1], indices[i:i + 1])
                    time.sleep(0.0002)
            else:
                path.dispatcher.issue(ids, indices)
            path.dispatcher.flush()
            assert answers.all_in.wait(30), f"{len(answers.seen)} of {count} answered"
    finally:
        for worker in workers:
            worker.release.set()
        pool.close()
    return answers, path, pool, dict(zip(ids.tolist(), indices.tolist()))


@pytest.mark.parametrize("scenario, one_by_one", [("Offline", False), ("Server", True)])
def test_a_worker_lost_mid_call_loses_and_duplicates_nothing(scenario, one_by_one):
    # Call 2: each worker surely gets two (its two slots fill at the first put).
    workers = [EchoWorker("a", die_on_call=2), EchoWorker("b")]
    answers, path, pool, expected = serve(workers, scenario, 400, one_by_one=one_by_one)
    assert sorted(answers.seen) == sorted(expected)  # each exactly once
    assert answers.index_of == expected  # and each with its own answer
    assert [worker for worker, _ in pool.lost_workers] == ["a"]
    assert not path.completer.aborted and path.stopped_cleanly


def test_a_failed_batch_is_retried_and_answered_once():
    answers, path, pool, expected = serve([EchoWorker("a", fail_batch=2)], "Offline", 40)
    assert answers.index_of == expected and len(answers.seen) == 40
    assert path.completer.retried_batches == 1
    assert [(batch, worker) for batch, worker, _ in pool.failures()] == [(2, "a")]


def test_losing_every_worker_aborts_and_closes_every_sample_out():
    workers = [EchoWorker("a", die_on_call=1), EchoWorker("b", die_on_call=2)]
    answers, path, pool, expected = serve(workers, "Offline", 100)
    assert sorted(answers.seen) == sorted(expected)
    reason = path.completer.abort_reason
    assert reason.startswith("no worker left: ") and "a (SystemExit" in reason and "b (" in reason
    assert {worker for worker, _ in pool.lost_workers} == {"a", "b"}


def test_a_worker_that_never_answers_warns_then_ends_in_a_stall_abort(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="sut.completion"):
        answers, path, _, expected = serve([EchoWorker("a", hang=True)], "Offline", 8,
                                           stall_s=3.0)
    warnings = [r.getMessage() for r in caplog.records if "stuck backend" in r.getMessage()]
    assert len(warnings) == 1 and "8 samples outstanding" in warnings[0]
    assert sorted(answers.seen) == sorted(expected)
    assert set(answers.index_of.values()) == {None}  # closed out empty, so LoadGen returns
    assert "no result for 3 s with 8 samples outstanding" in path.completer.abort_reason


def test_server_messages_stay_bounded_by_the_window():
    """2,000 arrivals in about 0.4 s through a 2 ms window: far fewer calls than samples."""
    answers, path, pool, expected = serve([EchoWorker("a")], "Server", 2000, max_batchsize=64,
                                          one_by_one=True)
    assert answers.index_of == expected
    elapsed_windows = 2000 * 0.0002 / 0.002
    assert pool.scheduler.calls_sent < 3 * elapsed_windows + 20, pool.scheduler.calls_sent


def test_the_worker_gathers_one_call_while_another_runs_on_the_device():
    """Two calls at once (the actor's two serve threads): the second call's gather must not
    wait for the first call's inference, and inference itself stays one batch at a time."""
    from actors.backends import BackendOptions
    from actors.messages import Batch
    from actors.worker import InferenceWorker

    worker = InferenceWorker("w", "null", BackendOptions(model_path="none",
                                                         sample_shape=(3, 8, 8)), "imagenet")
    worker.set_samples(np.zeros((4, 3, 8, 8), np.uint8), np.arange(4))
    second_gathering, on_device = threading.Event(), threading.Semaphore(1)
    overlapped, gather = [], worker.inputs_for
    predict = worker._predict

    def inputs_for(batch):
        if batch.batch_id == 2:
            second_gathering.set()
        return gather(batch)

    def slow_predict(inputs):
        assert on_device.acquire(blocking=False), "two batches on the device at once"
        try:
            if not overlapped:
                overlapped.append(second_gathering.wait(5))  # the other call gathers meanwhile
            return predict(inputs)
        finally:
            on_device.release()

    worker.inputs_for, worker._predict = inputs_for, slow_predict
    first = threading.Thread(target=worker.run_batches,
                             args=([Batch(1, np.zeros(1, np.uint64), np.array([0]))],))
    first.start()
    time.sleep(0.1)  # the first call is on the device
    answers = worker.run_batches([Batch(2, np.zeros(1, np.uint64), np.array([1]))])
    first.join(10)
    assert overlapped == [True] and isinstance(answers[0], BatchResult)


class SlowWorker(EchoWorker):
    def run_batches(self, batches):
        time.sleep(0.3)  # longer than the completion loop's wait for events
        return super().run_batches(batches)


class ThreadNoting(Answers):
    """Notes the thread each answer comes on; can raise on one batch (a broken LoadGen end)."""

    def __init__(self, raise_on_batch: int | None = None) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.raise_on_batch = raise_on_batch

    def __call__(self, batch, data, offsets) -> None:
        if batch.batch_id == self.raise_on_batch and data is not None:
            self.raise_on_batch = None
            raise RuntimeError("injected")
        self.threads.add(threading.current_thread().name)
        super().__call__(batch, data, offsets)


def test_in_process_replies_are_answered_on_the_workers_thread_and_count_as_progress():
    """No hand-off to the completion thread; and calls slower than its wait for events do not
    look like a stall to it (a 1 s stall bound, six 0.3 s calls one after another: 1.8 s)."""
    pool = LocalWorkers({"a": SlowWorker("a")})
    answers = ThreadNoting()
    answers.expected = 6
    path = ServingPath(pool, "SingleStream", 1, answers, itertools.count(), 15_000_000,
                       stall_timeout_s=1.0)
    ids = np.arange(6, dtype=np.uint64)
    try:
        with path:
            for i in range(6):  # one query in flight at a time, as SingleStream
                path.dispatcher.issue(ids[i:i + 1], np.array([i], np.int64))
                deadline = time.monotonic() + 10
                while len(answers.seen) <= i and time.monotonic() < deadline:
                    time.sleep(0.01)
            assert answers.all_in.wait(30)
    finally:
        pool.close()
    assert answers.index_of == {i: i for i in range(6)}
    assert answers.threads == {"serve-a"}
    assert not path.completer.aborted and pool.events.empty()


def test_a_failure_applying_an_in_process_reply_ends_the_run_and_the_thread_lives_on():
    pool = LocalWorkers({"a": EchoWorker("a")})
    answers = ThreadNoting(raise_on_batch=1)
    answers.expected = 7  # batch 1 (sample 1) is the one whose answer failed
    path = ServingPath(pool, "SingleStream", 1, answers, itertools.count(), 15_000_000)
    try:
        with path:
            for i in range(8):
                path.dispatcher.issue(np.array([i], np.uint64), np.array([i], np.int64))
            assert answers.all_in.wait(30), answers.seen
        assert path.completer.abort_reason.startswith(
            "the completion path failed: RuntimeError: injected")
        assert isinstance(path.completion.error, RuntimeError)
        assert sorted(answers.seen) == [0, 2, 3, 4, 5, 6, 7]
        assert pool._threads[0].is_alive()
    finally:
        pool.close()


def _stream(pool, answers, count, stall_s=None):
    """Issue `count` SingleStream queries from this thread, each after the last is answered."""
    path = ServingPath(pool, "SingleStream", 1, answers, itertools.count(), 15_000_000,
                       stall_timeout_s=stall_s)
    try:
        with path:
            for i in range(count):
                path.dispatcher.issue(np.array([i], np.uint64), np.array([i], np.int64))
                deadline = time.monotonic() + 10
                while len(answers.seen) <= i and time.monotonic() < deadline:
                    time.sleep(0.001)
            assert answers.all_in.wait(10), f"{len(answers.seen)} of {count} answered"
    finally:
        pool.close()
    return path


def test_inline_calls_run_and_are_answered_on_the_issuing_thread():
    answers = ThreadNoting()
    answers.expected = 6
    path = _stream(LocalWorkers({"a": EchoWorker("a")}, calls_inline=True), answers, 6)
    assert answers.index_of == {i: i for i in range(6)}
    assert answers.threads == {threading.current_thread().name}
    assert not path.completer.aborted


def test_an_inline_retry_goes_to_the_serving_thread_and_is_answered_once():
    """Batch 2 fails once; its retry is sent while this thread answers the failure, and the
    completion path is not re-entrant: run here, it would wait on itself for ever."""
    answers = ThreadNoting()
    answers.expected = 5
    pool = LocalWorkers({"a": EchoWorker("a", fail_batch=2)}, calls_inline=True)
    finished: list = []
    issuer = threading.Thread(target=lambda: finished.append(_stream(pool, answers, 5)),
                              name="loadgen-issue", daemon=True)
    issuer.start()
    issuer.join(30)
    assert finished, "the issuing thread is stuck (a retry run inline waits on itself)"
    assert answers.index_of == {i: i for i in range(5)} and len(answers.seen) == 5
    assert finished[0].completer.retried_batches == 1
    assert answers.threads == {"loadgen-issue", "serve-a"}


def test_a_worker_lost_inline_ends_the_run_with_every_sample_closed_out():
    answers = ThreadNoting()
    answers.expected = 3
    pool = LocalWorkers({"a": EchoWorker("a", die_on_call=2)}, calls_inline=True)
    path = _stream(pool, answers, 3, stall_s=5.0)
    assert sorted(answers.seen) == [0, 1, 2]
    assert answers.index_of[0] == 0 and answers.index_of[1] is None
    assert path.completer.abort_reason.startswith("no worker left: a (SystemExit")


def test_a_hung_model_cannot_hold_the_warm_up_past_its_timeout_inline():
    """Only calls from Dispatcher.issue run inline: the warm-up's batches go to the serving
    thread, so its wait times out (and the runner warns) instead of blocking LoadGen's load
    callback for ever."""
    worker = EchoWorker("a", hang=True)
    pool = LocalWorkers({"a": worker}, calls_inline=True)
    path = ServingPath(pool, "SingleStream", 1, Answers(), itertools.count(), 15_000_000)
    try:
        with path:
            came_back: list = []
            loader = threading.Thread(daemon=True, target=lambda: came_back.append(
                path.dispatcher.warm_up(0, [1], timeout_s=0.3)))
            loader.start()
            loader.join(5)
            worker.release.set()
            assert came_back == [False], "the warm-up waited on a hung model past its timeout"
    finally:
        worker.release.set()
        pool.close()


def test_calls_sent_outside_issue_go_to_the_serving_thread():
    """The completion thread (late replies applied at a test's start) and any other sender must
    not run the model themselves: the completion path would wait on its own lock."""
    answers = ThreadNoting()
    answers.expected = 2
    pool = LocalWorkers({"a": EchoWorker("a")}, calls_inline=True)
    path = ServingPath(pool, "SingleStream", 1, answers, itertools.count(), 15_000_000)
    try:
        with path:
            path.dispatcher.issue(np.array([0], np.uint64), np.array([0], np.int64))
            assert answers.threads == {threading.current_thread().name}
            sender = threading.Thread(target=path.dispatcher._emit, name="not-loadgen",
                                      args=([(np.array([1], np.uint64),
                                              np.array([1], np.int64))],))
            sender.start()
            sender.join(10)
            assert answers.all_in.wait(10)
    finally:
        pool.close()
    assert answers.index_of == {0: 0, 1: 1} and sorted(answers.seen) == [0, 1]  # once each
    assert answers.threads == {threading.current_thread().name, "serve-a"}
