"""Claim family S001 (backpropagation through ReLU): its claims, and the report part that draws the
derivative at exactly 0 of each ReLU-like op as this run measured it (``relu_ops``, ``xor`` hold
the family's ops and the source's XOR net)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainclaims import plots
from trainclaims.claims import Family, ReportContext
from trainclaims.families.s001.mutants import MUTANTS
from trainclaims.families.s001.relu_ops import CLAMP_AT_ZERO
from trainclaims.known import Known

AT_ZERO_CLAIM = "S001-02"
AT_ZERO_EVIDENCE = "derivative_at_zero"  # {op name: d/dx at +0.0}, recorded per dtype and device


def report_derivatives_at_zero(ctx: ReportContext) -> list[Path]:
    """``s001_relu_derivatives.png``: op x (dtype, device), the derivative at exactly 0 measured by
    the run's S001-02 tests (nothing when they did not run)."""
    measured = ctx.measured(AT_ZERO_CLAIM, AT_ZERO_EVIDENCE)
    if not measured:
        return []
    columns = [f"{e['dtype'].removeprefix('torch.')}\n{e['device']}" for e in measured]
    ops = list(dict.fromkeys(op for e in measured for op in e[AT_ZERO_EVIDENCE]))
    table = torch.tensor([[e[AT_ZERO_EVIDENCE].get(op, float("nan")) for e in measured] for op in ops])
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 3, 0.45 * len(ops) + 1.5))
    image = ax.imshow(table.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(len(ops)):
        for j in range(len(columns)):
            value = table[i, j].item()
            ax.text(j, i, f"{value:g}", ha="center", va="center", color="w" if value < 0.5 else "k", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(ops)), ops, fontsize=8)
    fig.colorbar(image, ax=ax, label="d/dx at x = +0.0")
    ax.set_title(f"S001-02: derivative of ReLU-like ops at exactly 0, as measured (torch {torch.__version__})")
    return [plots.save(fig, ctx.report_dir / "s001_relu_derivatives.png")]


def derivatives_at_zero(run: Any) -> dict[str, dict[str, float]]:
    """{op: {"dtype device": d/dx at +0}} from the run's S001-02 evidence."""
    table: dict[str, dict[str, float]] = {}
    for claim in run.claims:
        for t in claim.tests:
            ev = t.evidence
            if claim.key == AT_ZERO_CLAIM and t.outcome == "passed" and AT_ZERO_EVIDENCE in ev:
                column = f"{str(ev.get('dtype', '')).removeprefix('torch.')} {ev.get('device', '')}".strip()
                for op, value in ev[AT_ZERO_EVIDENCE].items():
                    table.setdefault(op, {})[column] = value
    return table


def compare_derivatives_at_zero(runs: list[Any]) -> list[str]:
    """trainclaims-compare's section: the derivative at exactly 0 of each ReLU-like op per run, a
    change marked known where ``relu_ops``' per-version table documents it for that run's torch."""
    from trainclaims.compare import run_columns

    tables = [derivatives_at_zero(r) for r in runs]
    ops = list(dict.fromkeys(op for t in tables for op in t))
    if not ops:
        return []
    lines = ["## S001-02: derivative at exactly 0 of each ReLU-like op", ""]
    lines.append(
        "One value where every dtype and device of the run agree, else each; **⚠** where it differs from run 1 "
        "and no known change explains it; *known* where it is the value documented for that run's torch "
        "(trainclaims/known.py)."
    )
    lines.append("")
    lines.append("| op | " + run_columns(runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    from trainclaims.families.s001.relu_ops import OPS

    known = {op.name: op.at_zero for op in OPS if isinstance(op.at_zero, Known)}
    for op in ops:
        cells, base = [], None
        for run, t in zip(runs, tables, strict=True):
            values = t.get(op, {})
            shown = (
                "-"
                if not values
                else f"{next(iter(values.values())):g}"
                if len(set(values.values())) == 1
                else ", ".join(f"{k}: {v:g}" for k, v in values.items())
            )
            base = shown if base is None else base
            rule, torch_version = known.get(op), run.facts["torch"]
            span = rule.range_for(torch_version) if rule is not None else None
            if shown != base and span is not None and set(values.values()) == {span.value}:
                cells.append(f"{shown} (*known*: torch {span.spec}, {span.source})")
            else:
                cells.append(shown + (" **⚠**" if shown != base else ""))
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# --------------------------------------------------------------------------- the bands its tests judge by
# (each with its measurement; suites/ imports them from here)

XOR_SEEDS = 1000
# Measured (CPU, float64, torch 2.14.1): the source's net learns XOR (loss falls, predictions round
# to the truth table after 200 iterations) for 1999 of seeds 0..1999 (99.95%); the loss falls for
# all 2000. With that rate, 1000 seeds show more than 5 failures with probability < 1e-5:
XOR_MIN_RATE = 0.995
# Measured (CPU, negative_slope 0.1, seeds 0..9, up to 2000 steps): the dead unit's
# pre-activation turns positive on some input for SGD+momentum 10/10 seeds (after 6-11 steps),
# Adam 1/10 (578 steps), plain SGD 0/10: the other units fit the target first and the gradient
# left for the dead one fades. Leaky ReLU makes recovery possible, not certain.
RECOVERY_STEPS = 100  # momentum recovers within 11 steps; the others rarely within 2000
RECOVERY_BANDS = {"sgd": (0, 2), "sgd-momentum": (9, 10), "adam": (0, 3)}  # recovered of 10 seeds
# Recovery alone admits "no effect" (0 of 10 with plain SGD or Adam is also what a unit that gets
# no gradient at all gives), so the effect is asserted directly: the leaky unit's weights move.
# Measured (CPU, seeds 0-19, the steps above or until it recovers): |w - w0| / |w0| of the dead
# unit's weight row, SGD 0.15-0.64, SGD+momentum 1.12-1.92, Adam 0.57-1.57; with plain ReLU 0 for
# every optimizer and seed.
LEAKY_MIN_MOVE = 0.05


FAMILY = Family(
    id="S001",
    title="Backpropagation through ReLU",
    catalogue="""
S001-01 | ReLU is max(0,x); its derivative is 0 for x<0 and 1 for x>0.
S001-02 | ReLU's derivative at exactly 0 is undefined and set to 0 in practice; ReLU-like ops do not all agree at 0.
S001-03 | Swapping sigmoid/tanh for ReLU is a one-line change with no change to forward or backward code.
S001-04 | Step-by-step chain-rule backprop of input->hidden->ReLU->output->softmax (and the source's numpy XOR net) equals autograd.
S001-05 | The source's numpy XOR net (2-30-1, lr 0.002, 200 iterations) learns XOR.
S001-06 | A unit whose pre-activation is <= 0 on every input gets zero gradient and never recovers (dying ReLU).
S001-07 | Leaky ReLU scales negative inputs and their gradient by negative_slope; negative_slope=0 is ReLU.
S001-08 | A single ReLU unit before softmax outputs 0 for every negative input, carrying no information forward.
""",
    report_parts=(report_derivatives_at_zero,),
    compare_sections=(compare_derivatives_at_zero,),
    mutants=MUTANTS,
    known=(CLAMP_AT_ZERO,),
)
