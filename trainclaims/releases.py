"""``trainclaims-releases``: a selection of claims measured on every listed release of torch (or of
the package ``--package`` names), each in an environment of its own (made as ``trainclaims-bisect``
makes them: uv where it is on PATH), run, read and removed in turn. Run it in the project's folder::

    trainclaims-releases --releases 2.1-2.15 S001 S002 TP            # the newest patch of each line
    trainclaims-releases --releases 2.6.0,2.15.0 TP-04 -m "distributed" --keep
    trainclaims-releases --releases 2.1-2.15 S001 --history hist/     # each release a run of a history
    trainclaims-releases --package transformers --releases 4.45-4.57 HF

For each release it writes what the selection's tests said (``pytest --claim=... -m EXPR
--device=cpu``: every claim's verdict and why), the values the known-behaviour tables measure
there (the tests record them as ``known: WHAT`` in their evidence; the capability and deprecation
probes run too: ``python -m trainclaims.tables``), the time and disk the environment took.
``releases.md`` and ``releases.json`` under ``--out`` are written again after every release, so an
interrupted run keeps what it measured. A release that cannot be installed is listed with the
installer's reason. Exit 0 where every release ran, 1 where one could not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from trainclaims import bisect
from trainclaims.cli import described
from trainclaims.files import atomic_write

SCHEMA = 1
DEFAULT_MARKERS = "not slow or distributed"
KNOWN_PREFIX = "known: "


def say(text: str) -> None:
    print(f"trainclaims-releases: {text}", flush=True)


def choose(spec: str, available: list[Version], package: str = "torch") -> list[Version]:
    """The releases ``spec`` names, oldest first: comma-separated parts, each a range of lines
    (``2.1-2.15``: the newest patch of each line from 2.1 to 2.15 on the index) or a release
    (``2.6.0``); ValueError (one line) for a release the index does not have or a part that is
    neither."""
    chosen: set[Version] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        ranged = re.fullmatch(r"(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)", part)
        if ranged:
            low, high = (int(ranged[1]), int(ranged[2])), (int(ranged[3]), int(ranged[4]))
            lines: dict[tuple[int, int], Version] = {}
            for v in available:
                if low <= (v.major, v.minor) <= high:
                    lines[(v.major, v.minor)] = max(v, lines.get((v.major, v.minor), v))
            if not lines:
                raise ValueError(f"--releases {part}: no {package} release of those lines on the index")
            chosen.update(lines.values())
            continue
        try:
            v = Version(part)
        except InvalidVersion:
            raise ValueError(f"--releases {spec}: {part!r} is not a release (give 2.1-2.15 or 2.6.0,2.15.0)") from None
        if v not in available:
            raise ValueError(f"--releases: {package} {v} is not on the package index")
        chosen.add(v)
    if not chosen:
        raise ValueError("--releases: no release given")
    return sorted(chosen)


def probe_tables(python: Path) -> tuple[dict[str, Any], str]:
    """The capability and deprecation tables measured in that environment (``python -m
    trainclaims.tables``): ({what: value}, ""), or ({}, why the probes could not run: the last line
    they printed), so that a release whose probes failed says so instead of showing no values."""
    try:
        done = subprocess.run([python, "-m", "trainclaims.tables"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {}, "the table probes ran past 600 s"
    # the JSON is the last line: gloo prints "[Gloo] Rank 0 is connected ..." to stdout on torch 2.8-2.10
    lines = done.stdout.strip().splitlines()
    try:
        if done.returncode == 0 and lines:
            return json.loads(lines[-1]), ""
    except ValueError:
        pass
    last = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
    return {}, f"table probes failed: {last[:300]}"


def read_run(reports: Path) -> dict[str, Any]:
    """Each claim's verdict and why, and each table value the tests recorded, from a claims.json."""
    data = json.loads((reports / "claims.json").read_text())
    claims = {c["id"]: {"verdict": c["verdict"], "why": c.get("why", "")[:400]} for c in data["claims"]}
    tables: dict[str, Any] = {}
    for claim in data["claims"]:
        for test in claim.get("tests", []):
            for key, value in (test.get("evidence") or {}).items():
                if key.startswith(KNOWN_PREFIX):
                    tables.setdefault(key[len(KNOWN_PREFIX) :], value)
    return {"claims": claims, "tables": tables}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def markdown(results: dict[str, Any]) -> str:
    releases = list(results["releases"])
    package = results.get("package", "torch")
    head = "| claim | " + " | ".join(releases) + " |"
    lines = [
        f"# Claims on each {package} release",
        "",
        f"{results['command']}  ",
        f"markers `{results['markers']}`, CPU; each release in an environment of its own, made and removed in turn",
        "",
        head,
        "|---|" + "---|" * len(releases),
    ]
    claims = sorted({c for r in results["releases"].values() for c in r.get("claims", {})}, key=_claim_order)
    short = {"holds": "holds", "not measured": "n/m", "conditional": "cond.", "refuted": "refuted", "fails": "FAILS"}
    for cid in claims:
        cells = []
        for r in results["releases"].values():
            verdict = r.get("claims", {}).get(cid, {}).get("verdict", "—" if r.get("ran") else "not run")
            cells.append(short.get(verdict, verdict))
        lines.append(f"| {cid} | " + " | ".join(cells) + " |")
    tables = sorted({t for r in results["releases"].values() for t in r.get("tables", {})})
    if tables:
        lines += ["", "## Known behaviours measured", "", "| behaviour | " + " | ".join(releases) + " |"]
        lines.append("|---|" + "---|" * len(releases))
        for t in tables:
            row = [
                json.dumps(r.get("tables", {}).get(t, "—"), ensure_ascii=False) for r in results["releases"].values()
            ]
            lines.append(f"| {t} | " + " | ".join(v.strip('"') for v in row) + " |")
    lines += ["", "## Each release", "", f"| {package} | environment | tests | disk | note |", "|---|---|---|---|---|"]
    for v, r in results["releases"].items():
        disk = f"{r['disk_bytes'] / 1e9:.1f} GB" if r.get("disk_bytes") else ""
        note = r.get("why", "")
        lines.append(
            f"| {v} | {r.get('install', '')} | {r.get('tally', '')} ({r.get('run_s', 0):.0f} s) | {disk} | {note} |"
        )
    return "\n".join(lines) + "\n"


