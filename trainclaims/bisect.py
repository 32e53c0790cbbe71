"""``trainclaims-bisect``: the first torch release where a selection of the suite behaves otherwise.

    trainclaims-bisect --good 2.1.2 --bad 2.14.1 S001-02
    trainclaims-bisect --good 2.6.0 --bad 2.15.0 "suites/test_s001_relu.py::test_relu_like_ops_do_not_all_agree_at_zero"

The selection is claim ids (the tests that encode them, as ``pytest --claims`` lists them here) or
pytest node ids / arguments. For each probed torch release it makes an isolated environment from the
package index (a virtual environment per release under ``--cache``, kept and reused), installs that
torch with a torchvision the index pairs with it (numpy < 2 for torch < 2.3), this project and its
test dependencies, runs the selection there, and compares what it found with the good release's run:
each test's outcome and its recorded evidence. It bisects the releases on the index between the two
(assuming one change), prints each probe as it goes (version, install, run, outcome) and ends with
the first release whose outcome or evidence differs and the compare report of it and the release
before it (``trainclaims-compare``). A release that cannot be installed (no wheel for this Python,
no matching torchvision) is skipped with the reason and the bisection goes on without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainclaims-bisect"
# the test dependencies, pinned as this project pins them (constraints.txt without torch/torchvision)
TOOLS = ["pytest", "pytest-benchmark", "hypothesis", "scipy", "matplotlib", "packaging"]


def say(text: str) -> None:
    print(f"trainclaims-bisect: {text}", flush=True)


def index_versions() -> list[Version]:
    """torch releases on the package index (pip's view, no machine-wide constraint), oldest first."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "torch"],
        capture_output=True,
        text=True,
        env=os.environ | {"PIP_CONSTRAINT": ""},
    )
    found = re.search(r"Available versions: (.*)", out.stdout)
    if not found:
        raise SystemExit(f"trainclaims-bisect: pip found no torch releases on the index: {out.stderr.strip()[:300]}")
    versions = set()
    for text in found.group(1).split(","):
        try:
            v = Version(text.strip())
        except InvalidVersion:
            continue
        if not v.local and not v.is_prerelease:
            versions.add(v)
    return sorted(versions)


