"""S002-11..15 as experiments run on each rank of a real process group: every function here is
``fn(rank, world_size, ...)`` and returns plain data for the tests to judge. The ranks are started
by the test (trainclaims.ranks, loopback, gloo) or by a launcher on a cluster (torchrun, srun:
trainclaims.launch runs :func:`plan`'s experiments, the same calls the tests make).

Every rank also trains, from the same seed, the single-process reference the claim compares
against (one batch of k*b, the global batch), so rank and reference see the same numbers. Models
and batches live on :func:`rank_device` (the rank's GPU under a launcher with NCCL, else CPU)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from trainclaims import numerics as num
from trainclaims.checks import relative_gap

DTYPES = {"float64": torch.float64, "float32": torch.float32}
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 1e-3
B, SEED = 8, 0  # batch per rank, seed: the tests' and a launched job's experiments are the same calls
DDP_STEPS, NO_SYNC_STEPS, FSDP_STEPS = 5, 3, 3
MICRO_BATCHES = (2, 4)

_RANK_DEVICE = ["cpu"]


def set_rank_device(device: str) -> None:
    """Where this rank's models and batches live (trainclaims.launch: ``cuda:LOCAL_RANK`` with NCCL)."""
    _RANK_DEVICE[0] = device


def rank_device() -> torch.device:
    return torch.device(_RANK_DEVICE[0])


