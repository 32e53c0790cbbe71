"""Data-parallel training against one process.

Each data-parallel check is a rank function (``fn(rank, world, ...)``, run on every rank of a
gloo or NCCL process group: spawned on this machine by the check, or started by torchrun; see
trainclaims.launch) that trains both sides of the claim on the rank itself, from the same
factory, and returns plain data; and a verdict function that turns the ranks' results into a
:class:`Checked`. The check itself is the two, with ranks spawned here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from trainclaims import numerics as num
from trainclaims.checks.base import (
    BATCHNORM_MIN_GAP,
    Checked,
    ModelFactory,
    OptimizerFactory,
    batch_list,
    batches_on,
    batchnorms,
    build,
    for_ranks,
    parameter_gap,
    relative_gap,
    rtol,
    running_stats,
    sgd,
)
from trainclaims.checks.preconditions import mean_cross_entropy
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, ModeLike, get
from trainclaims.ranks import run_ranks, with_keywords
from trainclaims.step import Batch, LossFn, ModeLoss, Step, shard, split


def _forward_sync_kwargs(forward_sync: bool) -> dict[str, bool]:
    """DDP's switch for broadcasting rank 0's buffers before each forward: ``forward_sync_buffers``
    where this torch has it (torch 2.13 deprecates ``broadcast_buffers`` with a FutureWarning:
    ``trainclaims.known.DEPRECATIONS``), else ``broadcast_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": forward_sync}
    return {"broadcast_buffers": forward_sync}


def _as_lists(tensors: Iterable[torch.Tensor]) -> list[list[float]]:
    # plain lists: a tensor sent through the queue is shared memory that dies with its process,
    # and a launched job writes its ranks' results as JSON
    return [t.detach().cpu().double().flatten().tolist() for t in tensors]


