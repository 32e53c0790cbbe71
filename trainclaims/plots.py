"""Plot helpers for the reports (matplotlib, Agg; every PNG rendered in memory and written
atomically), and the throughput bars of the benchmark report. The families draw their own plots
with these helpers (``trainclaims.families``)."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

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


def plot_throughput(rows: list[dict[str, Any]], path: Path) -> Path:
    """Samples/s per benchmark, one bar per device."""
    plt = pyplot()
    by_name: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row.get("samples_per_s"):
            by_name[row["name"]][row["device"]] = row["samples_per_s"]
    names = sorted(by_name)
    devices = sorted({d for v in by_name.values() for d in v})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4.5))
    width = 0.8 / max(1, len(devices))
    for i, device in enumerate(devices):
        values = [by_name[n].get(device, 0.0) for n in names]
        ax.bar([j + i * width for j in range(len(names))], values, width, label=device)
    ax.set_xticks([j + width * (len(devices) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("training samples / s (log)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Throughput (torch {torch.__version__})")
    return save(fig, path)
