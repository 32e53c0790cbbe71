"""The history store: a folder to which every run adds what it measured, one file per run.

Layout::

    HISTORY/
      trainclaims-history.json   the marker: {"format": "trainclaims-history", "schema": 1, ...}
      runs/<date>-<commit>-<random>.json   one run each (claims, benchmarks, environment)

Why so: a run's file is written whole under a name no other run can pick (its date, commit and
a random part) through a temporary file and a rename in the same folder
(:func:`trainclaims.files.atomic_write`), so two runs recording at once (two CI jobs on one shared
folder, two xdist sessions) both land, and a reader never sees half a run. Nothing is rewritten
or removed: the history only grows. The marker says that the folder is a history, so that a typo
in ``--history`` does not scatter run files into a folder of something else; it is created with
its content in one step (a hard link of a whole temporary file), so two first writers agree on it.

Versions. A run file carries ``"schema"``: this module writes :data:`RUN_SCHEMA` (2) and reads any
version. Version 1 is the minimal form, ``{"schema": 1, "environment", "claims", "benchmarks"}``
(what a hand-made or older tool's file has): the fields added since (``name``, ``label``,
``recorded``, ``tiers``, ``not_measured``, ``claims_schema``) are read with defaults (the name from
the file name, the tiers from the tests' ``tier``). A newer version's unknown fields are ignored, and
the fields it shares with this one are read as usual (a newer writer adds fields, it does not
change the meaning of old ones; a change that did would use another marker file). The marker's own
``schema`` works the same way.

Claims are kept as claims.json has them (each claim with its verdict, per-mode verdicts, tests,
outcomes and evidence numbers) and benchmarks as benchmarks.json has them (with every round): the
file keeps what a newer claims.json adds. They are read back through the typed results,
``trainclaims.results.ClaimResult`` and ``trainclaims.benchgate.BenchRow``, as the gates read them.

A run's *status* says whether it measured what it meant to: *complete*, *interrupted* (the session
stopped before some of its tests: Ctrl-C, ``-x``, a crashed worker) or *empty* (no claim measured,
no benchmark). Only a complete run is ever taken as a comparison's base by default.

The same report is added once: a run's file is named after its date, commit and a digest of what
it holds (claims, benchmarks, environment), and a second ``add`` of that report is refused. A run
file that cannot be read (truncated, another tool's, a stray ``notes.json``) does not stop the
others: :func:`load` sets it aside with why (:attr:`History.skipped`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainclaims.benchgate import BenchRow, rows_from_json
from trainclaims.results import ClaimResult
from trainclaims.tiers import TIERS
from trainclaims.verdicts import NOT_RUN, Verdict

MARKER = "trainclaims-history.json"
RUNS = "runs"
FORMAT = "trainclaims-history"
RUN_FORMAT = "trainclaims-history-run"
MARKER_SCHEMA = 1  # the layout version this module writes
RUN_SCHEMA = 2  # the run file version this module writes (1: the minimal form, see the docstring)
COMPLETE, INTERRUPTED, EMPTY = "complete", "interrupted", "empty"  # a run's status
LABEL_PREFIX = "label:"  # --base label:main: the newest complete run of that label


@dataclass
class Run:
    """One recorded run: its environment, claims (claims.json's, typed; None where the run wrote no
    claims.json) and benchmark rows (benchmarks.json's, typed; or None)."""

    name: str
    path: Path
    schema: int
    environment: dict[str, Any]
    claims: list[ClaimResult] | None = None
    benchmarks: list[BenchRow] | None = None
    not_measured: list[dict[str, Any]] = field(default_factory=list)
    label: str | None = None
    recorded: str = ""  # when it was added to the history (ISO 8601)
    tiers: list[str] = field(default_factory=list)
    claims_schema: int | None = None
    status: str = COMPLETE  # complete / interrupted / empty (the module docstring)
    status_why: str = ""

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def date(self) -> str:
        """When the run ran (its environment's date), else when it was recorded."""
        return str(self.environment.get("date") or self.recorded or "")

    @property
    def commit(self) -> str:
        return str(self.environment.get("commit") or "?")

    @property
    def torch(self) -> str:
        return str(self.environment.get("torch") or "?")

    @property
    def torch_release(self) -> str:
        """The torch release without its local build tag: ``2.14.1+cu130`` -> ``2.14.1``."""
        return self.torch.split("+")[0]

    @property
    def cuda(self) -> str:
        return str(self.environment.get("cuda"))

    @property
    def machine(self) -> str:
        """The CPU (else the platform): what tells two machines apart in a history."""
        env = self.environment
        return str(env.get("processor") or env.get("machine") or env.get("platform") or "?")

    @property
    def devices(self) -> dict[str, str]:
        """The devices present in the run: name -> model (``absent: ...`` ones left out)."""
        devices = self.environment.get("devices") or {}
        return {d: str(n) for d, n in devices.items() if not str(n).startswith("absent")}

    @property
    def modes(self) -> list[str]:
        """The numerics modes the run measured (ieee for runs from before ``--numerics``)."""
        return [str(m) for m in self.environment.get("numerics_modes") or ["ieee"]]

    @property
    def title(self) -> str:
        """A short name for a column: the label, else commit and torch release."""
        return self.label or f"{self.commit[:10]} torch {self.torch_release}"

    @property
    def failing(self) -> list[ClaimResult]:
        """The claims that fail in this run."""
        return [c for c in self.claims or () if c.verdict == Verdict.FAILS]


@dataclass
class History:
    """The runs of a history folder, oldest first (by date, then name), and the files under
    ``runs/`` that could not be read as runs (path, why)."""

    folder: Path
    runs: list[Run]
    schema: int = MARKER_SCHEMA
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def find(self, ref: str | int | None, default: int = -1) -> int:
        """The index of the run ``ref`` names: a run's name (or its start, unique), ``label:X`` (the
        newest complete run labelled X; a bare X where nothing else matches), a commit (its start,
        at least 4 characters: its newest run), or an index (``0`` the oldest, ``-1`` the newest,
        within the history's runs); None: ``default``. ValueError (one line) for anything else."""
        if not self.runs:
            raise ValueError(f"history {self.folder} has no runs yet")
        if ref is None:
            ref = default
        text = str(ref)
        if text.startswith(LABEL_PREFIX):
            return self._labelled(text.removeprefix(LABEL_PREFIX))
        exact = [i for i, r in enumerate(self.runs) if r.name == text]
        if exact:
            return exact[0]
        n = len(self.runs)
        commits = [i for i, r in enumerate(self.runs) if len(text) >= 4 and r.commit.startswith(text)]
        if re.fullmatch(r"-?\d{1,9}", text) and -n <= int(text) < n and not commits:
            return int(text) % n  # all digits within the runs: an index, unless a commit begins so
        named = [i for i, r in enumerate(self.runs) if r.name.startswith(text)]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ValueError(f"run {text!r} names {len(named)} runs: give more of the name")
        if commits:
            return commits[-1]
        if any(r.label == text for r in self.runs):
            return self._labelled(text)
        hint = f"an index from -{n} to {n - 1}" if re.fullmatch(r"-?\d+", text) else "a run's name, a commit"
        raise ValueError(f"no run {text!r} in history {self.folder} ({hint}, or label:NAME; `runs` lists them)")

    def _labelled(self, label: str) -> int:
        mine = [i for i, r in enumerate(self.runs) if r.label == label]
        if not mine:
            labels = sorted({r.label for r in self.runs if r.label})
            known = ", ".join(labels[:8]) or "none"
            raise ValueError(f"no run labelled {label!r} in history {self.folder} (labels: {known})")
        complete = [i for i in mine if self.runs[i].complete]
        if not complete:
            last = self.runs[mine[-1]]
            raise ValueError(
                f"every run labelled {label!r} is {last.status} ({last.status_why}); give a run by its name to use it"
            )
        return complete[-1]

    def default_base(self, head: int) -> int:
        """The base a comparison takes when none is given: the newest complete run before ``head``
        that measured what the head did (claims or benchmarks). ValueError (one line) where there is none."""
        want_claims = self.runs[head].claims is not None
        for i in range(head - 1, -1, -1):
            run = self.runs[i]
            if run.complete and ((run.claims is not None) if want_claims else run.benchmarks is not None):
                return i
        passed = [f"{r.name} ({r.status})" for r in self.runs[:head] if not r.complete]
        why = f"; set aside: {', '.join(passed[:3])}" if passed else ""
        raise ValueError(
            f"no complete run before run {head} ({self.runs[head].name}) to compare with{why}: give --base RUN"
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stamp(date: str) -> str:
    """A date as the sortable start of a run file's name (UTC, seconds)."""
    try:
        when = datetime.fromisoformat(date.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text)[:40] or "none"


def _typed_claims(claims: Any, where: str) -> list[ClaimResult]:
    """A claims.json's claims, typed (ValueError, one line, for anything that is not one)."""
    rows = claims.get("claims") if isinstance(claims, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{where}: not a trainclaims claims.json (no 'claims' list of id/verdict)")
    return [ClaimResult.from_json(c, where) for c in rows]


def tiers_of(claims: list[ClaimResult] | None) -> list[str]:
    """The data tiers a run measured: those of its tests that passed (each test's ``tier``, in
    claims.json from schema 3 on; none for older files)."""
    found = {t.tier for c in claims or () for t in c.tests if t.outcome == "passed" and t.tier}
    return sorted(found, key=lambda tier: (TIERS.index(tier) if tier in TIERS else len(TIERS), tier))


def run_status(claims: list[ClaimResult] | None, benchmarks: list[BenchRow] | None) -> tuple[str, str]:
    """A run's status from what it holds (the module docstring) and why."""
    tests = [t for c in claims or () for t in c.tests]
    stopped = sorted({t.test for t in tests if t.outcome == NOT_RUN})
    if stopped:
        return INTERRUPTED, f"the session stopped before {len(stopped)} of its {len(set(t.test for t in tests))} tests"
    measured = [c for c in claims or () if c.verdict != Verdict.NOT_MEASURED]
    if not measured and not benchmarks:
        return EMPTY, "no claim measured and no benchmark"
    return COMPLETE, ""


def digest(claims: Any, benchmarks: Any, session: str | None = None) -> str:
    """A digest of a report's content (claims.json and benchmarks.json as parsed, and the session
    that recorded them where one did): the same report, the same digest."""
    text = json.dumps({"claims": claims, "benchmarks": benchmarks, "session": session}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _marker_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a history (None: it is one)."""
    if not folder.exists():
        return f"history {folder} does not exist"
    if not folder.is_dir():
        return f"history {folder} is a file, not a history folder"
    marker = folder / MARKER
    if not marker.is_file():
        return (
            f"{folder} is not a trainclaims history (no {MARKER}); give a new or empty folder to start one "
            "(python -m trainclaims.history add FOLDER REPORT_DIR)"
        )
    try:
        data = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{marker} cannot be read as a history marker ({type(err).__name__}: {str(err)[:80]})"
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("schema"), int):
        return f"{marker} is not a trainclaims history marker (no format {FORMAT!r} with a schema)"
    return None


def _only_temporaries(folder: Path) -> bool:
    """Empty, but for another first writer's temporary marker."""
    return all(p.name.startswith(f".{MARKER}.") for p in folder.iterdir())


def _create_exclusively(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)


def check_folder(folder: str | Path) -> str | None:
    """Why ``folder`` cannot take runs (None: it can: a history, or a folder that does not exist or
    is empty, which the first run makes one, where it can be made and written to). For checking
    ``--history`` before any test runs: what it makes to try (the folder, a file in it) it removes."""
    folder = Path(folder)
    if str(folder).strip() == "":
        return "no folder given"
    if folder.exists() and not (folder.is_dir() and _only_temporaries(folder)):
        problem = _marker_problem(folder)
        return problem or _writable(folder / RUNS if (folder / RUNS).is_dir() else folder)
    return _writable(folder)


def _writable(folder: Path) -> str | None:
    """Why a file cannot be written in ``folder`` (made to try, and removed again where it was new)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"cannot be made: {existing} is a file"
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"cannot be made or written to ({err.strerror or err}); give a writable folder"
    finally:
        for p in made:  # the innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
    return None


def ensure_history(folder: Path) -> None:
    """Make ``folder`` a history where it does not exist or is empty; ValueError (one line) where it
    is something else (a file, a folder with other things and no marker)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"history {folder} is a file, not a history folder")
    if not (folder / MARKER).exists():
        # a first writer's marker may appear between the two looks: look at the marker again
        if folder.exists() and not _only_temporaries(folder) and not (folder / MARKER).exists():
            raise ValueError(_marker_problem(folder) or f"{folder} is not a trainclaims history")
        folder.mkdir(parents=True, exist_ok=True)
        marker = {
            "format": FORMAT,
            "schema": MARKER_SCHEMA,
            "created": _now(),
            "about": "a trainclaims history: one file per run under runs/ (trainclaims/history/store.py)",
        }
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MARKER}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(marker, indent=2) + "\n")
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, folder / MARKER)  # whole or absent; fails where another writer made it first
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: create it exclusively instead
                _create_exclusively(folder / MARKER, json.dumps(marker, indent=2) + "\n")
        finally:
            Path(tmp).unlink(missing_ok=True)
    problem = _marker_problem(folder)
    if problem:
        raise ValueError(problem)
    (folder / RUNS).mkdir(exist_ok=True)


