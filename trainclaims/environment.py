"""What a run ran on: versions, machine, devices, numeric settings, commit, date. Evidence that
travels with every result (claims.json, benchmarks.json, a launched job's ranks.json), enough to
tell runs apart (trainclaims-compare, the history)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Environment variables that change what a float32 run computes on CUDA without any call in the
# process: cuBLAS's workspace (determinism), and the two TF32 overrides (NVIDIA's for every library
# on the machine, PyTorch's for cuBLAS), which win over the settings the numerics guard pins.
NUMERIC_ENVIRONMENT = ("CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")


def _version(distribution: str) -> str:
    """An installed distribution's version, or "not installed" (a GPU image may lack torchvision:
    the run's report is still written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def git_commit(cwd: Path) -> str:
    """The checkout's commit (12 hex digits, ``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def numeric_settings() -> dict[str, Any]:
    """The process's numeric settings that change what a float32 run computes (outside the tests:
    each test runs with its mode's settings pinned, trainclaims.numerics), each once, and the
    environment variables that override them."""
    import torch

    from trainclaims.numerics import precision_settings

    settings = precision_settings() | {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    return settings | {name: os.environ.get(name) for name in NUMERIC_ENVIRONMENT}


def environment(devices: Iterable[str], rootdir: Path, **extra: Any) -> dict[str, Any]:
    """Evidence that travels with every result: versions, machine, devices, numeric settings,
    commit, date."""
    import torch

    from trainclaims.devices import cpu_name, device_name, unavailable_reason

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(rootdir),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "cuda": torch.version.cuda,
        "machine": platform.machine(),
        "processor": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "numerics": numeric_settings(),
        "devices": {
            d: (unavailable_reason(d) and f"absent: {unavailable_reason(d)}") or device_name(d) for d in devices
        },
        "mutant": _mutant(),
        **extra,
    }


def _mutant() -> str | None:
    """The mutant applied in this process (the mutation tier: PyTorch altered on purpose), or None."""
    from trainclaims.mutants import active

    found = active()
    return found.name if found else None
