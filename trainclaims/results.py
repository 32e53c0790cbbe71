"""The typed results of a run: what one test gave (:class:`TestResult`), what a claim's tests add
up to (:class:`ClaimResult`, with a verdict per numerics mode) and the claims file that carries
them (:class:`ClaimsReport`, ``claims.json``). This module alone spells their JSON keys: the
report writer, the gate and the compare report all go through these classes.

``claims.json`` is versioned (``"schema"``): version 3 is this form (each test's data ``tier``);
version 2 has no tier, and a file without the key is version 1 (trainclaims 0.2): both are read
the same way, their tests' tier None. A verdict that is not one of :class:`Verdict`'s, or a claim
without an id, is an error naming the file; a newer schema than this trainclaims reads, too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainclaims.modes import REFERENCE, mode_order
from trainclaims.verdicts import (  # noqa: F401  defined with the verdict rules; read and written here
    FAILED_OUTCOMES,
    NOT_RUN,
    NOT_RUN_WHY,
    UNMEASURED_OUTCOMES,
    Verdict,
    verdict_of,
)

SCHEMA = 3  # the claims.json version this module writes
READS = (1, 2, 3)  # the versions it reads


@dataclass
class TestResult:
    """One claim test: its outcome (passed / failed / error / skipped / xfailed / xpassed /
    deselected / crashed / not run), why (the skip or xfail reason, the failing assertion's
    message), where it ran, and what it measured (its ``evidence``)."""

    __test__ = False  # not a pytest test class

    test: str  # the node id
    claims: tuple[str, ...] = ()
    outcome: str = NOT_RUN
    reason: str = ""
    device: str | None = None  # where it ran (cuda:1 where `cuda` was placed there)
    numerics: str = REFERENCE.name  # its numerics mode; ieee off the axis
    tier: str | None = None  # its data tier (synthetic, fashion-mnist, cifar10), where it has one
    evidence: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None  # a verdict the test concluded (else: holds if it passed)
    why: str = ""
    mode_proof: str = ""  # how its numerics mode showed that it acted (trainclaims.numerics.Acted)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        out = {
            "test": self.test,
            "claims": list(self.claims),
            "outcome": self.outcome,
            "reason": self.reason,
            "device": self.device,
            "numerics": self.numerics,
            "tier": self.tier,
            "verdict": self.verdict.value if self.verdict else None,
            "why": self.why,
            "evidence": self.evidence,
            "mode_proof": self.mode_proof,
        }
        return json.loads(json.dumps(out, default=str))  # plain data: xdist and claims.json carry it

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "test") -> TestResult:
        return cls(
            test=data["test"],
            claims=tuple(data.get("claims") or ()),
            outcome=data.get("outcome", NOT_RUN),
            reason=data.get("reason", ""),
            device=data.get("device"),
            numerics=data.get("numerics") or REFERENCE.name,
            tier=data.get("tier"),
            evidence=data.get("evidence") or {},
            verdict=verdict_of(data["verdict"], where) if data.get("verdict") else None,
            why=data.get("why", ""),
            mode_proof=data.get("mode_proof", ""),
        )


def tally(tests: list[TestResult]) -> str:
    """Tests as passed/failed/skipped (failed counts errors and xpasses)."""
    outcomes = [t.outcome for t in tests]
    return f"{outcomes.count('passed')}/{sum(t.failed for t in tests)}/{outcomes.count('skipped')}"


@dataclass(frozen=True)
class ModeVerdict:
    verdict: Verdict
    why: str = ""


def row_key(claim_id: str, mode: str | None = None) -> str:
    """The name of a claim's row (``S000-08``) or of its row in one numerics mode (``S000-08 [tf32]``)."""
    return claim_id if mode is None else f"{claim_id} [{mode}]"


def row_claim(key: str) -> str:
    """The claim id of a row name (``S000-08 [tf32]`` -> ``S000-08``)."""
    return key.partition(" [")[0]


def row_mode_rank(key: str) -> int:
    """A row's place among its claim's rows: the claim's own first, then the modes in order."""
    mode = key.partition(" [")[2].rstrip("]")
    return -1 if not mode else mode_order(mode)


