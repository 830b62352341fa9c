"""The plain-Python core, driven without Ray or LoadGen: batching, bookkeeping, scheduler,
results, and the whole serving path on threads with failures injected."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from actors.messages import Batch, BatchFailure, BatchResult
from sut.batching import DynamicBatcher, server_batch_timeout_s, split_into_batches
from sut.dispatch import Completer, Dispatcher
from sut.ledger import CompletionLedger
from sut.result_collector import ResultCollector, SeenIds
from sut.scheduler import BatchScheduler


def make_batch(batch_id: int, indices) -> Batch:
    indices = np.asarray(indices, dtype=np.int64)
    return Batch(batch_id, (indices + 1000).astype(np.uint64), indices)


# --- batching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("count, size", [(1, 1), (7, 3), (32, 32), (33, 32), (100, 7)])
def test_split_into_batches_keeps_every_sample_once_in_order(count, size):
    ids = np.arange(count, dtype=np.uint64) + 5
    indices = np.arange(count, dtype=np.int64)[::-1].copy()
    batches = split_into_batches(ids, indices, size)
    assert all(0 < len(b_ids) <= size for b_ids, _ in batches)
    assert np.concatenate([b for b, _ in batches]).tolist() == ids.tolist()
    assert np.concatenate([i for _, i in batches]).tolist() == indices.tolist()


def test_dynamic_batcher_emits_full_batches_at_once():
    batcher = DynamicBatcher(max_batchsize=3, timeout_s=10)
    full = batcher.add(range(7), range(100, 107), now=0.0)
    assert [b[0].tolist() for b in full] == [[0, 1, 2], [3, 4, 5]]
    assert [b[1].tolist() for b in full] == [[100, 101, 102], [103, 104, 105]]
    assert batcher.pending() == 1


def test_dynamic_batcher_holds_a_partial_batch_until_its_timeout():
    batcher = DynamicBatcher(max_batchsize=8, timeout_s=0.5)
    batcher.add([1], [11], now=10.0)
    batcher.add([2], [12], now=10.3)
    assert batcher.deadline(now=10.3) == pytest.approx(10.5)  # from the oldest sample
    assert batcher.take_due(now=10.4) is None
    due = batcher.take_due(now=10.5)
    assert due[0].tolist() == [1, 2] and due[1].tolist() == [11, 12]
    assert batcher.take_due(now=99.0) is None and batcher.deadline(now=99.0) is None


def test_dynamic_batcher_flushes_early_for_an_idle_worker_or_when_forced():
    batcher = DynamicBatcher(max_batchsize=8, timeout_s=100)
    batcher.add([1], [1], now=0.0)
    assert batcher.take_due(now=0.0, idle_worker=True)[0].tolist() == [1]
    batcher.add([2], [2], now=0.0)
    assert batcher.take_due(now=0.0, force=True)[0].tolist() == [2]


def test_dynamic_batcher_sends_lone_samples_at_once_under_light_load():
    """Arrivals closer together than the window, but fewer than one a window on average:
    each leaves at once for the idle worker (they used to wait out the window)."""
    batcher = DynamicBatcher(max_batchsize=32, timeout_s=0.005, burst=4)
    for i, now in enumerate([1.0, 1.001, 1.002, 1.020, 1.021, 1.040]):
        batcher.add([i], [i], now=now)
        assert batcher.take_due(now=now, idle_worker=True)[0].tolist() == [i]


def test_dynamic_batcher_holds_samples_for_a_busy_worker_until_the_window():
    batcher = DynamicBatcher(max_batchsize=32, timeout_s=0.005)
    batcher.add([7], [70], now=2.0)
    assert batcher.take_due(now=2.001, idle_worker=False) is None
    assert batcher.take_due(now=2.0051, idle_worker=False)[0].tolist() == [7]


def test_dynamic_batcher_sends_at_most_one_early_batch_a_window_beyond_its_burst():
    """An idle worker does not pull batches out faster than the credits allow: under load the
    messages per second stay bounded whatever the arrival rate, every sample leaves once, in
    order, and none waits longer than the window."""
    window, burst = 0.01, 4
    batcher = DynamicBatcher(max_batchsize=1000, timeout_s=window, burst=burst)
    left, arrived = [], {}
    for i in range(2000):  # 10,000 arrivals/s for 0.2 s, a worker idle at every arrival
        now = 1.0 + i * 0.0001
        batcher.add([i], [i], now=now)
        arrived[i] = now
        due = batcher.take_due(now=now, idle_worker=True)
        if due is not None:
            left.append((now, due[0].tolist()))
    assert len(left) <= burst + 0.2 / window + 1
    assert [i for _, ids in left for i in ids] == list(range(len(arrived) - batcher.pending()))
    assert all(now - arrived[ids[0]] <= window + 1e-9 for now, ids in left)


def test_dynamic_batcher_sends_no_partial_batches_while_full_ones_use_the_credits():
    """At 10,000 arrivals/s, batches of 32 fill every 3.2 ms, faster than the 5 ms window:
    an idle worker gets the full batches and no partial ones beside them."""
    batcher = DynamicBatcher(max_batchsize=32, timeout_s=0.005, burst=4)
    sizes = []
    for i in range(10_000):  # one second
        now = i * 0.0001
        ready = batcher.add([i], [i], now=now)
        due = batcher.take_due(now=now, idle_worker=True)
        sizes += [len(ids) for ids, _ in ready + ([due] if due is not None else [])]
    assert sum(sizes) + batcher.pending() == 10_000
    assert sum(size < 32 for size in sizes) <= 4 + 1  # the burst at the start


def test_dynamic_batcher_deadline_is_the_next_credit_when_none_is_left():
    batcher = DynamicBatcher(max_batchsize=32, timeout_s=0.01, burst=1)
    batcher.add([0], [0], now=5.0)
    assert batcher.take_due(now=5.0, idle_worker=True) is not None  # spends the one credit
    batcher.add([1], [1], now=5.002)
    assert batcher.take_due(now=5.002, idle_worker=True) is None
    assert batcher.deadline(now=5.002) == pytest.approx(5.010)  # the credit, before 5.012
    assert batcher.take_due(now=5.010, idle_worker=True)[0].tolist() == [1]


def test_server_window_is_four_round_trips_within_a_tenth_and_a_third_of_the_bound():
    assert server_batch_timeout_s(15_000_000) == pytest.approx(0.0015)  # nothing measured
    assert server_batch_timeout_s(15_000_000, 0.001) == pytest.approx(0.004)
    assert server_batch_timeout_s(15_000_000, 0.0001) == pytest.approx(0.0015)
    assert server_batch_timeout_s(15_000_000, 0.01) == pytest.approx(0.005)


# --- ledger and completer ---------------------------------------------------------------------

class Recorder:
    """Stands in for LoadGen's QuerySamplesComplete: records each response id."""

    def __init__(self) -> None:
        self.completed: list[int] = []
        self.payloads: dict[int, bytes | None] = {}
        self.lock = threading.Lock()

    def __call__(self, batch, data, offsets) -> None:
        with self.lock:
            for i, response_id in enumerate(batch.response_ids.tolist()):
                self.completed.append(response_id)
                self.payloads[response_id] = (None if data is None else
                                              data[offsets[i]:offsets[i + 1]].tobytes())


