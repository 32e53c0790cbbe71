"""A pull-request comment comparing two runs of a history (``python -m trainclaims.history comment``):
one headline line, the counts (claims changed; benchmarks slower, faster, unchanged,
inconclusive, new), a base/head/change table, each changed claim with its numbers, and one
command that reruns what changed.

A claim *changed* where its verdict, or its verdict in a numerics mode, differs between the runs
(the claims gate's rule, ``trainclaims.gating.gate_claims``). A benchmark is *slower* or *faster*
by the benchmark gate's rule both ways (:func:`trainclaims.history.noise.compare_rows`: its step
costs, Mann-Whitney U at its own limit), *inconclusive* where the rounds can tell neither.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from trainclaims.history.noise import compare_rows
from trainclaims.history.series import ALL, evidence_numbers, first_line
from trainclaims.history.store import History, Run
from trainclaims.render import cell
from trainclaims.verdicts import FAILED_OUTCOMES

EVIDENCE_SHOWN = 6  # numbers shown per test of a changed claim (a gap and its bound count as one)
TESTS_SHOWN = 8
NOT_MEASURED = "not measured"
BENCH_STATUSES = (
    "slower",
    "faster",
    "unchanged",
    "inconclusive",
    "new",
    "gone",
)  # tests shown per changed claim (the rest are counted)


@dataclass
class ClaimChange:
    claim: str
    statement: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (mode, base, head) that differ
    base: dict[str, Any] | None = None
    head: dict[str, Any] | None = None


@dataclass
class BenchChange:
    fullname: str
    device: str
    status: str  # slower / faster / unchanged / inconclusive / new / gone
    base: dict[str, Any] | None
    head: dict[str, Any] | None
    change: float | None = None
    limit: float | None = None

    @property
    def name(self) -> str:
        return f"`{self.fullname.split('::')[-1]}` [{self.device}]"


def _claims(run: Run) -> dict[str, dict[str, Any]]:
    return {str(c.get("id")): c for c in run.claims or ()}


def _rows(claim: dict[str, Any] | None) -> dict[str, str]:
    """The verdicts a claim is compared on: its own (``*``) and one per numerics mode."""
    if claim is None:
        return {}
    out = {ALL: str(claim.get("verdict"))}
    for mode, mv in (claim.get("modes") or {}).items():
        if isinstance(mv, dict):
            out[str(mode)] = str(mv.get("verdict"))
    return out


def claim_changes(base: Run, head: Run) -> tuple[list[ClaimChange], dict[str, int]]:
    """The claims whose verdict (or a mode's) differs, and the counts of the others: unchanged,
    not measured in one of the runs (a subset, a missing GPU: not a change, as for the claims
    gate), new, gone."""
    old, new = _claims(base), _claims(head)
    changes: list[ClaimChange] = []
    counts = {"unchanged": 0, "unmeasured": 0, "new": len(set(new) - set(old)), "gone": len(set(old) - set(new))}
    for cid in [c for c in old if c in new]:
        a, b = _rows(old[cid]), _rows(new[cid])
        # a mode only one run measured (another --numerics), or a claim one run did not measure, is no change
        compared = [m for m in a if m in b and NOT_MEASURED not in (a[m], b[m])]
        rows = [(m, a[m], b[m]) for m in compared if a[m] != b[m]]
        if len(b) == 2 and len(rows) == 2 and rows[0][1:] == rows[1][1:]:
            rows = [r for r in rows if r[0] == ALL]  # one mode, the same change: said once
        if rows:
            changes.append(ClaimChange(cid, str(new[cid].get("statement") or ""), rows, old[cid], new[cid]))
        else:
            counts["unchanged" if ALL in compared else "unmeasured"] += 1
    return changes, counts


def bench_changes(base: Run, head: Run) -> list[BenchChange]:
    """Every benchmark of either run, compared (same test id and device)."""
    old = {(str(r.get("fullname")), str(r.get("device"))): r for r in base.benchmarks or ()}
    new = {(str(r.get("fullname")), str(r.get("device"))): r for r in head.benchmarks or ()}
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            out.append(BenchChange(*key, "new" if a is None else "gone", a, b))
            continue
        status, change, gate = compare_rows(a, b)
        out.append(BenchChange(*key, status, a, b, change, gate.min_effect))
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:4]) + (", ...]" if len(value) > 4 else "]")
    return str(value)


def _tests(claim: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(t.get("test")): t for t in (claim or {}).get("tests") or () if isinstance(t, dict)}


def _test_numbers(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """A test's numbers in head, with base's where they differ: the gap against its bound first."""
    now = dict(evidence_numbers(after.get("evidence") or {}))
    then = dict(evidence_numbers((before or {}).get("evidence") or {}))
    parts = []
    evidence = after.get("evidence") or {}
    if "gap" in now:
        relation = {"equal": "<=", "exact": "==", "differs": ">"}.get(str(evidence.get("expect")), "vs")
        text = f"gap {_fmt(now.pop('gap'))} (needs {relation} {_fmt(evidence.get('bound'))})"
        old_gap = then.pop("gap", None)
        if old_gap is not None:
            text += f", base {_fmt(old_gap)}"
        parts.append(text)
    moved = [k for k in now if then.get(k) != now[k]]
    for key in (moved or list(now))[: EVIDENCE_SHOWN - len(parts)]:
        text = f"{key} {_fmt(now[key])}"
        if key in then and then[key] != now[key]:
            text += f" (base {_fmt(then[key])})"
        parts.append(text)
    return "; ".join(parts)


def _run_cell(run: Run) -> str:
    text = f"`{run.commit[:10]}` torch {run.torch_release}, {run.machine}"
    return text + (f" ({run.label})" if run.label else "")


def reproduce_command(head: Run, claims: list[ClaimChange], benches: list[BenchChange]) -> str | None:
    """One pytest command that reruns the tests of the changed claims and the changed benchmarks,
    as node ids (a whole test function where every instance of it in the run is wanted)."""
    wanted: list[str] = []
    every: list[str] = []
    for claim in head.claims or ():
        every += [str(t.get("test")) for t in claim.get("tests") or () if isinstance(t, dict)]
    every += [str(r.get("fullname")) for r in head.benchmarks or ()]
    every += [str(r.get("test")) for r in head.not_measured]
    for change in claims:
        wanted += [str(t.get("test")) for t in (change.head or {}).get("tests") or () if isinstance(t, dict)]
    bench_ids = [b.fullname for b in benches if b.status in ("slower", "faster", "inconclusive")]
    wanted += bench_ids
    wanted = list(dict.fromkeys(w for w in wanted if w and w != "None"))
    if not wanted:
        return None
    chosen: list[str] = []
    for node in wanted:
        function = node.split("[")[0]
        siblings = [t for t in every if t.split("[")[0] == function]
        if all(s in wanted for s in siblings):
            if function not in chosen:
                chosen.append(function)
        else:
            chosen.append(node)
    args = ["pytest", "-p", "no:cacheprovider"]
    if bench_ids:
        args += ["-p", "no:xdist"]  # benchmarks skip under xdist
    modes = [m for m in head.modes if m != "ieee"]
    if modes:
        args += ["--numerics", ",".join(head.modes)]
    return " ".join(shlex.quote(a) for a in [*args, *chosen])


def pr_comment(history: History, base: int, head: int) -> str:
    """The markdown comment comparing run ``base`` with run ``head`` of ``history``."""
    a, b = history.runs[base], history.runs[head]
    claims, tally = claim_changes(a, b) if a.claims is not None and b.claims is not None else ([], {})
    benches = bench_changes(a, b) if a.benchmarks is not None and b.benchmarks is not None else []
    count = {s: sum(x.status == s for x in benches) for s in BENCH_STATUSES}
    bad = bool(claims) or count["slower"] or count["inconclusive"]
    its = "its" if len(claims) == 1 else "their"
    news = [f"{_n(len(claims), 'claim')} changed {its} verdict" if claims else "no claim changed its verdict"]
    news.append(f"{_n(count['slower'], 'benchmark')} slower" if count["slower"] else "no benchmark slower")
    if count["inconclusive"]:
        news.append(f"{count['inconclusive']} inconclusive")
    mark = "❌" if bad else "✅"
    lines = [
        f"### {mark} trainclaims: {', '.join(news)} (head {_run_cell(b)} against base {_run_cell(a)})",
        "",
    ]
    counts = []
    if a.claims is None or b.claims is None:
        counts.append(f"**Claims**: not measured in the {'base' if a.claims is None else 'head'} run")
    else:
        counts.append(
            f"**Claims**: {len(claims)} changed, {tally['unchanged']} unchanged, {tally['unmeasured']} not measured "
            f"in one of the runs, {tally['new']} new, {tally['gone']} gone"
        )
    if a.benchmarks is None or b.benchmarks is None:
        counts.append(f"**Benchmarks**: not measured in the {'base' if a.benchmarks is None else 'head'} run")
    else:
        counts.append(
            f"**Benchmarks**: {count['slower']} slower, {count['faster']} faster, {count['unchanged']} unchanged, "
            f"{count['inconclusive']} inconclusive, {count['new']} new, {count['gone']} gone"
        )
    lines.append(" · ".join(counts))
    if not claims and not tally.get("unchanged") and not any(x.status not in ("new", "gone") for x in benches):
        lines += [
            "",
            "⚠ the base run measured none of the head's claims or benchmarks: give --base RUN (`runs` lists them).",
        ]
    if a.machine != b.machine:
        lines += [
            "",
            f"⚠ base and head ran on different machines ({a.machine}; {b.machine}): samples/s do not compare.",
        ]
    lines += ["", "| | base | head | change |", "|---|---|---|---|"]
    lines.append(f"| run | {cell(_run_cell(a))}, {a.date[:19]} | {cell(_run_cell(b))}, {b.date[:19]} | |")
    for change in claims:
        for mode, old, now in change.rows:
            where = change.claim if mode == ALL else f"{change.claim} [{mode}]"
            lines.append(f"| claim {where} | {old} | **{now}** | verdict changed |")
    for bench in benches:
        if bench.status in ("new", "gone"):
            row = bench.head or bench.base or {}
            cost = _fmt(_cost(row))
            lines.append(
                f"| benchmark {bench.name} | {cost if bench.status == 'gone' else '-'} | "
                f"{cost if bench.status == 'new' else '-'} | {bench.status} |"
            )
            continue
        change = f"{bench.change:+.0%}" if bench.change is not None else "?"
        if bench.status in ("slower", "inconclusive"):
            change = f"**{change} {bench.status}**"
        else:
            change = f"{change} {bench.status}"
        limit = f" (limit ±{bench.limit:.0%})" if bench.limit is not None else ""
        lines.append(
            f"| benchmark {bench.name} step cost | {_fmt(_cost(bench.base))} | {_fmt(_cost(bench.head))} | "
            f"{change}{limit} |"
        )
    if claims:
        lines += ["", "#### Claims that changed", ""]
    for change in claims:
        verdicts = "; ".join(
            f"{'' if mode == ALL else f'[{mode}] '}{old} → **{now}**" for mode, old, now in change.rows
        )
        why = str((change.head or {}).get("why") or "")
        lines.append(f"- **{change.claim}** ({cell(change.statement)}): {verdicts}" + (f": {cell(why)}" if why else ""))
        before = _tests(change.base)
        shown = 0
        tests = list(_tests(change.head).values())
        tests.sort(
            key=lambda t: (
                t.get("outcome") not in FAILED_OUTCOMES,
                "gap" not in (t.get("evidence") or {}),
            )
        )
        for test in tests:
            numbers = _test_numbers(before.get(str(test.get("test"))), test)
            failed = test.get("outcome") in FAILED_OUTCOMES
            if not numbers and not failed:
                continue
            if shown == TESTS_SHOWN:
                lines.append(f"  - and {len(tests) - shown} more tests")
                break
            old_outcome = (before.get(str(test.get("test"))) or {}).get("outcome", "-")
            text = f"  - `{test.get('test')}`: {old_outcome} → {test.get('outcome')}"
            if numbers:
                text += f"; {numbers}"
            if failed and test.get("reason"):
                text += f"; {first_line(str(test['reason']))[:200]}"
            lines.append(text.replace("\n", " "))  # a list item, not a table cell: its | stay as they are
            shown += 1
    slow = [x for x in benches if x.status in ("slower", "faster", "inconclusive")]
    if slow:
        lines += ["", "#### Benchmarks that moved or could not be told apart", ""]
        for bench in slow:
            lines.append(f"- {bench.name}: {_bench_numbers(bench)}")
    command = reproduce_command(b, claims, benches)
    if command:
        lines += ["", "#### Reproduce", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def _cost(row: dict[str, Any] | None) -> float | None:
    if not row:
        return None
    import statistics

    costs = row.get("step_costs")
    if costs:
        return statistics.median(costs)
    return row.get("step_cost") if row.get("step_cost") is not None else row.get("samples_per_s")


def _bench_numbers(bench: BenchChange) -> str:
    from trainclaims.stats import spread

    a, b = bench.base or {}, bench.head or {}
    parts = []
    if a.get("step_costs") and b.get("step_costs"):
        parts.append(
            f"step cost {_fmt(_cost(b))} GEMM units against {_fmt(_cost(a))} ({bench.change:+.0%}, limit "
            f"±{bench.limit:.0%}; spread {spread(b['step_costs']):.0%} now, {spread(a['step_costs']):.0%} in the base; "
            f"{len(b['step_costs'])}/{len(a['step_costs'])} rounds)"
        )
    if a.get("samples_per_s") and b.get("samples_per_s"):
        parts.append(
            f"{_fmt(b['samples_per_s'])} samples/s against {_fmt(a['samples_per_s'])} "
            f"({b['samples_per_s'] / a['samples_per_s'] - 1:+.0%})"
        )
    return "; ".join(parts) or bench.status
