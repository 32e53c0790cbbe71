"""A static site of a history (``python -m trainclaims.history site HISTORY --out DIR``) that opens
from disk in a browser with no network: every page is one HTML file with its CSS inline, its
charts inline SVG drawn here, and the overview's filters in a few lines of vanilla JavaScript.

- ``index.html``, the overview: claims x runs coloured by verdict (a row per claim, and per
  numerics mode and device through the filters), the steps found in every series ("regressions":
  each with the run where it began), the verdict changes, each benchmark's noise, the runs;
  filters by torch release, device, machine and numerics mode (kept in the address's ``#``:
  ``index.html#torch=2.14.1&device=cpu`` opens filtered).
- ``claims/<id>.html``: a claim's verdicts over the runs per mode and device, and each of its
  tests' measured numbers over the runs, with the bound where the evidence records one and the
  steps found.
- ``benchmarks/<name>.html``: a benchmark's step cost, samples/s and share of the matmul rate
  over the runs, each run's spread as a bar (the rounds' quartiles), the steps found and its noise.

The site is written into a temporary folder beside ``--out`` and put in place whole; an ``--out``
that holds something other than an earlier site is refused (nothing of it is touched).
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainclaims.history.noise import BenchNoise, noise_by_benchmark
from trainclaims.history.series import (
    ALL,
    VERDICTS,
    BenchSeries,
    Series,
    benchmark_series,
    claim_series,
    claim_verdicts,
)
from trainclaims.history.steps import MIN_POINTS, Step
from trainclaims.history.store import History, Run

SITE_MARKER = ".trainclaims-site"  # an --out folder holding this is an earlier site: replaced whole
CHART_W, CHART_H = 640, 200  # an SVG chart's size in CSS pixels: two side by side on a laptop screen
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 12, 14, 28  # room for the y labels and the run numbers
LOG_AXIS_RATIO = 30  # a series spanning more than this factor (all positive) is drawn on a log axis
LARGE_CHANGE = 9.0  # above +900% a change reads better as a factor (x10 and more)
HUGE_Z = 1000  # a step this many sigmas tall is a change in numbers that repeat exactly
NOISE_SIMULATIONS = 1000  # per benchmark on the site: false-alarm rates to about +-0.3% at 1%

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#212121}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .3em}h4{font-size:.95em;margin:.8em 0 .1em;font-weight:600}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;
vertical-align:top}th{background:#f5f5f5;font-weight:600}
.wide{overflow-x:auto;max-width:100%}
td.v{font-size:12px;white-space:nowrap;text-align:center}
th.claim{white-space:nowrap;position:sticky;left:0;z-index:1}
td.v.changed{outline:2px solid #000;outline-offset:-2px;font-weight:700}
.v-holds{background:#c8e6c9}.v-conditional{background:#ffecb3}.v-refuted{background:#bbdefb}
.v-fails{background:#ffcdd2}.v-not-measured{background:#eeeeee;color:#616161}.v-none{background:#fff;color:#bbb}
.filters{display:flex;gap:1em;flex-wrap:wrap;align-items:center;background:#fafafa;border:1px solid #eee;
padding:.5em;position:sticky;top:0}
.muted{color:#757575}.bad{color:#c62828;font-weight:600}.good{color:#2e7d32}
svg.chart{background:#fff;border:1px solid #e0e0e0;margin:.3em .6em .3em 0}
svg .pt{fill:#1565c0}svg .outlier{fill:#fff;stroke:#e65100;stroke-width:1.5}
svg .bar{stroke:#90caf9;stroke-width:3}svg .level{fill:none;stroke:#43a047;stroke-width:1.5}
svg .bound{stroke:#c62828;stroke-dasharray:5 3;stroke-width:1.2;fill:none}
svg .step{stroke:#6a1b9a;stroke-dasharray:3 3;stroke-width:1.5}svg .axis{stroke:#9e9e9e}
svg text{font-size:10px;fill:#616161}svg .steplabel{fill:#6a1b9a;font-weight:600}
code{font-size:12px}
"""