def test_ledger_completes_each_batch_once():
    ledger = CompletionLedger()
    ledger.record([make_batch(1, [0, 1]), make_batch(2, [2])])
    assert ledger.outstanding_samples() == 3
    assert ledger.complete(1).sample_indices.tolist() == [0, 1]
    assert ledger.complete(1) is None  # a second answer finds nothing
    assert ledger.complete(99) is None
    with pytest.raises(ValueError):
        ledger.record([make_batch(2, [5])])
    assert [b.batch_id for b in ledger.close_all()] == [2]
    assert ledger.wait_until_empty(0.01)
    # Closed: nothing more is recorded; the batches come back to be answered at once.
    late = [make_batch(7, [7])]
    assert ledger.record(late) == late and ledger.outstanding_batches() == 0


def test_completer_completes_exactly_once_despite_duplicate_results():
    ledger, recorder, resent = CompletionLedger(), Recorder(), []
    completer = Completer(ledger, recorder, resent.extend)
    batches = [make_batch(i, [2 * i, 2 * i + 1]) for i in range(4)]
    ledger.record(batches)
    payload = np.arange(8, dtype=np.uint8)
    for batch_id in [2, 0, 2, 1, 3, 0]:
        completer.handle(BatchResult(batch_id, "w", payload, np.array([0, 4, 8])))
    assert sorted(recorder.completed) == sorted(int(i) for b in batches for i in b.response_ids)
    assert recorder.payloads[1000] == bytes([0, 1, 2, 3])
    assert recorder.payloads[1001] == bytes([4, 5, 6, 7])


