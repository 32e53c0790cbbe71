"""Plot helpers for the reports (matplotlib, Agg; every PNG rendered in memory and written
atomically), and the throughput bars of the benchmark report. The families draw their own plots
with these helpers (``trainclaims.families``)."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from trainclaims.benchgate import BenchRow
from trainclaims.files import atomic_write


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write(path, buf.getvalue())
    return path


def smooth(values: torch.Tensor, window: int) -> torch.Tensor:
    """Moving average (window steps); NaN/inf kept visible as gaps."""
    if len(values) < window or window < 2:
        return values
    kernel = torch.ones(1, 1, window, dtype=values.dtype) / window
    finite = torch.nan_to_num(values, nan=float("nan"), posinf=float("nan"))
    return torch.nn.functional.conv1d(finite.view(1, 1, -1), kernel).view(-1)


def plot_throughput(rows: list[BenchRow], path: Path) -> Path:
    """Samples/s per benchmark (log scale) and the step's share of this machine's matmul rate on
    its own GEMM shapes, one bar per device."""
    plt = pyplot()
    panels = (("samples_per_s", "training samples / s (log)"), ("matmul_fraction", "% of this machine's matmul rate"))
    by_name: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        for key, _ in panels:
            value = getattr(row, key)
            if value:
                by_name[key][row.short][row.device] = value * (100 if key == "matmul_fraction" else 1)
    names = sorted(by_name["samples_per_s"])
    devices = sorted({d for v in by_name["samples_per_s"].values() for d in v})
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 3.2 * len(names)), 4.8))
    width = 0.8 / max(1, len(devices))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, device in enumerate(devices):
            values = [by_name[key][n].get(device, 0.0) for n in names]
            ax.bar([j + i * width for j in range(len(names))], values, width, label=device)
        ax.set_xticks([j + width * (len(devices) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 100)
    fig.suptitle(f"Throughput, median round (torch {torch.__version__})")
    return save(fig, path)
