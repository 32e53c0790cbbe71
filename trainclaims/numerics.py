"""Numerics modes, and the numeric environment a test runs in.

A *mode* is how a claim's float32 computation is carried out: ``ieee`` (IEEE float32 matmuls and
convolutions, eager: the reference every claim is written against), ``tf32`` (TensorFloat-32 in
cuBLAS and cuDNN: CUDA only), ``bf16-autocast`` / ``fp16-autocast`` (``torch.autocast`` around
the forward pass and the loss; float16 with a GradScaler where a claim trains) and ``compile``
(``torch.compile`` of the trained model; on CPU inductor builds C++ with the system compiler).

:func:`pinned` sets the process-wide settings a mode needs and puts back what it found, so that
no test inherits another's: fp32 precision ``ieee`` (``tf32`` for the tf32 mode) and, where a test
asserts run-to-run identity, deterministic algorithms. It uses one API per torch version: torch
2.9+ has ``torch.backends.*.fp32_precision`` and raises when the legacy ``allow_tf32`` flags are
read after that API set them apart (measured on 2.14); older torch has only the legacy flags, and
on 2.1 even ``hasattr(torch.backends.cuda.matmul, "fp32_precision")`` raises AssertionError.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# the modes' names live where no torch is imported (the plugin, the report readers and the gate)
from trainclaims.modes import MODES, REFERENCE, mode_order, parse_modes  # noqa: F401

AUTOCAST = {"bf16-autocast": torch.bfloat16, "fp16-autocast": torch.float16}
# CUBLAS_WORKSPACE_CONFIG: cuBLAS is deterministic only with a fixed workspace; PyTorch raises in
# deterministic mode without it (https://docs.nvidia.com/cuda/cublas/#results-reproducibility).
CUBLAS_WORKSPACE = ":4096:8"


def unsupported(mode: str, device: str) -> str | None:
    """Why ``mode`` cannot run on ``device`` here (a skip reason), or None."""
    kind = torch.device(device).type
    if mode == "tf32":
        if kind != "cuda":
            return f"tf32 is a CUDA mode (TensorFloat-32 in cuBLAS/cuDNN); {kind} computes float32 in IEEE"
        if torch.cuda.is_available() and torch.cuda.get_device_capability(torch.device(device)) < (8, 0):
            return f"tf32 needs an Ampere or newer GPU; {torch.cuda.get_device_name(torch.device(device))} has none"
    if mode == "fp16-autocast" and _scaler_class(kind) is None:
        from trainclaims.known import AMP_GRAD_SCALER as scaler
        from trainclaims.known import gap_reason

        return f"fp16-autocast trains with a GradScaler, which torch {torch.__version__} has for CUDA only: " + (
            scaler.known.check(False) or gap_reason(scaler)
        )
    if mode == "compile":
        if not hasattr(torch, "compile"):
            return f"torch {torch.__version__} has no torch.compile"
        if kind == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
            return "torch.compile on CPU (inductor) needs a C++ compiler; none on PATH (apt-get install -y g++)"
        if kind == "cuda" and importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA (inductor) needs triton, which is not installed"
        if kind == "mps":
            return "torch.compile's inductor backend is not used on mps here"
    return None


# --------------------------------------------------------------------------- the environment


def _new_api() -> bool:
    """torch 2.9+: the fp32_precision API (torch 2.1 raises AssertionError on the attribute)."""
    try:
        return isinstance(torch.backends.cuda.matmul.fp32_precision, str)
    except (AttributeError, AssertionError, RuntimeError):
        return False


def _leaves() -> dict[str, Any]:
    """The fp32_precision settings of the new API, by name: each backend's matmul/conv/rnn."""
    b = torch.backends
    found = {}
    for name, get in {
        "cuda.matmul": lambda: b.cuda.matmul,
        "cudnn.conv": lambda: b.cudnn.conv,
        "cudnn.rnn": lambda: b.cudnn.rnn,
        "mkldnn.matmul": lambda: b.mkldnn.matmul,
        "mkldnn.conv": lambda: b.mkldnn.conv,
        "mkldnn.rnn": lambda: b.mkldnn.rnn,
    }.items():
        try:
            obj = get()
            if isinstance(obj.fp32_precision, str):
                found[name] = obj
        except (AttributeError, AssertionError, RuntimeError):
            continue
    return found


