"""BatchNorm in eval mode and its running statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainclaims.checks.base import Checked, ModelFactory, batchnorms, build, relative_gap, rtol
from trainclaims.errors import Misuse


def batchnorm_eval(
    model_fn: ModelFactory,
    train_batches: Sequence[torch.Tensor],
    x: torch.Tensor,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """In eval mode BatchNorm normalizes with its running statistics: after forward passes in
    training mode over ``train_batches``, each BN layer's eval output equals
    ``(input - running_mean) / sqrt(running_var + eps) * weight + bias`` computed by hand from its
    own input, and a sample's output does not depend on the rest of its batch (the model's output
    for ``x[:1]`` alone equals its row in the output for ``x``)."""
    model, dt = build(model_fn, device, dtype)
    bns = batchnorms(model)
    if not bns:
        raise ValueError("batchnorm_eval: the model has no BatchNorm layer")
    if any(m.running_mean is None for m in bns):
        raise ValueError("batchnorm_eval: a BatchNorm layer keeps no running statistics (track_running_stats=False)")
    model.train()
    with torch.no_grad():
        for xb in train_batches:
            model(xb.to(device=device, dtype=dt))
    model.eval()
    gaps: list[float] = []

    def by_hand(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        (inp,) = inputs
        shape = [1, -1] + [1] * (inp.dim() - 2)
        want = (inp - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
        if module.affine:
            want = want * module.weight.view(shape) + module.bias.view(shape)
        gaps.append(relative_gap([output], [want]))

    hooks = [m.register_forward_hook(by_hand) for m in bns]
    try:
        with torch.no_grad():
            xd = x.to(device=device, dtype=dt)
            full = model(xd)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        alone = model(xd[:1])
    batch_gap = relative_gap([full[:1]], [alone])
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
    )


def running_statistics(
    model_fn: ModelFactory,
    batches: Sequence[torch.Tensor],
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """BatchNorm's running statistics are an EMA of the batch statistics, computed by hand from each
    BN layer's own inputs over training-mode forward passes: ``running = (1 - m) * running + m *
    observed`` with the batch mean and the *unbiased* batch variance (``momentum=None``: the
    cumulative average). The biased-variance reading is the broken side (``broken``): it must be
    beyond the bound, evidence that the check tells the two apart."""
    model, dt = build(model_fn, device, dtype)
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
    try:
        with torch.no_grad():
            for xb in batches:
                model(xb.to(device=device, dtype=dt))
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
        broken=biased_gap,
        broken_recipe="the EMA of the biased variance",
    )


__all__ = ["batchnorm_eval", "running_statistics"]
