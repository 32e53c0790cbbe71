"""Gradient accumulation with a per-token loss: micro-batches of unequal token counts (padded
sequences, positions ignored through ``ignore_index``).

A token-mean loss per micro-batch, divided by k, is not the large batch's token mean where the
micro-batches hold different numbers of tokens (transformers #34242): each micro-batch's tokens are
weighed by 1/(k * its own count) instead of 1/(the step's count). Summing the token losses and
dividing by the step's total token count is the large batch's loss; across DDP ranks the count is
the global one (all-reduced), times the world size that DDP's average divides by again.

A batch here is a mapping with ``labels`` ((batch, positions), ``ignore_index`` where a position
does not count) and the model's inputs (``input_ids``, ``attention_mask``, ...), or a pair
``(inputs, labels)``. The loss function gives the *sum* over the counted tokens
(:func:`token_sum`, the default: cross entropy over the last dimension of the model's output).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from trainclaims.checks.base import (
    Checked,
    ModelFactory,
    OptimizerFactory,
    batch_list,
    batches_on,
    build,
    for_ranks,
    keyword_only,
    parameter_gap,
    rtol,
    sgd,
)
from trainclaims.checks.data_parallel import _as_lists, _rank_gaps, needs_ranks, no_sync_but_last, renamed_k
from trainclaims.checks.preconditions import (
    IGNORE_INDEX,
    aligned,
    diverged,
    label_convention,
    likely_cause,
    logits_of,
    require_no_dropout,
    require_sum,
)
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.ranks import run_ranks, with_keywords
from trainclaims.step import Batch, LossFn, ModeLoss, Step, batch_size, shard, split, targets

NORMALIZATIONS = ("tokens", "mean")


def token_sum(output: Any, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The cross entropy summed over the counted tokens (labels other than ``ignore_index``), of the
    logits in the model's output (a tensor, a tuple's first element, a ``ModelOutput``'s
    ``logits``), for shifted labels (label t is the token after position t)."""
    logits = logits_of(output)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore_index, reduction="sum"
    )


