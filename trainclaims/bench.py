"""What a throughput benchmark records (pytest-benchmark's ``extra_info``): the time of every round,
their median and interquartile range, samples/s and FLOP/s from the median, and this machine's
own matmul rate on the step's GEMM shapes, measured in the same run, with the step's FLOP/s as a
fraction of it; and the gate's own measurement, :func:`step_costs`. Benchmarks that run unmeasured
(``--benchmark-disable``) record nothing; the report lists them as not measured."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainclaims.benchgate import (
    COSTS_CLOCK_THREAD,
    COSTS_CLOCK_WALL,
    DEFAULT_LIMIT,
    INTERVAL_OF_LIMIT,
    MEDIAN_SE,
    MIN_ROUNDS,
    Z_95,
    quartile_cost,
)
from trainclaims.devices import device_name, synchronize
from trainclaims.stats import robust_cv, spread


def step_flops(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss_fn: Callable[..., torch.Tensor] = F.cross_entropy
) -> dict[str, int]:
    """The floating-point operations of one training step (forward, loss, backward) of any model,
    counted by ``torch.utils.flop_counter.FlopCounterMode``: ``{"total": N, "<op>": n, ...}`` (a
    multiply-add counts 2; matrix products and convolutions, not elementwise work). For a model of
    Linear layers the total is :func:`linear_gemms`' FLOPs (the shapes the matmul-rate share is
    measured on); for any other model it still gives FLOP/s. The gradients it leaves are cleared."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = batch
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.flop_counts["Global"].items()}
    return {"total": int(counter.get_total_flops()), **by_op}


def record(
    benchmark: Any,
    device: str,
    samples: int,
    flops: int,
    dtype: torch.dtype = torch.float32,
    probe: GemmProbe | None = None,
    times: list[float] | None = None,
    costs: list[float] | None = None,
    note: str = "",
    **extra: Any,
) -> float | None:
    """Call after ``benchmark.pedantic``: per-round times (``times`` where the test took them
    itself, e.g. with CUDA events; else pytest-benchmark's), their median and IQR, throughput from
    the median, and, given the ``probe`` that ran between the rounds, this machine's matmul rate on
    the step's GEMMs and the step's share of it; given :func:`step_costs`, the step's cost in units of
    those GEMMs, round by round, and the clock they were timed on (what the benchmark gate compares;
    a plain list of costs is taken as timed on the wall clock). ``note``: what the benchmark
    says of its numbers, shown beside them in the report (markdown). Returns the median, or None
    (recording nothing) where the benchmark was disabled."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    rounds = list(times) if times is not None else list(stats.stats.data)
    median = statistics.median(rounds)
    q1, _, q3 = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else (median, median, median)
    info = {
        # every figure of the row from the same rounds, on the same clock (pytest-benchmark's own
        # mean and min time the call around them with perf_counter: on CUDA, launch overhead)
        "mean_s": statistics.mean(rounds),
        "min_s": min(rounds),
        "stddev_s": statistics.stdev(rounds) if len(rounds) > 1 else 0.0,
        "median_s": median,
        "iqr_s": q3 - q1,
        "rounds_s": rounds,
        "timer": timer(device) if times is not None else "perf_counter",
        "samples_per_s": samples / median,
        "flops_per_step": flops,
        "flops_per_s": flops / median,
    }
    if probe is not None and probe.times:
        rate = probe.rate()
        info |= {"matmul_flops_per_s": rate, "matmul_fraction": flops / median / rate}
    if costs:
        info |= {
            "step_costs": list(costs),
            "step_cost": quartile_cost(costs),  # what the gate reads: the lower quartile
            "step_cost_spread": spread(costs),
            "cost_clock": getattr(costs, "clock", COSTS_CLOCK_WALL),
        }
    if note:
        info["note"] = note
    benchmark.extra_info.update(
        **info,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=device,
        device_name=device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        **extra,
    )
    return median


# --------------------------------------------------------------------------- the machine's own limit

Gemm = tuple[int, int, int]  # (m, k, n): an (m x k) by (k x n) product, 2*m*k*n FLOPs


def linear_gemms(model: nn.Module, batch: int) -> tuple[Gemm, ...]:
    """The matrix products of one training step of the model's Linear layers, as shapes: forward
    (batch x in) @ (in x out), weight gradient (out x batch) @ (batch x in), and input gradient
    (batch x out) @ (out x in) for every layer but the first (what :func:`step_flops` counts for such a model)."""
    gemms: list[Gemm] = []
    for i, m in enumerate(x for x in model.modules() if isinstance(x, nn.Linear)):
        gemms += [(batch, m.in_features, m.out_features), (m.out_features, batch, m.in_features)]
        if i > 0:
            gemms.append((batch, m.out_features, m.in_features))
    return tuple(gemms)


def gemm_flops(gemms: tuple[Gemm, ...]) -> int:
    return sum(2 * m * k * n for m, k, n in gemms)


class GemmProbe:
    """This machine's matmul rate on exactly a step's matrix products (same shapes, dtype and
    device; torch.matmul on resident tensors; the current thread count), measured *between* the
    step's rounds: pass it as ``setup`` to ``benchmark.pedantic`` (or ``between`` to
    :func:`timed_rounds`). Measured apart, minutes or even a second away, the two drift with the
    machine's state (2 cores: a 1.5x slower step once read as only 20% lower against a rate taken
    after the rounds); interleaved, both see the same machine."""

    def __init__(self, gemms: tuple[Gemm, ...], dtype: torch.dtype, device: str) -> None:
        g = torch.Generator().manual_seed(0)
        self.device = device
        self.flops = gemm_flops(gemms)
        self.pairs = [
            (torch.rand(m, k, generator=g).to(device, dtype), torch.rand(k, n, generator=g).to(device, dtype))
            for m, k, n in gemms
        ]
        self.times: list[float] = []

    def __call__(self) -> None:
        self.times.append(elapsed(self._gemms, self.device))  # on the clock the step's rounds use

    def _gemms(self) -> None:
        for a, b in self.pairs:
            torch.matmul(a, b)

    def rate(self) -> float:
        """FLOP/s: the GEMMs' FLOPs over their median round."""
        return self.flops / statistics.median(self.times)


