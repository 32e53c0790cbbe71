"""Checks of PyTorch's training claims on your own model.

Each function takes what a user of PyTorch has — a model factory (any ``nn.Module``: called once
per copy it trains, so every copy starts from the same weights; seed inside it), batches, a loss,
an optimizer factory, a device, a numerics mode — measures one claim on it and returns a
:class:`Checked`: the gap it measured, the bound for the dtype, whether the claim holds, and the
numbers behind it. Nothing is asserted inside a check: ``result.assert_holds()`` raises with the
numbers, and ``result.judge(evidence, numerics)`` records them in a trainclaims test's evidence
and applies the verdict rules (in a numerics mode other than ieee an equality that holds only to
the mode's rounding is *conditional*, with the gap).

::

    from trainclaims import checks

    def test_accumulation(evidence, numerics):
        result = checks.accumulation(make_model, batches, k=4, numerics=numerics)
        result.judge(evidence, numerics)

Tolerances are data, per dtype (:data:`TOLERANCE`), and every comparison is a relative norm gap
(``|a - b| / |b|``; for parameters the largest over the model's tensors) or an exact equality; :func:`assert_close` is
``torch.testing.assert_close`` with this table's bounds.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainclaims import numerics as num
from trainclaims.bench import step_flops  # noqa: F401  the FLOPs of a step of any model, with the checks

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

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


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for ``dtype``; float32's for a dtype not in the table."""
    return TOLERANCE.get(dtype, TOLERANCE[torch.float32])


def assert_close(actual: Any, expected: Any, dtype: torch.dtype | None = None, msg: str = "") -> None:
    """``torch.testing.assert_close`` with :data:`TOLERANCE`'s bounds for ``dtype`` (default: the
    expected tensor's)."""
    atol, rtol = tolerance(dtype or expected.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=(lambda m: f"{msg}\n{m}") if msg else None)


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
    """What a check measured.

    ``expect`` is ``"equal"`` (the claim holds where ``gap <= bound``), ``"differs"`` (it holds
    where ``gap > bound``: a claim that two things are not the same) or ``"exact"`` (``gap`` must
    be 0, bit for bit).
    """

    check: str
    claim: str  # what was checked, in words
    expect: str
    gap: float
    bound: float
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        if math.isnan(self.gap):
            return False
        if self.expect == "differs":
            return self.gap > self.bound
        return self.gap <= self.bound

    def __str__(self) -> str:
        relation = {"equal": "<=", "exact": "==", "differs": ">"}[self.expect]
        state = "holds" if self.holds else "does not hold"
        return f"{self.check}: {self.claim}: gap {self.gap:.3g} (needs {relation} {self.bound:g}): {state}"

    def refute(self, why: str) -> None:
        """The claim does not hold for a reason the gap does not show (a count, a side condition):
        the gap becomes NaN, which never holds, and ``why`` is added to the claim's words."""
        self.gap = float("nan")
        self.claim += f"; {why}"

    def numbers(self) -> dict[str, Any]:
        """The evidence: gap, bound, expectation and what was measured, as plain data."""
        return {"check": self.check, "gap": self.gap, "bound": self.bound, "expect": self.expect, **self.values}

    def assert_holds(self) -> None:
        if not self.holds:
            detail = ", ".join(f"{k}={_short(v)}" for k, v in self.values.items())
            raise AssertionError(f"{self} [{detail}]")

    def judge(self, evidence: Any, numerics: str = num.REFERENCE) -> None:
        """Record the numbers in a trainclaims test's ``evidence`` and apply the verdict rules: in
        ieee the claim must hold (asserted); an equality measured in another numerics mode holds
        there within the bound, else is *conditional* with the gap (``Evidence.judge_in_mode``)."""
        evidence.record(**self.numbers())
        if self.expect == "equal" and numerics != num.REFERENCE:
            evidence.judge_in_mode(numerics, self.gap, self.bound, f"{self.check}: {self.claim}")
        else:
            self.assert_holds()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(_short(v) for v in value[:6])}, ...]"
    return repr(value)


# --------------------------------------------------------------------------- training, shared


