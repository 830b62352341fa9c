"""Run records: the store (plain Python), the `runs` verbs, and real runs recorded however they
end; the report opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from harness_base import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ConfigError
from sut import records, runs_cli
from sut.records import RunStore


def _record(run_id: str, started: str, tags=None, profile="p", value=10.0) -> dict:
    return {"id": run_id, "kind": "run", "status": "completed", "started": started,
            "ended": started, "exit_code": 0, "profile": profile, "tags": tags or {},
            "config": {"max_batchsize": int(value), "backend": "null"},
            "tests": [{"scenario": "Offline", "mode": "performance", "result": "VALID",
                       "value": value, "unit": "samples/s", "p99_ns": 2e6}]}


# ---- the store -----------------------------------------------------------------------------

def test_the_store_finds_records_by_id_prefix_tag_profile_and_time(tmp_path):
    with RunStore(tmp_path / "r.db") as store:
        assert store.add(_record("aaaa1111", "2026-01-01T00:00:00+00:00", {"nightly": ""}))
        assert store.add(_record("aaaa2222", "2026-02-01T00:00:00+00:00", {"batch": "64"}, "q"))
        assert store.add(_record("bbbb3333", "2026-03-01T00:00:00+00:00", {"nightly": ""}))
        assert not store.add(_record("bbbb3333", "2026-03-01T00:00:00+00:00"))  # once only
        assert store.get("bbbb")["id"] == "bbbb3333"
        with pytest.raises(ConfigError, match="start of 2 ids"):
            store.get("aaaa")
        with pytest.raises(ConfigError, match="no run cccc"):
            store.get("cccc")
        assert [r["id"] for r in store.find(["nightly"])] == ["aaaa1111", "bbbb3333"]
        assert [r["id"] for r in store.find(["batch=64"])] == ["aaaa2222"]
        assert [r["id"] for r in store.find(profile="q")] == ["aaaa2222"]
        assert [r["id"] for r in store.find(since="2026-01-15")] == ["aaaa2222", "bbbb3333"]
        assert len(store.find(since="3650d")) == 3


def _write_many(path: str, prefix: str, count: int) -> None:
    with RunStore(path) as store:
        for i in range(count):
            store.add(_record(f"{prefix}{i:06x}", records.now_iso()))


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "r.db"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_runs import _write_many; "
            "_write_many(sys.argv[2], sys.argv[3], 40)")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(REPO / "tests"), str(path),
                                 prefix], cwd=REPO) for prefix in ("aaaa", "bbbb")]
    assert [writer.wait(120) for writer in writers] == [0, 0]
    with RunStore(path) as store:
        assert len(store.find()) == 80


def test_a_corrupt_foreign_or_locked_database_is_refused_by_name(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match=f"{garbage} is not a results database"):
        RunStore(garbage)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE things (x)").connection.commit()
    with pytest.raises(ConfigError, match="is not a results database of this harness"):
        RunStore(foreign)
    ours = tmp_path / "ours.db"
    RunStore(ours).close()
    monkeypatch.setattr(records, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(ours, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match="locked by another process"):
            RunStore(ours).add(_record("cccc0000", records.now_iso()))
    finally:
        holder.execute("ROLLBACK")


def test_runs_verbs_refuse_bad_input_in_one_line(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    assert runs_cli.main(["--results-db", db, "show", "abcd"]) == EXIT_BAD_INPUT
    assert "no such database" in capsys.readouterr().err
    with RunStore(db) as store:
        store.add(_record("aaaa1111", records.now_iso()))
    assert runs_cli.main(["--results-db", db, "show", "ffff"]) == EXIT_BAD_INPUT
    assert "no run ffff" in capsys.readouterr().err
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("hello")
    assert runs_cli.main(["--results-db", db, "import", str(not_zip)]) == EXIT_BAD_INPUT
    assert "is not a zip file" in capsys.readouterr().err
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "x")
    assert runs_cli.main(["--results-db", db, "import", str(other)]) == EXIT_BAD_INPUT
    assert "is not an export" in capsys.readouterr().err
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(runs_cli.MANIFEST, json.dumps({"format": runs_cli.EXPORT_FORMAT,
                                                        "runs": ["dddd0000"]}))
        archive.writestr("records/dddd0000.json", json.dumps(_record("dddd0000", "2026")))
        archive.writestr("logs/dddd0000/../../../escaped.txt", "x")
    assert runs_cli.main(["--results-db", db, "import", str(evil)]) == EXIT_BAD_INPUT
    assert "absolute or '..' path" in capsys.readouterr().err
    with RunStore(db) as store:
        assert [r["id"] for r in store.find()] == ["aaaa1111"], "nothing imported"
    assert not (tmp_path.parent / "escaped.txt").exists()


# ---- real runs -----------------------------------------------------------------------------

def _runs(db: Path, *words: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "sut", "runs", "--results-db", str(db), *words],
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_embedded_default_appears_in_runs_list(run_cli, tmp_path):
    db = tmp_path / "r.db"
    run = run_cli("--results-db", str(db), "--tag", "acceptance", "--tag", "batch=32")
    assert run.returncode == EXIT_OK, run.stderr
    assert "recorded as run" in run.stdout
    listed = _runs(db, "list", "--tag", "acceptance")
    assert listed.returncode == 0, listed.stderr
    line = listed.stdout.splitlines()[1]
    assert "efficientnet-lite0-onnxruntime" in line and "completed" in line and "VALID" in line
    assert "batch=32" in line and "acceptance" in line
    run_id = line.split()[0]
    record = json.loads(_runs(db, "show", run_id).stdout)
    assert record["command"][-4:] == ["--tag", "acceptance", "--tag", "batch=32"]
    assert record["versions"]["mlcommons-loadgen"] and record["versions"]["ray"]
    assert record["host"]["logical_cpus"] == os.cpu_count()
    assert record["dataset"] == "imagenet_mobilenet_1000" and record["sample_count"] == 20
    model = Path(record["config"]["model"])
    import hashlib
    assert record["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    accuracy = next(test for test in record["tests"] if test["mode"] == "accuracy")
    assert accuracy["accuracy_value"] == pytest.approx(90.0)


@pytest.fixture(scope="module")
def recorded_pair(tmp_path_factory, ray_address, cache_dir, known_set, model_dir):
    """Two runs of the known-answer set with different --max-batchsize, and a Server run."""
    from conftest import SHORT_USER_CONF

    folder = tmp_path_factory.mktemp("recorded")
    conf = folder / "user.conf"
    conf.write_text(SHORT_USER_CONF)
    db = folder / "r.db"
    model = known_set.model(model_dir, "vgg", "NCHW")
    ids = []
    for name, extra in (("b8", ["--max-batchsize", "8", "--scenario", "Offline"]),
                        ("b2", ["--max-batchsize", "2", "--scenario", "Offline"]),
                        ("server", ["--scenario", "Server"])):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
        done = subprocess.run([sys.executable, "-m", "sut", "--address", ray_address,
                               "--cache_dir", str(cache_dir), "--profile",
                               "resnet50-onnxruntime", "--model", str(model), "--dataset-path",
                               str(known_set.dataset_path), "--user_conf", str(conf),
                               "--output", str(folder / name), "--results-db", str(db), *extra],
                              capture_output=True, text=True, timeout=300, env=env, cwd=folder)
        assert done.returncode == EXIT_OK, done.stderr
        ids.append(done.stdout.split("recorded as run ")[1].split()[0])
    return db, ids, folder


def test_two_runs_compare_side_by_side(recorded_pair):
    db, (b8, b2, _), _ = recorded_pair
    done = _runs(db, "compare", b8, b2)
    assert done.returncode == 0, done.stderr
    table, config = done.stdout.split("\n\n", 1)
    rows = [line.split() for line in table.splitlines()[1:]]
    assert [row[0] for row in rows] == [b8, b2]
    # run, "Offline performance", result, "N samples/s", ratio, p50, p90, p99, accuracy
    assert rows[0][6] == "1.000" and float(rows[1][6]) > 0  # the ratio to the first run
    differing = {line.split()[0]: line.split()[1:] for line in config.splitlines()[1:]}
    assert differing["max_batchsize"] == ["8", "2"]
    assert "backend" not in differing and "model" not in differing  # only keys that differ


def test_the_throughput_timeline_counts_every_answered_sample_once(recorded_pair):
    """The report's throughput plot: its bins must add up to what LoadGen issued (a dropped
    batch, a warm-up batch or a counted retry would show), and each busy share is a share."""
    _, _, folder = recorded_pair
    results = json.loads((folder / "b8" / "results.json").read_text())
    offline = [t for t in results["tests"] if t["mode"] == "performance"]
    assert len(offline) == 1
    test = offline[0]
    assert sum(test["timeline"]["completed"]) == test["effective_samples_per_query"] > 0
    shares = test["busy_share_by_worker"].values()
    assert shares and all(0.0 < share <= 1.0 for share in shares)


def test_export_then_import_into_an_empty_database_gives_the_same_records(recorded_pair,
                                                                         tmp_path):
    db, ids, _ = recorded_pair
    archive = tmp_path / "runs.zip"
    done = _runs(db, "export", *ids, "-o", str(archive))
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty" / "r.db"
    done = _runs(empty, "import", str(archive))
    assert done.returncode == 0 and "3 run(s) added" in done.stdout, done.stderr
    again = _runs(empty, "import", str(archive))
    assert "0 run(s) added, 3 already there" in again.stdout
    with RunStore(db) as source, RunStore(empty) as copy:
        for run_id in ids:
            original, imported = source.get(run_id), copy.get(run_id)
            moved = ("output_dir", "imported_from")
            assert {k: v for k, v in original.items() if k not in moved and k != "tests"} == \
                {k: v for k, v in imported.items() if k not in moved and k != "tests"}
            for before, after in zip(original["tests"], imported["tests"]):
                assert {k: v for k, v in before.items() if k != "output_dir"} == \
                    {k: v for k, v in after.items() if k != "output_dir"}
                assert (Path(after["output_dir"]) / "mlperf_log_detail.txt").is_file()
                assert Path(after["output_dir"]).is_relative_to(empty.parent / "imported")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed here (apt-get install chromium)")
    return found


def test_the_report_renders_every_plot_in_chromium(recorded_pair, tmp_path):
    db, ids, _ = recorded_pair
    page = tmp_path / "report.html"
    done = _runs(db, "report", *ids, "-o", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text  # self-contained
    browser = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--enable-logging=stderr", "--v=0", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120)
    assert browser.returncode == 0, browser.stderr[-2000:]
    plots = text.count('<svg class="plot"')
    assert plots == 4  # latency, throughput, QPS against p99, busy share
    assert f'data-plots="{plots}/{plots}"' in browser.stdout
    console = [line for line in browser.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console


def test_a_report_of_runs_whose_logs_are_gone_says_so(recorded_pair, tmp_path):
    db, ids, folder = recorded_pair
    copy_db = tmp_path / "r.db"
    shutil.copy(db, copy_db)
    with RunStore(copy_db) as store:
        record = store.get(ids[0])
    gone = Path(record["tests"][0]["output_dir"])
    hidden = tmp_path / "hidden"
    shutil.move(str(gone), hidden)
    try:
        done = _runs(copy_db, "report", ids[0], "-o", str(tmp_path / "r.html"))
    finally:
        shutil.move(str(hidden), gone)
    assert done.returncode == EXIT_BAD_INPUT
    assert "LoadGen logs" in done.stderr and "are gone" in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_failed_run_is_recorded_as_failed(run_known, tmp_path, known_set, model_dir):
    db = tmp_path / "r.db"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": str(known_set.model(model_dir, "vgg", "NCHW")),
                                "raise_always": True}))
    run = run_known("Offline", "--accuracy", "--backend", "fault_backends:FaultyBackend",
                    "--results-db", str(db), model=str(plan))
    assert run.returncode == EXIT_FAILED, run.stderr
    with RunStore(db) as store:
        (record,) = store.find()
    assert record["status"] == "failed" and record["exit_code"] == EXIT_FAILED
    assert "always fails" in record["tests"][0]["error"]


def test_a_run_cut_off_after_a_signal_is_recorded_as_interrupted(tmp_path, ray_address,
                                                                 cache_dir, known_set,
                                                                 model_dir, short_user_conf):
    db = tmp_path / "r.db"
    output = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    child = subprocess.Popen([sys.executable, "-m", "sut", "--address", ray_address,
                              "--cache_dir", str(cache_dir), "--profile", "resnet50-onnxruntime",
                              "--model", str(known_set.model(model_dir, "vgg", "NCHW")),
                              "--dataset-path", str(known_set.dataset_path), "--user_conf",
                              str(short_user_conf), "--scenario", "Server", "--time", "120",
                              "--output", str(output), "--results-db", str(db)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (output / "mlperf_log_detail.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 128 + signal.SIGTERM
    out, err = child.communicate()
    with RunStore(db) as store:
        assert store.find(), (out.decode()[-3000:], err.decode()[-3000:])
        (record,) = store.find()
    assert record["status"] == "interrupted"
    assert [test["result"] for test in record["tests"]] == ["ABORTED"]


def test_a_bad_results_db_is_refused_before_anything_runs(run_known, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 64)
    run = run_known("Offline", "--results-db", str(bad))
    assert run.returncode == EXIT_BAD_INPUT
    assert f"--results-db {bad} is not a results database" in run.stderr
    assert not (run.output / "mlperf_log_detail.txt").exists()


def test_repetitions_run_as_one_group_with_mean_min_and_max(run_known, tmp_path):
    db = tmp_path / "r.db"
    run = run_known("Offline", "--repetitions", "2", "--results-db", str(db))
    assert run.returncode == EXIT_OK, run.stderr
    results = run.results()
    assert [entry["run"] for entry in results["runs"]] == ["Offline/rep_1", "Offline/rep_2"]
    (summary,) = results["repetitions"]
    values = [test["value"] for test in results["tests"]]
    assert summary["count"] == 2 and summary["min"] == min(values)
    assert summary["max"] == max(values) and summary["mean"] == pytest.approx(sum(values) / 2)
    with RunStore(db) as store:
        group = store.find(group=results["group"])
    assert len(group) == 2 and {r["group"] for r in group} == {results["group"]}


def test_mlflow_gets_the_same_record(run_known, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    run = run_known("Offline", "--results-db", str(tmp_path / "r.db"), "--mlflow-uri",
                    store.as_uri(), "--tag", "nightly")
    assert run.returncode == EXIT_OK, run.stderr
    assert "logged to MLflow" in run.stdout
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("ray-mlperf-vision")
    (logged,) = client.search_runs([experiment.experiment_id])
    with RunStore(tmp_path / "r.db") as ours:
        (record,) = ours.find()
    assert logged.data.tags["ray_sut.id"] == record["id"]
    assert logged.data.tags["tag.nightly"] == ""
    test = record["tests"][0]
    assert logged.data.metrics["Offline.performance.value"] == pytest.approx(test["value"])
    assert json.loads(logged.data.params["max_batchsize"]) == record["config"]["max_batchsize"]
