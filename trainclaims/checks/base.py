"""What every check shares: the result a check returns (:class:`Checked`), the tolerance table,
the comparison primitives, and building a model and its batches in a numerics mode."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainclaims import numerics as num
from trainclaims.errors import Misuse, NotMeasured
from trainclaims.modes import REFERENCE, Mode, ModeLike, get
from trainclaims.step import LABELS, Batch, batch_size, to_device, unequal_skips
from trainclaims.verdicts import Verdict, judge_gap

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# The relative gap two computations that are equal in exact arithmetic keep after a few training
# steps, per dtype: float64 and float32 as the suite's accumulation properties measured them (the
# largest gap over hypothesis' examples stays 10-100x below: float32 2.4e-7 after 3 steps); the
# half types from autocast runs (bf16-autocast 5.3e-4 on the seed net). (atol, rtol)
TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (1e-2, 2e-2),
    torch.float16: (1e-3, 5e-3),
}
# With BatchNorm, k micro-batches are not one large batch. "Differs" means a gap no rounding makes:
# 100x float32's equality bound. Measured (CPU, seeds 0-19): the suite's BN net (float64) 17-92%
# (k=2) and 27-87% (k=4); the example CNN (examples/small-cnn, float32, batch 32) 4.0-14.5% (k=2)
# and 6.9-25.7% (k=4); without BN the same comparison stays below 1.6e-8. DDP with BN against one
# process (ddp_batchnorm, 2 gloo ranks x 16, the example CNN, seeds 0-9): outputs 1.7-10.0% (per
# rank), averaged gradients 4.0-8.8%; the suite's BN net (float64, 2 x 8, seeds 0-4): 20-63%, 25-43%.
BATCHNORM_MIN_GAP = 1e-2


def tolerance(dtype: torch.dtype | str) -> tuple[float, float]:
    """(atol, rtol) for ``dtype``; float32's for a dtype not in the table."""
    return TOLERANCE.get(num.dtype_of(dtype), TOLERANCE[torch.float32])


def rtol(dtype: torch.dtype | str) -> float:
    """The relative tolerance for ``dtype``: the bound of every relative gap a check compares."""
    return tolerance(dtype)[1]


def assert_close(actual: Any, expected: Any, dtype: torch.dtype | None = None, msg: str = "") -> None:
    """``torch.testing.assert_close`` with :data:`TOLERANCE`'s bounds for ``dtype`` (default: the
    expected tensor's)."""
    atol, rel = tolerance(dtype or expected.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rel, msg=(lambda m: f"{msg}\n{m}") if msg else None)


def relative_gap(a: torch.Tensor | Iterable[torch.Tensor], b: torch.Tensor | Iterable[torch.Tensor]) -> float:
    """``|a - b| / |b|`` of two tensors, or over all the tensors of two sequences together
    (computed in float64), 0 where both are zero."""
    a, b = ([t] if isinstance(t, torch.Tensor) else t for t in (a, b))
    a_flat = torch.cat([t.detach().double().flatten().cpu() for t in a])
    b_flat = torch.cat([t.detach().double().flatten().cpu() for t in b])
    denominator = b_flat.norm().item()
    difference = (a_flat - b_flat).norm().item()
    return difference / denominator if denominator else difference


