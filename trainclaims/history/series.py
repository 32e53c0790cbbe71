"""What a history holds, as series over its runs: each claim's verdict per numerics mode and
device, each claim test's measured numbers (its evidence), and each benchmark's step cost,
samples/s and share of the matmul rate, with each point's spread. The site and the pull-request
comment read the history through these; the steps in each series are found by
:mod:`trainclaims.history.steps`.

Everything here reads the plain JSON shapes of claims.json and benchmarks.json (see the package
docstring), never ``trainclaims.results``: a claims.json with new fields reads the same.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from trainclaims.history.steps import Fit, detect_steps
from trainclaims.history.store import History, Run
from trainclaims.verdicts import FAILED_OUTCOMES

ALL = "*"  # a row over every numerics mode or device: the claim's own verdict
VERDICTS = ("holds", "conditional", "refuted", "fails", "not measured")
UNMEASURED = ("skipped", "deselected", "not run", "crashed")
WORST_FIRST = ("fails", "refuted", "conditional", "holds")  # a test-concluded verdict that outranks
ROUNDS_MIN = 3  # an evidence list this long is samples of one number (a gap per seed): a point with a spread
EVIDENCE_DEPTH = 3  # nested evidence dicts read this deep (derivative_at_zero -> op -> value is 2)


def claim_verdicts(run: Run) -> dict[tuple[str, str, str], tuple[str, str]]:
    """``(claim, mode, device) -> (verdict, why)`` for one run, ``ALL`` standing for every mode or
    device: the claim's own verdict at ``(claim, ALL, ALL)``, its verdict per numerics mode (as
    claims.json has it: ``modes``), and per device the verdict where that device's tests take it:
    *fails* where one of them failed, *not measured* where none ran, else a verdict a test
    concluded there, else the claim's (a claim that fails on another device *holds* here)."""
    out: dict[tuple[str, str, str], tuple[str, str]] = {}
    for claim in run.claims or ():
        cid = str(claim.get("id"))
        verdict, why = str(claim.get("verdict")), str(claim.get("why") or "")
        out[(cid, ALL, ALL)] = (verdict, why)
        modes = claim.get("modes") if isinstance(claim.get("modes"), dict) else {}
        for mode, mv in modes.items():
            if isinstance(mv, dict):
                out[(cid, str(mode), ALL)] = (str(mv.get("verdict")), str(mv.get("why") or ""))
        tests = [t for t in claim.get("tests") or () if isinstance(t, dict)]
        devices = sorted({str(t.get("device")) for t in tests if t.get("device")})
        for mode in [ALL, *modes]:
            base = out.get((cid, mode, ALL), (verdict, why))
            for device in devices:
                mine = [
                    t
                    for t in tests
                    if str(t.get("device")) == device and (mode == ALL or (t.get("numerics") or "ieee") == mode)
                ]
                out[(cid, mode, device)] = _device_verdict(mine, base)
    return out


def _device_verdict(tests: list[dict[str, Any]], base: tuple[str, str]) -> tuple[str, str]:
    ran = [t for t in tests if t.get("outcome") not in UNMEASURED]
    if not ran:
        why = next((str(t.get("reason") or "") for t in tests if t.get("reason")), "no test ran here")
        return "not measured", why
    failed = [t for t in ran if t.get("outcome") in FAILED_OUTCOMES]
    if failed:
        return "fails", first_line(str(failed[0].get("reason") or failed[0].get("outcome")))
    concluded = [str(t["verdict"]) for t in ran if t.get("verdict") in WORST_FIRST]
    if concluded:
        worst = min(concluded, key=WORST_FIRST.index)
        return worst, next(str(t.get("why") or "") for t in ran if t.get("verdict") == worst)
    if base[0] in ("fails", "not measured"):
        return "holds", "its tests here passed"
    return base


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


@dataclass
class Point:
    """One run's measurement in a series: its value, its rounds where it has some (a benchmark's
    step costs, a claim's number per seed), and the band a reader sees as its spread."""

    run: int  # the run's index in the history
    value: float
    rounds: list[float] | None = None
    low: float | None = None
    high: float | None = None


@dataclass
class Series:
    """A measured number over the runs of a history."""

    key: str  # unique in the history: what it is, where it ran
    title: str
    points: list[Point] = field(default_factory=list)
    bounds: dict[int, float] = field(default_factory=dict)  # run -> the bound the evidence recorded
    expect: str = ""  # the evidence's expectation (equal / exact / differs), where it records one
    gate_limit: float | None = None  # a benchmark's gate limit
    higher_is_worse: bool | None = None  # a rise is a regression (a step cost, a gap that must stay small)
    fit: Fit | None = None

    @property
    def constant(self) -> bool:
        values = {p.value for p in self.points}
        return len(values) <= 1 and not any(p.rounds and len(set(p.rounds)) > 1 for p in self.points)

    def find_steps(self) -> Fit:
        """The steps in this series (kept in :attr:`fit`)."""
        self.fit = detect_steps(
            [p.value for p in self.points],
            [p.rounds for p in self.points],
            at=[p.run for p in self.points],
            gate_limit=self.gate_limit,
        )
        return self.fit

    def regression(self, change: float | None) -> bool | None:
        """Whether a step of this relative change is a regression (None: the series has no direction)."""
        if self.higher_is_worse is None or change is None:
            return None
        return change > 0 if self.higher_is_worse else change < 0


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0]
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def _numbers(value: Any) -> list[float] | None:
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evidence_numbers(evidence: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, float | list[float]]]:
    """The numbers in a test's evidence, as ``(dotted key, number or list of numbers)``: a list of
    3 numbers or more stays a list (samples of one number: a gap per seed), a shorter one is its
    numbers (``key[0]``, ``key[1]``); ``bound`` and the strings are left out (the bound goes with
    the gap)."""
    if not isinstance(evidence, dict) or depth >= EVIDENCE_DEPTH:
        return
    for key, value in evidence.items():
        name = f"{prefix}{key}"
        if key == "bound" and not prefix:
            continue
        if _is_number(value):
            yield name, float(value)
        elif (numbers := _numbers(value)) is not None and len(numbers) >= ROUNDS_MIN:
            yield name, numbers
        elif numbers is not None:  # a pair (start and end, say) is two numbers, not two samples of one
            for k, number in enumerate(numbers):
                yield f"{name}[{k}]", number
        elif isinstance(value, dict):
            yield from evidence_numbers(value, f"{name}.", depth + 1)