def test_completer_retries_a_failed_batch_then_aborts_and_closes_everything_out():
    ledger, recorder, resent = CompletionLedger(), Recorder(), []
    completer = Completer(ledger, recorder, resent.extend, max_attempts=2)
    ledger.record([make_batch(0, [0]), make_batch(1, [1, 2])])
    completer.handle(BatchFailure(0, "w", "boom"))
    assert [b.batch_id for b in resent] == [0] and not completer.aborted
    completer.handle(BatchFailure(0, "w", "boom again"))
    assert completer.aborted and "batch 0 failed 2 times" in completer.abort_reason
    # Every outstanding sample is answered (empty) so LoadGen can return.
    assert sorted(recorder.completed) == [1000, 1001, 1002]
    assert set(recorder.payloads.values()) == {None}


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("x")])
def test_a_raising_loadgen_callback_aborts_the_run_instead_of_crossing_into_loadgen(error):
    """An exception inside a LoadGen callback would cross into its C++ and kill the process:
    the wrapper logs it, aborts (every outstanding sample answered) and returns."""
    from sut.runner import _never_raise

    ledger, recorder = CompletionLedger(), Recorder()
    completer = Completer(ledger, recorder, lambda batches: None)
    ledger.record([make_batch(0, [0, 1])])

    def load(indices):
        raise error

    assert _never_raise("load_query_samples", load, completer)([0, 1]) is None
    assert completer.aborted and completer.abort_reason.startswith(
        f"load_query_samples failed: {type(error).__name__}")
    assert sorted(recorder.completed) == [1000, 1001]


@pytest.mark.parametrize("error, reason_ends", [("", "on worker w: "),
                                                ("\n  first\nsecond", "on worker w: first")])
def test_an_abort_reason_is_the_first_line_of_any_error_text(error, reason_ends):
    ledger, recorder, resent = CompletionLedger(), Recorder(), []
    completer = Completer(ledger, recorder, resent.extend, max_attempts=1)
    ledger.record([make_batch(0, [0])])
    completer.handle(BatchFailure(0, "w", error))  # an empty message too (some frameworks)
    assert completer.abort_reason.endswith(reason_ends) and recorder.completed == [1000]


def test_failure_for_a_batch_already_answered_is_ignored():
    ledger, recorder, resent = CompletionLedger(), Recorder(), []
    completer = Completer(ledger, recorder, resent.extend)
    ledger.record([make_batch(0, [0])])
    completer.handle(BatchResult(0, "w"))
    completer.handle(BatchFailure(0, "other", "late failure of a retried copy"))
    assert recorder.completed == [1000] and not resent and not completer.aborted


def make_dispatcher(scenario, max_batchsize, idle=lambda: True, timeout_s=0.05):
    ledger, recorder, sent = CompletionLedger(), Recorder(), []
    completer = Completer(ledger, recorder, sent.extend)
    dispatcher = Dispatcher(scenario, max_batchsize, ledger, sent.extend, completer,
                            idle, itertools.count(), timeout_s)
    return dispatcher, ledger, completer, recorder, sent


