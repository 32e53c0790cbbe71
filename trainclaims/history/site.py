"""A static site of a history (``trainclaims-history site HISTORY --out DIR``) that opens from disk
in a browser with no network. This module assembles it: the numbers come from
:mod:`trainclaims.history.series` (verdicts, evidence and benchmark series), the steps from
:mod:`trainclaims.history.steps`, each benchmark's noise and last change from the one benchmark
judge (:mod:`trainclaims.benchgate`); the stylesheet, the filters and the chart code are package
files (``assets/site.css``, ``site.js``, ``chart.js``) inlined into each page, and each chart's
numbers travel as JSON in the page for ``chart.js`` to draw.

- ``index.html``, the overview: each benchmark's step cost over the runs as a sparkline with its
  last change and its limit; claims x runs coloured by verdict, the newest run first, each column
  headed by its label (else its commit), date and torch release, the newest ``--runs`` shown and
  the rest a click away; claims no run measured behind a toggle; the steps found in every series;
  the verdict changes; the runs. Filters by torch release, device (claims whose tests take no
  device stay), machine and numerics mode, kept in the address's ``#``.
- ``claims/<id>.html``: a claim's verdicts over the runs per mode and device, and each of its
  tests' measured numbers over the runs (a test run once per seed: one chart, its range).
- ``benchmarks/<name>.html``: a benchmark's step cost (the gated number) over the runs with each
  run's spread, the steps found, its noise and limit; samples/s and the share of the matmul rate
  beside it, marked as following the machine's load.

The site is written into a temporary folder beside ``--out`` and put in place whole; an ``--out``
that holds something other than an earlier site is refused (nothing of it is touched).
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainclaims.benchgate import BenchNoise, Comparison, compare
from trainclaims.history.noise import noise_by_benchmark
from trainclaims.history.series import (
    ALL,
    VERDICTS,
    BenchSeries,
    Series,
    bench_file,
    benchmark_series,
    claim_file,
    claim_series,
    claim_verdicts,
)
from trainclaims.history.steps import MIN_POINTS, LevelChange
from trainclaims.history.store import History, Run
from trainclaims.results import ClaimResult

SITE_MARKER = ".trainclaims-site"  # an --out folder holding this is an earlier site: replaced whole
LARGE_CHANGE = 9.0  # above +900% a change reads better as a factor (x10 and more)
HUGE_Z = 1000  # a step this many sigmas tall is a change in numbers that repeat exactly
NOISE_SIMULATIONS = 1000  # per benchmark on the site: false-alarm rates to about +-0.3% at 1%
SHOWN_RUNS = 30  # the newest runs shown at first in the tables (the others a click away)
SPARK_RUNS = 30  # the runs a benchmark's sparkline spans on the overview

Grid = list[dict[tuple[str, str, str], tuple[str, str]]]


def asset(name: str) -> str:
    """The text of one of the site's package files (``trainclaims/history/assets/``)."""
    return resources.files("trainclaims.history").joinpath("assets", name).read_text(encoding="utf-8")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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


def sigmas(z: float) -> str:
    """A step's size in noise sigmas; a series of exact repeats has next to no noise: "> 1000"."""
    return f"{z:.1f}" if z < HUGE_Z else f"> {HUGE_Z:.0f}"