def parameter_gap(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    """The largest :func:`relative_gap` of one tensor of ``a`` to its counterpart in ``b``: how two
    models' parameters are compared (a small layer's gap is not hidden by a large one's norm); 0
    for no tensors."""
    return max((relative_gap([x], [y]) for x, y in zip(a, b, strict=True)), default=0.0)


@dataclass
class Checked:
    """What a check measured, and in which numerics mode.

    ``expect`` is ``"equal"`` (the claim holds where ``gap <= bound``), ``"differs"`` (it holds
    where ``gap > bound``: a claim that two things are not the same) or ``"exact"`` (``gap`` must
    be 0, bit for bit). ``mode`` is the numerics mode the check measured in and ``dtype`` the dtype
    the claim was computed in (before the mode): an equality measured in another mode than the
    reference is judged against the mode's rounding bound for that dtype (:func:`judge`).

    An equality states what it rules out: ``broken`` is the gap of the claim's broken side on the
    same inputs (``broken_recipe``: loss/k of unequal token counts, clipping before ``unscale_``,
    checkpointing without the RNG state), and the claim holds only where that gap is beyond the
    bound (beyond the mode's rounding bound in a mode): inputs on which the broken recipe passes too
    cannot tell the two apart, and say so. ``unmeasured`` says why the check measured nothing (a
    mode without the GradScaler a claim is about, one rank where ranks are compared): then it
    neither holds nor fails, and :meth:`assert_holds` / :meth:`judge` raise
    :class:`trainclaims.verdicts.NotMeasured` (a skip in pytest and unittest) with the reason.
    """

    check: str
    claim: str  # what was checked, in words
    expect: str
    gap: float
    bound: float
    values: dict[str, Any] = field(default_factory=dict)
    mode: Mode = REFERENCE
    dtype: str = "float32"
    broken: float | None = None  # the broken side's gap on the same inputs (equalities)
    broken_recipe: str = ""
    unmeasured: str = ""  # why nothing was measured, where nothing was
    hint: str = ""  # where it does not hold: the parameter that parted most and the likely cause

    def __post_init__(self) -> None:
        self.mode = get(self.mode)
        self.dtype = num.dtype_name(self.dtype)
        if not self.unmeasured:
            self.unmeasured = skipped_every_step(self.values)

    def _broken_bound(self) -> float:
        """How far the broken side must be: beyond the bound, and in a mode beyond its rounding."""
        in_mode = None if self.mode.reference else self.mode.bound(self.dtype)
        return max(self.bound, in_mode.value if in_mode is not None else self.bound)

    @property
    def tells_apart(self) -> bool:
        """Whether the broken side is beyond the bound (True where there is none to show)."""
        return self.broken is None or self.expect == "differs" or self.broken > self._broken_bound()

    @property
    def holds(self) -> bool:
        if self.unmeasured or math.isnan(self.gap) or not self.tells_apart:
            return False
        if self.expect == "differs":
            return self.gap > self.bound
        return self.gap <= self.bound

    def __str__(self) -> str:
        if self.unmeasured:
            return f"{self.check}: {self.claim}: not measured: {self.unmeasured}"
        relation = {"equal": "<=", "exact": "==", "differs": ">"}[self.expect]
        state = "holds" if self.holds else "does not hold"
        text = f"{self.check}: {self.claim}: gap {self.gap:.3g} (needs {relation} {self.bound:g})"
        if self.broken is not None and self.expect != "differs":
            text += f"; {self.broken_recipe or 'the broken side'}: gap {self.broken:.3g}"
            if not self.tells_apart:
                text += (
                    f", within {self._broken_bound():g} too: these inputs cannot tell the claim from its broken side"
                )
        if self.hint and not self.holds:
            text += f"; {self.hint}"
        return f"{text}: {state}"

    def refute(self, why: str) -> None:
        """The claim does not hold for a reason the gap does not show (a count, a side condition):
        the gap becomes NaN, which never holds, and ``why`` is added to the claim's words."""
        self.gap = float("nan")
        self.claim += f"; {why}"

    def numbers(self) -> dict[str, Any]:
        """The evidence: gap, bound, expectation, the mode, the broken side's gap, and what was
        measured, as plain data."""
        out = {"check": self.check, "gap": self.gap, "bound": self.bound, "expect": self.expect}
        out["numerics"] = self.mode.name
        if self.broken is not None:
            out |= {"broken_gap": self.broken, "broken_recipe": self.broken_recipe}
        if self.unmeasured:
            out["not_measured"] = self.unmeasured
        return out | self.values

    def _detail(self) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in self.values.items())

    def assert_holds(self) -> None:
        if self.unmeasured:
            raise NotMeasured(str(self))
        if not self.holds:
            raise AssertionError(f"{self} [{self._detail()}]")

    def judge(self, evidence: Any, numerics: ModeLike | None = None) -> None:
        """Record the numbers in a trainclaims test's ``evidence`` and apply the verdict rules
        (:func:`trainclaims.verdicts.judge_gap`): in the reference mode, and for a claim that two
        things differ or are bit-for-bit equal, the claim must hold (asserted). An equality measured
        in another mode holds within the bound, is *conditional* within the mode's rounding bound
        for the dtype (with the gap), and fails beyond it; its broken side must be beyond that
        bound. A check that measured nothing raises :class:`NotMeasured` (the test skips, with
        why). ``numerics`` is the older form: the mode of a check that was not told its mode (one
        told another mode is an error)."""
        if numerics is not None:
            warnings.warn(
                "Checked.judge(evidence, numerics) is deprecated and will be removed in trainclaims 0.5: pass "
                "numerics= to the check (it records the mode it measured in) and call judge(evidence)",
                DeprecationWarning,
                stacklevel=2,
            )
        if numerics is not None and get(numerics) != self.mode:
            if not self.mode.reference:
                raise Misuse(
                    f"{self.check} measured in {self.mode.name}, but judge() was given {get(numerics).name}: "
                    "leave numerics out of judge() (the check records its mode)"
                )
            self.mode = get(numerics)  # the older form: the mode is named here, not to the check
        evidence.record(**self.numbers())
        if self.unmeasured:
            raise NotMeasured(str(self))
        if self.expect != "equal" or self.mode.reference or not self.tells_apart:
            self.assert_holds()
            return
        unequal = unequal_skips(self.values.get("scaler_skips") or ())
        judged = judge_gap(self.gap, self.bound, self.mode, f"{self.check}: {self.claim}", self.dtype, "", unequal)
        if judged.verdict is Verdict.FAILS:
            raise AssertionError(f"{judged.why} [{self._detail()}]")
        evidence.conclude_in_mode(judged)


