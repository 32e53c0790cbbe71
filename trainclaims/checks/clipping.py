"""Gradient clipping: under a GradScaler, and over FSDP2-sharded parameters.

Under fp16 autocast the gradients a GradScaler leaves after ``backward()`` are the true ones times
the scale (2^16 at first). ``clip_grad_norm_`` after ``scaler.unscale_(optimizer)`` sees the true
norm, as float32 training does; before it, it compares the scale times the norm with the limit, so
nearly every step is clipped and shrunk by the scale (PyTorch's AMP examples, "Gradient clipping").

Over FSDP2 (``fully_shard``) each rank holds a shard of every gradient; ``clip_grad_norm_`` on the
sharded parameters must return the *global* norm (the same on every rank, one process's norm on the
whole model), not the norm of the rank's own shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    OptimizerFactory,
    batches_on,
    build,
    for_ranks,
    relative_gap,
    rtol,
    sgd,
)
from trainclaims.modes import REFERENCE, Mode, get
from trainclaims.step import Batch, LossFn, ModeLoss, Step, shard

ClipFn = Callable[[Iterable[torch.Tensor], float], Any]  # clip_grad_norm_(parameters, max_norm) -> norm

# How far the norm clip_grad_norm_ sees in a mode may be from float32's, relative, where the loop
# clips the true gradients. Measured (CPU, torch 2.14.1, MLP 16-64-64-4, batches of 32, max_norm 0.1
# (every step clipped), SGD lr 0.1, seeds 0-9, the first step): fp16-autocast after unscale_ 5.0e-5 -
# 4.7e-4, bf16-autocast up to 1.3e-3; before unscale_ the ratio is 6.551e4-6.554e4 (the initial scale
# 2^16) and the parameters move 1.5e-5-1.6e-5 of float32's way (after unscale_: 0.9991-1.0001).
# (torch 2.6.0 and 2.15.0 gave the same to every digit on the same probe with max_norm 0.5.)
CLIP_NORM_MAX_GAP = 1e-2


def _norm(value: Any) -> float:
    """A norm clip_grad_norm_ returned, as a float: a DTensor's full value (FSDP2), a tensor's."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> Any:
    """``torch.nn.utils.clip_grad_norm_`` (the default clip of the checks here)."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def clipping_under_scaler(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    max_norm: float,
    loss_fn: LossFn = F.cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    numerics: Mode | str = "fp16-autocast",
    unscale: bool = True,
    clip_fn: ClipFn = clip_grad_norm,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """Clipping in ``numerics`` (fp16-autocast: through its GradScaler) clips what float32 training
    clips: the norm ``clip_fn`` sees at the first step is float32's (relative gap within
    :data:`CLIP_NORM_MAX_GAP`). ``unscale=True`` clips after ``scaler.unscale_(optimizer)`` (the
    recipe); ``unscale=False`` clips the scaled gradients, as a loop that forgets ``unscale_`` does:
    the norm is the scale times float32's and the check fails with it. One copy trains in the mode,
    one in float32 (ieee), both clipping at ``max_norm`` each step; the numbers include each step's
    norm ratio, the clipped share of steps and the ratio of the two copies' parameter changes. Use
    SGD (the default, no momentum): Adam divides by its own running RMS and hides most of a
    per-step factor."""
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.0)
    runs: dict[str, dict[str, Any]] = {}
    for name, mode, scaled in (("reference", REFERENCE, True), ("mode", numerics, unscale)):
        model, claim_dtype = build(model_fn, device, dtype, mode)
        start = [p.detach().clone() for p in model.parameters()]
        step = Step(model, optimizer_fn(model.parameters()), loss_fn, mode, device, unscale=scaled)
        norms: list[float] = []

        def clip(model: nn.Module = model, norms: list[float] = norms) -> None:
            norms.append(_norm(clip_fn(model.parameters(), max_norm)))

        for batch in batches_on(batches, device, model):
            step([batch], before_step=clip)
        moved = [p.detach() - s for p, s in zip(model.parameters(), start, strict=True)]
        runs[name] = {"norms": norms, "moved": moved, "skipped": step.skipped, "dtype": claim_dtype}
    ref, got = runs["reference"], runs["mode"]
    ratios = [g / r if r else float("inf") for g, r in zip(got["norms"], ref["norms"], strict=True)]
    moved_ref = torch.cat([m.double().flatten() for m in ref["moved"]]).norm().item()
    moved_got = torch.cat([m.double().flatten() for m in got["moved"]]).norm().item()
    recipe = "after scaler.unscale_" if unscale else "before scaler.unscale_ (on the scaled gradients)"
    return Checked(
        "clipping_under_scaler",
        f"clip_grad_norm_ {recipe} in {get(numerics).name} sees float32's gradient norm",
        "equal",
        abs(ratios[0] - 1),
        CLIP_NORM_MAX_GAP,
        {
            "max_norm": max_norm,
            "unscale": unscale,
            "norm_ratio_per_step": ratios,
            "float32_norms": ref["norms"],
            "clipped_steps": sum(n > max_norm for n in got["norms"]),
            "float32_clipped_steps": sum(n > max_norm for n in ref["norms"]),
            "update_ratio": moved_got / moved_ref if moved_ref else float("inf"),
            "update_gap": relative_gap(got["moved"], ref["moved"]),
            "steps": len(batches),
            "device": device,
            "scaler_skips": [got["skipped"]],
        },
        numerics,
        got["dtype"],
    )


# --------------------------------------------------------------------------- over FSDP2 shards


def fsdp2() -> tuple[Any, str | None]:
    """(FSDP2's ``fully_shard``, None), or (None, why this torch has none)."""
    try:
        from torch.distributed.fsdp import fully_shard  # torch 2.6+

        return fully_shard, None
    except ImportError:
        pass
    try:
        from torch.distributed._composable.fsdp import fully_shard  # torch 2.4-2.5

        return fully_shard, None
    except ImportError:
        return None, f"torch {torch.__version__} has no FSDP2 fully_shard (torch 2.4+)"


def shard_children(model: nn.Module, fully_shard: Callable[..., Any], mesh: Any) -> nn.Module:
    """FSDP2 as the docs apply it: ``fully_shard`` on each child that holds parameters, then on the
    root (the default ``shard`` of :func:`fsdp_clip_norm_rank`)."""
    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def fsdp_clip_norm_rank(
    rank: int,
    world: int,
    model_fn: ModelFactory,
    batch: Batch,
    loss_fn: LossFn = F.cross_entropy,
    max_norm: float = 0.1,
    numerics: Mode | str = REFERENCE,
    device: str | torch.device = "cpu",
    clip_fn: ClipFn = clip_grad_norm,
    shard_fn: Callable[[nn.Module, Callable[..., Any], Any], nn.Module] = shard_children,
) -> dict[str, Any]:
    """One rank of :func:`fsdp_clip_norm`: the model sharded with FSDP2 (``shard_fn``) over the
    ranks on ``device``'s type, its loss on this rank's shard of the batch, ``clip_fn`` on the
    sharded parameters; against one process on the whole batch, clipped with
    ``clip_grad_norm_``. Returns the norm each returned and the gap of the clipped gradients
    (gathered from their shards), or ``{"unsupported": why}`` where this torch has no FSDP2."""
    fully_shard, why = fsdp2()
    if fully_shard is None:
        return {"unsupported": why}
    from torch.distributed.device_mesh import init_device_mesh

    device = str(device)
    mesh = init_device_mesh(torch.device(device).type, (world,))
    (model, claim_dtype), (reference, _) = (build(model_fn, device, None, numerics) for _ in range(2))
    model = shard_fn(model, fully_shard, mesh)
    (whole,) = batches_on([batch], device, reference)
    ModeLoss(model, loss_fn, numerics, device)(shard(whole, rank, world)).backward()
    ModeLoss(reference, loss_fn, numerics, device)(whole).backward()
    norm = _norm(clip_fn(model.parameters(), max_norm))
    reference_norm = _norm(clip_grad_norm(reference.parameters(), max_norm))
    grads = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in model.parameters()]
    return {
        "norm": norm,
        "reference_norm": reference_norm,
        "grad_gap": relative_gap(grads, [p.grad for p in reference.parameters()]),
        "local_fraction": sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        / sum(p.numel() for p in reference.parameters()),
        "dtype": str(claim_dtype),
        "numerics": str(numerics),
        "max_norm": max_norm,
    }