def mlp(seed: int, dtype: torch.dtype, bn: bool = False, sync_bn: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    norm: list[nn.Module] = [nn.BatchNorm1d(16)] if bn else []
    model = nn.Sequential(nn.Linear(6, 16), *norm, nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model.to(rank_device())


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def global_batch(seed: int, step: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch, the same on every rank (mean 1, std 2: BN has work to do)."""
    g = torch.Generator().manual_seed(seed * 1000 + step)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64).mul(2).add(1).to(dtype)
    return x.to(rank_device()), torch.randint(3, (n,), generator=g).to(rank_device())


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def ddp_module(model: nn.Module, **kwargs: Any) -> DDP:
    return DDP(model, **kwargs)


def mode_dtype(dtype: torch.dtype, numerics: str) -> torch.dtype:
    """float32 where a numerics mode other than ieee runs a float64 experiment: autocast leaves
    float64 alone, and float32 is what users train in such a mode."""
    return dtype if numerics == num.REFERENCE else torch.float32


def loss_in(numerics: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with num.autocast(numerics, x.device):
        return F.cross_entropy(model(x), y)


def buffers_kwargs(forward_sync: bool) -> dict[str, bool]:
    """DDP's switch for broadcasting rank 0's buffers before each forward: ``forward_sync_buffers``
    where this torch has it (torch 2.13 deprecates ``broadcast_buffers`` with a FutureWarning: ``trainclaims.known.DEPRECATIONS``), else
    ``broadcast_buffers``."""
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": forward_sync}
    return {"broadcast_buffers": forward_sync}


# --------------------------------------------------------------------------- S002-11


def ddp_against_one_large_batch(
    rank: int, world: int, dtype_name: str, steps: int, b: int, seed: int, numerics: str = "ieee"
) -> dict:
    """k ranks with batch b each (no BN) against one process with batch k*b, ``steps`` SGD steps
    (momentum, weight decay), both in the ``numerics`` mode: the relative parameter gap after each
    step, and this rank's final parameters (to compare replicas across ranks)."""
    dtype = DTYPES[dtype_name]
    model, reference = ddp_module(mlp(seed, dtype)), mlp(seed, dtype)
    run, run_ref = num.compiled(model, numerics), num.compiled(reference, numerics)
    scaler, scaler_ref = num.grad_scaler(numerics, rank_device()), num.grad_scaler(numerics, rank_device())
    opt, opt_ref = sgd(model), sgd(reference)
    gaps = []
    for i in range(steps):
        x, y = global_batch(seed, i, world * b, dtype)
        opt.zero_grad()
        num.backward(loss_in(numerics, run, x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]), scaler)
        num.step(opt, scaler)
        opt_ref.zero_grad()
        num.backward(loss_in(numerics, run_ref, x, y), scaler_ref)
        num.step(opt_ref, scaler_ref)
        gaps.append(relative_gap(flat(model.module), flat(reference)))
    return {"gaps": gaps, "params": flat(model.module).tolist()}


# --------------------------------------------------------------------------- S002-12


def no_sync_accumulation(
    rank: int, world: int, micro: int, steps: int, b: int, seed: int, numerics: str = "ieee"
) -> dict:
    """m micro-batches per step (loss/m), all but the last inside ``no_sync()``, against one step of
    batch m*k*b, both in the ``numerics`` mode (float64 in ieee, float32 in another); the gradient
    all-reduces counted by a communication hook."""
    dtype = mode_dtype(torch.float64, numerics)
    model, reference = ddp_module(mlp(seed, dtype)), mlp(seed, dtype)
    run, run_ref = num.compiled(model, numerics), num.compiled(reference, numerics)
    scaler, scaler_ref = num.grad_scaler(numerics, rank_device()), num.grad_scaler(numerics, rank_device())
    calls = [0]

    def counting_allreduce(state, bucket):
        calls[0] += 1
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_allreduce)
    opt, opt_ref = sgd(model), sgd(reference)
    per_step, gaps = [], []
    for i in range(steps):
        x, y = global_batch(seed, i, micro * world * b, dtype)
        mine = [
            (
                x[(i * world + rank) * b : (i * world + rank + 1) * b],
                y[(i * world + rank) * b : (i * world + rank + 1) * b],
            )
            for i in range(micro)
        ]
        before = calls[0]
        opt.zero_grad()
        for j, (xb, yb) in enumerate(mine):
            if j < micro - 1:
                with model.no_sync():
                    num.backward(loss_in(numerics, run, xb, yb) / micro, scaler)
            else:
                num.backward(loss_in(numerics, run, xb, yb) / micro, scaler)
        num.step(opt, scaler)
        per_step.append(calls[0] - before)
        opt_ref.zero_grad()
        num.backward(loss_in(numerics, run_ref, x, y), scaler_ref)
        num.step(opt_ref, scaler_ref)
        gaps.append(relative_gap(flat(model.module), flat(reference)))
    return {"allreduces_per_step": per_step, "gaps": gaps}


# --------------------------------------------------------------------------- S002-13


def ddp_batchnorm(rank: int, world: int, forward_sync: bool, b: int, seed: int, numerics: str = "ieee") -> dict:
    """DDP + BatchNorm against BN over the global batch: the gap in outputs and (all-reduced)
    gradients at the same weights, and what the running means do over two training steps; in the
    ``numerics`` mode (float64 in ieee, float32 in another)."""
    dtype = mode_dtype(torch.float64, numerics)
    model = ddp_module(mlp(seed, dtype, bn=True), **buffers_kwargs(forward_sync))
    reference = mlp(seed, dtype, bn=True)
    run, run_ref = num.compiled(model, numerics), num.compiled(reference, numerics)
    bn = model.module[1]
    out = {"running_mean": [], "batch_mean": []}
    for step in range(2):
        x, y = global_batch(seed, step, world * b, dtype)
        xr, yr = x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]
        model.zero_grad()
        with num.autocast(numerics, xr.device):
            logits = run(xr)
            loss = F.cross_entropy(logits, yr)
        loss.backward()
        with torch.no_grad():  # what BN saw on this rank: its own batch's mean of the first layer's output
            out["batch_mean"].append(model.module[0](xr).mean(0).tolist())
        out["running_mean"].append(bn.running_mean.tolist())
        if step == 0:
            reference.zero_grad()
            with num.autocast(numerics, x.device):
                ref_logits = run_ref(x)
                ref_loss = F.cross_entropy(ref_logits, y)
            ref_loss.backward()
            out["output_gap"] = relative_gap(
                logits.detach().double(), ref_logits.detach().double()[rank * b : (rank + 1) * b]
            )
            grads = torch.cat([p.grad.flatten() for p in model.module.parameters()])
            ref_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
            out["gradient_gap"] = relative_gap(grads, ref_grads)
    out["momentum"] = bn.momentum
    return out