def skipped_every_step(values: dict[str, Any]) -> str:
    """Why nothing was measured where a GradScaler skipped every step of a run (its float16
    gradients overflowed each time, so no run trained and no gap means anything), else "": read
    from a check's ``scaler_skips`` (per run) and ``steps``."""
    skips, steps = values.get("scaler_skips") or (), values.get("steps")
    if not isinstance(steps, int) or steps < 1 or not any(s >= steps for s in skips):
        return ""
    return (
        f"the GradScaler skipped every one of the {steps} steps (skips per run: {' / '.join(map(str, skips))}): "
        "float16 overflowed in every gradient, so no run trained; a loss that sums tokens overflows first: give "
        "a mean loss, or a GradScaler with a lower init_scale"
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(_short(v) for v in value[:6])}, ...]"
    return repr(value)


# --------------------------------------------------------------------------- models and batches


def sgd(lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0) -> OptimizerFactory:
    """An optimizer factory (picklable, for the data-parallel checks): SGD with these settings."""
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def dtype_of_model(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 for a model without one)."""
    return num.param_dtype(model) or torch.float32


def build(
    model_fn: ModelFactory, device: str | torch.device, dtype: torch.dtype | None, mode: ModeLike = REFERENCE
) -> tuple[nn.Module, torch.dtype]:
    """A model from the factory on ``device``, in ``dtype`` (default: its own), its parameters in
    the dtype the mode holds them in; with the dtype the claim is computed in (before the mode)."""
    model = model_fn()
    claim_dtype = dtype or dtype_of_model(model)
    return num.place(model, mode, device, dtype), claim_dtype


def batches_on(batches: Iterable[Batch], device: str | torch.device, model: nn.Module) -> list[Batch]:
    """Batches on ``device``, their floating tensors in the model's parameter dtype."""
    dt = dtype_of_model(model)
    return [to_device(b, device, dt) for b in batches]


def for_ranks(batches: Iterable[Batch], world: int, micro_batches: int | None = None) -> list[Batch]:
    """The batches on the CPU, as they go to ``world`` rank processes (each takes its shard there);
    :class:`Misuse` (a ValueError), before any process starts, for one that does not split into
    ``world`` ranks (of ``micro_batches`` micro-batches each, where given), or fewer than 2 ranks
    (a data-parallel claim compares ranks)."""
    if world < 2:
        raise Misuse(f"world={world}: a data-parallel claim needs 2 or more ranks to compare")
    out = [to_device(b, "cpu") for b in batches]
    for b in out:
        if batch_size(b) % (world * (micro_batches or 1)):
            into = f"{world} ranks" if micro_batches is None else f"{world} ranks x {micro_batches} micro-batches"
            raise Misuse(f"a batch of {batch_size(b)} does not split into {into}")
    return out


def batch_list(batches: Any, check: str, *, targets: bool = True) -> list[Batch]:
    """The checks' one convention for data: a sequence of batches, each ``(inputs, targets)``, a
    mapping of named inputs with ``labels``, or (where the check needs no targets) bare inputs;
    a bare tensor given as the batches is one batch of inputs. :class:`Misuse`, before any work,
    naming the fix, for one batch given where a sequence is meant, or a batch without targets
    where the check needs them."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    if isinstance(batches, Mapping):
        raise Misuse(f"{check}: batches is one mapping batch: pass a sequence of batches, [batch]")
    if isinstance(batches, tuple) and len(batches) == 2 and all(isinstance(t, torch.Tensor) for t in batches):
        raise Misuse(f"{check}: batches is one (inputs, targets) pair: pass a sequence of batches, [(inputs, targets)]")
    out = list(batches)
    if not out:
        raise Misuse(f"{check}: no batch given")
    if targets and any(isinstance(b, torch.Tensor) for b in out):
        raise Misuse(
            f"{check}: a batch of bare inputs has no targets; give (inputs, targets) or a mapping with 'labels'"
        )
    return out


def inputs_of(batch: Batch | torch.Tensor) -> Any:
    """A batch's inputs: a bare tensor, the first of a pair, a mapping's entries but ``labels``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k != LABELS}
    return batch[0]


def call(model: Any, inputs: Any) -> Any:
    """The model on a batch's inputs (:func:`inputs_of`): ``model(**inputs)`` for a mapping."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def keyword_only(positional: int, *names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A check whose tuning arguments are keyword-only since trainclaims 0.4: given positionally
    (after its first ``positional`` arguments) they still work for one release, with a
    DeprecationWarning naming the keywords."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def check(*args: Any, **kwargs: Any) -> Any:
            if len(args) > positional:
                extra = args[positional:]
                if len(extra) > len(names):
                    raise TypeError(f"{fn.__name__}() takes {positional} positional arguments")
                warnings.warn(
                    f"{fn.__name__}: pass {', '.join(f'{n}=' for n in names[: len(extra)])} by keyword (positional is "
                    "deprecated since trainclaims 0.4 and will be removed in 0.5)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs.update(zip(names, extra, strict=False))
                args = args[:positional]
            return fn(*args, **kwargs)

        return check

    return wrap


def running_stats(model: nn.Module) -> list[torch.Tensor]:
    """Every BatchNorm layer's running mean and variance, in module order (those it keeps)."""
    return [t for m in batchnorms(model) for t in (m.running_mean, m.running_var) if t is not None]


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
