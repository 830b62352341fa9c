"""Everything that touches LoadGen (`mlperf_loadgen`), which lives in the driver process only.

- `build_settings`: TestSettings from LoadGen's built-in rules, user.conf, then the command-line
  overrides. LoadGen applies its built-in mlperf.conf rules only on the first FromConfig call of
  a process, so this module makes that call exactly once, keeps what it gave, and refuses a
  second (model, scenario, user.conf).
- `complete_samples`: a batch's answers -> QuerySamplesComplete.
- `run_test`: one LoadGen test (StartTestWithLogSettings) around given callbacks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from actors.messages import Batch
from harness_base import ConfigError
from sut.config import RunConfig

MILLI = 1000
NANO = 1_000_000_000

# (model, scenario, user.conf) of this process's one FromConfig call, and the settings it gave.
_rules_read: tuple[tuple[str, str, str], dict] | None = None

# Rules of models that LoadGen 6's built-in mlperf.conf no longer carries (retired from MLPerf),
# as the mlperf.conf of the releases that had them set them. They go first, --user_conf after.
RETIRED_MODEL_RULES = {
    "ssd-resnet34": ("*.performance_sample_count_override = 64",
                     "Server.target_latency = 100"),
    "mobilenet": ("*.performance_sample_count_override = 1024",),
}


def _lg():
    import mlperf_loadgen

    return mlperf_loadgen


def scenario_enum(name: str):
    return getattr(_lg().TestScenario, name)


def mode_enum(mode: str):
    lg = _lg()
    return {"performance": lg.TestMode.PerformanceOnly, "accuracy": lg.TestMode.AccuracyOnly,
            "find_peak": lg.TestMode.FindPeakPerformance}[mode]


def build_settings(config: RunConfig):
    """TestSettings for this process's (model, scenario): built-in rules < user.conf < flags."""
    settings = _settings_from_rules(config)
    settings.scenario = scenario_enum(config.scenario)
    if config.time_s is not None:
        settings.min_duration_ms = int(config.time_s * MILLI)
        settings.max_duration_ms = int(config.time_s * MILLI)
    if config.qps is not None:
        settings.server_target_qps = float(config.qps)
        settings.offline_expected_qps = float(config.qps)
    if config.max_latency_s is not None:
        settings.server_target_latency_ns = int(config.max_latency_s * NANO)
        settings.multi_stream_expected_latency_ns = int(config.max_latency_s * NANO)
    if config.samples_per_query is not None:
        settings.multi_stream_samples_per_query = int(config.samples_per_query)
    if config.performance_sample_count is not None:
        settings.performance_sample_count_override = int(config.performance_sample_count)
    return settings


# LoadGen builds every query of a test before the first is issued: about 350 bytes each
# (200,000 Server queries grew a process by 69 MB, LoadGen 6.0.17). Past this count a run
# would fill the memory instead of starting (1e9 QPS grew 500 MB/s until the OOM killer).
MAX_SCHEDULED_SAMPLES = 20_000_000


def check_schedulable(settings, config: RunConfig) -> None:
    """Refuse a Server rate or an Offline query that LoadGen cannot hold in memory."""
    if config.scenario not in ("Server", "Offline") or "performance" not in config.modes:
        return
    seconds = settings.min_duration_ms / MILLI
    if config.scenario == "Server":
        rate, flag = settings.server_target_qps, "--qps (Server target QPS)"
        count = max(settings.min_query_count, rate * seconds)
    else:
        rate, flag = settings.offline_expected_qps, "--qps (Offline expected QPS)"
        count = max(settings.min_query_count, rate * seconds * 1.1)
    if count > MAX_SCHEDULED_SAMPLES:
        raise ConfigError(f"{flag} {rate:g} for {seconds:g} s: LoadGen would build "
                          f"{count:,.0f} queries before starting (about "
                          f"{count * 350 / 2**30:,.0f} GiB). Keep rate x duration under "
                          f"{MAX_SCHEDULED_SAMPLES:,}: a lower --qps, or a shorter --time.")


def performance_sample_count(config: RunConfig, settings, total_count: int) -> int:
    """How many samples a performance test loads: --performance-sample-count, else LoadGen's
    rule for the model (performance_sample_count_override), else 1024; at most the set."""
    return min(total_count, config.performance_sample_count
               or settings.performance_sample_count_override or 1024)


