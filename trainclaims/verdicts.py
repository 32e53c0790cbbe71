"""The verdict rules, in one place: what a run says of a claim (:class:`Verdict`), how a measured
gap is judged in a numerics mode (:func:`judge_gap`), and how a claim's tests add up to one verdict
(:func:`roll_up`). The checks (``Checked.judge``), a test's evidence (``Evidence.judge_in_mode``),
the report writer and the gates all use these.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainclaims.modes import Mode


class Verdict(str, enum.Enum):
    """What a run says of a claim."""

    HOLDS = "holds"
    REFUTED = "refuted"  # the test encodes the truth, which contradicts the claim
    CONDITIONAL = "conditional"  # holds on some data/devices/readings/modes only; the note says which
    FAILS = "fails"  # a test of the claim failed: the measured behaviour left its band
    NOT_MEASURED = "not measured"  # every test of it was skipped here; the note says why
    ERROR = "error"  # a test misused a check (a usage error, not a verdict on the claim); the note says the fix


def verdict_of(value: Any, where: str) -> Verdict:
    """``value`` as a :class:`Verdict`; ValueError naming ``where`` and the accepted values."""
    try:
        return Verdict(value)
    except ValueError:
        accepted = ", ".join(repr(v.value) for v in Verdict)
        raise ValueError(f"{where}: verdict {value!r} is not one of {accepted}") from None


@dataclass(frozen=True)
class Judgement:
    """A gap judged in a mode: HOLDS or CONDITIONAL with why, or FAILS with the message the test
    fails with (the gap, the bound, and where the bound was measured)."""

    verdict: Verdict
    why: str


def judge_gap(
    gap: float,
    tol: float,
    mode: Mode,
    what: str,
    dtype: str = "float32",
    detail: str = "",
    unequal: str = "",
) -> Judgement:
    """An equality that holds to ``tol`` in exact-enough arithmetic, measured as ``gap`` in ``mode``
    for a claim computed in ``dtype``:

    - within ``tol`` (the dtype's tolerance) it holds;
    - in a mode other than the reference, within the mode's bound for ``dtype``
      (:meth:`Mode.bound`: how far that mode's rounding was measured to move such a gap) it is
      conditional: it holds only to the mode's rounding, with the gap;
    - beyond that it fails: naming the bound and where it was measured (in the reference: the tolerance);
    - except where the two runs took different steps for a reason the mode gives (``unequal``: a
      GradScaler that skipped more steps of one run, on float16 overflow): there no rounding bound
      applies, and the claim is conditional with that reason and the gap.

    A NaN gap never holds."""
    extra = f" ({detail})" if detail else ""
    if gap <= tol:
        where = "" if mode.reference else f"{mode.name}: "
        return Judgement(Verdict.HOLDS, f"{where}{what} within {tol:g}: {gap:.2g}{extra}")
    bound = mode.bound(dtype)
    if unequal and not mode.reference:
        return Judgement(
            Verdict.CONDITIONAL,
            f"{mode.name}: {what} not to rounding: {gap:.2g}, the runs took other steps: {unequal}{extra}",
        )
    if mode.reference or bound is None:
        return Judgement(Verdict.FAILS, f"{what}: {gap:.2e} in {mode.name}, bound {tol:g}{extra}")
    if gap <= bound.value:
        return Judgement(
            Verdict.CONDITIONAL,
            f"{mode.name}: {what} only to the mode's rounding: {gap:.2g} (ieee: < {tol:g}; the mode's bound "
            f"{bound.value:g}){extra}",
        )
    return Judgement(
        Verdict.FAILS,
        f"{mode.name}: {what}: {gap:.2e}, beyond the mode's rounding bound {bound.value:g} for {dtype} "
        f"({bound.measured}){extra}",
    )


# A test's outcome, as pytest reports it, and the outcomes of tests that gave no report.
NOT_RUN = "not run"
NOT_RUN_WHY = "not run: the session stopped before it (-x, an interrupt or a crashed worker)"
FAILED_OUTCOMES = ("failed", "error", "xpassed")
UNMEASURED_OUTCOMES = ("crashed", NOT_RUN)


def roll_up(recs: Sequence[Any]) -> tuple[Verdict, str]:
    """One verdict from a claim's tests (:class:`trainclaims.results.TestResult`): any failure ->
    fails (with the failures' messages); else a test that misused a check -> error (a usage error:
    no verdict on the claim, with the fix); else a test whose worker crashed or that never ran ->
    not measured; else any refuted -> refuted; any conditional -> conditional; any passed -> holds;
    nothing ran -> not measured (with why)."""
    if not recs:
        return Verdict.NOT_MEASURED, "no test of it was collected in this run"
    misused = [r for r in recs if r.outcome in FAILED_OUTCOMES and r.verdict == Verdict.ERROR]
    failed = [r for r in recs if r.outcome in FAILED_OUTCOMES and r.verdict != Verdict.ERROR]
    if failed:
        return Verdict.FAILS, "; ".join(f"{r.test}: {r.outcome}: {r.reason}" for r in failed[:3])
    if misused:
        return Verdict.ERROR, "; ".join(f"{r.test}: a usage error: {r.reason}" for r in misused[:3])
    crashed = [r for r in recs if r.outcome in UNMEASURED_OUTCOMES]
    if crashed:  # part of the claim was not measured: no verdict from the rest
        return Verdict.NOT_MEASURED, "; ".join(f"{r.test}: {r.reason}" for r in crashed[:3])
    for v in (Verdict.REFUTED, Verdict.CONDITIONAL):
        hits = [r for r in recs if r.verdict == v and r.outcome == "passed"]
        hits += [r for r in recs if v is Verdict.REFUTED and r.outcome == "xfailed"]
        if hits:
            return v, "; ".join(dict.fromkeys((r.why or r.reason) for r in hits))
    passed = [r for r in recs if r.outcome == "passed"]
    if any(r.verdict != Verdict.NOT_MEASURED for r in passed):
        return Verdict.HOLDS, ""
    reasons = dict.fromkeys([*(r.why for r in passed if r.why), *(r.reason for r in recs if r.reason)])
    return Verdict.NOT_MEASURED, "; ".join(reasons) or "not run in this session"
