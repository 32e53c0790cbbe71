"""How noisy each benchmark is, and the false alarms that noise gives at the gate.

Call (from a report writer, the site, a notebook)::

    from trainclaims.history.noise import benchmark_noise
    noise = benchmark_noise(rows)  # one benchmark's benchmarks.json rows, oldest run first
    noise.cv_rounds, noise.cv_runs, noise.false_alarm["changed"], noise.false_alarm["inconclusive"]

``rows`` are the same benchmark's rows (same test id and device, best the same machine) over one or
more runs, each with its ``step_costs`` (the rounds the gate compares). What comes back
(:class:`BenchNoise`):

- ``cv_rounds``: the coefficient of variation of the step cost over the rounds of a run (median
  over the runs). Robust (``1.4826 * MAD / median``): one round of a busy machine, 17x the median
  in a real XOR-net run, would otherwise be the whole number.
- ``cv_runs``: the same over the runs' medians, around the levels the step detection found
  (:func:`trainclaims.history.steps.detect_steps`: a real step is not noise); None under 3 runs.
- ``false_alarm``: how often the gate (:func:`judge`, the rule of ``trainclaims.gating._judge``:
  two one-sided Mann-Whitney U tests at the row's limit) calls two runs of an unchanged benchmark
  "changed" or "inconclusive" (both fail CI), simulated: both runs' rounds drawn with replacement
  from one recorded run's rounds (a run picked at random per simulation; the newest run's round
  count). ``false_alarm_runs`` adds the run-to-run drift: each simulated run's rounds are scaled by
  a ratio of a run's median to its level drawn from the history (3 runs or more).

Measured on the real rounds of one CPU run of the 5 CPU benchmarks (2 cores;
``/work/runs/history/measure_noise.py``, 4000 simulated pairs each, ``measured_noise.txt`` there):

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

(*with 4% drift*: a 12-run history of the same rounds, each run scaled by a lognormal factor of
4%, the drift of the median cost measured over 11 unchanged runs in trainclaims/gating.py.) The XOR
net's rounds are too spread for 30 of them to rule out a 40% slowdown one time in six: its
inconclusive calls are its noise, not a change.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainclaims.history.steps import MAD_TO_SIGMA, detect_steps

SIMULATIONS = 2000  # pairs of simulated runs: a rate of 1% is then known to about +-0.2%


@dataclass(frozen=True)
class Gate:
    """The benchmark gate's numbers (``trainclaims.gating.BenchGate``), for one benchmark."""

    min_effect: float
    alpha: float
    rule_out_alpha: float

    @classmethod
    def of(cls, row: dict[str, Any] | None = None, legacy: bool = False) -> Gate:
        """The gate as ``trainclaims.gating`` applies it to ``row`` (its own ``gate_min_effect``
        where it recorded one; the legacy limit for rows without step costs)."""
        from trainclaims.gating import DEFAULT_GATE

        limit = DEFAULT_GATE.legacy_min_effect if legacy else DEFAULT_GATE.min_effect
        if row is not None and isinstance(row.get("gate_min_effect"), (int, float)) and not legacy:
            limit = float(row["gate_min_effect"])
        return cls(limit, DEFAULT_GATE.alpha, DEFAULT_GATE.rule_out_alpha)