def unshifted_token_sum(output: Any, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """:func:`token_sum` for unshifted labels (Hugging Face's: a copy of ``input_ids``, -100 at
    padding): each position's logits against the next position's label."""
    logits, labels = aligned(logits_of(output), labels, "unshifted")
    return token_sum(logits, labels, ignore_index)


class ModelTokenSum:
    """The model's own loss, as a token sum: the model is called with ``labels=`` and
    ``num_items_in_batch=1`` (Hugging Face's causal LMs divide their token sum by it, from
    transformers 4.46), and its output's ``loss`` is taken. Give it as ``loss_fn`` to a token check
    to measure the loss the model computes itself (its shift, its ``ignore_index``)."""

    forward_with_labels: ClassVar[dict[str, int]] = {"num_items_in_batch": 1}  # ModeLoss adds these and labels=

    def __call__(self, output: Any, labels: torch.Tensor) -> torch.Tensor:
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if loss is None:
            raise Misuse("model_token_sum: the model returned no loss: it must compute one when given labels=")
        return loss


model_token_sum = ModelTokenSum()


def token_count(batch: Batch, ignore_index: int = IGNORE_INDEX, labels: str = "shifted") -> int:
    """How many of the batch's label positions count (are not ``ignore_index``): for unshifted
    labels (Hugging Face's) every position but the first, whose label no position predicts."""
    found = targets(batch)
    if labels == "unshifted":
        found = found[..., 1:]
    return int((found != ignore_index).sum())


def _loss_for(loss_fn: LossFn | None, convention: str) -> LossFn:
    """The loss a token check uses: the one given, else the token sum for the labels' convention."""
    if loss_fn is not None:
        return loss_fn
    return unshifted_token_sum if convention == "unshifted" else token_sum


def _first_two(batch: Batch) -> Batch:
    if isinstance(batch, Mapping):
        return {k: v[:2] for k, v in batch.items()}
    return tuple(t[:2] for t in batch)


def _tokens(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn | None,
    labels: str | None,
    ignore_index: int,
    device: str,
    dtype: torch.dtype | None,
    check: str,
) -> tuple[LossFn, Callable[[Batch], int]]:
    """A token check's loss and token count, from the labels' convention (given, or read off the
    model), after the preconditions the model and the loss must meet (:func:`_token_preconditions`)."""
    probe, _ = build(model_fn, device, dtype)
    convention = label_convention(labels, probe)
    loss_fn = _loss_for(loss_fn, convention)
    (first,) = batches_on(batches[:1], device, probe)
    _token_preconditions(probe, loss_fn, first, device, check)
    return loss_fn, functools.partial(token_count, ignore_index=ignore_index, labels=convention)


def _token_preconditions(model: torch.nn.Module, loss_fn: LossFn, batch: Batch, device: str, check: str) -> None:
    """What a token check needs of the model and the loss before it trains: no Dropout (two copies
    must take the same steps), and a loss that is a sum (on the first two sequences and each alone)."""
    require_no_dropout(model, check)
    if batch_size(batch) < 2:
        return
    pair = _first_two(batch)
    loss = ModeLoss(model, loss_fn, REFERENCE, device)
    require_sum(loss, pair, split(pair, 2), check)


def _normalized(loss_fn: LossFn, denominator: list[float], seen: list[torch.Tensor]) -> LossFn:
    """``loss_fn`` divided by ``denominator[0]``, read at each call (set per step or micro-batch);
    each value it gives is kept in ``seen`` (what a loop's loss variable holds)."""

    def loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
        value = loss_fn(output, labels) / denominator[0]
        seen.append(value.detach())
        return value

    if hasattr(loss_fn, "forward_with_labels"):  # the model's own loss: it is still given labels=
        loss.forward_with_labels = loss_fn.forward_with_labels  # type: ignore[attr-defined]
    return loss


def _normalize_by(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise Misuse(f"normalize={normalize!r}: 'tokens' (the step's token count) or 'mean' (each micro-batch's, /k)")


def _accumulating_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    numerics: ModeLike,
    device: str,
    normalize: str,
    count: Callable[[Batch], int],
) -> Callable[..., torch.Tensor]:
    """``step(micro_batches, total, context=None)``: one optimizer step over the micro-batches, as a
    loop of each recipe takes it, returning what its step returned: each micro-batch's token sum
    divided by ``total`` ("tokens": the step's count; the caller gives it, all-reduced across ranks
    where it is DDP's), by its own count and by k ("mean"), or by its own count only ("sum": the
    step returns the undivided sum of the means). ``step.last``: the last micro-batch's loss as
    the loop's variable held it (before the division by k)."""
    denominator, seen = [1.0], []
    step = Step(model, optimizer, _normalized(loss_fn, denominator, seen), numerics, device, divide=normalize == "mean")

    def run(micro_batches: Sequence[Batch], total: float, context: Callable[[int], Any] | None = None) -> torch.Tensor:
        seen.clear()
        if normalize == "tokens":
            denominator[0] = total
            return step(micro_batches, context)

        def own_count(i: int) -> contextlib.AbstractContextManager:  # each micro-batch's own mean
            denominator[0] = max(1, count(micro_batches[i]))
            return context(i) if context is not None else contextlib.nullcontext()

        return step(micro_batches, own_count)

    run.step = step  # type: ignore[attr-defined]
    run.last = lambda: float(seen[-1])  # type: ignore[attr-defined]
    return run


@keyword_only(2, "k")
def token_accumulation(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    k: int,
    normalize: str = "tokens",
    loss_fn: LossFn | None = None,
    optimizer_fn: OptimizerFactory | None = None,
    labels: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
    contrast: bool = True,
) -> Checked:
    """Accumulating k micro-batches of a token loss trains as one k-times larger batch whose loss is
    the mean over its tokens, where each micro-batch's token sum is divided by the *step's* token
    count (``normalize="tokens"``); with each micro-batch's own token mean divided by k
    (``normalize="mean"``, the recipe of the 2024 accumulation bug) it does not where the
    micro-batches hold different numbers of tokens (the check then fails, with the gap and the
    counts). One copy steps on the micro-batches of each batch, the other on the whole batch
    (``loss_fn`` over its tokens / its count); after ``len(batches)`` steps their parameters agree
    to the dtype's rounding. With ``contrast`` (and ``normalize="tokens"``) the broken recipe runs
    too and must be beyond the bound: batches whose micro-batches hold equal token counts cannot
    tell the two apart, and the check says so. With an adaptive optimizer (Adam), keep parameters
    whose gradient is 0 up to rounding out of it or use SGD (the default): rounding noise becomes
    whole updates there.

    Models and batches as they come: the output may be a tensor, a tuple or a ``ModelOutput`` with
    ``logits``; ``labels`` are ``"shifted"`` or ``"unshifted"`` (Hugging Face's; read off a
    Hugging Face model where not given). ``loss_fn`` must sum over the counted tokens (default: the
    token sum for the labels' convention; :data:`model_token_sum`: the model's own loss): a mean
    stops the check before it trains, as does a model with Dropout."""
    numerics = get(numerics)  # parsed once, where it enters
    _normalize_by(normalize)
    batches = batch_list(batches, "token_accumulation")
    optimizer_fn = optimizer_fn or sgd()
    sizes = [batch_size(b) for b in batches]
    if any(n % k for n in sizes):
        raise Misuse(f"token_accumulation: a batch of {next(n for n in sizes if n % k)} does not split into k={k}")
    loss_fn, count = _tokens(model_fn, batches, loss_fn, labels, ignore_index, device, dtype, "token_accumulation")

    def run(recipe: str) -> dict[str, Any]:
        (accumulated, claim_dtype), (large, _) = (build(model_fn, device, dtype, numerics) for _ in range(2))
        data = batches_on(batches, device, large)
        micro = [split(b, k) for b in data]
        acc_step = _accumulating_step(
            accumulated, optimizer_fn(accumulated.parameters()), loss_fn, numerics, device, recipe, count
        )
        large_optimizer = optimizer_fn(large.parameters())
        large_step = _accumulating_step(large, large_optimizer, loss_fn, numerics, device, "tokens", count)
        per_step = []
        for parts, whole in zip(micro, data, strict=True):
            total = count(whole)
            acc_step(parts, total)
            large_step([whole], total)
            per_step.append(parameter_gap(accumulated.parameters(), large.parameters()))
        worst, worst_gap = diverged(accumulated, large)
        return {
            "worst": f"the parameter that parted most: {worst} ({worst_gap:.3g}); likely: "
            + (
                "each micro-batch is normalized by its own token count, not the step's"
                if recipe == "mean"
                else likely_cause(large, large_optimizer, worst)
            ),
            "per_step": per_step,
            "counts": [[count(p) for p in parts] for parts in micro],
            "skips": [acc_step.step.skipped, large_step.step.skipped],
            "dtype": claim_dtype,
        }

    got = run(normalize)
    broken = run("mean") if contrast and normalize == "tokens" else None
    recipe = "token sum / the step's token count" if normalize == "tokens" else "each micro-batch's token mean / k"
    claim_dtype = got["dtype"]
    values = {
        "k": k,
        "steps": len(batches),
        "normalize": normalize,
        "tokens_per_micro_batch": got["counts"],
        "gap_per_step": got["per_step"],
        "dtype": str(claim_dtype),
        "device": device,
        "scaler_skips": got["skips"],
    }
    if broken is not None:
        values["broken_gap_per_step"] = broken["per_step"]
    return Checked(
        "token_accumulation",
        f"{k} micro-batches with {recipe} equal one batch {k} times larger (its token mean) after {len(batches)} steps",
        "equal",
        got["per_step"][-1],
        rtol(claim_dtype),
        values,
        numerics,
        claim_dtype,
        broken=broken["per_step"][-1] if broken is not None else None,
        broken_recipe="each micro-batch's token mean / k",
        hint=got["worst"],
    )


# --------------------------------------------------------------------------- the loss a loop logs

# The relative gap of the loss a step returns under accumulation to the large batch's token mean,
# where both are the same sum of the same token losses in another order. Measured (CPU, torch
# 2.1.2/2.6.0/2.14.1/2.15.0, the tiny causal LM, k=2 and 4, 3 steps, seeds 0-9, float32): 0-1.82e-7;
# each micro-batch's mean / k 1.2e-4-3.0e-2; the undivided sum k times (1.97-2.04 at k=2, 3.88-4.10
# at k=4). In a numerics mode the gap is the mode's (bf16-autocast up to 1.4e-4, fp16 1.2e-5).
LOGGED_LOSS_MAX_GAP = 1e-6
LOGGED = {
    "tokens": "the step's token-normalized loss (each micro-batch's token sum / the step's count)",
    "mean": "the micro-batches' token means / k",
    "sum": "the sum of the micro-batches' token means (not divided by k)",
    "last": "the last micro-batch's token mean",
}


@keyword_only(2, "k")
def logged_loss(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    k: int,
    normalize: str = "tokens",
    loss_fn: LossFn | None = None,
    optimizer_fn: OptimizerFactory | None = None,
    labels: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: ModeLike = REFERENCE,
    contrast: bool = True,
) -> Checked:
    """The loss an accumulating loop logs (one value per optimizer step) is the large batch's
    token-mean loss at the same parameters. A copy of the model trains as a loop of each recipe
    does and the value it logs is what its step gave back: with each micro-batch's token sum over
    the step's token count (``normalize="tokens"``) the logged value is the large batch's; with each
    micro-batch's token mean / k (``"mean"``) it is off where token counts differ; the undivided sum
    of the micro-batches' means (``"sum"``, transformers #35438) is k times too large; the last
    micro-batch's own mean (``"last"``) is one micro-batch's. At each step the large batch's loss is
    computed on the copy's parameters before the step; the gap is the largest ``|logged / large -
    1|`` over steps. With ``contrast`` a copy logging the undivided sum runs too (the broken side).
    Models, labels and the loss as :func:`token_accumulation` takes them."""
    numerics = get(numerics)  # parsed once, where it enters
    if normalize not in LOGGED:
        raise Misuse(f"logged_loss: normalize={normalize!r}: one of {', '.join(LOGGED)}")
    batches = batch_list(batches, "logged_loss")
    optimizer_fn = optimizer_fn or sgd()
    sizes = [batch_size(b) for b in batches]
    if any(n % k for n in sizes):
        raise Misuse(
            f"logged_loss: a batch of {next(n for n in sizes if n % k)} does not split into k={k} micro-batches"
        )
    loss_fn, count = _tokens(model_fn, batches, loss_fn, labels, ignore_index, device, dtype, "logged_loss")

    def ratios_of(recipe: str) -> tuple[list[float], torch.dtype]:
        model, claim_dtype = build(model_fn, device, dtype, numerics)
        data = batches_on(batches, device, model)
        trains = "mean" if recipe == "last" else recipe  # a loop that logs the last micro-batch trains on means / k
        step = _accumulating_step(model, optimizer_fn(model.parameters()), loss_fn, numerics, device, trains, count)
        whole_loss = ModeLoss(model, loss_fn, numerics, device)
        out = []
        for whole in data:
            total = count(whole)
            with torch.no_grad():
                large = float(whole_loss(whole)) / total
            logged = float(step(split(whole, k), total))
            out.append((step.last() if recipe == "last" else logged) / large)
        return out, claim_dtype

    ratios, claim_dtype = ratios_of(normalize)
    broken = None
    if contrast and normalize == "tokens":
        broken = max(abs(r - 1) for r in ratios_of("sum")[0])
    return Checked(
        "logged_loss",
        f"logging {LOGGED[normalize]} under {k} micro-batches gives the large batch's token-mean loss",
        "equal",
        max(abs(r - 1) for r in ratios),
        LOGGED_LOSS_MAX_GAP,
        {"k": k, "normalize": normalize, "ratio_per_step": ratios, "device": device, "dtype": str(claim_dtype)},
        numerics,
        claim_dtype,
        broken=broken,
        broken_recipe=f"logging {LOGGED['sum']}",
    )


# --------------------------------------------------------------------------- across DDP ranks


def _all_reduced(count: int, device: str) -> int:
    import torch.distributed as dist

    total = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def ddp_token_rank(
    rank: int,
    world: int,
    *,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn = token_sum,
    optimizer_fn: OptimizerFactory | None = None,
    k: int = 1,
    count: str = "global",
    labels: str = "shifted",
    ignore_index: int = IGNORE_INDEX,
    device: str | torch.device = "cpu",
    numerics: ModeLike = REFERENCE,
) -> dict[str, Any]:
    """One rank of :func:`ddp_token_accumulation`: DDP over this rank's shard of each batch (its
    micro-batches under ``no_sync()``), each micro-batch's token sum divided by the step's token
    count: ``count="global"``, all ranks' (all-reduced), times the world size (DDP averages the
    ranks' gradients); ``count="local"``, this rank's own (the per-rank recipe). Against one process
    on the whole batch over its tokens. Returns per step the parameter gap, the token counts, and
    the replica's final parameters (plain data: a launched job writes it as JSON)."""
    numerics = get(numerics)  # parsed once, where it enters
    from torch.nn.parallel import DistributedDataParallel as DDP

    if count not in ("global", "local"):
        raise Misuse(f"count={count!r}: 'global' (all ranks' tokens) or 'local' (this rank's)")
    optimizer_fn = optimizer_fn or sgd()
    device = str(device)
    (replica, claim_dtype), (reference, _) = (build(model_fn, device, None, numerics) for _ in range(2))
    model = DDP(replica)
    tokens = functools.partial(token_count, ignore_index=ignore_index, labels=labels)
    step = _accumulating_step(model, optimizer_fn(model.parameters()), loss_fn, numerics, device, "tokens", tokens)
    step_ref = _accumulating_step(
        reference, optimizer_fn(reference.parameters()), loss_fn, numerics, device, "tokens", tokens
    )

    synced_last = no_sync_but_last(model, k)
    gaps, counts = [], []
    for whole in batches_on(batches, device, reference):
        mine = shard(whole, rank, world)
        local = tokens(mine)
        total = _all_reduced(local, device) / world if count == "global" else local
        step(split(mine, k), total, synced_last)
        step_ref([whole], tokens(whole))
        gaps.append(parameter_gap(model.module.parameters(), reference.parameters()))
        counts.append(local)
    return {
        "gaps": gaps,
        "tokens": counts,
        "count": count,
        "parameters": _as_lists(model.module.parameters()),
        "dtype": str(claim_dtype),
        "numerics": str(numerics),
        "micro_batches": k,
        "scaler_skips": [step.step.skipped, step_ref.step.skipped],
    }


def ddp_token_verdict(
    results: Sequence[dict[str, Any]], bound: float | None = None, broken: Sequence[dict[str, Any]] | None = None
) -> Checked:
    """The claim of :func:`ddp_token_accumulation` judged on its ranks' results (of
    :func:`ddp_token_rank`): every rank's parameters stay within ``bound`` (default: the dtype's
    tolerance) of one process on the whole batch, and the replicas are identical. ``broken``: the
    results of the same ranks with each rank's own count (``count="local"``), the broken side,
    which must be beyond the bound. Not measured with one rank."""

    first = results[0]
    gaps, replica_gap = _rank_gaps(results)
    result = Checked(
        "ddp_token_accumulation",
        f"{len(results)} DDP ranks, each micro-batch's token sum over the {first['count']} token count, take the "
        f"steps of one process with the whole batch's token mean",
        "equal",
        max([*gaps, replica_gap]),
        rtol(first["dtype"]) if bound is None else bound,
        {
            "world": len(results),
            "count": first["count"],
            "tokens_per_rank_and_step": [r["tokens"] for r in results],
            "rank_gaps": gaps,
            "replica_gap": replica_gap,
            "dtype": first["dtype"],
            "scaler_skips": [n for r in results for n in r.get("scaler_skips", ())],
        },
        first["numerics"],
        first["dtype"],
        broken=max(_rank_gaps(broken)[0]) if broken else None,
        broken_recipe="each rank's own token count",
    )
    if needs_ranks(result, results):
        return result
    if replica_gap != 0:
        result.refute(f"the replicas differ between ranks (gap {replica_gap:.3g})")
    return result


def ddp_token_accumulation(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    world: int = 2,
    k: int = 1,
    count: str = "global",
    loss_fn: LossFn | None = None,
    optimizer_fn: OptimizerFactory | None = None,
    labels: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    numerics: ModeLike = REFERENCE,
    bound: float | None = None,
    contrast: bool = True,
    micro_batches: int | None = None,
) -> Checked:
    """Token-normalized accumulation across ``world`` gloo ranks (CPU processes): with each
    micro-batch's token sum divided by the step's *global* token count (all-reduced over the ranks,
    times the world size DDP divides by), DDP takes the steps of one process on the whole batch's
    token mean; with each rank's own count (``count="local"``) it does not where the ranks hold
    different numbers of tokens; each rank accumulates ``k`` micro-batches under ``no_sync()``
    (``micro_batches=`` is the 0.3 name of ``k``). With ``contrast`` the ranks run the local count
    too (the broken side, which must be beyond the bound). Models, labels and the loss as
    :func:`token_accumulation` takes them. ``model_fn``, ``loss_fn`` and ``optimizer_fn`` must be
    picklable (module-level functions, ``functools.partial``). The ranks run :func:`ddp_token_rank`;
    :func:`ddp_token_verdict` judges them."""
    numerics = get(numerics)  # parsed once, where it enters
    k = renamed_k(k, micro_batches, "ddp_token_accumulation")
    batches = for_ranks(batch_list(batches, "ddp_token_accumulation"), world, k)
    probe, _ = build(model_fn, "cpu", None)
    convention = label_convention(labels, probe)
    loss_fn = _loss_for(loss_fn, convention)
    _token_preconditions(probe, loss_fn, batches[0], "cpu", "ddp_token_accumulation")
    kwargs = {"model_fn": model_fn, "batches": batches, "loss_fn": loss_fn, "optimizer_fn": optimizer_fn, "k": k}
    kwargs |= {"numerics": numerics, "labels": convention, "ignore_index": ignore_index}
    results = run_ranks(with_keywords, world, ddp_token_rank, kwargs | {"count": count}, mode=numerics)
    broken = None
    if contrast and count == "global":
        broken = run_ranks(with_keywords, world, ddp_token_rank, kwargs | {"count": "local"}, mode=numerics)
    return ddp_token_verdict(results, bound, broken)


__all__ = [
    "LOGGED_LOSS_MAX_GAP",
    "ddp_token_accumulation",
    "ddp_token_rank",
    "ddp_token_verdict",
    "logged_loss",
    "model_token_sum",
    "token_accumulation",
    "token_count",
    "token_sum",
    "unshifted_token_sum",
]