def record_run(
    folder: str | Path,
    claims: dict[str, Any] | None,
    benchmarks: dict[str, Any] | None,
    *,
    label: str | None = None,
    interrupted: str | None = None,
    session: str | None = None,
) -> Path:
    """Add a run to the history at ``folder`` (made a history where it does not exist or is empty)
    from the parsed ``claims.json`` and ``benchmarks.json`` of its report folder (either may be
    None, not both); the path of the run's file. ``interrupted``: why the session that wrote them
    was cut short, where it was (its status is then *interrupted*); ``session``: the id of the
    pytest session that recorded them (two sessions are two runs, even with the same reports; a
    report added by hand has none, and is added once). ValueError (one line) for input
    that is not these reports, the same report recorded before, or a folder that is not a history;
    nothing is written then."""
    if claims is None and benchmarks is None:
        raise ValueError("nothing to record: neither claims nor benchmarks")
    typed = _typed_claims(claims, "claims") if claims is not None else None
    rows = rows_from_json(benchmarks, "benchmarks") if benchmarks is not None else None
    if label is not None and (not isinstance(label, str) or "\n" in label or not label.strip()):
        raise ValueError(f"label {label!r}: one line of text")
    env_claims = claims.get("environment") if claims and isinstance(claims.get("environment"), dict) else {}
    env_bench = benchmarks.get("environment") if benchmarks and isinstance(benchmarks.get("environment"), dict) else {}
    environment = {**env_bench, **env_claims}  # claims.json's where both have a key: the run's own
    recorded = _now()
    date = str(environment.get("date") or recorded)
    commit = str(environment.get("commit") or "nocommit")
    status, why = (INTERRUPTED, interrupted) if interrupted else run_status(typed, rows)
    same = digest(claims, benchmarks, session)
    name = f"{_stamp(date)}-{_safe(commit)[:12]}-{same[:12]}"
    claim_rows = claims["claims"] if claims is not None else None
    data = {
        "format": RUN_FORMAT,
        "schema": RUN_SCHEMA,
        "name": name,
        "label": label,
        "recorded": recorded,
        "status": status,
        "status_why": why,
        "digest": same,
        "environment": environment,
        "benchmark_environment": env_bench if env_bench and env_bench != env_claims else None,
        "tiers": tiers_of(typed),
        "claims_schema": claims.get("schema", 1) if claims is not None else None,
        "claims": claim_rows,
        "benchmarks": benchmarks["benchmarks"] if benchmarks is not None else None,
        "not_measured": (benchmarks or {}).get("not_measured") or [],
    }
    try:
        text = json.dumps(data, indent=1, default=str) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"the run cannot be written as JSON ({err})") from None
    folder = Path(folder)
    ensure_history(folder)
    path = folder / RUNS / f"{name}.json"
    if path.exists():
        raise ValueError(f"this report is already in history {folder} as run {name}: not added again")
    _write_new(path, text)
    return path