def _tensors(lists: Iterable[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor(t, dtype=torch.float64) for t in lists]


def renamed_k(k: int, micro_batches: int | None, check: str) -> int:
    """``k``, or the 0.3 keyword ``micro_batches=`` (with a warning): one name, k, for the
    micro-batches of a step across the checks."""
    if micro_batches is None:
        return k
    import warnings

    warnings.warn(
        f"{check}(micro_batches=...) is deprecated and will be removed in trainclaims 0.5: pass k=... (the name every "
        "check gives the micro-batches of a step)",
        DeprecationWarning,
        stacklevel=3,
    )
    return micro_batches


def needs_ranks(result: Checked, results: Sequence[Any]) -> bool:
    """Mark ``result`` not measured where fewer than 2 ranks ran (a launched job on one GPU):
    nothing was averaged or sharded, so nothing was compared; True where it was so marked."""
    if len(results) >= 2:
        return False
    result.unmeasured = f"needs 2 ranks: {len(results)} ran, and a data-parallel claim compares ranks"
    return True


def _rank_gaps(results: Sequence[dict[str, Any]]) -> tuple[list[float], float]:
    """Each rank's largest gap to the one-process reference over its steps, and the largest gap
    between a rank's final parameters and rank 0's (0 where the replicas are identical)."""
    first = results[0]
    gaps = [max(r["gaps"]) for r in results]
    return gaps, max(parameter_gap(_tensors(r["parameters"]), _tensors(first["parameters"])) for r in results)


def no_sync_but_last(model: Any, k: int, inner: Callable[[int], Any] | None = None) -> Callable[[int], Any]:
    """The context of micro-batch i of k under DDP: ``model.no_sync()`` for every micro-batch but the
    last (whose backward all-reduces), inside ``inner(i)`` where given. The one way the checks'
    rank functions accumulate under DDP."""

    @contextlib.contextmanager
    def context(i: int) -> Iterator[None]:
        with inner(i) if inner is not None else contextlib.nullcontext():
            with contextlib.nullcontext() if i == k - 1 else model.no_sync():
                yield

    return context


def ddp_rank(
    rank: int,
    world: int,
    *,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn = mean_cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    k: int = 1,
    device: str | torch.device = "cpu",
    numerics: ModeLike = REFERENCE,
    comm_hook: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """One rank of :func:`ddp_against_one_process`: DDP over this rank's 1/world shard of each
    batch (with ``k`` > 1 micro-batches accumulated under ``no_sync()``, loss/k, the last outside it),
    and the one-process reference on the whole batch, both from ``model_fn`` in the ``numerics``
    mode. Returns per step the parameter gap between the two and how many of the rank's backward
    passes all-reduced (counted through a communication hook), and the replica's final parameters.
    ``comm_hook``: the gradient communication DDP runs (``(state, bucket) -> Future``, a
    module-level function; default: its all-reduce that averages over the ranks)."""
    numerics = get(numerics)  # parsed once, where it enters
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    optimizer_fn = optimizer_fn or sgd()
    device = str(device)
    (replica, claim_dtype), (reference, _) = (build(model_fn, device, None, numerics) for _ in range(2))
    model = DDP(replica)
    reductions = [0]

    def counting(state, bucket):  # unannotated: DDP refuses a hook whose bucket annotation is not GradBucket
        reductions[0] += 1
        return (comm_hook or default_hooks.allreduce_hook)(state, bucket)

    model.register_comm_hook(None, counting)
    alone = build(model_fn, device, None, numerics)[0]  # the broken side: this rank's shard, nothing averaged
    step, step_ref, step_alone = (
        Step(m, optimizer_fn(m.parameters()), loss_fn, numerics, device) for m in (model, reference, alone)
    )
    synced = [0]  # this step's backward passes that all-reduced

    @contextlib.contextmanager
    def counted(i: int) -> Iterator[None]:  # whether micro-batch i's backward all-reduced
        before = reductions[0]
        yield
        synced[0] += reductions[0] > before

    backward_of = no_sync_but_last(model, k, counted)
    gaps, alone_gaps, synced_backwards = [], [], []
    for whole in batches_on(batches, device, reference):
        synced[0] = 0
        mine = split(shard(whole, rank, world), k)
        step(mine, backward_of)
        synced_backwards.append(synced[0])
        step_ref([whole])
        step_alone(mine)
        gaps.append(parameter_gap(model.module.parameters(), reference.parameters()))
        alone_gaps.append(parameter_gap(alone.parameters(), reference.parameters()))
    return {
        "gaps": gaps,
        "alone_gaps": alone_gaps,
        "synced_backwards": synced_backwards,
        "parameters": _as_lists(model.module.parameters()),
        "dtype": str(claim_dtype),
        "numerics": str(numerics),
        "micro_batches": k,
        "scaler_skips": [step.skipped, step_ref.skipped],  # the DDP replica's and the reference's
    }


def ddp_verdict(results: Sequence[dict[str, Any]], bound: float | None = None) -> Checked:
    """The claim of :func:`ddp_against_one_process` judged on its ranks' results (of
    :func:`ddp_rank`, spawned here or under a launcher): every rank's parameters stay within
    ``bound`` (default: :data:`TOLERANCE`'s rtol for the dtype) of the one-process reference after
    every step, the replicas are identical, and each step all-reduced once. The broken side: a copy
    on each rank that trained on its own shard with nothing averaged, which must be beyond the bound.
    Not measured with one rank (nothing was averaged)."""
    first = results[0]
    gaps, replica_gap = _rank_gaps(results)
    synced = [r["synced_backwards"] for r in results]
    dtype = num.dtype_of(first["dtype"])
    micro = first["micro_batches"]
    result = Checked(
        "ddp_against_one_process",
        f"{len(results)} DDP ranks take the same {len(first['gaps'])} steps as one process with the whole batch"
        + (f" ({micro} micro-batches under no_sync)" if micro > 1 else ""),
        "equal",
        max([*gaps, replica_gap]),
        rtol(dtype) if bound is None else bound,
        {
            "world": len(results),
            "steps": len(first["gaps"]),
            "micro_batches": micro,
            "rank_gaps": gaps,
            "gaps_rank0": first["gaps"],
            "replica_gap": replica_gap,
            "synced_backwards_per_step": synced[0],
            "dtype": first["dtype"],
            # every rank's and reference's GradScaler skips, where a mode trains through one
            "scaler_skips": [n for r in results for n in r.get("scaler_skips", ())],
        },
        first["numerics"],
        dtype,
        broken=min(max(r["alone_gaps"]) for r in results) if "alone_gaps" in first else None,
        broken_recipe="each rank on its own shard, nothing averaged",
    )
    if needs_ranks(result, results):
        return result
    if replica_gap != 0:
        result.refute(f"the replicas differ between ranks (gap {replica_gap:.3g})")
    elif any(n != 1 for per_rank in synced for n in per_rank):  # no_sync: one all-reduce round a step, not m
        result.refute(f"backward passes that all-reduced, per step and rank: {synced} (expected 1 each)")
    return result


def ddp_against_one_process(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    world: int = 2,
    k: int = 1,
    loss_fn: LossFn = mean_cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    numerics: ModeLike = REFERENCE,
    bound: float | None = None,
    comm_hook: Callable[..., Any] | None = None,
    micro_batches: int | None = None,
) -> Checked:
    """DDP averages gradients over ranks: ``world`` gloo ranks (CPU processes), each with its
    1/world shard of every batch, take the same optimizer steps as one process on the whole batch,
    and the replicas stay identical. With ``k`` > 1 each rank accumulates k micro-batches under
    ``no_sync()`` (loss/k, the last outside it): still one step of the whole batch, with one
    all-reduce round per step, not k (counted through a communication hook). (``micro_batches=``
    is the 0.3 name of ``k``.)

    ``model_fn``, ``loss_fn`` and ``optimizer_fn`` go to the rank processes: they must be
    picklable (module-level functions, ``functools.partial``, :func:`sgd`). Holds for a model
    without BatchNorm (each rank normalizes with its own shard's statistics). The ranks run
    :func:`ddp_rank`; :func:`ddp_verdict` judges them (the two a launched job uses). ``comm_hook``
    replaces DDP's averaging all-reduce (a hook of your own, to check it)."""
    numerics = get(numerics)  # parsed once, where it enters
    k = renamed_k(k, micro_batches, "ddp_against_one_process")
    batches = for_ranks(batch_list(batches, "ddp_against_one_process"), world, k)
    kwargs = {"model_fn": model_fn, "batches": batches, "loss_fn": loss_fn, "optimizer_fn": optimizer_fn, "k": k}
    kwargs |= {"numerics": numerics, "comm_hook": comm_hook}
    results = run_ranks(with_keywords, world, ddp_rank, kwargs, mode=numerics)
    return ddp_verdict(results, bound)


def _batch_mean(t: torch.Tensor) -> list[float]:
    """The per-channel mean a BatchNorm layer computes of its input (channels on dim 1)."""
    dims = [0, *range(2, t.dim())]
    return t.detach().double().mean(dims).cpu().tolist()


def ddp_batchnorm_rank(
    rank: int,
    world: int,
    *,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn = mean_cross_entropy,
    forward_sync: bool = True,
    device: str | torch.device = "cpu",
    numerics: ModeLike = REFERENCE,
) -> dict[str, Any]:
    """One rank of :func:`ddp_batchnorm`: a DDP forward and backward (no optimizer step) on this
    rank's shard of each batch, with rank 0's buffers broadcast before each forward where
    ``forward_sync`` (DDP's default). At the first batch, against one process on the whole batch
    at the same weights: the relative gap of this rank's outputs (to the reference's rows of its
    shard) and of the all-reduced gradients, and the gap of every BN layer's running mean and
    variance to those of a copy that saw only this rank's shard. Per batch, each BN layer's input
    mean (what it normalized with) and running mean after the forward."""
    numerics = get(numerics)  # parsed once, where it enters
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = str(device)
    replica, claim_dtype = build(model_fn, device, None, numerics)
    model = DDP(replica, **_forward_sync_kwargs(forward_sync))
    norms = batchnorms(model.module)
    seen: list[list[float]] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(_batch_mean(args[0]))) for m in norms]
    loss_of = ModeLoss(model, loss_fn, numerics, device)
    out: dict[str, Any] = {"batch_means": [], "running_means": [], "momentum": [m.momentum for m in norms]}
    for step, (x, y) in enumerate(batches_on(batches, device, replica)):
        xr, yr = shard((x, y), rank, world)
        model.zero_grad()
        seen.clear()
        logits, loss = loss_of.with_output((xr, yr))
        loss.backward()
        out["batch_means"].append(list(seen))
        out["running_means"].append([m.running_mean.double().cpu().tolist() for m in norms])
        if step == 0:
            reference, alone = build(model_fn, device, None, numerics)[0], build(model_fn, device, None, numerics)[0]
            ref_logits, ref_loss = ModeLoss(reference, loss_fn, numerics, device).with_output((x, y))
            with torch.no_grad(), num.autocast(numerics, device):
                alone(xr)
            ref_loss.backward()
            out["output_gap"] = relative_gap(logits, ref_logits[rank * xr.shape[0] : (rank + 1) * xr.shape[0]])
            out["gradient_gap"] = relative_gap(
                [p.grad for p in model.module.parameters() if p.grad is not None],
                [p.grad for p in reference.parameters() if p.grad is not None],
            )
            out["running_stat_gap"] = parameter_gap(running_stats(model.module), running_stats(alone))
    for h in hooks:
        h.remove()
    out["dtype"], out["numerics"] = str(claim_dtype), str(numerics)
    return out