def sgd(lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0) -> OptimizerFactory:
    """An optimizer factory (picklable, for the data-parallel checks): SGD with these settings."""
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _build(model_fn: ModelFactory, device: str, dtype: torch.dtype | None) -> nn.Module:
    model = model_fn()
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def _dtype_of(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _to(batch: Batch, device: str, dtype: torch.dtype) -> Batch:
    x, y = batch
    x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
    return x, y.to(device)


def _stepper(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    numerics: str,
    device: str,
    divide: bool = True,
) -> Callable[..., float]:
    """A training step of ``model`` in the ``numerics`` mode: ``step(micro_batches, context=None)``
    accumulates over the micro-batches (the loss divided by their number where ``divide``), each
    forward and backward inside ``context(i)`` where given, takes one optimizer step and returns
    the summed loss."""
    run = num.compiled(model, numerics)
    scaler = num.grad_scaler(numerics, device)

    def step(micro_batches: Sequence[Batch], context: Callable[[int], Any] | None = None) -> float:
        optimizer.zero_grad()
        total = 0.0
        for i, (x, y) in enumerate(micro_batches):
            with context(i) if context else contextlib.nullcontext():
                with num.autocast(numerics, device):
                    loss = loss_fn(run(x), y)
                    if divide:
                        loss = loss / len(micro_batches)
                num.backward(loss, scaler)
            total += loss.item()
        num.step(optimizer, scaler)
        return total

    return step


def _train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: Sequence[Sequence[Batch]],
    loss_fn: LossFn,
    numerics: str,
    device: str,
    divide: bool = True,
) -> list[float]:
    """One optimizer step per element of ``steps``, accumulating over its micro-batches (the loss
    divided by their number where ``divide``). Returns each step's summed loss."""
    step = _stepper(model, optimizer, loss_fn, numerics, device, divide)
    return [step(micro_batches) for micro_batches in steps]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _split(batch: Batch, k: int) -> list[Batch]:
    x, y = batch
    if x.shape[0] % k:
        raise ValueError(f"a batch of {x.shape[0]} does not split into k={k} equal micro-batches")
    return list(zip(x.chunk(k), y.chunk(k), strict=True))


# --------------------------------------------------------------------------- accumulation


def accumulation(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    k: int,
    *,
    loss_fn: LossFn = F.cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    divide: bool = True,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: str = num.REFERENCE,
) -> Checked:
    """Gradient accumulation imitates a k-times larger batch: one copy of the model steps on k
    micro-batches of each batch (loss/k each, ``divide=False``: the loss as it is), the other on
    the whole batch; after ``len(batches)`` steps their parameters agree to the dtype's rounding.

    Holds for a model without BatchNorm and with ``divide``; undivided the accumulated gradient is k
    times the large batch's (the check then fails, with the gap); with BatchNorm see
    :func:`accumulation_with_batchnorm`."""
    optimizer_fn = optimizer_fn or sgd()
    accumulated, large = _build(model_fn, device, dtype), _build(model_fn, device, dtype)
    dt = _dtype_of(large)
    data = [_to(b, device, dt) for b in batches]
    opt_a, opt_l = optimizer_fn(accumulated.parameters()), optimizer_fn(large.parameters())
    _train(accumulated, opt_a, [_split(b, k) for b in data], loss_fn, numerics, device, divide=divide)
    _train(large, opt_l, [[b] for b in data], loss_fn, numerics, device)
    gap = parameter_gap(accumulated.parameters(), large.parameters())
    return Checked(
        "accumulation",
        f"{k} micro-batches {'with loss/k' if divide else 'with the loss undivided'} equal one batch "
        f"{k} times larger after {len(data)} steps",
        "equal",
        gap,
        tolerance(dt)[1],
        {
            "k": k,
            "steps": len(data),
            "batch": int(data[0][0].shape[0]),
            "divide": divide,
            "dtype": str(dt),
            "device": device,
            "numerics": numerics,
            "batchnorm_layers": len(_batchnorms(large)),
        },
    )


