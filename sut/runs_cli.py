"""`python -m sut runs ...`: the recorded runs, found, shown, compared, shared and plotted.

    python -m sut runs list [--tag T] [--profile P] [--since 2d]
    python -m sut runs show ID
    python -m sut runs compare ID ID ...
    python -m sut runs export ID ... | --tag T  -o runs.zip
    python -m sut runs import runs.zip
    python -m sut runs report ID ... -o report.html

IDs may be shortened to their first characters (at least 4), as `runs list` shows them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from harness_base import EXIT_OK, ConfigError, exit_code_of
from sut.records import RunStore, default_path

EXPORT_FORMAT = "ray-mlperf-vision runs export 1"
MANIFEST = "manifest.json"
SHORT_ID = 12


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sut runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-db", help=f"default $RAY_SUT_RESULTS_DB, else {default_path()}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="the runs, oldest first")
    listing.add_argument("--tag", action="append", default=[])
    listing.add_argument("--profile")
    listing.add_argument("--since", help="a date, a time, or an age (30m, 2h, 3d, 1w)")
    listing.add_argument("--limit", type=int, help="only the last N")
    show = verbs.add_parser("show", help="one run's whole record")
    show.add_argument("id")
    compare = verbs.add_parser("compare", help="runs side by side")
    compare.add_argument("ids", nargs="+")
    export = verbs.add_parser("export", help="records and their LoadGen logs into a zip")
    export.add_argument("ids", nargs="*")
    export.add_argument("--tag", action="append", default=[])
    export.add_argument("-o", "--output", required=True)
    importing = verbs.add_parser("import", help="the runs of an exported zip")
    importing.add_argument("zip")
    report = verbs.add_parser("report", help="one self-contained HTML page of plots")
    report.add_argument("ids", nargs="+")
    report.add_argument("-o", "--output", required=True)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of(lambda: _run(args), failed="runs failed")


def _run(args: argparse.Namespace) -> int:
    creates = args.verb == "import"
    with RunStore(default_path(args.results_db), create=creates) as store:
        if args.verb == "list":
            print(format_list(store.find(args.tag, args.profile, args.since, limit=args.limit)))
        elif args.verb == "show":
            print(json.dumps(store.get(args.id), indent=2))
        elif args.verb == "compare":
            print(format_compare([store.get(run_id) for run_id in args.ids]))
        elif args.verb == "export":
            records = _chosen(store, args.ids, args.tag)
            count = export_runs(records, Path(args.output))
            print(f"{args.output}: {len(records)} run(s), {count} log file(s)")
        elif args.verb == "import":
            added, known = import_runs(store, Path(args.zip))
            print(f"{args.zip}: {added} run(s) added, {known} already there")
        elif args.verb == "report":
            from sut.runs_report import write_report

            write_report([store.get(run_id) for run_id in args.ids], Path(args.output))
            print(f"{args.output}: report of {len(args.ids)} run(s)")
    return EXIT_OK


def _chosen(store: RunStore, ids: list[str], tags: list[str]) -> list[dict]:
    if bool(ids) == bool(tags):
        raise ConfigError("runs export: give run ids or --tag (one of them)")
    records = [store.get(run_id) for run_id in ids] if ids else store.find(tags)
    if not records:
        raise ConfigError(f"runs export --tag {' --tag '.join(tags)}: no run carries that")
    return records


# ---- text views ----------------------------------------------------------------------------

def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def _main_test(record: dict) -> dict:
    tests = record.get("tests") or []
    performance = [test for test in tests if test.get("mode") != "accuracy"]
    return (performance or tests or [{}])[-1]


def _value(test: dict) -> str:
    if test.get("value") is None:
        return "-"
    return f"{test['value']:,.6g} {test.get('unit', '')}".strip()


def format_list(records: list[dict]) -> str:
    if not records:
        return "no runs recorded (yet) that match"
    rows = [["id", "started (UTC)", "kind", "status", "profile", "scenario", "result", "value",
             "tags"]]
    for record in records:
        test = _main_test(record)
        tags = " ".join(key if not value else f"{key}={value}"
                        for key, value in sorted(record.get("tags", {}).items()))
        rows.append([record["id"][:SHORT_ID], record["started"][:19].replace("T", " "),
                     record["kind"], record["status"], record.get("profile") or "-",
                     test.get("scenario", "-"), test.get("result", "-"), _value(test), tags])
    return _table(rows)


def _ms(value) -> str:
    return f"{value / 1e6:,.3f}" if value is not None else "-"


def format_compare(records: list[dict]) -> str:
    """Each run's tests side by side, the metric's ratio to the first run's same test, and the
    configuration keys whose values differ."""
    rows = [["run", "test", "result", "value", "ratio", "p50 ms", "p90 ms", "p99 ms",
             "accuracy %"]]
    first: dict[tuple, float] = {}
    for record in records:
        for test in record.get("tests") or [{}]:
            key = (test.get("scenario"), test.get("mode"))
            value = test.get("value")
            if value and key not in first:
                first[key] = value
            ratio = f"{value / first[key]:.3f}" if value and first.get(key) else "-"
            accuracy = test.get("accuracy_value")
            rows.append([record["id"][:SHORT_ID], f"{key[0]} {key[1]}", test.get("result", "-"),
                         _value(test), ratio, _ms(test.get("p50_ns")), _ms(test.get("p90_ns")),
                         _ms(test.get("p99_ns")),
                         f"{accuracy:.3f}" if accuracy is not None else "-"])
    lines = [_table(rows), ""]
    differing = config_differences(records)
    if differing:
        header = ["configuration"] + [record["id"][:SHORT_ID] for record in records]
        lines.append(_table([header] + [[key] + values for key, values in differing.items()]))
    else:
        lines.append("configuration: the same in every run")
    return "\n".join(lines)


def config_differences(records: list[dict]) -> dict[str, list[str]]:
    keys = sorted({key for record in records for key in (record.get("config") or {})})
    differing = {}
    for key in keys:
        values = [json.dumps((record.get("config") or {}).get(key)) for record in records]
        if len(set(values)) > 1:
            differing[key] = values
    for key in ("model_sha256",):
        values = [str(record.get(key)) for record in records]
        if len(set(values)) > 1:
            differing[key] = [value[:16] for value in values]
    return differing


# ---- export and import ---------------------------------------------------------------------

def _log_files(record: dict) -> list[tuple[Path, str]]:
    """(file, its path under the run's output folder) of every file the run left there."""
    folder = Path(record["output_dir"]) if record.get("output_dir") else None
    if folder is None or not folder.is_dir():
        return []
    return [(path, path.relative_to(folder).as_posix()) for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".")]


