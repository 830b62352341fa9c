"""The reference's command-line habits: --scenario lists, ./user.conf, --mlperf_conf; and
--repetitions, which runs the same way."""

from __future__ import annotations

import json

from conftest import SHORT_USER_CONF, assert_each_sample_once
from harness_base import EXIT_BAD_INPUT, EXIT_OK
from sut.report import read_loadgen_results
from sut.run_series import argv_without, split_scenarios


def test_scenario_list_words():
    assert split_scenarios("SingleStream, Offline") == ["SingleStream", "Offline"]
    assert split_scenarios("Server") == ["Server"]
    assert argv_without(["--profile", "p", "--scenario", "A,B", "--output=o", "--qps", "3"]) \
        == ["--profile", "p", "--qps", "3"]


def test_a_scenario_list_runs_each_into_its_own_folder_and_entry(run_known, known_set):
    run = run_known("SingleStream,Offline", "--accuracy")
    assert run.returncode == EXIT_OK, run.stderr
    results = run.results()
    assert [entry["scenario"] for entry in results["runs"]] == ["SingleStream", "Offline"]
    assert [entry["exit_code"] for entry in results["runs"]] == [0, 0]
    assert [test["scenario"] for test in results["tests"]] == ["SingleStream", "Offline"]
    for scenario in ("SingleStream", "Offline"):
        folder = run.output / scenario
        own = json.loads((folder / "results.json").read_text())
        assert own["setup"]["scenario"] == scenario
        assert read_loadgen_results(folder)["effective_scenario"] == scenario
        assert own["tests"][0]["accuracy"]["good"] == len(known_set.lines)
        assert_each_sample_once(run.accuracy_log(scenario), len(known_set.lines))
    assert "== series" in run.stdout


def test_a_bad_scenario_list_is_refused_before_anything_runs(run_known):
    for value, words in (("Offline,Bogus", "unknown --scenario 'Bogus'"),
                         ("Offline,Offline", "given twice"), ("Offline,", "empty name")):
        run = run_known(value)
        assert run.returncode == EXIT_BAD_INPUT, (value, run.stderr)
        assert words in run.stderr
        assert not run.output.exists(), "nothing may start"
    run = run_known("Offline,Server", "--find-peak-performance")
    assert run.returncode == EXIT_BAD_INPUT and "only with --scenario Server" in run.stderr


def test_the_working_folders_user_conf_is_read_and_said(run_cli, known_set, model_dir,
                                                        tmp_path):
    (tmp_path / "user.conf").write_text(SHORT_USER_CONF + "resnet50.Offline.target_qps = 123\n")
    run = run_cli("--profile", "resnet50-onnxruntime", "--model",
                  str(known_set.model(model_dir, "vgg", "NCHW")), "--dataset-path",
                  str(known_set.dataset_path), "--scenario", "Offline")
    assert run.returncode == EXIT_OK, run.stderr
    assert f"--user_conf {tmp_path / 'user.conf'}: the working folder's user.conf" in run.stdout
    assert read_loadgen_results(run.output)["effective_target_qps"] == 123


def test_mlperf_conf_is_applied_under_the_user_conf(run_known, tmp_path):
    mlperf_conf = tmp_path / "mlperf.conf"
    mlperf_conf.write_text("# a modified mlperf.conf\n"
                           "*.*.qsl_rng_seed = 12345\n"
                           "resnet50.Offline.qsl_rng_seed = 67890\n"
                           "*.Offline.sample_index_rng_seed = 4242\n"
                           "resnet50.Offline.target_qps = 66\n"  # the user.conf sets it
                           "resnet50.Offline.max_duration = 90000\n")
    run = run_known("Offline", "--mlperf_conf", str(mlperf_conf))
    assert run.returncode == EXIT_OK, run.stderr
    assert "not valid for a submission" in run.stdout
    effective = read_loadgen_results(run.output)
    assert effective["effective_qsl_rng_seed"] == 67890  # the most specific line
    assert effective["effective_sample_index_rng_seed"] == 4242
    assert effective["effective_target_qps"] == 100  # --user_conf's wins
    assert effective["effective_max_duration_ms"] == 90000


def test_an_mlperf_conf_without_rules_is_refused(run_known, tmp_path):
    mlperf_conf = tmp_path / "mlperf.conf"
    mlperf_conf.write_text("min_query_count: 5\n")
    run = run_known("Offline", "--mlperf_conf", str(mlperf_conf))
    assert run.returncode == EXIT_BAD_INPUT
    assert f"--mlperf_conf {mlperf_conf} has no 'model.scenario.key = value' line" in run.stderr
