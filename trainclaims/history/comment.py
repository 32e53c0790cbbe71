"""A pull-request comment comparing two runs of a history (``trainclaims-history comment``), made to
be read at a glance and never green on a broken head:

- one headline under 80 characters: ❌ where the head has a failing claim, a claim changed its
  verdict or a benchmark is slower or could not be told from slower; ⚠️ where nothing could be
  compared (or the head itself was interrupted); ✅ only where something was compared and nothing
  of that is so;
- the head's failing claims, always, changed or not, then the claims that changed their verdict:
  one line each (the verdicts, failed/ran tests, the range of its numbers, its first failure
  message once), linked to the site's page of the claim where ``--site-url`` is given;
- the benchmarks that moved or could not be told apart, one line each, linked the same way;
- the long parts (every test of those claims, every benchmark) in ``<details>``;
- one command that reruns what failed or changed, on the head's devices.

A claim *changed* by the claims gate's rule (``trainclaims.gating.claim_pairs``, what
``--claims-baseline`` compares); a benchmark is *slower*, *faster*, *unchanged* or *inconclusive*
by the one benchmark judge (``trainclaims.benchgate.compare``, what ``--bench-baseline`` applies).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from trainclaims.benchgate import BenchRow, Comparison, compare
from trainclaims.gating import ClaimPair, claim_pairs
from trainclaims.history.series import UNMEASURED, bench_file, bench_key, bench_machine, claim_file, evidence_numbers
from trainclaims.history.store import History, Run
from trainclaims.results import ClaimResult, TestResult
from trainclaims.verdicts import FAILED_OUTCOMES, Verdict

HEADLINE_MAX = 79  # characters: one line in a pull request's list of comments
TESTS_SHOWN = 20  # tests listed per claim inside <details> (the rest are counted)
MESSAGE_MAX = 160  # characters of a failure message


@dataclass
class ClaimNote:
    """One claim of the comment: the head's result, the base's, and its rows that changed."""

    id: str
    head: ClaimResult | None
    base: ClaimResult | None
    changed: list[ClaimPair] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.head is not None and self.head.verdict == Verdict.FAILS


@dataclass
class BenchNote:
    """One benchmark of the comment: its rows in both runs and how they compare (None: in one only)."""

    row: BenchRow
    key: str  # trainclaims.history.series.bench_key: its page in the site
    status: str  # slower / faster / unchanged / inconclusive / incomparable / new / gone
    comparison: Comparison | None = None

    @property
    def name(self) -> str:
        return f"`{self.row.short}` [{self.row.device}]"


@dataclass
class Changes:
    """What the comment says of ``base`` -> ``head``."""

    claims: list[ClaimNote]  # the failing ones first, then the changed ones
    compared_claims: int  # baseline verdicts compared (the claims gate's count)
    unmeasured_claims: int  # measured in one run, not in the other (not a change)
    benches: list[BenchNote]

    @property
    def failing(self) -> list[ClaimNote]:
        return [c for c in self.claims if c.failing]

    @property
    def changed(self) -> list[ClaimNote]:
        return [c for c in self.claims if c.changed]

    def count(self, status: str) -> int:
        return sum(b.status == status for b in self.benches)

    @property
    def compared(self) -> int:
        """Claims' verdicts and benchmarks actually compared."""
        return self.compared_claims + sum(b.comparison is not None and b.status != "incomparable" for b in self.benches)


def changes(base: Run, head: Run) -> Changes:
    """The claims and benchmarks of ``head`` against ``base`` (the module docstring)."""
    old = {c.id: c for c in base.claims or ()}
    new = {c.id: c for c in head.claims or ()}
    notes: dict[str, ClaimNote] = {}
    compared = unmeasured = 0
    if base.claims is not None and head.claims is not None:
        for pair in claim_pairs(base.claims, head.claims):
            if pair.status == "missing":
                unmeasured += 1
                continue
            compared += 1
            if pair.status == "changed":
                cid = pair.old.claim
                note = notes.setdefault(cid, ClaimNote(cid, new.get(cid), old.get(cid)))
                note.changed.append(pair)
    for claim in head.failing:
        notes.setdefault(claim.id, ClaimNote(claim.id, claim, old.get(claim.id)))
    ordered = sorted(notes.values(), key=lambda n: (not n.failing, n.id))
    return Changes(ordered, compared, unmeasured, bench_notes(base, head))


