"""How noisy each benchmark of a history is: its noise over the rounds of a run and over the runs,
and the false alarms that noise gives at its gate limit, with the run-to-run drift the history
shows. The rule and the simulation are the one benchmark judge's (:mod:`trainclaims.benchgate`);
what this module adds is the drift: each run's lower quartile over its level, the levels found by the
step detection (:func:`trainclaims.history.steps.detect_steps`: a real step is not noise).

Call (from the site, a notebook)::

    from trainclaims.history.noise import noise_by_benchmark
    noises = noise_by_benchmark(benchmark_series(history))  # key -> trainclaims.benchgate.BenchNoise

Measured on the real rounds of one CPU run of the 5 CPU benchmarks before the gate's thread clock
(2 cores; wall-clock step costs, 4000 simulated pairs each, the rule at the limits of then):

==========================================  ======  =====  =========  ==================  ==================
benchmark                                   rounds  limit  cv_rounds  rounds alone:       with 4% drift:
                                                                      changed / inconcl.  changed / inconcl.
==========================================  ======  =====  =========  ==================  ==================
seed-FC training step                           90    25%      28.0%  0.03% / 0.05%       0.03% / 0.35%
BN net, large batch                             30    25%      16.2%  0.00% / 0.88%       0.12% / 2.7%
BN net, accumulate k=4                          30    25%      16.1%  0.00% / 0.10%       0.00% / 0.92%
XOR net                                         30    40%      54.6%  0.70% / 16.1%       1.8% / 16.0%
resident tensors vs DataLoader loop             20    25%       6.6%  0.00% / 0.68%       0.03% / 1.95%
==========================================  ======  =====  =========  ==================  ==================

The limits and the figures of the thread clock are in ``suites/test_bench_throughput.py`` and the
docs/reports.md (Gating CI).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from trainclaims.benchgate import SIMULATIONS, BenchNoise, BenchRow, benchmark_noise, quartile_cost
from trainclaims.history.steps import detect_steps
from trainclaims.stats import robust_cv


def drift(rows: Sequence[BenchRow]) -> list[float]:
    """Each run's step cost as the gate reads it (:func:`~trainclaims.benchgate.quartile_cost`) over
    the level the step detection fits there (3 runs or more with step costs; else none)."""
    measured = [r.step_costs for r in rows if r.step_costs and len(r.step_costs) >= 2]
    if len(measured) < 3:
        return []
    read = [quartile_cost(c) for c in measured]
    fit = detect_steps(read, measured)
    levels = fit.levels if len(fit.levels) == len(read) else [statistics.median(read)] * len(read)
    return [m / level for m, level in zip(read, levels, strict=True) if level > 0]


def history_noise(rows: Sequence[BenchRow], *, simulations: int = SIMULATIONS, seed: int = 0) -> BenchNoise | None:
    """:func:`trainclaims.benchgate.benchmark_noise` of one benchmark's rows over runs (oldest
    first), with the run-to-run drift of :func:`drift`."""
    ratios = drift(rows)
    return benchmark_noise(
        rows, drift=ratios, cv_runs=robust_cv(ratios) if ratios else None, simulations=simulations, seed=seed
    )


def noise_by_benchmark(bench_series: Sequence[Any], *, simulations: int = SIMULATIONS) -> dict[str, BenchNoise]:
    """:func:`history_noise` of each :class:`trainclaims.history.series.BenchSeries` (its key ->
    noise), the ones with step costs."""
    out = {}
    for bench in bench_series:
        noise = history_noise([bench.rows[i] for i in sorted(bench.rows)], simulations=simulations)
        if noise is not None:
            out[bench.key] = noise
    return out
