"""What a numerics mode (:class:`trainclaims.modes.Mode`) does in code, and the numeric environment
a test runs in.

Each function reads the mode's attributes, never its name: :func:`pinned` sets the fp32 precision
the mode pins (and, where a test asserts run-to-run identity, deterministic algorithms) and puts
back what it found; :func:`autocast` is the mode's autocast region; :func:`compiled` compiles a
model or function where the mode compiles; :func:`grad_scaler` makes the GradScaler the mode trains
through; :func:`place` puts a model in the dtype the mode holds parameters in. Each of them records
what it did (:class:`trainclaims.modes.Acted`) in every :func:`watch` block of the calling thread:
that is how a test shows that its mode acted (the plugin opens one block per test; a training run
keeps its own, which a cache hit :func:`note`\\ s again, and rank processes send theirs back).

:func:`pinned` uses one API per torch version: torch 2.9+ has ``torch.backends.*.fp32_precision``
and raises when the legacy ``allow_tf32`` flags are read after that API set them apart (measured on
2.14); older torch has only the legacy flags, and on 2.1 even ``hasattr(torch.backends.cuda.matmul,
"fp32_precision")`` raises AssertionError.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from trainclaims.modes import (  # noqa: F401  re-exported: the modes' names, as the suite's tests use them
    MODES,
    REFERENCE,
    Acted,
    Mode,
    ModeLike,
    dtype_name,
    get,
    mode_order,
    parse_modes,
)

# CUBLAS_WORKSPACE_CONFIG: cuBLAS is deterministic only with a fixed workspace; PyTorch raises in
# deterministic mode without it (https://docs.nvidia.com/cuda/cublas/#results-reproducibility).
CUBLAS_WORKSPACE = ":4096:8"


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """``"float32"``, ``"torch.float32"`` or ``torch.float32`` -> ``torch.float32`` (the one map from
    names to dtypes: reports and rank results carry ``str(dtype)``)."""
    if isinstance(name, torch.dtype):
        return name
    found = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return found


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
    for name, get_leaf in {
        "cuda.matmul": lambda: b.cuda.matmul,
        "cudnn.conv": lambda: b.cudnn.conv,
        "cudnn.rnn": lambda: b.cudnn.rnn,
        "mkldnn.matmul": lambda: b.mkldnn.matmul,
        "mkldnn.conv": lambda: b.mkldnn.conv,
        "mkldnn.rnn": lambda: b.mkldnn.rnn,
    }.items():
        try:
            obj = get_leaf()
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
def pinned(mode: ModeLike = REFERENCE, deterministic: bool = False) -> Iterator[None]:
    """Run the block with the fp32 precision ``mode`` pins (``tf32`` for the tf32 mode, ``ieee``
    for every other) and, with ``deterministic``, deterministic algorithms (cuDNN's too, no cuDNN
    autotuning); afterwards every setting is what it was."""
    mode = get(mode)
    saved = _snapshot()
    try:
        _set_precision(mode.fp32_precision == "tf32")
        if deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        yield
    finally:
        _restore(saved)


def _read(getter: Any) -> Any:
    try:
        return getter()
    except (AttributeError, AssertionError, RuntimeError) as err:
        return f"unreadable: {str(err).splitlines()[0][:80]}"


def precision_settings() -> dict[str, Any]:
    """The fp32 precision settings as this torch has them, through the API the numerics guard uses
    (one API: reading the other can raise)."""
    if _new_api():
        settings = {f"{name}.fp32_precision": obj.fp32_precision for name, obj in _leaves().items()}
        settings |= {
            "fp32_precision": torch.backends.fp32_precision,
            "float32_matmul_precision": _read_legacy_precision(),
        }
    else:
        settings = {
            "float32_matmul_precision": _read(torch.get_float32_matmul_precision),
            "cuda.matmul.allow_tf32": _read(lambda: torch.backends.cuda.matmul.allow_tf32),
            "cudnn.allow_tf32": _read(lambda: torch.backends.cudnn.allow_tf32),
        }
    return settings


# --------------------------------------------------------------------------- what a mode changes in code


def autocast(mode: ModeLike, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of ``mode`` on ``device`` (a no-op for the modes without one). Float64
    tensors are never autocast: a float64 claim computes the same in every autocast mode. The
    region records what it cast (:func:`watch`): the dtype of every module's floating output
    inside it, which is how an autocast instance proves that its mode acted."""
    mode = get(mode)
    if mode.autocast:
        return _AutocastRegion(torch.device(device).type, dtype_of(mode.autocast))
    return contextlib.nullcontext()


