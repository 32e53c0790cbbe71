"""The numerics modes: each one value (:class:`Mode`) in one registry (:data:`MODES`).

A *mode* is how a claim's float computation is carried out. Every claim is written against the
reference, ``ieee`` (IEEE float32 matmuls and convolutions, eager); the other modes are how people
train: TensorFloat-32 on CUDA, autocast to bfloat16 or float16, ``torch.compile``. A :class:`Mode`
says everything the suite needs to know about one of them, as data:

- what it pins (the fp32 precision the numerics guard sets for its tests), what it computes in
  (an autocast dtype, or the dtype it holds parameters, gradients and optimizer state in), whether
  it compiles and trains through a GradScaler, and which of a claim's dtypes it acts on;
- where it runs (device types, and what this torch and machine must have: :meth:`Mode.unsupported`);
- whether the batched engine can train in it, and whether training runs may share threads;
- how it proves that it acted in a test (:meth:`Mode.proof` over :class:`Acted`, what the modes
  did in the test's stretch of work), and a probe to run before each test where the proof needs one
  (and what to clear before each test: compile's cache);
- the bound of the rounding it makes (:meth:`Mode.bound`): an equality claim whose gap lies within
  the dtype's tolerance holds, within the mode's bound it is *conditional*, beyond it fails.

What a mode does in code (pinning, the autocast region, compiling, the scaler) is in
:mod:`trainclaims.numerics`, driven by these attributes: no code outside this module branches on a
mode's name. Names are parsed into modes once, at the edge (``--numerics``, a launched job's
arguments, a rank's JSON, a user's call): :func:`get`, :func:`parse_modes`; past the edge only the
:class:`Mode` travels. A mode hashes as its name; comparing it with a string still works in 0.4,
with a DeprecationWarning (use ``mode.name``, ``mode.reference``, or the Mode itself).

Nothing here imports torch at import time: the plugin, the report readers and the gate use the modes'
names and order without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# --------------------------------------------------------------------------- what the modes did


ACTED_COUNTS = ("regions", "outputs", "cast", "graphs", "graph_ops", "compiled_calls", "tf32_probes")
ACTED_TALLIES = ("held", "stepped")


@dataclass
class Acted:
    """What the numerics modes did in a stretch of work: autocast regions entered, the floating
    module outputs seen inside them and how many of those were in the autocast dtype; graphs
    compile built (their ops) and calls of compiled graphs; tf32 probes and the largest relative
    error one read; the models a mode placed in a dtype (``held``: ``{"bfloat16": 2}``) and the
    optimizer steps taken, by the dtype of the parameters they updated (``stepped``)."""

    regions: int = 0
    outputs: int = 0
    cast: int = 0
    graphs: int = 0
    graph_ops: int = 0
    compiled_calls: int = 0
    tf32_probes: int = 0
    tf32_error: float = 0.0  # the largest relative error of a tf32 probe's matmul against float64
    held: dict[str, int] = field(default_factory=dict)
    stepped: dict[str, int] = field(default_factory=dict)

    def add(self, other: Acted) -> None:
        for name in ACTED_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.tf32_error = max(self.tf32_error, other.tf32_error)
        for name in ACTED_TALLIES:
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Acted:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


# --------------------------------------------------------------------------- the proofs


Proof = Callable[["Acted", "Mode"], tuple[bool, str]]


def reference_proof(acted: Acted, mode: Mode) -> tuple[bool, str]:
    """The reference acted as itself, unless a probe on CUDA found a float32 matmul rounded as
    TensorFloat-32 (TF32 forced on from outside: ``NVIDIA_TF32_OVERRIDE=1``,
    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``), which the settings the guard pins cannot undo."""
    if acted.tf32_probes and acted.tf32_error >= TF32_MIN_ERROR:
        return False, (
            f"{mode.name}: a float32 matmul on CUDA differed from float64 by {acted.tf32_error:.1e}, as "
            "TensorFloat-32 rounds: TF32 is on although ieee pins it off (NVIDIA_TF32_OVERRIDE or "
            "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE set?)"
        )
    if acted.tf32_probes:
        return True, f"{mode.name}: the reference (a CUDA matmul was IEEE to {acted.tf32_error:.1e})"
    return True, f"{mode.name}: the reference"


def autocast_proof(acted: Acted, mode: Mode) -> tuple[bool, str]:
    """Autocast acted where its regions cast module outputs to its dtype."""
    if not acted.regions:
        return False, f"{mode.name}: no autocast region was entered"
    if not acted.cast:
        return False, (
            f"{mode.name}: {acted.regions} autocast regions cast nothing: none of their {acted.outputs} "
            f"floating module outputs was {mode.autocast}"
        )
    return (
        True,
        f"{mode.name}: {acted.cast} of {acted.outputs} module outputs in {acted.regions} autocast regions "
        f"were {mode.autocast}",
    )


def compile_proof(acted: Acted, mode: Mode) -> tuple[bool, str]:
    """Compile acted where compiled graphs ran (not a fallback to eager)."""
    if not acted.compiled_calls:
        return False, f"{mode.name}: no compiled graph ran ({acted.graphs} graphs built); the model ran eager"
    return True, (
        f"{mode.name}: {acted.compiled_calls} calls of compiled graphs "
        f"({acted.graphs} graphs, {acted.graph_ops} ops built in this stretch; others reused)"
    )


def weights_proof(acted: Acted, mode: Mode) -> tuple[bool, str]:
    """A mode that holds the parameters in another dtype acted where its models were held in it
    and (where the test trained) the optimizer stepped parameters of that dtype."""
    held = acted.held.get(mode.weights or "", 0)
    if not held:
        return False, f"{mode.name}: no model was held in {mode.weights}"
    stepped = acted.stepped.get(mode.weights or "", 0)
    others = {d: n for d, n in acted.stepped.items() if d != mode.weights}
    if others:
        return False, f"{mode.name}: optimizer steps updated parameters of other dtypes too: {others}"
    steps = f"; {stepped} optimizer steps updated {mode.weights} parameters" if stepped else ""
    return True, f"{mode.name}: {held} models held in {mode.weights}{steps}"


# Relative error (Frobenius) of a 256x256 float32 matmul of standard normal numbers against float64,
# simulated on CPU (suites/test_self_numerics.py: the inputs rounded to TF32's 10-bit mantissa, the
# products summed in float32, seeds 0-2): IEEE 2.1e-7; TensorFloat-32 with round-to-nearest 2.9e-4,
# with truncation 7.7e-4. The line sits 100x above IEEE and 15x below TF32's rounding. (With uniform
# [0, 1) inputs, what an earlier probe used, round-to-nearest gave only 2.1-2.2e-5: the products'
# errors average out over positive sums, 10% above this line.)
TF32_MIN_ERROR = 2e-5


def tf32_proof(acted: Acted, mode: Mode) -> tuple[bool, str]:
    """TF32 acted where a probe matmul rounded as TensorFloat-32 does."""
    if not acted.tf32_probes:
        return False, f"{mode.name}: no probe ran"
    if acted.tf32_error < TF32_MIN_ERROR:
        return False, (
            f"{mode.name}: a float32 matmul was IEEE-exact to {acted.tf32_error:.1e} (TensorFloat-32 rounds to "
            f"about 1e-3); cuBLAS did not use TF32"
        )
    return True, f"{mode.name}: a float32 matmul differed from float64 by {acted.tf32_error:.1e} (IEEE: about 1e-6)"


def tf32_probe_error(device: str, matmul: Callable[[Any, Any], Any] | None = None) -> float:
    """The relative error of a float32 matmul of two 256x256 standard normal matrices on ``device``
    (``matmul``, default ``torch.matmul``) against float64 (see :data:`TF32_MIN_ERROR`)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(256, 256, generator=g, dtype=torch.float64) for _ in range(2))
    got = (matmul or torch.matmul)(a.float().to(device), b.float().to(device)).double().cpu()
    return float((got - a @ b).norm() / (a @ b).norm())


