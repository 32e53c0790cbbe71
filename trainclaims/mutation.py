"""``trainclaims-mutants``: the mutation tier. Each claim's tests run once as they are and once
under each mutant that names the claim (PyTorch, or a library such as transformers, altered on
purpose in a fresh process: :mod:`trainclaims.mutants`); a claim is *guarded* where every such
run fails one of its tests, *unguarded* where no mutant names it. Run it in the project's folder
(where ``pytest`` finds the tests)::

    trainclaims-mutants                       # every claim the fast tier measures, every family
    trainclaims-mutants S001 TP-03 -j 2       # families or claims; two runs at a time
    trainclaims-mutants -m distributed        # the data-parallel claims' mutants (their ranks too)
    trainclaims-mutants --family conftest:FAMILY   # a project's own family, not installed
    trainclaims-mutants --list                # the mutants per claim, nothing run

First the selected claims' tests run unaltered (``pytest --claim=... -m "not slow"``): a claim that
fails there stops the tier (a mutant's failure would mean nothing), and one not measured there
(skipped here: no GPU, no data, another marker) is left out, with the reason. Then each mutant runs
the tests of its claims measured unaltered, in a process of its own with ``TRAINCLAIMS_MUTANT``
set. Claim x mutant reads *killed* (with the first test that failed and its message), *survived*
(every test passed or skipped: the tests cannot tell that PyTorch was altered), *timed out* (counted
as killed: a run that hangs fails CI), or *error* (the run under the mutant did not complete: the
mutant itself is broken). It writes ``mutants.json`` and ``mutants.md`` under ``--out`` and exits 0
where every measured claim is guarded and no mutant survived or broke, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainclaims.cli import described
from trainclaims.mutants import MUTANT_ENV, Mutant, all_of, guards

PROFILE_ENV = "TRAINCLAIMS_HYPOTHESIS_PROFILE"  # trainclaims.hypothesis_profiles (which imports hypothesis)

SCHEMA = 1
DEFAULT_MARKERS = "not slow"
DEFAULT_TIMEOUT_S = 900
MEASURED = ("holds", "refuted", "conditional")
FAILED = ("failed", "error", "xpassed")


def say(text: str) -> None:
    print(f"trainclaims-mutants: {text}", flush=True)


@dataclass
class Run:
    """One pytest run (unaltered, or under a mutant): its exit code, time, and per claim its
    verdict and the tests that failed (node id -> message)."""

    mutant: str | None
    claims: list[str]
    exit_code: int
    seconds: float
    verdicts: dict[str, str] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    output_tail: str = ""
    timed_out: bool = False


def selects(markers: str, marks: tuple[str, ...]) -> bool:
    """Whether pytest's ``-m markers`` selects a test with these marks: the expression's words are
    markers (true where the test has them), joined by ``and``, ``or``, ``not`` and parentheses."""
    tokens = re.findall(r"\(|\)|[^\s()]+", markers)
    words = []
    for token in tokens:
        if token in ("and", "or", "not", "(", ")"):
            words.append(token)
        elif re.fullmatch(r"[\w.-]+", token):
            words.append(str(token in marks))
        else:
            raise ValueError(f"-m {markers!r}: {token!r} is no marker")
    return bool(eval(" ".join(words) or "True", {"__builtins__": {}}))  # only True/False/and/or/not/()


def pytest_command(claims: list[str], markers: str, report_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        f"--claim={','.join(claims)}",
        "-m",
        markers,
        f"--report-dir={report_dir}",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-o",
        "console_output_style=classic",
        *extra,
    ]


def run_pytest(
    mutant: str | None, claims: list[str], markers: str, extra: list[str], timeout: float, threads: int
) -> Run:
    """The claims' tests in a fresh pytest process, with ``mutant`` applied (or none)."""
    env = {k: v for k, v in os.environ.items() if k != MUTANT_ENV}
    if mutant:
        env[MUTANT_ENV] = mutant
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault(PROFILE_ENV, "mutants")  # hypothesis: the first failing example, not shrunk
    with tempfile.TemporaryDirectory(prefix="trainclaims-mutants-") as tmp:
        report_dir = Path(tmp) / "reports"
        start = time.monotonic()
        try:
            done = subprocess.run(
                pytest_command(claims, markers, report_dir, extra),
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            tail = (err.stdout or b"")[-2000:]
            text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            return Run(mutant, claims, -1, time.monotonic() - start, output_tail=text, timed_out=True)
        run = Run(mutant, claims, done.returncode, time.monotonic() - start)
        run.output_tail = (done.stdout + done.stderr)[-3000:]
        report = report_dir / "claims.json"
        if not report.exists():
            return run
        data = json.loads(report.read_text())
    for claim in data.get("claims", []):
        if claim["id"] not in claims:
            continue
        run.verdicts[claim["id"]] = claim["verdict"]
        run.why[claim["id"]] = claim.get("why", "")
        run.failed[claim["id"]] = {
            t["test"]: t.get("reason", "") for t in claim.get("tests", []) if t.get("outcome") in FAILED
        }
    return run


@dataclass
class Outcome:
    """Claim x mutant: killed / survived / timed out / error, with the test and message that tell."""

    claim: str
    mutant: str
    status: str
    test: str = ""
    message: str = ""
    seconds: float = 0.0

    @property
    def caught(self) -> bool:
        return self.status in ("killed", "timed out")


def judge(run: Run, claim: str) -> Outcome:
    name = run.mutant or ""
    if run.timed_out:
        return Outcome(claim, name, "timed out", message=f"no end within {run.seconds:.0f} s", seconds=run.seconds)
    if claim not in run.verdicts:
        last = run.output_tail.strip().splitlines()[-1:] or ["no output"]
        return Outcome(claim, name, "error", message=f"pytest exit {run.exit_code}: {last[0]}", seconds=run.seconds)
    failed = run.failed.get(claim, {})
    if failed:
        test, message = next(iter(failed.items()))
        return Outcome(claim, name, "killed", test, message[:300], run.seconds)
    verdict = run.verdicts[claim]
    return Outcome(claim, name, "survived", message=f"{verdict}: {run.why.get(claim, '')}"[:300], seconds=run.seconds)


# --------------------------------------------------------------------------- the command


def _families(refs: list[str]) -> list[Any]:
    from trainclaims import registry

    return registry.with_extra(registry.load(r) for r in refs)


def _select(families: list[Any], wanted: list[str]) -> list[str]:
    """The claim ids ``wanted`` names (claim ids or family ids; all where empty); ValueError (one
    line) for one that is neither."""
    by_family = {f.id: list(f.claims) for f in families}
    every = [c for ids in by_family.values() for c in ids]
    if not wanted:
        return every
    chosen: list[str] = []
    for item in wanted:
        for part in item.split(","):
            part = part.strip()
            if part in by_family:
                chosen += by_family[part]
            elif part in every:
                chosen.append(part)
            elif part:
                known = ", ".join(by_family) or "none"
                raise ValueError(
                    f"{part!r} is no claim or family here (families: {known}; claims: trainclaims-mutants --list)"
                )
    return list(dict.fromkeys(chosen))


def _markdown(claims: list[str], per_claim: dict[str, dict[str, Any]], outcomes: list[Outcome], meta: dict) -> str:
    lines = [
        "# Mutation tier: each claim's tests under PyTorch (or transformers) altered on purpose",
        "",
        f"{meta['command']}  ",
        f"torch {meta['torch']}; markers `{meta['markers']}`; {meta['mutants_run']} mutants in {meta['seconds']:.0f} s "
        f"({meta['jobs']} at a time)",
        "",
        "| claim | guard | mutants |",
        "|---|---|---|",
    ]
    for cid in claims:
        row = per_claim[cid]
        names = ", ".join(f"{o['mutant']}: {o['status']}" for o in row["mutants"]) or "—"
        lines.append(f"| {cid} | {row['guard']} | {names} |")
    lines += ["", "## Claim x mutant", "", "| claim | mutant | status | test that failed, or why it survived |"]
    lines.append("|---|---|---|---|")
    for o in outcomes:
        detail = f"`{o.test}`: {o.message}" if o.test else o.message
        lines.append(f"| {o.claim} | {o.mutant} | {o.status} | {detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainclaims-mutants", description=described(__doc__))
    p.add_argument("select", nargs="*", help="claim ids (TP-03) or family ids (S001); all where none is given")
    p.add_argument("--family", action="append", default=[], metavar="MODULE:NAME", help="a project's own family")
    p.add_argument("--mutant", action="append", default=[], help="run only this mutant (repeatable)")
    p.add_argument("-m", dest="markers", default=DEFAULT_MARKERS, help="pytest's -m. Default: %(default)r")
    p.add_argument("-j", "--jobs", type=int, default=1, help="pytest runs at a time. Default: %(default)s")
    p.add_argument("--out", type=Path, default=Path("reports"), help="mutants.json/.md go here. Default: %(default)s")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per run. Default: %(default)s")
    p.add_argument("--list", action="store_true", help="print the mutants of each claim and run nothing")
    p.epilog = "Arguments after -- go to every pytest run."
    given = list(sys.argv[1:] if argv is None else argv)
    extra = given[given.index("--") + 1 :] if "--" in given else []
    args = p.parse_args(given[: given.index("--")] if "--" in given else given)
    try:
        selects(args.markers, ())  # a -m that is no marker expression: before any work
        families = _families(args.family)
        known = all_of(families)
        claims = _select(families, args.select)
    except ValueError as err:
        print(f"trainclaims-mutants: {err}", file=sys.stderr)
        return 2
    unknown = [m for m in args.mutant if m not in known]
    if unknown:
        print(
            f"trainclaims-mutants: no mutant {', '.join(unknown)} (known: {', '.join(sorted(known))})", file=sys.stderr
        )
        return 2
    if args.jobs < 1:
        print("trainclaims-mutants: -j needs 1 or more", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".trainclaims-mutants-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        print(f"trainclaims-mutants: --out {args.out}: cannot write there ({err.strerror or err})", file=sys.stderr)
        return 2
    guard_of = guards(families)
    if args.list:
        for cid in claims:
            names = [m.name for m in guard_of[cid]]
            print(f"{cid}: {', '.join(names) if names else 'unguarded'}")
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    begun = time.monotonic()
    say(f"{len(claims)} claims; the unaltered run first (pytest -m {args.markers!r})")
    base = run_pytest(None, claims, args.markers, extra, args.timeout, os.cpu_count() or 1)
    if not base.verdicts:
        say(f"the unaltered run reported no claim (pytest exit {base.exit_code}):\n{base.output_tail}")
        return 2
    broken = {c: v for c, v in base.verdicts.items() if v == "fails"}
    if broken:
        for cid in broken:
            say(f"{cid} fails without any mutant: {base.why.get(cid, '')[:300]}")
        say("fix these first: a mutant's failure would mean nothing")
        return 1
    measured = [c for c in claims if base.verdicts.get(c) in MEASURED]
    plan: list[tuple[Mutant, list[str]]] = []
    left_out: list[Outcome] = []  # mutants whose tests this run's markers leave out
    for mutant in known.values():
        if args.mutant and mutant.name not in args.mutant:
            continue
        mine = [c for c in mutant.claims if c in measured]
        if mine and mutant.marks and not selects(args.markers, mutant.marks):
            why = f"its tests are marked {', '.join(mutant.marks)}, which -m {args.markers!r} leaves out"
            left_out += [Outcome(c, mutant.name, "not run", message=why) for c in mine]
        elif mine:
            plan.append((mutant, mine))
    took = f"{base.seconds:.0f} s"
    say(f"{len(measured)} claims measured unaltered ({took}); {len(plan)} mutants to run, {args.jobs} at a time")
    outcomes: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run_pytest, m.name, mine, args.markers, extra, args.timeout, threads): (m, mine)
            for m, mine in plan
        }
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
            mutant, mine = futures[future]
            run = future.result()
            got = [judge(run, c) for c in mine]
            outcomes += got
            told = "; ".join(f"{o.claim} {o.status}" + (f" ({o.test.split('::')[-1]})" if o.test else "") for o in got)
            say(f"[{n}/{len(plan)}] {mutant.name}: {told} ({run.seconds:.0f} s)")
    outcomes += left_out
    outcomes.sort(key=lambda o: (claims.index(o.claim), o.mutant))
    per_claim: dict[str, dict[str, Any]] = {}
    for cid in claims:
        mine = [o for o in outcomes if o.claim == cid]
        ran = [o for o in mine if o.status != "not run"]
        if cid not in measured:
            guard = f"not measured: {base.verdicts.get(cid, 'not run')} unaltered"
        elif not guard_of[cid]:
            guard = "unguarded"
        elif not ran:
            guard = "unguarded here: " + "; ".join(f"{o.mutant}: {o.message}" for o in mine)
        elif all(o.caught for o in ran):
            guard = "guarded"
        else:
            guard = "survived" if any(o.status == "survived" for o in ran) else "error"
        per_claim[cid] = {"guard": guard, "mutants": [asdict(o) for o in mine]}
    import torch

    seconds = time.monotonic() - begun
    meta = {
        "command": "trainclaims-mutants " + shlex.join(given),
        "torch": torch.__version__,
        "markers": args.markers,
        "mutants_run": len(plan),
        "jobs": args.jobs,
        "seconds": seconds,
        "unaltered_seconds": base.seconds,
    }
    from trainclaims.files import atomic_write

    atomic_write(
        args.out / "mutants.json",
        json.dumps({"schema": SCHEMA, **meta, "claims": per_claim, "unaltered": base.verdicts}, indent=1),
    )
    atomic_write(args.out / "mutants.md", _markdown(claims, per_claim, outcomes, meta))
    bad = {cid: row["guard"] for cid, row in per_claim.items() if row["guard"] in ("unguarded", "survived", "error")}
    counts = {
        g: sum(1 for r in per_claim.values() if r["guard"] == g) for g in ("guarded", "unguarded", "survived", "error")
    }
    say(
        f"{counts['guarded']} claims guarded, {counts['survived']} with a surviving mutant, {counts['unguarded']} "
        f"unguarded, {counts['error']} with a broken mutant; {len(claims) - len(measured)} not measured here; "
        f"{seconds:.0f} s; {args.out / 'mutants.md'}"
    )
    for cid, guard in bad.items():
        survivors = [o for o in outcomes if o.claim == cid and not o.caught]
        say(f"  {cid}: {guard}" + "".join(f"; {o.mutant} {o.status}: {o.message[:160]}" for o in survivors))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
