"""Activation checkpointing: the gradients of a model whose blocks recompute their forward pass in
backward (``torch.utils.checkpoint``) are the model's own, Dropout included: the RNG state is saved
at the forward pass and restored for the recomputation (``preserve_rng_state=True``, the default),
so the recomputed masks are the forward pass's. With ``preserve_rng_state=False`` they are not."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainclaims.checks.base import Checked, ModelFactory, batch_list, batches_on, build, relative_gap
from trainclaims.checks.preconditions import cross_entropy, label_convention, require_no_cache
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, Mode, ModeLike, get
from trainclaims.step import Batch, LossFn, ModeLoss

BlockPicker = Callable[[nn.Module], Sequence[nn.Module]]


def children(model: nn.Module) -> list[nn.Module]:
    """The model's direct children (the default blocks to checkpoint: a Sequential's layers, a
    transformer's embedding, blocks and head), or the model itself where it has none."""
    return list(model.children()) or [model]


def checkpointed(block: nn.Module, *, use_reentrant: bool = False, preserve_rng_state: bool = True) -> nn.Module:
    """``block`` with its forward pass run through ``torch.utils.checkpoint.checkpoint`` (in place:
    the instance's ``forward`` is wrapped; its parameters are the same). The reentrant checkpoint
    takes no keyword arguments: a block called with keywords (as Hugging Face's layers are) has
    them bound to its parameters first, and those that can go by position go so."""
    plain = block.forward
    signature = inspect.signature(plain)

    @functools.wraps(plain)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if not use_reentrant:
            return checkpoint(plain, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **kwargs)
        bound = signature.bind(*args, **kwargs)
        run = functools.partial(plain, **bound.kwargs) if bound.kwargs else plain
        return checkpoint(run, *bound.args, use_reentrant=True, preserve_rng_state=preserve_rng_state)

    block.forward = forward  # type: ignore[method-assign]
    return block


@contextlib.contextmanager
def _same_random_masks(mode: Mode) -> Iterator[None]:
    """Under torch.compile the checkpointed graph draws its own dropout masks (inductor's RNG, not
    eager's): the claim is measured with inductor's ``fallback_random`` (eager's RNG), as PyTorch's
    own tests of compiled dropout do."""
    if not mode.compiles:
        yield
        return
    import torch._inductor.config as inductor

    saved = inductor.fallback_random
    inductor.fallback_random = True
    try:
        yield
    finally:
        inductor.fallback_random = saved


def activation_checkpointing(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn | None = None,
    blocks: BlockPicker = children,
    use_reentrant: bool = False,
    preserve_rng_state: bool = True,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    labels: str | None = None,
    numerics: ModeLike = REFERENCE,
    contrast: bool = True,
) -> Checked:
    """Checkpointing ``blocks(model)`` (default: each direct child) leaves every gradient as it
    is, bit for bit, the random ops (Dropout) included, in training mode: one copy plain, one
    checkpointed, each seeded once before its first batch, so that the random draws after each
    backward pass continue as without checkpointing (a recomputation that leaves the RNG where its
    own draws ended changes the next batch's masks); the gap is the gradients' relative gap over
    all parameters, and it must be 0. ``preserve_rng_state=False`` recomputes Dropout with other
    masks (the check then fails with the gap). With ``contrast`` (and the RNG state preserved) that
    broken side runs too and must differ: where it does not (checkpointed blocks that draw no
    random numbers in training; a compiled graph whose masks do not depend on the restored state)
    the restore was not exercised and the check measured nothing, saying so. Under a compiling mode
    inductor's ``fallback_random`` is on while it measures (the check's numbers say so). The default
    loss is cross entropy of the output's logits (a language model's positions flattened, its
    ``labels`` shifted or unshifted: read off a Hugging Face model where not given); a model that
    caches keys stops the check before it runs (a recomputed block would see the cache grown)."""
    mode = get(numerics)
    batches = batch_list(batches, "activation_checkpointing")
    probe = model_fn()
    require_no_cache(probe, "activation_checkpointing")
    loss_fn = loss_fn or cross_entropy(label_convention(labels, probe))
    chosen: list[str] = []

    def gradients(wrap: bool, preserve: bool) -> tuple[list[torch.Tensor], torch.dtype]:
        model, claim_dtype = build(model_fn, device, dtype, mode)
        model.train()
        if wrap:
            picked = list(blocks(model))
            if not picked:
                raise Misuse("activation_checkpointing: blocks(model) picked no block to checkpoint")
            names = {id(m): n for n, m in model.named_modules()}
            chosen[:] = [names.get(id(b), type(b).__name__) for b in picked]
            for block in picked:
                checkpointed(block, use_reentrant=use_reentrant, preserve_rng_state=preserve)
        loss = ModeLoss(model, loss_fn, mode, device)
        torch.manual_seed(seed)  # once: the RNG then runs on through every batch, as in training
        for batch in batches_on(batches, device, model):
            loss(batch).backward()  # the gradients of every batch, summed
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()], claim_dtype

    with _same_random_masks(mode):
        plain, claim_dtype = gradients(False, True)
        wrapped, _ = gradients(True, preserve_rng_state)
        broken = None
        if contrast and preserve_rng_state:
            broken = relative_gap(gradients(True, False)[0], plain)
    gap = relative_gap(wrapped, plain)
    result = Checked(
        "activation_checkpointing",
        f"checkpointing {', '.join(chosen)} (use_reentrant={use_reentrant}, preserve_rng_state={preserve_rng_state}) "
        "leaves every gradient unchanged",
        "exact",
        gap,
        0.0,
        {
            "blocks": chosen,
            "use_reentrant": use_reentrant,
            "preserve_rng_state": preserve_rng_state,
            "bitwise_equal": all(torch.equal(a, b) for a, b in zip(wrapped, plain, strict=True)),
            "batches": len(batches),
            "device": device,
            "fallback_random": mode.compiles,
            "dtype": str(claim_dtype),
        },
        mode,
        claim_dtype,
        broken=broken,
        broken_recipe="checkpointing without the RNG state (preserve_rng_state=False)",
    )
    if broken is not None and broken == 0:  # the restore made no difference: it was not exercised
        where = (
            "under torch.compile the checkpointed graph's dropout masks do not depend on the RNG state "
            "checkpoint restores (dynamo traces the recomputation)"
            if mode.compiles
            else "the checkpointed blocks draw no random numbers in training (no Dropout there?)"
        )
        result.unmeasured = (
            f"{where}: checkpointing without the RNG state gives the same gradients (gap 0), so the restore was not "
            f"exercised; with it, gap {gap:.3g}"
        )
    return result


__all__ = ["activation_checkpointing", "checkpointed", "children"]