def ddp_batchnorm_verdict(results: Sequence[dict[str, Any]], min_gap: float = BATCHNORM_MIN_GAP) -> Checked:
    """The claim of :func:`ddp_batchnorm` judged on its ranks' results (of
    :func:`ddp_batchnorm_rank`): every rank's outputs and the averaged gradient differ from one
    process's on the whole batch by more than ``min_gap`` (relative), and each rank's running
    statistics after its first batch are its own shard's (to the dtype's rounding)."""
    outputs = [r["output_gap"] for r in results]
    gradients = [r["gradient_gap"] for r in results]
    stat_gaps = [r["running_stat_gap"] for r in results]
    first = results[0]
    result = Checked(
        "ddp_batchnorm",
        f"with BatchNorm, {len(results)} DDP ranks' outputs and averaged gradient differ from one process's "
        "on the whole batch",
        "differs",
        min([*outputs, *gradients]),
        min_gap,
        {
            "world": len(results),
            "output_gap_per_rank": outputs,
            "gradient_gap_per_rank": gradients,
            "rank_running_stat_gaps": stat_gaps,
            "dtype": first["dtype"],
        },
        first["numerics"],
        first["dtype"],
    )
    bound = rtol(result.mode.compute_dtype(first["dtype"]))
    if needs_ranks(result, results):
        return result
    if any(g > bound for g in stat_gaps):
        result.refute(f"but a rank's running statistics are not its own shard's: gaps {stat_gaps} (bound {bound:g})")
    return result