# --------------------------------------------------------------------------- S002-14


def sync_batchnorm(rank: int, world: int, backend_device: str, b: int, seed: int) -> dict:
    """DDP + SyncBatchNorm against BN over the global batch (outputs, gradients, running stats).
    On CPU modules PyTorch refuses SyncBatchNorm: the error's text is returned instead."""
    dtype = torch.float64 if backend_device == "cpu" else torch.float32
    if backend_device == "cpu":
        device = torch.device("cpu")
    else:  # under a launcher the rank's own GPU (LOCAL_RANK); spawned here, GPU i for rank i
        device = rank_device() if rank_device().type == "cuda" else torch.device(f"cuda:{rank}")
    x, y = (t.to(device) for t in global_batch(seed, 0, world * b, dtype))
    xr, yr = x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]
    try:
        model = ddp_module(mlp(seed, dtype, bn=True, sync_bn=True).to(device))
        logits = model(xr)
    except (ValueError, RuntimeError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    F.cross_entropy(logits, yr).backward()
    reference = mlp(seed, dtype, bn=True).to(device)
    ref_logits = reference(x.to(device))
    F.cross_entropy(ref_logits, y.to(device)).backward()
    grads = torch.cat([p.grad.flatten() for p in model.module.parameters()])
    ref_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
    return {
        "output_gap": relative_gap(logits.detach(), ref_logits.detach()[rank * b : (rank + 1) * b]),
        "gradient_gap": relative_gap(grads, ref_grads),
        "running_mean_gap": relative_gap(model.module[1].running_mean, reference[1].running_mean),
        "running_var_gap": relative_gap(model.module[1].running_var, reference[1].running_var),
    }


# --------------------------------------------------------------------------- S002-15


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


def fsdp_against_one_large_batch(
    rank: int, world: int, dtype_name: str, steps: int, b: int, seed: int, numerics: str = "ieee"
) -> dict:
    """FSDP2 (``fully_shard`` on each Linear and on the root) over k ranks with batch b each, against
    one process with batch k*b and against DDP with the same batches, ``steps`` SGD steps (momentum,
    weight decay), all in the ``numerics`` mode: the relative gap of the full parameters (gathered
    from their shards) after each step to each, and how much of the parameters this rank holds.
    Where this torch or device cannot shard, ``{"unsupported": why}``."""
    fully_shard, why = fsdp2()
    if fully_shard is None:
        return {"unsupported": why}
    dtype = DTYPES[dtype_name]
    model, reference, replica = mlp(seed, dtype), mlp(seed, dtype), ddp_module(mlp(seed, dtype))
    try:
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    except (RuntimeError, NotImplementedError, ValueError, AssertionError) as err:
        return {"unsupported": f"fully_shard on {rank_device().type} with torch {torch.__version__}: {err}"}
    full_numel = sum(p.numel() for p in reference.parameters())
    local_numel = sum(p.to_local().numel() for p in model.parameters())
    run, run_ref, run_ddp = (num.compiled(m, numerics) for m in (model, reference, replica))
    scalers = [num.grad_scaler(numerics, rank_device()) for _ in range(3)]
    opts = [sgd(m) for m in (model, reference, replica)]
    gaps, ddp_gaps = [], []
    for i in range(steps):
        x, y = global_batch(seed, i, world * b, dtype)
        mine = x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]
        for net, opt, scaler, (xb, yb) in zip(
            (run, run_ref, run_ddp), opts, scalers, (mine, (x, y), mine), strict=True
        ):
            opt.zero_grad()
            num.backward(loss_in(numerics, net, xb, yb), scaler)
            num.step(opt, scaler)
        full = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
        gaps.append(relative_gap(full, flat(reference)))
        ddp_gaps.append(relative_gap(full, flat(replica.module)))
    return {"gaps": gaps, "ddp_gaps": ddp_gaps, "local_fraction": local_numel / full_numel}


