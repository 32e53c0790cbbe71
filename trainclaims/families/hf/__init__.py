"""Claim family HF: Hugging Face transformers as it comes. Six claims that decide whether a
language model trained with transformers takes the steps its user means: Trainer's gradient
accumulation against the large batch, the loss it logs, how it counts the tokens a step is
normalized by, a causal LM's own loss with ``num_items_in_batch``, checkpointing with Dropout, and
what the language-modelling collator masks. Each is measured on a GPT-2 (and a Llama where the
model class decides) built from a small config, no download, on the CPU; each has its sources and
its table per transformers release (``KNOWN``: where a release is measured to break a claim, the
test reads *refuted* with the numbers; a value off the table fails as an unknown change).

Optional: ``pip install 'trainclaims[hf]'`` (transformers and accelerate); without them the
family's tests skip with that line. The checks are :mod:`.checks`, for users' own models and data;
the models and batches :mod:`.models`. Registered as the ``hf`` entry point of
``trainclaims.families``.
"""

from __future__ import annotations

from trainclaims.claims import Family
from trainclaims.families.hf.mutants import MUTANTS
from trainclaims.known import Known, Range

# --------------------------------------------------------------------------- per transformers release
# Measured by the family's tests (CPU, torch 2.14.1 unless said; transformers' releases each in an
# environment of its own: trainclaims-releases --package transformers; seeds 0-4 by the probe
# scripts of the issue). Each value is whether the claim holds on that release for the model named.

SOURCE_GA = "transformers PRs #34191, #34198 (4.46: num_items_in_batch); GPT-2 took loss kwargs in 4.48"
TRAINER_ACCUMULATION = Known(
    "Trainer's accumulation takes the large batch's steps (GPT-2)",
    (
        # 4.45: each micro-batch's mean / k, gap 1.24-2.32; 4.46-4.47: GPT-2 takes no loss kwargs and
        # Trainer no longer divides by k, gap 2.67-4.64 (update k times)
        Range("<4.48", False, SOURCE_GA, ("4.45.2", "4.46.0", "4.46.3", "4.47.1")),
        Range(">=4.48", True, SOURCE_GA, ("4.48.3", "5.25.0")),  # gap 1.6e-7-2.6e-7
    ),
    package="transformers",
)
SOURCE_LOGGED = "transformers #34263, PR #35204 (4.46.3), PR #35438"
TRAINER_LOGGED = Known(
    "the loss Trainer logs under accumulation is the step's (GPT-2)",
    (
        # 4.45.2 and 4.46.3: the mean of the micro-batches' means (ratio 0.985-1.01); 4.46.0-4.46.1
        # and 4.47.1: k times the step's (1.97-2.03)
        Range("<4.48", False, SOURCE_LOGGED, ("4.45.2", "4.46.0", "4.46.3", "4.47.1")),
        Range(">=4.48", True, SOURCE_LOGGED, ("4.48.3", "5.25.0")),  # gap <= 1.2e-7
    ),
    package="transformers",
)
SOURCE_KWARGS = "transformers PR #34191 (loss kwargs), #37766; GPT-2's forward takes **kwargs from 4.48"
GPT2_NUM_ITEMS = Known(
    "GPT-2's own loss takes num_items_in_batch",
    (
        Range("<4.48", False, SOURCE_KWARGS, ("4.45.2", "4.46.0", "4.46.3", "4.47.1")),  # TypeError
        Range(">=4.48", True, SOURCE_KWARGS, ("4.48.3", "5.25.0")),  # gap 2.9e-8-1.4e-7
    ),
    package="transformers",
)
SOURCE_COUNT = "transformers PR #46204 (count labels[..., 1:] for causal LM losses, 2026-05), #35438"
TRAINER_COUNT_GPT2 = Known(
    "Trainer's step is the model's own (GPT-2)",
    (
        # before 4.48 GPT-2 takes no loss kwargs: Trainer uses its own mean (gap 0)
        Range("<4.48", True, SOURCE_COUNT, ("4.45.2", "4.46.0", "4.46.3", "4.47.1")),
        # from 4.48 Trainer divides by every label, the first of each row too (gap 0.0585-0.101);
        # PR #46204 counts labels[..., 1:] only where loss_type is ForCausalLM: GPT2LMHeadModel's is None
        Range(">=4.48", False, SOURCE_COUNT, ("4.48.3", "5.25.0")),
    ),
    package="transformers",
)
TRAINER_COUNT_LLAMA = Known(
    "Trainer's step is the model's own (Llama)",
    (
        Range("<4.46", True, SOURCE_COUNT, ("4.45.2",)),
        Range(">=4.46,<5.25", False, SOURCE_COUNT, ("4.46.0", "4.48.3")),
        Range(">=5.25", True, SOURCE_COUNT, ("5.25.0",)),  # gap 0
    ),
    package="transformers",
)
SOURCE_CHECKPOINT = "transformers docs (gradient checkpointing); torch.utils.checkpoint docs (preserve_rng_state)"
CHECKPOINTING = Known(
    "gradient_checkpointing_enable keeps every gradient with Dropout (GPT-2)",
    (Range(">=4.45", True, SOURCE_CHECKPOINT, ("4.45.2", "4.46.0", "4.48.3", "5.25.0")),),  # bit for bit
    package="transformers",
)
SOURCE_COLLATOR = "transformers #22794, #23530 (pad_token = eos_token masks EOS); DataCollatorForLanguageModeling docs"
COLLATOR_MASKS_EOS = Known(
    "DataCollatorForLanguageModeling with pad = EOS masks every real EOS label",
    (Range(">=4.45", True, SOURCE_COLLATOR, ("4.45.2", "4.46.0", "4.48.3", "5.25.0")),),  # 3 of 3
    package="transformers",
)

KNOWN = (
    TRAINER_ACCUMULATION,
    TRAINER_LOGGED,
    GPT2_NUM_ITEMS,
    TRAINER_COUNT_GPT2,
    TRAINER_COUNT_LLAMA,
    CHECKPOINTING,
    COLLATOR_MASKS_EOS,
)

FAMILY = Family(
    id="HF",
    title="Hugging Face transformers as it comes: Trainer, a causal LM's own loss, checkpointing, the collator",
    catalogue="""
HF-01 | Trainer with gradient_accumulation_steps=k takes the steps of Trainer on the k-times larger batch, on padded causal-LM data whose micro-batches hold different numbers of tokens: the loss over the step's token count, not each micro-batch's mean / k (transformers PRs #34191, #34198; Hugging Face blog "Fixing Gradient Accumulation", October 2024).
HF-02 | The loss Trainer logs under gradient accumulation is the step's loss, as it logs the k-times larger batch's: not k times it, not the mean of the micro-batches' means (transformers #34263, PRs #35204, #35438).
HF-03 | A causal LM's own loss given num_items_in_batch (the step's count of predicted labels) is its token sum over that count, so its micro-batches' losses add up to the whole batch's token mean (transformers PR #34191, #37766).
HF-04 | gradient_checkpointing_enable() leaves every gradient of a model with Dropout unchanged, bit for bit: the recomputation replays the forward pass's RNG state (transformers docs, "gradient checkpointing"; torch.utils.checkpoint docs).
HF-05 | DataCollatorForLanguageModeling(mlm=False) with pad_token = eos_token masks every EOS label, the real ones too (-100): a model trained so never learns to stop (transformers #22794, #23530).
HF-06 | Trainer's step without accumulation is the model's own: the loss over the labels the model predicts (labels[..., 1:] for a causal LM), not over every label (transformers #35438, PR #46204).
""",
    mutants=MUTANTS,
    known=KNOWN,
)
