"""The training step: one optimizer step of a model on its micro-batches, in a numerics mode.

Every trainer of the library and its families takes its steps here (the checks, the training engine,
the data-parallel experiments, the source's XOR loop), so that a mode is applied one way: the model
compiled where the mode compiles, each micro-batch's forward pass and loss in the mode's autocast
region, the backward pass through the mode's GradScaler where it has one, the optimizer step through
it, and the dtype of the parameters each step updated recorded (the proof of a mode that holds
parameters in another dtype).

A batch is ``(inputs, targets)``, or a mapping of named inputs (``input_ids``, ``attention_mask``,
...) whose targets are under ``labels``: the model is called ``model(**inputs)`` and the loss is
``loss_fn(output, labels)``. Floating inputs are cast to the dtype of the model's parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainclaims import numerics as num
from trainclaims.errors import Misuse
from trainclaims.modes import REFERENCE, Acted, ModeLike, get

Batch = tuple[torch.Tensor, torch.Tensor] | Mapping[str, torch.Tensor]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
LABELS = "labels"  # the targets of a mapping batch


def targets(batch: Batch) -> torch.Tensor:
    """A batch's targets: the second of a pair, ``labels`` of a mapping."""
    return batch[LABELS] if isinstance(batch, Mapping) else batch[1]


def forward(model: Callable[..., Any], batch: Batch, **extra: Any) -> Any:
    """The model's output for a batch: ``model(x)`` of a pair, ``model(**inputs)`` of a mapping
    (every entry but ``labels``); ``extra`` keywords too (``labels=`` where the model computes its
    own loss)."""
    if isinstance(batch, Mapping):
        return model(**{k: v for k, v in batch.items() if k != LABELS}, **extra)
    return model(batch[0], **extra)


def to_device(batch: Batch, device: str | torch.device | None, dtype: torch.dtype | None = None) -> Batch:
    """The batch on ``device`` (None: where it is), its floating tensors in ``dtype`` (where given);
    labels, token ids and masks keep their dtype. The one way the library casts and moves inputs."""

    def move(t: torch.Tensor, floating: bool = True) -> torch.Tensor:
        cast_to = dtype if floating and dtype is not None and t.is_floating_point() else None
        if cast_to is None and device is None:
            return t
        return t.to(device=device if device is not None else t.device, dtype=cast_to or t.dtype)

    if isinstance(batch, torch.Tensor):  # bare inputs (a check that needs no targets)
        return move(batch)
    if isinstance(batch, Mapping):
        return {k: move(v) for k, v in batch.items()}
    x, y = batch
    return move(x), move(y, floating=False)


def cast(batch: Batch, dtype: torch.dtype) -> Batch:
    """The batch with its floating inputs in ``dtype``, where it is (:func:`to_device`)."""
    return to_device(batch, None, dtype)


def batch_size(batch: Batch) -> int:
    return int(targets(batch).shape[0])


def split(batch: Batch, k: int) -> list[Batch]:
    """``batch`` cut into ``k`` equal micro-batches along its first dimension;
    :class:`trainclaims.verdicts.Misuse` (a ValueError) where it does not divide."""
    n = batch_size(batch)
    if n % k:
        raise Misuse(f"a batch of {n} does not split into k={k} equal micro-batches")
    if isinstance(batch, Mapping):
        parts = {key: value.chunk(k) for key, value in batch.items()}
        return [{key: parts[key][i] for key in batch} for i in range(k)]
    return list(zip(*(t.chunk(k) for t in batch), strict=True))


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank ``rank``'s 1/``world`` of the batch (what DDP gives each rank)."""
    return split(batch, world)[rank]


