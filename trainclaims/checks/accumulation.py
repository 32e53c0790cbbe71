"""Gradient accumulation against the larger batch it imitates."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainclaims.checks.base import (
    BATCHNORM_MIN_GAP,
    Checked,
    ModelFactory,
    OptimizerFactory,
    batch_list,
    batches_on,
    batchnorms,
    build,
    keyword_only,
    parameter_gap,
    relative_gap,
    rtol,
    sgd,
)
from trainclaims.checks.preconditions import (
    diverged,
    likely_cause,
    mean_cross_entropy,
    require_no_batchnorm,
    require_no_dropout,
)
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import Batch, LossFn, ModeLoss, batch_size, split, train


@keyword_only(2, "k")
def accumulation(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    k: int,
    loss_fn: LossFn = mean_cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    divide: bool = True,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
    contrast: bool = True,
) -> Checked:
    """Gradient accumulation imitates a k-times larger batch: one copy of the model steps on k
    micro-batches of each batch (loss/k each, ``divide=False``: the loss as it is), the other on
    the whole batch; after ``len(batches)`` steps their parameters agree to the dtype's rounding.

    Holds for a model without BatchNorm, with ``divide``, and with a loss that is a mean over
    equally many terms per micro-batch; undivided the accumulated gradient is k times the large
    batch's (the check then fails, with the gap). With ``contrast`` (and ``divide``) that broken side
    runs too and must be beyond the bound (k=1 cannot tell them apart). With BatchNorm see
    :func:`accumulation_with_batchnorm`; with a per-token mean over micro-batches of unequal token
    counts see :func:`trainclaims.checks.token_accumulation`."""
    numerics = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "accumulation")
    optimizer_fn = optimizer_fn or sgd()
    (accumulated, claim_dtype), (large, _) = (build(model_fn, device, dtype, numerics) for _ in range(2))
    require_no_dropout(large, "accumulation")
    require_no_batchnorm(large, "accumulation", "checks.accumulation_with_batchnorm measures what it does instead")
    data = batches_on(batches, device, large)
    micro = [split(b, k) for b in data]  # a k that does not divide: a usage error, before any step
    opt_a, opt_l = optimizer_fn(accumulated.parameters()), optimizer_fn(large.parameters())
    runs = (
        train(accumulated, opt_a, micro, loss_fn, numerics, device, divide=divide),
        train(large, opt_l, [[b] for b in data], loss_fn, numerics, device),
    )
    gap = parameter_gap(accumulated.parameters(), large.parameters())
    worst, worst_gap = diverged(accumulated, large)
    hint = f"the parameter that parted most: {worst} ({worst_gap:.3g}); likely: " + (
        "the loss is not divided by k" if not divide else likely_cause(large, opt_l, worst)
    )
    broken = None
    if contrast and divide:
        undivided = build(model_fn, device, dtype, numerics)[0]
        train(undivided, optimizer_fn(undivided.parameters()), micro, loss_fn, numerics, device, divide=False)
        broken = parameter_gap(undivided.parameters(), large.parameters())
    return Checked(
        "accumulation",
        f"{k} micro-batches {'with loss/k' if divide else 'with the loss undivided'} equal one batch "
        f"{k} times larger after {len(data)} steps",
        "equal",
        gap,
        rtol(claim_dtype),
        {
            "k": k,
            "steps": len(data),
            "batch": batch_size(data[0]),
            "divide": divide,
            "dtype": str(claim_dtype),
            "device": device,
            "batchnorm_layers": len(batchnorms(large)),
            "scaler_skips": [r.skipped for r in runs],
        },
        numerics,
        claim_dtype,
        broken=broken,
        broken_recipe="the loss not divided by k",
        hint=hint,
    )


@keyword_only(2, "k")
def accumulation_with_batchnorm(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    k: int,
    loss_fn: LossFn = mean_cross_entropy,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
    min_gap: float = BATCHNORM_MIN_GAP,
) -> Checked:
    """Accumulation does not fix BatchNorm: each micro-batch is normalized with its own statistics,
    so the gradient accumulated over k micro-batches of each batch (loss/k) differs from the large
    batches' by more than ``min_gap`` (relative), and every BN layer's running statistics take k
    updates a batch instead of one."""
    numerics = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "accumulation_with_batchnorm")
    (accumulated, claim_dtype), (large, _) = (build(model_fn, device, dtype, numerics) for _ in range(2))
    if not batchnorms(large):
        raise Misuse("accumulation_with_batchnorm: the model has no BatchNorm layer")
    require_no_dropout(large, "accumulation_with_batchnorm")  # else the gradients differ by the masks alone
    data = batches_on(batches, device, large)
    micro = [split(b, k) for b in data]  # a k that does not divide: a usage error, before any work
    for model, steps in ((accumulated, micro), (large, [[b] for b in data])):
        model.train()
        step_loss = ModeLoss(model, loss_fn, numerics, device)
        for parts in steps:
            for part in parts:
                (step_loss(part) / len(parts)).backward()
    gap = relative_gap(
        [p.grad for p in accumulated.parameters() if p.grad is not None],
        [p.grad for p in large.parameters() if p.grad is not None],
    )
    updates = [int(m.num_batches_tracked) for m in batchnorms(accumulated)]
    large_updates = [int(m.num_batches_tracked) for m in batchnorms(large)]
    result = Checked(
        "accumulation_with_batchnorm",
        f"with BatchNorm, {k} micro-batches (loss/k) give a different gradient than one batch {k} times larger",
        "differs",
        gap,
        min_gap,
        {
            "k": k,
            "batch": batch_size(data[0]),
            "batches": len(data),
            "dtype": str(claim_dtype),
            "device": device,
            "running_stat_updates": updates,
            "large_batch_updates": large_updates,
        },
        numerics,
        claim_dtype,
    )
    n = len(data)
    if any(u != k * n for u in updates) or any(u != n for u in large_updates):
        result.refute(f"running statistics took {updates} updates over {n} batches (expected {k * n} each)")
    return result