def export_runs(records: list[dict], target: Path) -> int:
    if target.exists():
        raise ConfigError(f"-o {target} exists: give a new file name")
    part = target.with_name(target.name + ".part")
    count = 0
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(
                {"format": EXPORT_FORMAT, "runs": [record["id"] for record in records]}))
            for record in records:
                archive.writestr(f"records/{record['id']}.json", json.dumps(record, indent=1))
                for path, name in _log_files(record):
                    archive.write(path, f"logs/{record['id']}/{name}")
                    count += 1
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    return count


def _read_export(archive: zipfile.ZipFile, source: Path) -> list[dict]:
    """The records of an export, every entry name checked before anything is written."""
    for name in archive.namelist():
        path = PurePosixPath(name)
        if name.startswith("/") or "\\" in name or ".." in path.parts or ":" in path.parts[0]:
            raise ConfigError(f"{source}: entry {name!r} has an absolute or '..' path; refused, "
                              "nothing imported")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (KeyError, ValueError):
        raise ConfigError(f"{source} is not an export of `python -m sut runs export` (no "
                          f"readable {MANIFEST})") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{source}: export format {manifest.get('format')!r}, this harness "
                          f"reads {EXPORT_FORMAT!r}")
    records = []
    for run_id in manifest.get("runs", []):
        try:
            record = json.loads(archive.read(f"records/{run_id}.json"))
        except (KeyError, ValueError):
            raise ConfigError(f"{source}: the record of run {run_id} is missing or not JSON; "
                              "nothing imported") from None
        if record.get("id") != run_id or "started" not in record or "kind" not in record:
            raise ConfigError(f"{source}: records/{run_id}.json is not a run record")
        records.append(record)
    return records


def import_runs(store: RunStore, source: Path) -> tuple[int, int]:
    """Add the export's runs that the store lacks; their logs go beside the database."""
    if not source.is_file():
        raise ConfigError(f"runs import {source}: no such file")
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise ConfigError(f"{source} is not a zip file (an export of `python -m sut runs "
                          "export`?)") from None
    with archive:
        records = _read_export(archive, source)
        logs_root = store.path.parent / "imported"
        added = known = 0
        for record in records:
            if store.has(record["id"]):
                known += 1
                continue
            folder = logs_root / record["id"]
            prefix = f"logs/{record['id']}/"
            members = [name for name in archive.namelist()
                       if name.startswith(prefix) and not name.endswith("/")]
            with tempfile.TemporaryDirectory(dir=store.path.parent) as scratch:
                for name in members:
                    archive.extract(name, scratch)
                if members:  # the logs in place first: a record never points at nothing
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(Path(scratch) / "logs" / record["id"]), folder)
            if store.add(_relocated(record, record.get("output_dir"), folder)):
                added += 1
    return added, known


def _relocated(record: dict, old_root: str | None, new_root: Path) -> dict:
    """The record with its output folders pointing at the imported logs."""
    def move(path: str | None) -> str | None:
        if not path or not old_root:
            return path
        try:
            return str(new_root / Path(path).relative_to(old_root))
        except ValueError:
            return path

    record = dict(record, output_dir=str(new_root), imported_from=old_root)
    record["tests"] = [dict(test, output_dir=move(test.get("output_dir")))
                       for test in record.get("tests", [])]
    return record