def bench_notes(base: Run, head: Run) -> list[BenchNote]:
    """Every benchmark of either run, compared (same test id and device) by the one judge."""
    old = {r.key: r for r in base.benchmarks or ()}
    new = {r.key: r for r in head.benchmarks or ()}
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        row, run = (b, head) if b is not None else (a, base)
        page = bench_key(row.fullname, row.device, bench_machine(run, row))
        if a is None or b is None:
            out.append(BenchNote(row, page, "new" if a is None else "gone"))
            continue
        result = compare(a, b)
        out.append(BenchNote(b, page, result.status, result))
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _ran(claim: ClaimResult | None) -> list[TestResult]:
    return [t for t in (claim.tests if claim else ()) if t.outcome not in UNMEASURED]


def numbers_range(tests: list[TestResult]) -> str:
    """The range of a claim's numbers over its tests (a gap against its bound first; else the first
    number its tests record), e.g. ``gap 2e-08..0.003 (needs <= 0.0001)``."""
    by_key: dict[str, list[float]] = {}
    bounds, expects = set(), set()
    for test in tests:
        for key, value in evidence_numbers(test.evidence):
            by_key.setdefault(key, []).extend(value if isinstance(value, list) else [value])
        if "bound" in test.evidence:
            bounds.add(str(test.evidence.get("bound")))
            expects.add(str(test.evidence.get("expect")))
    if not by_key:
        return ""
    key = "gap" if "gap" in by_key else next(iter(by_key))
    values = by_key[key]
    text = f"{key} {_fmt(min(values))}" + (f"..{_fmt(max(values))}" if max(values) != min(values) else "")
    if key == "gap" and len(bounds) == 1:
        relation = {"equal": "<=", "exact": "==", "differs": ">"}.get(next(iter(expects)), "vs")
        text += f" (needs {relation} {next(iter(bounds))})"
    return text


def _messages(tests: list[TestResult]) -> list[tuple[str, int]]:
    """The distinct first lines of the failed tests' messages, with how many tests gave each."""
    counts: dict[str, int] = {}
    for t in tests:
        if t.outcome in FAILED_OUTCOMES:
            text = (t.reason or t.outcome).strip().splitlines()[0] if (t.reason or t.outcome).strip() else t.outcome
            counts[text[:MESSAGE_MAX]] = counts.get(text[:MESSAGE_MAX], 0) + 1
    return list(counts.items())


def _link(text: str, site_url: str | None, page: str) -> str:
    return f"[{text}]({site_url.rstrip('/')}/{page})" if site_url else text


def claim_line(note: ClaimNote, site_url: str | None) -> str:
    """One line: the claim, its verdicts, failed/ran tests, the range of its numbers, a message."""
    head = note.head
    name = _link(f"**{note.id}**", site_url, claim_file(note.id))
    if note.changed:
        verdicts = "; ".join(
            f"{p.old.verdict.value} → **{p.new.verdict.value}**" + _mode_of(p.old.key) for p in note.changed
        )
    else:
        was = f" (base: {note.base.verdict.value})" if note.base is not None else " (not in the base)"
        verdicts = f"**{head.verdict.value if head else '?'}**{was}"
    mark = "❌" if note.failing else "🔁"
    parts = [f"- {mark} {name} {verdicts}"]
    ran = _ran(head)
    if ran:
        failed = sum(t.outcome in FAILED_OUTCOMES for t in ran)
        parts.append(f"{failed}/{len(ran)} tests failed")
    numbers = numbers_range(ran)
    if numbers:
        parts.append(numbers)
    messages = _messages(ran)
    if messages:
        text, count = messages[0]
        more = f" (+{len(messages) - 1} other messages)" if len(messages) > 1 else ""
        parts.append(f"`{text.replace('`', chr(39))}`" + (f" ×{count}" if count > 1 else "") + more)
    elif head is not None and head.why and not note.failing:
        parts.append(head.why.splitlines()[0][:MESSAGE_MAX])
    return "; ".join(parts)


