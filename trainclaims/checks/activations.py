"""An activation's derivative at a kink."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainclaims import numerics as num
from trainclaims.checks.base import Checked, keyword_only
from trainclaims.modes import REFERENCE, ModeLike, get


@keyword_only(1, "expected")
def gradient_at_zero(
    activation: Callable[[torch.Tensor], torch.Tensor],
    *,
    expected: float,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """An activation's derivative at exactly +0.0 and -0.0 is ``expected`` (the convention it
    picks at a kink: 0 for ReLU); exact, in ``dtype``. In a numerics mode the activation runs in
    it (compiled, in its autocast region, on inputs in the dtype it holds values in)."""
    mode = get(numerics)  # parsed once, where it enters
    held = getattr(torch, mode.param_dtype(str(dtype)))
    x = torch.tensor([0.0, -0.0], device=device, dtype=held, requires_grad=True)
    with num.autocast(mode, device):
        out = num.observe(num.compiled(activation, mode)(x))  # what autocast computed in functional code
    out.float().sum().backward()
    got = [float(g) for g in x.grad]
    return Checked(
        "gradient_at_zero",
        f"the derivative at exactly 0 is {expected:g}",
        "exact",
        max(abs(g - expected) for g in got),
        0.0,
        {"at_plus_zero": got[0], "at_minus_zero": got[1], "expected": expected, "dtype": str(dtype), "device": device},
        mode,
        dtype,
    )


__all__ = ["gradient_at_zero"]