def timer(device: str | torch.device) -> str:
    """The clock a device's work is timed with: CUDA events on CUDA (the GPU's own clock: what the
    kernels took, not what launching them took), perf_counter elsewhere."""
    return "cuda events" if torch.device(device).type == "cuda" else "perf_counter"


def elapsed(fn: Callable[[], None], device: str | torch.device) -> float:
    """Seconds ``fn`` took on ``device``, on :func:`timer`'s clock (queued work waited for first)."""
    synchronize(device)
    if timer(device) == "cuda events":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def timed_rounds(
    fn: Callable[[], None], device: str, rounds: int, warmup: int, between: Callable[[], None] | None = None
) -> list[float]:
    """Seconds per call of ``fn`` over ``rounds`` calls after ``warmup`` untimed ones, with
    ``between()`` (untimed) before each, each on :func:`timer`'s clock (:func:`elapsed`)."""
    times = []
    for i in range(warmup + rounds):
        if between is not None:
            between()
        took = elapsed(fn, device)
        if i >= warmup:
            times.append(took)
    return times


class StepCosts(list):
    """The gate's rounds (:func:`step_costs`): a list of costs that knows the clock they were timed on."""

    clock: str = COSTS_CLOCK_WALL


def thread_seconds(fn: Callable[[], None]) -> float:
    """The CPU seconds this thread spent in ``fn`` (``time.thread_time``): time the scheduler gave
    another process is not counted."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


# Measured (2-core machine, seed-FC step, 60 rounds each; suites/gate_drill.py and docs/reports.md,
# Gating CI): the cost on one thread timed on the wall clock spread 11-24% over a run's rounds beside
# other processes (robust CV), on the thread's CPU clock 3.5-5%, its median 1.18-1.19 over three
# runs; and on two threads a busy core (OpenMP's threads wait on the one that lost its core) moves
# the wall-clock cost more than a 1.5x slower step does. So on CPU both the step and its GEMMs run on
# one thread and are timed on its CPU clock.
# Beside 4-5 busy processes (load 9.6 on the 2 cores) the thread-clock cost's upper quartile rose by
# 10% and its median by 3% while its lower quartile stayed (1.185): a process that takes the core
# leaves the caches cold behind it. The faster of two back-to-back runs of the step over the faster
# of two of its GEMMs moved its median by 1.5% there and spread 5% (robust CV) where one run spread 8%.
REPEATS_PER_ROUND = 2
COST_TIME_CAP_S = 12.0  # adaptive rounds stop here whatever their spread (seconds of the gate's rounds)
MAX_COST_BATCHES = 8  # and at this many times the rounds asked for


def step_costs(
    fn: Callable[[], None],
    gemms: tuple[Gemm, ...],
    device: str,
    rounds: int,
    dtype: torch.dtype = torch.float32,
    warmup: int = 2,
    *,
    limit: float = DEFAULT_LIMIT,
    time_cap_s: float = COST_TIME_CAP_S,
) -> StepCosts:
    """The gate's measurement: each round of ``fn`` timed right after this machine's matmuls on
    the step's GEMM shapes (:class:`GemmProbe`'s tensors), and the step's time over theirs, round
    by round: the step's cost in units of its own GEMMs. A machine that is slower for the moment
    (drift, a job beside it) slows both; a slower step only the step. On CPU both run on one thread
    and are timed on its CPU clock (:func:`thread_seconds`: a core taken by another process is not
    counted; measured, see above); on CUDA on the GPU's clock (:func:`elapsed`).

    Each round runs the GEMMs and the step :data:`REPEATS_PER_ROUND` times, alternately, and takes
    the faster step over the faster GEMMs (measured, above). Adaptive: after ``rounds`` rounds it
    takes as many more, again and again, until the median cost's 95% interval lies within
    ``INTERVAL_OF_LIMIT`` of ``limit`` on either side (the rounds can tell a change of the rule-out),
    or ``time_cap_s`` seconds or ``MAX_COST_BATCHES`` times ``rounds`` are spent."""
    rounds = max(rounds, MIN_ROUNDS)  # fewer cannot reach the rule's p < 0.01
    cpu = torch.device(device).type == "cpu"
    threads = torch.get_num_threads()
    if cpu:
        torch.set_num_threads(1)
    probe = GemmProbe(gemms, dtype, device)

    def timed(f: Callable[[], None]) -> float:
        return thread_seconds(f) if cpu else elapsed(f, device)

    costs = StepCosts()
    costs.clock = COSTS_CLOCK_THREAD if cpu else COSTS_CLOCK_WALL
    start = time.perf_counter()
    try:
        for i in range(warmup + rounds * MAX_COST_BATCHES):
            gemm, step = math.inf, math.inf
            for _ in range(REPEATS_PER_ROUND):
                gemm = min(gemm, timed(probe._gemms))
                step = min(step, timed(fn))
            if i < warmup or gemm <= 0:
                continue
            costs.append(step / gemm)
            n = len(costs)
            if n >= rounds and n % rounds == 0:
                cv = robust_cv(costs) or 0.0
                if Z_95 * MEDIAN_SE * cv / math.sqrt(n) <= INTERVAL_OF_LIMIT * limit:
                    break
                if time.perf_counter() - start > time_cap_s:
                    break
        return costs
    finally:
        torch.set_num_threads(threads)