def tf32_probe(device: str) -> Acted:
    """What the tf32 proof (and the reference's on CUDA) reads: the error of a float32 matmul on a
    CUDA ``device``; nothing on another device (only cuBLAS and cuDNN compute in TF32)."""
    if not str(device).startswith("cuda"):
        return Acted()
    return Acted(tf32_probes=1, tf32_error=tf32_probe_error(device))


# --------------------------------------------------------------------------- where a mode runs

Requirement = Callable[[str], "str | None"]  # device -> why the mode cannot run there, or None


def needs_ampere(device: str) -> str | None:
    """TensorFloat-32 needs compute capability 8.0; asked only of a CUDA device that exists."""
    import torch

    dev = torch.device(device)
    if not torch.cuda.is_available():
        return "CUDA not available"
    index = dev.index if dev.index is not None else 0
    if index >= torch.cuda.device_count():
        return f"{device} not available ({torch.cuda.device_count()} CUDA devices)"
    if torch.cuda.get_device_capability(index) < (8, 0):
        return f"it needs an Ampere or newer GPU; {torch.cuda.get_device_name(index)} has none"
    return None


def needs_grad_scaler(device: str) -> str | None:
    import torch

    from trainclaims.known import AMP_GRAD_SCALER, gap_reason

    kind = torch.device(device).type
    if getattr(torch.amp, "GradScaler", None) is not None or kind == "cuda":
        return None
    return f"it trains with a GradScaler, which torch {torch.__version__} has for CUDA only: " + (
        AMP_GRAD_SCALER.known.check(False) or gap_reason(AMP_GRAD_SCALER)
    )