# --------------------------------------------------------------------------- what a launched job runs


@dataclass(frozen=True)
class Experiment:
    fn: Callable[..., dict]
    args: tuple

    @property
    def name(self) -> str:
        return f"{self.fn.__name__}({', '.join(map(repr, self.args))})"

    @property
    def key(self) -> str:
        from trainclaims.ranks import experiment_key

        return experiment_key(self.fn, self.args)


def measures(mode: str, dtype: str) -> bool:
    """Whether a float experiment in ``dtype`` measures ``mode``: autocast leaves float64 alone,
    so its float32 instance measures an autocast mode."""
    return not (mode in num.AUTOCAST and dtype == "float64")


def plan(modes: tuple[str, ...] = (num.REFERENCE,), device: str = "cpu") -> list[Experiment]:
    """Every rank experiment of S002-11..15's tests in these numerics modes, with the arguments the
    tests call them with (trainclaims.launch runs these on a launched job's ranks)."""
    out = []
    for mode in modes:
        measured = [dtype for dtype in DTYPES if measures(mode, dtype)]
        out += [Experiment(ddp_against_one_large_batch, (dtype, DDP_STEPS, B, SEED, mode)) for dtype in measured]
        out += [Experiment(no_sync_accumulation, (m, NO_SYNC_STEPS, B, SEED, mode)) for m in MICRO_BATCHES]
        out.append(Experiment(ddp_batchnorm, (True, B, SEED, mode)))
        if mode == num.REFERENCE:
            out.append(Experiment(ddp_batchnorm, (False, B, SEED, mode)))
        out += [Experiment(fsdp_against_one_large_batch, (dtype, FSDP_STEPS, B, SEED, mode)) for dtype in measured]
    out.append(Experiment(sync_batchnorm, ("cuda" if device.startswith("cuda") else "cpu", B, SEED)))
    return out


# --------------------------------------------------------------------------- faults and speed


def raises_on_rank(rank: int, world: int, bad_rank: int) -> str:
    """``bad_rank`` raises; the others wait in a collective that cannot complete without it."""
    if rank == bad_rank:
        raise ValueError(f"boom on rank {rank}")
    dist.all_reduce(torch.ones(1))
    return "finished"


def ddp_step_throughput(rank: int, world: int, global_batch_size: int, rounds: int) -> dict:
    """Seconds per DDP training step of the seed FC net (3072-300-10) with ``global_batch_size``
    split over the ranks (median of ``rounds`` after 3 warm-up steps), and each step's time over
    that of this rank's matmuls on the step's GEMM shapes, timed right before it (the benchmark
    gate's step costs, trainclaims.bench.step_costs)."""
    import statistics
    import time

    from trainclaims.bench import GemmProbe, linear_gemms
    from trainclaims.families.nets import seed_fc

    torch.manual_seed(0)
    model = ddp_module(seed_fc(3072)) if world > 1 else seed_fc(3072)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    b = global_batch_size // world
    x, y = torch.rand(b, 3, 32, 32), torch.randint(10, (b,))
    probe = GemmProbe(linear_gemms(seed_fc(3072), b), torch.float32, "cpu")
    times = []
    for i in range(rounds + 3):
        probe()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    costs = [t / p for t, p in zip(times, probe.times[3:], strict=True)]
    return {"median_s": statistics.median(times), "rounds_s": times, "costs": costs}