def _settings_from_rules(config: RunConfig):
    """Fresh TestSettings holding LoadGen's rules for the config. FromConfig runs on the first
    call only (a second one would skip the built-in rules); later calls copy its result."""
    global _rules_read
    lg = _lg()
    key = (config.model_name, config.scenario, config.user_conf or "", config.mlperf_conf or "")
    settings = lg.TestSettings()
    if _rules_read is not None:
        read_for, fields = _rules_read
        if read_for != key:
            raise RuntimeError(f"LoadGen settings were built for {read_for} in this process; "
                               f"{key} would miss LoadGen's built-in rules. Run it in a new "
                               "process.")
        for name, value in fields.items():
            setattr(settings, name, value)
        return settings
    rules = [f"{config.model_name}.{rule}"
             for rule in RETIRED_MODEL_RULES.get(config.model_name, ())]
    if config.mlperf_conf:
        rules += rule_lines(Path(config.mlperf_conf).read_text(encoding="utf-8"))
    conf = _conf_with_rules(config.model_name, rules, config.user_conf)
    if conf:
        try:
            status = settings.FromConfig(conf, config.model_name, config.scenario, 1)
        finally:
            if conf != config.user_conf:
                os.unlink(conf)
        if status != 0:
            flags = " or ".join(f"{flag} {path}" for flag, path in (
                ("--user_conf", config.user_conf), ("--mlperf_conf", config.mlperf_conf)) if path)
            raise ConfigError(f"{flags}: LoadGen could not read it (status {status}). Lines "
                              "look like 'resnet50.Offline.target_qps = 100'.")
    else:
        settings.FromConfig("", config.model_name, config.scenario, 0)
    if config.mlperf_conf:
        _apply_seeds(settings, Path(config.mlperf_conf).read_text(encoding="utf-8"),
                     config.model_name, config.scenario)
    fields = {name: getattr(settings, name) for name in dir(settings)
              if not name.startswith("_") and not callable(getattr(settings, name))}
    _rules_read = (key, fields)
    return settings


_RULE = re.compile(r"^\s*([\w*-]+)\.([\w*]+)\.(\w+)\s+=\s+(\S+)")  # LoadGen wants the spaces
# Keys LoadGen reads from its built-in mlperf.conf only (a user.conf line is skipped): a given
# --mlperf_conf sets them on the settings itself.
MLPERF_CONF_ONLY_KEYS = ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")


def rule_lines(text: str) -> list[str]:
    """The 'model.scenario.key = value' lines of a LoadGen config file (comments dropped)."""
    return [line.split("#")[0].strip() for line in text.splitlines()
            if _RULE.match(line.split("#")[0])]


def _apply_seeds(settings, text: str, model: str, scenario: str) -> None:
    """Seeds from --mlperf_conf, the most specific line winning as in LoadGen's own lookup."""
    found: dict[str, tuple[int, int]] = {}
    for line in rule_lines(text):
        line_model, line_scenario, name, value = _RULE.match(line).groups()
        if name not in MLPERF_CONF_ONLY_KEYS or line_model not in (model, "*") \
                or line_scenario not in (scenario, "*"):
            continue
        rank = (line_model == model) * 2 + (line_scenario == scenario)
        if name not in found or rank >= found[name][0]:
            found[name] = (rank, int(value))
    for name, (_, value) in found.items():
        setattr(settings, name, value)


def _conf_with_rules(model: str, rules: list[str], user_conf: str | None) -> str:
    """The user.conf to give LoadGen: the user's own where no extra rule applies (retired
    models' rules, a --mlperf_conf), else a temporary file with those rules first. LoadGen
    prefers a key naming the model to a `*` one, so a rule the user's file sets in any form
    (model or `*`, any scenario) is left out."""
    user_text = Path(user_conf).read_text(encoding="utf-8") if user_conf else ""
    set_by_user = {match.group(1) for match in re.finditer(
        rf"^\s*(?:{re.escape(model)}|\*)\.[^.\s]+\.(\w+)\s*=", user_text, re.MULTILINE)}
    lines = [rule for rule in rules if rule.split("=")[0].strip().split(".")[-1] not in set_by_user]
    if not lines:
        return user_conf or ""
    import tempfile

    handle, path = tempfile.mkstemp(prefix="ray-sut-", suffix=".conf")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n" + user_text)
    return path


def complete_samples(batch: Batch, data: np.ndarray | None, offsets: np.ndarray | None) -> None:
    """Tell LoadGen every sample of the batch is done. LoadGen copies the payload bytes during
    the call (accuracy mode), so `data` only has to live until we return."""
    lg = _lg()
    ids = batch.response_ids.tolist()
    if data is None:
        responses = [lg.QuerySampleResponse(rid, 0, 0) for rid in ids]
    else:
        base = data.ctypes.data
        starts = offsets.tolist()
        responses = [lg.QuerySampleResponse(rid, base + starts[i], starts[i + 1] - starts[i])
                     for i, rid in enumerate(ids)]
    lg.QuerySamplesComplete(responses)


def run_test(settings, mode: str, total_count: int, performance_count: int,
             issue: Callable[[np.ndarray, np.ndarray], None], flush: Callable[[], None],
             load: Callable[[list[int]], None], unload: Callable[[list[int]], None],
             output_dir: str, trace: bool = False, audit_conf: str | None = None) -> None:
    """Run one LoadGen test; blocks until LoadGen returns (every sample completed)."""
    lg = _lg()
    settings.mode = mode_enum(mode)
    os.makedirs(output_dir, exist_ok=True)

    def issue_queries(query_samples) -> None:
        count = len(query_samples)
        ids = np.fromiter((q.id for q in query_samples), dtype=np.uint64, count=count)
        indices = np.fromiter((q.index for q in query_samples), dtype=np.int64, count=count)
        issue(ids, indices)

    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = os.path.abspath(output_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = trace
    sut = lg.ConstructSUT(issue_queries, flush)
    qsl = lg.ConstructQSL(total_count, performance_count, load, unload)
    try:
        # An absent audit file means "no audit": never pick up a stray ./audit.config.
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings,
                                    os.path.abspath(audit_conf) if audit_conf else "")
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