class _AutocastRegion:
    def __init__(self, kind: str, dtype: torch.dtype) -> None:
        self.region = torch.autocast(kind, dtype=dtype)
        self.dtype = dtype
        self.handle: Any = None

    def __enter__(self) -> None:
        self.region.__enter__()
        note(Acted(regions=1))
        # a global forward hook (public: torch.nn.modules.module.register_module_forward_hook)
        self.handle = nn.modules.module.register_module_forward_hook(self._seen)
        _REGIONS.__dict__.setdefault("open", []).append(self)
        return None

    def _seen(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.observe(output)

    def observe(self, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            note(Acted(outputs=1, cast=int(output.dtype == self.dtype)))

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


def grad_scaler(mode: ModeLike, device: str | torch.device) -> Any:
    """A GradScaler where ``mode`` trains through one (float16 gradients underflow without it), else None."""
    mode = get(mode)
    if not mode.scaler:
        return None
    make = _scaler_class(torch.device(device).type)
    if make is None:
        raise RuntimeError(mode.unsupported(str(device)))
    return make()


def param_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (what its inputs are cast to), or None for
    a model without one: the one way the library reads it."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def compiled(model: Any, mode: ModeLike) -> Any:
    """``torch.compile(model)`` where ``mode`` compiles (a module: it shares the model's parameters;
    or a function), else the model. It compiles with inductor through :func:`_counting_inductor`,
    which records the graphs it built and every call of them (:func:`watch`): how a compile
    instance proves that compiled code ran, not a fallback to eager."""
    return torch.compile(model, backend=_counting_inductor) if get(mode).compiles else model


def _counting_inductor(gm: Any, example_inputs: Any) -> Any:
    """Inductor (what ``backend="inductor"`` runs), counting graphs and ops at compile time and
    calls of the compiled graph at run time. One function for the process: a backend made per
    model would be a different backend to dynamo's guards (BACKEND_MATCH), recompiling each model
    until its recompile limit (8) sends the rest to eager, measured on torch 2.14. Calls are
    counted at run time because a later model of the same class reuses the cached graph without
    calling the backend."""
    from torch._inductor.compile_fx import compile_fx  # what torch.compile(backend="inductor") calls

    note(Acted(graphs=1, graph_ops=sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method"))))
    inner = compile_fx(gm, example_inputs)

    @functools.wraps(inner)  # its attributes too (_boxed_call): called as dynamo calls the inner one
    def run(*args: Any, **kwargs: Any) -> Any:
        note(Acted(compiled_calls=1))
        return inner(*args, **kwargs)

    return run


def place(model: nn.Module, mode: ModeLike, device: str | torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """``model`` on ``device``, in ``dtype`` (default: its own), its parameters in the dtype
    ``mode`` holds them in (:meth:`Mode.param_dtype`); recorded (``held``) where the mode moved them."""
    mode = get(mode)
    own = dtype or param_dtype(model) or torch.float32
    target = dtype_of(mode.param_dtype(own))
    if target != own:
        note(Acted(held={dtype_name(target): 1}))
    if dtype is None and target == own:
        return model.to(device)
    return model.to(device=device, dtype=target)


def before_test(mode: ModeLike, device: str) -> None:
    """What ``mode`` runs before each of its tests, on the test's device: what it keeps between tests
    cleared (compile's cache), then its probe (tf32)."""
    mode = get(mode)
    if mode.fresh is not None:
        mode.fresh()
    if mode.probe is not None:
        note(mode.probe(device))


# --------------------------------------------------------------------------- what a mode did


_STACK = threading.local()  # per thread: the watch() blocks it is inside


def note(acted: Acted) -> None:
    """Count work as done in every :func:`watch` block this thread is inside (work done elsewhere
    too: a cached training run, another process)."""
    for log in getattr(_STACK, "logs", ()):
        log.add(acted)


@contextlib.contextmanager
def watch() -> Iterator[Acted]:
    """What the modes did inside the block, in this thread (the plugin watches each test; a
    training run keeps its own, so that a cache hit can :func:`note` it again)."""
    acted = Acted()
    logs = _STACK.__dict__.setdefault("logs", [])
    logs.append(acted)
    try:
        yield acted
    finally:
        del logs[next(i for i, log in enumerate(logs) if log is acted)]  # this block's, not an equal one
