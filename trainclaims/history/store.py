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
outcomes and evidence numbers) and benchmarks as benchmarks.json has them (with every round), as
plain JSON: this module needs nothing of ``trainclaims.results`` and keeps what a newer
claims.json adds.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainclaims.files import atomic_write
from trainclaims.tiers import TIERS

MARKER = "trainclaims-history.json"
RUNS = "runs"
FORMAT = "trainclaims-history"
RUN_FORMAT = "trainclaims-history-run"
MARKER_SCHEMA = 1  # the layout version this module writes
RUN_SCHEMA = 2  # the run file version this module writes (1: the minimal form, see the docstring)


@dataclass
class Run:
    """One recorded run: its environment, claims (claims.json's ``claims`` list, or None where the
    run wrote no claims.json) and benchmark rows (benchmarks.json's, or None)."""

    name: str
    path: Path
    schema: int
    environment: dict[str, Any]
    claims: list[dict[str, Any]] | None = None
    benchmarks: list[dict[str, Any]] | None = None
    not_measured: list[dict[str, Any]] = field(default_factory=list)
    label: str | None = None
    recorded: str = ""  # when it was added to the history (ISO 8601)
    tiers: list[str] = field(default_factory=list)
    claims_schema: int | None = None

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


@dataclass
class History:
    """The runs of a history folder, oldest first (by date, then name)."""

    folder: Path
    runs: list[Run]
    schema: int = MARKER_SCHEMA

    def find(self, ref: str | int | None, default: int = -1) -> int:
        """The index of the run ``ref`` names: a run's name (or its start, unique), a commit (its
        start, at least 4 characters; the newest run of it), or an index (``0`` the oldest,
        ``-1`` the newest); None: ``default``. ValueError (one line) for anything else."""
        if not self.runs:
            raise ValueError(f"history {self.folder} has no runs yet")
        if ref is None:
            ref = default
        text = str(ref)
        exact = [i for i, r in enumerate(self.runs) if r.name == text]
        if exact:
            return exact[0]
        commits = [i for i, r in enumerate(self.runs) if len(text) >= 4 and r.commit.startswith(text)]
        if re.fullmatch(r"-?\d{1,9}", text) and not commits:  # all digits: an index, unless a commit begins so
            i = int(text)
            if not -len(self.runs) <= i < len(self.runs):
                raise ValueError(f"run {i}: the history has {len(self.runs)} runs (0..{len(self.runs) - 1}, or -1..)")
            return i % len(self.runs)
        named = [i for i, r in enumerate(self.runs) if r.name.startswith(text)]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ValueError(f"run {text!r} names {len(named)} runs: give more of the name")
        if commits:
            return commits[-1]
        raise ValueError(f"no run {text!r} in history {self.folder} (a run's name, a commit or an index)")


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


def _check_claims(claims: Any) -> None:
    rows = claims.get("claims") if isinstance(claims, dict) else None
    ok = isinstance(rows, list) and all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in rows)
    if not ok or not all("verdict" in c for c in rows):
        raise ValueError("claims: not a trainclaims claims.json (no 'claims' list of id/verdict)")


def _check_benchmarks(benchmarks: Any) -> None:
    rows = benchmarks.get("benchmarks") if isinstance(benchmarks, dict) else None
    ok = isinstance(rows, list) and all(isinstance(r, dict) and {"fullname", "device"} <= r.keys() for r in rows)
    if not ok:
        raise ValueError("benchmarks: not a trainclaims benchmarks.json (no 'benchmarks' list of fullname/device)")