def accumulation_with_batchnorm(
    model_fn: ModelFactory,
    batch: Batch,
    k: int,
    *,
    loss_fn: LossFn = F.cross_entropy,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: str = num.REFERENCE,
    min_gap: float = BATCHNORM_MIN_GAP,
) -> Checked:
    """Accumulation does not fix BatchNorm: each micro-batch is normalized with its own statistics,
    so the accumulated gradient (loss/k) differs from the large batch's by more than ``min_gap``
    (relative), and every BN layer's running statistics take k updates instead of one."""
    accumulated, large = _build(model_fn, device, dtype), _build(model_fn, device, dtype)
    if not _batchnorms(large):
        raise ValueError("accumulation_with_batchnorm: the model has no BatchNorm layer")
    dt = _dtype_of(large)
    x, y = _to(batch, device, dt)
    for model, parts in ((accumulated, _split((x, y), k)), (large, [(x, y)])):
        model.train()
        run = num.compiled(model, numerics)
        for xb, yb in parts:
            with num.autocast(numerics, device):
                loss = loss_fn(run(xb), yb) / len(parts)
            loss.backward()
    gap = relative_gap(
        [p.grad for p in accumulated.parameters() if p.grad is not None],
        [p.grad for p in large.parameters() if p.grad is not None],
    )
    updates = [int(m.num_batches_tracked) for m in _batchnorms(accumulated)]
    large_updates = [int(m.num_batches_tracked) for m in _batchnorms(large)]
    result = Checked(
        "accumulation_with_batchnorm",
        f"with BatchNorm, {k} micro-batches (loss/k) give a different gradient than one batch {k} times larger",
        "differs",
        gap,
        min_gap,
        {
            "k": k,
            "batch": int(x.shape[0]),
            "dtype": str(dt),
            "device": device,
            "numerics": numerics,
            "running_stat_updates": updates,
            "large_batch_updates": large_updates,
        },
    )
    if any(u != k for u in updates) or any(u != 1 for u in large_updates):
        result.refute(f"running statistics took {updates} updates (expected {k} each)")
    return result


# --------------------------------------------------------------------------- train/eval


