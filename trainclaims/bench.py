"""What a throughput benchmark records (pytest-benchmark's ``extra_info``): samples/s and FLOP/s from
the measured mean time, and the environment. Benchmarks that run unmeasured (``--benchmark-disable``)
record nothing; the report lists them as not measured."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainclaims.devices import device_name


def linear_flops(model: nn.Module, batch: int) -> int:
    """FLOPs of one training step of the model's Linear layers (2 per multiply-add): forward, weight
    gradients, and input gradients but for the first layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    total = 0
    for i, m in enumerate(linears):
        mac = batch * m.in_features * m.out_features
        total += 2 * mac * (3 if i > 0 else 2)  # forward, dW, dX (no dX for the first layer)
    return total


def mean_seconds(benchmark: Any) -> float | None:
    """The benchmark's mean time per round, or None where it measured nothing (disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.mean


def record(
    benchmark: Any, device: str, samples: int, flops: int, dtype: torch.dtype = torch.float32, **extra: Any
) -> float | None:
    """Call after ``benchmark.pedantic``: throughput from the mean time, plus the environment.
    Returns the mean time per round, or None (recording nothing) where the benchmark was disabled."""
    mean = mean_seconds(benchmark)
    if mean is None:
        return None
    benchmark.extra_info.update(
        samples_per_s=samples / mean,
        flops_per_step=flops,
        flops_per_s=flops / mean,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=device,
        device_name=device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        **extra,
    )
    return mean
