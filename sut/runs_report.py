"""`runs report`: one self-contained HTML page (no network, no library) with the plots of the
chosen runs, drawn here as inline SVG:

- latency percentiles of each timed LoadGen test (read from its mlperf_log_detail.txt),
- samples completed per second over each test (the harness counts them as it answers),
- QPS against p99 latency for Server tests and QPS-scan trials, with the bound drawn,
- each worker's busy share of each test,
and the compare table. A script at the end checks that every plot has drawn marks and says so
in the page (`<body data-plots="drawn/total">`), which the browser test reads.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from harness_base import ConfigError
from sut.report import read_loadgen_results
from sut.runs_cli import SHORT_ID, config_differences

PERCENTILES = (("50.00", 50), ("90.00", 90), ("95.00", 95), ("97.00", 97), ("99.00", 99),
               ("99.90", 99.9))
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 640, 300, 70, 40, 20, 150


class Plot:
    """An x-y chart with linear axes (or a 'nines' axis for percentiles), series and a legend."""

    def __init__(self, plot_id: str, x_label: str, y_label: str, nines_x: bool = False,
                 log_y: bool = False) -> None:
        self.plot_id, self.x_label, self.y_label = plot_id, x_label, y_label
        self.nines_x, self.log_y = nines_x, log_y
        self.series: list[tuple[str, list[tuple[float, float]], str]] = []  # name, points, kind
        self.lines: list[tuple[str, float]] = []  # horizontal reference lines (label, y)

    def add(self, name: str, points: list[tuple[float, float]], kind: str = "line") -> None:
        if points:
            self.series.append((name, points, kind))

    def hline(self, label: str, y: float) -> None:
        self.lines.append((label, y))

    def _x(self, value: float) -> float:
        return -math.log10(1 - value / 100.0) if self.nines_x else value

    def _y(self, value: float) -> float:
        return math.log10(max(value, 1e-9)) if self.log_y else value

    def svg(self) -> str:
        if not self.series:
            return (f'<p class="empty" id="{self.plot_id}">No data for this plot in the chosen '
                    "runs.</p>")
        xs = [self._x(x) for _, points, _ in self.series for x, _ in points]
        ys = [self._y(y) for _, points, _ in self.series for _, y in points] + \
            [self._y(y) for _, y in self.lines]
        x0, x1 = min(xs), max(xs)
        if self.log_y:
            y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
            y1 = y1 if y1 > y0 else y0 + 1
        else:
            y0, y1 = 0.0, max(ys) * 1.08 or 1.0
        if x1 == x0:
            x0, x1 = x0 - 1, x1 + 1
        inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

        def px(x: float) -> float:
            return LEFT + (self._x(x) - x0) / (x1 - x0) * inner_w

        def py(y: float, raw: bool = False) -> float:
            position = y if raw else self._y(y)
            return TOP + inner_h - (position - y0) / (y1 - y0) * inner_h

        parts = [f'<svg class="plot" id="{self.plot_id}" xmlns="http://www.w3.org/2000/svg" '
                 f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
                 f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" '
                 'fill="none" stroke="#999"/>']
        y_ticks = ([(k, 10.0 ** k) for k in range(int(y0), int(y1) + 1)] if self.log_y
                   else [(tick, tick) for tick in _ticks(y0, y1)])
        for position, label in y_ticks:
            y = py(position, raw=True)
            parts.append(f'<line x1="{LEFT}" x2="{LEFT + inner_w}" y1="{y:.1f}" '
                         f'y2="{y:.1f}" stroke="#eee"/><text x="{LEFT - 6}" '
                         f'y="{y + 4:.1f}" text-anchor="end">{label:g}</text>')
        x_ticks = ([p for _, p in PERCENTILES] if self.nines_x
                   else _ticks(x0, x1))
        for tick in x_ticks:
            parts.append(f'<text x="{px(tick):.1f}" y="{TOP + inner_h + 16}" '
                         f'text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{LEFT + inner_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                     f"{html.escape(self.x_label)}</text>")
        parts.append(f'<text transform="translate(14 {TOP + inner_h / 2}) rotate(-90)" '
                     f'text-anchor="middle">{html.escape(self.y_label)}</text>')
        for label, y in self.lines:
            parts.append(f'<line class="mark bound" x1="{LEFT}" x2="{LEFT + inner_w}" '
                         f'y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#000" '
                         f'stroke-dasharray="5 4"/><text x="{LEFT + inner_w - 4}" '
                         f'y="{py(y) - 4:.1f}" text-anchor="end">{html.escape(label)}</text>')
        for index, (name, points, kind) in enumerate(self.series):
            colour = COLOURS[index % len(COLOURS)]
            coordinates = [(px(x), py(y)) for x, y in points]
            if kind == "line" and len(coordinates) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
                parts.append(f'<polyline class="mark" fill="none" stroke="{colour}" '
                             f'stroke-width="2" points="{path}"/>')
            for x, y in coordinates:
                parts.append(f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" '
                             f'fill="{colour}"/>')
            legend_y = TOP + 14 + 16 * index
            parts.append(f'<rect x="{WIDTH - RIGHT + 10}" y="{legend_y - 9}" width="10" '
                         f'height="10" fill="{colour}"/><text x="{WIDTH - RIGHT + 24}" '
                         f'y="{legend_y}">{html.escape(name[:22])}</text>')
        parts.append("</svg>")
        return "".join(parts)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step) + 1)]


def _label(record: dict, test: dict | None = None) -> str:
    text = record["id"][:8]
    if test:
        text += f" {test.get('scenario', '')}"
    return text


def _timed_tests(record: dict):
    for test in record.get("tests") or []:
        if test.get("mode") in ("performance", "find_peak") and test.get("result") != "ABORTED":
            yield test


def latency_plot(records: list[dict]) -> Plot:
    plot = Plot("latency", "percentile (spaced by nines)", "latency (ms, log scale)",
                nines_x=True, log_y=True)
    for record in records:
        for test in _timed_tests(record):
            folder = Path(test.get("output_dir") or "")
            detail = read_loadgen_results(folder)
            if not detail:
                raise ConfigError(f"run {record['id'][:SHORT_ID]}: the LoadGen logs of its "
                                  f"{test.get('scenario')} test are gone from {folder} (moved "
                                  "or deleted); the report needs them. Import the run from an "
                                  "export, or leave it out.")
            suffix = "percentile_per_query_latency_ns" if test.get("scenario") == "MultiStream" \
                else "percentile_latency_ns"
            points = [(value, detail[f"result_{name}_{suffix}"] / 1e6)
                      for name, value in PERCENTILES if f"result_{name}_{suffix}" in detail]
            plot.add(_label(record, test), points)
    return plot


def throughput_plot(records: list[dict]) -> Plot:
    plot = Plot("throughput", "seconds into the test", "samples completed per second")
    for record in records:
        for test in _timed_tests(record):
            timeline = test.get("timeline") or {}
            bin_s, counts = timeline.get("bin_s"), timeline.get("completed") or []
            plot.add(_label(record, test), [((i + 1) * bin_s, count / bin_s)
                                            for i, count in enumerate(counts)])
    return plot


def qps_latency_plot(records: list[dict]) -> Plot:
    plot = Plot("qps-latency", "queries per second", "p99 latency (ms)")
    bounds = set()
    for record in records:
        points = []
        for test in _timed_tests(record):
            if test.get("scenario") != "Server" or test.get("p99_ns") is None:
                continue
            qps = test.get("effective_target_qps") or test.get("value")
            points.append((qps, test["p99_ns"] / 1e6))
            detail = read_loadgen_results(Path(test.get("output_dir") or ""))
            if detail.get("effective_target_latency_ns"):
                bounds.add(detail["effective_target_latency_ns"] / 1e6)
        for bound in (record.get("scan") or {}).get("bounds", []):
            key = next((k for k in bound if k.endswith("_latency_s")), None)
            trial_points = sorted((trial["achieved_qps"], trial["percentiles_s"][
                next(iter(trial["percentiles_s"]))] * 1e3) for trial in bound["trials"]
                if trial.get("percentiles_s"))
            plot.add(f"{record['id'][:8]} scan {bound['arrival']}", trial_points, "points")
            if key:
                bounds.add(bound["latency_bound_s"] * 1e3)
        plot.add(_label(record) + " Server", sorted(points), "points")
    for bound in sorted(bounds):
        plot.hline(f"bound {bound:g} ms", bound)
    return plot


def busy_plot(records: list[dict]) -> Plot:
    plot = Plot("busy", "test (in order)", "busy share of the test (%)")
    position = 0
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for test in _timed_tests(record):
            position += 1
            for worker, share in (test.get("busy_share_by_worker") or {}).items():
                by_worker.setdefault(worker[:10], []).append((position, share * 100.0))
    for worker, points in by_worker.items():
        plot.add(f"worker {worker}", points, "points")
    return plot


def compare_table(records: list[dict]) -> str:
    rows = ["<tr><th>run</th><th>test</th><th>result</th><th>value</th><th>ratio</th>"
            "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>accuracy %</th></tr>"]
    first: dict = {}
    for record in records:
        for test in record.get("tests") or []:
            key = (test.get("scenario"), test.get("mode"))
            value = test.get("value")
            if value and key not in first:
                first[key] = value
            cells = [record["id"][:SHORT_ID], f"{key[0]} {key[1]}", test.get("result", "-"),
                     f"{value:,.6g} {test.get('unit', '')}" if value is not None else "-",
                     f"{value / first[key]:.3f}" if value and first.get(key) else "-"]
            cells += [f"{test[k] / 1e6:,.3f}" if test.get(k) is not None else "-"
                      for k in ("p50_ns", "p90_ns", "p99_ns")]
            accuracy = test.get("accuracy_value")
            cells.append(f"{accuracy:.3f}" if accuracy is not None else "-")
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                        + "</tr>")
    differing = config_differences(records)
    config_rows = ["<tr><th>configuration</th>" + "".join(
        f"<th>{record['id'][:SHORT_ID]}</th>" for record in records) + "</tr>"]
    config_rows += ["<tr><td>" + html.escape(key) + "</td>" + "".join(
        f"<td>{html.escape(value)}</td>" for value in values) + "</tr>"
        for key, values in differing.items()]
    return (f'<table class="compare">{"".join(rows)}</table>'
            + (f'<table class="compare">{"".join(config_rows)}</table>' if differing else
               "<p>The configuration is the same in every run.</p>"))


_CHECK = """<script>
const plots = document.querySelectorAll("svg.plot");
let drawn = 0;
for (const svg of plots) {
  const box = svg.getBBox();
  if (box.width > 0 && box.height > 0 && svg.querySelectorAll(".mark").length > 0) drawn++;
  else console.error("plot not drawn: " + svg.id);
}
document.body.dataset.plots = drawn + "/" + plots.length;
</script>"""


def render(records: list[dict]) -> str:
    sections = [("Latency percentiles", latency_plot(records)),
                ("Throughput over each test", throughput_plot(records)),
                ("QPS against p99 latency (Server tests, QPS scans)", qps_latency_plot(records)),
                ("Busy share of each worker", busy_plot(records))]
    body = [f"<h1>ray-mlperf-vision: {len(records)} run(s)</h1>", "<ul>"]
    for record in records:
        body.append(f"<li><b>{record['id'][:SHORT_ID]}</b> {html.escape(record['kind'])} "
                    f"{html.escape(record['status'])}, {html.escape(record['started'])}, "
                    f"{html.escape(str(record.get('profile') or '-'))}, "
                    f"{html.escape(' '.join(record.get('command', [])))}</li>")
    body.append("</ul>")
    for title, plot in sections:
        body.append(f"<h2>{html.escape(title)}</h2>{plot.svg()}")
    body.append(f"<h2>Side by side</h2>{compare_table(records)}")
    style = ("body{font:14px sans-serif;margin:24px}svg text{font:11px sans-serif}"
             "table.compare{border-collapse:collapse;margin:8px 0}"
             "table.compare td,table.compare th{border:1px solid #ccc;padding:3px 8px}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>ray-mlperf-vision '
            f"runs</title><style>{style}</style></head><body>{''.join(body)}{_CHECK}"
            "</body></html>")


def write_report(records: list[dict], target: Path) -> None:
    page = render(records)  # every log read before anything is written
    part = target.with_name(target.name + ".part")
    part.write_text(page, encoding="utf-8")
    part.replace(target)