def _snapshot() -> dict[str, Any]:
    saved: dict[str, Any] = {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
    }
    if _new_api():
        # set_float32_matmul_precision() also keeps a value of its own, which the leaves do not
        # restore (measured on 2.14: "high" stays readable after every leaf is put back)
        saved["matmul_precision"] = _read_legacy_precision()
        saved["global"] = torch.backends.fp32_precision
        saved["fp32_precision"] = {name: obj.fp32_precision for name, obj in _leaves().items()}
    else:
        saved["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        saved["cuda.matmul.allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        saved["cudnn.allow_tf32"] = torch.backends.cudnn.allow_tf32
    return saved


def _restore(saved: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
    torch.backends.cudnn.deterministic = saved["cudnn.deterministic"]
    torch.backends.cudnn.benchmark = saved["cudnn.benchmark"]
    if "fp32_precision" in saved:
        if saved["matmul_precision"] is not None:
            torch.set_float32_matmul_precision(saved["matmul_precision"])  # first: it sets leaves too
        torch.backends.fp32_precision = saved["global"]
        leaves = _leaves()
        for name, value in saved["fp32_precision"].items():
            leaves[name].fp32_precision = value
    else:
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
        torch.backends.cuda.matmul.allow_tf32 = saved["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn.allow_tf32"]


def _read_legacy_precision() -> str | None:
    """set_float32_matmul_precision's own value, or None where torch refuses to read it (the
    legacy and new APIs were mixed before the snapshot)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


def _set_precision(tf32: bool) -> None:
    if _new_api():
        torch.set_float32_matmul_precision("high" if tf32 else "highest")  # its own value; then the leaves
        torch.backends.fp32_precision = "ieee"  # the default the leaves fall back to
        for name, obj in _leaves().items():
            # tf32 is asked of CUDA's libraries only: oneDNN on CPU keeps IEEE in every mode
            obj.fp32_precision = "tf32" if tf32 and not name.startswith("mkldnn") else "ieee"
    else:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


@contextlib.contextmanager
def pinned(mode: str = REFERENCE, deterministic: bool = False) -> Iterator[None]:
    """Run the block with ``mode``'s fp32 precision (``tf32`` for the tf32 mode, ``ieee`` for
    every other) and, with ``deterministic``, deterministic algorithms (cuDNN's too, no cuDNN
    autotuning); afterwards every setting is what it was."""
    if mode not in MODES:
        raise ValueError(f"unknown numerics mode {mode!r}; accepted: {', '.join(MODES)}")
    saved = _snapshot()
    try:
        _set_precision(mode == "tf32")
        if deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        yield
    finally:
        _restore(saved)


def precision_settings() -> dict[str, Any]:
    """The fp32 precision settings as this torch has them (one API: reading the other can raise)."""
    if _new_api():
        leaves = {f"{name}.fp32_precision": obj.fp32_precision for name, obj in _leaves().items()}
        return leaves | {
            "fp32_precision": torch.backends.fp32_precision,
            "float32_matmul_precision": _read_legacy_precision(),
        }
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
    }


# --------------------------------------------------------------------------- what a mode changes in code


def autocast(mode: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of ``mode`` on ``device`` (a no-op for the modes without one). Float64
    tensors are never autocast: a float64 claim computes the same in every autocast mode. The
    region records what it cast (:func:`watch`): the dtype of every module's floating output
    inside it, which is how an autocast instance proves that its mode acted."""
    if mode in AUTOCAST:
        return _AutocastRegion(torch.device(device).type, AUTOCAST[mode])
    return contextlib.nullcontext()


class _AutocastRegion:
    def __init__(self, kind: str, dtype: torch.dtype) -> None:
        self.region = torch.autocast(kind, dtype=dtype)
        self.dtype = dtype
        self.handle: Any = None

    def __enter__(self) -> None:
        self.region.__enter__()
        _note(regions=1)
        # a global forward hook (public: torch.nn.modules.module.register_module_forward_hook)
        self.handle = nn.modules.module.register_module_forward_hook(self._seen)
        _REGIONS.__dict__.setdefault("open", []).append(self)
        return None

    def _seen(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.observe(output)

    def observe(self, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            _note(outputs=1, cast=int(output.dtype == self.dtype))

    def __exit__(self, *exc: Any) -> Any:
        _REGIONS.open.remove(self)
        self.handle.remove()
        return self.region.__exit__(*exc)


_REGIONS = threading.local()  # per thread: the autocast regions it is inside


def observe(output: Any) -> Any:
    """Count a tensor computed inside an autocast region as one of its outputs, where code without
    modules (functional code) computes it: what the region cast shows in the test's proof that its
    mode acted. Returns ``output``; a no-op outside an autocast region."""
    regions = getattr(_REGIONS, "open", [])
    if regions:
        regions[-1].observe(output)
    return output


def _scaler_class(kind: str) -> Any:
    amp_scaler = getattr(torch.amp, "GradScaler", None)  # torch 2.3+: any device
    if amp_scaler is not None:
        return lambda: amp_scaler(kind)
    return torch.cuda.amp.GradScaler if kind == "cuda" else None


def grad_scaler(mode: str, device: str | torch.device) -> Any:
    """A GradScaler for fp16-autocast training (float16 gradients underflow without one), else None."""
    if mode != "fp16-autocast":
        return None
    make = _scaler_class(torch.device(device).type)
    if make is None:
        raise RuntimeError(unsupported(mode, str(device)))
    return make()


def backward(loss: torch.Tensor, scaler: Any) -> None:
    """``loss.backward()``, through ``scaler`` where there is one (fp16-autocast)."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def step(optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    """``optimizer.step()``, or the scaler's step (skipped on inf/NaN gradients) and update."""
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def compiled(model: Any, mode: str) -> Any:
    """``torch.compile(model)`` in the compile mode (a module: it shares the model's parameters; or
    a function), else the model. It compiles with inductor through :func:`_counting_inductor`, which records the graphs
    it built and every call of them (:func:`watch`): how a compile instance proves that compiled
    code ran, not a fallback to eager."""
    return torch.compile(model, backend=_counting_inductor) if mode == "compile" else model


def _counting_inductor(gm: Any, example_inputs: Any) -> Any:
    """Inductor (what ``backend="inductor"`` runs), counting graphs and ops at compile time and
    calls of the compiled graph at run time. One function for the process: a backend made per
    model would be a different backend to dynamo's guards (BACKEND_MATCH), recompiling each model
    until its recompile limit (8) sends the rest to eager, measured on torch 2.14. Calls are
    counted at run time because a later model of the same class reuses the cached graph without
    calling the backend."""
    from torch._inductor.compile_fx import compile_fx  # what torch.compile(backend="inductor") calls

    _note(graphs=1, graph_ops=sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method")))
    inner = compile_fx(gm, example_inputs)

    @functools.wraps(inner)  # its attributes too (_boxed_call): called as dynamo calls the inner one
    def run(*args: Any, **kwargs: Any) -> Any:
        _note(compiled_calls=1)
        return inner(*args, **kwargs)

    return run


# --------------------------------------------------------------------------- what a mode did


ACTED_FIELDS = ("regions", "outputs", "cast", "graphs", "graph_ops", "compiled_calls", "tf32_probes")


@dataclass
class Acted:
    """What the numerics modes did in a stretch of work: autocast regions entered, the floating
    module outputs seen inside them and how many of those were in the autocast dtype; graphs
    compile built (their ops) and calls of compiled graphs; tf32 probes that read TensorFloat-32."""

    regions: int = 0
    outputs: int = 0
    cast: int = 0
    graphs: int = 0
    graph_ops: int = 0
    compiled_calls: int = 0
    tf32_probes: int = 0
    tf32_error: float = 0.0  # the largest relative error of a tf32 probe's matmul against float64

    def add(self, other: Acted) -> None:
        for name in ACTED_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.tf32_error = max(self.tf32_error, other.tf32_error)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Acted:
        return cls(**{k: v for k, v in (data or {}).items() if k in vars(cls()).keys()})

    def proof(self, mode: str) -> tuple[bool, str]:
        """(whether ``mode`` acted, what shows it or why not)."""
        if mode in AUTOCAST:
            dtype = str(AUTOCAST[mode]).removeprefix("torch.")
            if not self.regions:
                return False, f"{mode}: no autocast region was entered"
            if not self.cast:
                return False, (
                    f"{mode}: {self.regions} autocast regions cast nothing: none of their {self.outputs} "
                    f"floating module outputs was {dtype}"
                )
            return (
                True,
                f"{mode}: {self.cast} of {self.outputs} module outputs in {self.regions} autocast regions were {dtype}",
            )
        if mode == "compile":
            if not self.compiled_calls:
                return False, (f"compile: no compiled graph ran ({self.graphs} graphs built); the model ran eager")
            return True, (
                f"compile: {self.compiled_calls} calls of compiled graphs "
                f"({self.graphs} graphs, {self.graph_ops} ops built in this stretch; others reused)"
            )
        if mode == "tf32":
            if not self.tf32_probes:
                return False, "tf32: no probe ran"
            if self.tf32_error < TF32_MIN_ERROR:
                return False, (
                    f"tf32: a float32 matmul was IEEE-exact to {self.tf32_error:.1e} (TensorFloat-32 rounds to "
                    f"about 1e-3); cuBLAS did not use TF32"
                )
            return True, f"tf32: a float32 matmul differed from float64 by {self.tf32_error:.1e} (IEEE: about 1e-6)"
        return True, f"{mode}: the reference"


_LOCK = threading.Lock()
_PROCESS = Acted()  # everything this process did since the last reset
_STACK = threading.local()  # per thread: the watch() blocks it is inside


def _note(**counts: int) -> None:
    note(Acted(**counts))


def note(acted: Acted) -> None:
    """Count work done elsewhere (a cached training run, another process) as done here: in the
    process's count and in every :func:`watch` block this thread is inside."""
    with _LOCK:
        for log in [_PROCESS, *getattr(_STACK, "logs", [])]:
            log.add(acted)


@contextlib.contextmanager
def watch() -> Iterator[Acted]:
    """What the modes did inside the block, in this thread (a training run keeps it with its
    result, so that a cache hit can :func:`note` it again)."""
    acted = Acted()
    logs = _STACK.__dict__.setdefault("logs", [])
    logs.append(acted)
    try:
        yield acted
    finally:
        logs.remove(acted)


def process_log() -> Acted:
    """A copy of what the process did since the last reset (every thread)."""
    with _LOCK:
        copy = Acted()
        copy.add(_PROCESS)
    return copy


def reset_process_log() -> Acted:
    """What the process did since the last reset (every thread), and a fresh start."""
    global _PROCESS
    with _LOCK:
        done, _PROCESS = _PROCESS, Acted()
    return done


# Relative error of a 256x256 float32 matmul of uniform [0, 1) numbers against float64: IEEE about
# 1e-7 to 1e-6, TensorFloat-32 (10-bit mantissa) about 1e-4 to 1e-3.
TF32_MIN_ERROR = 2e-5


def tf32_probe(device: str | torch.device) -> None:
    """A float32 matmul on ``device`` against float64, recorded (:class:`Acted`): the proof that
    the tf32 mode's settings made cuBLAS use TensorFloat-32."""
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.rand(256, 256, generator=g, dtype=torch.float64),
        torch.rand(256, 256, generator=g, dtype=torch.float64),
    )
    got = (a.float().to(device) @ b.float().to(device)).double().cpu()
    note(Acted(tf32_probes=1, tf32_error=float((got - a @ b).norm() / (a @ b).norm())))
