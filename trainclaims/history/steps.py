"""Steps in a history: where a series of measurements (a benchmark's step cost run after run, a
claim's gap) moved to another level, told apart from its noise by each point's own spread.

The method (implemented here, no dependency beyond the standard library):

1. **Scale.** A series whose values are all positive is fitted in ``log`` (timings and gaps vary by
   a factor, not by an amount: a 20% slower step is the same step at 1 ms as at 1 s); any other
   series as it is.
2. **Each point's noise** ``sigma_i**2 = s_i**2 + tau**2``: ``s_i`` is the standard error of the
   point's median from its own rounds (``1.2533 * 1.4826 * MAD / sqrt(n)``: the MAD as a robust
   standard deviation, times the median's standard error over the mean's for Gaussian noise), 0
   for a point without rounds (a claim's gap), shrunk halfway to the series' median (see
   :func:`noise_sigmas`); ``tau`` is the run-to-run noise that one run's rounds cannot show (a busy
   machine, another process): the robust spread of the successive differences of the points over
   ``sqrt(2)`` (von Neumann's idea; robust, so the one difference a step makes does not count),
   less the rounds' share. The spread is Rousseeuw & Croux's Qn (1993), not the MAD: see
   :func:`qn_scale`. This is asv's weighting of each point by its spread (asv.step_detect), made
   a variance so that the rounds' and the run-to-run noise add up.
3. **Outlying runs** are set aside before the fit by a Hampel identifier (Hampel 1974; Pearson
   2002): a point more than ``HAMPEL_T`` sigmas from the median of its window (2 runs on either
   side, narrowed at the ends) is one run's accident, not a level: it is replaced by that median
   for the fit and reported in :attr:`Fit.outliers`. A new level must therefore last 3 runs to be
   seen inside a series (2 at its end, where the window narrows); the last run alone is never a
   step (``min_size`` 2): a change in the newest run alone is what the pull-request comment's
   pairwise gate is for, and becomes a step once the next run confirms it.
4. **The fit** is the exact minimiser of ``sum_i (y_i - mu_seg(i))**2 / sigma_i**2 + beta * steps``
   over all piecewise-constant ``mu`` (optimal partitioning, found with PELT's pruning: Killick,
   Fearnhead & Eckley 2012, "Optimal detection of changepoints with a linear computational
   cost", JASA 107:1590), ``beta = PENALTY_PER_LOG_N * ln(n)``.

The penalty, measured (``/work/runs/history/measure_steps.py``, numbers in ``measured.txt`` there:
2000 series per cell, the step-free ones at level 10; a *false alarm* is a series without a step
in which at least one was found; *detection*: one step in the middle of the series, found):

==========================================  =======  =======  =======  =======
series (c = ``PENALTY_PER_LOG_N`` = 5)       n = 8    n = 15   n = 30   n = 100
==========================================  =======  =======  =======  =======
false alarms, Gaussian, no rounds (a gap)     5.3%     2.5%     0.7%     0.1%
false alarms, Student t (3 d.o.f.)            7.1%     2.9%     2.4%     1.3%
false alarms, benchmark-like                  3.2%     1.5%     2.1%     1.0%
false alarms, real rounds only                1.8%     2.5%     2.2%     4.0%
detected: a step of 3 sigmas, Gaussian       54.9%    87.9%    99.7%     100%
detected: a step of 5 sigmas, Gaussian       86.4%    99.9%     100%     100%
detected: +20%, benchmark-like               53.9%    75.8%    87.1%    95.8%
detected: +20%, real rounds only             71.5%    82.4%    88.4%    98.1%
==========================================  =======  =======  =======  =======

*Benchmark-like*: every run 30 rounds drawn from the real step-cost rounds of one CPU run of
``pytest -m benchmark suites/test_bench_throughput.py`` (2 cores; one of its 5 benchmarks per
series: the XOR net's rounds spread 85% IQR/median, so +20% is within its noise), times a
run-to-run factor, lognormal with 4% standard deviation (the drift of the median cost measured over
11 unchanged runs: trainclaims/gating.py); *real rounds only*: the same without that factor. The
run where a found step began is the true one in 79-99% of detections, within one run in 89-100%.
With ``c = 4`` the false alarms were 1.3-1.6x as many (Gaussian: 8.0%, 4.2%, 2.1%, 0.3%) for a few
points more detection (3 sigmas: 64%, 94%, 100%, 100%); with the MAD of successive differences in
place of Qn, 1.6-5x as many (1000 Gaussian series each, c = 4). A short history (n < 15) tells
less: read its steps as candidates.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from trainclaims.stats import MAD_TO_SIGMA

PENALTY_PER_LOG_N = 5.0  # beta = c ln n; c measured above (the module docstring)
HAMPEL_HALF_WINDOW = 2  # runs on either side (a 5-run window: Pearson 2002's default size)
HAMPEL_T = 3.0  # sigmas from the window's median (Hampel's and Pearson's default threshold)
MIN_POINTS = 4  # fewer points cannot tell a step from the noise they alone estimate
MEDIAN_SE = math.sqrt(math.pi / 2)  # the sample median's standard error over the mean's (Gaussian)
SE_SHRINK = 0.5  # how far each point's own variance is pulled to the series' median (measured: noise_sigmas)
REL_FLOOR = 1e-9  # a noise floor relative to the series' size: exact repeats are not infinitely precise
ABS_FLOOR = 1e-300  # and an absolute one, for a series of zeros


@dataclass(frozen=True)
class LevelChange:
    """A level change: the new level began at the point ``index`` (an index into the series as
    given, or into ``at`` where that was given: the run)."""

    index: int
    before: float  # the level before, on the series' own scale (a geometric mean where fitted in log)
    after: float
    change: float | None  # after/before - 1; None where before is 0
    z: float  # the change in units of its standard error (both levels' points' noise)
    below_gate: bool | None = None  # the change is smaller than the gate limit given (None: no limit given)

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class Fit:
    """What :func:`detect_steps` found in a series."""

    steps: list[LevelChange] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)  # the fitted level at each point, on the series' scale
    outliers: list[int] = field(default_factory=list)  # points set aside as one run's accident (indices as steps')
    sigma: list[float] = field(default_factory=list)  # each point's noise, in the fit's scale (log or not)
    log: bool = False  # fitted in log
    penalty: float = 0.0  # the beta used
    note: str = ""  # why no fit was made, where none was


def _mad(values: Sequence[float]) -> float:
    median = statistics.median(values)
    return statistics.median(abs(v - median) for v in values)


def _point_se(rounds: Sequence[float] | None, log: bool) -> float:
    """The standard error of a point's median from its rounds (0 without 3 rounds or more)."""
    if not rounds or len(rounds) < 3:
        return 0.0
    xs = [math.log(r) for r in rounds] if log else list(rounds)
    return MEDIAN_SE * MAD_TO_SIGMA * _mad(xs) / math.sqrt(len(xs))


