"""S002-11..15 as experiments run on each rank of a real process group: every function here is
``fn(rank, world_size, ...)`` and returns plain data for the tests to judge. The ranks are started
by the test (trainclaims.ranks, loopback, gloo) or by a launcher on a cluster (torchrun, srun:
trainclaims.launch runs :func:`plan`'s experiments, the same calls the tests make).

S002-11..13 are trainclaims.checks' data-parallel checks on the seed MLP (the rank functions
``checks.ranks.ddp_rank`` and ``checks.ranks.ddp_batchnorm_rank``, judged by ``ddp_verdict`` and
``ddp_batchnorm_verdict``): the checks users run on their own models. Every rank also
trains, from the same seed, the single-process reference the claim compares against (one batch of
k*b, the global batch), so rank and reference see the same numbers. Models and batches live on
the ``device`` each experiment is given (the rank's GPU under a launcher with NCCL, else CPU). The
family's bands are here too: a launched job's results are judged with the same ones."""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainclaims import numerics as num
from trainclaims.checks import ranks, relative_gap, sgd
from trainclaims.checks.clipping import fsdp2, shard_children
from trainclaims.modes import Mode, ModeLike, get
from trainclaims.ranks import Experiment
from trainclaims.step import Step

DTYPES = ("float64", "float32")  # the dtypes its experiments run in
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 1e-3
B, SEED = 8, 0  # batch per rank, seed: the tests' and a launched job's experiments are the same calls
DDP_STEPS, NO_SYNC_STEPS, FSDP_STEPS = 5, 3, 3
MICRO_BATCHES = (2, 4)

# The family's bands, measured (a test judges with them, a launched job's results too).
# {dtype: relative tolerance} of DDP (2 ranks x 8) against one process with batch 16, 5 SGD steps
# (trainclaims.checks.ddp_rank: the largest relative gap of one parameter tensor over the steps).
# Measured (gloo, CPU, 1 thread a rank, torch 2.14.1, seeds 0-4): float64 7.3e-17 - 1.4e-16,
# float32 1.8e-8 - 1.4e-7 (the all-reduce sums in another order); no_sync with 2 and 4
# micro-batches, float64: 3.0e-17 - 1.7e-16, one all-reduce a step.
# In a numerics mode other than ieee the gap is measured (Evidence.judge_in_mode). Measured (gloo,
# CPU, seed 0): DDP float32 bf16-autocast 1.2e-3, fp16-autocast 1.1e-4, compile 1.4e-7 (as eager);
# no_sync bf16-autocast 2.8e-4 - 5.2e-4, fp16-autocast 2.9e-5 - 4.2e-5, compile 2.6e-8 - 2.8e-8.
DDP_TOL = {"float64": 1e-12, "float32": 1e-5}
# DDP + BN against BN over the global batch: the family's BN_MIN_GAP (measured there); each rank's
# running mean after its first batch equals a copy's that saw only its shard (gap 0).
# {dtype: relative tolerance} of FSDP2 (2 ranks x 8) against one process with batch 16 and against
# DDP with the same batches, 3 SGD steps. Measured (gloo, CPU, torch 2.14.1, 2 ranks x 8, seeds 0-4),
# largest parameter gap over the steps: float64 1.7e-17 - 2.5e-17, float32 1.0e-8 - 2.7e-8 against
# one process, and 0 against DDP (the same all-reduced numbers); each rank held 55% of the
# parameters (the shards of a 16-row layer over 2 ranks and the biases). Seed 0 in another mode:
# bf16-autocast 1.7e-4, fp16-autocast 2.3e-5, compile 1.6e-8 against one process, 0 against DDP:
# the same rounding as DDP's, so the same tolerances.
FSDP_TOL = DDP_TOL

# Every rank experiment takes ``device``: where this rank's models and batches live (CPU for the
# ranks the tests spawn; ``cuda:LOCAL_RANK`` with NCCL under trainclaims.launch).