def _mode_of(key: str) -> str:
    """`` [mode]`` of a row key (``TP-01 [bf16-autocast]``), else nothing."""
    return f" [{key.partition(' [')[2]}" if " [" in key else ""


def _cost(row: BenchRow | None) -> str:
    return f"{row.step_cost:.3g}" if row is not None and row.step_cost is not None else "-"


def bench_line(note: BenchNote, site_url: str | None) -> str:
    result = note.comparison
    name = _link(note.name, site_url, bench_file(note.key))
    if result is None or result.change is None:
        return f"- {name}: {note.status}" + (f" ({result.why})" if result is not None and result.why else "")
    mark = {"slower": "🐢", "inconclusive": "❔", "faster": "🚀"}.get(note.status, "")
    return f"- {mark} {name}: **{note.status}** {result.change:+.1%} {result.what} (limit +{result.gate.limit:.0%})"


def _run_words(run: Run) -> str:
    text = f"`{run.commit[:10]}`" + (f" ({run.label})" if run.label else "")
    return f"{text}, torch {run.torch_release}, {run.date[:16]}"


def headline(found: Changes, head: Run) -> str:
    """The comment's first line (under :data:`HEADLINE_MAX` characters)."""
    failing, changed = len(found.failing), len([c for c in found.changed if not c.failing])
    slower, unsure = found.count("slower"), found.count("inconclusive")
    bad = []
    if failing:
        bad.append(f"{_n(failing, 'claim')} failing")
    if changed:
        bad.append(f"{changed} changed")
    if slower:
        bad.append(f"{_n(slower, 'benchmark')} slower")
    if unsure:
        bad.append(f"{unsure} inconclusive")
    if bad:
        text = f"### ❌ trainclaims: {', '.join(bad)}"
    elif not found.compared:
        text = "### ⚠️ trainclaims: nothing compared (see below)"
    elif not head.complete:
        text = f"### ⚠️ trainclaims: the head run is {head.status}"
    else:
        benches = sum(b.status in ("unchanged", "faster") for b in found.benches)
        text = (
            f"### ✅ trainclaims: {_n(found.compared_claims, 'claim verdict')}, {_n(benches, 'benchmark')} "
            "as in the base"
        )
    return text if len(text) <= HEADLINE_MAX else text[: HEADLINE_MAX - 1] + "…"


def reproduce_command(head: Run, found: Changes) -> str | None:
    """One pytest command that reruns the tests of the failing and changed claims and the
    benchmarks that moved, as node ids (a whole test function where every instance of it in the
    run is wanted), on the devices they ran on."""
    wanted: list[str] = []
    every: list[str] = []
    devices: list[str] = []
    for claim in head.claims or ():
        every += [t.test for t in claim.tests]
    every += [r.fullname for r in head.benchmarks or ()]
    every += [str(r.get("test")) for r in head.not_measured]
    for note in found.claims:
        mine = _ran(note.head) or (note.head.tests if note.head else [])
        wanted += [t.test for t in mine]
        devices += [t.device for t in mine if t.device]
    benches = [b for b in found.benches if b.status in ("slower", "faster", "inconclusive")]
    wanted += [b.row.fullname for b in benches]
    devices += [b.row.device for b in benches]
    wanted = list(dict.fromkeys(w for w in wanted if w))
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
    kinds = list(dict.fromkeys(d.split(":")[0] for d in devices))
    if kinds:
        args.append(f"--device={','.join(kinds)}")
    if benches:
        args += ["-p", "no:xdist"]  # benchmarks skip under xdist
    modes = [m for m in head.modes if m != "ieee"]
    if modes:
        args.append(f"--numerics={','.join(head.modes)}")
    return " ".join(shlex.quote(a) for a in [*args, *chosen])


def _details(summary: str, lines: list[str]) -> list[str]:
    return ["", f"<details><summary>{summary}</summary>", "", *lines, "", "</details>"]


