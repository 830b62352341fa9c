"""`python -m sut`: the reference harness's command line, run on Ray.

With neither --model nor --dataset-path, the embedded default runs (EfficientNet-Lite0 with
trained weights on 20 labelled ImageNet photos, exported offline once; or, with
--profile resnet50-onnxruntime, a random-weight ResNet-50 on synthetic images): an accuracy pass
and an Offline performance test. Other flags still apply: `python -m sut --scenario Server`.

Exit status: 0 the run completed (VALID or INVALID is in the report), 2 bad input (nothing
started), 3 the run failed (no worker left, a batch failing every retry, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from harness_base import (EXIT_FAILED, EXIT_OK, ConfigError, exit_code_for, exit_code_of,
                          interrupted_exit_code, stop_requested)


WORKING_USER_CONF = "user.conf"  # read from the working folder, as the reference does


def build_parser() -> argparse.ArgumentParser:
    from actors.backends import BACKENDS
    from datasets.registry import DATASETS
    from sut.config import SCENARIOS
    from sut.profiles import PROFILES

    parser = argparse.ArgumentParser(
        prog="python -m sut", description="MLPerf Inference vision SUT on Ray.",
        epilog="With neither --model nor --dataset-path, runs the embedded default. "
               "`python -m sut fetch --help`: download MLPerf model files and data by name. "
               "`python -m sut runs --help`: the recorded runs. `python -m sut submission "
               "--help`: the MLPerf submission tree.")
    reference = parser.add_argument_group("reference harness flags")
    add = reference.add_argument
    add("--dataset", help=f"dataset: {', '.join(sorted(DATASETS))}")
    add("--dataset-path", help="folder of the images (and val_map.txt)")
    add("--dataset-list", help="list file (default: <dataset-path>/val_map.txt; for COCO and "
                               "OpenImages sets their annotations JSON)")
    add("--data-format", help="NCHW or NHWC (default: the profile's, else the backend's)")
    add("--profile", help=f"one of: {', '.join(sorted(PROFILES))}")
    add("--scenario", help=f"one of {', '.join(SCENARIOS)} (default SingleStream; Offline for "
                           "the embedded default)")
    add("--max-batchsize", type=int, help="largest batch sent to a worker (profile default 32)")
    add("--model", help="model file (default with --profile: the profile's file in "
                        "--models-dir, put there by `python -m sut fetch PROFILE`)")
    add("--output", default="output",
        help="folder for LoadGen logs and results.json (default %(default)s)")
    add("--inputs", help="comma-separated input tensor names")
    add("--outputs", help="comma-separated output tensor names")
    add("--backend", help=f"one of: {', '.join(sorted(BACKENDS))} (null: the harness alone, no "
                          "inference); or package.module:Class")
    add("--model-name", help="LoadGen model key for its rules, e.g. resnet50")
    add("--threads", type=int, help="intra-op threads per CPU worker (default: CPUs / workers; "
                                    "the reference's issuing threads are not needed here)")
    add("--qps", type=float, help="Server target QPS and Offline expected QPS")
    add("--time", type=int, help="min and max duration in seconds (not for submissions)")
    add("--count", type=int, help="use only the first N images of the list")
    add("--performance-sample-count", type=int, help="samples loaded for performance runs")
    add("--max-latency", type=float, help="Server latency bound in seconds")
    add("--samples-per-query", type=int, help="MultiStream samples per query")
    add("--cache_dir", default=".", help="root of the pre-processed cache (default .)")
    add("--preprocessed_dir", help="use samples the reference harness pre-processed (float32)")
    add("--accuracy", action="store_true", help="AccuracyOnly run, scored at the end")
    add("--find-peak-performance", action="store_true", help="Server: find the peak QPS")
    add("--debug", action="store_true", help="verbose logs and a LoadGen trace")
    add("--user_conf", help="LoadGen user.conf")
    add("--audit_conf", help="LoadGen audit.config (compliance tests)")
    add("--compliance", choices=("TEST01", "TEST04"),
        help="run MLPerf's compliance test and verify it against --compliance-reference")
    add("--compliance-reference", metavar="DIR",
        help="the submission runs of this scenario: DIR/accuracy/ and DIR/performance/ (or "
             "performance/run_1/)")
    add("--mlperf_conf", help="rules applied over LoadGen's built-in mlperf.conf (its seeds "
                              "too), under --user_conf; a run with other rules than LoadGen's "
                              "is not valid for a submission")
    add("--cache", type=int, help="ignored: pre-processed samples are always cached")
    add("--models-dir", help="where `python -m sut fetch` put the model files (default "
                             "$MODEL_DIR, else the user's data folder)")
    add("--repetitions", type=int, help="run the same test N times, each in its own process "
                                        "(recorded as one group: mean, min, max)")
    from sut.run_record import add_record_flags

    add_record_flags(parser)
    ray_group = parser.add_argument_group("placement on Ray")
    ray_group.add_argument("--gpus", type=int, default=0,
                           help="one worker actor per GPU (num_gpus=1 each)")
    ray_group.add_argument("--workers", type=int, help="number of CPU workers (default 1)")
    ray_group.add_argument("--device", choices=("cpu", "gpu"),
                           help="where backends run (default gpu with --gpus, else cpu)")
    ray_group.add_argument("--address", help="join a running Ray cluster (e.g. auto)")
    ray_group.add_argument("--transport", choices=("auto", "in-process", "channel", "calls"),
                           default="auto",
                           help="how the driver reaches its workers: in-process (one worker "
                                "in this process), channel (worker actors, each batch over a "
                                "socket to its worker) or calls (Ray actor calls). auto: "
                                "in-process for SingleStream/MultiStream with one worker on a "
                                "one-node Ray, else channel")
    ray_group.add_argument("--server-batch-timeout-ms", type=float,
                           help="Server batching window (default: four measured round "
                                "trips, within a tenth and a third of the latency bound)")
    backend_group = parser.add_argument_group("backend options")
    backend_group.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                               help="compute precision (pytorch)")
    backend_group.add_argument("--compile", action="store_true",
                               help="torch.compile the model (pytorch)")
    backend_group.add_argument("--channels-last", action="store_true",
                               help="channels_last memory format (pytorch)")
    backend_group.add_argument("--cuda-graphs", action="store_true",
                               help="replay CUDA graphs, one per batch-size bucket (pytorch, GPU)")
    return parser


def _check_datasets_package() -> None:
    """A top-level `datasets` package is also Hugging Face's: refuse to run with the wrong one."""
    import datasets

    if not getattr(datasets, "IS_RAY_SUT_DATASETS", False):
        raise ConfigError(f"the 'datasets' package imported from {datasets.__file__} is not this "
                          "project's (Hugging Face 'datasets' installed in this environment?). "
                          "Use a separate virtual environment for this harness.")