def tiers_of(claims: list[dict[str, Any]] | None) -> list[str]:
    """The data tiers a run measured: those of its tests that passed (each test's ``tier``, in
    claims.json from schema 3 on; none for older files)."""
    found = {
        t["tier"]
        for c in claims or ()
        for t in c.get("tests") or ()
        if isinstance(t, dict) and t.get("outcome") == "passed" and t.get("tier")
    }
    return sorted(found, key=lambda tier: (TIERS.index(tier) if tier in TIERS else len(TIERS), tier))


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
    is empty, which the first run makes one). Writes nothing: for checking ``--history`` before any
    test runs."""
    folder = Path(folder)
    if not folder.exists() or (folder.is_dir() and _only_temporaries(folder)):
        return None
    return _marker_problem(folder)


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
) -> Path:
    """Add a run to the history at ``folder`` (made a history where it does not exist or is empty)
    from the parsed ``claims.json`` and ``benchmarks.json`` of its report folder (either may be
    None, not both); the path of the run's file. ValueError (one line) for input that is not
    these reports or a folder that is not a history; nothing is written then."""
    if claims is None and benchmarks is None:
        raise ValueError("nothing to record: neither claims nor benchmarks")
    if claims is not None:
        _check_claims(claims)
    if benchmarks is not None:
        _check_benchmarks(benchmarks)
    if label is not None and (not isinstance(label, str) or "\n" in label):
        raise ValueError(f"label {label!r}: one line of text")
    env_claims = claims.get("environment") if claims and isinstance(claims.get("environment"), dict) else {}
    env_bench = benchmarks.get("environment") if benchmarks and isinstance(benchmarks.get("environment"), dict) else {}
    environment = {**env_bench, **env_claims}  # claims.json's where both have a key: the run's own
    recorded = _now()
    date = str(environment.get("date") or recorded)
    commit = str(environment.get("commit") or "nocommit")
    name = f"{_stamp(date)}-{_safe(commit)[:12]}-{uuid.uuid4().hex[:12]}"
    claim_rows = claims["claims"] if claims is not None else None
    data = {
        "format": RUN_FORMAT,
        "schema": RUN_SCHEMA,
        "name": name,
        "label": label,
        "recorded": recorded,
        "environment": environment,
        "benchmark_environment": env_bench if env_bench and env_bench != env_claims else None,
        "tiers": tiers_of(claim_rows),
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
    atomic_write(path, text)
    return path


def read_run(path: Path) -> Run:
    """One run file, of any schema version (the module docstring); ValueError (one line) where it
    is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"run file {path} cannot be read ({type(err).__name__}: {str(err)[:80]})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("schema"), int)
        or data.get("format", RUN_FORMAT) != RUN_FORMAT
    ):
        raise ValueError(f"run file {path} is not a trainclaims history run (no schema number)")
    env = data.get("environment")
    claims, benchmarks = data.get("claims"), data.get("benchmarks")
    if not isinstance(env, dict):
        raise ValueError(f"run file {path}: no 'environment' object")
    if claims is not None and not (isinstance(claims, list) and all(isinstance(c, dict) for c in claims)):
        raise ValueError(f"run file {path}: 'claims' is not a list of claims")
    if benchmarks is not None and not (isinstance(benchmarks, list) and all(isinstance(b, dict) for b in benchmarks)):
        raise ValueError(f"run file {path}: 'benchmarks' is not a list of rows")
    tiers = data.get("tiers")
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
    )


def _sort_key(run: Run) -> tuple[datetime, str]:
    try:
        when = datetime.fromisoformat(run.date.replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    except ValueError:
        when = datetime.min.replace(tzinfo=timezone.utc)
    return when, run.name


def load(folder: str | Path) -> History:
    """The history at ``folder``: its runs in order of their date, then name. ValueError (one line)
    where the folder is not a history or a run file is not one."""
    folder = Path(folder)
    problem = _marker_problem(folder)
    if problem:
        raise ValueError(problem)
    schema = json.loads((folder / MARKER).read_text())["schema"]
    files = sorted(p for p in (folder / RUNS).glob("*.json") if not p.name.startswith("."))
    runs = sorted((read_run(p) for p in files), key=_sort_key)
    return History(folder, runs, schema)


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
