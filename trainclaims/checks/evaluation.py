"""Eval mode: deterministic forward passes although the model has Dropout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainclaims import numerics as num
from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    batch_list,
    batches_on,
    build,
    call,
    inputs_of,
    relative_gap,
)
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import Batch


def eval_determinism(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """``model.eval()`` makes the forward pass deterministic: Dropout is the identity, so
    ``repeats`` eval passes over each batch's inputs (pairs, mappings or bare inputs; a tensor is
    one batch) are bit-for-bit equal; where the model has Dropout with p > 0 its training-mode
    passes differ from each other (recorded as ``train_gap``: evidence that the eval passes did not
    agree only because nothing was random). In a numerics mode the passes run in it."""
    mode = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "eval_determinism", targets=False)
    model, dt = build(model_fn, device, dtype, mode)
    run = num.compiled(model, mode)
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    gap, train_gaps = 0.0, []
    with torch.no_grad(), num.autocast(mode, device):
        for batch in batches_on(batches, device, model):
            x = inputs_of(batch)
            model.train()
            train_out = [call(run, x) for _ in range(2)]
            model.eval()
            outs = [call(run, x) for _ in range(repeats)]
            gap = max(gap, *(float((o - outs[0]).abs().max()) for o in outs))
            train_gaps.append(relative_gap([train_out[1]], [train_out[0]]))
    result = Checked(
        "eval_determinism",
        f"{repeats} eval-mode forward passes are bit-for-bit equal (Dropout is the identity in eval)",
        "exact",
        gap,
        0.0,
        {"dropout_layers": len(dropouts), "train_gap": max(train_gaps), "dtype": str(dt), "device": device},
        mode,
        dt,
    )
    if dropouts and result.values["train_gap"] == 0:
        result.refute("but the training-mode passes were equal too, with Dropout present")
    return result


__all__ = ["eval_determinism"]
