"""Weight averaging (``torch.optim.swa_utils.AveragedModel``) of a model with BatchNorm.

``AveragedModel(model)`` averages the parameters; with ``use_buffers=False`` (the default) its
BatchNorm buffers are the source model's, copied at each ``update_parameters``: statistics of the
source's weights, not of the averaged ones (``update_bn`` recomputes those with a pass over the
data). With ``use_buffers=True`` the buffers are averaged like the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    OptimizerFactory,
    batches_on,
    batchnorms,
    build,
    relative_gap,
    rtol,
    running_stats,
    sgd,
)
from trainclaims.checks.preconditions import mean_cross_entropy
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import LABELS, Batch, LossFn, Step

Averager = Callable[[nn.Module], Any]  # model -> an AveragedModel-like (update_parameters, .module)


def averaged_model(model: nn.Module, use_buffers: bool = False) -> Any:
    """``torch.optim.swa_utils.AveragedModel(model, use_buffers=...)`` (the default averager)."""
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, use_buffers=use_buffers)


def averaged_batchnorm(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    use_buffers: bool = False,
    start: int = 1,
    loss_fn: LossFn = mean_cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    averager: Averager | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """Train the model one step per batch and average it from step ``start`` on. The averaged
    model's parameters must be the average of the source's over the averaged steps (within the
    dtype's tolerance) in either case. With ``use_buffers=False``: its BatchNorm running statistics
    are the source's, bit for bit (gap 0), and differ from those ``torch.optim.swa_utils.update_bn``
    computes for the averaged weights (``values["update_bn_gap"]``, the broken side: what a loop
    that forgets update_bn evaluates with is not that). With ``use_buffers=True``: they are the
    average of the source's statistics over the averaged steps (equal within the dtype's
    tolerance; the broken side: the source's own). ``averager`` makes the averaged model (default
    ``AveragedModel(model, use_buffers=...)``). Misuse for a model without BatchNorm or a ``start``
    past the batches."""
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.9)
    mode = get(numerics)
    model, claim_dtype = build(model_fn, device, dtype, mode)
    if not batchnorms(model):
        raise Misuse("averaged_batchnorm: the model has no BatchNorm layer")
    if start > len(batches):
        raise Misuse(f"averaged_batchnorm: start={start} is past the {len(batches)} batches")
    averaged = (averager or (lambda m: averaged_model(m, use_buffers)))(model)
    step = Step(model, optimizer_fn(model.parameters()), loss_fn, mode, device)
    data = batches_on(batches, device, model)
    snapshots: list[list[torch.Tensor]] = []
    weights: list[list[torch.Tensor]] = []
    for i, batch in enumerate(data):
        model.train()
        step([batch])
        if i + 1 >= start:
            averaged.update_parameters(model)
            snapshots.append([t.detach().clone() for t in running_stats(model)])
            weights.append([p.detach().clone() for p in model.parameters()])
    kept = [t.detach().clone() for t in running_stats(averaged.module)]
    source = running_stats(model)
    mean_of_snapshots = [torch.stack(ts).double().mean(0) for ts in zip(*snapshots, strict=True)]
    mean_of_weights = [torch.stack(ps).double().mean(0) for ps in zip(*weights, strict=True)]
    weights_gap = relative_gap(list(averaged.module.parameters()), mean_of_weights)
    recomputed = _update_bn(averaged.module, data)
    if use_buffers:
        gap, expect, bound = relative_gap(kept, mean_of_snapshots), "equal", rtol(claim_dtype)
        broken, recipe = relative_gap(source, mean_of_snapshots), "the source model's statistics"
        claim = "with use_buffers=True the averaged model's BatchNorm statistics are the average of the source's"
    else:
        gap, expect, bound = relative_gap(kept, source), "exact", 0.0
        broken, recipe = relative_gap(recomputed, source), "the statistics update_bn computes for the averaged weights"
        claim = (
            "with use_buffers=False the averaged model's BatchNorm statistics are the source model's, "
            "not those of the averaged weights"
        )
    result = Checked(
        "averaged_batchnorm",
        claim,
        expect,
        gap,
        bound,
        {
            "use_buffers": use_buffers,
            "averaged_steps": len(snapshots),
            "averaged_weights_gap": weights_gap,
            "gap_to_source": relative_gap(kept, source),
            "gap_to_mean_of_source": relative_gap(kept, mean_of_snapshots),
            "update_bn_gap": relative_gap(kept, recomputed),
            "weights_moved": relative_gap(list(model.parameters()), list(averaged.module.parameters())),
            "device": device,
            "dtype": str(claim_dtype),
        },
        mode,
        claim_dtype,
        broken=broken,
        broken_recipe=recipe,
    )
    weights_bound = mode.bound(str(claim_dtype))
    allowed = rtol(claim_dtype) if mode.reference or weights_bound is None else weights_bound.value
    if weights_gap > allowed:
        result.refute(f"the averaged parameters are not the average of the source's (gap {weights_gap:.3g})")
    return result


class _Batches(nn.Module):
    """``module`` called on a batch as :func:`trainclaims.step.forward` calls a model (a mapping's
    named inputs), for ``update_bn``, which calls its model on each batch's inputs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, inputs: Any) -> Any:
        return self.module(**inputs) if isinstance(inputs, Mapping) else self.module(inputs)


def _update_bn(module: nn.Module, data: Sequence[Batch]) -> list[torch.Tensor]:
    """The running statistics ``torch.optim.swa_utils.update_bn`` computes for ``module``'s weights
    (a pass over ``data``, cumulative average), on a copy: ``module`` keeps its own."""
    import copy

    from torch.optim import swa_utils

    clone = copy.deepcopy(module)
    inputs = [{k: v for k, v in b.items() if k != LABELS} if isinstance(b, Mapping) else (b[0],) for b in data]
    swa_utils.update_bn(inputs, _Batches(clone))
    return [t.detach().clone() for t in running_stats(clone)]


__all__ = ["averaged_batchnorm", "averaged_model"]