class ModeLoss:
    """``loss(batch)``: a batch's loss through ``model`` in the mode ``numerics`` (compiled where the mode
    compiles, forward pass and loss in its autocast region): the forward half of :class:`Step`, for
    work that takes no optimizer step (gradients alone, running statistics).
    ``loss.with_output(batch)`` gives the model's output too."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        numerics: ModeLike = REFERENCE,
        device: str | torch.device | None = None,
        *,
        mode: ModeLike | None = None,
    ) -> None:
        self.mode = get(_renamed(numerics, mode))
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.loss_fn = loss_fn
        self.run = num.compiled(model, self.mode)
        self.dtype = num.param_dtype(model)

    def with_output(self, batch: Batch) -> tuple[Any, torch.Tensor]:
        if self.dtype is not None:  # inputs in the parameters' dtype (a mode may hold them in another)
            batch = cast(batch, self.dtype)
        with num.autocast(self.mode, self.device):
            extra = getattr(self.loss_fn, "forward_with_labels", None)  # the model computes its own loss
            output = forward(self.run, batch, **({"labels": targets(batch), **extra} if extra is not None else {}))
            return output, self.loss_fn(output, targets(batch))

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.with_output(batch)[1]


class Step:
    """``step(micro_batches)``: one optimizer step of ``model`` in the numerics mode ``numerics`` (see the module's
    docstring), accumulating over the micro-batches, the loss divided by their number where
    ``divide``. Returns the step's summed loss as a tensor on the device (no host sync).

    ``context(i)``: a context manager around micro-batch i's forward and backward (DDP's
    ``no_sync``); ``before_step()``: called after the last backward pass and before the optimizer
    step, with the gradients unscaled where the mode trains through a GradScaler (gradient norms,
    clipping; ``unscale=False``: on the scaled gradients, as a loop that clips before
    ``scaler.unscale_`` does)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        numerics: ModeLike = REFERENCE,
        device: str | torch.device | None = None,
        *,
        divide: bool = True,
        unscale: bool = True,
        mode: ModeLike | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.unscale = unscale
        self.mode = get(_renamed(numerics, mode))
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.divide = divide
        self.loss = ModeLoss(model, loss_fn, self.mode, self.device)
        self.scaler = num.grad_scaler(self.mode, self.device)
        self.skipped = 0  # optimizer steps the GradScaler skipped (inf or NaN in float16 gradients)

    def __call__(
        self,
        micro_batches: Sequence[Batch],
        context: Callable[[int], contextlib.AbstractContextManager] | None = None,
        before_step: Callable[[], Any] | None = None,
    ) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        total: torch.Tensor | None = None
        for i, batch in enumerate(micro_batches):
            with context(i) if context is not None else contextlib.nullcontext():
                loss = self.loss(batch)
                if self.divide:
                    loss = loss / len(micro_batches)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total = loss.detach() if total is None else total + loss.detach()  # in the loss's own dtype
        if before_step is not None:
            if self.scaler is not None and self.unscale:
                self.scaler.unscale_(self.optimizer)  # what before_step reads are the true gradients
            before_step()
        if self.scaler is None:
            self.optimizer.step()
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped on inf/NaN gradients, and the scale lowered
            self.scaler.update()
            self.skipped += int(self.scaler.get_scale() < scale)
        num.note(Acted(stepped={num.dtype_name(d): 1 for d in _stepped_dtypes(self.optimizer)}))
        return total if total is not None else torch.zeros((), device=self.device)


@dataclass
class Trained:
    """What :func:`train` did: each step's summed loss, and the steps the GradScaler skipped."""

    losses: list[float]
    skipped: int


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: Iterable[Sequence[Batch]],
    loss_fn: LossFn,
    numerics: ModeLike = REFERENCE,
    device: str | torch.device | None = None,
    *,
    divide: bool = True,
) -> Trained:
    """One :class:`Step` per element of ``steps`` (its micro-batches)."""
    step = Step(model, optimizer, loss_fn, numerics, device, divide=divide)
    return Trained([float(step(micro_batches)) for micro_batches in steps], step.skipped)


def unequal_skips(skipped: Sequence[int]) -> str:
    """Why runs that should take the same steps did not, where a GradScaler skipped more steps of
    one than of another (float16 overflow in one run's gradients); "" where they skipped alike."""
    if len(set(skipped)) <= 1:
        return ""
    return f"the GradScaler skipped {' / '.join(map(str, skipped))} steps of the runs (float16 overflow)"


def _renamed(numerics: ModeLike, mode: ModeLike | None) -> ModeLike:
    """``numerics``, or the older keyword ``mode=`` (0.3), with a warning: one name for the numerics
    mode across the checks and the step."""
    if mode is None:
        return numerics
    import warnings

    warnings.warn(
        "Step(mode=...) / ModeLoss(mode=...) is deprecated and will be removed in trainclaims 0.5: pass numerics=... "
        "(the name every check uses)",
        DeprecationWarning,
        stacklevel=3,
    )
    return mode


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _stepped_dtypes(optimizer: torch.optim.Optimizer) -> set[torch.dtype]:
    return {p.dtype for group in optimizer.param_groups for p in group["params"] if p.grad is not None}
