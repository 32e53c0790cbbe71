"""Scaling a model's inputs: the reparametrization that undoes it, and the gradient it scales."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    batch_list,
    batches_on,
    build,
    keyword_only,
    parameter_gap,
    relative_gap,
    rtol,
)
from trainclaims.checks.preconditions import mean_cross_entropy
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import Batch, LossFn, ModeLoss, train


def first_layer(model: nn.Module) -> nn.Module:
    """The first Linear or Conv layer in the model's module order: the one the inputs enter."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            return m
    raise Misuse(f"no Linear or Conv layer in {type(model).__name__}: pass layer= (the layer the inputs enter)")


@keyword_only(2, "s")
def reparametrization(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    s: float,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    loss_fn: LossFn = mean_cross_entropy,
    layer: Callable[[nn.Module], nn.Module] = first_layer,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
    contrast: bool = True,
) -> Checked:
    """Scaling the inputs by ``s`` changes nothing when the first layer's weight is divided by s, its
    learning rate by s² and its weight decay multiplied by s² (SGD with momentum): the scaled
    model's first-layer weight times s, its other parameters and each step's loss follow the
    original's trajectory to rounding. With the learning rate divided by s only they do not: with
    ``contrast`` that broken side trains too and must be beyond the bound (``s=1`` cannot tell)."""
    batches = batch_list(batches, "reparametrization")
    numerics = get(numerics)  # parsed once, where it enters
    (base, dt), (scaled, _) = (build(model_fn, device, dtype, numerics) for _ in range(2))
    w_base, w_scaled = layer(base).weight, layer(scaled).weight
    with torch.no_grad():
        w_scaled.div_(s)

    def groups(model: nn.Module, w: nn.Parameter, scale: float, lr_power: int = 2) -> list[dict[str, Any]]:
        rest = [p for p in model.parameters() if p is not w]
        return [
            {"params": [w], "lr": lr / scale**lr_power, "weight_decay": weight_decay * scale**2},
            {"params": rest, "lr": lr, "weight_decay": weight_decay},
        ]

    # the defaults given too: an optimizer that ignored the groups' settings would apply these to the
    # first layer as well, unscaled, and the trajectories would part (with no defaults both runs would
    # lose the groups' weight decay alike, and still agree)
    opt_base = torch.optim.SGD(groups(base, w_base, 1.0), lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt_scaled = torch.optim.SGD(groups(scaled, w_scaled, s), lr=lr, momentum=momentum, weight_decay=weight_decay)
    data = batches_on(batches, device, base)
    base_run = train(base, opt_base, [[b] for b in data], loss_fn, numerics, device)
    scaled_run = train(scaled, opt_scaled, [[(x * s, y)] for x, y in data], loss_fn, numerics, device)
    losses, scaled_losses = base_run.losses, scaled_run.losses
    loss_gap = max(abs(a - b) / abs(a) if a else abs(b) for a, b in zip(losses, scaled_losses, strict=True))
    rest_base = [p for p in base.parameters() if p is not w_base]
    rest_scaled = [p for p in scaled.parameters() if p is not w_scaled]
    gap_w = relative_gap([w_scaled * s], [w_base])
    gap_rest = parameter_gap(rest_scaled, rest_base) if rest_base else 0.0
    broken = None
    if contrast:
        wrong = build(model_fn, device, dtype, numerics)[0]
        w_wrong = layer(wrong).weight
        with torch.no_grad():
            w_wrong.div_(s)
        opt = torch.optim.SGD(groups(wrong, w_wrong, s, 1), lr=lr, momentum=momentum, weight_decay=weight_decay)
        train(wrong, opt, [[(x * s, y)] for x, y in data], loss_fn, numerics, device)
        broken = relative_gap([w_wrong * s], [w_base])
    return Checked(
        "reparametrization",
        f"inputs x{s:g} with the first layer's W/{s:g}, lr/{s:g}^2 and weight decay x{s:g}^2 follow the "
        f"same trajectory for {len(data)} steps",
        "equal",
        max(gap_w, gap_rest, loss_gap),
        rtol(dt),
        {
            "s": s,
            "steps": len(data),
            "first_layer_gap": gap_w,
            "other_parameters_gap": gap_rest,
            "loss_gap": loss_gap,  # the largest relative gap of a step's loss
            "scaler_skips": [base_run.skipped, scaled_run.skipped],
            "dtype": str(dt),
            "device": device,
        },
        numerics,
        dt,
        broken=broken,
        broken_recipe=f"the first layer's lr/{s:g} instead of /{s:g}^2",
    )


@keyword_only(2, "s")
def gradient_scaling(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    s: float,
    loss_fn: LossFn = mean_cross_entropy,
    layer: Callable[[nn.Module], nn.Module] = first_layer,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """For the same function (inputs x s, the first layer's weight / s) the first layer's weight
    gradient is s times larger, every other gradient unchanged (gradients summed over ``batches``):
    why inputs in [0, 255] need the first layer's learning rate divided by s²."""
    mode = get(numerics)  # parsed once, where it enters
    batches = batch_list(batches, "gradient_scaling")
    if s == 1:
        raise Misuse("gradient_scaling: s=1 scales nothing: the claim compares a gradient with s times it")
    (base, dt), (scaled, _) = (build(model_fn, device, dtype, mode) for _ in range(2))
    with torch.no_grad():
        layer(scaled).weight.div_(s)
    base.train(), scaled.train()
    base_loss, scaled_loss = ModeLoss(base, loss_fn, mode, device), ModeLoss(scaled, loss_fn, mode, device)
    for x, y in batches_on(batches, device, base):
        base_loss((x, y)).backward()
        scaled_loss((x * s, y)).backward()
    g_base, g_scaled = layer(base).weight.grad, layer(scaled).weight.grad
    ratio = (g_scaled.norm() / g_base.norm()).item()
    rest = [
        (a.grad, b.grad)
        for a, b in zip(scaled.parameters(), base.parameters(), strict=True)
        if a is not layer(scaled).weight and a.grad is not None
    ]
    gap_rest = parameter_gap([a for a, _ in rest], [b for _, b in rest]) if rest else 0.0
    gap = max(relative_gap([g_scaled], [g_base * s]), gap_rest)
    return Checked(
        "gradient_scaling",
        f"the first layer's weight gradient is x{s:g} for inputs x{s:g} (weights /{s:g}); other gradients unchanged",
        "equal",
        gap,
        rtol(dt),
        {"s": s, "norm_ratio": ratio, "other_gradients_gap": gap_rest, "dtype": str(dt), "device": device},
        mode,
        dt,
    )


__all__ = ["first_layer", "gradient_scaling", "reparametrization"]
