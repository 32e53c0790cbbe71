"""An activation's derivative at a kink."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainclaims.checks.base import Checked


def gradient_at_zero(
    activation: Callable[[torch.Tensor], torch.Tensor],
    expected: float,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Checked:
    """An activation's derivative at exactly +0.0 and -0.0 is ``expected`` (the convention it
    picks at a kink: 0 for ReLU); exact, in ``dtype``."""
    x = torch.tensor([0.0, -0.0], device=device, dtype=dtype, requires_grad=True)
    activation(x).sum().backward()
    got = [float(g) for g in x.grad]
    return Checked(
        "gradient_at_zero",
        f"the derivative at exactly 0 is {expected:g}",
        "exact",
        max(abs(g - expected) for g in got),
        0.0,
        {"at_plus_zero": got[0], "at_minus_zero": got[1], "expected": expected, "dtype": str(dtype), "device": device},
    )


__all__ = ["gradient_at_zero"]
