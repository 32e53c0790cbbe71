"""Eval mode: deterministic forward passes although the model has Dropout."""

from __future__ import annotations

import torch
from torch import nn

from trainclaims.checks.base import Checked, ModelFactory, build, dtype_of_model, relative_gap


def eval_determinism(
    model_fn: ModelFactory,
    x: torch.Tensor,
    *,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """``model.eval()`` makes the forward pass deterministic: Dropout is the identity, so
    ``repeats`` eval passes over ``x`` are bit-for-bit equal; where the model has Dropout with
    p > 0 its training-mode passes differ from each other (recorded as ``train_gap``: evidence
    that the eval passes did not agree only because nothing was random)."""
    model = build(model_fn, device, dtype)[0]
    dt = dtype_of_model(model)
    xd = x.to(device=device, dtype=dt)
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    with torch.no_grad():
        model.train()
        train_out = [model(xd) for _ in range(2)]
        model.eval()
        outs = [model(xd) for _ in range(repeats)]
    gap = max(float((o - outs[0]).abs().max()) for o in outs)
    result = Checked(
        "eval_determinism",
        f"{repeats} eval-mode forward passes are bit-for-bit equal (Dropout is the identity in eval)",
        "exact",
        gap,
        0.0,
        {
            "dropout_layers": len(dropouts),
            "train_gap": relative_gap([train_out[1]], [train_out[0]]),
            "dtype": str(dt),
            "device": device,
        },
    )
    if dropouts and result.values["train_gap"] == 0:
        result.refute("but the training-mode passes were equal too, with Dropout present")
    return result


__all__ = ["eval_determinism"]
