"""The reports in markdown, and writing them: ``claims.md``/``claims.json``, ``benchmarks.md``/
``benchmarks.json`` (atomically: a report is whole or absent), and the CI step summary. Every
markdown table cell goes through :func:`cell`."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainclaims.benchgate import RULE_OUT_OF_LIMIT, BenchRow, benchmark_noise
from trainclaims.claims import Catalogue
from trainclaims.files import atomic_write
from trainclaims.modes import REFERENCE as REFERENCE_MODE
from trainclaims.modes import mode_order
from trainclaims.results import ClaimResult, ClaimsReport, tally


def cell(value: Any) -> str:
    """``value`` as a markdown table cell: ``|`` escaped, on one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return f"[{', '.join(_fmt(v) for v in value[:12])}, ... ({len(value)} values)]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def claims_markdown(env: dict[str, Any], catalogue: Catalogue, claims: list[ClaimResult]) -> str:
    lines = ["# Claim report", ""]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in env.items()]
    counts: dict[str, int] = {}
    for c in claims:
        counts[c.verdict.value] = counts.get(c.verdict.value, 0) + 1
    lines += ["", "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()), ""]
    for family, title in ((f.id, f.title) for f in catalogue.families.values()):
        lines += [
            f"## {family}: {title}",
            "",
            "| claim | verdict | tests (pass/fail/skip) | guard | why |",
            "|---|---|---|---|---|",
        ]
        mine = [c for c in claims if c.family == family]
        for c in mine:
            lines.append(
                f"| {c.id} | **{c.verdict.value}** | {tally(c.tests)} | {guard_cell(c.guard)} | {cell(c.why)} |"
            )
        lines.append("")
        lines += modes_table(mine)
        for c in (c for c in mine if c.tests):
            lines += [f"### {c.id}: {c.verdict.value}", "", f"> {c.statement}", ""]
            if c.in_modes:
                for mode, mv in c.modes.items():
                    lines.append(f"- in **{mode}**: {mv.verdict.value}" + (f" ({mv.why})" if mv.why else ""))
                lines.append("")
            for t in c.tests:
                head = f"- `{t.test}`: {t.outcome}" + (f" on {t.device}" if t.device else "")
                if t.verdict:
                    head += f", **{t.verdict.value}** ({t.why})"
                elif t.reason:
                    head += f" ({t.reason})"
                lines.append(head)
                if t.mode_proof:
                    lines.append(f"  - the mode acted: {t.mode_proof}")
                lines += [f"  - {k}: {_fmt(v)}" for k, v in t.evidence.items()]
            lines.append("")
    return "\n".join(lines)


def guard_cell(guard: list[str] | None) -> str:
    """A claim's guard: the mutants that alter what it states (trainclaims-mutants shows its tests
    fail under each), or *unguarded* where none does."""
    if guard is None:
        return ""
    return ", ".join(f"`{name}`" for name in guard) if guard else "*unguarded*"


def run_modes(claims: list[ClaimResult]) -> list[str]:
    """The numerics modes any claim was measured in, in trainclaims.numerics order."""
    found = {m for c in claims for m in c.modes}
    return sorted(found, key=lambda m: (mode_order(m), m))


def modes_table(claims: list[ClaimResult]) -> list[str]:
    """Claims x numerics modes, where a run measured more than the reference mode; "-" where the
    claim has no test in that mode (its tests are off the numerics axis)."""
    modes = run_modes(claims)
    if not set(modes) - {REFERENCE_MODE.name}:
        return []
    lines = ["Per numerics mode (`--numerics`):", "", "| claim | " + " | ".join(modes) + " |"]
    lines.append("|---|" + "---|" * len(modes))
    for c in claims:
        cells = [c.modes[m].verdict.value if m in c.modes else "-" for m in modes]
        lines.append(f"| {c.id} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_claim_reports(
    report_dir: Path, env: dict[str, Any], catalogue: Catalogue, claims: list[ClaimResult]
) -> list[Path]:
    paths = [report_dir / "claims.json", report_dir / "claims.md"]
    atomic_write(paths[0], ClaimsReport(env, claims).dumps())
    atomic_write(paths[1], claims_markdown(env, catalogue, claims) + "\n")
    return paths


# --------------------------------------------------------------------------- benchmarks


MATMUL_FRACTION_NOTE = (
    "**% of matmul rate**: the training step's FLOP/s (its matrix products and convolutions, counted by "
    "`torch.utils.flop_counter.FlopCounterMode`, over the median round) as a share of what `torch.matmul` "
    "reaches on this machine, in this run, on the step's GEMM shapes and dtype, timed between the step's "
    "rounds on resident tensors. 100% would mean the step does nothing but its matrix products at full "
    "speed; the rest is elementwise work, the optimizer, autograd and Python. Neither it nor samples/s is "
    "gated: the benchmark gate (`--bench-baseline`) compares the step's **cost** in units of its own GEMMs, "
    "round by round on one thread and its CPU clock (`step_costs`), which a machine that is slower for the "
    "moment moves far less than samples/s; it reads each run's lower quartile (the `step cost` column) and "
    f"passes a run only where it rules out {RULE_OUT_OF_LIMIT:g} of the benchmark's limit, so a step the limit "
    "slower fails "
    "(docs/reports.md: Gating CI)."
)


NOISE_SIMULATIONS = 1000  # pairs of simulated runs per benchmark: a 1% false-alarm rate to about +-0.3%
NOISE_NOTE = (
    "**noise**: the coefficient of variation of the step's cost over this run's rounds (robust: 1.4826 MAD / "
    "median), the benchmark's gate limit, how often the benchmark gate at that limit would call two unchanged runs "
    "of these rounds *slower* / *inconclusive* (both fail CI), and how often it fails a step 10% slower: "
    "simulated, each run's rounds drawn with replacement from these (trainclaims.benchgate). Over several runs "
    "(`--history`), `trainclaims-history site` adds the run-to-run drift."
)


def with_noise(row: BenchRow) -> BenchRow:
    """``row`` with its ``noise`` (this run's rounds: CV, the false alarms it implies at its gate
    limit, how often it catches a 10% slower step), where it recorded the step costs the gate compares."""
    if not row.step_costs or len(row.step_costs) < 3:
        return row
    noise = benchmark_noise([row], simulations=NOISE_SIMULATIONS)
    return row if noise is None else replace(row, noise=noise.to_json())


def _noise_cell(row: BenchRow) -> str:
    noise = row.noise
    if not noise or noise.get("cv_rounds") is None:
        return "-"
    rates = f"{noise['false_alarm_slower']:.1%} / {noise['false_alarm_inconclusive']:.1%}"
    text = f"CV {noise['cv_rounds']:.1%}; at its {noise['gate_min_effect']:.0%} limit {rates}"
    if noise.get("catches") is not None:
        text += f"; a {noise.get('catches_slowdown', 0.1):.0%} slower step caught {noise['catches']:.0%}"
    return text


def benchmarks_markdown(env: dict[str, Any], rows: list[BenchRow], unmeasured: list[dict[str, str]]) -> str:
    lines = ["# Benchmark report", ""]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in env.items()]
    lines += ["", "![throughput](throughput.png)" if rows else "No benchmark was measured in this run.", ""]
    if rows:
        lines += [
            "Times per round: median and interquartile range (IQR) over the rounds; samples/s and GFLOP/s "
            "from the median.",
            "",
            MATMUL_FRACTION_NOTE,
            "",
            NOISE_NOTE,
            "",
        ]
    for group in dict.fromkeys(r.group for r in rows):
        lines += [f"## {group}", ""]
        lines.append(
            "| benchmark | device | median (ms) | IQR (ms) | rounds | samples/s | GFLOP/s | matmul GFLOP/s "
            "| % of matmul rate | noise | notes |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r.group == group):
            notes = [r.note] if r.note else []  # what the benchmark itself says of its numbers
            median = r.median_s if r.median_s is not None else r.mean_s or 0.0
            fraction = f"{r.matmul_fraction:.0%}" if r.matmul_fraction is not None else "-"
            matmul = f"{r.matmul_flops_per_s / 1e9:.3g}" if r.matmul_flops_per_s is not None else "-"
            rounds = len(r.rounds_s or []) or r.rounds
            lines.append(
                f"| `{r.short}` | {r.device} ({r.device_name or ''}) | {median * 1e3:.3g} | "
                f"{(r.iqr_s or 0.0) * 1e3:.2g} | {rounds} | {r.samples_per_s or 0:.4g} | "
                f"{(r.flops_per_s or 0) / 1e9:.3g} | {matmul} | {fraction} | {_noise_cell(r)} | {'; '.join(notes)} |"
            )
        lines.append("")
    if unmeasured:
        lines += ["## Not measured", "", "| benchmark | why |", "|---|---|"]
        lines += [f"| `{u['test']}` | {u['why']} |" for u in unmeasured]
        lines.append("")
    return "\n".join(lines)


def write_benchmark_reports(
    report_dir: Path, env: dict[str, Any], rows: list[BenchRow], unmeasured: list[dict[str, str]]
) -> list[Path]:
    """benchmarks.json / .md: the measured benchmarks, and those that ran unmeasured or skipped."""
    rows = [with_noise(r) for r in rows]
    payload = {"environment": env, "benchmarks": [r.to_json() for r in rows], "not_measured": unmeasured}
    paths = [report_dir / "benchmarks.json", report_dir / "benchmarks.md"]
    atomic_write(paths[0], json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write(paths[1], benchmarks_markdown(env, rows, unmeasured) + "\n")
    return paths


# --------------------------------------------------------------------------- CI step summary

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def step_summary_markdown(
    claims: list[ClaimResult], bench_rows: list[BenchRow], gates: list[Any], failures: list[str]
) -> str:
    """The run in markdown for a CI job's summary page: claims, benchmarks, the gates' outcome."""
    lines = ["## trainclaims", ""]
    measured = [c for c in claims if c.tests]
    if measured:
        lines += ["| claim | verdict | tests (pass/fail/skip) | why |", "|---|---|---|---|"]
        for c in measured:
            lines.append(f"| {c.id} | **{c.verdict.value}** | {tally(c.tests)} | {cell(c.why[:200])} |")
        lines.append("")
    if bench_rows:
        lines += [
            "| benchmark | device | step cost (gated) | samples/s (machine-dependent) | % of matmul rate |",
            "|---|---|---|---|---|",
        ]
        for r in bench_rows:
            share = f"{r.matmul_fraction:.0%}" if r.matmul_fraction is not None else "-"
            cost = f"{r.step_cost:.3g}" if r.step_cost is not None else "-"
            lines.append(f"| `{r.short}` | {r.device} | {cost} | {r.samples_per_s or 0:.4g} | {share} |")
        lines.append("")
    for g in gates:
        lines.append(f"- gate {'**failed**' if g.lines else 'passed'}: {g.summary()}")
        lines += [f"  - {line}" for line in g.lines]
        lines += [f"  - {line}" for line in getattr(g, "info", [])]
    lines += [f"- report **failed**: {line}" for line in failures]
    return "\n".join(lines) + "\n"


def write_step_summary(
    claims: list[ClaimResult], bench_rows: list[BenchRow], gates: list[Any], failures: list[str]
) -> None:
    """Append :func:`step_summary_markdown` to ``$GITHUB_STEP_SUMMARY`` where it is set (GitHub
    Actions); nothing where it is not, or where there is nothing to say."""
    path = os.environ.get(STEP_SUMMARY_ENV)
    if not path or not (any(c.tests for c in claims) or bench_rows or gates or failures):
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(step_summary_markdown(claims, bench_rows, gates, failures))
