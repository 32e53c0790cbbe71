"""Weight averaging (``torch.optim.swa_utils.AveragedModel``) of a model with BatchNorm.

``AveragedModel(model)`` averages the parameters; with ``use_buffers=False`` (the default) its
BatchNorm buffers are the source model's, copied at each ``update_parameters``: statistics of the
source's weights, not of the averaged ones (``update_bn`` recomputes those with a pass over the
data). With ``use_buffers=True`` the buffers are averaged like the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
    sgd,
)
from trainclaims.modes import REFERENCE, Mode, get
from trainclaims.step import Batch, LossFn, Step, forward

Averager = Callable[[nn.Module], Any]  # model -> an AveragedModel-like (update_parameters, .module)


def averaged_model(model: nn.Module, use_buffers: bool = False) -> Any:
    """``torch.optim.swa_utils.AveragedModel(model, use_buffers=...)`` (the default averager)."""
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, use_buffers=use_buffers)


def _running(model: nn.Module) -> list[torch.Tensor]:
    return [t for bn in batchnorms(model) for t in (bn.running_mean, bn.running_var) if t is not None]


def averaged_batchnorm(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    use_buffers: bool = False,
    start: int = 1,
    loss_fn: LossFn = F.cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    averager: Averager | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: Mode | str = REFERENCE,
) -> Checked:
    """Train the model one step per batch and average it from step ``start`` on. With
    ``use_buffers=False``: the averaged model's BatchNorm running statistics are the source's, bit
    for bit (gap 0), and differ from the statistics ``update_bn`` computes for the averaged weights
    (``values["update_bn_gap"]``: what a loop that skips ``update_bn`` evaluates with). With
    ``use_buffers=True``: they are the average of the source's statistics over the averaged steps
    (equal within the dtype's tolerance). ``averager`` makes the averaged model (default
    ``AveragedModel(model, use_buffers=...)``). ValueError for a model without BatchNorm."""
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.9)
    mode = get(numerics)
    model, claim_dtype = build(model_fn, device, dtype, mode)
    if not batchnorms(model):
        raise ValueError("averaged_batchnorm: the model has no BatchNorm layer")
    averaged = (averager or (lambda m: averaged_model(m, use_buffers)))(model)
    step = Step(model, optimizer_fn(model.parameters()), loss_fn, mode, device)
    data = batches_on(batches, device, model)
    snapshots: list[list[torch.Tensor]] = []
    for i, batch in enumerate(data):
        model.train()
        step([batch])
        if i + 1 >= start:
            averaged.update_parameters(model)
            snapshots.append([t.detach().clone() for t in _running(model)])
    if not snapshots:
        raise ValueError(f"averaged_batchnorm: start={start} is past the {len(data)} batches")
    kept = [t.detach().clone() for t in _running(averaged.module)]
    source = _running(model)
    mean_of_snapshots = [torch.stack(ts).double().mean(0) for ts in zip(*snapshots, strict=True)]
    recomputed = _update_bn(averaged.module, data)
    if use_buffers:
        gap, expect, bound = relative_gap(kept, mean_of_snapshots), "equal", rtol(claim_dtype)
        claim = "with use_buffers=True the averaged model's BatchNorm statistics are the average of the source's"
    else:
        gap, expect, bound = relative_gap(kept, source), "exact", 0.0
        claim = (
            "with use_buffers=False the averaged model's BatchNorm statistics are the source model's, "
            "not those of the averaged weights"
        )
    return Checked(
        "averaged_batchnorm",
        claim,
        expect,
        gap,
        bound,
        {
            "use_buffers": use_buffers,
            "averaged_steps": len(snapshots),
            "gap_to_source": relative_gap(kept, source),
            "gap_to_mean_of_source": relative_gap(kept, mean_of_snapshots),
            "update_bn_gap": relative_gap(kept, recomputed),
            "weights_moved": relative_gap(list(model.parameters()), list(averaged.module.parameters())),
            "device": device,
            "dtype": str(claim_dtype),
        },
        mode,
        claim_dtype,
    )


def _update_bn(module: nn.Module, data: Sequence[Batch]) -> list[torch.Tensor]:
    """The running statistics ``torch.optim.swa_utils.update_bn`` computes for ``module``'s weights
    (a pass over ``data``, cumulative average), on a copy: ``module`` keeps its own."""
    import copy

    clone = copy.deepcopy(module)
    for bn in batchnorms(clone):
        bn.reset_running_stats()
        bn.momentum = None
    clone.train()
    with torch.no_grad():
        for batch in data:
            forward(clone, batch)
    return [t.detach().clone() for t in _running(clone)]


__all__ = ["averaged_batchnorm", "averaged_model"]
