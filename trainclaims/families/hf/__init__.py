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
from trainclaims.known import Known, Range, measured_in

# --------------------------------------------------------------------------- per transformers release
# Measured by the family's tests on every release in RUN, each in an environment of its own
# (trainclaims-releases --package transformers --with accelerate==1.12.0; CPU, torch 2.14.1, the
# models and batches of .models, seed 0): docs/releases-transformers.md. Each value is whether the
# claim holds on that release for the model named; a range's measured releases are those run in it.

RUN = (
    "4.45.2",
    "4.46.1",
    "4.46.2",
    "4.46.3",
    "4.47.0",
    "4.47.1",
    "4.48.0",
    "4.48.1",
    "4.48.2",
    "4.48.3",
    "4.49.0",
    "4.50.3",
    "4.51.3",
    "4.52.4",
    "4.53.3",
    "4.54.1",
    "4.55.4",
    "4.56.2",
    "4.57.6",
    "5.0.0",
    "5.1.0",
    "5.2.0",
    "5.3.0",
    "5.4.0",
    "5.5.0",
    "5.5.3",
    "5.5.4",
    "5.6.2",
    "5.7.0",
    "5.8.1",
    "5.9.0",
    "5.10.1",
    "5.10.4",
    "5.11.0",
    "5.12.1",
    "5.13.1",
    "5.14.1",
    "5.15.1",
    "5.16.1",
    "5.17.0",
    "5.18.0",
    "5.19.0",
    "5.20.2",
    "5.21.1",
    "5.22.2",
    "5.23.0",
    "5.24.0",
    "5.25.0",
)


def _range(spec: str, value: bool, source: str) -> Range:
    """A range measured on the releases of RUN within ``spec``."""
    return Range(spec, value, source, measured_in(spec, RUN))


SOURCE_GA = "transformers PRs #34191, #34198 (4.46: num_items_in_batch); GPT-2 took loss kwargs in 4.48.3"
SOURCE_GA_5 = (
    "transformers 5.2.0 passes gradient_accumulation_steps to accelerate, whose backward divides the loss by it "
    "again (likely PR #43919); 5.5.4 sets it to 1 (PR #45349, fixing #45305)"
)
TRAINER_ACCUMULATION = Known(
    "Trainer's accumulation takes the large batch's steps (GPT-2)",
    (
        # 4.45.2 and 4.48.0-4.48.2: each micro-batch's mean / k (gap 0.512, the broken recipe's own);
        # 4.46.1-4.47.1: GPT-2 takes no loss kwargs and Trainer no longer divides by k (gap 1.72)
        _range("<4.48.3", False, SOURCE_GA),
        _range(">=4.48.3,<5.2", True, SOURCE_GA),  # gap 2.0e-7-2.7e-7
        _range(">=5.2,<5.5.4", False, SOURCE_GA_5),  # gap 0.502: the gradients halved (k=2)
        _range(">=5.5.4", True, SOURCE_GA_5),  # gap 2.7e-7
    ),
    package="transformers",
)
SOURCE_LOGGED = "transformers #34263, PR #35204 (4.46.3), PR #35438"
TRAINER_LOGGED = Known(
    "the loss Trainer logs under accumulation is the step's (GPT-2)",
    (
        # |logged / step - 1|: the mean of the micro-batches' means on 4.45.2, 4.46.2-4.46.3, 4.47.0 and
        # 4.48.0-4.48.2 (6.6e-3-7.3e-3); k times the step's on 4.46.1 and 4.47.1 (1.001)
        _range("<4.48.3", False, SOURCE_LOGGED),
        _range(">=4.48.3", True, SOURCE_LOGGED),  # |r - 1| <= 1.5e-7, 5.2-5.4 included
    ),
    package="transformers",
)
SOURCE_KWARGS = "transformers PR #34191 (loss kwargs), #37766; GPT-2's forward takes **kwargs from 4.48.3"
GPT2_NUM_ITEMS = Known(
    "GPT-2's own loss takes num_items_in_batch",
    (
        _range("<4.48.3", False, SOURCE_KWARGS),  # TypeError
        _range(">=4.48.3", True, SOURCE_KWARGS),  # gap 8.6e-8-1.4e-7
    ),
    package="transformers",
)
SOURCE_COUNT = "transformers PR #46204 (5.10.1: count labels[..., 1:] for causal LM losses), #35438, #34915"
TRAINER_COUNT_GPT2 = Known(
    "Trainer's step is the model's own (GPT-2)",
    (
        # before 4.48.3 GPT-2 takes no loss kwargs: Trainer uses its own mean (gap 0)
        _range("<4.48.3", True, SOURCE_COUNT),
        # from 4.48.3 Trainer divides by every label, the first of each row too (gap 0.0585-0.101);
        # PR #46204 counts labels[..., 1:] only where loss_type is ForCausalLM: GPT2LMHeadModel's is None
        _range(">=4.48.3", False, SOURCE_COUNT),
    ),
    package="transformers",
)
TRAINER_COUNT_LLAMA = Known(
    "Trainer's step is the model's own (Llama)",
    (
        # Trainer counts labels[..., 1:] (4.45.2, 4.46.1); 4.46.2 counts every label (gap 0.0126); the
        # x.0 releases 4.47.0 and 4.48.0 pass no num_items_in_batch to a model that takes loss kwargs
        # (PR #34915's inverted condition), so Llama's own mean rules (gap 0); their patches pass it
        _range("<4.46.2", True, SOURCE_COUNT),
        _range(">=4.46.2,<4.47", False, SOURCE_COUNT),
        _range(">=4.47,<4.47.1", True, SOURCE_COUNT),
        _range(">=4.47.1,<4.48", False, SOURCE_COUNT),
        _range(">=4.48,<4.48.1", True, SOURCE_COUNT),
        _range(">=4.48.1,<5.10.1", False, SOURCE_COUNT),
        _range(">=5.10.1", True, SOURCE_COUNT),  # gap 0
    ),
    package="transformers",
)
SOURCE_CHECKPOINT = "transformers docs (gradient checkpointing); torch.utils.checkpoint docs (preserve_rng_state)"
CHECKPOINTING = Known(
    "gradient_checkpointing_enable keeps every gradient with Dropout (GPT-2)",
    (_range(">=4.45", True, SOURCE_CHECKPOINT),),  # bit for bit; without the RNG state 0.86-1.09
    package="transformers",
)
SOURCE_COLLATOR = "transformers #22794, #23530 (pad_token = eos_token masks EOS); DataCollatorForLanguageModeling docs"
COLLATOR_MASKS_EOS = Known(
    "DataCollatorForLanguageModeling with pad = EOS masks every real EOS label",
    (_range(">=4.45", True, SOURCE_COLLATOR),),  # 3 of 3
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
