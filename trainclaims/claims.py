"""Claims, claim families, and the evidence a test records for its claim.

A claim family (a source document's claims: S000, S001, ... ) is a :class:`Family`: an id prefix,
a title, its claims (ids and one-line statements, in the project's words), the report parts that
draw what a run measured for them, the sections it adds to ``trainclaims-compare``, the rank
experiments a launched job runs for it, and the pytest plugin its tests need, if any. An installed
family registers through the ``trainclaims.families`` entry-point group (:mod:`trainclaims.registry`);
a project's own family answers the ``pytest_trainclaims_families`` hook in a conftest. The run's
:class:`Catalogue` is every family so found. This module names no family.

A test encodes a claim with ``@pytest.mark.claim("S001-02")``; an id that is in no registered
family, or a ``claim`` mark without one, is a collection error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainclaims.modes import ModeLike, get
from trainclaims.results import ClaimResult, TestResult
from trainclaims.verdicts import Judgement, Verdict, judge_gap

_ID = re.compile(r"^[A-Z][A-Z0-9]*-\d+$")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str

    @property
    def family(self) -> str:
        return self.id.split("-")[0]


@dataclass(frozen=True)
class ReportContext:
    """What a family's report part gets at the end of a run to draw from: where to write, the
    claim verdicts with every test's evidence (as in claims.json), and what the family plugins of
    the run give their report parts (``extra``, by names of their own: the seed engine's
    ``training_runs``, {(TrainConfig, data set, device): TrainResult})."""

    report_dir: Path
    claims: list[ClaimResult]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def tests_of(self, claim_id: str) -> list[TestResult]:
        """Every test result of ``claim_id`` in this run (outcome, verdict, evidence)."""
        return [t for c in self.claims if c.id == claim_id for t in c.tests]

    def measured(self, claim_id: str, key: str) -> list[dict[str, Any]]:
        """The evidence of every passed test of ``claim_id`` that recorded ``key``."""
        return [t.evidence for t in self.tests_of(claim_id) if t.outcome == "passed" and key in t.evidence]


ReportPart = Callable[[ReportContext], list[Path]]  # writes files (atomically), returns their paths
# a section of trainclaims-compare's report: the compared runs (trainclaims.compare.Run) -> markdown lines
CompareSection = Callable[[list[Any]], list[str]]
# the rank experiments of a family's data-parallel tests in some numerics modes, on a device type:
# (modes, device) -> [trainclaims.ranks.Experiment] (what trainclaims.launch runs on a job's ranks)
RankPlan = Callable[[tuple[Any, ...], str], list[Any]]


@dataclass(frozen=True)
class Family:
    """A source document's claims: ``catalogue`` is one ``ID | statement`` line per claim; its
    report parts draw what a run measured, its compare sections what several runs did; ``plugin``
    names a pytest plugin module its tests need (fixtures, an axis, state per process; registered
    when the family joins a run's catalogue: the seed families' ``trainclaims.families.seed.plugin``);
    ``rank_plan`` gives the rank experiments its data-parallel tests make (what a launched job runs);
    ``capabilities`` are the ops some torch versions lack that its tests meet
    (:class:`trainclaims.known.Capability`: a test that meets one where the table says this torch
    lacks it skips); ``mutants`` are the alterations of PyTorch its claims' tests must notice
    (:class:`trainclaims.mutants.Mutant`: a claim no mutant names is *unguarded*); ``known`` are
    its behaviours per torch version (:class:`trainclaims.known.Known`, measured per release line by
    ``trainclaims-releases``)."""

    id: str
    title: str
    catalogue: str
    report_parts: tuple[ReportPart, ...] = ()
    compare_sections: tuple[CompareSection, ...] = ()
    plugin: str | None = None
    rank_plan: RankPlan | None = None
    capabilities: tuple[Any, ...] = ()
    mutants: tuple[Any, ...] = ()
    known: tuple[Any, ...] = ()
    claims: dict[str, Claim] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        claims: dict[str, Claim] = {}
        for line in self.catalogue.strip().splitlines():
            cid, sep, text = (part.strip() for part in line.partition("|"))
            if sep and text and _ID.match(cid.upper()) and cid != cid.upper():
                raise ValueError(f"family {self.id}: claim id {cid!r} must be upper case ({cid.upper()!r})")
            if not sep or not _ID.match(cid) or not text:
                raise ValueError(f"family {self.id}: catalogue line {line!r} is not 'ID | statement'")
            if not cid.startswith(f"{self.id}-"):
                raise ValueError(f"family {self.id}: claim {cid} does not start with {self.id}-")
            if cid in claims:
                raise ValueError(f"family {self.id}: claim {cid} is in the catalogue twice")
            claims[cid] = Claim(cid, text)
        object.__setattr__(self, "claims", claims)
        for mutant in self.mutants:
            unknown = [c for c in mutant.claims if c not in claims]
            if unknown:
                raise ValueError(f"family {self.id}: mutant {mutant.name} names claims not in it: {', '.join(unknown)}")

    def to_json(self) -> dict[str, str]:
        """Its id, title and catalogue (not its report parts): how an xdist worker tells the
        controller of a family declared in a conftest the controller did not load."""
        return {"id": self.id, "title": self.title, "catalogue": self.catalogue}


@dataclass(frozen=True)
class Catalogue:
    """The claims of every registered family, in family order."""

    families: dict[str, Family]

    @classmethod
    def of(cls, families: Iterable[Family]) -> Catalogue:
        by_id: dict[str, Family] = {}
        for family in sorted(families, key=lambda f: f.id):
            if family.id in by_id and by_id[family.id] is not family:
                raise ValueError(f"two claim families register the id {family.id}")
            by_id[family.id] = family
        return cls(by_id)

    def with_(self, families: Iterable[Family]) -> Catalogue:
        """This catalogue and ``families`` (a family already here by its id is kept as it is)."""
        return Catalogue.of([*self.families.values(), *(f for f in families if f.id not in self.families)])

    def only(self, ids: Iterable[str]) -> Catalogue:
        """The families among ``ids``, in family order."""
        wanted = set(ids)
        return Catalogue({fid: f for fid, f in self.families.items() if fid in wanted})

    @property
    def claims(self) -> dict[str, Claim]:
        return {cid: claim for f in self.families.values() for cid, claim in f.claims.items()}

    def check_claim_id(self, args: tuple[Any, ...]) -> str | None:
        """An error message for a ``claim`` mark's arguments, or None if they name a known claim."""
        if len(args) != 1 or not isinstance(args[0], str):
            return f"claim mark needs exactly one claim id, got {args!r}"
        if args[0] not in self.claims:
            known = ", ".join(f"{f}-NN" for f in self.families) or "none: no claim family is registered"
            return f"unknown claim id {args[0]!r} (known: {known}; see `pytest --claims`)"
        return None