def qn_scale(xs: Sequence[float]) -> float:
    """Rousseeuw & Croux's Qn: a robust standard deviation (the k-th smallest of the pairwise
    distances, k = C(n//2 + 1, 2), times 2.2219 and their small-sample factor), 82% as efficient
    as the standard deviation for Gaussian noise where the MAD is 37%: fewer false steps from a
    noise underestimated by chance in a short series. O(n^2): fine for the histories kept here."""
    n = len(xs)
    if n < 2:
        return 0.0
    h = n // 2 + 1
    k = h * (h - 1) // 2
    dists = sorted(abs(a - b) for i, a in enumerate(xs) for b in xs[i + 1 :])
    # Croux & Rousseeuw 1992, "Time-efficient algorithms for two highly robust estimators of scale":
    # the factor d_n for n <= 9, and n/(n+1.4) (odd) or n/(n+3.8) (even) above
    small = {2: 0.399, 3: 0.994, 4: 0.512, 5: 0.844, 6: 0.611, 7: 0.857, 8: 0.669, 9: 0.872}
    d_n = small.get(n) or (n / (n + 1.4) if n % 2 else n / (n + 3.8))
    return 2.2219 * d_n * dists[k - 1]


def noise_sigmas(y: Sequence[float], se: Sequence[float]) -> list[float]:
    """Each point's noise: its rounds' standard error and the run-to-run noise added as variances
    (the module docstring, point 2), floored."""
    diffs = [b - a for a, b in itertools.pairwise(y)]
    total = qn_scale(diffs) / math.sqrt(2)
    within = statistics.median(s * s for s in se) if se else 0.0
    tau2 = max(total * total - within, 0.0)
    floor = max(REL_FLOOR * max(abs(v) for v in y), REL_FLOOR if any(se) else ABS_FLOOR)
    # each point's own variance shrunk halfway to the series' median: the MAD of a run's 30 rounds
    # is itself noisy, and a point whose spread is underestimated by chance would pull a step
    # towards it (measured: a third fewer false alarms, the same detection)
    own = [SE_SHRINK * within + (1 - SE_SHRINK) * s * s for s in se]
    return [max(math.sqrt(v + tau2), floor) for v in own]


