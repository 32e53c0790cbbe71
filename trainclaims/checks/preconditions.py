"""What a check looks at before it trains, and how it reads models and batches as users have them.

Models as they come: a model's output may be a tensor, a tuple (its first element is the logits),
or a mapping / Hugging Face ``ModelOutput`` with ``logits`` (:func:`logits_of`). Labels as they
come: ``shifted`` (the label at position t is the token that follows it: this library's tiny LMs)
or ``unshifted`` (Hugging Face's: ``labels`` is a copy of ``input_ids``, -100 at padding, and the
model shifts inside), said once per call or, where certain, read off the model (a
``transformers.PreTrainedModel``: unshifted) (:func:`label_convention`).

Before any training a check states what would make its claim not apply to the model it was given,
in one line with the fix (:class:`trainclaims.errors.Misuse`): Dropout with p > 0 where two copies
must take the same steps, BatchNorm where micro-batches must equal the large batch, a model that
caches keys where blocks are recomputed, a loss that is a mean where a sum is needed (:func:`
require_sum`: measured on a batch and its halves). And where a check's equality fails, the parameter
that diverged most is named (:func:`diverged`), with the likely cause (:func:`likely_cause`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims.errors import Misuse

IGNORE_INDEX = -100  # PyTorch's default ignore_index (cross_entropy, nll_loss), Hugging Face's padding label
LABELS = ("shifted", "unshifted")
SUM_RTOL = 1e-4  # a sum over a batch equals the sum over its halves to float32's rounding


# --------------------------------------------------------------------------- outputs and labels


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor as it is, a tuple's first element, a mapping's or a
    ``ModelOutput``'s ``logits``; :class:`Misuse` naming what was found otherwise."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise Misuse(
        f"the model returned a {type(output).__name__}: a check needs its logits (a tensor, a tuple whose first "
        "element they are, or a mapping / ModelOutput with 'logits')"
    )


def is_hugging_face(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (without importing transformers)."""
    return any(
        f"{c.__module__}.{c.__name__}" == "transformers.modeling_utils.PreTrainedModel" for c in type(model).mro()
    )


def label_convention(labels: str | None, model: nn.Module) -> str:
    """``shifted`` or ``unshifted``: as given, else read off the model where that is certain (a
    Hugging Face model takes unshifted labels and shifts inside), else this library's ``shifted``."""
    if labels is not None:
        if labels not in LABELS:
            raise Misuse(f"labels={labels!r}: 'shifted' (label t is the next token) or 'unshifted' (Hugging Face's)")
        return labels
    return "unshifted" if is_hugging_face(model) else "shifted"