def claim_series(history: History) -> dict[str, dict[str, list[Series]]]:
    """``claim -> test -> its evidence series`` over the runs of ``history`` (a list of numbers, a
    number per seed say, is one point with those as its rounds)."""
    out: dict[str, dict[str, dict[str, Series]]] = {}
    for i, run in enumerate(history.runs):
        for claim in run.claims or ():
            cid = str(claim.get("id"))
            for test in claim.get("tests") or ():
                if not isinstance(test, dict) or not isinstance(test.get("evidence"), dict):
                    continue
                node = str(test.get("test"))
                evidence = test["evidence"]
                for key, value in evidence_numbers(evidence):
                    series = out.setdefault(cid, {}).setdefault(node, {}).get(key)
                    if series is None:
                        series = Series(f"{cid}|{node}|{key}", key)
                        out[cid][node][key] = series
                    if isinstance(value, list):
                        series.points.append(Point(i, statistics.median(value), value, min(value), max(value)))
                    elif math.isfinite(value):
                        series.points.append(Point(i, value))
                    if key == "gap":
                        if _is_number(evidence.get("bound")):
                            series.bounds[i] = float(evidence["bound"])
                        series.expect = str(evidence.get("expect") or "")
                        series.higher_is_worse = series.expect in ("equal", "exact") or None
    return {c: {t: list(s.values()) for t, s in tests.items()} for c, tests in out.items()}


@dataclass
class BenchSeries:
    """One benchmark on one device and machine, over the runs: its rows, and its series."""

    fullname: str
    device: str
    machine: str
    group: str = ""
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # run -> its benchmarks.json row
    step_cost: Series | None = None
    samples: Series | None = None
    matmul: Series | None = None

    @property
    def key(self) -> str:
        return f"{self.fullname}|{self.device}|{self.machine}"

    @property
    def name(self) -> str:
        return self.fullname.split("::")[-1]

    @property
    def series(self) -> list[Series]:
        return [s for s in (self.step_cost, self.samples, self.matmul) if s is not None and s.points]


def gate_limit(row: dict[str, Any]) -> float:
    """The relative slowdown the gate allows this benchmark: its row's own, else the gate's default."""
    from trainclaims.gating import DEFAULT_GATE

    if _is_number(row.get("gate_min_effect")):
        return float(row["gate_min_effect"])
    return DEFAULT_GATE.min_effect if row.get("step_costs") else DEFAULT_GATE.legacy_min_effect


def benchmark_series(history: History) -> list[BenchSeries]:
    """Every benchmark (test id, device, machine) over the runs of ``history``."""
    found: dict[tuple[str, str, str], BenchSeries] = {}
    for i, run in enumerate(history.runs):
        for row in run.benchmarks or ():
            machine = str(row.get("device_name") if row.get("device") != "cpu" else run.machine) or run.machine
            key = (str(row.get("fullname")), str(row.get("device")), machine)
            bench = found.setdefault(key, BenchSeries(*key, group=str(row.get("group") or "")))
            bench.rows[i] = row
    for bench in found.values():
        limit = gate_limit(bench.rows[max(bench.rows)])
        bench.step_cost = Series(f"{bench.key}|step_cost", "step cost (GEMM units)", gate_limit=limit)
        bench.step_cost.higher_is_worse = True
        bench.samples = Series(f"{bench.key}|samples_per_s", "samples/s", gate_limit=limit)
        bench.samples.higher_is_worse = False
        bench.matmul = Series(f"{bench.key}|matmul_fraction", "share of the matmul rate")
        bench.matmul.higher_is_worse = False
        for i, row in sorted(bench.rows.items()):
            costs = _numbers(row.get("step_costs"))
            if costs:
                q1, q2, q3 = quartiles(costs)
                bench.step_cost.points.append(Point(i, q2, costs, q1, q3))
            elif _is_number(row.get("step_cost")):
                bench.step_cost.points.append(Point(i, float(row["step_cost"])))
            if _is_number(row.get("samples_per_s")):
                sps = float(row["samples_per_s"])
                times = _numbers(row.get("rounds_s"))
                point = Point(i, sps)
                median = row.get("median_s")
                if times and _is_number(median) and all(t > 0 for t in times):
                    # each round's samples/s: samples per step (sps * median time) over its time
                    point.rounds = [sps * median / t for t in times]
                    point.low, _, point.high = quartiles(point.rounds)
                bench.samples.points.append(point)
            if _is_number(row.get("matmul_fraction")):
                bench.matmul.points.append(Point(i, float(row["matmul_fraction"])))
    return sorted(found.values(), key=lambda b: (b.fullname, b.device, b.machine))