def ddp_batchnorm(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    world: int = 2,
    loss_fn: LossFn = mean_cross_entropy,
    numerics: ModeLike = REFERENCE,
    min_gap: float = BATCHNORM_MIN_GAP,
) -> Checked:
    """BatchNorm under DDP normalizes with each rank's own batch: ``world`` gloo ranks, each with its
    shard of each of ``batches``, give (at the first) outputs and an averaged gradient that differ
    from one process's on the whole batch (by more than ``min_gap``, relative), and each rank's running statistics are
    those of its own shard (equal, to rounding, to a copy's that saw only that shard).
    SyncBatchNorm is what makes them agree; it needs CUDA (and NCCL) and is not checked here. The
    ranks run :func:`ddp_batchnorm_rank`; :func:`ddp_batchnorm_verdict` judges them."""
    numerics = get(numerics)  # parsed once, where it enters
    batches = for_ranks(batch_list(batches, "ddp_batchnorm"), world)
    if not batchnorms(model_fn()):
        raise Misuse("ddp_batchnorm: the model has no BatchNorm layer")
    kwargs = {"model_fn": model_fn, "batches": batches, "loss_fn": loss_fn, "numerics": numerics}
    results = run_ranks(with_keywords, world, ddp_batchnorm_rank, kwargs, mode=numerics)
    return ddp_batchnorm_verdict(results, min_gap)


__all__ = [
    "ddp_against_one_process",
    "ddp_batchnorm",
    "ddp_batchnorm_rank",
    "ddp_batchnorm_verdict",
    "ddp_rank",
    "ddp_verdict",
]
