"""One frozen run configuration, resolved in one place.

Precedence, as in the reference harness: the command line, then the chosen profile, then the
`defaults` profile. Everything that can be checked without starting Ray or LoadGen is checked
here, so bad input fails first and with a message that names the flag and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.backends import (BACKENDS, backend_class, backends_reading, backends_with,
                             check_backend_name)
from datasets.registry import get_dataset
from harness_base import ConfigError
from sut.profiles import DEFAULTS, get_profile

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
STREAM_SCENARIOS = ("SingleStream", "MultiStream")  # one query in flight at a time
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class RunConfig:
    model: str
    dataset_path: str
    backend: str
    dataset: str
    data_format: str
    model_name: str
    scenario: str = "SingleStream"
    transport: str = "auto"  # auto, in-process, channel or calls (sut/cluster.transport_for)
    modes: tuple[str, ...] = ("performance",)  # any of performance, accuracy, find_peak
    profile: str | None = None
    dataset_list: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    max_batchsize: int = 32
    output: str = "output"
    threads: int | None = None  # intra-op threads per CPU worker; None: share the CPUs out
    qps: float | None = None
    time_s: int | None = None
    count: int | None = None
    performance_sample_count: int | None = None
    max_latency_s: float | None = None
    samples_per_query: int | None = None
    cache_dir: str = "."
    preprocessed_dir: str | None = None
    user_conf: str | None = None
    mlperf_conf: str | None = None  # rules over LoadGen's built-in ones (not for submissions)
    audit_conf: str | None = None
    debug: bool = False
    gpus: int = 0
    workers: int | None = None
    device: str = "cpu"
    address: str | None = None
    server_batch_timeout_s: float | None = None  # None: derived from the latency bound
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    notes: tuple[str, ...] = field(default=())  # lines for the report (embedded default, ...)

    @property
    def num_workers(self) -> int:
        return self.gpus if self.gpus else (self.workers or 1)


def _split_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _first(*values):
    for value in values:
        if value is not None:
            return value
    return None


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Merge command line > profile > defaults into a RunConfig and check it."""
    profile = get_profile(args.profile) if args.profile else DEFAULTS
    backend = _first(args.backend, profile.backend, DEFAULTS.backend)
    check_backend_name(backend)
    dataset = _first(args.dataset, profile.dataset, DEFAULTS.dataset)
    get_dataset(dataset)
    data_format = _first(args.data_format, profile.data_format,
                         getattr(backend_class(backend), "preferred_layout", "NCHW"))
    if data_format not in LAYOUTS:
        raise ConfigError(f"--data-format {data_format!r}; choose one of {list(LAYOUTS)}")
    if args.scenario not in SCENARIOS:
        raise ConfigError(f"unknown --scenario {args.scenario!r}; choose one of {list(SCENARIOS)}")
    modes = ("accuracy",) if args.accuracy else ("performance",)
    if args.find_peak_performance:
        if args.scenario != "Server":
            raise ConfigError("--find-peak-performance works only with --scenario Server")
        modes = ("find_peak",)
    if args.accuracy and args.find_peak_performance:
        raise ConfigError("--accuracy and --find-peak-performance are separate runs: give one")
    if args.model is None:
        raise ConfigError("--model is required (the model file); run `python -m sut` with no "
                          "arguments for the embedded default")
    row = BACKENDS.get(backend)  # None: a plug-in class of the user's
    if (row is None or row.reads_model_file) and not Path(args.model).exists():  # or a folder
        raise ConfigError(f"--model {args.model}: no such file. Download the model (README, "
                          "'Real MLPerf models') or fix the path.")
    if args.dataset_path is None:
        raise ConfigError("--dataset-path is required (the folder of images and val_map.txt)")
    if (row is not None and row.reads_model_file and "tf-saved-model" not in row.model_formats
            and Path(args.model).is_dir()):
        readers = " or ".join(f"--backend {name}" for name in backends_reading("tf-saved-model"))
        raise ConfigError(f"--model {args.model} is a folder: give the model file (only "
                          f"{readers} reads a folder, a SavedModel).")
    for flag, path in (("--user_conf", args.user_conf), ("--audit_conf", args.audit_conf),
                       ("--mlperf_conf", args.mlperf_conf)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file.")
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{flag} {path} is not a UTF-8 text file: give LoadGen's "
                                  "'key = value' config lines.") from None
            # LoadGen skips lines it cannot parse: an audit file of none would audit nothing.
            if flag != "--user_conf" and not re.search(r"^\s*[\w*-]+\.[\w*]+\.\w+\s+=\s+\S",
                                                       text, re.MULTILINE):
                example = ("'*.*.accuracy_log_probability = 0.1'): is it the compliance "
                           "test's audit.config?" if flag == "--audit_conf" else
                           "'resnet50.Server.target_latency = 15'): is it an mlperf.conf?")
                raise ConfigError(f"{flag} {path} has no 'model.scenario.key = value' line "
                                  f"(e.g. {example}")
    max_batchsize = _first(args.max_batchsize, profile.max_batchsize, DEFAULTS.max_batchsize)
    _check_positive("--max-batchsize", max_batchsize)
    for flag in ("count", "threads", "workers", "performance_sample_count", "time", "qps",
                 "max_latency", "samples_per_query", "server_batch_timeout_ms"):
        _check_positive("--" + flag.replace("_", "-"), getattr(args, flag))
    for flag, value, most, unit in (("--time", args.time, MAX_TIME_S, "s"),
                                    ("--samples-per-query", args.samples_per_query,
                                     MAX_SAMPLES_PER_QUERY, "samples")):
        if value is not None and value > most:
            raise ConfigError(f"{flag} {value}: at most {most:,} {unit} (LoadGen keeps it in a "
                              "fixed-size integer). Give a smaller value.")
    if args.qps is not None and args.qps > MAX_QPS:
        raise ConfigError(f"--qps {args.qps:g}: above {MAX_QPS:,} queries/s LoadGen's schedule "
                          "cannot be kept (it would build queries faster than anything answers "
                          "them and fill the memory). Give a rate the system can serve.")
    gpus = args.gpus or 0
    if gpus < 0:
        raise ConfigError(f"--gpus {gpus}: must be 0 or more")
    if gpus and args.workers:
        raise ConfigError("--gpus and --workers are exclusive: --gpus N places one worker per "
                          "GPU; --workers K places K CPU workers")
    device = args.device or ("gpu" if gpus else "cpu")
    if device == "gpu" and not gpus:
        raise ConfigError("--device gpu needs --gpus N (one worker per GPU)")
    torch_only = [flag for flag, used in (
        (f"--precision {args.precision}", args.precision != "fp32"), ("--compile", args.compile),
        ("--channels-last", args.channels_last), ("--cuda-graphs", args.cuda_graphs)) if used]
    if torch_only and row is not None and not row.torch_options:
        having = " or ".join(f"--backend {name}" for name in backends_with("torch_options"))
        raise ConfigError(f"{' '.join(torch_only)}: only {having} has it; --backend "
                          f"{backend} would ignore it. Drop it, or run a PyTorch model.")
    if row is not None and device not in row.devices:
        raise ConfigError(f"--device {device}: --backend {backend} runs on "
                          f"{' and '.join(row.devices)} only. Use --device "
                          f"{row.devices[0]}, or a backend for the {device}.")
    if args.cuda_graphs and device != "gpu":
        raise ConfigError("--cuda-graphs needs a GPU: add --gpus N (CUDA graphs replay on the "
                          "device), or drop the flag on the CPU")
    transport = getattr(args, "transport", "auto")
    if transport == "in-process" and (gpus or args.workers or 1) > 1:
        raise ConfigError("--transport in-process runs one worker, in this process: drop "
                          "--gpus/--workers above 1, or use --transport channel")
    return RunConfig(
        model=args.model, dataset_path=args.dataset_path, backend=backend, dataset=dataset,
        data_format=data_format,
        model_name=_first(args.model_name, profile.model_name, "resnet50"),
        scenario=args.scenario, modes=modes, profile=args.profile,
        dataset_list=args.dataset_list,
        inputs=_first(_split_names(args.inputs), profile.inputs, ()),
        outputs=_first(_split_names(args.outputs), profile.outputs, ()),
        max_batchsize=max_batchsize, output=args.output, threads=args.threads, qps=args.qps,
        time_s=args.time, count=args.count,
        performance_sample_count=args.performance_sample_count,
        max_latency_s=args.max_latency, samples_per_query=args.samples_per_query,
        cache_dir=args.cache_dir, preprocessed_dir=args.preprocessed_dir,
        user_conf=args.user_conf, audit_conf=args.audit_conf, debug=args.debug,
        mlperf_conf=getattr(args, "mlperf_conf", None),
        gpus=gpus, workers=args.workers, device=device, address=args.address,
        server_batch_timeout_s=(args.server_batch_timeout_ms / 1000.0
                                if args.server_batch_timeout_ms else None),
        precision=args.precision, compile=args.compile, channels_last=args.channels_last,
        cuda_graphs=args.cuda_graphs, transport=transport)


# The highest --qps taken, as the QPS scan caps its rates (scripts/qps_scan.py).
MAX_QPS = 1_000_000
MAX_TIME_S = 10_000_000  # 115 days; LoadGen takes milliseconds in a 64-bit integer
MAX_SAMPLES_PER_QUERY = 1 << 31


def _check_positive(flag: str, value) -> None:
    if value is not None and not (value > 0 and (isinstance(value, int) or math.isfinite(value))):
        raise ConfigError(f"{flag} {value}: must be a positive number")


def check_writable_folder(flag: str, path: str) -> None:
    """--output and --cache_dir: a bad path fails now, before anything starts, not after the
    run. A folder that does not exist yet is created to prove it can be, then removed again:
    input refused later must leave nothing behind."""
    target = Path(path)
    missing = [folder for folder in (target, *target.parents) if not folder.exists()]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{flag} {path}: cannot create that folder ({error.strerror or error})."
                          " Give a writable folder.") from None
    finally:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass
    if not missing and not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: folder is not writable. Give a writable folder.")
