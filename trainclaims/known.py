"""PyTorch's behaviours that differ by version, as data: the value measured in each range of torch
versions (``packaging`` specifiers), the releases it was measured on, and the source that says
why. A test asserts the value expected for the installed torch (:meth:`Known.expected`); a value
off the table fails with both values and the range, so an unknown change still fails, and a known
one reads as what it is (:meth:`Known.note`: "known change in torch 2.14 (source)"). PyTorch's own
tests keep such facts the same way (``DecorateInfo(..., active_if=...)`` in its OpInfo database).

Nothing is assumed: a range holds from the oldest to the newest release line measured in it (the
patch releases of a measured line alike), and a torch outside every measured span (a release
never run, older or newer than the table) is *not measured*: :meth:`Known.expected` raises
:class:`trainclaims.verdicts.NotMeasured` ("no measurement for torch X"), which a test reports as
a skip with the reason. ``trainclaims-releases`` measures the tables on every release line.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from trainclaims.errors import NotMeasured


def base_version(version: str | None = None) -> Version:
    """The release of ``version`` (default: the installed torch's), without its local or dev part:
    ``2.14.1+cu130`` and ``2.15.0.dev20261101`` compare as 2.14.1 and 2.15.0."""
    if version is None:
        import torch

        version = torch.__version__
    return Version(Version(str(version)).base_version)


def line(version: str | Version) -> tuple[int, int]:
    """A release's line: (major, minor)."""
    v = base_version(str(version))
    return v.major, v.minor


# The torch releases of the last full run on every line (trainclaims-releases --releases 2.1-2.15:
# docs/releases-torch.md). Every torch table was measured on each of them: a range's measured
# releases are those of the run within its spec (:func:`measured_in`), with any a bisect added.
TORCH_RUN = (
    "2.1.2",
    "2.2.2",
    "2.3.1",
    "2.4.1",
    "2.5.1",
    "2.6.0",
    "2.7.1",
    "2.8.0",
    "2.9.1",
    "2.10.0",
    "2.11.0",
    "2.12.1",
    "2.13.0",
    "2.14.1",
    "2.15.0",
)


def measured_in(spec: str, run: Sequence[str] = TORCH_RUN, also: Sequence[str] = ()) -> tuple[str, ...]:
    """The releases of ``run`` (a release run's list: torch's by default, a family's for another
    package) within ``spec``, and ``also`` (releases measured otherwise, a bisect's probes), oldest
    first: what a :class:`Range` was measured on."""
    within = SpecifierSet(spec)
    return tuple(sorted({v for v in (*run, *also) if Version(v) in within}, key=Version))


@dataclass(frozen=True)
class Range:
    """``value`` for the torch versions of ``spec``, measured on the releases ``measured`` (each
    within ``spec``), for the reason ``source`` gives."""

    spec: str  # a packaging specifier set: ">=2.14", "<2.14"
    value: Any
    source: str
    measured: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        outside = [m for m in self.measured if Version(m) not in SpecifierSet(self.spec)]
        if outside:
            raise ValueError(f"range {self.spec}: measured release(s) {', '.join(outside)} lie outside it")

    def holds_for(self, version: Version) -> bool:
        return version in SpecifierSet(self.spec)

    def covers(self, version: Version) -> bool:
        """Within the spec and between the oldest and the newest release line measured in it."""
        lines = [line(m) for m in self.measured]
        return self.holds_for(version) and bool(lines) and min(lines) <= line(version) <= max(lines)


@dataclass(frozen=True)
class Known:
    """What ``what`` is, per range of versions of ``package`` (torch unless said: a Hugging Face
    family's tables are per transformers release); the ranges must not overlap. ``probe``, where
    given, measures the value on the installed torch (``python -m trainclaims.known`` runs every
    table's probe; a table without one is measured by the tests that record it)."""

    what: str
    ranges: tuple[Range, ...]
    probe: Callable[[], Any] | None = None
    package: str = "torch"

    def version(self, version: str | None = None) -> Version:
        """``version``'s release, or the installed package's where None."""
        if version is None and self.package != "torch":
            import importlib.metadata

            version = importlib.metadata.version(self.package)
        return base_version(version)

    def range_for(self, version: str | None = None) -> Range | None:
        """The range whose measured releases cover this release's line, or None (not measured)."""
        v = self.version(version)
        found = [r for r in self.ranges if r.holds_for(v)]
        if len(found) > 1:
            raise ValueError(f"{self.what}: ranges {[r.spec for r in found]} overlap at {self.package} {v}")
        return found[0] if found and found[0].covers(v) else None

    def measured_lines(self) -> list[str]:
        return sorted({f"{a}.{b}" for r in self.ranges for a, b in map(line, r.measured)}, key=Version)

    def unmeasured(self, version: str | None = None, got: Any = None) -> NotMeasured:
        v = self.version(version)
        here = f": {got!r} here" if got is not None else ""
        lines = ", ".join(self.measured_lines()) or "none"
        how = "trainclaims-releases measures a release" if self.package == "torch" else "measured per release"
        return NotMeasured(
            f"no measurement for {self.package} {v}: {self.what}{here} (the table has {self.package} {lines}; {how})"
        )

    def expected(self, version: str | None = None) -> Any:
        """The value measured for this torch's range; :class:`NotMeasured` where no measured range
        covers it (never a guess from a neighbouring range)."""
        found = self.range_for(version)
        if found is None:
            raise self.unmeasured(version)
        return found.value

    def check(self, got: Any, version: str | None = None) -> str | None:
        """None where ``got`` is the value expected for this torch, else why (both values, the
        range); :class:`NotMeasured` (naming ``got``) where the table has no measurement for it."""
        v = self.version(version)
        found = self.range_for(str(v))
        if found is None:
            raise self.unmeasured(str(v), got)
        if got == found.value:
            return None
        return (
            f"{self.what}: {got!r} on {self.package} {v}, expected {found.value!r} for {self.package} {found.spec} "
            f"({found.source}): an unknown change"
        )

    def record(self, evidence: Any, got: Any) -> None:
        """Put the measured value in a test's evidence (``known: WHAT``), where trainclaims-releases
        reads each release's value of the table."""
        evidence.record(**{f"known: {self.what}": got})

    def note(self, version: str | None = None) -> str | None:
        """ "known change in torch X (source)" where the running release is past a change of value."""
        v = self.version(version)
        here = self.range_for(str(v))
        if here is None or all(r.value == here.value for r in self.ranges):
            return None
        lower = [s.version for s in SpecifierSet(here.spec) if s.operator in (">=", ">")]
        if not lower:
            return None
        before = [r for r in self.ranges if r is not here and r.value != here.value]
        was = f", was {before[0].value!r} before" if before else ""
        return f"known change in {self.package} {max(lower, key=Version)}{was} ({here.source})"

    def boundary_problems(self) -> list[str]:
        """Where the table is not measured on both sides of a boundary: each range must name the
        releases it was measured on, and where two ranges meet, the last line measured below and
        the first line measured above must be neighbours (2.5 and 2.6) or one line (a change
        between two patch releases of it, 4.46.1 and 4.46.3): the change lies between two
        releases that were both run. Empty for a table measured as it should be."""
        problems = [f"{self.what}: range {r.spec} names no measured release" for r in self.ranges if not r.measured]
        spans = sorted(
            ((min(map(line, r.measured)), max(map(line, r.measured)), r) for r in self.ranges if r.measured),
            key=lambda span: (span[0], span[1], min(map(Version, span[2].measured))),  # patch ranges of one line
        )
        for (_, below, a), (above, _, b) in itertools.pairwise(spans):
            next_major = above == (below[0] + 1, 0)  # 5.0 follows the last 4.x line measured
            if a.value != b.value and (above[0], above[1] - 1) != below and above != below and not next_major:
                problems.append(
                    f"{self.what}: between {a.spec} (measured up to {below[0]}.{below[1]}) and {b.spec} (measured "
                    f"from {above[0]}.{above[1]}) the releases in between were not run"
                )
        return problems


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


def _since(
    what: str, version: str, before: str, since: str, also_before: Sequence[str] = (), also_since: Sequence[str] = ()
) -> Known:
    """False before torch ``version``, True from it: a capability torch gained, a warning it added,
    measured on the release run's lines on each side (and the releases ``also_*`` a bisect added)."""
    below, above = f"<{version}", f">={version}"
    return Known(
        what,
        (
            Range(below, False, before, measured_in(below, also=also_before)),
            Range(above, True, since, measured_in(above, also=also_since)),
        ),
    )


# Measured on CPU (2 cores) on every line of TORCH_RUN and on 2.2.0 (trainclaims-bisect), 2.3.0 and
# 2.4.0; each entry's first version is the first that had it.
HALF_BATCH_NORM_CPU = Capability(
    _since(
        "float16 batch_norm on CPU",
        "2.2",
        "measured: torch 2.1.2 raises '\"batch_norm\" not implemented for 'Half''",
        "measured from torch 2.2.0 (trainclaims-bisect between 2.1.2 and 2.2.0)",
        also_since=("2.2.0", "2.3.0", "2.4.0"),
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
        also_since=("2.2.0", "2.3.0", "2.4.0"),
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
        also_since=("2.3.0", "2.4.0"),
    ),
    lambda: __import__("torch").amp.GradScaler("cpu"),
)
CAPABILITIES: tuple[Capability, ...] = (HALF_BATCH_NORM_CPU, HALF_BERNOULLI_CPU, AMP_GRAD_SCALER)


def fully_shard_of_this_torch() -> tuple[Any, str | None]:
    """(FSDP2's ``fully_shard``, None), or (None, why this torch has none)."""
    import torch

    try:
        from torch.distributed.fsdp import fully_shard  # torch 2.6+

        return fully_shard, None
    except ImportError:
        pass
    try:
        from torch.distributed._composable.fsdp import fully_shard  # torch 2.4-2.5

        return fully_shard, None
    except ImportError:
        return None, f"torch {torch.__version__} has no FSDP2 fully_shard (torch 2.4+)"


def _fsdp2_one_rank() -> bool:
    """FSDP2 on one gloo rank (a file store: no port): a Linear sharded, a forward and a backward."""
    import tempfile

    import torch
    import torch.distributed as dist

    fully_shard, _ = fully_shard_of_this_torch()
    if fully_shard is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", store=dist.FileStore(f"{folder}/store", 1), rank=0, world_size=1)
        try:
            from torch.distributed.device_mesh import init_device_mesh

            model = fully_shard(torch.nn.Linear(4, 2), mesh=init_device_mesh("cpu", (1,)))
            model(torch.ones(3, 4)).sum().backward()
        except (RuntimeError, NotImplementedError, AttributeError, TypeError):
            return False
        finally:
            dist.destroy_process_group()
    return True


# FSDP2 on CPU ranks (gloo), for every family whose tests shard (S002-15, TP-04): measured by its probe
# (one gloo rank, a forward and a backward) on each release line from 2.1.2 to 2.15.0.
FSDP2_ON_CPU = Known(
    "FSDP2 (fully_shard) trains on CPU with gloo",
    (
        Range(
            "<2.7",
            False,
            "measured: torch 2.1.2-2.3.1 have no fully_shard; 2.4.1-2.6.0's first forward on CPU raises (2.6.0: "
            "\"'Stream' object has no attribute 'record_event'\"; pytorch PR #145935 adds the CPU no-op)",
            measured_in("<2.7"),
        ),
        Range(
            ">=2.7",
            True,
            "measured on torch 2.7.1, 2.8.0, 2.9.1, 2.10.0, 2.11.0, 2.12.1, 2.13.0, 2.14.1, 2.15.0",
            measured_in(">=2.7"),
        ),
    ),
    probe=_fsdp2_one_rank,
)
# the core's tables with a probe (the families keep theirs in Family.known)
TABLES: tuple[Known, ...] = (FSDP2_ON_CPU,)

DEPRECATIONS: tuple[Deprecation, ...] = (
    Deprecation(
        _since(
            "torch.cuda.amp.GradScaler(...) warns FutureWarning (use torch.amp.GradScaler('cuda'))",
            "2.4",
            "measured: no warning on torch 2.1.2, 2.2.2, 2.3.0 and 2.3.1",
            "measured from torch 2.4.0, every line to 2.15",
            also_before=("2.3.0",),
            also_since=("2.4.0",),
        ),
        lambda: __import__("torch").cuda.amp.GradScaler(enabled=False),
    ),
    Deprecation(
        _since(
            "torch.cpu.amp.autocast(...) warns FutureWarning (use torch.autocast('cpu'))",
            "2.4",
            "measured: no warning on torch 2.1.2, 2.2.2, 2.3.0 and 2.3.1",
            "measured from torch 2.4.0, every line to 2.15",
            also_before=("2.3.0",),
            also_since=("2.4.0",),
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