def _test_lines(note: ClaimNote) -> list[str]:
    before = {t.test: t for t in (note.base.tests if note.base else ())}
    ran = sorted(_ran(note.head), key=lambda t: (t.outcome not in FAILED_OUTCOMES, t.test))
    lines = []
    for test in ran[:TESTS_SHOWN]:
        old = before.get(test.test)
        text = f"  - `{test.test}`: {old.outcome if old else '-'} → {test.outcome}"
        numbers = numbers_range([test])
        if numbers:
            old_numbers = numbers_range([old]) if old else ""
            text += f"; {numbers}" + (f" (base {old_numbers})" if old_numbers and old_numbers != numbers else "")
        lines.append(text)
    if len(ran) > TESTS_SHOWN:
        lines.append(f"  - and {len(ran) - TESTS_SHOWN} more tests")
    for message, count in _messages(ran):
        lines.append(f"  - {count} test{'s' if count > 1 else ''}: `{message.replace('`', chr(39))}`")
    return lines


def pr_comment(history: History, base: int, head: int, site_url: str | None = None) -> str:
    """The markdown comment comparing run ``base`` with run ``head`` of ``history``."""
    a, b = history.runs[base], history.runs[head]
    found = changes(a, b)
    lines = [headline(found, b), ""]
    site = f" · [site]({site_url.rstrip('/')}/index.html)" if site_url else ""
    lines.append(f"Head {_run_words(b)} against base {_run_words(a)}{site}")
    warnings = []
    if not found.compared:
        warnings.append(
            "nothing could be compared: the base measured none of the head's claims or benchmarks "
            "(give --base RUN or label:NAME; `trainclaims-history runs` lists them)"
        )
    for which, run in (("head", b), ("base", a)):
        if not run.complete:
            warnings.append(f"the {which} run is {run.status}: {run.status_why}")
    if a.machine != b.machine:
        warnings.append(f"base and head ran on different machines ({a.machine}; {b.machine})")
    lines += ["", *(f"⚠️ {w}" for w in warnings)] if warnings else []
    counts = []
    if a.claims is None or b.claims is None:
        counts.append(f"**Claims**: not measured in the {'base' if a.claims is None else 'head'} run")
    else:
        counts.append(
            f"**Claims**: {len(found.failing)} failing, {len(found.changed)} changed, "
            f"{found.compared_claims} verdicts compared, {found.unmeasured_claims} measured in one run only"
        )
    if a.benchmarks is None or b.benchmarks is None:
        counts.append(f"**Benchmarks**: not measured in the {'base' if a.benchmarks is None else 'head'} run")
    else:
        counts.append(
            "**Benchmarks**: "
            + ", ".join(
                f"{found.count(s)} {s}"
                for s in ("slower", "inconclusive", "faster", "unchanged", "incomparable", "new", "gone")
                if found.count(s) or s in ("slower", "inconclusive", "faster", "unchanged")
            )
        )
    lines += ["", " · ".join(counts)]
    if found.claims:
        lines += ["", *(claim_line(note, site_url) for note in found.claims)]
    moved = [x for x in found.benches if x.status in ("slower", "inconclusive", "faster")]
    if moved:
        lines += ["", *(bench_line(x, site_url) for x in moved)]
    if found.claims:
        tests = [line for note in found.claims for line in [f"- **{note.id}**", *_test_lines(note)]]
        lines += _details(f"Their tests ({_n(sum(len(_ran(n.head)) for n in found.claims), 'test')})", tests)
    if found.benches:
        table = ["| benchmark | base | head | change | call |", "|---|---|---|---|---|"]
        for x in found.benches:
            r = x.comparison
            old = _cost(r.old) if r else (_cost(x.row) if x.status == "gone" else "-")
            new = _cost(r.new) if r else (_cost(x.row) if x.status == "new" else "-")
            change = f"{r.change:+.1%} {r.what}" if r and r.change is not None else "-"
            call = x.status + (f" (limit +{r.gate.limit:.0%})" if r and r.change is not None else "")
            table.append(f"| {_link(x.name, site_url, bench_file(x.key))} | {old} | {new} | {change} | {call} |")
        detail = [f"- {x.name}: {x.comparison.line()}" for x in moved if x.comparison]
        lines += _details(
            f"Every benchmark ({len(found.benches)}): step cost in GEMM units",
            [*table, *(["", *detail] if detail else [])],
        )
    command = reproduce_command(b, found)
    if command:
        lines += ["", "Reproduce:", "", "```sh", command, "```"]
    return "\n".join(lines) + "\n"