def needs_inductor(device: str) -> str | None:
    import torch

    kind = torch.device(device).type
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if kind == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        return "torch.compile on CPU (inductor) needs a C++ compiler; none on PATH (apt-get install -y g++)"
    if kind == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA (inductor) needs triton, which is not installed"
    return None


def fresh_compile_cache() -> None:
    """Dynamo's cache, emptied: it keeps compiled code per code object for the whole process, and
    every compiled module's forward shares one (dynamo's wrapper around it), so after 8 models of a
    run (its recompile limit) the rest ran eager and a later compile test failed its proof for the
    order the tests ran in (torch 2.14.1: the fast tier's S002 instances, then TP-07's and TP-14's).
    Each test compiles afresh instead; a test's own models still share its graphs."""
    try:
        import torch._dynamo
    except ImportError:  # a torch without torch.compile: the mode's requirement skips its tests
        return
    torch._dynamo.reset()


# --------------------------------------------------------------------------- the mode


@dataclass(frozen=True)
class Bound:
    """How far a mode's rounding moves a gap that is 0 in exact arithmetic, for one claim dtype:
    beyond ``value`` the gap is no rounding effect, and the claim fails in that mode."""

    value: float
    measured: str  # where and how it was measured


@dataclass(frozen=True, eq=False)
class Mode:
    """One numerics mode, as data (see the module's docstring)."""

    name: str
    description: str
    proof: Proof = reference_proof
    fp32_precision: str = "ieee"  # what the numerics guard pins for its tests: "ieee" or "tf32"
    autocast: str | None = None  # the dtype autocast computes the forward pass and the loss in
    weights: str | None = None  # the dtype parameters, gradients and optimizer state are held in
    compiles: bool = False  # torch.compile of the trained model (inductor)
    scaler: bool = False  # training goes through a GradScaler
    acts_on: tuple[str, ...] | None = None  # the claim dtypes it changes (None: every dtype)
    device_types: tuple[str, ...] = ("cpu", "cuda", "mps")
    requires: tuple[Requirement, ...] = ()
    fresh: Callable[[], None] | None = None  # run before each test of the mode: what it keeps between tests, cleared
    probe: Callable[[str], Acted] | None = None  # run before each test of the mode, on its device
    bounds: Mapping[str, Bound] = field(default_factory=dict)  # claim dtype -> its rounding bound
    reference: bool = False

    # a mode is its name in JSON and text; it equals only a mode (a name is parsed once, at the edge)
    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Mode({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mode):
            return self.name == other.name
        if isinstance(other, str):  # the 0.3 shim, for one release
            warnings.warn(
                f"comparing a numerics Mode with the string {other!r} is deprecated and will be removed in "
                "trainclaims 0.5: compare mode.name, or the Mode itself (trainclaims.modes.get(name))",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (get, (self.name,))  # pickled (xdist, ranks) as its name: the registry's value on arrival

    def acts(self, dtype: str) -> bool:
        """Whether the mode changes a computation in ``dtype`` (autocast leaves float64 alone)."""
        return self.acts_on is None or dtype_name(dtype) in self.acts_on

    def compute_dtype(self, dtype: str) -> str:
        """The dtype a claim written in ``dtype`` computes its products in, in this mode."""
        name = dtype_name(dtype)
        return (self.autocast or self.weights or name) if self.acts(name) else name

    def param_dtype(self, dtype: str) -> str:
        """The dtype a model built in ``dtype`` holds its parameters in, in this mode."""
        name = dtype_name(dtype)
        return self.weights if self.weights and self.acts(name) else name

    def bound(self, dtype: str) -> Bound | None:
        """The bound of this mode's rounding for a claim in ``dtype`` (None: the reference, or a
        dtype the mode does not act on: the dtype's own tolerance is the only bound)."""
        name = dtype_name(dtype)
        return None if self.reference or not self.acts(name) else self.bounds.get(name)

    def unsupported(self, device: str, here: bool = True) -> str | None:
        """Why this mode cannot run on ``device`` (a skip reason), or None. The device type is
        checked first; torch is asked about a device only where it exists. With ``here`` False
        (results a launched job measured on its own machines) only the device type is checked: the
        job met the rest, and its ranks' proof that the mode acted comes with their results."""
        kind = str(device).partition(":")[0]
        if kind not in self.device_types:
            where = "/".join(_DEVICE_NAMES.get(t, t) for t in self.device_types)
            return f"{self.name} is a {where} mode; {kind} computes it as the reference ({REFERENCE.name}) does"
        for requirement in self.requires if here else ():
            why = requirement(str(device))
            if why:
                return f"{self.name}: {why}"
        return None


_DEVICE_NAMES = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}


def dtype_name(dtype: Any) -> str:
    """``torch.float32`` or ``"float32"`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- the registry

# The modes' rounding bounds. Measured (CPU, torch 2.14.1, 2 cores) on every equality the suite and
# the example judge in a mode (S002-07, S000-08, S002-11, S002-12, S002-15 both gaps, CNN-01), run as
# they run, over seeds 0-9 (0-4 for DDP and FSDP2), against the same runs broken on purpose (DDP or
# FSDP2 summing the ranks' gradients, accumulation without loss/k, the first layer's lr divided by s
# instead of s^2). Honest / broken, the largest honest gap and the smallest broken one:
#   ieee          2.1e-7 (S000-08 s=255) / 0.045 (S002-15 summed): float32's tolerance 1e-4 is the line
#   bf16-autocast 4.9e-3 (S000-08 s=255, W1); two tiny causal language models (token-normalized
#                 accumulation, k=2/4, seeds 0-4): the practice family's 1.1e-2, examples/tiny-lm's 2.2e-2 /
#                 0.045 (S002-15 summed; S002-11/12 summed: 0.063; per micro-batch means / k: 0.39, 0.40)
#   fp16-autocast 1.9e-4 (S002-11); the language models 4.9e-3 and 1.0e-2 / 0.034 (S002-15 summed), where the
#                 GradScaler skipped the same steps in both runs (where not, the runs took other
#                 steps: no rounding bound exists, see trainclaims.verdicts.judge_gap's ``unequal``)
#   compile       8.3e-7 (reparametrization, a CNN with BN) / 0.024 (CNN-05 summed): within float32's
#                 tolerance, so no conditional band: beyond it, it fails
#   bf16-weights  9.6e-3 (S000-08 s=255: two bfloat16 ulps of the loss); the language models 1.3e-2, 2.2e-2 /
#                 0.045 (S002-15 summed)
# The margins are thin in the half-precision modes (1.4-2x above the largest honest gap, 1.5-1.7x
# below the smallest broken one): the bounds sit between, not far from either. The language models
# set the honest end (a gap is the largest over parameter tensors, and a LayerNorm's zero-initialised
# bias after 3 steps is small against its own rounding).
# float64 claims: every autocast mode left them bit for bit as ieee (95/95 comparisons each); compile
# 1.3e-15 against float64's tolerance 1e-10. (A claim in a dtype a mode does not act on has no band.)
# Not separated by any bound (docs/numerics.md): the example CNN with BatchNorm's honest
# reparametrization at s=255 reaches 0.064 in bf16-autocast and 0.046 in bf16-weights (its zero-
# initialised beta), above CNN-05's summed DDP at 0.024.
_MEASURED = "CPU, torch 2.14.1, seeds 0-9 (DDP/FSDP2, language models 0-4), the in-mode equalities measured"
BF16_BOUND = Bound(3e-2, f"honest up to 2.2e-2, broken from 0.045: {_MEASURED}")
FP16_BOUND = Bound(2e-2, f"honest up to 1.0e-2, broken from 0.034, equal GradScaler skips: {_MEASURED}")
COMPILE_BOUNDS = {
    "float32": Bound(1e-4, f"float32's tolerance: honest up to 8.3e-7, broken from 0.024: {_MEASURED}"),
    "float64": Bound(1e-10, f"float64's tolerance: honest up to 1.3e-15: {_MEASURED}"),
}
WEIGHTS_BOUND = Bound(3e-2, f"honest up to 2.2e-2, broken from 0.045: {_MEASURED}")
# TF32 (10-bit mantissa on the matmul inputs, float32 accumulation) could not be measured: no GPU was
# lent. fp16-autocast's bound (the same mantissa, on every op of the forward pass) until it is.
TF32_BOUND = Bound(2e-2, "fp16-autocast's bound: TF32 not measured yet (no GPU); .ci/gpu-check measures it")

MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    """Add ``mode`` to the registry (its name must be new)."""
    if mode.name in MODES:
        raise ValueError(f"numerics mode {mode.name!r} is registered twice")
    MODES[mode.name] = mode
    return mode


IEEE = register(
    Mode(
        "ieee",
        "IEEE float32 matmul and convolution, eager (the reference)",
        reference=True,
        probe=tf32_probe,  # on CUDA: TF32 really off
    )
)
TF32 = register(
    Mode(
        "tf32",
        "TensorFloat-32 for float32 matmul (cuBLAS) and convolution (cuDNN); CUDA, Ampere or newer",
        proof=tf32_proof,
        fp32_precision="tf32",
        acts_on=("float32",),
        device_types=("cuda",),
        requires=(needs_ampere,),
        probe=tf32_probe,
        bounds={"float32": TF32_BOUND},
    )
)
BF16_AUTOCAST = register(
    Mode(
        "bf16-autocast",
        "torch.autocast to bfloat16 around the forward pass and the loss",
        proof=autocast_proof,
        autocast="bfloat16",
        acts_on=("float32",),
        bounds={"float32": BF16_BOUND},
    )
)
FP16_AUTOCAST = register(
    Mode(
        "fp16-autocast",
        "torch.autocast to float16 around the forward pass and the loss, GradScaler where it trains",
        proof=autocast_proof,
        autocast="float16",
        scaler=True,
        acts_on=("float32",),
        requires=(needs_grad_scaler,),
        bounds={"float32": FP16_BOUND},
    )
)
COMPILE = register(
    Mode(
        "compile",
        "torch.compile of the trained model (inductor), IEEE float32",
        proof=compile_proof,
        compiles=True,
        device_types=("cpu", "cuda"),
        requires=(needs_inductor,),
        fresh=fresh_compile_cache,
        bounds=COMPILE_BOUNDS,
    )
)
BF16_WEIGHTS = register(
    Mode(
        "bf16-weights",
        "parameters, gradients and optimizer state in bfloat16, no autocast (pure bfloat16 training)",
        proof=weights_proof,
        weights="bfloat16",
        acts_on=("float32",),
        bounds={"float32": WEIGHTS_BOUND},
    )
)
REFERENCE = IEEE


# What a caller outside the library may give where a mode is meant (a user's check call, a test's
# own helper): a Mode, or its name. It is parsed once, by get(), where it enters; inside the library
# only the Mode travels.
ModeLike = Mode | str


def get(mode: ModeLike) -> Mode:
    """The registered mode ``mode`` names (a mode is returned as it is); ValueError for a name
    that is none, naming the accepted ones."""
    if isinstance(mode, Mode):
        return mode
    found = MODES.get(str(mode))
    if found is None:
        raise ValueError(f"unknown numerics mode {mode!r}; accepted: {', '.join(MODES)}")
    return found


def mode_order(name: str) -> int:
    """Where the mode ``name`` sorts among the modes (the registry's order; unknown names last):
    for the names results carry in JSON."""
    names = list(MODES)
    return names.index(name) if name in MODES else len(names)


def parse_modes(text: str) -> tuple[Mode, ...]:
    """``"ieee,bf16-autocast"`` -> (IEEE, BF16_AUTOCAST); an error names the unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no mode given; accepted: {', '.join(MODES)}")
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {', '.join(map(repr, unknown))}; accepted: {', '.join(MODES)}")
    return tuple(get(n) for n in dict.fromkeys(names))


def names(modes: Iterable[Mode]) -> list[str]:
    return [m.name for m in modes]