def resolve(argv: list[str]):
    """Parse argv into (RunConfig, ImageList); builds the embedded default when asked."""
    return resolve_args(build_parser().parse_args(argv))


def resolve_args(args: argparse.Namespace):
    """Parsed flags -> (RunConfig, ImageList); builds the embedded default when asked."""
    from datasets.registry import get_dataset
    from sut.config import check_writable_folder, resolve_config
    notes: list[str] = []
    check_writable_folder("--cache_dir", args.cache_dir)
    check_writable_folder("--output", args.output)
    if args.model is None and args.dataset_path is not None and args.backend == "null":
        args.model = "none"  # the null backend reads no model: no dummy --model needed
    if args.model is None and args.dataset_path is not None and args.profile:
        args.model = str(_fetched_model(args.profile, args.models_dir))
        notes.append(f"--model {args.model} (the profile's file in the models folder)")
    if args.user_conf is None and Path(WORKING_USER_CONF).is_file():
        args.user_conf = str(Path(WORKING_USER_CONF).resolve())
        notes.append(f"--user_conf {args.user_conf}: the working folder's user.conf, read as "
                     "the reference harness reads it (--user_conf FILE names another)")
    if args.mlperf_conf:
        notes.append(f"--mlperf_conf {args.mlperf_conf}: its rules replace LoadGen's built-in "
                     "ones where they differ; such a run is not valid for a submission")
    if args.model is None and args.dataset_path is None:
        from sut.embedded import ensure_embedded_assets

        assets = ensure_embedded_assets(args.cache_dir, args.profile)
        args.model, args.dataset_path = str(assets.model), str(assets.dataset_path)
        args.dataset_list = args.dataset_list or (
            str(assets.dataset_list) if assets.dataset_list else None)
        args.profile = assets.profile
        args.scenario = args.scenario or "Offline"
        args.user_conf = args.user_conf or str(assets.user_conf)
        notes.append(assets.note if args.backend != "null" else
                     "embedded default's images with the null backend: no model runs")
        embedded = True
    elif args.model is None or args.dataset_path is None:
        raise ConfigError("give both --model and --dataset-path (or neither, for the embedded "
                          "default)")
    else:
        embedded = False
    args.scenario = args.scenario or "SingleStream"
    config = resolve_config(args)
    if embedded and not (args.accuracy or args.find_peak_performance):
        config = dataclasses.replace(config, modes=("accuracy", "performance"))
    config = dataclasses.replace(config, notes=tuple(notes))
    images = get_dataset(config.dataset).list_samples(config.dataset_path, config.dataset_list,
                                                      config.count)
    if config.performance_sample_count and config.performance_sample_count > len(images):
        raise ConfigError(f"--performance-sample-count {config.performance_sample_count}: the "
                          f"run lists only {len(images)} samples. Give at most that many, or "
                          "leave it to LoadGen's rule for the model.")
    return config, images


