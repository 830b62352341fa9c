"""Faults mid-run: every sample is still answered exactly once, with the right answer, and the
report names the fault; a run that cannot go on stops with an error, never hangs.

The misbehaving backend (fault_backends.py) wraps the known-answer model, so "the right answer"
is checked for every sample.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_each_sample_once

FAULTY = "fault_backends:FaultyBackend"


@pytest.fixture
def plan(tmp_path, known_set, model_dir):
    """Write a fault plan (see fault_backends.py) around the known-answer model."""

    def write(**faults) -> str:
        path = tmp_path / "plan.json"
        faults.setdefault("model", str(known_set.model(model_dir, "vgg", "NCHW")))
        path.write_text(json.dumps(faults))
        return str(path)

    return write


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_worker_killed_mid_run_loses_and_duplicates_nothing(scenario, run_known, plan,
                                                            tmp_path):
    model = plan(kill_on_call=3, once=str(tmp_path / "killed"), sleep_s=0.05)
    run = run_known(scenario, "--accuracy", "--backend", FAULTY, "--gpus", "2", "--device",
                    "cpu", "--max-batchsize", "2", model=model)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "killed").exists(), "the fault must really have happened"
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert_each_sample_once(run.accuracy_log(), 16)
    faults = run.results()["tests"][0]["faults"]
    assert any("lost" in fault and "worker-" in fault for fault in faults), faults


def test_batch_that_raises_once_is_retried(run_known, plan, tmp_path):
    model = plan(raise_on_call=2, once=str(tmp_path / "raised"))
    run = run_known("Offline", "--accuracy", "--backend", FAULTY, "--workers", "2",
                    "--max-batchsize", "4", model=model)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in run.stdout
    assert_each_sample_once(run.accuracy_log(), 16)
    test = run.results()["tests"][0]
    assert test["retried_batches"] == 1
    assert any("injected fault" in fault for fault in test["faults"])


def test_batch_that_always_raises_stops_the_run_with_its_error(run_known, plan):
    started = time.monotonic()
    run = run_known("Offline", "--accuracy", "--backend", FAULTY, "--workers", "2",
                    model=plan(raise_always=True))
    assert run.returncode == 3, run.stderr[-3000:]
    assert time.monotonic() - started < 120
    error = run.results()["tests"][0]["error"]
    assert "failed 3 times" in error and "always fails" in error


def test_every_worker_killed_ends_the_run_non_zero_in_bounded_time(run_known, plan):
    model = plan(kill_on_call=2)  # each worker dies on its first batch
    started = time.monotonic()
    run = run_known("Server", "--backend", FAULTY, "--gpus", "2", "--device", "cpu",
                    model=model)
    elapsed = time.monotonic() - started
    assert run.returncode == 3, run.stderr[-3000:]
    assert elapsed < 120
    test = run.results()["tests"][0]
    assert "no worker left" in test["error"]
    assert "FAILED" in run.stdout
    assert (run.output / "mlperf_log_detail.txt").is_file(), "LoadGen's logs so far are kept"


@pytest.fixture
def start_sut(known_set, ray_address, cache_dir, short_user_conf, tmp_path):
    """Start `python -m sut` on the known set in a process of its own (a signal or a kill needs
    one), Offline; returns (process, output folder)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    def start(model: str, *extra: str):
        output = tmp_path / "out"
        process = subprocess.Popen(
            [sys.executable, "-m", "sut", "--address", ray_address, "--cache_dir",
             str(cache_dir), "--output", str(output), "--profile", "resnet50-onnxruntime",
             "--backend", FAULTY, "--model", model, "--dataset-path",
             str(known_set.dataset_path), "--scenario", "Offline", "--user_conf",
             str(short_user_conf), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")])))
        return process, output

    return start


def _wait_for(path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


# A run slow enough to be still going when the test steps in.
_LONG_RUN = ("--max-batchsize", "1", "--time", "60", "--qps", "100")


@pytest.mark.parametrize("signal_name, exit_code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_a_run_promptly_and_shuts_the_workers_down(plan, start_sut, signal_name,
                                                                  exit_code):
    """Ctrl-C or SIGTERM mid-test: the run stops within seconds, exits 128 + the signal's
    number, and every log it leaves says the test was aborted (never VALID)."""
    import signal

    process, output = start_sut(plan(sleep_s=0.3), *_LONG_RUN)
    _wait_for(output / "mlperf_log_detail.txt")  # LoadGen has started once its detail log exists
    time.sleep(2)
    interrupted_at = time.monotonic()
    process.send_signal(getattr(signal, signal_name))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr[-3000:]
    assert time.monotonic() - interrupted_at < 30
    assert "interrupted" in stdout + stderr
    test = json.loads((output / "results.json").read_text())["tests"][0]
    assert test["result"] == "ABORTED" and test["loadgen_result"] in ("VALID", "INVALID")
    summary = (output / "mlperf_log_summary.txt").read_text()
    assert summary.startswith("ABORTED") and "Result is : VALID" not in summary
    assert f"interrupted by {signal_name}" in (output / "ABORTED.txt").read_text()
    assert f"interrupted by {signal_name}" in json.loads((output / "results.json").read_text())[
        "tests"][0]["error"]
    from ray._private import state  # the GCS's actor table (no dashboard in these tests)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [actor for actor in state.actors().values()
                 if actor["State"] == "ALIVE" and "WorkerActor" in actor["ActorClassName"]]
        if not alive:
            break
        time.sleep(1)
    assert not alive, "the workers are shut down"


@pytest.mark.parametrize("scenario", ["Server", "SingleStream"])
def test_a_signal_ends_a_test_that_loadgen_cannot_end_early(plan, start_sut, scenario):
    """LoadGen keeps a Server test to the end of its duration (here 2 minutes) even once every
    sample is answered: the run must still end within seconds of a SIGTERM, in every scenario,
    results.json and the marks beside LoadGen's cut-off logs saying ABORTED."""
    import signal

    process, output = start_sut(plan(sleep_s=0.05), "--scenario", scenario, "--qps", "20",
                                "--time", "120", "--max-batchsize", "1")
    _wait_for(output / "mlperf_log_detail.txt")
    time.sleep(2)
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 143, stderr[-3000:]
    assert time.monotonic() - interrupted_at < 20
    test = json.loads((output / "results.json").read_text())["tests"][0]
    assert test["result"] == "ABORTED" and test["scenario"] == scenario
    assert "interrupted by SIGTERM" in test["error"]
    if scenario == "Server":  # LoadGen would have kept its 2-minute schedule
        assert "the process was ended" in test["error"]
    assert "interrupted by SIGTERM" in (output / "ABORTED.txt").read_text()
    assert (output / "mlperf_log_summary.txt").read_text().startswith("ABORTED")


def test_ctrl_c_while_the_workers_start_stops_before_loadgen(plan, start_sut, tmp_path):
    """Before the first test there is no LoadGen test to abort: the start-up itself stops,
    well before the forced exit (interrupts.GRACE_S), and no test begins."""
    import signal

    started = tmp_path / "started"
    process, output = start_sut(plan(startup_s=60, started=str(started)))
    _wait_for(started)
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr[-3000:]
    assert time.monotonic() - interrupted_at < 10
    assert "interrupted: workers shut down." in stderr
    assert not (output / "mlperf_log_detail.txt").exists(), "no LoadGen test started"


def test_a_signal_taken_before_ray_starts_never_starts_it(monkeypatch):
    """A Ctrl-C while the embedded model is exported (C code, where the main thread does not
    see it) is found before Ray starts: no Ray instance is started only to be torn down."""
    import threading

    import harness_base
    from sut import runner

    signalled = threading.Event()
    signalled.set()
    monkeypatch.setattr(harness_base, "_stop", signalled)
    monkeypatch.setattr(runner, "connect", lambda config: pytest.fail("Ray was started"))
    with pytest.raises(KeyboardInterrupt):
        runner.start_session(config=None, images=None, show_progress=False)


@pytest.mark.parametrize("scenario, extra", [
    ("Server", ("--qps", "20")),
    ("SingleStream", ()),  # two workers: worker actors, as on a cluster
    ("MultiStream", ()),
    ("Server", ("--qps", "20", "--transport", "calls")),
])
def test_a_worker_killed_with_sigkill_mid_run_loses_nothing(plan, start_sut, scenario, extra):
    """SIGKILL from outside (as the OOM killer does) to one of two workers while an accuracy
    run is answering: every sample is answered once, with its right answer, and the run ends
    with the loss in its report."""
    import os
    import signal

    from ray._private import state

    process, output = start_sut(plan(sleep_s=0.5), "--accuracy", "--scenario", scenario,
                                *extra, "--max-batchsize", "1", "--gpus", "2",
                                "--device", "cpu")
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and process.poll() is None:
        workers = [actor for actor in state.actors().values()
                   if actor["State"] == "ALIVE" and "WorkerActor" in actor["ActorClassName"]]
        if len(workers) == 2 and (output / "mlperf_log_detail.txt").exists():
            break
        time.sleep(0.2)
    time.sleep(1.0)  # some samples answered, most still to come
    assert process.poll() is None, process.communicate()
    os.kill(workers[0]["Pid"], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in stdout
    assert_each_sample_once(json.loads((output / "mlperf_log_accuracy.json").read_text()), 16)
    results = json.loads((output / "results.json").read_text())
    assert results["setup"]["transport"] == ("calls" if "calls" in extra else "channel")
    faults = results["tests"][0]["faults"]
    assert any("lost" in fault and "worker-" in fault for fault in faults), faults


def test_the_forced_exit_ends_the_processes_it_started(tmp_path):
    """The last resort after Ctrl-C (os._exit) must not leave a local Ray instance behind: it
    ends its own child processes first, grandchildren included, and exits 130."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    pids = tmp_path / "pids"
    script = (
        "import subprocess, sys\n"
        "from sut import interrupts\n"
        "child = subprocess.Popen(['bash', '-c', 'sleep 300 & echo $! > " + str(pids) + "; "
        "wait'])\n"
        "import time; time.sleep(0.5)\n"
        "open(" + repr(str(pids)) + ", 'a').write(f'{child.pid}\\n')\n"
        "interrupts._exit_now('SIGINT', None)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 130, done.stderr
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2  # the sleep (a grandchild) and bash (a child)
    time.sleep(0.2)
    for pid in started:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"process {pid} still running"  # a zombie is gone, not reaped
