"""``trainclaims-bisect``: the first release of a package (torch unless ``--package`` names another)
where a selection of a project's claim tests behaves otherwise. Run it in the project's folder
(where ``pytest`` finds its tests)::

    trainclaims-bisect --good 2.1.2 --bad 2.14.1 S001-02
    trainclaims-bisect --good 2.6.0 --bad 2.14.1 CNN-01          # in examples/small-cnn
    trainclaims-bisect --good 2.6.0 --bad 2.15.0 "tests/test_x.py::test_y"
    trainclaims-bisect --package transformers --good 4.45.2 --bad 4.57.1 HF-01
    trainclaims-bisect --package transformers --with torch==2.4.1 --good 4.40.2 --bad 4.46.3 HF-01

The selection is claim ids (``pytest --claim=ID`` runs their tests) or pytest node ids / arguments.
For each probed release it makes an environment from the package index (one per release under
``--cache``, kept and reused; made with ``uv`` where it is on PATH, else with ``venv`` and pip).
Moving torch, the environment is isolated: that torch with a torchvision the index pairs with it
(numpy < 2 for torch < 2.3) and the test tools at the versions this environment has. Moving any
other package (transformers, accelerate), the environment sees this one's packages (torch, the test
tools) and holds that release of the package, with what it requires where this environment's
versions do not fit it. ``--with`` pins more requirements in every probe (an older torch that an
old transformers needs). Each holds this trainclaims (a wheel made of the installed package, whether
installed from a wheel or editable). The selection runs there on the CPU from the project's folder,
and each test's outcome, verdict and evidence is read from the run's ``claims.json``. It bisects the
releases on the index between the two (assuming one change), prints each probe as it goes and ends
with the first release that behaves otherwise, what differs, and the compare report of it and the
release before it (``trainclaims-compare``); where the two ends behave alike it says so in one line.
A release that cannot be installed is skipped with the reason.

Evidence numbers are compared to 1e-3 relative or 1e-6 absolute: releases round differently, and a
gap of 1.4e-7 against 1.2e-7 is the same measurement; a derivative of 1 against 0 is not.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from trainclaims.cli import described

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainclaims-bisect"
# the test tools each probe runs with, at the versions installed here (pytest-xdist is not needed)
TOOLS = ("pytest", "pytest-benchmark", "hypothesis", "scipy", "matplotlib", "packaging")
NO_SPACE = "No space left on device"
REL_TOL, ABS_TOL = 1e-3, 1e-6  # evidence numbers closer than this are the same measurement


def say(text: str) -> None:
    print(f"trainclaims-bisect: {text}", flush=True)


def index_versions(package: str = "torch") -> list[Version]:
    """The package's releases on the package index, oldest first: pip's view where this Python has
    pip (no machine-wide constraint), else the index's simple JSON API (``$PIP_INDEX_URL`` /
    ``$UV_INDEX_URL``, else PyPI): an environment made by uv has no pip."""
    texts: list[str]
    if importlib.util.find_spec("pip") is not None:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", package],
            capture_output=True,
            text=True,
            env=os.environ | {"PIP_CONSTRAINT": ""},
        )
        found = re.search(r"Available versions: (.*)", out.stdout)
        if not found:
            raise SystemExit(
                f"trainclaims-bisect: pip found no {package} releases on the index: {out.stderr.strip()[:300]}"
            )
        texts = found.group(1).split(",")
    else:
        texts = _simple_index_versions(package)
    versions = set()
    for text in texts:
        try:
            v = Version(text.strip())
        except InvalidVersion:
            continue
        if not v.local and not v.is_prerelease:
            versions.add(v)
    return sorted(versions)


def _simple_index_versions(package: str) -> list[str]:
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    request = urllib.request.Request(
        f"{index.rstrip('/')}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            data = json.load(reply)
    except (OSError, ValueError) as err:
        raise SystemExit(f"trainclaims-bisect: the package index {index} gave no {package} releases: {err}") from None
    return list(data.get("versions") or [])


def tool_pins() -> list[str]:
    """The test tools pinned to the versions this environment has (a tool missing here: unpinned)."""
    pins = []
    for tool in TOOLS:
        try:
            pins.append(f"{tool}=={importlib.metadata.version(tool)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(tool)
    return pins


# --------------------------------------------------------------------------- this trainclaims, as a wheel


def _package_files(dist: importlib.metadata.Distribution) -> dict[str, Path]:
    """{path in a wheel: file here} for every module of the running trainclaims: the package and
    every package its entry points name (the plugin ``trainclaims.fixtures``, which an editable
    install maps from another folder, and the families), found without importing them."""
    import importlib.util
    import pkgutil

    files: dict[str, Path] = {}

    def add(name: str) -> None:
        spec = importlib.util.find_spec(name)
        folders = list(spec.submodule_search_locations or []) if spec else []
        prefix = name.replace(".", "/")
        for folder in folders:
            for path in Path(folder).glob("*.py"):
                files[f"{prefix}/{path.name}"] = path
        for info in pkgutil.iter_modules(folders):
            if info.ispkg:
                add(f"{name}.{info.name}")

    packages = {"trainclaims"} | {
        ep.value.partition(":")[0].rpartition(".")[0] for ep in dist.entry_points if ep.value.startswith("trainclaims.")
    }
    for name in sorted(packages):
        add(name)
    return files


def trainclaims_wheel(work: Path) -> Path:
    """A wheel of the trainclaims that is running: its modules and its installed metadata (version,
    requirements, console scripts, entry points), however it was installed; what each probe installs."""
    dist = importlib.metadata.distribution("trainclaims")
    version = dist.version
    name = f"trainclaims-{version}"
    info = f"{name}.dist-info"
    modules = _package_files(dist)
    entries: dict[str, bytes] = {arcname: path.read_bytes() for arcname, path in sorted(modules.items())}
    entries[f"{info}/METADATA"] = (
        dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: trainclaims\nVersion: {version}\n"
    ).encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: trainclaims-bisect\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries[f"{info}/entry_points.txt"] = (dist.read_text("entry_points.txt") or "").encode()
    record = io.StringIO()
    writer = csv.writer(record)
    for arcname, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([arcname, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    entries[f"{info}/RECORD"] = record.getvalue().encode()
    path = work / f"{name}-py3-none-any.whl"
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for arcname, data in entries.items():
            wheel.writestr(arcname, data)
    return path


# --------------------------------------------------------------------------- environments


def _installer() -> str:
    """``uv`` where it is on PATH (an environment in seconds from its cache), else ``pip``."""
    return "uv" if shutil.which("uv") else "pip"


def _torch_pins(torch: str) -> list[str]:
    """torch (a requirement such as ``torch===2.4.1``) with the torchvision and numpy that fit it."""
    # === : the release itself, not a local build beside it on the index (2.13.0+cpu, whose torchvision
    # then lacks its operators: "operator torchvision::nms does not exist")
    found = re.search(r"={2,3}\s*([\w.]+)", torch)
    old = found is not None and Version(found.group(1)) < Version("2.3")
    return [torch.replace("==", "===", 1) if "===" not in torch else torch, "torchvision"] + (
        ["numpy<2"] if old else ["numpy"]
    )


def requirements(package: str, version: Version, pins: list[str] = ()) -> list[str]:
    """What a probe's environment is made with: the package at that release and the ``--with`` pins
    (torch among them brings its torchvision and numpy)."""
    pins = list(pins)
    torch = [p for p in pins if re.match(r"torch\b(?!vision)", p)]
    rest = [p for p in pins if p not in torch]
    if package == "torch":
        return _torch_pins(f"torch=={version}") + rest
    return [f"{package}==={version}", *(_torch_pins(torch[0]) if torch else []), *rest]


BASE_ROOTS = ("torch", "torchvision", "numpy", *TOOLS)  # what a probe moving another package shares


def _closure(roots: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The installed distributions of ``roots`` and everything they require (not their extras)."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def base_view(cache: Path) -> Path:
    """A folder of links to this environment's torch, what torch requires and the test tools, and
    nothing else: what a probe moving another package sees of this environment (a ``.pth`` line
    after its own packages). Only these: an optional package this environment has beside them
    (``kernels`` beside transformers 5) would be imported by an older release of the moved one and
    need newer versions of what the probe installed. Made once per set of versions, kept."""
    dists = _closure(BASE_ROOTS)
    key = hashlib.sha256("\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)).encode())
    view = cache / f"base-view-{key.hexdigest()[:10]}"
    if view.is_dir():
        return view
    partial = view.with_name(view.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for dist in dists:
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            target = Path(dist.locate_file(top))
            link = partial / top
            if target.exists() and not link.exists():
                link.symlink_to(target)
    partial.rename(view)
    return view


def _commands(
    env: Path, package: str, version: Version, wheel: Path, make: bool, pins: list[str], view: Path | None = None
) -> list[list[Any]]:
    python = env / "bin" / "python"
    if _installer() == "uv":
        install = ["uv", "pip", "install", "--quiet", "--python", python]
        steps = [["uv", "venv", "--quiet", "--python", sys.executable, env]] if make else []
    else:
        install = [python, "-m", "pip", "install", "-q"]
        steps = [[sys.executable, "-m", "venv", env]] if make else []
    if make and package != "torch":  # this environment's torch and tools, seen through a .pth file
        text = str(view)
        steps.append(
            [
                python,
                "-c",
                f"import site, pathlib; pathlib.Path(site.getsitepackages()[0], "
                f"'_trainclaims_bisect_base.pth').write_text({text!r})",
            ]
        )
    if make:
        steps.append([*install, *requirements(package, version, pins)])
        if package == "torch":  # an isolated environment: the test tools at this environment's versions
            steps.append([*install, *tool_pins()])
    return [*steps, [*install, "--no-deps", "--reinstall" if install[0] == "uv" else "--force-reinstall", wheel]]


def environment(
    version: Version, cache: Path, wheel: Path, package: str = "torch", pins: list[str] = ()
) -> tuple[Path | None, str]:
    """(the environment's python, how it was had), or (None, why it could not be)."""
    made_with = "\n".join(requirements(package, version, pins) + (tool_pins() if package == "torch" else []))
    suffix = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:8] if pins else ""
    env = cache / (f"{package}-{version}" + (f"-with-{suffix}" if suffix else ""))
    python = env / "bin" / "python"
    make = True
    if python.exists():
        probe = subprocess.run(
            [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
            capture_output=True,
            text=True,
        )
        made_for = (env / "tools.txt").read_text() if (env / "tools.txt").exists() else ""
        if probe.returncode == 0 and Version(probe.stdout.strip()).base_version == str(version):
            make = made_for != made_with
        if make:
            shutil.rmtree(env)
    start = time.monotonic()
    view = base_view(cache) if package != "torch" else None
    for cmd in _commands(env, package, version, wheel, make, list(pins), view):
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PIP_CONSTRAINT": ""})
        if done.returncode != 0:
            shutil.rmtree(env, ignore_errors=True)
            if NO_SPACE in done.stderr:  # this machine's problem, not the release's: every later install fails too
                raise SystemExit(
                    f"trainclaims-bisect: no space left on the device under {cache} while installing {package} "
                    f"{version} (an environment with its own torch takes about 5 GB): free some, or pass --cache "
                    "on a larger disk"
                )
            lines = [x for x in done.stderr.splitlines() if x.startswith(("ERROR", "error", "  ×"))]
            lines = lines or done.stderr.strip().splitlines()
            return None, (lines[0] if lines else f"{cmd[0]} exited {done.returncode}")[:300]
    (env / "tools.txt").write_text(made_with)
    how = "cached" if not make else f"installed with {_installer()} in {time.monotonic() - start:.0f} s"
    return python, how


def conclusion(
    releases: list[Version], before: Version, first: Version, skipped: dict[Version, str], package: str = "torch"
) -> str:
    """The bisection's answer: ``first`` where every release between ``before`` (which behaves as
    the good one) and it ran; else the range, naming the releases in it that could not be run."""
    between = [v for v in releases if before < v < first and v in skipped]
    if not between:
        return f"first release that differs: {package} {first} ({package} {before} behaves as the good release)"
    names = ", ".join(str(v) for v in between)
    return (
        f"the change lies after {package} {before} (behaves as the good release) and at or before {package} {first} "
        f"(differs): {names} in between could not be run ({skipped[between[0]]})"
    )


# --------------------------------------------------------------------------- running and comparing


def selection(args: list[str]) -> list[str]:
    """pytest arguments for the selection: claim ids as ``--claim=...``, node ids as given."""
    claims = [a for a in args if re.fullmatch(r"[A-Z][A-Z0-9]*-\d+", a)]
    rest = [a for a in args if a not in claims]
    return rest + ([f"--claim={','.join(claims)}"] if claims else [])


def selection_problem(select: list[str], project: Path) -> str | None:
    """Why the selection cannot run in this project, found with the running environment before any
    environment is made (an unknown claim id, a test path that is not there, nothing collected), or
    None: ``pytest --collect-only`` of it, which the plugin stops in one line on a bad claim id."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *select, "--collect-only", "-q", "-p", "no:cacheprovider", "--no-report"],
        capture_output=True,
        text=True,
        cwd=project,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    if done.returncode == 0:
        return None
    lines = [x.strip() for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    told = next((x for x in lines if x.startswith(("ERROR", "error:"))), None)
    if done.returncode == 5:
        return "no test is selected by it here"
    return (told or (lines[-1] if lines else f"pytest exited {done.returncode}")).removeprefix("ERROR: ")


def run(
    python: Path, version: Version, select: list[str], work: Path, project: Path, package: str = "torch"
) -> dict[str, Any]:
    """The selection on this environment, in the project's folder: each test's outcome, verdict and
    evidence, from its claims.json."""
    reports = work / (f"reports-{version}" if package == "torch" else f"reports-{package}-{version}")
    done = subprocess.run(
        [python, "-m", "pytest", *select, "-p", "no:cacheprovider", "-q", f"--report-dir={reports}", "--device=cpu"],
        capture_output=True,
        text=True,
        cwd=project,
        # PYTHONSAFEPATH: the project's folder is not put first on sys.path, so that a checkout of
        # trainclaims itself imports the trainclaims this probe installed, not its source folder
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {"PYTHONSAFEPATH": "1"},
    )
    tally = next((line for line in reversed(done.stdout.splitlines()) if " in " in line and "=" not in line), "")
    tests = {}
    path = reports / "claims.json"
    if path.exists():
        for claim in json.loads(path.read_text())["claims"]:
            for t in claim["tests"]:
                if t["outcome"] != "deselected":
                    tests[t["test"]] = {k: t.get(k) for k in ("outcome", "verdict")} | {
                        "evidence": t.get("evidence") or {}
                    }
    if done.returncode not in (0, 1) or " error" in tally or not tests:  # it did not run: nothing to compare
        lines = (done.stdout + done.stderr).splitlines()
        why = next((x for x in reversed(lines) if re.search(r"\w*(Error|Exception)\b", x)), tally)
        return {"ran": False, "why": (why.strip() or f"pytest exited {done.returncode}")[:300]}
    return {"ran": True, "tally": tally.strip(), "tests": tests, "reports": reports}


def same(a: Any, b: Any) -> bool:
    """The same evidence: equal structure, numbers within :data:`REL_TOL` / :data:`ABS_TOL`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        return both_nan or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for test in sorted(set(a["tests"]) | set(b["tests"])):
        x, y = a["tests"].get(test), b["tests"].get(test)
        if x is None or y is None:
            out.append(f"{test}: {'only in the later run' if x is None else 'not in the later run'}")
        elif (x["outcome"], x["verdict"]) != (y["outcome"], y["verdict"]):
            out.append(
                f"{test}: {x['outcome']} ({x['verdict'] or 'holds'}) -> {y['outcome']} ({y['verdict'] or 'holds'})"
            )
        elif not same(x["evidence"], y["evidence"]):
            keys = sorted(
                k
                for k in set(x["evidence"]) | set(y["evidence"])
                if not same(x["evidence"].get(k), y["evidence"].get(k))
            )
            shown = ", ".join(f"{k}: {x['evidence'].get(k)!r} -> {y['evidence'].get(k)!r}" for k in keys[:4])
            out.append(f"{test}: evidence {shown}")
    return out


def package_arguments(p: argparse.ArgumentParser) -> None:
    """``--package`` and ``--with``, as trainclaims-bisect and trainclaims-releases take them."""
    p.add_argument(
        "--package",
        default="torch",
        help="the package whose releases are run (transformers, accelerate, ...). Default: %(default)s",
    )
    p.add_argument(
        "--with",
        dest="pins",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="a requirement every environment installs too (torch==2.4.1 for an old transformers); repeatable",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainclaims-bisect", description=described(__doc__))
    p.add_argument("select", nargs="+", help="claim ids (S001-02) and/or pytest node ids")
    package_arguments(p)
    p.add_argument("--good", required=True, type=Version, help="a release where the selection behaves as expected")
    p.add_argument("--bad", required=True, type=Version, help="a later release where it does not")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="environments per release. Default: %(default)s")
    p.add_argument(
        "--out", type=Path, default=Path("bisect"), help="reports and the compare report. Default: %(default)s"
    )
    args = p.parse_args(argv)
    if args.good >= args.bad:
        print("trainclaims-bisect: --good must be an older release than --bad", file=sys.stderr)
        return 2
    project = Path.cwd()
    select = selection(args.select)
    problem = selection_problem(select, project)  # before the index is asked or any environment made (~5 GB each)
    if problem:
        print(f"trainclaims-bisect: the selection {' '.join(args.select)}: {problem}", file=sys.stderr)
        return 2
    package = args.package.lower().replace("_", "-")
    releases = [v for v in index_versions(package) if args.good <= v <= args.bad]
    for end in (args.good, args.bad):
        if end not in releases:
            print(f"trainclaims-bisect: {package} {end} is not on the package index", file=sys.stderr)
            return 2
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    wheel = trainclaims_wheel(work)
    say(
        f"{len(releases)} {package} releases from {args.good} to {args.bad}"
        + (f" (with {', '.join(args.pins)})" if args.pins else "")
        + f"; selection: {' '.join(select)}; project {project}; environments with {_installer()}"
    )
    runs: dict[Version, dict[str, Any]] = {}
    skipped: dict[Version, str] = {}  # releases that could not be installed or run here, and why
    probes = [0]
    begun = time.monotonic()

    def probe(v: Version) -> dict[str, Any] | None:
        probes[0] += 1
        start = time.monotonic()
        python, how = environment(v, args.cache, wheel, package, args.pins)
        if python is None:
            say(f"[probe {probes[0]}] {package} {v}: skipped, cannot be installed: {how}")
            skipped[v] = f"cannot be installed: {how}"
            return None
        result = run(python, v, select, work, project, package)
        if not result["ran"]:
            say(f"[probe {probes[0]}] {package} {v}: {how}; skipped, the selection does not run there: {result['why']}")
            skipped[v] = f"the selection does not run there: {result['why']}"
            return None
        same_as_good = (
            ""
            if v == args.good
            else (" (as the good release)" if not differences(runs[args.good], result) else " (differs)")
        )
        took = time.monotonic() - start
        say(f"[probe {probes[0]}] {package} {v}: {how}; ran: {result['tally']}{same_as_good}; {took:.0f} s")
        runs[v] = result
        return result

    if probe(args.good) is None or probe(args.bad) is None:
        say("the good or the bad release cannot be installed or run here: nothing to bisect")
        return 2
    if not differences(runs[args.good], runs[args.bad]):
        say(
            f"no release differs: {package} {args.good} and {args.bad} give the same outcomes, verdicts and evidence "
            f"({runs[args.bad]['tally']}; {time.monotonic() - begun:.0f} s)"
        )
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
    answer = conclusion(releases, before, first, skipped, package)
    say(f"{answer} ({probes[0]} probes, {time.monotonic() - begun:.0f} s)")
    for line in differences(runs[before], runs[first]):
        say(f"  {line}")
    compare = work / f"compare-{package}-{before}-{first}"
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
        cwd=project,
    )
    if (compare / "compare.md").exists():
        say(f"compare report: {compare / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
