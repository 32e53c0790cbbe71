"""What a history holds, as series over its runs: each claim's verdict per numerics mode and
device, each claim test's measured numbers (its evidence), and each benchmark's step cost,
samples/s and share of the matmul rate, with each point's spread. The site and the pull-request
comment read the history through these; the steps in each series are found by
:mod:`trainclaims.history.steps`.

Everything here reads the typed results of each run (``trainclaims.results.ClaimResult``,
``trainclaims.benchgate.BenchRow``), as the gates do. A claim test run once per seed (node ids
that differ only in a run of consecutive integers, ``test_x[0]`` .. ``test_x[4]``) is one series,
each run's point the median over its seeds with their range (:func:`fold`).
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainclaims.benchgate import BenchRow, quartile_cost
from trainclaims.history.steps import Fit, detect_steps
from trainclaims.history.store import History, Run
from trainclaims.results import TestResult
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
        cid = claim.id
        out[(cid, ALL, ALL)] = (claim.verdict.value, claim.why)
        for mode, mv in claim.modes.items():
            out[(cid, mode, ALL)] = (mv.verdict.value, mv.why)
        devices = sorted({t.device for t in claim.tests if t.device})
        for mode in [ALL, *claim.modes]:
            base = out.get((cid, mode, ALL), (claim.verdict.value, claim.why))
            for device in devices:
                mine = [t for t in claim.tests if t.device == device and (mode == ALL or t.numerics == mode)]
                out[(cid, mode, device)] = _device_verdict(mine, base)
    return out


def _device_verdict(tests: list[TestResult], base: tuple[str, str]) -> tuple[str, str]:
    ran = [t for t in tests if t.outcome not in UNMEASURED]
    if not ran:
        why = next((t.reason for t in tests if t.reason), "no test ran here")
        return "not measured", why
    failed = [t for t in ran if t.outcome in FAILED_OUTCOMES]
    if failed:
        return "fails", first_line(failed[0].reason or failed[0].outcome)
    concluded = [t.verdict.value for t in ran if t.verdict and t.verdict.value in WORST_FIRST]
    if concluded:
        worst = min(concluded, key=WORST_FIRST.index)
        return worst, next(t.why for t in ran if t.verdict and t.verdict.value == worst)
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


def fold(nodes: Sequence[str]) -> dict[str, str]:
    """Each node id -> the name of its group: node ids that differ only in one part of their
    parameters, where that part runs over consecutive integers from 0 or 1 (a seed), share a group
    named with ``*`` there (``test_x[cpu-*]``); any other node id is its own group."""
    parsed: dict[str, tuple[str, list[str]]] = {}
    for node in nodes:
        m = re.fullmatch(r"(.*?)\[(.*)\]", node)
        if m:
            parsed[node] = (m.group(1), m.group(2).split("-"))
    out = {node: node for node in nodes}
    candidates: dict[tuple[str, int, tuple[str, ...]], list[tuple[str, int]]] = {}
    for node, (function, parts) in parsed.items():
        for k, part in enumerate(parts):
            if part.isdigit():
                rest = (*parts[:k], "*", *parts[k + 1 :])
                candidates.setdefault((function, k, rest), []).append((node, int(part)))
    for (function, _, rest), members in candidates.items():
        numbers = sorted(n for _, n in members)
        if len(members) < 2 or numbers != list(range(numbers[0], numbers[0] + len(numbers))) or numbers[0] > 1:
            continue
        if any(out[node] != node for node, _ in members):
            continue  # folded along another part already
        for node, _ in members:
            out[node] = f"{function}[{'-'.join(rest)}]"
    return out


def claim_series(history: History) -> dict[str, dict[str, list[Series]]]:
    """``claim -> test (or group of seeds) -> its evidence series`` over the runs of ``history``: a
    list of numbers (a number per seed, say) is one point with those as its rounds, and so are a
    group's numbers (:func:`fold`): its point the median, its spread their range."""
    groups = fold([t.test for run in history.runs for c in run.claims or () for t in c.tests])
    collected: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    meta: dict[tuple[str, str, str], Series] = {}
    for i, run in enumerate(history.runs):
        for claim in run.claims or ():
            for test in claim.tests:
                evidence = test.evidence
                if not isinstance(evidence, dict) or not evidence:
                    continue
                group = groups.get(test.test, test.test)
                for key, value in evidence_numbers(evidence):
                    where = (claim.id, group, key)
                    series = meta.get(where)
                    if series is None:
                        series = meta[where] = Series(f"{claim.id}|{group}|{key}", key)
                    numbers = value if isinstance(value, list) else [value]
                    collected.setdefault(where, {}).setdefault(i, []).extend(v for v in numbers if math.isfinite(v))
                    if key == "gap":
                        if _is_number(evidence.get("bound")):
                            series.bounds[i] = float(evidence["bound"])
                        series.expect = str(evidence.get("expect") or "")
                        series.higher_is_worse = series.expect in ("equal", "exact") or None
    out: dict[str, dict[str, list[Series]]] = {}
    for where, series in meta.items():
        for i, values in sorted(collected.get(where, {}).items()):
            if not values:
                continue
            if len(values) == 1:
                series.points.append(Point(i, values[0]))
            else:
                series.points.append(Point(i, statistics.median(values), values, min(values), max(values)))
        out.setdefault(where[0], {}).setdefault(where[1], []).append(series)
    return out


