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

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    OptimizerFactory,
    batch_list,
    batches_on,
    build,
    for_ranks,
    relative_gap,
    rtol,
    sgd,
)
from trainclaims.checks.preconditions import mean_cross_entropy
from trainclaims.known import FSDP2_ON_CPU, fully_shard_of_this_torch
from trainclaims.modes import FP16_AUTOCAST, REFERENCE, Mode, ModeLike, get
from trainclaims.ranks import run_ranks, with_keywords
from trainclaims.step import Batch, LossFn, ModeLoss, Step, shard

ClipFn = Callable[[Iterable[torch.Tensor], float], Any]  # clip_grad_norm_(parameters, max_norm) -> norm

# How far what clipping does in a mode may be from float32's, relative, where the loop clips the
# true gradients: the norm clip_grad_norm_ returns at the first step, and the norm of the first
# step's parameter change (made from the clipped gradients). Measured (CPU, torch 2.14.1, MLP
# 16-64-64-4, 10 batches of 32, max_norm 0.1 (every step clipped), SGD lr 0.1, seeds 0-9):
# fp16-autocast after unscale_: the norm 3.1e-6 - 7.0e-4, the first update's norm 1.6e-8 - 3.1e-7
# (the clipped gradients themselves differ by fp16's rounding, 3.7e-4 - 2.0e-2, not judged);
# before unscale_ the norm ratio is 6.551e4-6.556e4 (the initial scale 2^16), the first update
# 1/scale of float32's, and the parameters move 1.5e-5-1.6e-5 of float32's way over the run
# (after unscale_: 0.9991-1.0001). (torch 2.6.0 and 2.15.0 gave the same norms to every digit on
# the same probe with max_norm 0.5.)
CLIP_NORM_MAX_GAP = 1e-2
# clip_grad_norm_ scales the gradients by max_norm / (norm + 1e-6): after it their norm is
# max_norm to this relative precision (float32 rounding of the scaling; 1e-6 / norm for the eps).
CLIPPED_NORM_RTOL = 1e-3


def _norm(value: Any) -> float:
    """A norm clip_grad_norm_ returned, read as a user reads it: a tensor's value (``.item()``),
    a DTensor's value on this rank (``to_local()``: a rank-local, partial norm reads as what it
    is, not as the global one a collective would make of it)."""
    if hasattr(value, "to_local"):
        value = value.to_local()
    return float(value)


def grad_norm(parameters: Iterable[torch.Tensor]) -> float:
    """The total 2-norm of the parameters' gradients (sharded ones gathered: a collective on every
    rank), computed in float64: what clipping is defined on."""
    grads = [
        p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in parameters if p.grad is not None
    ]
    return math.sqrt(sum(float(g.detach().double().square().sum()) for g in grads))