@dataclass
class Evidence:
    """What one test measured for its claim(s): numbers, and optionally a verdict with a reason.

    A test without an explicit verdict counts as "holds" when it passes, "fails" when it fails.
    """

    nodeid: str
    claims: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None
    why: str = ""

    def record(self, **values: Any) -> None:
        self.values.update(values)

    def conclude(self, verdict: Verdict, why: str) -> None:
        """State a verdict other than the default; ``why`` names the data, device, reading."""
        self.verdict, self.why = Verdict(verdict), why

    def judge_in_mode(
        self,
        numerics: ModeLike,
        gap: float,
        tol: float,
        what: str,
        detail: str = "",
        dtype: str = "float32",
        unequal: str = "",
    ) -> None:
        """A property that holds to ``tol`` in the reference numerics mode (ieee), measured in
        ``numerics`` as ``gap``, for a claim computed in ``dtype`` (the rules of
        :func:`trainclaims.verdicts.judge_gap`): within ``tol`` it holds; in another mode within
        the mode's rounding bound it is conditional, with the gap; beyond that (in ieee: beyond
        ``tol``) the test fails, naming the bound; ``unequal`` says why the runs took other steps in
        the mode (a GradScaler's skips: :func:`trainclaims.step.unequal_skips`), where they did. A
        test that judges several gaps is conditional where any of them is."""
        numerics = get(numerics)  # a test's own call may name it
        judged = judge_gap(gap, tol, numerics, what, dtype, detail, unequal)
        if judged.verdict is Verdict.FAILS:
            raise AssertionError(judged.why)
        if not numerics.reference:  # in the reference a test that passes holds
            self.conclude_in_mode(judged)

    def conclude_in_mode(self, judged: Judgement) -> None:
        """Conclude a judgement of a gap made in a numerics mode: an earlier conditional judgement
        of this test stands (a test is conditional where any of its gaps is)."""
        if judged.verdict is Verdict.HOLDS and self.verdict == Verdict.CONDITIONAL:
            self.why += f"; {judged.why}"
        else:
            self.conclude(judged.verdict, judged.why)
