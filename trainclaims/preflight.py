"""Checks of a run's input that can be made before the first test: each problem is one line that
names the option, the value and the fix (the plugin stops the run with all of them, exit code 4)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DATA_ENV = "TRAINCLAIMS_DATA"  # the data root where --data-root is not given


def resolve_root(option: str | None) -> Path:
    """The data root: ``--data-root``, else ``$TRAINCLAIMS_DATA``, else ``./data`` (a family's data
    sets live under it)."""
    return Path(option or os.environ.get(DATA_ENV) or "data").expanduser().resolve()


def report_dir_problem(value: str, invocation_dir: Path) -> tuple[Path, Path | None, str | None]:
    """``--report-dir``: it must be a folder that can be made and written to (checked by making it
    and writing a file in it). Returns the folder, the topmost folder this check made (None where
    it existed: an unused one is removed at the end), and the problem, if any."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else invocation_dir / path
    if not value.strip():
        return path, None, "--report-dir=: no folder given; give one (default: reports) or pass --no-report"
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    made = None if existing == path else next((p for p in [path, *path.parents] if p.parent == existing), None)
    try:
        if existing is not None and not existing.is_dir():
            raise NotADirectoryError(0, f"{existing} is a file")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        why = err.strerror or str(err)
        return (
            path,
            None,
            f"--report-dir={value}: cannot be made or written to ({why}); give a writable folder or --no-report",
        )
    return path, made, None


def data_root_problem(option: str | None) -> str | None:
    """A data root given explicitly (``--data-root`` or ``$TRAINCLAIMS_DATA``) must exist: a typo
    would otherwise unpack the data sets into a new folder. The default ``./data`` is made as needed."""
    given, name = (option, "--data-root") if option else (os.environ.get(DATA_ENV), DATA_ENV)
    if not given:
        return None
    root = Path(given).expanduser()
    if root.is_dir():
        return None
    what = "is a file" if root.exists() else "does not exist"
    return f"{name}={given}: {what}; give an existing folder (mkdir -p {given}) or leave it out for ./data"
