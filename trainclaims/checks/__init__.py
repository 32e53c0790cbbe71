"""Checks of PyTorch's training claims on your own model.

Each check takes what a user of PyTorch has — a model factory (any ``nn.Module``: called once
per copy it trains, so every copy starts from the same weights; seed inside it), batches, a loss,
an optimizer factory, a device, a numerics mode — measures one claim on it and returns a
:class:`Checked`: the gap it measured, the bound for the dtype, the mode it measured in, whether
the claim holds, and the numbers behind it. Nothing is asserted inside a check:
``result.assert_holds()`` raises with the numbers, and ``result.judge(evidence)`` records them in
a trainclaims test's evidence and applies the verdict rules (:mod:`trainclaims.verdicts`: in a
numerics mode other than ieee an equality that holds only to the mode's rounding is
*conditional*, with the gap; beyond the mode's rounding bound it fails).

::

    from trainclaims import checks

    def test_accumulation(evidence, numerics):
        checks.accumulation(make_model, batches, k=4, numerics=numerics).judge(evidence)

A batch is ``(inputs, targets)`` or a mapping of named inputs with ``labels``
(:mod:`trainclaims.step`). Tolerances are data, per dtype (:data:`TOLERANCE`), and every comparison
is a relative norm gap (``|a - b| / |b|``; for parameters the largest over the model's tensors) or
an exact equality; :func:`assert_close` is ``torch.testing.assert_close`` with this table's bounds.
Every check trains through :class:`trainclaims.step.Step`, the one training step of the library.

The checks, by subject: :mod:`.accumulation`, :mod:`.batchnorm`, :mod:`.evaluation`,
:mod:`.activations`, :mod:`.scaling`, :mod:`.data_parallel`; for language models and today's
training practice: :mod:`.tokens` (accumulation normalized by the step's token count, in one
process and across DDP ranks), :mod:`.clipping` (under a GradScaler, over FSDP2 shards),
:mod:`.checkpointing` (activation checkpointing with Dropout), :mod:`.averaging`
(``AveragedModel`` with BatchNorm).
"""

from trainclaims.bench import step_flops
from trainclaims.checks import ranks  # noqa: F401  the rank functions and verdicts, for launchers of your own
from trainclaims.checks.accumulation import accumulation, accumulation_with_batchnorm
from trainclaims.checks.activations import gradient_at_zero
from trainclaims.checks.averaging import averaged_batchnorm
from trainclaims.checks.base import (
    BATCHNORM_MIN_GAP,
    TOLERANCE,
    Checked,
    ModelFactory,
    OptimizerFactory,
    assert_close,
    parameter_gap,
    relative_gap,
    rtol,
    sgd,
    tolerance,
)
from trainclaims.checks.batchnorm import batchnorm_eval, running_statistics
from trainclaims.checks.checkpointing import activation_checkpointing, checkpointed
from trainclaims.checks.clipping import (
    CLIP_NORM_MAX_GAP,
    clipping_under_scaler,
    fsdp_clip_norm,
)
from trainclaims.checks.data_parallel import (
    ddp_against_one_process,
    ddp_batchnorm,
)
from trainclaims.checks.evaluation import eval_determinism
from trainclaims.checks.loop import training_loop
from trainclaims.checks.preconditions import logits_of, mean_cross_entropy, unshifted_mean_cross_entropy
from trainclaims.checks.scaling import first_layer, gradient_scaling, reparametrization
from trainclaims.checks.tokens import (
    ddp_token_accumulation,
    logged_loss,
    model_token_sum,
    token_accumulation,
    token_count,
    token_sum,
    unshifted_token_sum,
)
from trainclaims.errors import Misuse, NotMeasured
from trainclaims.step import Batch, LossFn, Step

__all__ = [
    "BATCHNORM_MIN_GAP",
    "CLIP_NORM_MAX_GAP",
    "TOLERANCE",
    "Batch",
    "Checked",
    "LossFn",
    "Misuse",
    "ModelFactory",
    "NotMeasured",
    "OptimizerFactory",
    "Step",
    "accumulation",
    "accumulation_with_batchnorm",
    "activation_checkpointing",
    "assert_close",
    "averaged_batchnorm",
    "batchnorm_eval",
    "checkpointed",
    "clipping_under_scaler",
    "ddp_against_one_process",
    "ddp_batchnorm",
    "ddp_token_accumulation",
    "eval_determinism",
    "first_layer",
    "fsdp_clip_norm",
    "gradient_at_zero",
    "gradient_scaling",
    "logged_loss",
    "logits_of",
    "mean_cross_entropy",
    "model_token_sum",
    "parameter_gap",
    "relative_gap",
    "reparametrization",
    "rtol",
    "running_statistics",
    "sgd",
    "step_flops",
    "token_accumulation",
    "token_count",
    "token_sum",
    "tolerance",
    "training_loop",
    "unshifted_mean_cross_entropy",
    "unshifted_token_sum",
]
