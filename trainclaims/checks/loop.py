"""The user's own training loop under test: its body for one optimizer step, as written (its loss
division, its ``zero_grad``, its clip, its GradScaler, its ``no_sync``), against the large batch.

``step(model, optimizer, micro_batches) -> logged loss`` is the loop's body for one optimizer
step: it runs the forward and backward passes of the micro-batches, steps the optimizer, and
returns what the loop logs. :func:`training_loop` calls it once per batch (the batch cut into k
micro-batches) on one copy of the model, and compares, step by step, with a second copy that takes
one step on the whole batch (``loss_fn`` over it: its token mean for a language model's batch):

- the parameters after each step (relative gap, the dtype's tolerance; in a numerics mode its
  rounding bound);
- the loss the step returns against the large batch's at the same parameters (``|logged / large -
  1|``; ``logs=False`` for a loop that returns nothing worth comparing);
- what the step called, in which order: one backward pass per micro-batch, no ``zero_grad``
  between the first backward pass and the optimizer step (a ``zero_grad`` inside the micro-batch
  loop keeps only the last micro-batch's gradient), one optimizer step, the clip (where
  ``max_norm`` is given) after ``scaler.unscale_`` where a GradScaler scaled the loss, and under
  DDP (``world`` > 1) every micro-batch but the last under ``no_sync()``.

The result names the first step that differs, what differs and the likely fix; where the
parameters differ, the recipe they match (each micro-batch's own mean / k, the loss not divided by
k) where one does.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims import mutants
from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    OptimizerFactory,
    batch_list,
    batches_on,
    build,
    parameter_gap,
    rtol,
    sgd,
)
from trainclaims.checks.clipping import clip_grad_norm
from trainclaims.checks.preconditions import (
    diverged,
    label_convention,
    mean_cross_entropy,
    require_no_dropout,
    unshifted_mean_cross_entropy,
)
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.step import Batch, LossFn, ModeLoss, Step, batch_size, shard, split

LoopStep = Callable[[nn.Module, torch.optim.Optimizer, Sequence[Batch]], Any]


# --------------------------------------------------------------------------- what the step calls


class Calls:
    """What one call of the loop's step called, in order: ``zero_grad``, ``backward`` (or
    ``backward in no_sync``), ``clip``, ``scale``, ``unscale``, ``step`` — recorded by patching
    them for the call only (the optimizer's own methods, ``Tensor.backward``, ``clip_grad_norm_``,
    the GradScaler's, DDP's ``no_sync``) and putting them back after."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._no_sync = 0

    @contextlib.contextmanager
    def watching(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[Calls]:
        record = self.events.append
        undo: list[Callable[[], None]] = []

        def on_instance(obj: Any, name: str, event: str) -> None:
            original = getattr(obj, name)

            @functools.wraps(original)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                record(event)
                return original(*args, **kwargs)

            setattr(obj, name, wrapped)
            undo.append(lambda: delattr(obj, name) if name in vars(obj) else None)

        def globally(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
            old = getattr(owner, name)
            if isinstance(owner, type):  # a method: the class attribute is the one everybody calls
                setattr(owner, name, make(old))
                undo.append(lambda: setattr(owner, name, old))
            else:  # a function some module may have imported by name: rebound there too
                mutants.replace(owner, name, make(old))
                undo.append(lambda: mutants.replace(owner, name, old))

        on_instance(optimizer, "zero_grad", "zero_grad")
        on_instance(optimizer, "step", "step")

        def backward(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                record("backward in no_sync" if self._no_sync else "backward")
                return original(*args, **kwargs)

            return wrapped

        def clip(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                record("clip")
                return original(*args, **kwargs)

            return wrapped

        globally(torch.Tensor, "backward", backward)
        globally(torch.nn.utils, "clip_grad_norm_", clip)
        scaler = getattr(getattr(torch, "amp", None), "GradScaler", None) or torch.cuda.amp.GradScaler
        for name, event in (("scale", "scale"), ("unscale_", "unscale"), ("step", "scaler step")):
            globally(scaler, name, lambda original, event=event: _recording(original, record, event))
        if hasattr(model, "no_sync"):
            original_no_sync = model.no_sync

            @contextlib.contextmanager
            def no_sync() -> Iterator[None]:
                self._no_sync += 1
                try:
                    with original_no_sync():
                        yield
                finally:
                    self._no_sync -= 1

            model.no_sync = no_sync  # type: ignore[method-assign]
            undo.append(lambda: delattr(model, "no_sync"))
        try:
            yield self
        finally:
            for u in reversed(undo):
                u()


def _recording(original: Callable[..., Any], record: Callable[[str], None], event: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        record(event)
        return original(*args, **kwargs)

    return wrapped


def order_problem(events: Sequence[str], k: int, clips: bool, world: int) -> tuple[str, str] | None:
    """What is wrong with one step's calls, and the fix; None where nothing is."""
    backwards = [i for i, e in enumerate(events) if e.startswith("backward")]
    if len(backwards) != k:
        return f"{len(backwards)} backward passes for {k} micro-batches", "call backward once per micro-batch"
    steps = [i for i, e in enumerate(events) if e in ("step", "scaler step")]
    if not steps:
        return "no optimizer step", "call optimizer.step() (scaler.step(optimizer)) once per step"
    zero = [i for i, e in enumerate(events) if e == "zero_grad" and backwards[0] < i < steps[-1]]
    if zero:
        return (
            "zero_grad between the micro-batches' backward passes: the step saw only the last micro-batch's gradient",
            "call optimizer.zero_grad() once per step, before the micro-batches (or after optimizer.step())",
        )
    clip_at = [i for i, e in enumerate(events) if e == "clip"]
    if clips and not clip_at:
        return (
            "no clip_grad_norm_ in the step",
            "clip with torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)",
        )
    scaled = "scale" in events
    unscaled = [i for i, e in enumerate(events) if e == "unscale"]
    if clip_at and scaled and (not unscaled or clip_at[0] < unscaled[0]):
        return (
            "clip_grad_norm_ before scaler.unscale_(optimizer): it clipped the scaled gradients (the scale times the "
            "norm against max_norm)",
            "call scaler.unscale_(optimizer) before clip_grad_norm_",
        )
    if world > 1:
        synced = [e for e in events if e == "backward"]
        if len(synced) != 1 or events[backwards[-1]] != "backward":
            return (
                f"{len(synced)} of {k} backward passes all-reduced (outside no_sync)",
                "run every micro-batch but the last inside model.no_sync()",
            )
    return None


# --------------------------------------------------------------------------- the check


def _copy(
    model_fn: ModelFactory, device: str, dtype: torch.dtype | None, optimizer_fn: OptimizerFactory
) -> tuple[nn.Module, torch.optim.Optimizer]:
    model, _ = build(model_fn, device, dtype)
    return model, optimizer_fn(model.parameters())


RECIPES = {
    # name: (divide each micro-batch's loss by k, what it is, the fix)
    "mean/k": (
        True,
        "each micro-batch's own mean / k (with unequal token counts another loss than the large batch's)",
        "divide each micro-batch's token sum by the step's token count (Hugging Face: num_items_in_batch)",
    ),
    "sum": (False, "the micro-batches' losses not divided by k (a step k times the large batch's)", "divide by k"),
}


def _matching_recipe(
    model_fn: ModelFactory,
    first: Batch,
    k: int,
    loss_fn: LossFn,
    optimizer_fn: OptimizerFactory,
    device: str,
    dtype: torch.dtype | None,
    clip: Callable[[nn.Module], Any] | None,
    loop_first: list[torch.Tensor],
    bound: float,
) -> tuple[str, str] | None:
    """The recipe a loop's first step took instead of the large batch's, where a known one
    explains it: each recipe steps once on the first batch from the same start, and the one whose
    parameters the loop's equal (to the bound) is named, with its fix."""
    for divide, what, fix in RECIPES.values():
        model, optimizer = _copy(model_fn, device, dtype, optimizer_fn)
        Step(model, optimizer, loss_fn, REFERENCE, device, divide=divide)(
            split(first, k), before_step=(lambda m=model: clip(m)) if clip else None
        )
        if parameter_gap(loop_first, model.parameters()) <= bound:
            return what, fix
    return None


def training_loop(
    step: LoopStep,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    k: int,
    optimizer_fn: OptimizerFactory | None = None,
    loss_fn: LossFn | None = None,
    labels: str | None = None,
    max_norm: float | None = None,
    logs: bool = True,
    world: int = 1,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
) -> Checked:
    """The loop's step (``step(model, optimizer, micro_batches) -> logged loss``) takes the large
    batch's step: see the module's docstring. ``loss_fn`` is the loss the loop means, over a batch
    (default: cross entropy of the logits, over a language model's counted tokens; ``labels``
    shifted or unshifted, read off a Hugging Face model where not given); ``max_norm``: the loop
    clips at it (the large batch is clipped too); ``numerics``: the mode the loop trains in (its
    autocast and GradScaler are the loop's own; the bound is the mode's rounding); ``world`` > 1:
    the step runs on that many gloo ranks under DDP, each on its shard (the step and the factories
    must be picklable), against one process on the whole batch."""
    mode = get(numerics)
    batches = batch_list(batches, "training_loop")
    optimizer_fn = optimizer_fn or sgd(momentum=0.0)
    if any(batch_size(b) % (k * world) for b in batches):
        raise Misuse(f"training_loop: a batch does not split into {world} rank(s) x k={k} micro-batches")
    probe, claim_dtype = build(model_fn, device, dtype)
    require_no_dropout(probe, "training_loop")
    unshifted = label_convention(labels, probe) == "unshifted"
    loss_fn = loss_fn or (unshifted_mean_cross_entropy if unshifted else mean_cross_entropy)
    bound = rtol(claim_dtype) if mode.reference else max(rtol(claim_dtype), _mode_bound(mode, claim_dtype))
    if world > 1:
        return _ddp_loop(step, model_fn, batches, k, optimizer_fn, loss_fn, max_norm, world, mode, claim_dtype, bound)
    loop_model, loop_optimizer = _copy(model_fn, device, dtype, optimizer_fn)
    large, large_optimizer = _copy(model_fn, device, dtype, optimizer_fn)
    clip = functools.partial(_clip, max_norm=max_norm) if max_norm is not None else None
    large_step = Step(large, large_optimizer, loss_fn, REFERENCE, device)
    before = ModeLoss(loop_model, loss_fn, REFERENCE, device)
    data = batches_on(batches, device, large)
    gaps: list[float] = []
    ratios: list[float] = []
    calls_per_step: list[list[str]] = []
    problems: list[tuple[int, str, str]] = []
    loop_first: list[torch.Tensor] = []
    for n, whole in enumerate(data, 1):
        with torch.no_grad():
            expected = float(before(whole))
        calls = Calls()
        with calls.watching(loop_model, loop_optimizer):
            logged = step(loop_model, loop_optimizer, split(whole, k))
        large_step([whole], before_step=(lambda: clip(large)) if clip else None)
        calls_per_step.append(calls.events)
        gaps.append(parameter_gap(loop_model.parameters(), large.parameters()))
        if n == 1:
            loop_first = [p.detach().clone() for p in loop_model.parameters()]
        if logs and logged is not None:
            ratios.append(float(logged) / expected if expected else math.inf)
        order = order_problem(calls.events, k, max_norm is not None, 1)
        if order and not problems:
            problems.append((n, *order))
    if not problems:
        off = next((n for n, g in enumerate(gaps, 1) if g > bound), None)
        if off is not None:
            worst, worst_gap = diverged(loop_model, large)
            recipe = None
            if off == 1:
                recipe = _matching_recipe(
                    model_fn, data[0], k, loss_fn, optimizer_fn, device, dtype, clip, loop_first, bound
                )
            what, fix = recipe or ("its parameters part from the large batch's", "compare the step with the recipe")
            problems.append((off, f"{what} (the parameter that parted most: {worst}, {worst_gap:.3g})", fix))
        else:
            logged_off = next((n for n, r in enumerate(ratios, 1) if abs(r - 1) > LOGGED_MAX_GAP), None)
            if logged_off is not None:
                what = f"the loop logs {ratios[logged_off - 1]:.4g} times the large batch's loss"
                fix = (
                    "return the step's loss once: the sum of each micro-batch's share (its loss / k, or its token sum "
                    "/ the step's token count), not the sum of the means or the last micro-batch's"
                )
                problems.append((logged_off, what, fix))
    result = Checked(
        "training_loop",
        f"the loop's step on {k} micro-batches is the large batch's step (parameters, logged loss, call order)",
        "equal",
        max([*gaps, *(abs(r - 1) for r in ratios)]),
        bound,
        {
            "k": k,
            "steps": len(data),
            "gap_per_step": gaps,
            "logged_ratio_per_step": ratios,
            "calls_per_step": [" ".join(e) for e in calls_per_step],
            "max_norm": max_norm,
            "dtype": str(claim_dtype),
            "device": device,
        },
        mode,
        claim_dtype,
    )
    if problems:
        n, what, fix = problems[0]
        result.refute(f"step {n}: {what}; fix: {fix}")
    return result


LOGGED_MAX_GAP = (
    1e-5  # the logged loss against the large batch's, relative: float32's rounding of one sum in two orders
)


def _clip(model: nn.Module, max_norm: float) -> Any:
    return clip_grad_norm(model.parameters(), max_norm)


def _mode_bound(mode: Any, dtype: torch.dtype) -> float:
    found = mode.bound(str(dtype).removeprefix("torch."))
    return found.value if found is not None else 0.0


# --------------------------------------------------------------------------- under DDP


def loop_rank(
    rank: int,
    world: int,
    *,
    step: LoopStep,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    k: int,
    optimizer_fn: OptimizerFactory,
    loss_fn: LossFn,
    max_norm: float | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """One rank of :func:`training_loop` under DDP: the loop's step on this rank's shard of each
    batch (k micro-batches) with the model wrapped in DDP, against one process on the whole batch;
    per step the parameter gap and what the step called."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainclaims.checks.data_parallel import _as_lists

    replica, optimizer = _copy(model_fn, device, None, optimizer_fn)
    model = DDP(replica)
    optimizer = optimizer_fn(model.parameters())
    reference, reference_optimizer = _copy(model_fn, device, None, optimizer_fn)
    reference_step = Step(reference, reference_optimizer, loss_fn, REFERENCE, device)
    clip = functools.partial(_clip, max_norm=max_norm) if max_norm is not None else None
    gaps, events = [], []
    for whole in batches_on(batches, device, reference):
        calls = Calls()
        with calls.watching(model, optimizer):
            step(model, optimizer, split(shard(whole, rank, world), k))
        reference_step([whole], before_step=(lambda: clip(reference)) if clip else None)
        events.append(calls.events)
        gaps.append(parameter_gap(model.module.parameters(), reference.parameters()))
    return {"gaps": gaps, "events": events, "parameters": _as_lists(model.module.parameters())}


def _ddp_loop(
    step: LoopStep,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    k: int,
    optimizer_fn: OptimizerFactory,
    loss_fn: LossFn,
    max_norm: float | None,
    world: int,
    mode: Any,
    claim_dtype: torch.dtype,
    bound: float,
) -> Checked:
    from trainclaims.checks.data_parallel import _rank_gaps
    from trainclaims.ranks import run_ranks, with_keywords

    kwargs = {"step": step, "model_fn": model_fn, "batches": [_on_cpu(b) for b in batches], "k": k}
    kwargs |= {"optimizer_fn": optimizer_fn, "loss_fn": loss_fn, "max_norm": max_norm}
    results = run_ranks(with_keywords, world, loop_rank, kwargs, mode=mode)
    gaps, replica_gap = _rank_gaps(results)
    result = Checked(
        "training_loop",
        f"the loop's step on {k} micro-batches on each of {world} DDP ranks is one process's on the whole batch "
        "(parameters, call order, no_sync)",
        "equal",
        max([*gaps, replica_gap]),
        bound,
        {
            "k": k,
            "world": world,
            "gap_per_step_rank0": results[0]["gaps"],
            "calls_per_step_rank0": [" ".join(e) for e in results[0]["events"]],
        },
        mode,
        claim_dtype,
    )
    for n in range(len(batches)):
        problem = next(
            (p for r in results if (p := order_problem(r["events"][n], k, max_norm is not None, world))), None
        )
        if problem:
            result.refute(f"step {n + 1}: {problem[0]}; fix: {problem[1]}")
            return result
        if max(r["gaps"][n] for r in results) > bound:
            result.refute(
                f"step {n + 1}: the ranks' parameters part from one process's on the whole batch "
                f"(gap {max(r['gaps'][n] for r in results):.3g})"
            )
            return result
    return result


def _on_cpu(batch: Batch) -> Batch:
    from trainclaims.step import to_device

    return to_device(batch, "cpu")


__all__ = ["Calls", "LoopStep", "loop_rank", "order_problem", "training_loop"]
