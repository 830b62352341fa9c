"""A series of runs from one command: `--scenario SingleStream,Offline,...` and
`--repetitions N`, each run in a process of its own.

LoadGen reads its built-in rules once per process (loadgen_bridge), so a second test in the
same process would run without them: each run is `python -m sut` again with the same flags,
into `<output>/<Scenario>/` (and `.../rep_<i>/` with repetitions). `<output>/results.json` then
lists every run, its exit status and its tests, and for repetitions the mean, min and max of
each test's metric; the runs' records share a group id. A signal is passed on to the running
child once (it runs in a session of its own, so a terminal's Ctrl-C does not reach it twice),
which ends as a single run would, and the runs after it do not start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness_base import (EXIT_FAILED, EXIT_OK, ConfigError, interrupted_exit_code,
                          stop_requested)
from sut.output_lock import output_lock
from sut.records import new_run_id
from sut.report import write_results
from sut.run_record import GROUP_VARIABLE

_VALUE_FLAGS = ("--scenario", "--output", "--repetitions")
MAX_REPETITIONS = 1000


def split_scenarios(value: str | None) -> list[str]:
    """The scenarios of a --scenario value; one name gives a list of one."""
    if value is None:
        return []
    names = [name.strip() for name in value.split(",")]
    if any(not name for name in names):
        raise ConfigError(f"--scenario {value!r}: an empty name in the list; separate scenarios "
                          "with single commas, e.g. SingleStream,Offline")
    doubles = sorted({name for name in names if names.count(name) > 1})
    if doubles:
        raise ConfigError(f"--scenario {value!r}: {', '.join(doubles)} given twice; each "
                          "scenario runs once into <output>/<Scenario>/")
    return names


def check_repetitions(value: int | None) -> int:
    if value is None:
        return 1
    if not 1 <= value <= MAX_REPETITIONS:
        raise ConfigError(f"--repetitions {value}: give 1 to {MAX_REPETITIONS}")
    return value


def argv_without(argv: list[str], flags=_VALUE_FLAGS) -> list[str]:
    """argv less the given value flags (`--flag value` and `--flag=value` forms)."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in flags:
            skip = True
        elif not any(word.startswith(flag + "=") for flag in flags):
            kept.append(word)
    return kept


@dataclass(frozen=True)
class Member:
    scenario: str | None  # None: the one the flags give (or the default)
    repetition: int | None  # 1.., or None without --repetitions
    folder: Path

    @property
    def name(self) -> str:
        parts = [self.scenario or ""] + ([f"rep_{self.repetition}"] if self.repetition else [])
        return "/".join(part for part in parts if part)


def members(scenarios: list[str], repetitions: int, output: str) -> list[Member]:
    found = []
    for scenario in scenarios or [None]:
        base = Path(output) / scenario if len(scenarios) > 1 else Path(output)
        if repetitions > 1:
            found += [Member(scenario, i, base / f"rep_{i}") for i in range(1, repetitions + 1)]
        else:
            found.append(Member(scenario, None, base))
    return found


def run_series(argv: list[str], series: list[Member], output: str) -> int:
    """Run the members one after another; returns the worst exit status."""
    from sut import interrupts

    base = argv_without(argv)
    entries: list[dict] = []
    running: list[subprocess.Popen] = []
    group = new_run_id()

    def forward(_reason: str) -> None:
        for child in list(running):
            child.send_signal(interrupted_exit_code() - 128)

    def last_words(reason: str) -> None:
        _write(entries, series, output, group, interrupted=reason)

    unregister = [interrupts.on_interrupt(forward), interrupts.before_forced_exit(last_words)]
    env = dict(os.environ, **{GROUP_VARIABLE: group})
    try:
        with output_lock(output):
            for member in series:
                if stop_requested():
                    break
                print(f"== {member.name} -> {member.folder}", flush=True)
                scenario = ["--scenario", member.scenario] if member.scenario else []
                child = subprocess.Popen([sys.executable, "-m", "sut", *base, *scenario,
                                          "--output", str(member.folder)],
                                         start_new_session=True, env=env)
                running.append(child)
                code = child.wait()
                running.clear()
                entries.append({"run": member.name, "scenario": member.scenario,
                                "repetition": member.repetition, "exit_code": code,
                                "output_dir": str(member.folder), **_tests_of(member.folder)})
            _write(entries, series, output, group)
    finally:
        for undo in unregister:
            undo()
    _print_overview(entries, series)
    if stop_requested():
        return interrupted_exit_code()
    codes = [entry["exit_code"] for entry in entries]
    return EXIT_OK if all(code == EXIT_OK for code in codes) else max(
        (code for code in codes if code and code > 0), default=EXIT_FAILED)


def repetition_summary(entries: list[dict]) -> list[dict]:
    """Per scenario and test mode: the metric's mean, min and max over the repetitions."""
    grouped: dict[tuple, list[dict]] = {}
    for entry in entries:
        for test in entry.get("tests", []):
            if test.get("value") is not None:
                grouped.setdefault((test.get("scenario"), test.get("mode"), test.get("metric")),
                                   []).append(test)
    summary = []
    for (scenario, mode, metric), tests in grouped.items():
        values = [test["value"] for test in tests]
        summary.append({"scenario": scenario, "mode": mode, "metric": metric,
                        "unit": tests[0].get("unit"), "count": len(values),
                        "mean": sum(values) / len(values), "min": min(values),
                        "max": max(values),
                        "results": sorted({test.get("result", "?") for test in tests})})
    return summary


def _write(entries: list[dict], series: list[Member], output: str, group: str,
           interrupted: str | None = None) -> None:
    done = {entry["run"] for entry in entries}
    listed = [{k: v for k, v in entry.items() if k != "tests"} for entry in entries]
    listed += [{"run": member.name, "exit_code": None,
                "not_run": interrupted or "the series was interrupted before it"}
               for member in series if member.name not in done]
    results = {"group": group, "runs": listed,
               "tests": [test for entry in entries for test in entry.get("tests", [])]}
    if any(member.repetition for member in series):
        results["repetitions"] = repetition_summary(entries)
    write_results(results, output)


def _tests_of(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        return {"tests": [], "error": f"{path} was not written"}
    results = json.loads(path.read_text(encoding="utf-8"))
    return {"tests": results.get("tests", []), "results_file": str(path)}


def _print_overview(entries: list[dict], series: list[Member]) -> None:
    print("\n== series")
    ran = {entry["run"]: entry for entry in entries}
    for member in series:
        entry = ran.get(member.name)
        if entry is None:
            print(f"  {member.name}: not run (interrupted before it)")
        else:
            print(f"  {member.name}: exit {entry['exit_code']}, {entry['output_dir']}")
    sys.stdout.flush()