def aligned(logits: torch.Tensor, labels: torch.Tensor, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the labels each position predicts: as they are for shifted labels; for
    unshifted ones (Hugging Face's) the logits of every position but the last and the labels of
    every position but the first."""
    if convention == "unshifted":
        return logits[..., :-1, :], labels[..., 1:]
    return logits, labels


# --------------------------------------------------------------------------- before training


def dropouts(model: nn.Module) -> list[str]:
    """The modules that drop at random in training (Dropout and its kind with p > 0), by name."""
    return [
        f"{name or type(m).__name__} (p={m.p:g})"
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    ]


def require_no_dropout(model: nn.Module, check: str) -> None:
    """Two copies that must take the same steps cannot, where each draws its own Dropout masks."""
    found = dropouts(model)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise Misuse(
            f"{check}: the model has Dropout ({shown}): two copies draw other masks and part whatever the claim "
            "says; build it with p=0 for this check (Hugging Face: resid_pdrop = embd_pdrop = attn_pdrop = 0)"
        )


def require_no_batchnorm(model: nn.Module, check: str, instead: str) -> None:
    """Micro-batches are not the large batch where BatchNorm normalizes each with its own statistics."""
    found = [n or type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if found:
        raise Misuse(
            f"{check}: the model has BatchNorm ({', '.join(found[:3])}): each micro-batch is normalized with its own "
            f"statistics, so the claim does not apply; {instead}"
        )


def require_no_cache(model: nn.Module, check: str) -> None:
    """A checkpointed block recomputes its forward pass; one that caches keys grows its cache."""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", False):
        raise Misuse(
            f"{check}: the model caches keys (config.use_cache=True): a checkpointed block's recomputation runs with "
            "the cache grown; set model.config.use_cache = False (Hugging Face does when it checkpoints)"
        )


def require_sum(loss: Callable[[Any], torch.Tensor], batch: Any, halves: Sequence[Any], check: str) -> None:
    """The check needs ``loss_fn`` to be a sum over the counted tokens: measured on a batch and its
    halves (no gradient): the batch's loss must be the sum of its halves'. A mean (the halves'
    average) or anything else stops the check in one line naming the argument."""
    with torch.no_grad():
        whole = float(loss(batch))
        parts = [float(loss(h)) for h in halves]
    total = sum(parts)
    if math.isclose(whole, total, rel_tol=SUM_RTOL, abs_tol=1e-6):
        return
    if math.isclose(whole, total / len(parts), rel_tol=1e-3):
        what = (
            f"a mean (a batch's loss {whole:.4g} is the average of its halves' {', '.join(f'{p:.4g}' for p in parts)})"
        )
    else:
        what = f"no sum (a batch's loss {whole:.4g}; its halves' {', '.join(f'{p:.4g}' for p in parts)})"
    raise Misuse(
        f"{check}: loss_fn returns {what}; it must sum over the counted tokens (the check divides by the step's "
        "count): pass loss_fn=checks.token_sum, or the model's own loss, checks.model_token_sum"
    )


# --------------------------------------------------------------------------- after a failure


def diverged(a: nn.Module, b: nn.Module) -> tuple[str, float]:
    """The parameter of ``a`` farthest from its counterpart in ``b`` (relative), and that gap: the
    first thing to look at where two trainings parted (as ``torch.testing.assert_close`` names the
    element)."""
    worst, gap = "", 0.0
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        denominator = q.detach().double().norm().item()
        diff = (p.detach().double() - q.detach().double()).norm().item()
        g = diff / denominator if denominator else diff
        if g > gap or not worst:
            worst, gap = name, g
    return worst, gap


ADAPTIVE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)


def likely_cause(model: nn.Module, optimizer: torch.optim.Optimizer | None, worst: str) -> str:
    """Why two trainings that should agree parted, as far as the model and the optimizer tell."""
    if dropouts(model):
        return "Dropout draws other masks in each copy: build the model with p=0"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "BatchNorm normalizes each micro-batch with its own statistics"
    if isinstance(optimizer, ADAPTIVE):
        return (
            f"{type(optimizer).__name__} turns rounding noise in a gradient that is 0 up to rounding ({worst}?) into "
            "a whole update: use SGD for a trajectory comparison"
        )
    return "the recipe: the gradients of the two copies differ from the first step"


# --------------------------------------------------------------------------- losses that read models as they come


def cross_entropy(convention: str = "shifted", ignore_index: int = IGNORE_INDEX) -> Callable[[Any, Any], Any]:
    """The default loss of the checks that take a mean: cross entropy of the output's logits
    (:func:`logits_of`) against the labels, over every position of a language model's output
    (flattened; ``ignore_index`` positions left out; ``unshifted`` labels aligned first), over the
    batch for a classifier's."""

    def loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
        logits = logits_of(output)
        if logits.dim() > 2 and labels.dim() == logits.dim() - 1:
            logits, labels = aligned(logits, labels, convention)
            logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        return nn.functional.cross_entropy(logits.float(), labels, ignore_index=ignore_index)

    loss.__name__ = loss.__qualname__ = f"cross_entropy_{convention}"
    return loss


_SHIFTED, _UNSHIFTED = cross_entropy("shifted"), cross_entropy("unshifted")


def is_causal_lm_output(output: Any) -> bool:
    """Whether ``output`` is a Hugging Face causal LM's (``CausalLMOutput``, ``...WithPast``, ...):
    its labels are then certainly Hugging Face's unshifted ones (a masked LM's are not shifted at
    all). Read off the type, without importing transformers."""
    kind = type(output)
    return kind.__module__.startswith("transformers.") and kind.__name__.startswith("CausalLMOutput")


def mean_cross_entropy(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """The checks' default mean loss: cross entropy of the output's logits (a tensor, a tuple, a
    ``ModelOutput``) against the labels, over the batch for a classifier, over the counted positions
    for a language model (-100 left out): shifted labels, or Hugging Face's unshifted ones where the
    output is a Hugging Face causal LM's (:func:`is_causal_lm_output`; a causal LM called with
    ``return_dict=False`` returns a tuple: pass ``loss_fn=unshifted_mean_cross_entropy``).
    Module-level: picklable for ranks."""
    return (_UNSHIFTED if is_causal_lm_output(output) else _SHIFTED)(output, labels)


def unshifted_mean_cross_entropy(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """:func:`mean_cross_entropy` for unshifted labels (Hugging Face's)."""
    return _UNSHIFTED(output, labels)