@dataclass
class Site:
    """What every page of one site shares: the history, the commit links, the runs shown at first."""

    history: History
    commit_url: str | None = None
    shown: int = SHOWN_RUNS

    @property
    def runs(self) -> list[Run]:
        return self.history.runs

    def age(self, i: int) -> int:
        return len(self.runs) - 1 - i

    def attrs(self, i: int) -> str:
        run = self.runs[i]
        hidden = " hidden" if self.age(i) >= self.shown else ""
        return (
            f"data-run='{i}' data-age='{self.age(i)}' data-torch='{esc(run.torch_release)}' "
            f"data-machine='{esc(run.machine)}'{hidden}"
        )

    def url(self, run: Run) -> str | None:
        return self.commit_url.replace("{commit}", run.commit) if self.commit_url and run.commit != "?" else None

    def newest_first(self) -> list[int]:
        return list(range(len(self.runs) - 1, -1, -1))

    def run_name(self, i: int) -> str:
        return f"run {i} ({self.runs[i].title})"

    def commit(self, run: Run, width: int = 10) -> str:
        code = f"<code>{esc(run.commit[:width])}</code>"
        url = self.url(run)
        return f"<a href='{esc(url)}'>{code}</a>" if url else code

    def header(self) -> str:
        """The run columns' headers, newest first: its label (else its commit), date and torch."""
        cells = []
        for i in self.newest_first():
            run = self.runs[i]
            tip = (
                f"run {i}: {run.name}; {run.date[:19]}; commit {run.commit}; torch {run.torch}; CUDA {run.cuda}; "
                f"{run.machine}" + ("" if run.complete else f"; {run.status}: {run.status_why}")
            )
            name = esc(run.label) if run.label else self.commit(run, 8)
            status = "" if run.complete else f"<br><span class='status-{esc(run.status)}'>{esc(run.status)}</span>"
            cells.append(
                f"<th class='run' {self.attrs(i)} title='{esc(tip)}'><span class='label'>{name}</span>"
                f"{esc(run.date[:10])}<br>{esc(run.torch_release)}{status}</th>"
            )
        return "".join(cells)

    def chart_data(self, charts: dict[str, Any], sparks: dict[str, Any] | None = None) -> str:
        runs = [
            {
                "name": r.name,
                "date": r.date,
                "commit": r.commit,
                "label": r.label,
                "torch": r.torch_release,
                "status": r.status,
                "url": self.url(r),
            }
            for r in self.runs
        ]
        text = json.dumps({"runs": runs, "charts": charts, "sparks": sparks or {}}, separators=(",", ":"))
        text = text.replace("</", "<\\/")  # no "</script>" inside the script element
        return f"<script type='application/json' id='chart-data'>{text}</script>"


def page(title: str, body: str, scripts: Sequence[str] = ()) -> str:
    """A whole HTML page: its CSS and scripts inline (the package's assets), nothing fetched."""
    js = "".join(f"<script>{asset(name)}</script>" for name in scripts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{asset('site.css')}</style></head><body>{body}{js}</body></html>\n"
    )


# --- charts' numbers ---------------------------------------------------------------------------


def chart_spec(series: Series, runs: Sequence[Run], title: str, unit: str = "") -> dict[str, Any]:
    """One series as ``chart.js`` draws it: points (run, value, low, high, outlier), the fitted
    levels, the bounds and the steps found."""
    fit = series.fit
    outliers = set(fit.outliers) if fit else set()
    points = [
        [p.run, _num(p.value), _num(p.low), _num(p.high), int(p.run in outliers)]
        for p in series.points
        if math.isfinite(p.value)
    ]
    spec: dict[str, Any] = {"key": series.key, "title": title, "unit": unit, "points": points}
    if series.bounds:
        spec["bounds"] = [[i, b] for i, b in sorted(series.bounds.items()) if math.isfinite(b)]
    if fit and not fit.note and len(fit.levels) == len(series.points):
        spec["levels"] = [[p.run, _num(level)] for p, level in zip(series.points, fit.levels, strict=True)]
    steps = []
    for step in fit.steps if fit else []:
        label = pct(step.change) if step.change is not None else f"{step.delta:+.3g}"
        run = runs[step.index]
        words = f"step at run {step.index} ({run.title}): {fmt(step.before)} to {fmt(step.after)} ({label})"
        steps.append({"run": step.index, "label": label, "title": words})
    spec["steps"] = steps
    return spec