def judge(before: Any, after: Any, gate: Gate) -> list[str]:
    """The gate's call for each pair of rows of ``before`` and ``after`` (arrays of rounds, one
    pair per row: a cost or a time, larger is slower): "changed" (slower by more than the limit,
    Mann-Whitney U p < alpha), "same" (the rounds rule out that slowdown at rule_out_alpha) or
    "inconclusive". The rule of ``trainclaims.gating._judge``, vectorised (scipy's
    ``mannwhitneyu`` along axis 1)."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    before, after = np.atleast_2d(np.asarray(before, float)), np.atleast_2d(np.asarray(after, float))
    rise = np.median(after, axis=1) / np.median(before, axis=1) - 1
    p = mannwhitneyu(after, before, alternative="greater", axis=1).pvalue
    p_same = mannwhitneyu((1 + gate.min_effect) * before, after, alternative="greater", axis=1).pvalue
    changed = (rise > gate.min_effect) & (p < gate.alpha)
    same = ~changed & (p_same < gate.rule_out_alpha)
    return ["changed" if c else "same" if s else "inconclusive" for c, s in zip(changed, same, strict=True)]


def compare_rows(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, float | None, Gate]:
    """How ``new`` compares with ``old`` (the same benchmark in two runs): "slower", "faster",
    "unchanged" or "inconclusive", the change of the compared median (new/old - 1) and the gate
    used. The gate's rule both ways: on the step costs where both rows have them, else (rows from
    before trainclaims 0.4) on the round times with the legacy limit, else on samples/s alone."""
    if old.get("step_costs") and new.get("step_costs"):
        before, after, gate = old["step_costs"], new["step_costs"], Gate.of(new)
    elif old.get("rounds_s") and new.get("rounds_s"):
        before, after, gate = old["rounds_s"], new["rounds_s"], Gate.of(new, legacy=True)
    else:
        gate = Gate.of(new, legacy=True)
        if not (old.get("samples_per_s") and new.get("samples_per_s")):
            return "inconclusive", None, gate
        change = old["samples_per_s"] / new["samples_per_s"] - 1  # as a cost: time per sample
        if change > gate.min_effect:
            return "slower", change, gate
        return ("faster" if -change / (1 + change) > gate.min_effect else "unchanged"), change, gate
    change = statistics.median(after) / statistics.median(before) - 1
    forward = judge(before, after, gate)[0]
    if forward == "changed":
        return "slower", change, gate
    if judge(after, before, gate)[0] == "changed":
        return "faster", change, gate
    return ("unchanged" if forward == "same" else "inconclusive"), change, gate


@dataclass
class BenchNoise:
    """One benchmark's noise over the runs of a history (the module docstring)."""

    runs: int
    rounds: int  # the newest run's round count (what the simulations draw)
    cv_rounds: float | None
    cv_runs: float | None
    gate: Gate
    false_alarm: dict[str, float] = field(default_factory=dict)  # "changed", "inconclusive" -> rate
    false_alarm_runs: dict[str, float] | None = None
    simulations: int = 0


def robust_cv(values: Sequence[float]) -> float | None:
    """``1.4826 * MAD / median``: the coefficient of variation, robust to a few wild values."""
    if len(values) < 2:
        return None
    median = statistics.median(values)
    if median == 0:
        return None
    mad = statistics.median(abs(v - median) for v in values)
    return MAD_TO_SIGMA * mad / abs(median)


def _rates(calls: list[str]) -> dict[str, float]:
    return {k: calls.count(k) / len(calls) for k in ("changed", "inconclusive")}


def benchmark_noise(
    rows: Sequence[dict[str, Any]], *, simulations: int = SIMULATIONS, seed: int = 0
) -> BenchNoise | None:
    """The noise of one benchmark over runs (``rows``: its benchmarks.json rows, oldest first) and
    the false alarms it gives at its gate (the module docstring); None where no row has step costs."""
    import numpy as np

    measured = [
        [float(c) for c in r["step_costs"]]
        for r in rows
        if isinstance(r.get("step_costs"), list) and len(r["step_costs"]) >= 2
    ]
    if not measured:
        return None
    gate = Gate.of(rows[-1])
    medians = [statistics.median(c) for c in measured]
    cvs = [cv for c in measured if (cv := robust_cv(c)) is not None]
    drift: list[float] = []
    cv_runs = None
    if len(measured) >= 3:
        fit = detect_steps(medians, measured)
        levels = fit.levels if len(fit.levels) == len(medians) else [statistics.median(medians)] * len(medians)
        drift = [m / level for m, level in zip(medians, levels, strict=True) if level > 0]
        cv_runs = robust_cv(drift)
    n = len(measured[-1])
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(measured), size=simulations)
    pools = [np.asarray(c) for c in measured]
    before = np.stack([pools[k][rng.integers(len(pools[k]), size=n)] for k in pick])
    after = np.stack([pools[k][rng.integers(len(pools[k]), size=n)] for k in pick])
    out = BenchNoise(len(measured), n, statistics.median(cvs) if cvs else None, cv_runs, gate, simulations=simulations)
    out.false_alarm = _rates(judge(before, after, gate))
    if drift:
        ratios = np.asarray(drift)
        scale_before = ratios[rng.integers(len(ratios), size=simulations)][:, None]
        scale_after = ratios[rng.integers(len(ratios), size=simulations)][:, None]
        out.false_alarm_runs = _rates(judge(before * scale_before, after * scale_after, gate))
    return out


def noise_by_benchmark(bench_series: Sequence[Any], *, simulations: int = SIMULATIONS) -> dict[str, BenchNoise]:
    """:func:`benchmark_noise` of each :class:`trainclaims.history.series.BenchSeries` (its key ->
    noise), the ones with step costs."""
    out = {}
    for bench in bench_series:
        noise = benchmark_noise([bench.rows[i] for i in sorted(bench.rows)], simulations=simulations)
        if noise is not None:
            out[bench.key] = noise
    return out