def _norm_of(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> Any:
    """``torch.nn.utils.clip_grad_norm_`` (the default clip of the checks here)."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def _clipped_as_defined(before: float, returned: float, after: float, max_norm: float) -> str:
    """Why one clip did not do what clipping is (empty where it did): return the gradients' norm,
    and scale them to ``max_norm`` where that norm is above it."""
    if not math.isclose(returned, before, rel_tol=CLIPPED_NORM_RTOL):
        return f"it returned the norm {returned:.6g}, the gradients' norm was {before:.6g}"
    want = min(before, max_norm)
    if not math.isclose(after, want, rel_tol=CLIPPED_NORM_RTOL):
        return f"the gradients' norm was {before:.6g} (max_norm {max_norm:g}) and {after:.6g} after it, not {want:.6g}"
    return ""


def clipping_under_scaler(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    max_norm: float,
    loss_fn: LossFn = mean_cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    unscale: bool = True,
    clip_fn: ClipFn = clip_grad_norm,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = FP16_AUTOCAST,
    contrast: bool = True,
) -> Checked:
    """Clipping in ``numerics`` (a mode that trains through a GradScaler: fp16-autocast) clips what
    float32 training clips: at the first step the norm ``clip_fn`` returns and the gradients it
    leaves (what the update is made from) are float32's (relative gaps within
    :data:`CLIP_NORM_MAX_GAP`). ``unscale=True`` clips after ``scaler.unscale_(optimizer)`` (the
    recipe); ``unscale=False`` clips the scaled gradients, as a loop that forgets ``unscale_`` does:
    the norm is the scale times float32's and the check fails with it.

    One copy trains in the mode, one in float32 (ieee), both clipping at ``max_norm`` each step.
    What makes the comparison mean anything is checked too: in float32 ``clip_fn`` returned the
    gradients' norm and scaled them to ``max_norm`` wherever it was above (a clip that clips nothing
    fails the check), and at least one float32 step was clipped (else it measured nothing: choose a
    smaller ``max_norm``). In a mode without a GradScaler nothing is measured (the result says so).
    With ``contrast`` the broken side (the other ``unscale``) runs too and must be beyond the bound.
    The numbers include each step's norm ratio, the clipped steps and the ratio of the two copies'
    parameter changes (not judged: Adam divides by its own running RMS and hides a per-step factor)."""
    mode = get(numerics)
    batches = batch_list(batches, "clipping_under_scaler")
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.0)
    if not mode.scaler:
        return Checked(
            "clipping_under_scaler",
            f"clip_grad_norm_ under a GradScaler in {mode.name}",
            "equal",
            float("nan"),
            CLIP_NORM_MAX_GAP,
            {"max_norm": max_norm, "unscale": unscale, "device": device},
            mode,
            unmeasured=f"{mode.name} trains without a GradScaler: nothing to clip before or after unscale_ "
            "(the claim is measured in fp16-autocast)",
        )

    def clipping_run(run_mode: Mode, scaled: bool) -> dict[str, Any]:
        model, claim_dtype = build(model_fn, device, dtype, run_mode)
        start = [p.detach().clone() for p in model.parameters()]
        step = Step(model, optimizer_fn(model.parameters()), loss_fn, run_mode, device, unscale=scaled)
        out: dict[str, Any] = {"norms": [], "before": [], "after": [], "dtype": claim_dtype}

        def clip() -> None:
            out["before"].append(grad_norm(model.parameters()))
            out["norms"].append(_norm(clip_fn(model.parameters(), max_norm)))
            out["after"].append(grad_norm(model.parameters()))
            if len(out["norms"]) == 1:
                out["first_grads"] = [
                    p.grad.detach().double().clone() for p in model.parameters() if p.grad is not None
                ]

        for i, batch in enumerate(batches_on(batches, device, model)):
            step([batch], before_step=clip)
            if i == 0:
                out["first_moved"] = _norm_of([p.detach() - s for p, s in zip(model.parameters(), start, strict=True)])
        out["moved"] = [p.detach() - s for p, s in zip(model.parameters(), start, strict=True)]
        out["skipped"] = step.skipped
        return out

    def gap_of(got: dict[str, Any], ref: dict[str, Any]) -> tuple[float, list[float], float]:
        ratios = [g / r if r else float("inf") for g, r in zip(got["norms"], ref["norms"], strict=True)]
        moved = got["first_moved"] / ref["first_moved"] if ref["first_moved"] else float("inf")
        return max(abs(ratios[0] - 1), abs(moved - 1)), ratios, moved

    ref, got = clipping_run(REFERENCE, True), clipping_run(mode, unscale)
    gap, ratios, first_update_ratio = gap_of(got, ref)
    broken = gap_of(clipping_run(mode, not unscale), ref)[0] if contrast and unscale else None
    moved_ref = torch.cat([m.double().flatten() for m in ref["moved"]]).norm().item()
    moved_got = torch.cat([m.double().flatten() for m in got["moved"]]).norm().item()
    recipe = "after scaler.unscale_" if unscale else "before scaler.unscale_ (on the scaled gradients)"
    result = Checked(
        "clipping_under_scaler",
        f"clip_grad_norm_ {recipe} in {mode.name} clips float32's gradient (its norm and the clipped gradients)",
        "equal",
        gap,
        CLIP_NORM_MAX_GAP,
        {
            "max_norm": max_norm,
            "unscale": unscale,
            "norm_ratio_per_step": ratios,
            "first_update_ratio": first_update_ratio,
            "clipped_gradient_gap": relative_gap(got["first_grads"], ref["first_grads"]),
            "float32_norms": ref["norms"],
            "clipped_steps": sum(n > max_norm for n in got["norms"]),
            "float32_clipped_steps": sum(n > max_norm for n in ref["before"]),
            "update_ratio": moved_got / moved_ref if moved_ref else float("inf"),
            "update_gap": relative_gap(got["moved"], ref["moved"]),
            "steps": len(batches),
            "device": device,
            "scaler_skips": [got["skipped"]],
        },
        mode,
        got["dtype"],
        broken=broken,
        broken_recipe="clipping before scaler.unscale_",
    )
    wrong = [
        w for w in map(_clipped_as_defined, ref["before"], ref["norms"], ref["after"], [max_norm] * len(batches)) if w
    ]
    if wrong:
        result.refute(f"in float32, clip_fn did not clip as clipping is defined: {wrong[0]}")
    elif not result.values["float32_clipped_steps"]:
        result.unmeasured = (
            f"max_norm {max_norm:g} clipped no float32 step (norms {', '.join(f'{n:.3g}' for n in ref['before'])}): "
            "nothing was clipped to compare; choose a smaller max_norm"
        )
    return result


# --------------------------------------------------------------------------- over FSDP2 shards


def fsdp2(device: str | torch.device = "cpu") -> tuple[Any, str | None]:
    """(FSDP2's ``fully_shard``, None), or (None, why it cannot shard here): this torch has none, or
    on CPU ranks the table of releases (:data:`trainclaims.known.FSDP2_ON_CPU`, measured by its probe
    on every line) says this torch cannot train with it there."""
    if torch.device(device).type == "cpu":
        found = FSDP2_ON_CPU.range_for()
        if found is not None and found.value is False:
            return None, f"{FSDP2_ON_CPU.what}: not on torch {torch.__version__} ({found.source})"
    return fully_shard_of_this_torch()


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
    *,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    max_norm: float = 0.1,
    loss_fn: LossFn = mean_cross_entropy,
    clip_fn: ClipFn = clip_grad_norm,
    shard_fn: Callable[[nn.Module, Callable[..., Any], Any], nn.Module] = shard_children,
    device: str | torch.device = "cpu",
    numerics: ModeLike = REFERENCE,
) -> dict[str, Any]:
    """One rank of :func:`fsdp_clip_norm`: the model sharded with FSDP2 (``shard_fn``) over the
    ranks on ``device``'s type, its loss on this rank's shard of each batch (the gradients summed),
    ``clip_fn`` once on the sharded parameters. Returns the norm ``clip_fn`` returned *as this rank
    reads it* (a tensor's value; a DTensor's local value), the norm of this rank's own gradient
    shards (the broken side), and against one process on the whole batch: its gradients' norm and the gap of the clipped
    gradients (gathered from their shards) to its gradients clipped as clipping is defined
    (``g * min(1, max_norm / (norm + 1e-6))``, computed here in float64, not by the clip under
    test). ``{"unsupported": why}`` where FSDP2 cannot shard here (:func:`fsdp2`)."""
    numerics = get(numerics)  # parsed once, where it enters
    fully_shard, why = fsdp2(device)
    if fully_shard is None:
        return {"unsupported": why}
    from torch.distributed.device_mesh import init_device_mesh

    device = str(device)
    mesh = init_device_mesh(torch.device(device).type, (world,))
    (model, claim_dtype), (reference, _) = (build(model_fn, device, None, numerics) for _ in range(2))
    model = shard_fn(model, fully_shard, mesh)
    sharded_loss, whole_loss = (
        ModeLoss(model, loss_fn, numerics, device),
        ModeLoss(reference, loss_fn, numerics, device),
    )
    for whole in batches_on(batches, device, reference):
        sharded_loss(shard(whole, rank, world)).backward()
        whole_loss(whole).backward()
    local = [
        p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in model.parameters() if p.grad is not None
    ]
    local_norm = _norm_of(local)
    before = grad_norm(model.parameters())  # gathered: every rank takes part
    norm = _norm(clip_fn(model.parameters(), max_norm))
    after = grad_norm(model.parameters())
    reference_norm = grad_norm(reference.parameters())
    factor = min(1.0, max_norm / (reference_norm + 1e-6))
    clipped = [p.grad.detach().double() * factor for p in reference.parameters()]
    grads = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in model.parameters()]
    return {
        "norm": norm,
        "reference_norm": reference_norm,
        "local_norm": local_norm,
        "sharded_norm_before": before,
        "sharded_norm_after": after,
        "grad_gap": relative_gap(grads, clipped),
        "local_fraction": sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        / sum(p.numel() for p in reference.parameters()),
        "dtype": str(claim_dtype),
        "numerics": str(numerics),
        "max_norm": max_norm,
    }


def fsdp_clip_norm_verdict(results: Sequence[dict[str, Any]], bound: float | None = None) -> Checked:
    """The claim of :func:`fsdp_clip_norm` judged on its ranks' results (of
    :func:`fsdp_clip_norm_rank`): the norm each rank read from ``clip_fn`` is one process's (within
    ``bound``, default the dtype's tolerance), the ranks read the same norm, and the clipped
    gradients are one process's clipped as clipping is defined. The broken side is the norm of each
    rank's own shards, which must be beyond the bound. Not measured with one rank (nothing is
    sharded) or where one process's gradients are below ``max_norm`` (nothing clipped); ValueError
    where a rank had no FSDP2 (``{"unsupported": ...}``)."""
    first = results[0]
    if "unsupported" in first:
        raise ValueError(first["unsupported"])
    ref = first["reference_norm"]
    norm_gaps = [abs(r["norm"] - r["reference_norm"]) / r["reference_norm"] for r in results]
    local_gaps = [abs(r["local_norm"] - r["reference_norm"]) / r["reference_norm"] for r in results]
    grad_gap = max(r["grad_gap"] for r in results)
    norms = [r["norm"] for r in results]
    result = Checked(
        "fsdp_clip_norm",
        f"clip_grad_norm_ over FSDP2 shards on {len(results)} ranks returns the global norm (one process's, as each "
        "rank reads it) and clips the gradients as one process does",
        "equal",
        max([*norm_gaps, grad_gap]),
        rtol(first["dtype"]) if bound is None else bound,
        {
            "world": len(results),
            "norms": norms,
            "one_process_norm": ref,
            "norm_ratio": norms[0] / ref if ref else float("inf"),
            "local_norms": [r["local_norm"] for r in results],
            "clipped_grad_gap": grad_gap,
            "local_fraction": [r["local_fraction"] for r in results],
            "max_norm": first["max_norm"],
            "dtype": first["dtype"],
        },
        first["numerics"],
        first["dtype"],
        broken=min(local_gaps),
        broken_recipe="the norm of each rank's own shards",
    )
    if len(results) < 2:
        result.unmeasured = "needs 2 ranks: with one rank nothing is sharded, and its norm is the global one trivially"
    elif ref <= first["max_norm"]:
        result.unmeasured = f"one process's norm {ref:.4g} is below max_norm {first['max_norm']:g}: nothing was clipped"
    elif len(set(norms)) > 1:
        result.refute(f"the ranks returned different norms ({', '.join(f'{n:.6g}' for n in norms)})")
    return result


def fsdp_clip_norm(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    max_norm: float = 0.1,
    world: int = 2,
    loss_fn: LossFn = mean_cross_entropy,
    clip_fn: ClipFn = clip_grad_norm,
    numerics: ModeLike = REFERENCE,
    bound: float | None = None,
) -> Checked:
    """``clip_grad_norm_`` over FSDP2 (``fully_shard`` on each child with parameters and on the
    root) on ``world`` gloo ranks (CPU processes) returns the global norm: every rank reads the
    same, one process's on the whole model and batch; the clipped gradients are one process's.
    ``clip_fn`` is the clip under test (a hand-rolled one that takes the norm of the rank's own
    shards fails). ``model_fn``, ``loss_fn`` and ``clip_fn`` must be picklable. The ranks run
    :func:`fsdp_clip_norm_rank`; :func:`fsdp_clip_norm_verdict` judges them. Misuse (before any
    rank starts) for ``world`` < 2: nothing is sharded on one rank (trainclaims.checks.base.for_ranks)."""
    numerics = get(numerics)  # parsed once, where it enters
    batches = for_ranks(batch_list(batches, "fsdp_clip_norm"), world)
    kwargs = {"model_fn": model_fn, "batches": batches, "max_norm": max_norm, "loss_fn": loss_fn, "clip_fn": clip_fn}
    results = run_ranks(with_keywords, world, fsdp_clip_norm_rank, kwargs | {"numerics": numerics}, mode=numerics)
    return fsdp_clip_norm_verdict(results, bound)


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