def test_offline_query_becomes_batches_recorded_before_sending():
    dispatcher, ledger, _, _, sent = make_dispatcher("Offline", 4)
    dispatcher.issue(np.arange(10, dtype=np.uint64), np.arange(10, dtype=np.int64))
    assert [len(b) for b in sent] == [4, 4, 2]
    assert [b.batch_id for b in sent] == [0, 1, 2]
    assert ledger.outstanding_samples() == 10


def test_server_dispatch_sends_at_once_to_an_idle_worker_then_batches_under_load():
    idle = [True]
    dispatcher, ledger, completer, _, sent = make_dispatcher("Server", 4, lambda: idle[0],
                                                             timeout_s=60)
    dispatcher.start()
    try:
        dispatcher.issue(np.array([1], np.uint64), np.array([1]))  # idle worker: at once
        assert [len(b) for b in sent] == [1]
        idle[0] = False
        for i in range(2, 8):  # busy: samples gather into a batch of 4 (+2 pending)
            dispatcher.issue(np.array([i], np.uint64), np.array([i]))
        assert [len(b) for b in sent] == [1, 4]
        completer.handle(BatchResult(sent[0].batch_id, "w"))
        assert [len(b) for b in sent] == [1, 4]  # a reply, but no worker idle yet
        idle[0] = True
        dispatcher._batcher._last_left_at = float("-inf")  # a window has passed
        completer.handle(BatchResult(sent[1].batch_id, "w"))  # idle again: the 2 pending go
        assert [len(b) for b in sent] == [1, 4, 2]
        sent_ids = [int(i) for b in sent for i in b.response_ids]
        assert sent_ids == list(range(1, 8))
        assert ledger.outstanding_batches() == 1
    finally:
        dispatcher.stop()


def test_server_partial_batch_leaves_after_the_timeout():
    dispatcher, ledger, _, _, sent = make_dispatcher("Server", 8, lambda: False, timeout_s=0.05)
    dispatcher.start()
    try:
        dispatcher.issue(np.array([1, 2], np.uint64), np.array([1, 2]))
        assert sent == []
        deadline = time.monotonic() + 2
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [b.response_ids.tolist() for b in sent] == [[1, 2]]
    finally:
        dispatcher.stop()


def test_an_abort_between_the_check_and_the_record_loses_nothing():
    """The completion thread may abort while LoadGen's thread is emitting: whatever the
    interleaving, every sample is answered."""
    dispatcher, ledger, completer, recorder, sent = make_dispatcher("Offline", 2)
    original_record = ledger.record

    def record_after_abort(batches):
        completer.abort("raced")
        return original_record(batches)

    ledger.record = record_after_abort
    dispatcher.issue(np.array([1, 2, 3], np.uint64), np.array([0, 1, 2]))
    assert sorted(recorder.completed) == [1, 2, 3] and sent == []


def test_after_an_abort_new_samples_are_answered_at_once():
    dispatcher, ledger, completer, recorder, sent = make_dispatcher("Offline", 4)
    completer.abort("test")
    dispatcher.issue(np.array([7, 8], np.uint64), np.array([0, 1]))
    assert sent == [] and sorted(recorder.completed) == [7, 8]


# --- scheduler and result collector -----------------------------------------------------------