def fsdp_clip_norm_verdict(results: Sequence[dict[str, Any]], bound: float | None = None) -> Checked:
    """The claim of :func:`fsdp_clip_norm` judged on its ranks' results (of
    :func:`fsdp_clip_norm_rank`): every rank's returned norm is one process's (within ``bound``,
    default the dtype's tolerance), the ranks return the same norm, and the clipped gradients are
    one process's. ValueError where a rank had no FSDP2 (``{"unsupported": ...}``)."""
    first = results[0]
    if "unsupported" in first:
        raise ValueError(first["unsupported"])
    ref = first["reference_norm"]
    norm_gaps = [abs(r["norm"] - r["reference_norm"]) / r["reference_norm"] for r in results]
    grad_gap = max(r["grad_gap"] for r in results)
    norms = [r["norm"] for r in results]
    result = Checked(
        "fsdp_clip_norm",
        f"clip_grad_norm_ over FSDP2 shards on {len(results)} ranks returns the global norm (one process's) and clips "
        "the gradients as one process does",
        "equal",
        max([*norm_gaps, grad_gap]),
        rtol(first["dtype"]) if bound is None else bound,
        {
            "world": len(results),
            "norms": norms,
            "one_process_norm": ref,
            "norm_ratio": norms[0] / ref if ref else float("inf"),
            "clipped_grad_gap": grad_gap,
            "local_fraction": [r["local_fraction"] for r in results],
            "max_norm": first["max_norm"],
            "dtype": first["dtype"],
        },
        first["numerics"],
        first["dtype"],
    )
    if len(set(norms)) > 1:
        result.refute(f"the ranks returned different norms ({', '.join(f'{n:.6g}' for n in norms)})")
    return result