@dataclass
class BenchSeries:
    """One benchmark on one device and machine, over the runs: its rows, and its series."""

    fullname: str
    device: str
    machine: str
    group: str = ""
    rows: dict[int, BenchRow] = field(default_factory=dict)  # run -> its row
    step_cost: Series | None = None
    samples: Series | None = None
    matmul: Series | None = None

    @property
    def key(self) -> str:
        return bench_key(self.fullname, self.device, self.machine)

    @property
    def name(self) -> str:
        return self.fullname.split("::")[-1]

    @property
    def series(self) -> list[Series]:
        return [s for s in (self.step_cost, self.samples, self.matmul) if s is not None and s.points]

    @property
    def newest(self) -> BenchRow:
        return self.rows[max(self.rows)]


def slug(text: str) -> str:
    """A file name for ``text``: readable, and unique by a short hash of the whole."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text.split("::")[-1]).strip("-")[:60]
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def claim_file(claim: str) -> str:
    """A claim's page in the site, relative to the site's root."""
    return "claims/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", claim) + ".html"


def bench_key(fullname: str, device: str, machine: str) -> str:
    """A benchmark's name in a history: its test id, device and machine."""
    return f"{fullname}|{device}|{machine}"


def bench_file(key: str) -> str:
    """A benchmark's page in the site (by its :func:`bench_key`), relative to the site's root."""
    return f"benchmarks/{slug(key)}.html"


def bench_machine(run: Run, row: BenchRow) -> str:
    """Where a benchmark ran: the accelerator's name, else the run's CPU."""
    return str(row.device_name if row.device != "cpu" else run.machine) or run.machine


def benchmark_series(history: History) -> list[BenchSeries]:
    """Every benchmark (test id, device, machine) over the runs of ``history``."""
    found: dict[tuple[str, str, str], BenchSeries] = {}
    for i, run in enumerate(history.runs):
        for row in run.benchmarks or ():
            key = (row.fullname, row.device, bench_machine(run, row))
            bench = found.setdefault(key, BenchSeries(*key, group=row.group))
            bench.rows[i] = row
    for bench in found.values():
        limit = bench.newest.limit()
        bench.step_cost = Series(f"{bench.key}|step_cost", "step cost (GEMM units)", gate_limit=limit)
        bench.step_cost.higher_is_worse = True
        bench.samples = Series(f"{bench.key}|samples_per_s", "samples/s", gate_limit=limit)
        bench.samples.higher_is_worse = False
        bench.matmul = Series(f"{bench.key}|matmul_fraction", "share of the matmul rate")
        bench.matmul.higher_is_worse = False
        for i, row in sorted(bench.rows.items()):
            costs = row.step_costs
            if costs:
                # the gated number (the lower quartile), with bars from the fastest round to the median
                _, median, _ = quartiles(costs)
                bench.step_cost.points.append(Point(i, quartile_cost(costs), costs, min(costs), median))
            elif row.step_cost is not None:
                bench.step_cost.points.append(Point(i, row.step_cost))
            if row.samples_per_s is not None:
                sps = row.samples_per_s
                times = row.rounds_s
                point = Point(i, sps)
                if times and row.median_s is not None and all(t > 0 for t in times):
                    # each round's samples/s: samples per step (sps * median time) over its time
                    point.rounds = [sps * row.median_s / t for t in times]
                    point.low, _, point.high = quartiles(point.rounds)
                bench.samples.points.append(point)
            if row.matmul_fraction is not None:
                bench.matmul.points.append(Point(i, row.matmul_fraction))
    return sorted(found.values(), key=lambda b: (b.fullname, b.device, b.machine))