def _write_new(path: Path, text: str) -> None:
    """Write ``path`` whole, failing (ValueError) where it appeared meanwhile: a temporary file
    hard-linked to its name (a rename where the file system has no hard links)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ValueError(f"this report is already in the history as run {path.stem}: not added again") from None
        except OSError:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_run(path: Path) -> Run:
    """One run file, of any schema version (the module docstring), its claims and benchmarks typed;
    ValueError (one line) where it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot be read ({type(err).__name__}: {str(err)[:80]})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("schema"), int)
        or data.get("format", RUN_FORMAT) != RUN_FORMAT
    ):
        raise ValueError("not a trainclaims history run (no schema number)")
    env = data.get("environment")
    if not isinstance(env, dict):
        raise ValueError("no 'environment' object")
    claims = data.get("claims")
    if claims is not None:
        if not isinstance(claims, list):
            raise ValueError("'claims' is not a list of claims")
        claims = _typed_claims({"claims": claims}, "its claims")
    benchmarks = data.get("benchmarks")
    if benchmarks is not None:
        if not isinstance(benchmarks, list):
            raise ValueError("'benchmarks' is not a list of rows")
        benchmarks = rows_from_json({"benchmarks": benchmarks}, "its benchmarks")
    tiers = data.get("tiers")
    status, why = run_status(claims, benchmarks)
    if data.get("status") in (COMPLETE, INTERRUPTED, EMPTY):
        status, why = data["status"], str(data.get("status_why") or why)
    return Run(
        name=str(data.get("name") or path.stem),
        path=path,
        schema=data["schema"],
        environment=env,
        claims=claims,
        benchmarks=benchmarks,
        not_measured=[r for r in data.get("not_measured") or [] if isinstance(r, dict)],
        label=data.get("label") if isinstance(data.get("label"), str) else None,
        recorded=str(data.get("recorded") or ""),
        tiers=[str(t) for t in tiers] if isinstance(tiers, list) else tiers_of(claims),
        claims_schema=data.get("claims_schema") if isinstance(data.get("claims_schema"), int) else None,
        status=status,
        status_why=why,
    )