def _fetched_model(profile: str, models_dir: str | None):
    """A run with --profile and no --model takes the file `fetch` put in the models folder."""
    from sut.known_files import models_folder, profile_file_name, profile_model
    from sut.profiles import get_profile

    get_profile(profile)
    folder = models_folder(models_dir)
    found = profile_model(profile, folder)
    if found is None:
        name = profile_file_name(profile)
        if name is None:
            raise ConfigError(f"--profile {profile} has no model file to fetch: give --model.")
        raise ConfigError(f"no --model, and {name} is not in the models folder {folder}: "
                          f"python -m sut fetch {profile} puts it there (or give --model).")
    return found


def run_and_report(config, images, args: argparse.Namespace) -> int:
    """The job of `python -m sut`: every test of the config, then the summary."""
    from sut.runner import print_summary, run

    results = run(config, images)
    print_summary(results)
    return EXIT_FAILED if any(test.get("error") for test in results["tests"]) else EXIT_OK


def compliance_job(config, images, args: argparse.Namespace) -> int:
    """--compliance TEST01|TEST04: the audited performance run, then its verification."""
    import tempfile

    from sut import compliance
    from sut.report import write_results
    from sut.runner import print_summary, run

    clashes = [flag for flag, given in (("--accuracy", args.accuracy),
                                        ("--find-peak-performance", args.find_peak_performance),
                                        ("--audit_conf", args.audit_conf)) if given]
    if clashes:
        raise ConfigError(f"--compliance {args.compliance} and {' '.join(clashes)}: a compliance "
                          "test is one audited performance run; drop the other flag")
    reference = compliance.find_reference(args.compliance_reference, args.compliance,
                                          config.scenario)
    text = compliance.audit_config(args.compliance, config.model_name, config.scenario)
    # The audit file lives in a scratch folder of this run only, named to LoadGen explicitly.
    with tempfile.TemporaryDirectory(prefix="ray-sut-audit-") as scratch:
        audit = Path(scratch) / "audit.config"
        audit.write_text(text, encoding="utf-8")
        audited = dataclasses.replace(config, audit_conf=str(audit), modes=("performance",))
        results = run(audited, images)
    print_summary(results)
    if any(test.get("error") for test in results["tests"]):
        return EXIT_FAILED
    outcome = compliance.verify(args.compliance, reference, Path(config.output),
                                Path(config.output))
    results["compliance"] = outcome
    write_results(results, config.output)
    for key in ("accuracy", "performance"):
        if key in outcome:
            print(f"{args.compliance} {key}: {outcome[key]}", flush=True)
    print(f"{args.compliance}: {'PASS' if outcome['passed'] else 'FAIL'}; the checker's folder "
          f"is {outcome['folder']}", flush=True)
    return EXIT_OK


