"""Throughput benchmarks (pytest-benchmark) of the training behind the claims, per device.

Each records in ``extra_info`` (trainclaims.bench.record): every round's time, their median and
IQR, samples/s and achieved FLOP/s from the median (FLOPs counted for the Linear layers: forward,
weight gradients, and input gradients but for the first layer), this machine's matmul rate on the
same GEMM shapes measured in the same run and the step's share of it, torch/CUDA versions, device
name and dtype. On CUDA the rounds are timed with CUDA events.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainclaims.bench import (
    GemmProbe,
    linear_gemms,
    record,
    step_costs,
    step_flops,
    timed_rounds,
)
from trainclaims.benchgate import DEFAULT_LIMIT
from trainclaims.devices import synchronize
from trainclaims.families.seed.nets import bn_fc, seed_fc, xor_net


def median_seconds(benchmark) -> float | None:
    """The benchmark's median time per round, or None where it measured nothing (disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


# Throughput runs belong to the full run and `tox -e bench`, not to the fast tier.
pytestmark = [pytest.mark.trainclaims, pytest.mark.benchmark, pytest.mark.slow]  # trainclaims: also where copied

# Rounds per benchmark, from measurement (2 CPU cores, seed-FC step, 8 repeats each): the median of
# 15 rounds moved 14.6% between repeats, of 30 rounds 28%, of 120 rounds 25%: the spread is the
# machine's state drifting, not too few rounds. 30 rounds (a quarter second for the seed-FC step)
# give the rank test of the gate enough samples; its matmul-rate fraction, measured beside it,
# moved 1-2% over the same repeats (0.756-0.768 after the first).
ROUNDS = {"rounds": 30, "warmup_rounds": 5, "iterations": 1}
# The gate's limit of each benchmark: the slowdown it catches (a run passes where its lower quartile
# rules out 0.7 of it; trainclaims/benchgate.py), from its measured noise (suites/gate_drill.py on
# the 2-core machine, 2026-12-07: 7 drills of a baseline, 10 unchanged reruns and 3 reruns 1.1x
# slower each, 4 quiet and 3 beside a busy core, judged by the rule as it is now; docs/reports.md,
# Gating CI, has the table): the smallest of 10/15/20/30/40/50% with no false alarm in the drills
# run with the gate's rounds as they are now (the last two). The BN steps 10% (lower quartiles -3.3%
# to +3.1% run to run; 1.1x caught 42 of 42), the seed-FC step 20% (-4.8% to +4.3%; at 10% 6 false
# alarms in 70), the XOR loop 30% with 40 gate rounds (a 20-round baseline with one fast round let
# no rerun pass; at 20% 2 false alarms in 10 in the last quiet drill), the resident-tensor loop 50%
# (-11.1% to +18.4%: whole runs sit in a slower state; at 10% 19 false alarms in 70).
LIMIT = DEFAULT_LIMIT
SEED_FC_LIMIT, RESIDENT_LIMIT, XOR_LIMIT = 0.20, 0.50, 0.30


def measure(
    benchmark, fn, device: str, gemms, rounds: dict = ROUNDS, gate_rounds: int | None = None, limit: float = LIMIT
) -> dict:
    """The gate's rounds first (step_costs: the step's time over its GEMMs', round by round, on one
    thread and its CPU clock, as many as its spread needs to tell ``limit``), then pytest-benchmark's
    rounds of ``fn`` with this machine's matmul rate on ``gemms`` measured between them (GemmProbe);
    on CUDA the same rounds again timed with CUDA events, since the wall-clock timer needs a host
    sync in every round. Returns :func:`record`'s ``probe``/``times``/``costs``. ``gate_rounds``:
    the gate's first rounds where they differ from the benchmark's.

    The gate's rounds come first because, measured on the 2-core CI machine (seed-FC step, 8 runs
    each), one-thread costs taken after the step's two-thread rounds read 1.29-1.72 from run to run,
    taken before them 1.33-1.43."""
    costs = None if benchmark.disabled else step_costs(fn, gemms, device, gate_rounds or rounds["rounds"], limit=limit)
    probe = GemmProbe(gemms, torch.float32, device)
    benchmark.pedantic(fn, setup=probe, **rounds)
    if median_seconds(benchmark) is None:
        return {"probe": probe}  # --benchmark-disable: nothing is recorded
    times = None
    if torch.device(device).type == "cuda":
        probe = GemmProbe(gemms, torch.float32, device)
        times = timed_rounds(fn, device, rounds["rounds"], warmup=1, between=probe)
    return {"probe": probe, "times": times, "costs": costs}


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: str):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        synchronize(device)

    return step


def seed_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)


@pytest.mark.benchmark(group="seed-000 FC training step (3072-300-10, batch 250)")
def test_seed_fc_training_step_throughput(benchmark, device):
    torch.manual_seed(0)
    model = seed_fc(3072).to(device)
    x, y = torch.rand(250, 3, 32, 32, device=device), torch.randint(10, (250,), device=device)
    step = sgd_step(model, seed_optimizer(model), x, y, device)
    timing = measure(benchmark, step, device, linear_gemms(model, 250), limit=SEED_FC_LIMIT)
    flops = step_flops(seed_fc(3072).to(device), (x, y))["total"]
    record(benchmark, device, 250, flops, gate_min_effect=SEED_FC_LIMIT, **timing)


