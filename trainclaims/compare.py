"""Compare the reports of several runs (torch versions, devices, machines, data tiers, numeric
settings): ``python -m trainclaims.compare RUN_DIR... --out DIR`` (or ``trainclaims-compare``).

Each RUN_DIR is a ``--report-dir`` of a run (its ``claims.json``; ``benchmarks.json`` where
benchmarks ran). Writes ``compare.md`` and ``compare.png``: claims x runs with verdicts and the
tests behind them, changes against the first run marked; the sections the claim families add
(``Family.compare_sections``); benchmarks x runs as ratios to the first run, flagged
where the runs were on different machines. Runs are labelled by what differs between them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainclaims import registry
from trainclaims.benchgate import BenchRow, rows_from_json
from trainclaims.cli import described
from trainclaims.files import atomic_write
from trainclaims.render import cell
from trainclaims.results import ClaimResult, ClaimsReport, Row, read_json, row_claim, row_mode_rank

VERDICT_COLOURS = {
    "holds": "#4caf50",
    "conditional": "#ffc107",
    "refuted": "#2196f3",
    "fails": "#f44336",
    "not measured": "#bdbdbd",
    "error": "#9c27b0",
}


@dataclass
class Run:
    path: Path
    environment: dict[str, Any]
    claims: list[Row]  # each claim's row, then its rows per numerics mode (where it ran several)
    benchmarks: list[BenchRow] = field(default_factory=list)
    label: str = ""

    @property
    def facts(self) -> dict[str, str]:
        """What can tell this run from another, as short strings."""
        env = self.environment
        devices = env.get("devices", {})
        present = {d: n for d, n in devices.items() if not str(n).startswith("absent")}
        tiers = sorted({t.tier for c in self.claims for t in c.tests if t.outcome == "passed" and t.tier})
        # the modes the run measured (each test pins its own settings: the process's settings
        # at the end of the run tell no runs apart); runs from before --numerics measured ieee
        modes = env.get("numerics_modes") or ["ieee"]
        return {
            "torch": str(env.get("torch", "?")),
            "cuda": str(env.get("cuda")),
            "devices": ", ".join(f"{d} ({n})" for d, n in present.items()) or "?",
            "machine": str(env.get("processor") or env.get("platform", "?")),
            "data": "+".join(tiers) or "none",
            "numerics": "+".join(modes),
        }


def load_run(path: Path) -> Run:
    claims_file = path / "claims.json"
    try:
        report = ClaimsReport.read(claims_file)
    except ValueError as err:
        hint = " (a --report-dir of a run?)" if not claims_file.exists() else ""
        raise SystemExit(f"trainclaims-compare: {err}{hint}") from None
    bench_file = path / "benchmarks.json"
    try:
        benchmarks = rows_from_json(read_json(bench_file, "benchmarks"), str(bench_file)) if bench_file.exists() else []
    except ValueError as err:
        raise SystemExit(f"trainclaims-compare: {err}") from None
    return Run(path, report.environment, with_modes(report.claims), benchmarks)


def with_modes(claims: list[ClaimResult]) -> list[Row]:
    """Each claim's row, followed by one row per numerics mode where it was measured in modes
    beyond the reference (``S000-08 [bf16-autocast]``: that mode's verdict and tests): claims x modes."""
    return [row for c in claims for row in (c.row, *c.mode_rows())]


def label_runs(runs: list[Run]) -> None:
    """Label each run by the facts that differ between the runs (all of them equal: by folder)."""
    facts = [r.facts for r in runs]
    differing = [k for k in facts[0] if len({f[k] for f in facts}) > 1]
    for run, f in zip(runs, facts, strict=True):
        run.label = "; ".join(f"{k} {f[k]}" if k != "torch" else f"torch {f[k]}" for k in differing) or run.path.name


def run_columns(runs: list[Run]) -> str:
    """The runs' column headers of a compare table: ``1: <label> | 2: <label> ...``."""
    return " | ".join(f"{i}: {cell(r.label)}" for i, r in enumerate(runs, 1))


def markdown(runs: list[Run], families: Sequence[Any] | None = None) -> str:
    first = runs[0]
    lines = ["# Comparison of runs", "", "| run | folder | torch | CUDA | devices | machine | data | date | commit |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        f, env = r.facts, r.environment
        lines.append(
            f"| {i}: **{cell(r.label)}** | `{r.path}` | {f['torch']} | {f['cuda']} | {cell(f['devices'])} | "
            f"{cell(f['machine'])} | {f['data']} | {env.get('date', '?')} | {env.get('commit', '?')} |"
        )
    lines += ["", "![verdicts](compare.png)", "", "## Claims", ""]
    lines.append("Verdict (tests passed/failed/skipped) per run; **⚠** marks a verdict that differs from run 1's.")
    lines.append("")
    lines.append("| claim | " + run_columns(runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    ids = list(dict.fromkeys(c.key for r in runs for c in r.claims))
    first_seen = {row_claim(cid): i for i, cid in reversed(list(enumerate(ids)))}
    ids.sort(key=lambda cid: (first_seen[row_claim(cid)], row_mode_rank(cid)))
    by_run = [{c.key: c for c in r.claims} for r in runs]
    changed = []
    for cid in ids:
        cells = []
        first_row = by_run[0].get(cid)
        base = first_row.verdict if first_row else None
        for claims in by_run:
            c = claims.get(cid)
            if c is None:
                cells.append("-")
                continue
            mark = " **⚠**" if c.verdict != base else ""
            cells.append(f"{c.verdict.value} ({c.tally}){mark}")
        if any("⚠" in c for c in cells):
            changed.append(cid)
        lines.append(f"| {cid} | " + " | ".join(cells) + " |")
    lines += ["", "## What changed", ""]
    if not changed:
        lines.append("Every claim has the same verdict in every run.")
    for cid in changed:
        lines.append(f"### {cid}")
        lines.append("")
        for i, claims in enumerate(by_run, 1):
            c = claims.get(cid)
            if c is not None:
                failing = [t for t in c.tests if t.failed]
                if failing:  # each failed test's first line: the assertion and its numbers
                    lines_ = dict.fromkeys(t.reason.splitlines()[0] if t.reason else t.outcome for t in failing)
                    detail = f"{len(failing)} test(s) failed: " + "; ".join(lines_)
                else:
                    detail = c.why
                lines.append(f"- run {i} ({cell(runs[i - 1].label)}): **{c.verdict.value}** {cell(detail)}")
        lines.append("")
    lines += family_sections(runs, families)
    lines += _benchmark_section(runs, first)
    return "\n".join(lines) + "\n"


def family_sections(runs: list[Run], families: Sequence[Any] | None = None) -> list[str]:
    """What the claim families add to the comparison: each family (default: the installed ones,
    :func:`trainclaims.registry.installed`) may have ``compare_sections``, functions from the runs to markdown
    lines (nothing where the runs measured nothing of theirs)."""
    lines: list[str] = []
    for family in registry.installed() if families is None else families:
        for section in getattr(family, "compare_sections", ()):
            lines += section(runs)
    return lines


def _benchmark_section(runs: list[Run], first: Run) -> list[str]:
    keys = list(dict.fromkeys(b.key for r in runs for b in r.benchmarks))
    if not keys:
        return []
    lines = [
        "## Benchmarks",
        "",
        "Samples/s per run, as a ratio to run 1; (machine differs) where the runs ran on other hardware.",
    ]
    lines.append("")
    lines.append("| benchmark | " + run_columns(runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    for name, device in keys:
        rows = [{b.key: b for b in r.benchmarks}.get((name, device)) for r in runs]
        base = rows[0]
        cells = []
        for run, row in zip(runs, rows, strict=True):
            if row is None:
                cells.append("-")
                continue
            if not row.samples_per_s:
                cells.append("-")
                continue
            text = f"{row.samples_per_s:.4g}"
            if base is not None and base.samples_per_s and run is not first:
                text += f" ({row.samples_per_s / base.samples_per_s:.2f}x)"
                if (row.device_name, run.facts["machine"]) != (base.device_name, first.facts["machine"]):
                    text += " (machine differs)"
            cells.append(text)
        lines.append(f"| `{name.split('::')[-1]}` [{device}] | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(runs: list[Run], path: Path) -> Path:
    from trainclaims import plots

    ids = list(dict.fromkeys(c.key for r in runs for c in r.claims))
    by_run = [{c.key: c.verdict.value for c in r.claims} for r in runs]
    plt = plots.pyplot()
    from matplotlib.colors import to_rgb

    fig, ax = plt.subplots(figsize=(2.2 * len(runs) + 3, 0.28 * len(ids) + 1.5))
    grid = [[to_rgb(VERDICT_COLOURS.get(v.get(cid, ""), "#ffffff")) for v in by_run] for cid in ids]
    ax.imshow(grid, aspect="auto")
    for i, cid in enumerate(ids):
        for j, verdicts in enumerate(by_run):
            v = verdicts.get(cid, "-")
            changed = v != by_run[0].get(cid, "-")
            ax.text(
                j,
                i,
                v + (" ⚠" if changed else ""),
                ha="center",
                va="center",
                fontsize=7,
                weight="bold" if changed else None,
            )
            if changed:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="k"))
    ax.set_xticks(range(len(runs)), [f"{j + 1}: {r.label}" for j, r in enumerate(runs)], fontsize=8, rotation=10)
    ax.set_yticks(range(len(ids)), ids, fontsize=7)
    ax.set_title("Verdict per claim and run (framed: differs from run 1)")
    return plots.save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainclaims-compare", description=described(__doc__))
    parser.add_argument("runs", nargs="+", type=Path, help="report folders of the runs (first = reference)")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.md and compare.png")
    parser.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="a claim family whose compare sections to add, besides the installed ones (the entry-point group "
        "trainclaims.families): e.g. conftest:FAMILY for one declared in a project's conftest.py, run from there",
    )
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two run folders")
    try:
        families = registry.with_extra(registry.load(ref) for ref in args.family)
    except ValueError as err:
        parser.error(str(err))
    runs = [load_run(p) for p in args.runs]
    label_runs(runs)
    atomic_write(args.out / "compare.md", markdown(runs, families))
    plot(runs, args.out / "compare.png")
    print(f"trainclaims-compare: wrote {args.out / 'compare.md'} and {args.out / 'compare.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