def fsdp_clip_norm(
    model_fn: ModelFactory,
    batch: Batch,
    *,
    max_norm: float = 0.1,
    world: int = 2,
    loss_fn: LossFn = F.cross_entropy,
    numerics: Mode | str = REFERENCE,
    clip_fn: ClipFn = clip_grad_norm,
    bound: float | None = None,
) -> Checked:
    """``clip_grad_norm_`` over FSDP2 (``fully_shard`` on each child with parameters and on the
    root) on ``world`` gloo ranks (CPU processes) returns the global norm: every rank the same, one
    process's on the whole model and batch; the clipped gradients are one process's. ``clip_fn``
    is the clip under test (a hand-rolled one that takes the norm of the rank's own shards fails).
    ``model_fn``, ``loss_fn`` and ``clip_fn`` must be picklable. The ranks run
    :func:`fsdp_clip_norm_rank`; :func:`fsdp_clip_norm_verdict` judges them."""
    from trainclaims.ranks import run_ranks

    (whole,) = for_ranks([batch], world)
    args = (model_fn, whole, loss_fn, max_norm, numerics, "cpu", clip_fn)
    return fsdp_clip_norm_verdict(run_ranks(fsdp_clip_norm_rank, world, *args, mode=str(numerics)), bound)


__all__ = [
    "CLIP_NORM_MAX_GAP",
    "clip_grad_norm",
    "clipping_under_scaler",
    "fsdp2",
    "fsdp_clip_norm",
    "fsdp_clip_norm_rank",
    "fsdp_clip_norm_verdict",
    "shard_children",
]