compliance_job.record_kind = "compliance"


def _run_series(argv: list[str], args: argparse.Namespace, scenarios: list[str],
                repetitions: int, plain_run: bool) -> int:
    """Check every member's configuration, then run each in a process of its own."""
    from sut.run_series import members, run_series

    if not plain_run:
        raise ConfigError("--scenario lists and --repetitions are for python -m sut runs; "
                          "this command takes one scenario, once")
    if args.compliance:
        raise ConfigError(f"--compliance {args.compliance} takes one scenario, once: its "
                          "--compliance-reference holds that scenario's runs")
    for scenario in scenarios or [args.scenario]:
        resolve_args(argparse.Namespace(**{**vars(args), "scenario": scenario}))
    from sut.run_record import Recorder

    Recorder(args, "run", [])  # a bad --results-db or --tag fails now, not in every child
    return run_series(argv, members(scenarios, repetitions, args.output), args.output)


def _recorded(job, config, images, args: argparse.Namespace, argv: list[str]) -> int:
    """The job, recorded when it ends, however it ends (see sut/run_record.py)."""
    from sut import interrupts
    from sut.run_record import Recorder, command_line

    recorder = Recorder(args, getattr(job, "record_kind", "run"), command_line(argv))
    recorder.describe(config, len(images))
    results_file = getattr(job, "results_file", "results.json")
    unregister = interrupts.before_forced_exit(lambda reason: recorder.finish(
        interrupted_exit_code() if stop_requested() else EXIT_FAILED, config.output,
        results_file))
    try:
        code = job(config, images, args)
    except BaseException as error:
        recorder.finish(exit_code_for(error), config.output, results_file)
        raise
    finally:
        unregister()
    recorder.finish(code, config.output, results_file)
    return code


def main(argv: list[str] | None = None, handle_signals: bool = False,
         job=run_and_report, extend_parser=None) -> int:
    """Run the CLI. handle_signals routes Ctrl-C/SIGTERM so they stop a run promptly (see
    interrupts.py); only the process's own entry points set it. Other entry points (the QPS
    scan) add their flags with extend_parser(parser) and do their own job(config, images, args)
    with the same checks, errors and exit codes."""
    if handle_signals:
        from sut import interrupts

        interrupts.install()

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fetch"]:
        from sut import fetch

        return fetch.main(argv[1:])
    if argv[:1] == ["submission"]:
        from sut import submission

        return submission.main(argv[1:])
    if argv[:1] == ["runs"]:
        from sut import runs_cli

        return runs_cli.main(argv[1:])
    debug = "--debug" in argv
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def parse_and_run() -> int:
        _check_datasets_package()  # before anything imports from `datasets`
        parser = build_parser()
        if extend_parser is not None:
            extend_parser(parser)
        args = parser.parse_args(argv)
        from sut.run_series import check_repetitions, split_scenarios

        scenarios = split_scenarios(args.scenario)
        repetitions = check_repetitions(args.repetitions)
        if len(scenarios) > 1 or repetitions > 1:
            return _run_series(argv, args, scenarios, repetitions, job is run_and_report)
        if args.compliance and job is run_and_report:
            chosen = compliance_job
        elif args.compliance:
            raise ConfigError("--compliance runs with python -m sut, not this command")
        else:
            chosen = job
        config, images = resolve_args(args)
        for note in config.notes:
            print(f"NOTE: {note}", flush=True)
        return _recorded(chosen, config, images, args, argv)

    return exit_code_of(parse_and_run, interrupted="interrupted: workers shut down.")


def entry_point() -> int:
    """The console script and `python -m sut`: the harness owns the process and its signals."""
    return main(handle_signals=True)
