"""The MLPerf cloud benchmark's QPS scan, on the Ray SUT.

    python scripts/qps_scan.py --profile resnet50-onnxruntime --model resnet50_v1.onnx \
        --dataset-path /data/imagenet2012 --gpus 4

Three stages, as the cloud benchmark runs them: the accuracy of the first 500 images; then for
each latency bound (--latencies, default 10, 50, 100 and 200 ms) the highest QPS whose 99th
percentile stays within it, with equal spacing between requests ("linear") and with exponential
gaps ("exponential"). Lines as the cloud benchmark prints them, ending with
`===FINAL_RESULT: {...}`; everything also goes to <output>/qps_scan.json.

Every flag of `python -m sut` applies (model, dataset, backend, --gpus, --workers, ...); with no
model and no dataset it scans the embedded default. The QPS found sizes a LoadGen Server run
with the same bound (`python -m sut --scenario Server --qps N --max-latency BOUND`), which is
what MLPerf counts.
"""

from __future__ import annotations

import argparse
import math
import sys

from harness_base import EXIT_OK, ConfigError
from sut.cli import main
from sut.config import MAX_QPS
from sut.qps_scan import ARRIVALS, DEFAULT_LATENCIES_S


MAX_RATE = MAX_QPS  # requests/s; the scan's driver issues well under this


def add_scan_flags(parser: argparse.ArgumentParser) -> None:
    parser.prog = "scripts/qps_scan.py"
    parser.description = "The MLPerf cloud benchmark's QPS scan on the Ray SUT."
    group = parser.add_argument_group("QPS scan")
    add = group.add_argument
    add("--latencies", default=",".join(f"{s:g}" for s in DEFAULT_LATENCIES_S),
        help="latency bounds in seconds, comma-separated (default %(default)s)")
    add("--arrivals", default=",".join(ARRIVALS),
        help="linear (equal spacing), exponential (Poisson), or both (default %(default)s)")
    add("--accuracy-count", type=int, default=500,
        help="images checked for accuracy first (0: skip; default %(default)s)")
    add("--trial-seconds", type=float, default=5.0, help="length of one trial (default 5)")
    add("--min-requests", type=int, default=100,
        help="requests per trial at least, within 4 trial lengths (default 100)")
    add("--start-qps", type=int, help="first rate tried (default --qps, else 10)")
    add("--max-qps", type=int, help="highest rate tried (default: no limit)")
    add("--percentile", type=float, default=99.0, help="latency percentile (default 99)")
    add("--seed", type=int, default=0, help="seed of the arrivals and sample choice")


def scan_options(args: argparse.Namespace):
    """Flags -> ScanOptions, each checked with a message that names it."""
    from sut.scan_runner import ScanOptions

    try:
        latencies = tuple(float(value) for value in args.latencies.split(",") if value.strip())
    except ValueError:
        latencies = ()
    if not latencies or not all(math.isfinite(value) and value > 0 for value in latencies):
        raise ConfigError(f"--latencies {args.latencies!r}: give positive seconds, e.g. 0.01,0.05")
    arrivals = tuple(dict.fromkeys(value.strip() for value in args.arrivals.split(",")
                                   if value.strip()))
    unknown = [value for value in arrivals if value not in ARRIVALS]
    if unknown or not arrivals:
        raise ConfigError(f"--arrivals {args.arrivals!r}: choose from {', '.join(ARRIVALS)}")
    if args.accuracy_count < 0:
        raise ConfigError(f"--accuracy-count {args.accuracy_count}: 0 or more")
    for flag in ("trial_seconds", "min_requests", "start_qps", "max_qps"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: must be a positive number")
    for flag in ("start_qps", "max_qps"):
        value = getattr(args, flag)
        if value is not None and value > MAX_RATE:
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: at most {MAX_RATE:,} (one "
                              "driver cannot issue requests faster)")
    if not 0 < args.percentile < 100:
        raise ConfigError(f"--percentile {args.percentile}: between 0 and 100")
    start = args.start_qps or (int(args.qps) if args.qps else 10)
    return ScanOptions(latencies_s=tuple(sorted(set(latencies))), arrivals=arrivals,
                       accuracy_count=args.accuracy_count, trial_seconds=args.trial_seconds,
                       min_requests=args.min_requests, start_qps=max(1, start),
                       max_qps=args.max_qps, percentile=args.percentile, seed=args.seed)


def scan_job(config, images, args: argparse.Namespace) -> int:
    from sut.scan_runner import run_scan

    options = scan_options(args)  # bad scan flags fail before Ray starts
    run_scan(config, images, options)
    return EXIT_OK


scan_job.record_kind = "scan"  # how its record says it ran (sut/run_record.py)
scan_job.results_file = "qps_scan.json"


if __name__ == "__main__":
    sys.exit(main(None, handle_signals=True, job=scan_job, extend_parser=add_scan_flags))