def batchnorm_eval(
    model_fn: ModelFactory,
    train_batches: Sequence[torch.Tensor],
    x: torch.Tensor,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """In eval mode BatchNorm normalizes with its running statistics: after forward passes in
    training mode over ``train_batches``, each BN layer's eval output equals
    ``(input - running_mean) / sqrt(running_var + eps) * weight + bias`` computed by hand from its
    own input, and a sample's output does not depend on the rest of its batch (the model's output
    for ``x[:1]`` alone equals its row in the output for ``x``)."""
    model = _build(model_fn, device, dtype)
    bns = _batchnorms(model)
    if not bns:
        raise ValueError("batchnorm_eval: the model has no BatchNorm layer")
    if any(m.running_mean is None for m in bns):
        raise ValueError("batchnorm_eval: a BatchNorm layer keeps no running statistics (track_running_stats=False)")
    dt = _dtype_of(model)
    model.train()
    with torch.no_grad():
        for xb in train_batches:
            model(xb.to(device=device, dtype=dt))
    model.eval()
    gaps: list[float] = []

    def by_hand(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        (inp,) = inputs
        shape = [1, -1] + [1] * (inp.dim() - 2)
        want = (inp - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
        if module.affine:
            want = want * module.weight.view(shape) + module.bias.view(shape)
        gaps.append(relative_gap([output], [want]))

    hooks = [m.register_forward_hook(by_hand) for m in bns]
    try:
        with torch.no_grad():
            xd = x.to(device=device, dtype=dt)
            full = model(xd)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        alone = model(xd[:1])
    batch_gap = relative_gap([full[:1]], [alone])
    return Checked(
        "batchnorm_eval",
        "eval-mode BatchNorm uses the running statistics; a sample's output does not depend on its batch",
        "equal",
        max([*gaps, batch_gap]),
        tolerance(dt)[1],
        {
            "layers": len(bns),
            "layer_gaps": gaps,
            "batch_dependence": batch_gap,
            "dtype": str(dt),
            "device": device,
            "tracked": [int(m.num_batches_tracked) for m in bns],
        },
    )


def running_statistics(
    model_fn: ModelFactory,
    batches: Sequence[torch.Tensor],
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """BatchNorm's running statistics are an EMA of the batch statistics, computed by hand from each
    BN layer's own inputs over training-mode forward passes: ``running = (1 - m) * running + m *
    observed`` with the batch mean and the *unbiased* batch variance (``momentum=None``: the
    cumulative average). Records the gap of the biased-variance reading too (``biased_var_gap``:
    evidence that the check tells the two apart)."""
    model = _build(model_fn, device, dtype)
    bns = _batchnorms(model)
    if not bns or any(m.running_mean is None for m in bns):
        raise ValueError("running_statistics: the model has no BatchNorm layer that keeps running statistics")
    dt = _dtype_of(model)
    by_hand = {
        id(m): {
            "mean": m.running_mean.detach().double().clone(),
            "var": m.running_var.detach().double().clone(),
            "biased": m.running_var.detach().double().clone(),
            "n": 0,
        }
        for m in bns
    }

    def follow(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        (inp,) = inputs
        dims = [d for d in range(inp.dim()) if d != 1]
        x = inp.detach().double()
        count = x.numel() // x.shape[1]
        mean, biased = x.mean(dims), x.var(dims, unbiased=False)
        state = by_hand[id(module)]
        state["n"] += 1
        m = module.momentum if module.momentum is not None else 1.0 / state["n"]
        state["mean"] = (1 - m) * state["mean"] + m * mean
        state["var"] = (1 - m) * state["var"] + m * biased * count / (count - 1)
        state["biased"] = (1 - m) * state["biased"] + m * biased

    hooks = [m.register_forward_hook(follow) for m in bns]
    model.train()
    try:
        with torch.no_grad():
            for xb in batches:
                model(xb.to(device=device, dtype=dt))
    finally:
        for h in hooks:
            h.remove()
    mean_gap = max(relative_gap(m.running_mean, by_hand[id(m)]["mean"]) for m in bns)
    var_gap = max(relative_gap(m.running_var, by_hand[id(m)]["var"]) for m in bns)
    biased_gap = max(relative_gap(m.running_var, by_hand[id(m)]["biased"]) for m in bns)
    return Checked(
        "running_statistics",
        f"BatchNorm's running mean and variance follow the EMA of the batch mean and unbiased variance "
        f"over {len(batches)} training batches",
        "equal",
        max(mean_gap, var_gap),
        tolerance(dt)[1],
        {
            "layers": len(bns),
            "momentum": [m.momentum for m in bns],
            "mean_gap": mean_gap,
            "var_gap": var_gap,
            "biased_var_gap": biased_gap,
            "dtype": str(dt),
            "device": device,
        },
    )


def eval_determinism(
    model_fn: ModelFactory,
    x: torch.Tensor,
    *,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """``model.eval()`` makes the forward pass deterministic: Dropout is the identity, so
    ``repeats`` eval passes over ``x`` are bit-for-bit equal; where the model has Dropout with
    p > 0 its training-mode passes differ from each other (recorded as ``train_gap``: evidence
    that the eval passes did not agree only because nothing was random)."""
    model = _build(model_fn, device, dtype)
    dt = _dtype_of(model)
    xd = x.to(device=device, dtype=dt)
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    with torch.no_grad():
        model.train()
        train_out = [model(xd) for _ in range(2)]
        model.eval()
        outs = [model(xd) for _ in range(repeats)]
    gap = max(float((o - outs[0]).abs().max()) for o in outs)
    result = Checked(
        "eval_determinism",
        f"{repeats} eval-mode forward passes are bit-for-bit equal (Dropout is the identity in eval)",
        "exact",
        gap,
        0.0,
        {
            "dropout_layers": len(dropouts),
            "train_gap": relative_gap([train_out[1]], [train_out[0]]),
            "dtype": str(dt),
            "device": device,
        },
    )
    if dropouts and result.values["train_gap"] == 0:
        result.refute("but the training-mode passes were equal too, with Dropout present")
    return result


# --------------------------------------------------------------------------- activations


def gradient_at_zero(
    activation: Callable[[torch.Tensor], torch.Tensor],
    expected: float,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Checked:
    """An activation's derivative at exactly +0.0 and -0.0 is ``expected`` (the convention it
    picks at a kink: 0 for ReLU); exact, in ``dtype``."""
    x = torch.tensor([0.0, -0.0], device=device, dtype=dtype, requires_grad=True)
    activation(x).sum().backward()
    got = [float(g) for g in x.grad]
    return Checked(
        "gradient_at_zero",
        f"the derivative at exactly 0 is {expected:g}",
        "exact",
        max(abs(g - expected) for g in got),
        0.0,
        {"at_plus_zero": got[0], "at_minus_zero": got[1], "expected": expected, "dtype": str(dtype), "device": device},
    )


# --------------------------------------------------------------------------- input scale


def first_layer(model: nn.Module) -> nn.Module:
    """The first Linear or Conv layer in the model's module order: the one the inputs enter."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            return m
    raise ValueError(f"no Linear or Conv layer in {type(model).__name__}")


def reparametrization(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    s: float,
    *,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    loss_fn: LossFn = F.cross_entropy,
    layer: Callable[[nn.Module], nn.Module] = first_layer,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    numerics: str = num.REFERENCE,
) -> Checked:
    """Scaling the inputs by ``s`` changes nothing when the first layer's weight is divided by s, its
    learning rate by s² and its weight decay multiplied by s² (SGD with momentum): the scaled
    model's first-layer weight times s, its other parameters and each step's loss follow the
    original's trajectory to rounding. (With the learning rate divided by s only, they do not.)"""
    base, scaled = _build(model_fn, device, dtype), _build(model_fn, device, dtype)
    dt = _dtype_of(base)
    w_base, w_scaled = layer(base).weight, layer(scaled).weight
    with torch.no_grad():
        w_scaled.div_(s)

    def groups(model: nn.Module, w: nn.Parameter, scale: float) -> list[dict[str, Any]]:
        rest = [p for p in model.parameters() if p is not w]
        return [
            {"params": [w], "lr": lr / scale**2, "weight_decay": weight_decay * scale**2},
            {"params": rest, "lr": lr, "weight_decay": weight_decay},
        ]

    opt_base = torch.optim.SGD(groups(base, w_base, 1.0), lr=lr, momentum=momentum)
    opt_scaled = torch.optim.SGD(groups(scaled, w_scaled, s), lr=lr, momentum=momentum)
    data = [_to(b, device, dt) for b in batches]
    losses = _train(base, opt_base, [[b] for b in data], loss_fn, numerics, device)
    scaled_losses = _train(scaled, opt_scaled, [[(x * s, y)] for x, y in data], loss_fn, numerics, device)
    loss_gap = max(abs(a - b) / abs(a) if a else abs(b) for a, b in zip(losses, scaled_losses, strict=True))
    rest_base = [p for p in base.parameters() if p is not w_base]
    rest_scaled = [p for p in scaled.parameters() if p is not w_scaled]
    gap_w = relative_gap([w_scaled * s], [w_base])
    gap_rest = parameter_gap(rest_scaled, rest_base) if rest_base else 0.0
    return Checked(
        "reparametrization",
        f"inputs x{s:g} with the first layer's W/{s:g}, lr/{s:g}^2 and weight decay x{s:g}^2 follow the "
        f"same trajectory for {len(data)} steps",
        "equal",
        max(gap_w, gap_rest, loss_gap),
        tolerance(dt)[1],
        {
            "s": s,
            "steps": len(data),
            "first_layer_gap": gap_w,
            "other_parameters_gap": gap_rest,
            "loss_gap": loss_gap,  # the largest relative gap of a step's loss
            "dtype": str(dt),
            "device": device,
            "numerics": numerics,
        },
    )


def gradient_scaling(
    model_fn: ModelFactory,
    batch: Batch,
    s: float,
    *,
    loss_fn: LossFn = F.cross_entropy,
    layer: Callable[[nn.Module], nn.Module] = first_layer,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Checked:
    """For the same function (inputs x s, the first layer's weight / s) the first layer's weight
    gradient is s times larger, every other gradient unchanged: why inputs in [0, 255] need the
    first layer's learning rate divided by s²."""
    base, scaled = _build(model_fn, device, dtype), _build(model_fn, device, dtype)
    dt = _dtype_of(base)
    with torch.no_grad():
        layer(scaled).weight.div_(s)
    x, y = _to(batch, device, dt)
    base.train(), scaled.train()
    loss_fn(base(x), y).backward()
    loss_fn(scaled(x * s), y).backward()
    g_base, g_scaled = layer(base).weight.grad, layer(scaled).weight.grad
    ratio = (g_scaled.norm() / g_base.norm()).item()
    rest = [
        (a.grad, b.grad)
        for a, b in zip(scaled.parameters(), base.parameters(), strict=True)
        if a is not layer(scaled).weight and a.grad is not None
    ]
    gap_rest = parameter_gap([a for a, _ in rest], [b for _, b in rest]) if rest else 0.0
    gap = max(relative_gap([g_scaled], [g_base * s]), gap_rest)
    return Checked(
        "gradient_scaling",
        f"the first layer's weight gradient is x{s:g} for inputs x{s:g} (weights /{s:g}); other gradients unchanged",
        "equal",
        gap,
        tolerance(dt)[1],
        {"s": s, "norm_ratio": ratio, "other_gradients_gap": gap_rest, "dtype": str(dt), "device": device},
    )


# --------------------------------------------------------------------------- data parallel
#
# Each data-parallel check is a rank function (``fn(rank, world, ...)``, run on every rank of a
# gloo or NCCL process group: spawned on this machine by the check, or started by torchrun; see
# trainclaims.launch) that trains both sides of the claim on the rank itself, from the same
# factory, and returns plain data; and a verdict function that turns the ranks' results into a
# :class:`Checked`. The check itself is the two, with ranks spawned here.


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    x, y = batch
    return x.chunk(world)[rank], y.chunk(world)[rank]


def _forward_sync_kwargs(forward_sync: bool) -> dict[str, bool]:
    """DDP's switch for broadcasting rank 0's buffers before each forward: ``forward_sync_buffers``
    where this torch has it (torch 2.13 deprecates ``broadcast_buffers`` with a FutureWarning:
    ``trainclaims.known.DEPRECATIONS``), else ``broadcast_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": forward_sync}
    return {"broadcast_buffers": forward_sync}


def _as_lists(tensors: Iterable[torch.Tensor]) -> list[list[float]]:
    # plain lists: a tensor sent through the queue is shared memory that dies with its process,
    # and a launched job writes its ranks' results as JSON
    return [t.detach().cpu().double().flatten().tolist() for t in tensors]


def _dtype_named(name: str) -> torch.dtype:
    """The dtype a rank result names (``"torch.float32"``: ``str(dtype)``, JSON-safe)."""
    return getattr(torch, name.removeprefix("torch."))


def _tensors(lists: Iterable[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor(t, dtype=torch.float64) for t in lists]


def ddp_rank(
    rank: int,
    world: int,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn = F.cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    numerics: str = num.REFERENCE,
    micro_batches: int = 1,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """One rank of :func:`ddp_against_one_process`: DDP over this rank's 1/world shard of each
    batch (with ``micro_batches`` > 1 accumulated under ``no_sync()``, loss/m, the last outside it),
    and the one-process reference on the whole batch, both from ``model_fn`` in the ``numerics``
    mode. Returns per step the parameter gap between the two and how many of the rank's backward
    passes all-reduced (counted through a communication hook), and the replica's final parameters."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    optimizer_fn = optimizer_fn or sgd()
    device = str(device)
    model, reference = DDP(_build(model_fn, device, None)), _build(model_fn, device, None)
    dt = _dtype_of(reference)
    reductions = [0]

    def counting(state, bucket):  # unannotated: DDP refuses a hook whose bucket annotation is not GradBucket
        reductions[0] += 1
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting)
    step, step_ref = (_stepper(m, optimizer_fn(m.parameters()), loss_fn, numerics, device) for m in (model, reference))
    synced = [0]  # this step's backward passes that all-reduced

    @contextlib.contextmanager
    def backward_of(i: int) -> Iterator[None]:  # micro-batch i: all but the last under no_sync
        before = reductions[0]
        with contextlib.nullcontext() if i == micro_batches - 1 else model.no_sync():
            yield
        synced[0] += reductions[0] > before

    gaps, synced_backwards = [], []
    for batch in batches:
        x, y = _to(batch, device, dt)
        synced[0] = 0
        step(_split(_shard((x, y), rank, world), micro_batches), backward_of)
        synced_backwards.append(synced[0])
        step_ref([(x, y)])
        gaps.append(parameter_gap(model.module.parameters(), reference.parameters()))
    return {
        "gaps": gaps,
        "synced_backwards": synced_backwards,
        "parameters": _as_lists(model.module.parameters()),
        "dtype": str(dt),
        "numerics": numerics,
        "micro_batches": micro_batches,
    }


def ddp_verdict(results: Sequence[dict[str, Any]], bound: float | None = None) -> Checked:
    """The claim of :func:`ddp_against_one_process` judged on its ranks' results (of
    :func:`ddp_rank`, spawned here or under a launcher): every rank's parameters stay within
    ``bound`` (default: :data:`TOLERANCE`'s rtol for the dtype) of the one-process reference after
    every step, the replicas are identical, and each step all-reduced once."""
    first = results[0]
    gaps = [max(r["gaps"]) for r in results]
    replica_gap = max(parameter_gap(_tensors(r["parameters"]), _tensors(first["parameters"])) for r in results)
    synced = [r["synced_backwards"] for r in results]
    dtype = _dtype_named(first["dtype"])
    micro = first["micro_batches"]
    result = Checked(
        "ddp_against_one_process",
        f"{len(results)} DDP ranks take the same {len(first['gaps'])} steps as one process with the whole batch"
        + (f" ({micro} micro-batches under no_sync)" if micro > 1 else ""),
        "equal",
        max([*gaps, replica_gap]),
        tolerance(dtype)[1] if bound is None else bound,
        {
            "world": len(results),
            "steps": len(first["gaps"]),
            "micro_batches": micro,
            "rank_gaps": gaps,
            "gaps_rank0": first["gaps"],
            "replica_gap": replica_gap,
            "synced_backwards_per_step": synced[0],
            "dtype": first["dtype"],
            "numerics": first["numerics"],
        },
    )
    if replica_gap != 0:
        result.refute(f"the replicas differ between ranks (gap {replica_gap:.3g})")
    elif any(n != 1 for per_rank in synced for n in per_rank):  # no_sync: one all-reduce round a step, not m
        result.refute(f"backward passes that all-reduced, per step and rank: {synced} (expected 1 each)")
    return result


def ddp_against_one_process(
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    *,
    world: int = 2,
    loss_fn: LossFn = F.cross_entropy,
    optimizer_fn: OptimizerFactory | None = None,
    micro_batches: int = 1,
    numerics: str = num.REFERENCE,
    bound: float | None = None,
) -> Checked:
    """DDP averages gradients over ranks: ``world`` gloo ranks (CPU processes), each with its
    1/world shard of every batch, take the same optimizer steps as one process on the whole batch,
    and the replicas stay identical. With ``micro_batches`` m > 1 each rank accumulates m
    micro-batches under ``no_sync()`` (loss/m, the last outside it): still one step of the whole
    batch, with one all-reduce round per step, not m (counted through a communication hook).

    ``model_fn``, ``loss_fn`` and ``optimizer_fn`` go to the rank processes: they must be
    picklable (module-level functions, ``functools.partial``, :func:`sgd`). Holds for a model
    without BatchNorm (each rank normalizes with its own shard's statistics). The ranks run
    :func:`ddp_rank`; :func:`ddp_verdict` judges them (the two a launched job uses)."""
    from trainclaims.ranks import run_ranks

    batches = [(x.cpu(), y.cpu()) for x, y in batches]
    for x, _ in batches:
        if x.shape[0] % (world * micro_batches):
            raise ValueError(
                f"a batch of {x.shape[0]} does not split into {world} ranks x {micro_batches} micro-batches"
            )
    results = run_ranks(ddp_rank, world, model_fn, batches, loss_fn, optimizer_fn, numerics, micro_batches)
    return ddp_verdict(results, bound)


def _running_stats(model: nn.Module) -> list[torch.Tensor]:
    return [t for m in _batchnorms(model) for t in (m.running_mean, m.running_var)]


def _batch_mean(t: torch.Tensor) -> list[float]:
    """The per-channel mean a BatchNorm layer computes of its input (channels on dim 1)."""
    dims = [0, *range(2, t.dim())]
    return t.detach().double().mean(dims).cpu().tolist()


def ddp_batchnorm_rank(
    rank: int,
    world: int,
    model_fn: ModelFactory,
    batches: Sequence[Batch],
    loss_fn: LossFn = F.cross_entropy,
    numerics: str = num.REFERENCE,
    forward_sync: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """One rank of :func:`ddp_batchnorm`: a DDP forward and backward (no optimizer step) on this
    rank's shard of each batch, with rank 0's buffers broadcast before each forward where
    ``forward_sync`` (DDP's default). At the first batch, against one process on the whole batch
    at the same weights: the relative gap of this rank's outputs (to the reference's rows of its
    shard) and of the all-reduced gradients, and the gap of every BN layer's running mean and
    variance to those of a copy that saw only this rank's shard. Per batch, each BN layer's input
    mean (what it normalized with) and running mean after the forward."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = str(device)
    model = DDP(_build(model_fn, device, None), **_forward_sync_kwargs(forward_sync))
    dt = _dtype_of(model.module)
    norms = _batchnorms(model.module)
    seen: list[list[float]] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(_batch_mean(args[0]))) for m in norms]
    run = num.compiled(model, numerics)
    out: dict[str, Any] = {"batch_means": [], "running_means": [], "momentum": [m.momentum for m in norms]}
    for step, batch in enumerate(batches):
        x, y = _to(batch, device, dt)
        xr, yr = _shard((x, y), rank, world)
        model.zero_grad()
        seen.clear()
        with num.autocast(numerics, device):
            logits = run(xr)
            loss = loss_fn(logits, yr)
        loss.backward()
        out["batch_means"].append(list(seen))
        out["running_means"].append([m.running_mean.double().cpu().tolist() for m in norms])
        if step == 0:
            reference, alone = _build(model_fn, device, None), _build(model_fn, device, None)
            run_ref = num.compiled(reference, numerics)
            with num.autocast(numerics, device):
                ref_logits = run_ref(x)
                ref_loss = loss_fn(ref_logits, y)
                with torch.no_grad():
                    alone(xr)
            ref_loss.backward()
            out["output_gap"] = relative_gap(logits, ref_logits[rank * xr.shape[0] : (rank + 1) * xr.shape[0]])
            out["gradient_gap"] = relative_gap(
                [p.grad for p in model.module.parameters() if p.grad is not None],
                [p.grad for p in reference.parameters() if p.grad is not None],
            )
            out["running_stat_gap"] = parameter_gap(_running_stats(model.module), _running_stats(alone))
    for h in hooks:
        h.remove()
    out["dtype"], out["numerics"] = str(dt), numerics
    return out


def ddp_batchnorm_verdict(results: Sequence[dict[str, Any]], min_gap: float = BATCHNORM_MIN_GAP) -> Checked:
    """The claim of :func:`ddp_batchnorm` judged on its ranks' results (of
    :func:`ddp_batchnorm_rank`): every rank's outputs and the averaged gradient differ from one
    process's on the whole batch by more than ``min_gap`` (relative), and each rank's running
    statistics after its first batch are its own shard's (to the dtype's rounding)."""
    outputs = [r["output_gap"] for r in results]
    gradients = [r["gradient_gap"] for r in results]
    stat_gaps = [r["running_stat_gap"] for r in results]
    first = results[0]
    result = Checked(
        "ddp_batchnorm",
        f"with BatchNorm, {len(results)} DDP ranks' outputs and averaged gradient differ from one process's "
        "on the whole batch",
        "differs",
        min([*outputs, *gradients]),
        min_gap,
        {
            "world": len(results),
            "output_gap_per_rank": outputs,
            "gradient_gap_per_rank": gradients,
            "rank_running_stat_gaps": stat_gaps,
            "dtype": first["dtype"],
            "numerics": first["numerics"],
        },
    )
    mode_dtype = num.AUTOCAST.get(first["numerics"], _dtype_named(first["dtype"]))
    bound = tolerance(mode_dtype)[1]
    if any(g > bound for g in stat_gaps):
        result.refute(f"but a rank's running statistics are not its own shard's: gaps {stat_gaps} (bound {bound:g})")
    return result


def ddp_batchnorm(
    model_fn: ModelFactory,
    batch: Batch,
    *,
    world: int = 2,
    loss_fn: LossFn = F.cross_entropy,
    numerics: str = num.REFERENCE,
    min_gap: float = BATCHNORM_MIN_GAP,
) -> Checked:
    """BatchNorm under DDP normalizes with each rank's own batch: ``world`` gloo ranks, each with its
    shard of ``batch``, give outputs and an averaged gradient that differ from one process's on
    the whole batch (by more than ``min_gap``, relative), and each rank's running statistics are
    those of its own shard (equal, to rounding, to a copy's that saw only that shard).
    SyncBatchNorm is what makes them agree; it needs CUDA (and NCCL) and is not checked here. The
    ranks run :func:`ddp_batchnorm_rank`; :func:`ddp_batchnorm_verdict` judges them."""
    from trainclaims.ranks import run_ranks

    batch = (batch[0].cpu(), batch[1].cpu())
    if batch[0].shape[0] % world:
        raise ValueError(f"a batch of {batch[0].shape[0]} does not split into {world} ranks")
    if not _batchnorms(model_fn()):
        raise ValueError("ddp_batchnorm: the model has no BatchNorm layer")
    return ddp_batchnorm_verdict(run_ranks(ddp_batchnorm_rank, world, model_fn, [batch], loss_fn, numerics), min_gap)