def hampel(y: Sequence[float], sigma: Sequence[float]) -> tuple[list[float], list[int]]:
    """``y`` with its outlying points replaced by their window's median, and their indices."""
    out, outliers = list(y), []
    n = len(y)
    for i in range(n):
        h = min(HAMPEL_HALF_WINDOW, i, n - 1 - i)
        if h == 0:
            continue
        median = statistics.median(y[i - h : i + h + 1])
        if abs(y[i] - median) > HAMPEL_T * sigma[i]:
            out[i] = median
            outliers.append(i)
    return out, outliers


def partition(y: Sequence[float], sigma: Sequence[float], beta: float, min_size: int = 2) -> list[int]:
    """The starts of the segments after the first that minimise the penalised weighted squared
    error (PELT, exact): ``sum (y - mu_seg)**2 / sigma**2 + beta`` per change."""
    n = len(y)
    if n < 2 * min_size:
        return []
    centre = statistics.median(y)
    w = [1.0 / (s * s) for s in sigma]
    sw, swy, swyy = [0.0], [0.0], [0.0]  # prefix sums of w, w*y, w*y^2 (centred: less cancellation)
    for wi, yi in zip(w, y, strict=True):
        d = yi - centre
        sw.append(sw[-1] + wi)
        swy.append(swy[-1] + wi * d)
        swyy.append(swyy[-1] + wi * d * d)

    def cost(s: int, t: int) -> float:
        a, b, c = sw[t] - sw[s], swy[t] - swy[s], swyy[t] - swyy[s]
        return max(c - b * b / a, 0.0)

    best = [math.inf] * (n + 1)
    best[0] = -beta
    last = [0] * (n + 1)
    candidates = [0]
    for t in range(min_size, n + 1):
        new = t - min_size
        if new >= min_size:
            candidates.append(new)
        totals = [best[s] + cost(s, t) + beta for s in candidates]
        i = min(range(len(totals)), key=totals.__getitem__)
        best[t], last[t] = totals[i], candidates[i]
        # PELT: a start that cannot beat the best now never will (the cost has K = 0)
        candidates = [s for s, v in zip(candidates, totals, strict=True) if v - beta <= best[t]]
    starts, t = [], n
    while t > 0:
        s = last[t]
        if s > 0:
            starts.append(s)
        t = s
    return sorted(starts)


def _mean(y: Sequence[float], sigma: Sequence[float], s: int, t: int) -> float:
    w = [1 / sigma[i] ** 2 for i in range(s, t)]
    return sum(wi * y[i] for wi, i in zip(w, range(s, t), strict=True)) / sum(w)


