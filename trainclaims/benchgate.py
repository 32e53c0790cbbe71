"""The one benchmark judge: a benchmark's row (:class:`BenchRow`, the one typed form of a
``benchmarks.json`` row), its limit (:meth:`BenchRow.limit`), the rule that calls two runs' rounds
*slower*, *the same* or *inconclusive* (:func:`judge`), the comparison of two rows built on it
(:func:`compare`), and the simulation of the false alarms a benchmark's noise gives at its limit
(:func:`benchmark_noise`). CI's gate (``trainclaims.gating``), the report (``trainclaims.render``),
the pull-request comment, the series and the site of a history (``trainclaims.history``) all call
these; none restates the rule.

The rule. Each round's step cost (the step's time over this machine's matmuls on the step's own
GEMM shapes, timed right before it: ``trainclaims.bench.step_costs``) is a sample; two one-sided
tests of the two runs' lower quartiles decide:

- **same** (passes): the rounds are smaller than the baseline's made :attr:`Gate.rule_out` (0.7
  of the limit) slower (p < :data:`RULE_OUT_ALPHA`): they rule out a slowdown of 0.7 of the limit;
- **slower** (fails): otherwise, where they are larger than the baseline's (p < :data:`ALPHA`):
  a slowdown that the rounds cannot rule out to reach 0.7 of the limit;
- **inconclusive** (fails too: the gate never passes a slowdown it could not rule out): neither;
  the line says about how many rounds would tell (:meth:`Comparison.rounds_needed`).

The limit is the slowdown the gate catches: a step ``limit`` slower reads past 0.7 of it
however the runs drift within their measured noise, so it fails; an unchanged one reads well under
that, so it passes (:data:`RULE_OUT_OF_LIMIT`, measured). What is compared is each run's
lower quartile of its rounds (:func:`quartile_cost`, measured beside :data:`QUANTILE`), with a
distribution-free test. :data:`DEFAULT_LIMIT` (10%: CodSpeed's default threshold, ``asv compare``'s
factor 1.1) where a benchmark's noise allows it; a noisier benchmark records its own
(``record(..., gate_min_effect=)``), measured, and the report prints the false alarms its noise
implies at that limit (:func:`benchmark_noise`).
Rows without step costs (written before trainclaims 0.4) are compared on their round times, which
move with the machine's speed of the moment: at :data:`LEGACY_LIMIT` at least. Rows of another
machine, or whose costs were timed on another clock, are not compared (:attr:`Comparison.why`).

No torch, no pytest: scipy and numpy are imported where a judgement is made.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from trainclaims.stats import robust_cv, spread

# The limit where a benchmark records none: the slowdown the gate catches. Measured
# (suites/gate_drill.py, 2 CPU cores, 2026-12-07, 7 drills of 10 unchanged reruns and 3 with a 1.1x
# slower step, 4 quiet and 3 beside a busy core; docs/reports.md: Gating CI): the BN steps' lower
# quartiles moved -3.3% to +3.1% run to run, no false alarm in the two drills with the adaptive
# rounds of now (6 in 70 over all seven, in one drill with a noisy baseline) and the 1.1x step
# caught 42 of 42 (+5.5% to +14.6%); noisier benchmarks record wider limits of their own
# (suites/test_bench_throughput.py).
DEFAULT_LIMIT = 0.10
LEGACY_LIMIT = 0.25  # rows without step costs: round times, which move with the machine's speed
ALPHA = 0.01  # "slower": the rounds are larger than the baseline's at this level
RULE_OUT_ALPHA = 0.01  # "same": the rounds rule out a slowdown of 0.7 of the limit at this level
# "same" needs the rounds to rule out this fraction of the limit, not the limit itself: a gate that
# passes whatever rules out the limit passes a step exactly the limit slower about half the time.
# Measured (suites/gate_drill.py, 2 cores, quiet, 2026-12-07): a 1.1x slower BN step read +6.4% to
# +9.3% on the gated cost (the step's own drift), and at a rule-out of 10% the accumulating one was
# called "same" 3 of 3 times; unchanged reruns read -2.0% to +1.6%. Between the two, from seven drills
# of the five benchmarks (70 unchanged reruns and 21 at 1.1x each, judged again at each fraction):
# at 0.5 of the limit the BN steps failed 12 and 8 unchanged reruns in 70 ("inconclusive": reruns
# 1% to 3% above a baseline could not rule out 5% in 30 rounds), at 0.6 9 and 1, at 0.7 6 and 0
# (the 6 all in one drill whose quiet baseline spread 4.8%, before the longer adaptive rounds), every
# 1.1x step caught at each; at 0.8 the accumulating step's catches fell to 19 of 21.
RULE_OUT_OF_LIMIT = 0.7
TARGET_SLOWDOWN = 0.10  # the slowdown the report says how often the gate catches (asv's --factor 1.1)
# adaptive rounds: a benchmark takes rounds until its median cost's 95% interval is this fraction of
# its limit wide on either side (or its time is up): 1.5% at 10%, about a fifth of the rule-out. Measured
# (suites/gate_drill.py beside a busy core, 2026-12-07): a quiet baseline whose BN rounds spread 4.8%
# (robust CV) stopped at 30 rounds (the interval then a quarter of the limit, 2.5%, and a 6 s cap),
# and unchanged reruns 0.5% to 3.1% slower beside the busy core could not rule out 5%: 10 false
# alarms in 10, "inconclusive" (p 0.04 where 0.01 is needed).
INTERVAL_OF_LIMIT = 0.15
MEDIAN_SE = math.sqrt(math.pi / 2)  # the sample median's standard error over the mean's (Gaussian)
Z_95 = 1.959964  # the adaptive rounds' 95% interval
# The rule reads each run's lower quartile of its rounds (the median of its faster half). Measured
# (suites/gate_drill.py, 2 cores, quiet, 2026-12-07): the seed-FC step's cost sat at 1.19 for
# stretches of rounds and at 1.52 for others within one run (20 rounds in a row at 1.52, then back),
# a run holding from none to half of its rounds in the slow state: the GEMMs kept their speed while
# the step's memory-bound part took 2.4x as long, so the state is the machine's (a neighbour on the
# core's caches), not the step's. All the rounds' medians read those shares as changes (-4.9% to
# +6.8% between unchanged runs); their lower quartiles -4.6% to +3.0%, and a 1.1x slower step +5.2%
# to +7.4% (BN: -2.2% to +2.1% unchanged, +6.8% to +10.6% slowed). A step slowed in both states is
# slowed in its lower quartile; one that only spends more rounds in the slow state is not seen
# (samples/s shows it). The test: how many of each run's rounds are among the two runs' pooled lower
# quartile, against that count's exact distribution where both come from one distribution (:func:`_cdf`).
# Measured beside a busy core: a test that counted one run's rounds below the other's quartile let
# the share of slow rounds in the new run decide (4 false alarms in 10 at seed-FC's 20%).
QUANTILE = 0.25
MIN_ROUNDS = 20  # the fewest a run takes: 10 against 10 reach p = 0.016 at best, 20 against 20 2e-4 (:func:`_cdf`)
NEEDED_SIMULATIONS = 200  # pairs per round count tried when an inconclusive call says what would tell
SIMULATIONS = 2000  # pairs of simulated runs: a rate of 1% is then known to about +-0.2%

COSTS_CLOCK_WALL = "wall"  # perf_counter around the step and its GEMMs (rows before the thread clock)
COSTS_CLOCK_THREAD = "thread-cpu"  # the thread's CPU time (time.thread_time): a core taken away is not counted


@dataclass
class BenchRow:
    """One benchmark on one device in one run: what ``trainclaims.bench.record`` measured, as
    ``benchmarks.json`` carries it. :meth:`from_json` is the one way in from JSON (ValueError,
    one line, for a row that is not one); :meth:`to_json` the one way out. Keys it does not know (a
    benchmark's own figures: ratios, micro-batches) ride along in :attr:`extra`."""

    fullname: str
    device: str = "cpu"
    name: str = ""
    group: str = ""
    device_name: str | None = None
    rounds: int | None = None  # pytest-benchmark's round count
    rounds_s: list[float] | None = None  # every round's time
    mean_s: float | None = None
    min_s: float | None = None
    stddev_s: float | None = None
    median_s: float | None = None
    iqr_s: float | None = None
    timer: str | None = None
    samples_per_s: float | None = None
    flops_per_step: float | None = None
    flops_per_s: float | None = None
    matmul_flops_per_s: float | None = None
    matmul_fraction: float | None = None
    step_costs: list[float] | None = None  # the gated number, round by round
    step_cost: float | None = None
    step_cost_spread: float | None = None
    cost_clock: str | None = None  # the clock the step costs were timed on (None: wall, before the thread clock)
    gate_min_effect: float | None = None  # the benchmark's own limit, where it recorded one
    note: str = ""
    torch: str | None = None
    cuda: str | None = None
    dtype: str | None = None
    noise: dict[str, Any] | None = None  # what the report computed of its rounds (:func:`noise_json`)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.fullname, self.device

    @property
    def short(self) -> str:
        return self.name or self.fullname.split("::")[-1]

    @property
    def clock(self) -> str:
        return self.cost_clock or COSTS_CLOCK_WALL

    def limit(self, on_costs: bool | None = None) -> float:
        """The slowdown this benchmark's rounds must rule out: its own limit, else :data:`DEFAULT_LIMIT`;
        compared on round times (no step costs on one side), :data:`LEGACY_LIMIT` at least."""
        on_costs = bool(self.step_costs) if on_costs is None else on_costs
        own = self.gate_min_effect
        if on_costs:
            return DEFAULT_LIMIT if own is None else own
        return max(own or 0.0, LEGACY_LIMIT)

    @classmethod
    def from_json(cls, data: Any, where: str = "benchmark row") -> BenchRow:
        if not isinstance(data, dict) or not isinstance(data.get("fullname"), str):
            raise ValueError(f"{where}: not a benchmark row (no 'fullname'): {str(data)[:60]}")
        here = f"{where} {data['fullname']}"
        known: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra" or f.name not in data or data[f.name] is None:
                continue
            known[f.name] = _field(f.name, data[f.name], here)
        extra = {k: v for k, v in data.items() if k not in _FIELD_NAMES}
        return cls(**known, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name in ("note", "name", "group") and value == ""):
                continue
            out[f.name] = value
        return out | self.extra


_NUMBERS = {
    "mean_s", "min_s", "stddev_s", "median_s", "iqr_s", "samples_per_s", "flops_per_step", "flops_per_s",
    "matmul_flops_per_s", "matmul_fraction", "step_cost", "step_cost_spread", "gate_min_effect",
}  # fmt: skip
_LISTS = {"rounds_s", "step_costs"}
_FIELD_NAMES = {f.name for f in fields(BenchRow)} - {"extra"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(name: str, value: Any, where: str) -> Any:
    if name in _NUMBERS:
        if not _is_number(value):
            raise ValueError(f"{where}: {name} {value!r} is not a number")
        return float(value)
    if name in _LISTS:
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise ValueError(f"{where}: {name} is not a list of numbers")
        return [float(v) for v in value]
    if name == "rounds":
        if not _is_number(value):
            raise ValueError(f"{where}: rounds {value!r} is not a number")
        return int(value)
    if name == "noise":
        return value if isinstance(value, dict) else None
    return str(value)


def rows_from_json(data: Any, where: str) -> list[BenchRow]:
    """The rows of a ``benchmarks.json`` (its ``benchmarks`` list); ValueError (one line) where it
    is not one."""
    rows = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{where} is not a trainclaims benchmarks.json (no 'benchmarks' list of fullname/device)")
    return [BenchRow.from_json(r, where) for r in rows]


# --------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Gate:
    """The numbers the rule uses for one comparison."""

    limit: float = DEFAULT_LIMIT
    alpha: float = ALPHA
    rule_out_alpha: float = RULE_OUT_ALPHA

    @property
    def rule_out(self) -> float:
        """The slowdown a run's rounds must rule out to pass: :data:`RULE_OUT_OF_LIMIT` of the limit."""
        return self.limit * RULE_OUT_OF_LIMIT

    def rule_out_text(self) -> str:
        """ "+7%, 0.7 of the limit": what the gate lines say a run must rule out."""
        return f"+{self.rule_out * 100:g}%, {RULE_OUT_OF_LIMIT:g} of the limit"


def quartile_cost(rounds: Sequence[float]) -> float:
    """What the gate reads of a run's rounds: their lower quartile (the :func:`_rank`-th smallest,
    about the median of the faster half)."""
    return float(sorted(rounds)[_rank(len(rounds)) - 1])


def _rank(n: int) -> int:
    return max(1, math.ceil(n * QUANTILE))


@functools.lru_cache(maxsize=256)
def _cdf(n_larger: int, n_smaller: int) -> Any:
    """``cdf[x]``: the chance that at most ``x`` of ``n_larger`` rounds are among the pooled rounds'
    :func:`_rank` smallest where both runs' rounds come from one distribution
    (hypergeometric: exact, whatever the distribution)."""
    import numpy as np
    from scipy.stats import hypergeom

    pooled = n_larger + n_smaller
    return hypergeom.cdf(np.arange(n_larger + 1), pooled, _rank(pooled), n_larger)


def _p_greater(larger: Any, smaller: Any) -> Any:
    """One-sided p-values, row by row, that ``larger``'s rounds sit above ``smaller``'s at the lower
    quartile: how few of ``larger``'s rounds are among the pooled rounds' lower quartile, against
    :func:`_cdf` (a quantile test, Mood's median test at the lower quartile; a tie counts for the
    null hypothesis)."""
    import numpy as np

    n_larger, n_smaller = larger.shape[1], smaller.shape[1]
    pooled = np.concatenate([larger, smaller], axis=1)  # a stable sort puts larger's ties first
    order = np.argsort(pooled, axis=1, kind="stable")[:, : _rank(n_larger + n_smaller)]
    among = (order < n_larger).sum(axis=1)
    return _cdf(n_larger, n_smaller)[among]


def judge(before: Any, after: Any, gate: Gate) -> list[str]:
    """The rule (the module docstring) for each pair of rows of ``before`` and ``after`` (arrays of
    rounds, one pair per row; larger is slower): "slower", "same" or "inconclusive". Vectorised:
    one call judges one pair or thousands of simulated ones."""
    return _calls(*_p_values(before, after, gate), gate)


def _calls(p_slower: Any, p_same: Any, gate: Gate) -> list[str]:
    """The rule's call for each row of :func:`_p_values`."""
    same = p_same < gate.rule_out_alpha
    slower = ~same & (p_slower < gate.alpha)
    return ["same" if s else "slower" if w else "inconclusive" for s, w in zip(same, slower, strict=True)]


def _p_values(before: Any, after: Any, gate: Gate) -> tuple[Any, Any]:
    """Row by row: p that the rounds are slower, p that they are under :attr:`Gate.rule_out`."""
    import numpy as np

    before, after = np.atleast_2d(np.asarray(before, float)), np.atleast_2d(np.asarray(after, float))
    return _p_greater(after, before), _p_greater((1 + gate.rule_out) * before, after)


@dataclass
class Comparison:
    """How one benchmark's row in a run compares with its row in another (:func:`compare`)."""

    status: str  # slower / faster / unchanged / inconclusive / incomparable
    old: BenchRow
    new: BenchRow
    what: str = ""  # "step cost", "round times" or "samples/s": what was compared
    change: float | None = None  # quartile_cost new/old - 1 (as a cost: larger is slower)
    gate: Gate = field(default_factory=Gate)
    p_slower: float | None = None
    p_same: float | None = None
    why: str = ""  # incomparable: why

    @property
    def failed(self) -> bool:
        """What fails CI: slower, or a slowdown that could not be ruled out."""
        return self.status in ("slower", "inconclusive")

    @property
    def before(self) -> list[float]:
        return _compared(self.old, self.what)

    @property
    def after(self) -> list[float]:
        return _compared(self.new, self.what)

    def rounds_needed(self) -> int | None:
        """About how many rounds a run would have told this change from the limit: the fewest (of
        1.5x, 2x, 3x ... 16x this run's) with which the rule, applied to rounds drawn from these two
        runs' (with replacement, :data:`NEEDED_SIMULATIONS` pairs), makes the call their lower
        quartiles point to (*same* below the rule-out, *slower* past it) nine times in ten; None where not
        even 16x would (the change sits at the rule-out, or the rounds are that spread)."""
        before, after = self.before, self.after
        if self.change is None or not before or not after:
            return None
        import numpy as np

        want = "same" if self.change < self.gate.rule_out else "slower"
        rng = np.random.default_rng(0)
        pool_b, pool_a = np.asarray(before), np.asarray(after)
        base = max(len(before), len(after), MIN_ROUNDS)
        for factor in (1, 1.5, 2, 3, 4, 6, 8, 12, 16):
            n = math.ceil(base * factor)
            b = pool_b[rng.integers(len(pool_b), size=(NEEDED_SIMULATIONS, n))]
            a = pool_a[rng.integers(len(pool_a), size=(NEEDED_SIMULATIONS, n))]
            if judge(b, a, self.gate).count(want) >= 0.9 * NEEDED_SIMULATIONS:
                return n
        return None

    def at_the_default_limit(self) -> str:
        """For a benchmark gated at a wider limit of its own (its noise), what the same rounds say at
        :data:`DEFAULT_LIMIT`, said, not gated: "same", "slower", or inconclusive with about how many
        rounds a run would tell; empty where the limit is the default or no step costs were compared."""
        if self.what != "step cost" or self.gate.limit <= DEFAULT_LIMIT or self.status not in ("unchanged", "faster"):
            return ""
        at_default = replace(self, gate=Gate(DEFAULT_LIMIT))
        call = judge(self.before, self.after, at_default.gate)[0]
        if call != "inconclusive":
            return f"at {DEFAULT_LIMIT:.0%}: {call} (not gated)"
        return f"at {DEFAULT_LIMIT:.0%}: inconclusive, {at_default.would_tell() or 'its noise cannot tell'} (not gated)"

    def would_tell(self) -> str:
        """ "about N rounds a run would tell (this run took M)" (:meth:`rounds_needed`), or empty where
        not even 16x the rounds would."""
        n = self.rounds_needed()
        return f"about {n} rounds a run would tell (this run took {len(self.after)})" if n else ""

    def numbers(self) -> str:
        """The numbers behind the call, in one line."""
        old, new = self.old, self.new
        raw = ""
        if old.samples_per_s and new.samples_per_s:
            drop = new.samples_per_s / old.samples_per_s - 1
            raw = f"{new.samples_per_s:.4g} samples/s against the baseline's {old.samples_per_s:.4g} ({drop:+.0%})"
        if self.what == "samples/s":
            return f"{raw} (limit {self.gate.limit:.0%}; no rounds to compare)"
        before, after = self.before, self.after
        p = (
            f"lower-quartile test: slower p={self.p_slower:.2g}, "
            f"under +{self.gate.rule_out * 100:g}% p={self.p_same:.2g}"
        )
        if self.what == "round times":
            return f"{raw} ({p}, limit {self.gate.limit:.0%}; the baseline has no step costs: keep a new one)"
        clock = "on the thread's CPU clock" if new.clock == COSTS_CLOCK_THREAD else "on the wall clock"
        return (
            f"step cost {quartile_cost(after):.3g} GEMM units against the baseline's "
            f"{quartile_cost(before):.3g} (lower quartiles; {self.change:+.1%}, "
            f"limit +{self.gate.limit:.0%}; {p}; spread "
            f"{spread(after):.0%} now, {spread(before):.0%} in the baseline; {len(after)}/{len(before)} rounds "
            f"{clock}); {raw} (not gated: samples/s follow the machine's load)"
        )

    def line(self) -> str:
        """The gate's line for a comparison that fails CI (or was not made)."""
        if self.status == "incomparable":
            return self.why
        if self.status == "slower":
            past = (self.change or 0) > self.gate.limit
            beyond = "past the limit" if past else f"the rounds cannot rule out {self.gate.rule_out_text()}"
            return f"slower ({beyond}): {self.numbers()}"
        if self.status == "inconclusive":
            tell = self.would_tell()
            resolve = (
                f"{tell}: rerun with more, or on a quieter machine"
                if tell
                else f"not even {16 * max(len(self.after), MIN_ROUNDS)} rounds would tell: rerun on a quieter machine"
            )
            return (
                f"inconclusive, the rounds cannot rule out a slowdown past {RULE_OUT_OF_LIMIT:g} of the limit "
                f"(too few or too spread; "
                f"{resolve}): {self.numbers()}"
            )
        return f"{self.status}: {self.numbers()}"


def _compared(row: BenchRow, what: str) -> list[float]:
    if what == "step cost":
        return row.step_costs or []
    if what == "round times":
        return row.rounds_s or []
    return []


def compare(old: BenchRow, new: BenchRow) -> Comparison:
    """``new`` against ``old`` (the same benchmark; ``old`` the baseline): the rule both ways, on
    the step costs where both rows have them (at ``new``'s limit), else on the round times (at
    :data:`LEGACY_LIMIT` at least), else on samples/s alone (a row of no rounds: slower or faster
    past the limit, else unchanged). *incomparable* where the rows come from other machines or
    their costs from other clocks, or where there is nothing to compare."""
    machines = (old.device_name, new.device_name)
    if None not in machines and machines[0] != machines[1]:
        why = (
            f"the baseline was measured on {machines[0]}, this run on {machines[1]}: not compared "
            "(keep a baseline per machine kind)"
        )
        return Comparison("incomparable", old, new, why=why)
    if old.step_costs and new.step_costs:
        if old.clock != new.clock:
            why = (
                f"the baseline's step costs were timed on the {old.clock} clock, this run's on the {new.clock} "
                "clock: not compared (keep a new baseline: cp reports/benchmarks.json)"
            )
            return Comparison("incomparable", old, new, why=why)
        what, gate = "step cost", Gate(new.limit(on_costs=True))
    elif old.rounds_s and new.rounds_s:
        what, gate = "round times", Gate(new.limit(on_costs=False))
    elif old.samples_per_s and new.samples_per_s:
        gate = Gate(new.limit(on_costs=False))
        change = old.samples_per_s / new.samples_per_s - 1  # as a cost: time per sample
        status = "slower" if change > gate.limit else "faster" if -change / (1 + change) > gate.limit else "unchanged"
        return Comparison(status, old, new, "samples/s", change, gate)
    else:
        return Comparison("incomparable", old, new, why="nothing to compare (no rounds, no samples/s)")
    out = Comparison("inconclusive", old, new, what, gate=gate)
    before, after = out.before, out.after
    out.change = quartile_cost(after) / quartile_cost(before) - 1
    p_slower, p_same = _p_values(before, after, gate)
    out.p_slower, out.p_same = float(p_slower[0]), float(p_same[0])
    forward = _calls(p_slower, p_same, gate)[0]
    if forward == "same":
        out.status = "faster" if judge(after, before, gate)[0] == "slower" else "unchanged"
    else:
        out.status = forward
    return out


# --------------------------------------------------------------------------- noise and false alarms


@dataclass
class BenchNoise:
    """One benchmark's noise over one run or several, and what it implies at its limit."""

    runs: int
    rounds: int  # the newest run's round count (what the simulations draw)
    cv_rounds: float | None  # robust CV of the step cost over a run's rounds (median over the runs)
    cv_runs: float | None  # robust CV of the runs' medians around their levels (3 runs or more)
    gate: Gate
    false_alarm: dict[str, float] = field(default_factory=dict)  # "slower", "inconclusive" -> rate
    false_alarm_runs: dict[str, float] | None = None  # with the run-to-run drift
    catches: float | None = None  # how often a TARGET_SLOWDOWN slower step fails the gate
    simulations: int = 0

    def to_json(self) -> dict[str, Any]:
        """What a report row carries (``noise`` in benchmarks.json)."""
        return {
            "cv_rounds": self.cv_rounds,
            "gate_min_effect": self.gate.limit,
            "false_alarm_slower": self.false_alarm.get("slower"),
            "false_alarm_inconclusive": self.false_alarm.get("inconclusive"),
            "catches_slowdown": TARGET_SLOWDOWN,
            "catches": self.catches,
            "simulations": self.simulations,
        }

    def summary(self) -> str:
        """One line: the limit, the false alarms it implies, how often it catches 10%."""
        rates = self.false_alarm_runs or self.false_alarm
        text = (
            f"limit +{self.gate.limit:.0%}: false alarms {rates.get('slower', 0):.1%} slower / "
            f"{rates.get('inconclusive', 0):.1%} inconclusive"
        )
        if self.catches is not None:
            text += f", a {TARGET_SLOWDOWN:.0%} slower step caught {self.catches:.0%}"
        cv = f"CV {self.cv_rounds:.1%} over {self.rounds} rounds" if self.cv_rounds is not None else ""
        return f"{text} ({cv}; {self.simulations} simulated pairs)" if cv else text


def _rates(calls: list[str]) -> dict[str, float]:
    return {k: calls.count(k) / len(calls) for k in ("slower", "inconclusive")}


def benchmark_noise(
    rows: Sequence[BenchRow],
    *,
    drift: Sequence[float] | None = None,
    cv_runs: float | None = None,
    simulations: int = SIMULATIONS,
    seed: int = 0,
) -> BenchNoise | None:
    """The noise of one benchmark (``rows``: its rows over runs, oldest first) and what it gives at
    its gate, simulated: both runs of a pair drawn with replacement from one recorded run's rounds
    (a run picked at random per pair; the newest run's round count) and judged by :func:`judge`.
    ``drift``: ratios of each run's median to its level (``trainclaims.history.noise``), each
    simulated run scaled by one drawn at random (``false_alarm_runs``). ``catches``: how often the
    gate fails a step :data:`TARGET_SLOWDOWN` slower (the second run's rounds scaled, drift
    included where given). None where no row has 2 step costs or more."""
    import numpy as np

    newest = rows[-1] if rows else None
    measured = [
        r.step_costs for r in rows if r.step_costs and len(r.step_costs) >= 2 and newest and r.clock == newest.clock
    ]
    if not measured or newest is None:
        return None
    gate = Gate(newest.limit(on_costs=True))
    cvs = [cv for c in measured if (cv := robust_cv(c)) is not None]
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
        before = before * ratios[rng.integers(len(ratios), size=simulations)][:, None]
        after = after * ratios[rng.integers(len(ratios), size=simulations)][:, None]
        out.false_alarm_runs = _rates(judge(before, after, gate))
    slowed = judge(before, after * (1 + TARGET_SLOWDOWN), gate)
    out.catches = sum(c != "same" for c in slowed) / len(slowed)
    return out