def mlp(seed: int, dtype: torch.dtype, bn: bool = False, sync_bn: bool = False, device: str = "cpu") -> nn.Sequential:
    torch.manual_seed(seed)
    norm: list[nn.Module] = [nn.BatchNorm1d(16)] if bn else []
    model = nn.Sequential(nn.Linear(6, 16), *norm, nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model.to(device)


OPTIMIZER = sgd(LR, MOMENTUM, WEIGHT_DECAY)


def global_batch(
    seed: int, step: int, n: int, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch, the same on every rank (mean 1, std 2: BN has work to do)."""
    g = torch.Generator().manual_seed(seed * 1000 + step)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64).mul(2).add(1).to(dtype)
    return x.to(device), torch.randint(3, (n,), generator=g).to(device)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def mode_dtype(dtype: torch.dtype, numerics: str) -> torch.dtype:
    """float32 where a numerics mode other than ieee (its name: experiments' arguments are plain
    data) runs a float64 experiment: autocast leaves float64 alone, and float32 is what users
    train in such a mode."""
    return dtype if get(numerics).reference else torch.float32


def ddp_against_one_large_batch(
    rank: int,
    world: int,
    dtype_name: str,
    steps: int,
    b: int,
    seed: int,
    numerics: str = "ieee",
    device: str = "cpu",
) -> dict:
    """S002-11 as :func:`trainclaims.checks.ddp_rank` on the seed MLP: k ranks with batch b each
    (no BN) against one process with batch k*b, ``steps`` SGD steps (momentum, weight decay)."""
    dtype = num.dtype_of(dtype_name)
    batches = [global_batch(seed, i, world * b, dtype) for i in range(steps)]
    model = partial(mlp, seed, dtype, device=device)
    return ranks.ddp_rank(
        rank, world, model_fn=model, batches=batches, optimizer_fn=OPTIMIZER, device=device, numerics=get(numerics)
    )


def no_sync_accumulation(
    rank: int, world: int, micro: int, steps: int, b: int, seed: int, numerics: str = "ieee", device: str = "cpu"
) -> dict:
    """S002-12 as :func:`trainclaims.checks.ddp_rank` with m micro-batches under ``no_sync()``,
    against one step of batch m*k*b (float64 in ieee, float32 in another mode)."""
    dtype = mode_dtype(torch.float64, numerics)
    batches = [global_batch(seed, i, micro * world * b, dtype) for i in range(steps)]
    model = partial(mlp, seed, dtype, device=device)
    return ranks.ddp_rank(
        rank,
        world,
        model_fn=model,
        batches=batches,
        optimizer_fn=OPTIMIZER,
        k=micro,
        device=device,
        numerics=get(numerics),
    )


def ddp_batchnorm(
    rank: int, world: int, forward_sync: bool, b: int, seed: int, numerics: str = "ieee", device: str = "cpu"
) -> dict:
    """S002-13 as :func:`trainclaims.checks.ddp_batchnorm_rank` on the seed MLP with BatchNorm,
    over two batches (float64 in ieee, float32 in another mode)."""
    dtype = mode_dtype(torch.float64, numerics)
    batches = [global_batch(seed, step, world * b, dtype) for step in range(2)]
    model = partial(mlp, seed, dtype, True, device=device)
    return ranks.ddp_batchnorm_rank(
        rank, world, model_fn=model, batches=batches, forward_sync=forward_sync, device=device, numerics=get(numerics)
    )


# --------------------------------------------------------------------------- S002-14


def sync_batchnorm(rank: int, world: int, backend_device: str, b: int, seed: int, device: str | None = None) -> dict:
    """DDP + SyncBatchNorm against BN over the global batch (outputs, gradients, running stats).
    On CPU modules PyTorch refuses SyncBatchNorm: the error's text is returned instead."""
    dtype = torch.float64 if backend_device == "cpu" else torch.float32
    if backend_device == "cpu":
        where = torch.device("cpu")
    else:  # under a launcher the rank's own GPU (LOCAL_RANK); spawned here, GPU i for rank i
        where = torch.device(device) if device and device.startswith("cuda") else torch.device(f"cuda:{rank}")
    x, y = global_batch(seed, 0, world * b, dtype, where)
    xr, yr = x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]
    try:
        model = DDP(mlp(seed, dtype, bn=True, sync_bn=True).to(where))
        logits = model(xr)
    except (ValueError, RuntimeError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    F.cross_entropy(logits, yr).backward()
    reference = mlp(seed, dtype, bn=True, device=where)
    ref_logits = reference(x)
    F.cross_entropy(ref_logits, y).backward()
    grads = torch.cat([p.grad.flatten() for p in model.module.parameters()])
    ref_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
    return {
        "output_gap": relative_gap(logits.detach(), ref_logits.detach()[rank * b : (rank + 1) * b]),
        "gradient_gap": relative_gap(grads, ref_grads),
        "running_mean_gap": relative_gap(model.module[1].running_mean, reference[1].running_mean),
        "running_var_gap": relative_gap(model.module[1].running_var, reference[1].running_var),
    }


# --------------------------------------------------------------------------- S002-15


def fsdp_against_one_large_batch(
    rank: int,
    world: int,
    dtype_name: str,
    steps: int,
    b: int,
    seed: int,
    numerics: str = "ieee",
    device: str = "cpu",
) -> dict:
    """FSDP2 (``fully_shard`` on each Linear and on the root, over a mesh of the ranks on
    ``device``'s type) over k ranks with batch b each, against one process with batch k*b and
    against DDP with the same batches, ``steps`` SGD steps (momentum, weight decay), all in the
    ``numerics`` mode: the relative gap of the full parameters (gathered from their shards) after
    each step to each, and how much of the parameters this rank holds. Where this torch has no
    FSDP2, ``{"unsupported": why}``; every other error is raised (a failure of the claim's test).

    The mesh is given: ``fully_shard`` without one builds a default mesh on the accelerator where
    one is visible, even for CPU ranks on gloo (it would move the parameters to CUDA)."""
    fully_shard, why = fsdp2(device)
    if fully_shard is None:
        return {"unsupported": why}
    from torch.distributed.device_mesh import init_device_mesh

    mode = get(numerics)
    mesh = init_device_mesh(torch.device(device).type, (world,))
    dtype = num.dtype_of(dtype_name)
    model, reference, replica = (num.place(mlp(seed, dtype, device=device), mode, device) for _ in range(3))
    replica = DDP(replica)
    model = shard_children(model, fully_shard, mesh)  # each Linear (the children with parameters), then the root
    nets = (model, reference, replica)
    full_numel = sum(p.numel() for p in reference.parameters())
    local_numel = sum(p.to_local().numel() for p in model.parameters())
    steppers = [Step(m, OPTIMIZER(m.parameters()), F.cross_entropy, mode, device) for m in nets]
    gaps, ddp_gaps = [], []
    for i in range(steps):
        x, y = global_batch(seed, i, world * b, dtype, device)
        mine = x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]
        for step, batch in zip(steppers, (mine, (x, y), mine), strict=True):
            step([batch])
        full = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
        gaps.append(relative_gap(full, flat(reference)))
        ddp_gaps.append(relative_gap(full, flat(replica.module)))
    skips = [step.skipped for step in steppers]  # FSDP2's, the reference's and DDP's GradScaler skips
    return {"gaps": gaps, "ddp_gaps": ddp_gaps, "local_fraction": local_numel / full_numel, "scaler_skips": skips}


# --------------------------------------------------------------------------- what a launched job runs
# Each experiment of S002-11..15's tests, by an explicit id: the tests and trainclaims.launch build
# them here, with the same arguments, and a launched job's results are found by the id.


def ddp_experiment(dtype: str, mode: Mode) -> Experiment:
    """S002-11: DDP against one process, in ``dtype`` and ``mode``."""
    args = (dtype, DDP_STEPS, B, SEED, mode.name)
    return Experiment(f"S002-11/ddp/{dtype}/{mode}", ddp_against_one_large_batch, args, mode)


def no_sync_experiment(micro: int, mode: Mode) -> Experiment:
    """S002-12: ``micro`` micro-batches under no_sync against one step of the global batch."""
    args = (micro, NO_SYNC_STEPS, B, SEED, mode.name)
    return Experiment(f"S002-12/no_sync/{micro}/{mode}", no_sync_accumulation, args, mode)


def batchnorm_experiment(forward_sync: bool, mode: Mode) -> Experiment:
    """S002-13: DDP + BN, rank 0's buffers broadcast before each forward or not."""
    sync = "sync" if forward_sync else "no_sync"
    return Experiment(f"S002-13/batchnorm/{sync}/{mode}", ddp_batchnorm, (forward_sync, B, SEED, mode.name), mode)


def sync_batchnorm_experiment(backend_device: str) -> Experiment:
    """S002-14: SyncBatchNorm on ``backend_device`` (CUDA with NCCL; on CPU PyTorch refuses it)."""
    return Experiment(f"S002-14/sync_batchnorm/{backend_device}", sync_batchnorm, (backend_device, B, SEED))


def fsdp_experiment(dtype: str, mode: Mode) -> Experiment:
    """S002-15: FSDP2 against one process and against DDP, in ``dtype`` and ``mode``."""
    args = (dtype, FSDP_STEPS, B, SEED, mode.name)
    return Experiment(f"S002-15/fsdp2/{dtype}/{mode}", fsdp_against_one_large_batch, args, mode)


def measures(mode: Mode, dtype: str) -> bool:
    """Whether a float experiment in ``dtype`` measures ``mode``: autocast leaves float64 alone,
    so its float32 instance measures an autocast mode."""
    return mode.acts(dtype)


def plan(modes: tuple[ModeLike, ...] = (num.REFERENCE,), device: str = "cpu") -> list[Experiment]:
    """Every rank experiment of S002-11..15's tests in these numerics modes, with the arguments the
    tests call them with (trainclaims.launch runs these on a launched job's ranks; ``device`` is
    the type of device the job's ranks are on)."""
    out = []
    for mode in map(get, modes):  # a launcher gives Modes; a name is parsed here
        measured = [dtype for dtype in DTYPES if measures(mode, dtype)]
        out += [ddp_experiment(dtype, mode) for dtype in measured]
        out += [no_sync_experiment(m, mode) for m in MICRO_BATCHES]
        out.append(batchnorm_experiment(True, mode))
        if mode.reference:
            out.append(batchnorm_experiment(False, mode))
        out += [fsdp_experiment(dtype, mode) for dtype in measured]
    out.append(sync_batchnorm_experiment("cuda" if device.startswith("cuda") else "cpu"))
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
    from trainclaims.families.seed.nets import seed_fc

    torch.manual_seed(0)
    model = DDP(seed_fc(3072)) if world > 1 else seed_fc(3072)
    step = Step(model, torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4), F.cross_entropy)
    b = global_batch_size // world
    x, y = torch.rand(b, 3, 32, 32), torch.randint(10, (b,))
    probe = GemmProbe(linear_gemms(seed_fc(3072), b), torch.float32, "cpu")
    times = []
    for i in range(rounds + 3):
        probe()
        start = time.perf_counter()
        step([(x, y)])
        if i >= 3:
            times.append(time.perf_counter() - start)
    costs = [t / p for t, p in zip(times, probe.times[3:], strict=True)]
    return {"median_s": statistics.median(times), "rounds_s": times, "costs": costs}