def _claim_order(cid: str) -> tuple[str, int]:
    family, _, number = cid.rpartition("-")
    return family, int(number) if number.isdigit() else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainclaims-releases", description=described(__doc__))
    p.add_argument("select", nargs="+", help="claim ids (TP-04) or family ids (S001, TP)")
    p.add_argument("--releases", required=True, help="2.1-2.15 (the newest patch of each line) or 2.6.0,2.15.0")
    bisect.package_arguments(p)
    p.add_argument("-m", dest="markers", default=DEFAULT_MARKERS, help="pytest's -m. Default: %(default)r")
    p.add_argument("--out", type=Path, default=Path("releases"), help="releases.md/.json. Default: %(default)s")
    p.add_argument("--cache", type=Path, default=bisect.DEFAULT_CACHE, help="environments. Default: %(default)s")
    p.add_argument("--keep", action="store_true", help="keep each environment (default: removed after its run)")
    p.add_argument("--history", type=Path, default=None, help="add each release's run to this history folder")
    p.add_argument("--family", action="append", default=[], metavar="MODULE:NAME", help="a project's own family")
    p.epilog = "Arguments after -- go to every pytest run (e.g. -- -k 'not torchrun')."
    given = list(sys.argv[1:] if argv is None else argv)
    extra = given[given.index("--") + 1 :] if "--" in given else []
    args = p.parse_args(given[: given.index("--")] if "--" in given else given)
    from trainclaims.mutation import _families, _select

    try:
        claims = _select(_families(args.family), args.select)
        package = args.package.lower().replace("_", "-")
        releases = choose(args.releases, bisect.index_versions(package), package)
    except ValueError as err:
        print(f"trainclaims-releases: {err}", file=sys.stderr)
        return 2
    work = args.out.resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
        args.cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"trainclaims-releases: cannot make {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    wheel = bisect.trainclaims_wheel(work / "wheel")
    select = [f"--claim={','.join(claims)}", "-m", args.markers, *extra]
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "command": "trainclaims-releases " + " ".join(given),
        "markers": args.markers,
        "package": package,
        "releases": {},
    }
    say(
        f"{len(releases)} {package} releases: {', '.join(map(str, releases))}; {len(claims)} claims; "
        f"with {bisect._installer()}"
    )
    failed = 0
    begun = time.monotonic()
    for n, version in enumerate(releases, 1):
        start = time.monotonic()
        python, how = bisect.environment(version, args.cache, wheel, package, args.pins)
        entry: dict[str, Any] = {"install": how}
        if python is None:
            entry |= {"ran": False, "why": f"cannot be installed: {how}"}
            failed += 1
        else:
            env = python.parent.parent
            entry["disk_bytes"] = _size(env)
            run_start = time.monotonic()
            ran = bisect.run(python, version, select, work, Path.cwd(), package)
            entry["run_s"] = time.monotonic() - run_start
            if ran["ran"]:
                entry |= {"ran": True, "tally": ran["tally"], **read_run(ran["reports"])}
                entry["claims"] = {c: v for c, v in entry.get("claims", {}).items() if c in claims}
                probed, probe_error = probe_tables(python)
                entry["tables"] = {**probed, **entry["tables"]}
                if probe_error:
                    entry["why"] = probe_error
                if args.history is not None:
                    subprocess.run(
                        [sys.executable, "-m", "trainclaims.history", "add", args.history, ran["reports"],
                         "--label", f"{package} {version}"],
                        check=False,
                    )  # fmt: skip
            else:
                entry |= {"ran": False, "why": ran["why"]}
                failed += 1
            if not args.keep:
                shutil.rmtree(env, ignore_errors=True)
        entry["seconds"] = time.monotonic() - start
        results["releases"][str(version)] = entry
        results["seconds"] = time.monotonic() - begun
        atomic_write(work / "releases.json", json.dumps(results, indent=1, default=str))
        atomic_write(work / "releases.md", markdown(results))
        state = entry.get("tally") or entry.get("why", "")
        say(f"[{n}/{len(releases)}] {package} {version}: {how}; {state}; {entry['seconds']:.0f} s")
    say(f"{len(releases) - failed} of {len(releases)} releases ran in {time.monotonic() - begun:.0f} s; {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