def constraints_without_torch(work: Path) -> Path:
    lines = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if not re.match(r"(torch|torchvision|numpy)==", line)
    ]
    path = work / "constraints-tools.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def environment(version: Version, cache: Path, work: Path) -> tuple[Path | None, str]:
    """(the environment's python, how it was had), or (None, why it could not be)."""
    env = cache / f"torch-{version}"
    python = env / "bin" / "python"
    if python.exists():
        probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
        if probe.returncode == 0 and Version(probe.stdout.strip()).base_version == str(version):
            return python, "cached"
        shutil.rmtree(env)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", env], check=True)
    # === : the release itself, not a local build beside it on the index (2.13.0+cpu, whose torchvision
    # then lacks its operators: "operator torchvision::nms does not exist")
    pins = [f"torch==={version}", "torchvision"] + (["numpy<2"] if version < Version("2.3") else ["numpy"])
    steps = [
        [python, "-m", "pip", "install", "-q", *pins],
        [python, "-m", "pip", "install", "-q", "-c", constraints_without_torch(work), *TOOLS],
        [python, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PIP_CONSTRAINT": ""})
        if done.returncode != 0:
            shutil.rmtree(env, ignore_errors=True)
            if NO_SPACE in done.stderr:  # this machine's problem, not the release's: every later install fails too
                raise SystemExit(
                    f"trainclaims-bisect: no space left on the device under {cache} while installing torch {version} "
                    "(an environment takes about 5 GB): free some, or pass --cache on a larger disk"
                )
            lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
            return None, (lines[0] if lines else f"pip exited {done.returncode}")[:300]
    return python, f"installed in {time.monotonic() - start:.0f} s"


NO_SPACE = "No space left on device"


def conclusion(releases: list[Version], before: Version, first: Version, skipped: dict[Version, str]) -> str:
    """The bisection's answer: ``first`` where every release between ``before`` (which behaves as
    the good one) and it ran; else the range, naming the releases in it that could not be run."""
    between = [v for v in releases if before < v < first and v in skipped]
    if not between:
        return f"first release that differs: torch {first} (torch {before} behaves as the good release)"
    names = ", ".join(str(v) for v in between)
    return (
        f"the change lies after torch {before} (behaves as the good release) and at or before torch {first} "
        f"(differs): {names} in between could not be run ({skipped[between[0]]})"
    )


def selection(args: list[str]) -> list[str]:
    """pytest arguments for the selection: node ids as given; claim ids as the node ids of their tests."""
    claims = [a for a in args if re.fullmatch(r"[A-Z][A-Z0-9]*-\d+", a)]
    rest = [a for a in args if a not in claims]
    if not claims:
        return rest
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--claims", "-q", "-p", "no:cacheprovider", "--no-report"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.splitlines()
    nodes, current = [], None
    for line in listed:
        if not line.startswith(" "):
            current = line.split()[0] if line.strip() else None
        elif current in claims and "::" in line and not re.search(r"[\[-](cuda|mps)[\]-]", line):
            nodes.append(line.strip())  # the CPU instances: each probe runs on the CPU
    if not nodes:
        raise SystemExit(f"trainclaims-bisect: no test of {', '.join(claims)} here (pytest --claims lists them)")
    return rest + nodes


def run(python: Path, version: Version, select: list[str], work: Path) -> dict[str, Any]:
    """The selection on this environment: each test's outcome and evidence, from its claims.json."""
    reports = work / f"reports-{version}"
    done = subprocess.run(
        [python, "-m", "pytest", *select, "-p", "no:cacheprovider", "-q", f"--report-dir={reports}", "--device=cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    tally = next((line for line in reversed(done.stdout.splitlines()) if " in " in line and "=" not in line), "")
    tests = {}
    path = reports / "claims.json"
    if path.exists():
        for claim in json.loads(path.read_text())["claims"]:
            for t in claim["tests"]:
                tests[t["test"]] = {"outcome": t["outcome"], "evidence": t.get("evidence") or {}}
    if done.returncode not in (0, 1) or " error" in tally or not tests:  # it did not run: nothing to compare
        lines = (done.stdout + done.stderr).splitlines()
        why = next((x for x in reversed(lines) if re.search(r"\w*(Error|Exception)\b", x)), tally)
        return {"ran": False, "why": (why.strip() or f"pytest exited {done.returncode}")[:300]}
    return {"ran": True, "tally": tally.strip(), "tests": tests, "reports": reports}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for test in sorted(set(a["tests"]) | set(b["tests"])):
        x, y = a["tests"].get(test), b["tests"].get(test)
        if x is None or y is None:
            out.append(f"{test}: {'only in the later run' if x is None else 'not in the later run'}")
        elif x["outcome"] != y["outcome"]:
            out.append(f"{test}: {x['outcome']} -> {y['outcome']}")
        elif x["evidence"] != y["evidence"]:
            keys = sorted(
                k for k in set(x["evidence"]) | set(y["evidence"]) if x["evidence"].get(k) != y["evidence"].get(k)
            )
            shown = ", ".join(f"{k}: {x['evidence'].get(k)!r} -> {y['evidence'].get(k)!r}" for k in keys[:4])
            out.append(f"{test}: evidence {shown}")
    if not a["tests"] and not b["tests"] and a["tally"] != b["tally"]:
        out.append(f"{a['tally']} -> {b['tally']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainclaims-bisect", description=__doc__.split("\n\n")[0])
    p.add_argument("select", nargs="+", help="claim ids (S001-02) and/or pytest node ids")
    p.add_argument(
        "--good", required=True, type=Version, help="a torch release where the selection behaves as expected"
    )
    p.add_argument("--bad", required=True, type=Version, help="a later torch release where it does not")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="environments per release. Default: %(default)s")
    p.add_argument(
        "--out", type=Path, default=Path("bisect"), help="reports and the compare report. Default: %(default)s"
    )
    args = p.parse_args(argv)
    if args.good >= args.bad:
        print("trainclaims-bisect: --good must be an older release than --bad", file=sys.stderr)
        return 2
    releases = [v for v in index_versions() if args.good <= v <= args.bad]
    for end in (args.good, args.bad):
        if end not in releases:
            print(f"trainclaims-bisect: torch {end} is not on the package index", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    select = selection(args.select)
    say(f"{len(releases)} releases from {args.good} to {args.bad}; selection: {len(select)} pytest arguments")
    runs: dict[Version, dict[str, Any]] = {}
    skipped: dict[Version, str] = {}  # releases that could not be installed or run here, and why
    probes = [0]

    def probe(v: Version) -> dict[str, Any] | None:
        probes[0] += 1
        start = time.monotonic()
        python, how = environment(v, args.cache, args.out)
        if python is None:
            say(f"[probe {probes[0]}] torch {v}: skipped, cannot be installed: {how}")
            skipped[v] = f"cannot be installed: {how}"
            return None
        result = run(python, v, select, args.out)
        if not result["ran"]:
            say(f"[probe {probes[0]}] torch {v}: {how}; skipped, the selection does not run there: {result['why']}")
            skipped[v] = f"the selection does not run there: {result['why']}"
            return None
        same = (
            ""
            if v == args.good
            else (" (as the good release)" if not differences(runs[args.good], result) else " (differs)")
        )
        say(f"[probe {probes[0]}] torch {v}: {how}; ran: {result['tally']}{same}; {time.monotonic() - start:.0f} s")
        runs[v] = result
        return result

    if probe(args.good) is None or probe(args.bad) is None:
        say("the good or the bad release cannot be installed here: nothing to bisect")
        return 2
    if not differences(runs[args.good], runs[args.bad]):
        say(f"torch {args.good} and {args.bad} give the same outcomes and evidence: no change to find")
        return 1
    lo, hi = 0, len(releases) - 1  # releases[lo] behaves as good, releases[hi] differs
    candidates = list(releases)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result = probe(candidates[mid])
        if result is None:
            del candidates[mid]
            hi -= 1
            continue
        if differences(runs[args.good], result):
            hi = mid
        else:
            lo = mid
    first, before = candidates[hi], candidates[lo]
    say(conclusion(releases, before, first, skipped))
    for line in differences(runs[before], runs[first]):
        say(f"  {line}")
    compare = args.out / f"compare-{before}-{first}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainclaims.compare",
            str(runs[before]["reports"]),
            str(runs[first]["reports"]),
            "--out",
            str(compare),
        ],
        capture_output=True,
    )
    if (compare / "compare.md").exists():
        say(f"compare report: {compare / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