@pytest.mark.benchmark(group="S002 BN net, 1000 samples per optimizer step")
@pytest.mark.parametrize("mode", ["large-batch", "accumulate-k4"])
def test_bn_net_step_with_and_without_gradient_accumulation(benchmark, device, mode):
    torch.manual_seed(0)
    model = bn_fc(3072).to(device)
    opt = seed_optimizer(model)
    x, y = torch.rand(1000, 3, 32, 32, device=device), torch.randint(10, (1000,), device=device)
    k = 4 if mode == "accumulate-k4" else 1

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
            (F.cross_entropy(model(xb), yb) / k).backward()
        opt.step()
        synchronize(device)

    timing = measure(benchmark, step, device, linear_gemms(model, 1000 // k) * k)
    note = f"{k} micro-batch(es) per step"
    flops = step_flops(bn_fc(3072).to(device), (x, y))["total"]
    record(benchmark, device, 1000, flops, micro_batches=k, note=note, **timing)


@pytest.mark.benchmark(group="S001 XOR net, 200 iterations of the source's loop")
def test_xor_net_training_throughput(benchmark, device):
    x = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]], device=device)
    y = torch.tensor([[0.0], [1], [1], [0]], device=device)

    def train_200() -> None:
        torch.manual_seed(0)
        model = xor_net().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.002)
        for _ in range(200):
            opt.zero_grad(set_to_none=True)
            (model(x) - y).square().sum().backward()
            opt.step()
        synchronize(device)

    gemms = linear_gemms(xor_net(), 4) * 200
    xor_rounds = {"rounds": 10, "warmup_rounds": 1, "iterations": 1}
    # 40 rounds for the gate: a baseline of 20 with one fast round (15 GEMM units where the others
    # read 22-28) let no rerun rule out even half of 80% (4 false alarms in 10 quiet reruns)
    timing = measure(benchmark, train_200, device, gemms, xor_rounds, gate_rounds=40, limit=XOR_LIMIT)
    flops = 200 * step_flops(xor_net().to(device), (x, y), lambda out, t: (out - t).square().sum())["total"]
    record(benchmark, device, 4 * 200, flops, gate_min_effect=XOR_LIMIT, **timing)


PIPELINE_BATCHES = 40  # 10,000 images of each loop


@pytest.mark.benchmark(group="input pipeline: source's DataLoader loop vs resident tensors")
@pytest.mark.parametrize("tier", ["fashion-mnist"])
def test_device_resident_tensors_against_the_sources_dataloader_loop(benchmark, device, data, data_store, tier):
    """Same model, same number of batches, one process: the source's loop (torchvision dataset,
    ToTensor, DataLoader with 2 workers, shuffle, then .to(device)) against batches indexed from
    the tensors already on the device. The report states the ratio."""
    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)
    model = seed_fc(data.in_features).to(device)
    opt = seed_optimizer(model)
    dataset = torchvision.datasets.FashionMNIST(
        str(data_store.root), train=True, download=False, transform=transforms.ToTensor()
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=250, shuffle=True, num_workers=2)

    def source_loop() -> None:
        for i, (xb, yb) in enumerate(loader):
            if i == PIPELINE_BATCHES:
                break
            sgd_step(model, opt, xb.to(device), yb.to(device), device)()

    order = torch.randperm(len(data.x_train), device=data.device)

    def resident_loop() -> None:
        for i in range(PIPELINE_BATCHES):
            idx = order[i * 250 : (i + 1) * 250]
            sgd_step(model, opt, data.x_train[idx], data.y_train[idx], device)()

    source_loop()  # warm-up: worker start-up, first file reads
    start = time.perf_counter()
    source_loop()
    source_s = time.perf_counter() - start
    gemms = linear_gemms(model, 250) * PIPELINE_BATCHES
    # 20 rounds for the gate (10 timed): beside a busy core 10 could not rule out a 20% slowdown
    # (the rank test before the lower-quartile one: p=0.1 against the quiet baseline, 11 quiet runs: 0.007-0.04)
    loop_rounds = {"rounds": 10, "warmup_rounds": 1, "iterations": 1}
    timing = measure(benchmark, resident_loop, device, gemms, loop_rounds, gate_rounds=20, limit=RESIDENT_LIMIT)
    resident_s = median_seconds(benchmark)
    if resident_s is None:
        return  # --benchmark-disable: the loops ran once, unmeasured (the report says so)
    samples = PIPELINE_BATCHES * 250
    first_batch = (data.x_train[:250], data.y_train[:250])
    record(
        benchmark,
        device,
        samples,
        PIPELINE_BATCHES * step_flops(seed_fc(data.in_features).to(device), first_batch)["total"],
        **timing,
        gate_min_effect=RESIDENT_LIMIT,
        source_loop_samples_per_s=samples / source_s,
        resident_speedup=source_s / resident_s,
        note=f"source's DataLoader loop {samples / source_s:.4g} samples/s: "
        f"resident tensors **{source_s / resident_s:.1f}x** faster",
    )
    # No wall-clock assertion: the ratio is a timing claim, kept in the note and the report; the
    # benchmark gate judges the resident loop. Beside a busy core (load 11) the DataLoader's two
    # workers once finished first and an assertion here failed a correct run.