@dataclass(frozen=True)
class Row:
    """A claim's verdict, or its verdict in one numerics mode: what the gate and the compare
    report compare between runs."""

    key: str
    claim: str
    verdict: Verdict
    why: str
    tests: list[TestResult]

    @property
    def tally(self) -> str:
        return tally(self.tests)


@dataclass
class ClaimResult:
    """A claim's verdict in a run, with why, its verdict per numerics mode, and its tests."""

    id: str
    family: str
    statement: str
    verdict: Verdict
    why: str = ""
    modes: dict[str, ModeVerdict] = field(default_factory=dict)
    tests: list[TestResult] = field(default_factory=list)
    guard: list[str] | None = None  # the mutants that alter what it states (empty: unguarded; None: not told)

    @property
    def in_modes(self) -> bool:
        """Measured in a numerics mode beyond the reference (ieee)."""
        return bool(set(self.modes) - {REFERENCE.name})

    @property
    def row(self) -> Row:
        return Row(self.id, self.id, self.verdict, self.why, self.tests)

    def mode_rows(self, every: bool = False) -> list[Row]:
        """One row per numerics mode, where the claim was measured in modes beyond ieee (with
        ``every``: also its one ieee row where it was not); else none."""
        if not (self.in_modes or every):
            return []
        return [
            Row(row_key(self.id, mode), self.id, mv.verdict, mv.why, [t for t in self.tests if t.numerics == mode])
            for mode, mv in self.modes.items()
        ]

    def gated_rows(self) -> list[Row]:
        """What a baseline holds the claim to: its verdict per mode where it ran several, else its one verdict."""
        return self.mode_rows() or [self.row]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "statement": self.statement,
            "verdict": self.verdict.value,
            "why": self.why,
            "modes": {m: {"verdict": mv.verdict.value, "why": mv.why} for m, mv in self.modes.items()},
            "tests": [t.to_json() for t in self.tests],
            **({"guard": self.guard} if self.guard is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> ClaimResult:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "verdict" not in data:
            raise ValueError(f"{where}: a claim without an id and a verdict ({str(data)[:60]})")
        here = f"{where}: claim {data['id']}"
        modes = data.get("modes") or {}
        return cls(
            id=data["id"],
            family=data.get("family") or row_claim(data["id"]).split("-")[0],
            statement=data.get("statement", ""),
            verdict=verdict_of(data["verdict"], here),
            why=data.get("why", ""),
            modes={
                m: ModeVerdict(verdict_of(mv.get("verdict"), f"{here} [{m}]"), mv.get("why", ""))
                for m, mv in modes.items()
            },
            tests=[TestResult.from_json(t, here) for t in data.get("tests") or []],
            guard=list(data["guard"]) if isinstance(data.get("guard"), list) else None,
        )


@dataclass
class ClaimsReport:
    """``claims.json``: the run's environment and every claim's result."""

    environment: dict[str, Any]
    claims: list[ClaimResult]
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "environment": self.environment, "claims": [c.to_json() for c in self.claims]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str) -> ClaimsReport:
        """ValueError (one line, naming ``where``) for anything that is not a claims.json we read."""
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
            raise ValueError(f"{where} is not a trainclaims claims.json (no 'claims' list of id/verdict)")
        schema = data.get("schema", 1)
        if schema not in READS:
            raise ValueError(f"{where}: claims.json schema {schema!r}; this trainclaims reads {READS}")
        env = data.get("environment") if isinstance(data.get("environment"), dict) else {}
        return cls(env, [ClaimResult.from_json(c, where) for c in data["claims"]], schema)

    @classmethod
    def read(cls, path: str | Path, what: str = "claims file") -> ClaimsReport:
        """The claims.json at ``path``; ValueError (one line) where it is missing, unreadable or
        another kind of file."""
        return cls.from_json(read_json(path, what), f"{what} {path}")


def read_json(path: str | Path, what: str) -> Any:
    """The JSON at ``path``; ValueError (one line, ``what`` and the path) where it is missing,
    unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err})") from None
