"""PyTorch's behaviours that differ by version, as data: the value expected in each range of torch
versions (``packaging`` specifiers), with the source that says so. A test asserts the value
expected for the installed torch (:meth:`Known.expected`); a value off the table fails with both
values and the range, so an unknown change still fails, and a known one reads as what it is
(:meth:`Known.note`: "known change in torch 2.14 (source)"). PyTorch's own tests keep such facts
the same way (``DecorateInfo(..., active_if=...)`` in its OpInfo database).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version


def base_version(version: str | None = None) -> Version:
    """The release of ``version`` (default: the installed torch's), without its local or dev part:
    ``2.14.1+cu130`` and ``2.15.0.dev20261101`` compare as 2.14.1 and 2.15.0."""
    if version is None:
        import torch

        version = torch.__version__
    return Version(Version(str(version)).base_version)


@dataclass(frozen=True)
class Range:
    spec: str  # a packaging specifier set: ">=2.14", "<2.14"
    value: Any
    source: str

    def holds_for(self, version: Version) -> bool:
        return version in SpecifierSet(self.spec)


@dataclass(frozen=True)
class Known:
    """What ``what`` is, per range of torch versions; the ranges must not overlap."""

    what: str
    ranges: tuple[Range, ...]

    def range_for(self, version: str | None = None) -> Range | None:
        v = base_version(version)
        found = [r for r in self.ranges if r.holds_for(v)]
        if len(found) > 1:
            raise ValueError(f"{self.what}: ranges {[r.spec for r in found]} overlap at torch {v}")
        return found[0] if found else None

    def expected(self, version: str | None = None) -> Any:
        """The value for this torch; a torch outside every range: the newest range's (a release
        newer than the table is expected to keep the last known behaviour)."""
        found = self.range_for(version)
        return (found or self.ranges[-1]).value

    def check(self, got: Any, version: str | None = None) -> str | None:
        """None where ``got`` is the value expected for this torch, else why (both values, the range)."""
        v = base_version(version)
        found = self.range_for(str(v))
        want = self.expected(str(v))
        if got == want:
            return None
        if found:
            where = f"torch {found.spec} ({found.source})"
        else:
            where = f"no range has torch {v}; the newest is {self.ranges[-1].spec}"
        return f"{self.what}: {got!r} on torch {v}, expected {want!r} for {where}: an unknown change"

    def note(self, version: str | None = None) -> str | None:
        """ "known change in torch X (source)" where the running torch is past a change of value."""
        v = base_version(version)
        here = self.range_for(str(v))
        if here is None or all(r.value == here.value for r in self.ranges):
            return None
        lower = [s.version for s in SpecifierSet(here.spec) if s.operator in (">=", ">")]
        if not lower:
            return None
        before = [r for r in self.ranges if r is not here and r.value != here.value]
        was = f", was {before[0].value!r} before" if before else ""
        return f"known change in torch {max(lower, key=Version)}{was} ({here.source})"