def _sort_key(run: Run) -> tuple[datetime, str]:
    try:
        when = datetime.fromisoformat(run.date.replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    except ValueError:
        when = datetime.min.replace(tzinfo=timezone.utc)
    return when, run.name


def load(folder: str | Path) -> History:
    """The history at ``folder``: its runs in order of their date, then name, and the files under
    ``runs/`` that are not runs (:attr:`History.skipped`, each with why). ValueError (one line)
    where the folder is not a history."""
    folder = Path(folder)
    problem = _marker_problem(folder)
    if problem:
        if folder.is_dir() and not any(folder.iterdir()):
            problem = f"history {folder} is empty: no run recorded yet (pytest --history={folder}, or add a report)"
        raise ValueError(problem)
    schema = json.loads((folder / MARKER).read_text())["schema"]
    runs, skipped = [], []
    files = sorted(p for p in (folder / RUNS).glob("*") if not p.name.startswith(".") and p.is_file())
    for path in files:
        try:
            runs.append(read_run(path))
        except ValueError as err:
            skipped.append((path, str(err)))
    return History(folder, sorted(runs, key=_sort_key), schema, skipped)


def read_report_dir(report_dir: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The parsed claims.json and benchmarks.json of a ``--report-dir`` (None for each one that is
    not there); ValueError (one line) where neither is, or one is not JSON."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise ValueError(
            f"report folder {report_dir} does not exist" if not report_dir.exists() else f"{report_dir} is not a folder"
        )
    parsed: list[dict[str, Any] | None] = []
    for name in ("claims.json", "benchmarks.json"):
        path = report_dir / name
        if not path.exists():
            parsed.append(None)
            continue
        try:
            parsed.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} cannot be read as JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if parsed == [None, None]:
        raise ValueError(f"{report_dir} has neither claims.json nor benchmarks.json (a --report-dir of a run?)")
    return parsed[0], parsed[1]
