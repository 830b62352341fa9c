"""`--scenario SingleStream,Offline,...`: each scenario in turn, each in its own process.

LoadGen reads its built-in rules once per process (loadgen_bridge), so a second scenario in
the same process would run without them: each one is `python -m sut` again, with the same
flags, into `<output>/<Scenario>/`. `<output>/results.json` then lists every scenario's tests
and the exit status of its process. A signal is passed on to the running scenario once (it runs
in a session of its own, so a terminal's Ctrl-C does not reach it twice), which ends as a
single run would, and the scenarios after it do not start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness_base import (EXIT_FAILED, EXIT_OK, ConfigError, interrupted_exit_code,
                          stop_requested)
from sut.output_lock import output_lock
from sut.report import write_results

_VALUE_FLAGS = ("--scenario", "--output")


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


def run_each(argv: list[str], scenarios: list[str], output: str) -> int:
    """Run the scenarios one after another; returns the worst exit status."""
    from sut import interrupts

    base = argv_without(argv)
    entries: list[dict] = []
    running: list[subprocess.Popen] = []

    def forward(_reason: str) -> None:
        for child in list(running):
            child.send_signal(interrupted_exit_code() - 128)

    def last_words(reason: str) -> None:
        entries.append({"scenario": scenarios[len(entries)], "exit_code": None,
                        "not_run": reason})
        _write(entries, scenarios, output)

    unregister = [interrupts.on_interrupt(forward), interrupts.before_forced_exit(last_words)]
    try:
        with output_lock(output):
            for scenario in scenarios:
                if stop_requested():
                    break
                folder = Path(output) / scenario
                print(f"== {scenario} -> {folder}", flush=True)
                child = subprocess.Popen([sys.executable, "-m", "sut", *base, "--scenario",
                                          scenario, "--output", str(folder)],
                                         start_new_session=True)
                running.append(child)
                code = child.wait()
                running.clear()
                entries.append({"scenario": scenario, "exit_code": code,
                                "output_dir": str(folder), **_tests_of(folder)})
            _write(entries, scenarios, output)
    finally:
        for undo in unregister:
            undo()
    _print_overview(entries, scenarios)
    if stop_requested():
        return interrupted_exit_code()
    codes = [entry["exit_code"] for entry in entries]
    return EXIT_OK if all(code == EXIT_OK for code in codes) else max(
        (code for code in codes if code and code > 0), default=EXIT_FAILED)


def _write(entries: list[dict], scenarios: list[str], output: str) -> None:
    done = {entry["scenario"] for entry in entries}
    listed = entries + [{"scenario": scenario, "exit_code": None,
                         "not_run": "the run was interrupted before it"}
                        for scenario in scenarios if scenario not in done]
    write_results({"scenarios": [{k: v for k, v in entry.items() if k != "tests"}
                                 for entry in listed],
                   "tests": [test for entry in entries for test in entry.get("tests", [])]},
                  output)


def _tests_of(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        return {"tests": [], "error": f"{path} was not written"}
    results = json.loads(path.read_text(encoding="utf-8"))
    return {"tests": results.get("tests", []), "results_file": str(path)}


def _print_overview(entries: list[dict], scenarios: list[str]) -> None:
    print("\n== scenarios")
    ran = {entry["scenario"]: entry for entry in entries}
    for scenario in scenarios:
        entry = ran.get(scenario)
        if entry is None or entry.get("not_run"):
            print(f"  {scenario}: not run (interrupted before it)")
        else:
            print(f"  {scenario}: exit {entry['exit_code']}, {entry['output_dir']}")
    sys.stdout.flush()
