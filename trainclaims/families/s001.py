"""Claim family S001 (backpropagation through ReLU): its claims, and the report part that draws the
derivative at exactly 0 of each ReLU-like op as this run measured it (``relu_ops``, ``xor`` hold
the family's ops and the source's XOR net)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainclaims import plots
from trainclaims.claims import Family, ReportContext

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
)