class Calls:
    """Stands in for the transport: records each call (worker, call id, batch ids)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[int]]] = []

    def __call__(self, worker, call_id, batches) -> None:
        self.sent.append((worker, call_id, [b.batch_id for b in batches]))


def test_scheduler_fills_two_slots_a_worker_and_a_reply_pulls_the_next_work():
    calls = Calls()
    scheduler = BatchScheduler(["a", "b"], calls, slots=2, batches_per_call=1)
    scheduler.put([make_batch(i, [i]) for i in range(6)])
    assert [(w, ids) for w, _, ids in calls.sent] == [("a", [0]), ("b", [1]), ("a", [2]),
                                                      ("b", [3])]
    assert scheduler.pending_batches() == 2 and not scheduler.has_idle_worker()
    worker, call_id, _ = calls.sent[1]
    assert [b.batch_id for b in scheduler.returned(worker, call_id)] == [1]
    assert calls.sent[-1][0] == "b" and calls.sent[-1][2] == [4]  # b replied, b gets more
    assert scheduler.returned("b", 12345) == []  # an unknown call frees nothing


def test_scheduler_puts_a_call_behind_each_busy_worker_and_shares_the_queue_out():
    calls = Calls()
    scheduler = BatchScheduler(["a", "b"], calls, slots=2, batches_per_call=8)
    scheduler.put([make_batch(0, [0])])
    scheduler.put([make_batch(i, [i]) for i in range(1, 21)])
    counts = [len(ids) for _, _, ids in calls.sent]
    assert counts[0] == 1 and sum(counts) == 21 and max(counts) <= 8
    assert [b for _, _, ids in calls.sent for b in ids] == list(range(21))  # in order


def test_scheduler_returns_a_lost_workers_batches_first_and_never_calls_it_again():
    calls = Calls()
    scheduler = BatchScheduler(["a", "b"], calls, slots=1, batches_per_call=2)
    scheduler.put([make_batch(i, [i]) for i in range(6)])
    assert [(w, ids) for w, _, ids in calls.sent] == [("a", [0, 1]), ("b", [2, 3])]
    assert [b.batch_id for b in scheduler.lost("a")] == [0, 1]
    assert scheduler.pending_batches() == 4 and scheduler.workers() == ["b"]
    b_call = calls.sent[1][1]
    scheduler.returned("b", b_call)
    assert calls.sent[-1] [::2] == ("b", [0, 1])  # the lost batches go first, to b
    scheduler.put([make_batch(9, [9])])
    assert all(worker == "b" for worker, _, _ in calls.sent[1:])
    assert scheduler.clear() == 3 and scheduler.pending_batches() == 0


def test_seen_ids_stays_small_for_in_order_ids():
    seen = SeenIds()
    for value in [0, 2, 1, 3, 5]:
        assert seen.add(value)
    assert not seen.add(2) and not seen.add(5)
    assert 4 not in seen and 3 in seen
    assert seen._above == {5}


def test_result_collector_drops_a_second_result_for_a_batch():
    collector = ResultCollector()
    assert collector.submit(BatchResult(0, "a", infer_seconds=0.5))
    assert not collector.submit(BatchResult(0, "b"))
    assert collector.submit(BatchFailure(1, "b", "error"))
    assert not collector.submit(BatchFailure(0, "b", "a late failure of an answered batch"))
    stats = collector.stats()
    assert stats["duplicates_dropped"] == 1 and stats["batches_by_worker"] == {"a": 1}


def test_warm_up_batches_come_back_without_reaching_loadgen():
    ledger, recorder = CompletionLedger(), Recorder()
    sent: list[Batch] = []
    completer = Completer(ledger, recorder, sent.extend)
    dispatcher = Dispatcher("Server", 4, ledger, sent.extend, completer, lambda: True,
                            itertools.count(), 1)
    waiter = threading.Thread(target=lambda: [completer.handle(BatchResult(b.batch_id, "w"))
                                              for b in _wait_for(sent, 3)])
    waiter.start()
    assert dispatcher.warm_up(sample_index=5, sizes=[1, 2, 4], timeout_s=5)
    waiter.join()
    assert [b.sample_indices.tolist() for b in sent] == [[5], [5, 5], [5, 5, 5, 5]]
    assert recorder.completed == [] and ledger.outstanding_batches() == 0
    # Batch ids stay unique: the next real batch does not reuse a warm-up id.
    dispatcher.issue(np.array([1], np.uint64), np.array([0]))
    assert sent[-1].batch_id == 3


def _wait_for(items: list, count: int, timeout_s: float = 5.0) -> list:
    deadline = time.monotonic() + timeout_s
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return list(items[:count])


def test_batch_size_buckets_reach_the_max_batchsize():
    from actors.backends.buckets import batch_size_buckets

    assert batch_size_buckets(24) == [1, 2, 4, 8, 16, 24]
    assert batch_size_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_size_buckets(1) == [1]