FILTER_JS = """
(function () {
  var selects = Array.prototype.slice.call(document.querySelectorAll("select.filter"));
  var params = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p[0]) params[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });
  selects.forEach(function (s) {
    if (params[s.name] !== undefined) s.value = params[s.name];
    s.addEventListener("change", apply);
  });
  function value(name) {
    var s = document.querySelector("select.filter[name='" + name + "']");
    return s ? s.value : "";
  }
  function apply() {
    var f = {torch: value("torch"), machine: value("machine"), mode: value("mode"), device: value("device")};
    var runs = 0, runsShown = 0, rows = 0, rowsShown = 0;
    document.querySelectorAll("[data-torch]").forEach(function (el) {
      var hide = (f.torch && el.dataset.torch !== f.torch) || (f.machine && el.dataset.machine !== f.machine);
      el.hidden = !!hide;
      if (el.tagName === "TH" && el.dataset.run !== undefined) { runs++; if (!hide) runsShown++; }
    });
    document.querySelectorAll("tr[data-row-mode]").forEach(function (tr) {
      var show = tr.dataset.rowMode === (f.mode || "*") && tr.dataset.rowDevice === (f.device || "*");
      tr.hidden = !show;
      if (tr.dataset.rowMode === "*" && tr.dataset.rowDevice === "*") rows++;
      if (show) rowsShown++;
    });
    document.querySelectorAll("tr[data-step]").forEach(function (tr) {
      var hide = (f.device && f.device !== "*" && tr.dataset.device && tr.dataset.device !== f.device) ||
        (f.mode && f.mode !== "*" && tr.dataset.mode && tr.dataset.mode !== f.mode) ||
        (f.torch && tr.dataset.runTorch !== f.torch) || (f.machine && tr.dataset.runMachine !== f.machine);
      tr.hidden = !!hide;
    });
    var note = document.getElementById("shown");
    if (note) note.textContent = "Showing " + runsShown + " of " + runs + " runs and " + rowsShown +
      " claim rows (" + rows + " claims).";
    var hash = selects.filter(function (s) { return s.value && s.value !== "*"; })
      .map(function (s) { return s.name + "=" + encodeURIComponent(s.value); }).join("&");
    try { history.replaceState(null, "", hash ? "#" + hash : location.pathname); } catch (e) { /* file:// */ }
  }
  apply();
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    """A file name for ``text``: readable, and unique by a short hash of the whole."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text.split("::")[-1]).strip("-")[:60]
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def claim_file(claim: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", claim) + ".html"


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML page: its CSS inline, nothing fetched from anywhere."""
    js = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}{js}</body></html>\n"
    )


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def pct(change: float | None) -> str:
    """A relative change: ``+12.3%``, or a factor where it is large (``x1500``: a gap of 2e-8 that became 3e-5)."""
    if change is None:
        return "-"
    if change > LARGE_CHANGE:
        return f"x{change + 1:.3g}"
    return f"{change:+.1%}"


def _pct0(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def sigmas(z: float) -> str:
    """A step's size in noise sigmas; a series of exact repeats has next to no noise: "> 1000"."""
    return f"{z:.1f}" if z < HUGE_Z else f"> {HUGE_Z:.0f}"


def run_attrs(i: int, run: Run) -> str:
    return f"data-run='{i}' data-torch='{esc(run.torch_release)}' data-machine='{esc(run.machine)}'"


def run_name(i: int, run: Run) -> str:
    return f"run {i} ({run.title})"


# --- charts ------------------------------------------------------------------------------------


@dataclass
class Axis:
    lo: float
    hi: float
    log: bool

    def __call__(self, v: float) -> float:
        """``v`` as a y pixel."""
        if self.log:
            v, lo, hi = math.log(max(v, 1e-300)), math.log(self.lo), math.log(self.hi)
        else:
            lo, hi = self.lo, self.hi
        frac = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return MARGIN_T + (1 - frac) * (CHART_H - MARGIN_T - MARGIN_B)


def _axis(values: Sequence[float]) -> Axis:
    lo, hi = min(values), max(values)
    log = lo > 0 and hi / lo > LOG_AXIS_RATIO
    if not log:
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    return Axis(lo, hi, log)


def chart(series: Series, runs: Sequence[Run], title: str) -> str:
    """An SVG chart of ``series`` over all the history's runs: each point with its spread as a bar,
    the fitted levels, the bound (a dashed red line) and each step found (a dashed purple line at
    the run where it began, labelled with its change)."""
    n = len(runs)
    plot_w = CHART_W - MARGIN_L - MARGIN_R

    def x(i: int) -> float:
        return MARGIN_L + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    fit = series.fit
    values = [p.value for p in series.points]
    values += [v for p in series.points for v in (p.low, p.high) if v is not None]
    values += list(series.bounds.values())
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    y = _axis(values)
    out = [
        f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{CHART_W}' height='{CHART_H}' "
        f"viewBox='0 0 {CHART_W} {CHART_H}' role='img' aria-label='{esc(title)}' data-series='{esc(series.key)}'>",
        f"<title>{esc(title)}</title>",
        f"<line class='axis' x1='{MARGIN_L}' y1='{CHART_H - MARGIN_B}' x2='{CHART_W - MARGIN_R}' "
        f"y2='{CHART_H - MARGIN_B}'/>",
        f"<line class='axis' x1='{MARGIN_L}' y1='{MARGIN_T}' x2='{MARGIN_L}' y2='{CHART_H - MARGIN_B}'/>",
    ]
    ticks = [y.lo, y.hi] if y.log else [y.lo, (y.lo + y.hi) / 2, y.hi]
    if y.log:
        ticks.insert(1, math.sqrt(y.lo * y.hi))
    for t in ticks:
        out.append(f"<text x='{MARGIN_L - 4}' y='{y(t) + 3:.1f}' text-anchor='end'>{esc(fmt(t))}</text>")
    every = max(1, math.ceil(n / 12))  # at most about 12 run numbers under the axis
    for i in range(0, n, every):
        out.append(f"<text x='{x(i):.1f}' y='{CHART_H - MARGIN_B + 14}' text-anchor='middle'>{i}</text>")
    if series.bounds:
        pts = " ".join(f"{x(i):.1f},{y(b):.1f}" for i, b in sorted(series.bounds.items()))
        if len(series.bounds) == 1:
            ((i, b),) = series.bounds.items()
            pts = f"{x(max(i - 0.4, 0)):.1f},{y(b):.1f} {x(min(i + 0.4, n - 1)):.1f},{y(b):.1f}"
        out.append(f"<polyline class='bound' points='{pts}'><title>bound</title></polyline>")
    if fit and not fit.note and len(fit.levels) == len(series.points):
        corners: list[tuple[float, float]] = []
        for k, (p, level) in enumerate(zip(series.points, fit.levels, strict=True)):
            if k and level != fit.levels[k - 1]:  # a level changes between two runs: a vertical rise there
                mid = (x(series.points[k - 1].run) + x(p.run)) / 2
                corners += [(mid, y(fit.levels[k - 1])), (mid, y(level))]
            corners.append((x(p.run), y(level)))
        pts = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in corners)
        out.append(f"<polyline class='level' points='{pts}'><title>the fitted levels</title></polyline>")
    outliers = set(fit.outliers) if fit else set()
    for p in series.points:
        if p.low is not None and p.high is not None:
            out.append(
                f"<line class='bar' x1='{x(p.run):.1f}' y1='{y(p.low):.1f}' x2='{x(p.run):.1f}' y2='{y(p.high):.1f}'/>"
            )
        cls = "outlier" if p.run in outliers else "pt"
        spread = f" (spread {fmt(p.low)}..{fmt(p.high)})" if p.low is not None else ""
        note = " set aside as one run's outlier" if p.run in outliers else ""
        out.append(
            f"<circle class='{cls}' data-run='{p.run}' cx='{x(p.run):.1f}' cy='{y(p.value):.1f}' r='3'>"
            f"<title>{esc(run_name(p.run, runs[p.run]))}: {esc(fmt(p.value))}{esc(spread)}{note}</title></circle>"
        )
    for step in fit.steps if fit else []:
        sx = x(step.index) - (plot_w / max(n - 1, 1)) / 2  # between the run before and the run it began
        label = pct(step.change) if step.change is not None else f"{step.delta:+.3g}"
        out.append(
            f"<line class='step' data-run='{step.index}' x1='{sx:.1f}' y1='{MARGIN_T}' x2='{sx:.1f}' "
            f"y2='{CHART_H - MARGIN_B}'><title>step at {esc(run_name(step.index, runs[step.index]))}: "
            f"{esc(fmt(step.before))} to {esc(fmt(step.after))} ({esc(label)})</title></line>"
            f"<text class='steplabel' x='{sx + 3:.1f}' y='{MARGIN_T + 10}'>{esc(label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


# --- what the pages show -----------------------------------------------------------------------


@dataclass
class FoundStep:
    """A step of some series, for the overview's list."""

    kind: str  # "benchmark" or "claim"
    what: str  # the series, in words
    link: str  # its page, relative to the site's root
    series: Series
    step: Step
    device: str = ""
    mode: str = ""


def _test_device_mode(claim_tests: dict[str, dict[str, Any]], node: str) -> tuple[str, str]:
    test = claim_tests.get(node) or {}
    return str(test.get("device") or ""), str(test.get("numerics") or "")


def _claim_meta(history: History) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """Each claim's newest record, and each claim's tests by node id (newest record of each)."""
    claims: dict[str, dict[str, Any]] = {}
    tests: dict[str, dict[str, dict[str, Any]]] = {}
    for run in history.runs:
        for claim in run.claims or ():
            cid = str(claim.get("id"))
            claims[cid] = claim
            for t in claim.get("tests") or ():
                if isinstance(t, dict):
                    tests.setdefault(cid, {})[str(t.get("test"))] = t
    return claims, tests


def _find_all_steps(
    tests: dict[str, dict[str, dict[str, Any]]],
    evidence: dict[str, dict[str, list[Series]]],
    benches: list[BenchSeries],
) -> list[FoundStep]:
    found: list[FoundStep] = []
    for cid, by_test in evidence.items():
        for node, series_list in by_test.items():
            device, mode = _test_device_mode(tests.get(cid, {}), node)
            for series in series_list:
                if series.constant or len(series.points) < MIN_POINTS:
                    continue
                for step in series.find_steps().steps:
                    what = f"{cid} {node.split('::')[-1]}: {series.title}"
                    found.append(FoundStep("claim", what, f"claims/{claim_file(cid)}", series, step, device, mode))
    for bench in benches:
        for series in bench.series:
            if len(series.points) < MIN_POINTS:
                continue
            for step in series.find_steps().steps:
                what = f"{bench.name} [{bench.device}, {bench.machine}]: {series.title}"
                found.append(
                    FoundStep("benchmark", what, f"benchmarks/{slug(bench.key)}.html", series, step, bench.device)
                )
    found.sort(key=lambda f: (-f.step.index, f.kind != "benchmark", f.what))
    return found


def _steps_table(found: Sequence[FoundStep], runs: Sequence[Run], prefix: str = "") -> str:
    if not found:
        return "<p class='muted'>No step found in any series (a series needs 4 runs).</p>"
    rows = [
        "<table class='steps'><tr><th>run where it began</th><th>series</th><th>before</th><th>after</th>"
        "<th>change</th><th>size (noise sigmas)</th><th>reads as</th></tr>"
    ]
    for f in found:
        run = runs[f.step.index]
        regression = f.series.regression(f.step.change)
        reading = {True: "<span class='bad'>regression</span>", False: "<span class='good'>improvement</span>"}.get(
            regression, "moved"
        )
        if f.step.below_gate:
            reading += f" <span class='muted'>(below the gate limit ±{f.series.gate_limit:.0%})</span>"
        rows.append(
            f"<tr data-step='1' data-run='{f.step.index}' data-run-torch='{esc(run.torch_release)}' "
            f"data-run-machine='{esc(run.machine)}' data-device='{esc(f.device)}' data-mode='{esc(f.mode)}'>"
            f"<td class='began'>{esc(run_name(f.step.index, run))}<br>"
            f"<span class='muted'>{esc(run.date[:19])}</span></td>"
            f"<td><a href='{esc(prefix + f.link)}'>{esc(f.what)}</a></td><td>{esc(fmt(f.step.before))}</td>"
            f"<td>{esc(fmt(f.step.after))}</td><td>{esc(pct(f.step.change))}</td><td>{sigmas(f.step.z)}</td>"
            f"<td>{reading}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _verdict_cell(i: int, run: Run, cell: tuple[str, str] | None, previous: str | None) -> str:
    if cell is None:
        return f"<td class='v v-none' {run_attrs(i, run)} title='not in this run'>-</td>"
    verdict, why = cell
    css = "v-" + verdict.replace(" ", "-") if verdict in VERDICTS else "v-none"
    changed = previous is not None and previous != verdict
    title = (f"changed from {previous}; " if changed else "") + (why or verdict)
    return (
        f"<td class='v {css}{' changed' if changed else ''}' {run_attrs(i, run)} "
        f"title='{esc(title)}'>{esc(verdict)}</td>"
    )


def _verdict_rows(
    history: History,
    grid: list[dict[tuple[str, str, str], tuple[str, str]]],
    keys: list[tuple[str, str, str]],
    link: bool,
) -> tuple[str, list[tuple[str, int, str, str]]]:
    """Table rows of verdicts over runs, and the changes found (claim row, run, before, after)."""
    rows, changes = [], []
    for cid, mode, device in keys:
        name = cid if mode == ALL else f"{cid} [{mode}]"
        name += "" if device == ALL else f" on {device}"
        head = f"<a href='claims/{esc(claim_file(cid))}'>{esc(name)}</a>" if link else esc(name)
        cells, previous = [], None
        for i, run in enumerate(history.runs):
            cell = grid[i].get((cid, mode, device))
            cells.append(_verdict_cell(i, run, cell, previous))
            if cell is not None and cell[0] != "not measured":
                if previous is not None and previous != cell[0]:
                    changes.append((name, i, previous, cell[0]))
                previous = cell[0]
        rows.append(
            f"<tr data-row-mode='{esc(mode)}' data-row-device='{esc(device)}' data-claim='{esc(cid)}'>"
            f"<th class='claim'>{head}</th>{''.join(cells)}</tr>"
        )
    return "".join(rows), changes


def _run_header(history: History) -> str:
    cells = []
    for i, run in enumerate(history.runs):
        tip = f"{run.name}: {run.date} commit {run.commit} torch {run.torch} CUDA {run.cuda} on {run.machine}"
        cells.append(
            f"<th {run_attrs(i, run)} title='{esc(tip)}'>{i}<br><code>{esc(run.commit[:8])}</code><br>"
            f"{esc(run.torch_release)}</th>"
        )
    return "".join(cells)


def _select(name: str, label: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f"<option value='{esc(v)}'>{esc(t)}</option>" for v, t in options)
    return f"<label>{esc(label)} <select class='filter' name='{esc(name)}'>{opts}</select></label>"


def _noise_table(benches: list[BenchSeries], noises: dict[str, BenchNoise], history: History) -> str:
    if not benches:
        return "<p class='muted'>No benchmark in this history.</p>"
    rows = [
        "<table><tr><th>benchmark</th><th>device</th><th>machine</th><th>runs</th><th>step cost (newest)</th>"
        "<th>CV over rounds</th><th>CV over runs</th><th>gate limit</th><th>false alarms at the gate: rounds "
        "(changed / inconclusive)</th><th>with the run-to-run drift</th></tr>"
    ]
    for bench in benches:
        noise = noises.get(bench.key)
        newest = bench.step_cost.points[-1].value if bench.step_cost and bench.step_cost.points else None

        def rates(r: dict[str, float] | None) -> str:
            return "-" if not r else f"{r['changed']:.1%} / {r['inconclusive']:.1%}"

        rows.append(
            f"<tr data-device='{esc(bench.device)}'><td><a href='benchmarks/{esc(slug(bench.key))}.html'>"
            f"{esc(bench.name)}</a></td><td>{esc(bench.device)}</td><td>{esc(bench.machine)}</td>"
            f"<td>{len(bench.rows)}</td><td>{esc(fmt(newest))}</td>"
            f"<td>{'-' if not noise or noise.cv_rounds is None else f'{noise.cv_rounds:.1%}'}</td>"
            f"<td>{'-' if not noise or noise.cv_runs is None else f'{noise.cv_runs:.1%}'}</td>"
            f"<td>{'-' if not noise else f'+{noise.gate.min_effect:.0%}'}</td>"
            f"<td>{rates(noise.false_alarm if noise else None)}</td>"
            f"<td>{rates(noise.false_alarm_runs if noise else None)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _runs_table(history: History) -> str:
    rows = [
        "<table><tr><th>#</th><th>run</th><th>date</th><th>commit</th><th>torch</th><th>CUDA</th><th>machine</th>"
        "<th>devices</th><th>numerics modes</th><th>data tiers</th><th>label</th></tr>"
    ]
    for i, run in enumerate(history.runs):
        devices = ", ".join(f"{d} ({n})" for d, n in run.devices.items())
        rows.append(
            f"<tr {run_attrs(i, run)}><td>{i}</td><td><code>{esc(run.name)}</code></td><td>{esc(run.date[:19])}</td>"
            f"<td><code>{esc(run.commit)}</code></td><td>{esc(run.torch)}</td><td>{esc(run.cuda)}</td>"
            f"<td>{esc(run.machine)}</td><td>{esc(devices)}</td><td>{esc(', '.join(run.modes))}</td>"
            f"<td>{esc(', '.join(run.tiers) or '-')}</td><td>{esc(run.label or '')}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _claim_keys(
    grid: list[dict[tuple[str, str, str], tuple[str, str]]], only: str | None = None
) -> list[tuple[str, str, str]]:
    keys = list(dict.fromkeys(k for cells in grid for k in cells if only is None or k[0] == only))

    def order(k: tuple[str, str, str]) -> tuple[Any, ...]:
        return (k[0], k[1] != ALL, k[1], k[2] != ALL, k[2])

    return sorted(keys, key=order)


def overview(
    history: History,
    grid: list[dict[tuple[str, str, str], tuple[str, str]]],
    found: list[FoundStep],
    benches: list[BenchSeries],
    noises: dict[str, BenchNoise],
) -> str:
    runs = history.runs
    keys = _claim_keys(grid)
    rows, changes = _verdict_rows(history, grid, keys, link=True)
    torches = sorted({r.torch_release for r in runs})
    machines = sorted({r.machine for r in runs})
    modes = sorted({k[1] for k in keys if k[1] != ALL})
    devices = sorted({k[2] for k in keys if k[2] != ALL} | {b.device for b in benches})
    filters = "".join(
        [
            _select("torch", "torch", [("", "all releases"), *((t, t) for t in torches)]),
            _select("device", "device", [("*", "all devices"), *((d, d) for d in devices)]),
            _select("machine", "machine", [("", "all machines"), *((m, m) for m in machines)]),
            _select("mode", "numerics mode", [("*", "all modes"), *((m, m) for m in modes)]),
            "<span id='shown' class='muted'></span>",
        ]
    )
    own_changes = [c for c in changes if " [" not in c[0] and " on " not in c[0]]
    change_rows = "".join(
        f"<tr class='verdict-change' {run_attrs(i, runs[i])}><td>{esc(run_name(i, runs[i]))}</td><td>{esc(name)}</td>"
        f"<td>{esc(before)}</td><td>{esc(after)}</td></tr>"
        for name, i, before, after in sorted(own_changes, key=lambda c: -c[1])
    )
    verdict_changes = (
        f"<table><tr><th>run</th><th>claim</th><th>before</th><th>after</th></tr>{change_rows}</table>"
        if change_rows
        else "<p class='muted'>No claim's verdict changed between runs.</p>"
    )
    first, last = (runs[0], runs[-1]) if runs else (None, None)
    span = f"{len(runs)} runs" + (f", {first.date[:10]} to {last.date[:10]}" if first and last else "")
    body = (
        f"<h1>trainclaims history</h1><p class='muted'>{esc(history.folder)}: {esc(span)}.</p>"
        f"<div class='filters'>{filters}</div>"
        "<h2 id='claims'>Claims × runs</h2><p class='muted'>A row per claim (choose a numerics mode or a device "
        "above for its verdicts there); a framed cell changed its verdict since the run before.</p>"
        f"<div class='wide'><table id='verdicts'><tr><th>claim</th>{_run_header(history)}</tr>{rows}</table></div>"
        "<h2 id='regressions'>Regressions: the steps found</h2>"
        "<p class='muted'>Every step found in a benchmark's or a claim's measured numbers, newest first, with the "
        "run where it began (trainclaims/history/steps.py: each point weighted by its spread; a benchmark step "
        "smaller than its gate limit is marked).</p>"
        f"{_steps_table(found, runs)}"
        f"<h2 id='verdict-changes'>Verdict changes</h2>{verdict_changes}"
        "<h2 id='benchmarks'>Benchmarks and their noise</h2><p class='muted'>Coefficients of variation are robust "
        "(1.4826 MAD / median); the false alarms are the benchmark gate's calls on simulated pairs of unchanged "
        "runs (trainclaims/history/noise.py).</p>"
        f"{_noise_table(benches, noises, history)}<h2 id='runs'>Runs</h2>{_runs_table(history)}"
    )
    return page("trainclaims history", body, FILTER_JS)


def claim_page(
    history: History,
    cid: str,
    claim: dict[str, Any],
    grid: list[dict[tuple[str, str, str], tuple[str, str]]],
    evidence: dict[str, list[Series]],
) -> str:
    runs = history.runs
    rows, _ = _verdict_rows(history, grid, _claim_keys(grid, cid), link=False)
    parts = [
        "<p><a href='../index.html'>← overview</a></p>",
        f"<h1>{esc(cid)}</h1><p>{esc(claim.get('statement') or '')}</p>",
        f"<p>Newest verdict: <b>{esc(claim.get('verdict'))}</b> {esc(claim.get('why') or '')}</p>",
        "<h2>Verdicts over the runs</h2><p class='muted'>Per numerics mode and device (a device's verdict is where "
        "its tests take the claim).</p>",
        f"<div class='wide'><table><tr><th>where</th>{_run_header(history)}</tr>{rows}</table></div>",
        "<h2>Measured numbers over the runs</h2>",
    ]
    if not evidence:
        parts.append("<p class='muted'>Its tests record no numbers.</p>")
    for node, series_list in sorted(evidence.items()):
        moving = [s for s in series_list if not s.constant]
        still = [s for s in series_list if s.constant]
        parts.append(f"<h3><code>{esc(node)}</code></h3>")
        for series in moving:
            if series.fit is None and len(series.points) >= MIN_POINTS:
                series.find_steps()
            title = f"{series.title}" + (
                f" (the dashed line: its bound, expect {series.expect})" if series.bounds else ""
            )
            parts.append(f"<h4>{esc(title)}</h4>{chart(series, runs, title)}")
            parts.append(_series_steps(series, runs))
        if still:
            cells = "".join(
                f"<tr><td>{esc(s.title)}</td><td>{esc(fmt(s.points[0].value))}</td><td>{len(s.points)}</td></tr>"
                for s in still
                if s.points
            )
            parts.append(
                "<table class='constant'><tr><th>the same in every run</th><th>value</th><th>runs</th></tr>"
                f"{cells}</table>"
            )
    return page(f"{cid}: trainclaims history", "".join(parts))


def _series_steps(series: Series, runs: Sequence[Run]) -> str:
    fit = series.fit
    if fit is None:
        return f"<p class='muted'>{len(series.points)} runs: too few to look for steps.</p>"
    if fit.note:
        return f"<p class='muted'>{esc(fit.note)}</p>"
    if not fit.steps:
        return "<p class='muted'>No step: the runs differ by their noise.</p>"
    items = []
    for step in fit.steps:
        gate = " (below the gate limit)" if step.below_gate else ""
        items.append(
            f"<li class='step-found' data-run='{step.index}'>step at {esc(run_name(step.index, runs[step.index]))}: "
            f"{esc(fmt(step.before))} → {esc(fmt(step.after))} ({esc(pct(step.change))}, {sigmas(step.z)} sigmas)"
            f"{gate}</li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def bench_page(history: History, bench: BenchSeries, noise: BenchNoise | None) -> str:
    runs = history.runs
    row = bench.rows[max(bench.rows)]
    parts = [
        "<p><a href='../index.html'>← overview</a></p>",
        f"<h1>{esc(bench.name)}</h1><p><code>{esc(bench.fullname)}</code> on {esc(bench.device)}, {esc(bench.machine)}"
        f"{': ' + esc(bench.group) if bench.group else ''}</p>",
    ]
    if noise is not None:
        drift = noise.false_alarm_runs
        parts.append(
            f"<p>Noise: the step cost varies by {_pct0(noise.cv_rounds)} over a run's rounds and "
            f"{_pct0(noise.cv_runs)} over the runs (robust CV); at the gate's limit of "
            f"+{noise.gate.min_effect:.0%} two unchanged runs read "
            f"<i>changed</i> {noise.false_alarm['changed']:.1%} and <i>inconclusive</i> "
            f"{noise.false_alarm['inconclusive']:.1%} of the time from the rounds alone"
            + (f", {drift['changed']:.1%} and {drift['inconclusive']:.1%} with the run-to-run drift" if drift else "")
            + f" ({noise.simulations} simulated pairs of {noise.rounds} rounds).</p>"
        )
    titles = {
        "step_cost": "step cost in units of its own GEMMs (the gated number; bars: the rounds' quartiles)",
        "samples_per_s": "samples/s (bars: the rounds' quartiles)",
        "matmul_fraction": "share of this machine's matmul rate",
    }
    for series in bench.series:
        kind = series.key.rsplit("|", 1)[-1]
        parts.append(f"<h2>{esc(series.title)}</h2>")
        parts.append(chart(series, runs, titles.get(kind, series.title)))
        parts.append(_series_steps(series, runs))
    table = [
        "<h2>Runs</h2><table><tr><th>run</th><th>step cost</th><th>spread</th><th>samples/s</th>"
        "<th>matmul share</th><th>rounds</th><th>note</th></tr>"
    ]
    for i, r in sorted(bench.rows.items()):
        table.append(
            f"<tr {run_attrs(i, runs[i])}><td>{esc(run_name(i, runs[i]))}</td><td>{esc(fmt(r.get('step_cost')))}</td>"
            f"<td>{esc(fmt(r.get('step_cost_spread')))}</td><td>{esc(fmt(r.get('samples_per_s')))}</td>"
            f"<td>{esc(fmt(r.get('matmul_fraction')))}</td>"
            f"<td>{len(r.get('step_costs') or r.get('rounds_s') or [])}</td>"
            f"<td>{esc(r.get('note') or '')}</td></tr>"
        )
    table.append("</table>")
    parts += table
    if row.get("gate_min_effect") is not None:
        parts.append(f"<p class='muted'>Its own gate limit: +{float(row['gate_min_effect']):.0%}.</p>")
    return page(f"{bench.name}: trainclaims history", "".join(parts))


def render(history: History) -> dict[str, str]:
    """The site's pages: relative path -> HTML."""
    grid = [claim_verdicts(run) for run in history.runs]
    evidence = claim_series(history)
    benches = benchmark_series(history)
    claims, tests = _claim_meta(history)
    found = _find_all_steps(tests, evidence, benches)
    noises = noise_by_benchmark(benches, simulations=NOISE_SIMULATIONS)
    pages = {"index.html": overview(history, grid, found, benches, noises)}
    for cid, claim in claims.items():
        pages[f"claims/{claim_file(cid)}"] = claim_page(history, cid, claim, grid, evidence.get(cid, {}))
    for bench in benches:
        pages[f"benchmarks/{slug(bench.key)}.html"] = bench_page(history, bench, noises.get(bench.key))
    return pages


def write_site(history: History, out: str | Path) -> Path:
    """Write the site of ``history`` to ``out`` whole (the module docstring); its index.html.
    ValueError (one line) where ``out`` holds something other than an earlier site."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).exists():
        raise ValueError(f"--out {out} holds other files (not a trainclaims history site): give a new or empty folder")
    pages = render(history)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for rel, text in pages.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (tmp / SITE_MARKER).write_text(f"a trainclaims history site of {history.folder}\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700: a site is for reading
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old.", suffix=".tmp"))
            os.rmdir(old)
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"
