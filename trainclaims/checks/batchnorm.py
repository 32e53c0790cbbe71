"""BatchNorm in eval mode and its running statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims import numerics as num
from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    batch_list,
    batches_on,
    batchnorms,
    build,
    call,
    inputs_of,
    keyword_only,
    relative_gap,
    rtol,
)
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import Batch


@keyword_only(2, "inputs")
def batchnorm_eval(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    inputs: Any = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """In eval mode BatchNorm normalizes with its running statistics: after forward passes in
    training mode over the inputs of ``batches`` (pairs, mappings or bare inputs), each BN layer's
    eval output equals ``(input - running_mean) / sqrt(running_var + eps) * weight + bias`` computed
    by hand from its own input, and a sample's output does not depend on the rest of its batch (the
    model's output for the first sample alone equals its row in the output for all of ``inputs``:
    default, the last batch's inputs)."""
    mode = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "batchnorm_eval", targets=False)
    model, dt = build(model_fn, device, dtype, mode)
    bns = batchnorms(model)
    if not bns:
        raise Misuse("batchnorm_eval: the model has no BatchNorm layer")
    if any(m.running_mean is None for m in bns):
        raise Misuse("batchnorm_eval: a BatchNorm layer keeps no running statistics (track_running_stats=False)")
    run = num.compiled(model, mode)
    model.train()
    with torch.no_grad(), num.autocast(mode, device):
        for batch in batches_on(batches, device, model):
            call(run, inputs_of(batch))
    model.eval()
    gaps: list[float] = []

    def by_hand(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        (inp,) = args
        shape = [1, -1] + [1] * (inp.dim() - 2)
        want = (inp - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
        if module.affine:
            want = want * module.weight.view(shape) + module.bias.view(shape)
        gaps.append(relative_gap([output], [want]))

    (probe,) = batches_on([batches[-1] if inputs is None else inputs], device, model)
    xd = inputs_of(probe)
    hooks = [m.register_forward_hook(by_hand) for m in bns]
    try:
        with torch.no_grad(), num.autocast(mode, device):
            full = call(run, xd)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad(), num.autocast(mode, device):
        alone = call(run, _first(xd))
    batch_gap = relative_gap([_first(full)], [alone])
    return Checked(
        "batchnorm_eval",
        "eval-mode BatchNorm uses the running statistics; a sample's output does not depend on its batch",
        "equal",
        max([*gaps, batch_gap]),
        rtol(dt),
        {
            "layers": len(bns),
            "layer_gaps": gaps,
            "batch_dependence": batch_gap,
            "dtype": str(dt),
            "device": device,
            "tracked": [int(m.num_batches_tracked) for m in bns],
        },
        mode,
        dt,
    )


def _first(inputs: Any) -> Any:
    """The first sample of a batch's inputs (or of a model's output), its batch dimension kept."""
    if isinstance(inputs, Mapping):
        return {k: v[:1] for k, v in inputs.items()}
    return inputs[:1]


def running_statistics(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """BatchNorm's running statistics are an EMA of the batch statistics, computed by hand from each
    BN layer's own inputs over training-mode forward passes: ``running = (1 - m) * running + m *
    observed`` with the batch mean and the *unbiased* batch variance (``momentum=None``: the
    cumulative average). The biased-variance reading is the broken side (``broken``): it must be
    beyond the bound, evidence that the check tells the two apart. Batches are pairs, mappings or
    bare inputs; in a numerics mode the forward passes run in it."""
    mode = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "running_statistics", targets=False)
    model, dt = build(model_fn, device, dtype, mode)
    bns = batchnorms(model)
    if not bns or any(m.running_mean is None for m in bns):
        raise Misuse("running_statistics: the model has no BatchNorm layer that keeps running statistics")
    by_hand = {
        id(m): {
            "mean": m.running_mean.detach().double().clone(),
            "var": m.running_var.detach().double().clone(),
            "biased": m.running_var.detach().double().clone(),
            "n": 0,
        }
        for m in bns
    }

    def follow(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        (inp,) = inputs
        dims = [d for d in range(inp.dim()) if d != 1]
        x = inp.detach().double()
        count = x.numel() // x.shape[1]
        mean, biased = x.mean(dims), x.var(dims, unbiased=False)
        state = by_hand[id(module)]
        state["n"] += 1
        m = module.momentum if module.momentum is not None else 1.0 / state["n"]
        state["mean"] = (1 - m) * state["mean"] + m * mean
        state["var"] = (1 - m) * state["var"] + m * biased * count / (count - 1)
        state["biased"] = (1 - m) * state["biased"] + m * biased

    hooks = [m.register_forward_hook(follow) for m in bns]
    model.train()
    run = num.compiled(model, mode)
    try:
        with torch.no_grad(), num.autocast(mode, device):
            for batch in batches_on(batches, device, model):
                call(run, inputs_of(batch))
    finally:
        for h in hooks:
            h.remove()
    mean_gap = max(relative_gap(m.running_mean, by_hand[id(m)]["mean"]) for m in bns)
    var_gap = max(relative_gap(m.running_var, by_hand[id(m)]["var"]) for m in bns)
    biased_gap = max(relative_gap(m.running_var, by_hand[id(m)]["biased"]) for m in bns)
    return Checked(
        "running_statistics",
        f"BatchNorm's running mean and variance follow the EMA of the batch mean and unbiased variance "
        f"over {len(batches)} training batches",
        "equal",
        max(mean_gap, var_gap),
        rtol(dt),
        {
            "layers": len(bns),
            "momentum": [m.momentum for m in bns],
            "mean_gap": mean_gap,
            "var_gap": var_gap,
            "biased_var_gap": biased_gap,
            "dtype": str(dt),
            "device": device,
        },
        mode=mode,
        dtype=dt,
        broken=biased_gap,
        broken_recipe="the EMA of the biased variance",
    )


__all__ = ["batchnorm_eval", "running_statistics"]