def _real(starts: list[int], y: Sequence[float], sigma: Sequence[float]) -> list[int]:
    """``starts`` less those between two levels equal to rounding: a long series of exact repeats
    gives its points a noise at the floor, where the fit's sums lose more to rounding than the
    penalty (a "step" from 0.3125 to 0.3125, seen at 200 runs)."""
    scale = max((abs(v) for v in y), default=0.0) or 1.0
    kept = list(starts)
    while True:
        bounds = [0, *kept, len(y)]
        means = [_mean(y, sigma, s, t) for s, t in itertools.pairwise(bounds)]
        flat = [k for k in range(len(kept)) if abs(means[k + 1] - means[k]) <= 1e-9 * scale]
        if not flat:
            return kept
        del kept[flat[0]]


def detect_steps(
    values: Sequence[float],
    rounds: Sequence[Sequence[float] | None] | None = None,
    *,
    at: Sequence[int] | None = None,
    gate_limit: float | None = None,
    penalty: float | None = None,
    min_size: int = 2,
) -> Fit:
    """The steps in ``values`` (in order: run after run), each point weighted by its spread.

    ``rounds``: each point's rounds where it has some (a benchmark's step costs), else None;
    ``at``: the run index of each point (a series missing from some runs), so that a step's
    ``index`` names the run; ``gate_limit``: a relative change below which a step is marked
    ``below_gate`` (a benchmark's gate limit: 0.25, or its row's ``gate_min_effect``);
    ``penalty``: beta (default ``PENALTY_PER_LOG_N * ln n``). NaN and infinite values are left out.
    """
    at = list(range(len(values))) if at is None else list(at)
    rounds = [None] * len(values) if rounds is None else list(rounds)
    if not len(at) == len(rounds) == len(values):
        raise ValueError(f"detect_steps: {len(values)} values, {len(rounds)} rounds, {len(at)} run indices")
    keep = [i for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    ys = [float(values[i]) for i in keep]
    pts_rounds = [rounds[i] for i in keep]
    index = [at[i] for i in keep]
    if len(ys) < MIN_POINTS:
        return Fit(levels=list(ys), note=f"{len(ys)} points: a step needs {MIN_POINTS} to tell from noise")
    log = all(v > 0 for v in ys) and all(all(r > 0 for r in rs) for rs in pts_rounds if rs)
    y = [math.log(v) for v in ys] if log else ys
    se = [_point_se(rs, log) for rs in pts_rounds]
    sigma = noise_sigmas(y, se)
    cleaned, outliers = hampel(y, sigma)
    beta = PENALTY_PER_LOG_N * math.log(len(y)) if penalty is None else penalty
    starts = _real(partition(cleaned, sigma, beta, min_size), cleaned, sigma)
    bounds = [0, *starts, len(y)]
    back = math.exp if log else float
    levels: list[float] = []
    segments = []
    for s, t in itertools.pairwise(bounds):
        w = [1 / sigma[i] ** 2 for i in range(s, t)]
        mu = sum(wi * cleaned[i] for wi, i in zip(w, range(s, t), strict=True)) / sum(w)
        segments.append((mu, sum(w)))
        levels += [back(mu)] * (t - s)
    steps = []
    for k, start in enumerate(starts):
        (mu0, w0), (mu1, w1) = segments[k], segments[k + 1]
        before, after = back(mu0), back(mu1)
        change = (after / before - 1) if before != 0 else None
        below = None
        if gate_limit is not None:
            ratio = after / before if before > 0 and after > 0 else math.inf
            below = max(ratio, 1 / ratio if ratio else math.inf) - 1 < gate_limit
        z = abs(mu1 - mu0) / math.sqrt(1 / w0 + 1 / w1)
        steps.append(LevelChange(index[start], before, after, change, z, below))
    return Fit(steps, levels, [index[i] for i in outliers], sigma, log, beta)
