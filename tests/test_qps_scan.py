"""The QPS scan (scripts/qps_scan.py): its plain-Python core on simulated time, then the script
end to end on the session's Ray instance with a known-answer model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from actors.messages import Batch
from conftest import REPO
from sut.qps_scan import (TILES, OpenLoopTrial, TrialStats, arrival_times, final_result,
                          find_max_qps)


# -- arrivals -------------------------------------------------------------------------------
def test_linear_arrivals_are_equally_spaced():
    times = arrival_times("linear", 250.0, 5, np.random.default_rng(0))
    np.testing.assert_allclose(times, [0.0, 0.004, 0.008, 0.012, 0.016])


def test_exponential_arrivals_have_the_rate_and_the_spread_of_poisson_traffic():
    times = arrival_times("exponential", 200.0, 20000, np.random.default_rng(1))
    gaps = np.diff(times)
    assert times[0] == 0.0 and np.all(gaps >= 0)
    assert abs(gaps.mean() - 1 / 200) < 0.03 / 200
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03  # coefficient of variation 1


def test_unknown_arrival_kind_is_refused():
    with pytest.raises(ValueError, match="poisson"):
        arrival_times("poisson", 10.0, 3, np.random.default_rng(0))


# -- statistics -----------------------------------------------------------------------------
def test_trial_stats_from_known_times():
    due = np.array([10.0, 10.1, 10.2, 10.3])
    done = due + np.array([0.01, 0.02, 0.03, 0.04])
    stats = TrialStats.from_times(40.0, due, done)
    assert stats.mean == pytest.approx(0.025)
    assert stats.seconds == pytest.approx(0.34)
    assert stats.qps == pytest.approx(4 / 0.34)
    assert stats.tiles[50.0] == pytest.approx(0.025)
    assert stats.tiles[99.0] == pytest.approx(np.percentile([0.01, 0.02, 0.03, 0.04], 99))
    assert stats.meets(0.04) and not stats.meets(0.039)
    assert stats.line("linear/0.05/40").startswith(
        "linear/0.05/40 qps=11.76, mean=0.025000, time=0.34, tiles=50:0.0250,80:")


def test_a_request_never_answered_fails_the_bound_however_fast_the_rest():
    due = np.arange(100) * 0.01
    done = due + 0.001
    done[37] = np.nan
    stats = TrialStats.from_times(100.0, due, done)
    assert stats.lost == 1 and stats.tiles[99.0] < 0.01
    assert not stats.meets(1.0)
    assert "lost=1" in stats.line("x")


# -- one trial on simulated time ---------------------------------------------------------------
class SimulatedServer:
    """One request at a time, each taking service_s, on a simulated clock. issue() answers
    through trial.complete at the simulated time the answer is ready."""

    def __init__(self, service_s: float, oversleep_s: float = 0.0) -> None:
        self.now = 0.0
        self.service_s = service_s
        self.oversleep_s = oversleep_s
        self.free_at = 0.0
        self.issued: list[tuple[int, int, float]] = []  # (response id, sample index, time)
        self.trial: OpenLoopTrial | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0) + self.oversleep_s

    def issue(self, response_ids, sample_indices) -> None:
        for rid, index in zip(response_ids.tolist(), sample_indices.tolist()):
            self.issued.append((rid, index, self.now))
            self.free_at = max(self.now, self.free_at) + self.service_s
            issued_at, self.now = self.now, self.free_at
            self.trial.complete(Batch(rid, np.array([rid], np.uint64), np.array([index])))
            self.now = issued_at

    def run(self, kind: str, qps: float, count: int) -> TrialStats:
        schedule = arrival_times(kind, qps, count, np.random.default_rng(3))
        self.trial = OpenLoopTrial(schedule, np.arange(count) % 7, self.clock, self.sleep)
        return self.trial.run(self.issue, qps, wait_s=0.0)


def test_under_capacity_every_request_takes_exactly_its_service_time():
    server = SimulatedServer(service_s=0.004)
    stats = server.run("linear", 100.0, 50)
    assert [rid for rid, _, _ in server.issued] == list(range(50))
    assert [index for _, index, _ in server.issued] == [i % 7 for i in range(50)]
    assert stats.lost == 0
    assert all(value == pytest.approx(0.004) for value in stats.tiles.values())
    assert stats.qps == pytest.approx(50 / (49 / 100 + 0.004))


def test_over_capacity_the_queue_grows_and_latency_with_it():
    server = SimulatedServer(service_s=0.02)  # 50 QPS capacity, offered 100
    stats = server.run("linear", 100.0, 100)
    # request i waits for i earlier services: latency 0.02 * (i + 1) - i / 100
    expected = 0.02 * np.arange(1, 101) - np.arange(100) / 100
    assert stats.tiles[99.0] == pytest.approx(np.percentile(expected, 99))
    assert not stats.meets(0.5)


def test_latency_counts_from_the_due_time_when_the_issuer_wakes_late():
    """The issuing thread oversleeps by 3 ms: requests go out late, several at once, and the
    lateness is part of their latency (no coordinated omission)."""
    server = SimulatedServer(service_s=0.0001, oversleep_s=0.003)
    stats = server.run("linear", 1000.0, 40)
    issue_times = [t for _, _, t in server.issued]
    assert len(set(issue_times)) < 40  # several requests per wake-up
    lateness = np.array(issue_times) - np.arange(40) / 1000
    assert lateness.max() > 0.002
    assert stats.tiles[99.9] >= lateness.max()
    assert stats.mean > lateness.mean()


def test_a_second_answer_to_a_request_is_ignored():
    now = [0.0]
    trial = OpenLoopTrial(np.array([0.0, 0.0]), np.array([4, 5]), clock=lambda: now[0])

    def issue(response_ids, sample_indices):
        assert response_ids.tolist() == [0, 1] and sample_indices.tolist() == [4, 5]
        now[0] = 0.5
        trial.complete(Batch(0, np.array([0], np.uint64), np.array([4])))
        now[0] = 0.7  # a retried batch answers request 0 again, with request 1
        trial.complete(Batch(1, np.array([0, 1], np.uint64), np.array([4, 5])))

    stats = trial.run(issue, 2.0, wait_s=0.0)
    assert stats.lost == 0
    assert stats.mean == pytest.approx(0.6) and stats.tiles[50.0] == pytest.approx(0.6)


def test_a_trial_stops_issuing_when_the_run_aborts():
    server = SimulatedServer(service_s=0.001)
    schedule = arrival_times("linear", 100.0, 50, np.random.default_rng(0))
    server.trial = OpenLoopTrial(schedule, np.zeros(50, np.int64), server.clock, server.sleep)
    stats = server.trial.run(server.issue, 100.0, wait_s=60.0,
                             stopped=lambda: len(server.issued) >= 10)
    assert len(server.issued) == 10 and stats.lost == 40 and not stats.meets(1.0)


# -- the search -----------------------------------------------------------------------------
def capacity_trial(capacity: int, calls: list):
    """A trial that meets any bound up to `capacity` QPS and misses it beyond."""

    def trial(qps: int) -> TrialStats:
        calls.append(qps)
        latency = 0.001 if qps <= capacity else 10.0
        return TrialStats(qps, qps, latency, 1.0, {p: latency for p in TILES})

    return trial


@pytest.mark.parametrize("capacity", [1, 7, 137, 5000, 40_000, 300_000])
def test_the_search_finds_the_capacity_to_within_its_precision(capacity):
    calls: list[int] = []
    result = find_max_qps(capacity_trial(capacity, calls), "linear", 0.01, start_qps=10)
    assert 0 <= capacity - result.best_qps <= max(1, 0.02 * capacity)
    assert result.converged and result.measured_latency == 0.001
    assert len(calls) == len(set(calls))
    assert [qps for qps, _, _ in result.trials] == calls


def test_a_search_cut_short_says_so():
    result = find_max_qps(capacity_trial(5000, []), "linear", 0.01, start_qps=10,
                          max_bisections=1)
    assert not result.converged and 0 < result.best_qps < 5000 * 0.98
    assert not find_max_qps(capacity_trial(10**9, []), "linear", 0.01, start_qps=10,
                            max_doublings=3).converged


def test_the_search_checks_any_percentile():
    """--percentile 97 is not one of the printed tiles: it is computed all the same."""
    due = np.arange(100) * 0.01
    done = due + np.linspace(0.001, 0.1, 100)
    stats = TrialStats.from_times(100.0, due, done, percentiles=(97.0,))
    assert set(TILES) < set(stats.tiles) and 97.0 in stats.tiles
    assert stats.meets(0.0975, 97.0) and not stats.meets(0.0975, 99.0)
    result = find_max_qps(lambda qps: stats, "linear", 0.0975, start_qps=10, percentile=97.0,
                          max_qps=20)
    assert result.best_qps == 20 and result.measured_latency == stats.tiles[97.0]


def test_the_search_reports_minus_one_when_nothing_meets_the_bound():
    result = find_max_qps(capacity_trial(0, []), "exponential", 0.01, start_qps=10)
    assert result.best_qps == -1 and result.measured_latency is None


def test_the_search_starts_above_a_rate_a_tighter_bound_already_met():
    calls: list[int] = []
    result = find_max_qps(capacity_trial(300, calls), "linear", 0.1, start_qps=10,
                          known_good=200)
    assert calls[0] == 400 and min(calls) > 200
    assert 300 - result.best_qps <= 6
    calls.clear()
    assert find_max_qps(capacity_trial(150, calls), "linear", 0.1, start_qps=10,
                        known_good=200).best_qps == 200


def test_the_search_stops_at_max_qps():
    calls: list[int] = []
    result = find_max_qps(capacity_trial(10**6, calls), "linear", 0.1, start_qps=10,
                          max_qps=100)
    assert calls == [10, 20, 40, 80, 100] and result.best_qps == 100
    calls.clear()  # a looser bound after a tighter one met the ceiling: nothing to try
    assert find_max_qps(capacity_trial(10**6, calls), "linear", 0.2, start_qps=10,
                        known_good=100, max_qps=100).best_qps == 100
    assert calls == []


def test_final_result_has_the_cloud_benchmarks_shape():
    calls: list[int] = []
    results = [find_max_qps(capacity_trial(c, calls), kind, bound, 10)
               for kind, bound, c in (("linear", 0.01, 16), ("linear", 0.05, 0),
                                      ("exponential", 0.01, 1))]
    assert final_result(results) == {"linear": {"0.01": 16, "0.05": -1},
                                     "exponential": {"0.01": 1}}


# -- the script, end to end -------------------------------------------------------------------
def run_scan_script(tmp_path, ray_address, cache_dir, *args: str):
    output = tmp_path / "scan"
    command = [sys.executable, str(REPO / "scripts" / "qps_scan.py"), "--output", str(output),
               "--cache_dir", str(cache_dir), "--address", ray_address, *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)
    return done, output


def test_scan_checks_accuracy_then_finds_rates_on_the_workers(
        tmp_path, ray_address, cache_dir, known_set, model_dir):
    model = known_set.model(model_dir, "vgg", "NCHW")
    done, output = run_scan_script(
        tmp_path, ray_address, cache_dir, "--profile", "resnet50-onnxruntime",
        "--model", str(model), "--dataset-path", str(known_set.dataset_path),
        "--accuracy-count", "10", "--latencies", "4,2,2", "--trial-seconds", "0.5",
        "--min-requests", "10", "--start-qps", "20", "--max-qps", "40",
        "--results-db", str(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr[-3000:]
    # Stage 1: the known-answer model is right on every one of the first 10 images only.
    assert "accuracy=100.000%, good=10, total=10" in done.stdout
    assert "linear/2/20 qps=" in done.stdout and "exponential/2/20 qps=" in done.stdout
    final = [line for line in done.stdout.splitlines() if line.startswith("===FINAL_RESULT: ")]
    assert len(final) == 1
    results = json.loads((output / "qps_scan.json").read_text())
    assert results["accuracy"]["good"] == results["accuracy"]["total"] == 10
    assert str(results["final_result"]) == final[0].removeprefix("===FINAL_RESULT: ")
    assert set(results["final_result"]) == {"linear", "exponential"}
    # Bounds sorted and de-duplicated; a 2 s bound at 20-40 QPS for a tiny model is met (the
    # search stops at --max-qps), and the 4 s bound starts from there.
    assert [(b["arrival"], b["latency_bound_s"]) for b in results["bounds"]] == [
        ("linear", 2.0), ("linear", 4.0), ("exponential", 2.0), ("exponential", 4.0)]
    for tight, loose in (results["bounds"][0:2], results["bounds"][2:4]):
        met = [trial for trial in tight["trials"] if trial["met_bound"]]
        assert met and tight["qps"] == max(trial["qps"] for trial in met) >= 20
        assert all(trial["lost"] == 0 and trial["percentiles_s"]["99"] <= 2.0 for trial in met)
        assert loose["qps"] >= tight["qps"]
    assert results["faults"] == []
    # Recorded as a scan: the accuracy stage as its test, the bounds beside.
    from sut.records import RunStore

    with RunStore(tmp_path / "r.db") as store:
        (record,) = store.find()
    assert record["kind"] == "scan" and record["status"] == "completed"
    assert record["scan"]["bounds"] == results["bounds"]
    assert record["tests"][0]["accuracy"]["good"] == 10


def test_scan_flags_are_checked_with_a_message_that_names_them():
    sys.path.insert(0, str(REPO / "scripts"))
    import qps_scan
    from sut.cli import build_parser
    from harness_base import ConfigError

    parser = build_parser()
    qps_scan.add_scan_flags(parser)

    def options(*argv):
        return qps_scan.scan_options(parser.parse_args(list(argv)))

    assert options("--latencies", "0.2,0.05,0.2").latencies_s == (0.05, 0.2)
    assert options("--arrivals", "exponential,linear,linear").arrivals == (
        "exponential", "linear")
    assert options("--qps", "300").start_qps == 300
    for argv, flag in ((("--latencies", "nan"), "--latencies"),
                       (("--latencies", "0.1,-1"), "--latencies"),
                       (("--latencies", "fast"), "--latencies"),
                       (("--trial-seconds", "inf"), "--trial-seconds"),
                       (("--max-qps", "0"), "--max-qps"),
                       (("--start-qps", "100000000"), "--start-qps"),
                       (("--percentile", "100"), "--percentile"),
                       (("--accuracy-count", "-1"), "--accuracy-count")):
        with pytest.raises(ConfigError, match=flag):
            options(*argv)


def test_scan_refuses_a_bad_flag_before_anything_starts(tmp_path, ray_address, cache_dir,
                                                        known_set, model_dir):
    done, output = run_scan_script(
        tmp_path, ray_address, cache_dir, "--model", str(known_set.model(model_dir, "vgg",
                                                                         "NCHW")),
        "--dataset-path", str(known_set.dataset_path), "--arrivals", "poisson")
    assert done.returncode == 2
    assert "--arrivals 'poisson'" in done.stderr and "linear, exponential" in done.stderr
    assert not output.exists()
