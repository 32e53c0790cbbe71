"""PyTorch's behaviours that differ by version, as data: the value expected in each range of torch
versions (``packaging`` specifiers), with the source that says so. A test asserts the value
expected for the installed torch (:meth:`Known.expected`); a value off the table fails with both
values and the range, so an unknown change still fails, and a known one reads as what it is
(:meth:`Known.note`: "known change in torch 2.14 (source)"). PyTorch's own tests keep such facts
the same way (``DecorateInfo(..., active_if=...)`` in its OpInfo database).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
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


# --------------------------------------------------------------------------- capabilities, deprecations


@dataclass(frozen=True)
class Capability:
    """An op or API that some torch versions lack: ``known`` says per range whether this torch has
    it (True/False), ``probe`` measures it (returns normally where torch has it, raises where
    not), and ``refusal`` matches the error a test meets where it is missing."""

    known: Known
    probe: Callable[[], Any]
    refusal: str = ""  # a regular expression searched in the error's text

    @property
    def name(self) -> str:
        return self.known.what

    def present(self) -> bool:
        """Measured on the installed torch."""
        try:
            self.probe()
        except (RuntimeError, NotImplementedError, AttributeError, TypeError):
            return False
        return True


@dataclass(frozen=True)
class Deprecation:
    """An API the suite meets that some torch versions deprecate: ``known`` says per range whether
    calling it warns (True/False), ``probe`` calls it; the suite's own code uses the replacement."""

    known: Known
    probe: Callable[[], Any]
    category: type[Warning] = FutureWarning

    @property
    def name(self) -> str:
        return self.known.what

    def warns(self) -> bool:
        """Measured on the installed torch: whether the probe raises a ``category`` warning."""
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            self.probe()
        return any(issubclass(w.category, self.category) for w in seen)


def _half_cpu(fn: Callable[..., Any]) -> Callable[[], Any]:
    def probe() -> Any:
        import torch

        return fn(torch, torch.ones(4, 3, dtype=torch.float16))

    return probe


def _ddp_broadcast_buffers() -> None:
    """A one-rank gloo group (a file store: no port to find), DDP with ``broadcast_buffers``."""
    import tempfile

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", store=dist.FileStore(f"{folder}/store", 1), rank=0, world_size=1)
        try:
            DistributedDataParallel(torch.nn.Linear(2, 2), broadcast_buffers=False)
        finally:
            dist.destroy_process_group()


def _since(what: str, version: str, before: str, since: str) -> Known:
    """False before torch ``version``, True from it: a capability torch gained, a warning it added."""
    return Known(what, (Range(f"<{version}", False, before), Range(f">={version}", True, since)))


# Measured on CPU (2 cores) with torch 2.1.2, 2.2.0 (trainclaims-bisect), 2.2.2, 2.3.0, 2.4.0, 2.10.0,
# 2.11.0, 2.12.1, 2.13.0, 2.14.1 and 2.15.0; each entry's first version is the first that had it.
HALF_BATCH_NORM_CPU = Capability(
    _since(
        "float16 batch_norm on CPU",
        "2.2",
        "measured: torch 2.1.2 raises '\"batch_norm\" not implemented for 'Half''",
        "measured from torch 2.2.0 (trainclaims-bisect between 2.1.2 and 2.2.0)",
    ),
    _half_cpu(lambda torch, x: torch.nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), training=True)),
    r"\"batch_norm\" not implemented for 'Half'",
)
HALF_BERNOULLI_CPU = Capability(
    _since(
        "float16 bernoulli_ (Dropout in training) on CPU",
        "2.2",
        "measured: torch 2.1.2 raises '\"bernoulli_scalar_cpu_\" not implemented'",
        "measured from torch 2.2.0 (trainclaims-bisect between 2.1.2 and 2.2.0)",
    ),
    _half_cpu(lambda torch, x: torch.nn.functional.dropout(x, 0.5, training=True)),
    r"\"bernoulli_\w*\" not implemented for 'Half'",
)
AMP_GRAD_SCALER = Capability(
    _since(
        "torch.amp.GradScaler for any device (fp16-autocast training on CPU)",
        "2.3",
        "measured: torch 2.1.2 and 2.2.2 have torch.cuda.amp.GradScaler only",
        "measured from torch 2.3.0 (torch.amp.GradScaler(device))",
    ),
    lambda: __import__("torch").amp.GradScaler("cpu"),
)
CAPABILITIES: tuple[Capability, ...] = (HALF_BATCH_NORM_CPU, HALF_BERNOULLI_CPU, AMP_GRAD_SCALER)

DEPRECATIONS: tuple[Deprecation, ...] = (
    Deprecation(
        _since(
            "torch.cuda.amp.GradScaler(...) warns FutureWarning (use torch.amp.GradScaler('cuda'))",
            "2.4",
            "measured: no warning on torch 2.1.2, 2.2.2, 2.3.0",
            "measured from torch 2.4.0",
        ),
        lambda: __import__("torch").cuda.amp.GradScaler(enabled=False),
    ),
    Deprecation(
        _since(
            "torch.cpu.amp.autocast(...) warns FutureWarning (use torch.autocast('cpu'))",
            "2.4",
            "measured: no warning on torch 2.1.2, 2.2.2, 2.3.0",
            "measured from torch 2.4.0",
        ),
        lambda: __import__("torch").cpu.amp.autocast(),
    ),
    Deprecation(
        _since(
            "DistributedDataParallel(broadcast_buffers=...) warns FutureWarning (use forward_sync_buffers)",
            "2.13",
            "measured: no warning on torch 2.1.2 to 2.12.1",
            "measured from torch 2.13.0",
        ),
        _ddp_broadcast_buffers,
    ),
)


def known_gap(err: BaseException, declared: tuple[Capability, ...] = ()) -> Capability | None:
    """The capability of :data:`CAPABILITIES` (or of ``declared``: a family's own) whose refusal
    ``err``'s text is, or None."""
    text = str(err)
    return next((c for c in (*CAPABILITIES, *declared) if c.refusal and re.search(c.refusal, text)), None)


def gap_reason(cap: Capability) -> str:
    """Why a test skips where this torch lacks ``cap`` as the table says: "a known gap: float16
    batch_norm on CPU (torch >=2.2 has it: measured from torch 2.2.0 ...)"."""
    has = next((r for r in cap.known.ranges if r.value is True), None)
    return f"a known gap: {cap.name}" + (f" (torch {has.spec} has it: {has.source})" if has else "")