def _num(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def figure(chart_id: str) -> str:
    return f"<figure class='chart' data-chart='{esc(chart_id)}'></figure>"


# --- what the pages show -----------------------------------------------------------------------


@dataclass
class FoundStep:
    """A step of some series, for the overview's list."""

    kind: str  # "benchmark" or "claim"
    what: str  # the series, in words
    link: str  # its page, relative to the site's root
    series: Series
    step: LevelChange
    device: str = ""
    mode: str = ""


def _claim_meta(history: History) -> tuple[dict[str, ClaimResult], dict[str, dict[str, tuple[str, str]]]]:
    """Each claim's newest result, and each claim's tests (node id -> device, mode) from their newest record."""
    claims: dict[str, ClaimResult] = {}
    tests: dict[str, dict[str, tuple[str, str]]] = {}
    for run in history.runs:
        for claim in run.claims or ():
            claims[claim.id] = claim
            for t in claim.tests:
                tests.setdefault(claim.id, {})[t.test] = (t.device or "", t.numerics or "")
    return claims, tests


def _group_where(tests: dict[str, tuple[str, str]], group: str) -> tuple[str, str]:
    """A series' device and mode: those of the tests of its group (folded seeds share them)."""
    if group in tests:
        return tests[group]
    prefix = group.split("*")[0]
    found = {where for node, where in tests.items() if node.startswith(prefix)}
    return found.pop() if len(found) == 1 else ("", "")


def find_all_steps(
    tests: dict[str, dict[str, tuple[str, str]]],
    evidence: dict[str, dict[str, list[Series]]],
    benches: list[BenchSeries],
) -> list[FoundStep]:
    found: list[FoundStep] = []
    for cid, by_test in evidence.items():
        for group, series_list in by_test.items():
            device, mode = _group_where(tests.get(cid, {}), group)
            for series in series_list:
                if series.constant or len(series.points) < MIN_POINTS:
                    continue
                for step in series.find_steps().steps:
                    what = f"{cid} {group.split('::')[-1]}: {series.title}"
                    found.append(FoundStep("claim", what, claim_file(cid), series, step, device, mode))
    for bench in benches:
        for series in bench.series:
            if len(series.points) < MIN_POINTS:
                continue
            for step in series.find_steps().steps:
                what = f"{bench.name} [{bench.device}, {bench.machine}]: {series.title}"
                found.append(FoundStep("benchmark", what, bench_file(bench.key), series, step, bench.device))
    found.sort(key=lambda f: (-f.step.index, f.kind != "benchmark", f.what))
    return found


def _steps_table(site: Site, found: Sequence[FoundStep]) -> str:
    if not found:
        return "<p class='muted'>No step found in any series (a series needs 4 runs).</p>"
    rows = [
        "<table class='steps'><tr><th>run where it began</th><th>series</th><th>before</th><th>after</th>"
        "<th>change</th><th>size (noise sigmas)</th><th>reads as</th></tr>"
    ]
    for f in found:
        run = site.runs[f.step.index]
        regression = f.series.regression(f.step.change)
        reading = {True: "<span class='bad'>regression</span>", False: "<span class='good'>improvement</span>"}.get(
            regression, "moved"
        )
        if f.step.below_gate:
            reading += f" <span class='muted'>(below the gate limit ±{f.series.gate_limit:.0%})</span>"
        rows.append(
            f"<tr data-step='1' data-run='{f.step.index}' data-run-torch='{esc(run.torch_release)}' "
            f"data-run-machine='{esc(run.machine)}' data-device='{esc(f.device)}' data-mode='{esc(f.mode)}'>"
            f"<td class='began'>{esc(site.run_name(f.step.index))}<br>"
            f"<span class='muted'>{esc(run.date[:19])} {site.commit(run, 8)}</span></td>"
            f"<td><a href='{esc(f.link)}'>{esc(f.what)}</a></td><td>{esc(fmt(f.step.before))}</td>"
            f"<td>{esc(fmt(f.step.after))}</td><td>{esc(pct(f.step.change))}</td><td>{sigmas(f.step.z)}</td>"
            f"<td>{reading}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _verdict_cell(site: Site, i: int, cell: tuple[str, str] | None, previous: str | None) -> str:
    if cell is None:
        return f"<td class='v v-none' {site.attrs(i)} title='not in this run'>-</td>"
    verdict, why = cell
    css = "v-" + verdict.replace(" ", "-") if verdict in VERDICTS else "v-none"
    changed = previous is not None and previous != verdict and verdict != "not measured"
    title = (f"changed from {previous}; " if changed else "") + (why or verdict)
    return (
        f"<td class='v {css}{' changed' if changed else ''}' {site.attrs(i)} title='{esc(title)}'>{esc(verdict)}</td>"
    )


def _verdict_rows(
    site: Site, grid: Grid, keys: list[tuple[str, str, str]], link: bool
) -> tuple[str, list[tuple[str, int, str, str]], int]:
    """Table rows of verdicts over the runs (newest first), the changes found (claim row, run,
    before, after), and how many rows no run measured (hidden until asked for)."""
    deviceless = {cid for cid, _, _ in keys} - {cid for cid, _, device in keys if device != ALL}
    rows, changes, never = [], [], 0
    for cid, mode, device in keys:
        name = cid if mode == ALL else f"{cid} [{mode}]"
        name += "" if device == ALL else f" on {device}"
        head = f"<a href='{esc(claim_file(cid))}'>{esc(name)}</a>" if link else esc(name)
        cells, previous = {}, None
        for i in range(len(site.runs)):
            cell = grid[i].get((cid, mode, device))
            cells[i] = _verdict_cell(site, i, cell, previous)
            if cell is not None and cell[0] != "not measured":
                if previous is not None and previous != cell[0]:
                    changes.append((name, i, previous, cell[0]))
                previous = cell[0]
        measured = any(
            (c := grid[i].get((cid, mode, device))) is not None and c[0] != "not measured" for i in range(len(grid))
        )
        never += not measured and mode == ALL and device == ALL
        extra = (" data-deviceless='1'" if cid in deviceless else "") + ("" if measured else " class='never'")
        rows.append(
            f"<tr data-row-mode='{esc(mode)}' data-row-device='{esc(device)}' data-claim='{esc(cid)}'{extra}>"
            f"<th class='claim'>{head}</th>{''.join(cells[i] for i in site.newest_first())}</tr>"
        )
    return "".join(rows), changes, never


def _claim_keys(grid: Grid, only: str | None = None) -> list[tuple[str, str, str]]:
    keys = list(dict.fromkeys(k for cells in grid for k in cells if only is None or k[0] == only))

    def order(k: tuple[str, str, str]) -> tuple[Any, ...]:
        return (k[0], k[1] != ALL, k[1], k[2] != ALL, k[2])

    return sorted(keys, key=order)


def _select(name: str, label: str, options: Sequence[tuple[str, str]], default: str = "") -> str:
    opts = "".join(
        f"<option value='{esc(v)}'{' selected' if v == default else ''}>{esc(t)}</option>" for v, t in options
    )
    extra = f" data-default='{esc(default)}'" if default else ""
    return f"<label>{esc(label)} <select class='filter' name='{esc(name)}'{extra}>{opts}</select></label>"


def _runs_choice(site: Site) -> str:
    n = len(site.runs)
    counts = [k for k in (10, 30, 100) if k < n]
    if site.shown < n and site.shown not in counts:
        counts = sorted({*counts, site.shown})
    options = [(str(k), f"the newest {k}") for k in counts] + [("all", f"all {n}")]
    default = str(site.shown) if site.shown < n else "all"
    return _select("runs", "runs", options, default)


def last_change(site: Site, bench: BenchSeries) -> tuple[Comparison | None, int | None]:
    """The newest run's row of ``bench`` against the newest complete run's before it (the comment's
    default base), by the one benchmark judge."""
    order = sorted(bench.rows)
    newest = order[-1]
    earlier = [i for i in order[:-1] if site.runs[i].complete]
    if not earlier:
        return None, None
    return compare(bench.rows[earlier[-1]], bench.rows[newest]), earlier[-1]


def _bench_table(site: Site, benches: list[BenchSeries], noises: dict[str, BenchNoise]) -> tuple[str, dict]:
    if not benches:
        return "<p class='muted'>No benchmark in this history.</p>", {}
    sparks: dict[str, Any] = {}
    rows = [
        "<table id='bench-table'><tr><th>benchmark</th><th>device</th><th>machine</th>"
        f"<th>step cost over the last {SPARK_RUNS} runs</th><th>newest</th><th>last change</th>"
        "<th>limit and false alarms</th><th class='machine-dependent'>samples/s (machine-dependent)</th></tr>"
    ]
    for k, bench in enumerate(benches):
        noise = noises.get(bench.key)
        cost = bench.step_cost
        points = cost.points[-SPARK_RUNS:] if cost else []
        sparks[f"s{k}"] = {"title": f"{bench.name}: step cost", "points": [[p.run, p.value] for p in points]}
        result, since = last_change(site, bench)
        if result is None or result.change is None:
            change = "<span class='muted'>-</span>"
        else:
            css = {"slower": "bad", "inconclusive": "warn", "faster": "good"}.get(result.status, "muted")
            change = (
                f"<span class='{css}'>{esc(result.status)} {esc(pct(result.change))}</span> "
                f"<span class='muted'>since run {since}</span>"
            )
        limit = f"+{bench.newest.limit():.0%}"
        rates = esc(noise.summary()) if noise else f"limit {limit}"
        newest = cost.points[-1].value if cost and cost.points else None
        sps = bench.newest.samples_per_s
        rows.append(
            f"<tr data-bench-device='{esc(bench.device)}' data-bench-machine='{esc(bench.machine)}'>"
            f"<td><a href='{esc(bench_file(bench.key))}'>{esc(bench.name)}</a></td><td>{esc(bench.device)}</td>"
            f"<td>{esc(bench.machine)}</td><td><span class='spark' data-spark='s{k}'></span></td>"
            f"<td>{esc(fmt(newest))}</td><td>{change}</td><td class='muted'>{rates}</td>"
            f"<td class='machine-dependent'>{esc(fmt(sps))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows), sparks


def _runs_table(site: Site) -> str:
    rows = [
        "<table id='runs-table'><tr><th>#</th><th>label</th><th>date</th><th>commit</th><th>torch</th><th>CUDA</th>"
        "<th>machine</th><th>devices</th><th>numerics modes</th><th>data tiers</th><th>status</th><th>run</th></tr>"
    ]
    for i in site.newest_first():
        run = site.runs[i]
        devices = ", ".join(f"{d} ({n})" for d, n in run.devices.items())
        status = esc(run.status) + (f": {esc(run.status_why)}" if run.status_why else "")
        rows.append(
            f"<tr {site.attrs(i)}><td>{i}</td><td>{esc(run.label or '')}</td><td>{esc(run.date[:19])}</td>"
            f"<td>{site.commit(run, 40)}</td><td>{esc(run.torch)}</td><td>{esc(run.cuda)}</td>"
            f"<td>{esc(run.machine)}</td><td>{esc(devices)}</td><td>{esc(', '.join(run.modes))}</td>"
            f"<td>{esc(', '.join(run.tiers) or '-')}</td><td class='status-{esc(run.status)}'>{status}</td>"
            f"<td><code>{esc(run.name)}</code></td></tr>"
        )
    rows.append("</table>")
    skipped = "".join(f"<li><code>{esc(p)}</code>: {esc(why)}</li>" for p, why in site.history.skipped)
    if skipped:
        rows.append(f"<p class='warn'>Files set aside (not runs):</p><ul id='skipped'>{skipped}</ul>")
    return "".join(rows)


def overview(
    site: Site, grid: Grid, found: list[FoundStep], benches: list[BenchSeries], noises: dict[str, BenchNoise]
) -> str:
    runs = site.runs
    keys = _claim_keys(grid)
    rows, changes, never = _verdict_rows(site, grid, keys, link=True)
    torches = sorted({r.torch_release for r in runs})
    machines = sorted({r.machine for r in runs})
    modes = sorted({k[1] for k in keys if k[1] != ALL})
    devices = sorted({k[2] for k in keys if k[2] != ALL} | {b.device for b in benches})
    never_box = (
        f"<label><input type='checkbox' class='filter' name='never'> {never} claim{'s' if never > 1 else ''} "
        "never measured</label>"
        if never
        else ""
    )
    filters = "".join(
        [
            _select("torch", "torch", [("", "all releases"), *((t, t) for t in torches)]),
            _select("device", "device", [("*", "all devices"), *((d, d) for d in devices)]),
            _select("machine", "machine", [("", "all machines"), *((m, m) for m in machines)]),
            _select("mode", "numerics mode", [("*", "all modes"), *((m, m) for m in modes)]),
            _runs_choice(site),
            never_box,
            "<span id='shown' class='muted'></span>",
        ]
    )
    own_changes = [c for c in changes if " [" not in c[0] and " on " not in c[0]]
    change_rows = "".join(
        f"<tr class='verdict-change' {site.attrs(i)}><td>{esc(site.run_name(i))}</td><td>{esc(name)}</td>"
        f"<td>{esc(before)}</td><td>{esc(after)}</td></tr>"
        for name, i, before, after in sorted(own_changes, key=lambda c: -c[1])
    )
    verdict_changes = (
        f"<table><tr><th>run</th><th>claim</th><th>before</th><th>after</th></tr>{change_rows}</table>"
        if change_rows
        else "<p class='muted'>No claim's verdict changed between runs.</p>"
    )
    span = f"{len(runs)} runs" + (f", {runs[0].date[:10]} to {runs[-1].date[:10]}" if runs else "")
    skipped = f" {len(site.history.skipped)} files set aside (see Runs)." if site.history.skipped else ""
    bench_table, sparks = _bench_table(site, benches, noises)
    body = (
        f"<h1>trainclaims history</h1><p class='muted'>{esc(site.history.folder)}: {esc(span)}.{esc(skipped)}</p>"
        f"<div class='filters'>{filters}</div>"
        "<h2 id='benchmarks'>Benchmarks</h2><p class='muted'>The gated number is the step's cost in units of its "
        "own GEMMs (trainclaims/benchgate.py); the last change is the newest run against the complete run before "
        "it, by the gate's rule at the benchmark's limit. Samples/s follow the machine's load and are not gated."
        f"</p>{bench_table}"
        "<h2 id='claims'>Claims × runs</h2><p class='muted'>The newest run first; a row per claim (choose a "
        "numerics mode or a device above for its verdicts there; claims whose tests take no device stay); a framed "
        "cell changed its verdict since the run before.</p>"
        f"<div class='wide'><table id='verdicts'><tr><th>claim</th>{site.header()}</tr>{rows}</table></div>"
        "<h2 id='regressions'>Regressions: the steps found</h2>"
        "<p class='muted'>Every step found in a benchmark's or a claim's measured numbers, newest first, with the "
        "run where it began (trainclaims/history/steps.py: each point weighted by its spread; a benchmark step "
        "smaller than its gate limit is marked).</p>"
        f"{_steps_table(site, found)}"
        f"<h2 id='verdict-changes'>Verdict changes</h2>{verdict_changes}"
        f"<h2 id='runs'>Runs</h2>{_runs_table(site)}"
        f"{site.chart_data({}, sparks)}"
    )
    return page("trainclaims history", body, ["site.js", "chart.js"])


def claim_page(site: Site, cid: str, claim: ClaimResult, grid: Grid, evidence: dict[str, list[Series]]) -> str:
    rows, _, _ = _verdict_rows(site, grid, _claim_keys(grid, cid), link=False)
    parts = [
        "<p><a href='../index.html'>← overview</a></p>",
        f"<h1>{esc(cid)}</h1><p>{esc(claim.statement)}</p>",
        f"<p>Newest verdict: <b>{esc(claim.verdict.value)}</b> {esc(claim.why)}</p>",
        f"<div class='filters'>{_runs_choice(site)}</div>",
        "<h2>Verdicts over the runs</h2><p class='muted'>The newest run first; per numerics mode and device (a "
        "device's verdict is where its tests take the claim).</p>",
        f"<div class='wide'><table><tr><th>where</th>{site.header()}</tr>{rows}</table></div>",
        "<h2>Measured numbers over the runs</h2>",
    ]
    charts: dict[str, Any] = {}
    if not evidence:
        parts.append("<p class='muted'>Its tests record no numbers.</p>")
    for group, series_list in sorted(evidence.items()):
        moving = [s for s in series_list if not s.constant]
        still = [s for s in series_list if s.constant]
        folded = " (one point per run: the median over its seeds, the bar their range)" if "*" in group else ""
        parts.append(f"<h3><code>{esc(group)}</code>{esc(folded)}</h3>")
        for series in moving:
            if series.fit is None and len(series.points) >= MIN_POINTS:
                series.find_steps()
            title = series.title + (f" (the dashed line: its bound, expect {series.expect})" if series.bounds else "")
            chart_id = f"c{len(charts)}"
            charts[chart_id] = chart_spec(series, site.runs, title)
            parts.append(f"<h4>{esc(title)}</h4>{figure(chart_id)}")
            parts.append(_series_steps(site, series))
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
    parts.append(site.chart_data(charts))
    return page(f"{cid}: trainclaims history", "".join(parts), ["site.js", "chart.js"])


def _series_steps(site: Site, series: Series) -> str:
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
            f"<li class='step-found' data-run='{step.index}'>step at {esc(site.run_name(step.index))}: "
            f"{esc(fmt(step.before))} → {esc(fmt(step.after))} ({esc(pct(step.change))}, {sigmas(step.z)} sigmas)"
            f"{gate}</li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def bench_page(site: Site, bench: BenchSeries, noise: BenchNoise | None) -> str:
    row = bench.newest
    parts = [
        "<p><a href='../index.html'>← overview</a></p>",
        f"<h1>{esc(bench.name)}</h1><p><code>{esc(bench.fullname)}</code> on {esc(bench.device)}, {esc(bench.machine)}"
        f"{': ' + esc(bench.group) if bench.group else ''}</p>",
    ]
    limit = row.limit()
    own = " (its own, measured)" if row.gate_min_effect is not None else " (the default)"
    parts.append(f"<p>Gate limit: <b>+{limit:.0%}</b>{own}.")
    if noise is not None:
        drift = noise.false_alarm_runs
        catches = f" A step 10% slower fails the gate {noise.catches:.0%} of the time." if noise.catches else ""
        parts.append(
            f" Noise: the step cost varies by {_pct0(noise.cv_rounds)} over a run's rounds and "
            f"{_pct0(noise.cv_runs)} over the runs (robust CV); at its limit two unchanged runs read "
            f"<i>slower</i> {noise.false_alarm['slower']:.1%} and <i>inconclusive</i> "
            f"{noise.false_alarm['inconclusive']:.1%} of the time from the rounds alone"
            + (f", {drift['slower']:.1%} and {drift['inconclusive']:.1%} with the run-to-run drift" if drift else "")
            + f" ({noise.simulations} simulated pairs of {noise.rounds} rounds).{catches}"
        )
    parts.append(f"</p><div class='filters'>{_runs_choice(site)}</div>")
    titles = {
        "step_cost": (
            "step cost in units of its own GEMMs: the rounds' lower quartile, the gated number (bars: "
            "the fastest round to the median)",
            "",
        ),
        "samples_per_s": (
            "samples/s: machine-dependent, follows the machine's load; not gated (bars: the rounds' quartiles)",
            "machine-dependent",
        ),
        "matmul_fraction": ("share of this machine's matmul rate: machine-dependent, not gated", "machine-dependent"),
    }
    charts: dict[str, Any] = {}
    for series in bench.series:
        kind = series.key.rsplit("|", 1)[-1]
        title, css = titles.get(kind, (series.title, ""))
        chart_id = f"c{len(charts)}"
        unit = "GEMM units" if kind == "step_cost" else ""
        charts[chart_id] = chart_spec(series, site.runs, title, unit)
        parts.append(f"<h2 class='{css}'>{esc(title)}</h2>{figure(chart_id)}")
        parts.append(_series_steps(site, series))
    table = [
        "<h2>Runs</h2><table><tr><th>run</th><th>date</th><th>commit</th><th>step cost</th><th>spread</th>"
        "<th>rounds</th><th class='machine-dependent'>samples/s</th><th class='machine-dependent'>matmul share</th>"
        "<th>note</th></tr>"
    ]
    for i in sorted(bench.rows, reverse=True):
        r, run = bench.rows[i], site.runs[i]
        table.append(
            f"<tr {site.attrs(i)}><td>{esc(site.run_name(i))}</td><td>{esc(run.date[:16])}</td>"
            f"<td>{site.commit(run, 8)}</td><td>{esc(fmt(r.step_cost))}</td><td>{esc(fmt(r.step_cost_spread))}</td>"
            f"<td>{len(r.step_costs or r.rounds_s or [])}</td><td class='machine-dependent'>{esc(fmt(r.samples_per_s))}"
            f"</td><td class='machine-dependent'>{esc(fmt(r.matmul_fraction))}</td><td>{esc(r.note)}</td></tr>"
        )
    table.append("</table>")
    parts += [*table, site.chart_data(charts)]
    return page(f"{bench.name}: trainclaims history", "".join(parts), ["site.js", "chart.js"])


def _pct0(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(history: History, commit_url: str | None = None, shown: int = SHOWN_RUNS) -> dict[str, str]:
    """The site's pages: relative path -> HTML."""
    site = Site(history, commit_url, shown)
    grid = [claim_verdicts(run) for run in history.runs]
    evidence = claim_series(history)
    benches = benchmark_series(history)
    claims, tests = _claim_meta(history)
    found = find_all_steps(tests, evidence, benches)
    noises = noise_by_benchmark(benches, simulations=NOISE_SIMULATIONS)
    pages = {"index.html": overview(site, grid, found, benches, noises)}
    for cid, claim in claims.items():
        pages[claim_file(cid)] = claim_page(site, cid, claim, grid, evidence.get(cid, {}))
    for bench in benches:
        pages[bench_file(bench.key)] = bench_page(site, bench, noises.get(bench.key))
    return pages


def write_site(history: History, out: str | Path, commit_url: str | None = None, shown: int = SHOWN_RUNS) -> Path:
    """Write the site of ``history`` to ``out`` whole (the module docstring); its index.html.
    ValueError (one line) where ``out`` holds something other than an earlier site."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).exists():
        raise ValueError(f"--out {out} holds other files (not a trainclaims history site): give a new or empty folder")
    pages = render(history, commit_url, shown)
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
