"""HF's mutants: for each claim, an alteration of the transformers (or PyTorch) behaviour it states
that its tests must notice (trainclaims.mutants). Each imports transformers when it is applied, in
the fresh process of its run; the release installed is the one altered."""

from __future__ import annotations

import functools
from typing import Any

from trainclaims.families import alterations as alter
from trainclaims.mutants import Mutant, replace, wrap


def trainer_divides_each_micro_batch_by_k() -> None:
    """Trainer counts no tokens for the step (``num_items_in_batch`` None): each micro-batch's own
    mean / k, as before transformers 4.46."""
    from transformers import Trainer

    if hasattr(Trainer, "_get_num_items_in_batch"):
        replace(Trainer, "_get_num_items_in_batch", lambda self, *args, **kwargs: None)
    else:

        def make(original: Any) -> Any:
            @functools.wraps(original)
            def get_batch_samples(self: Any, *args: Any, **kwargs: Any) -> Any:
                samples, _ = original(self, *args, **kwargs)
                return samples, None

            return get_batch_samples

        wrap(Trainer, "get_batch_samples", make)


def trainer_logs_k_times_the_loss() -> None:
    """Trainer logs the sum of the micro-batches' losses undivided: k times the step's
    (transformers #35204's bug)."""
    from transformers import Trainer

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def log(self: Any, logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
            if "loss" in logs:
                logs = {**logs, "loss": logs["loss"] * self.args.gradient_accumulation_steps}
            return original(self, logs, *args, **kwargs)

        return log

    wrap(Trainer, "log", make)


def loss_ignores_num_items_in_batch() -> None:
    """A causal LM's own loss takes ``num_items_in_batch`` and ignores it: each micro-batch's mean."""
    from transformers.loss import loss_utils

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def fixed_cross_entropy(source: Any, target: Any, num_items_in_batch: Any = None, *args: Any, **kw: Any) -> Any:
            return original(source, target, None, *args, **kw)

        return fixed_cross_entropy

    wrap(loss_utils, "fixed_cross_entropy", make)


def trainer_counts_every_label() -> None:
    """Trainer divides a causal LM's token sum by every label, the first of each row too (one more
    per row than the model predicts: transformers before PR #46204)."""
    from transformers import Trainer

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def count(self: Any, batch_samples: list, *args: Any, **kwargs: Any) -> Any:
            found = original(self, batch_samples, *args, **kwargs)
            if found is None:
                return None
            labels = sum(int((b["labels"] != -100).sum()) for b in batch_samples)
            predicted = sum(int((b["labels"][..., 1:] != -100).sum()) for b in batch_samples)
            return found * labels / predicted if predicted and float(found) == predicted else found

        return count

    wrap(Trainer, "_get_num_items_in_batch", make)


def collator_masks_only_padding() -> None:
    """DataCollatorForLanguageModeling masks the padding positions only (past each sequence's
    tokens), not every token equal to the pad token: a real EOS keeps its label."""
    from transformers import DataCollatorForLanguageModeling

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def torch_call(self: Any, examples: list, *args: Any, **kwargs: Any) -> Any:
            batch = original(self, examples, *args, **kwargs)
            if not self.mlm and "attention_mask" in batch:
                batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            return batch

        return torch_call

    wrap(DataCollatorForLanguageModeling, "torch_call", make)


MUTANTS = (
    Mutant(
        "trainer-divides-each-micro-batch-by-k",
        ("HF-01",),
        "Trainer counts no tokens for the step: each micro-batch's own mean / k",
        trainer_divides_each_micro_batch_by_k,
    ),
    Mutant(
        "trainer-logs-k-times-the-loss",
        ("HF-02",),
        "Trainer logs the micro-batches' losses summed undivided (k times the step's)",
        trainer_logs_k_times_the_loss,
    ),
    Mutant(
        "loss-ignores-num-items-in-batch",
        ("HF-03",),
        "a causal LM's loss takes num_items_in_batch and returns each micro-batch's mean",
        loss_ignores_num_items_in_batch,
    ),
    Mutant(
        "checkpoint-drops-the-rng-state",
        ("HF-04",),
        "checkpoint recomputes without the forward pass's RNG state (preserve_rng_state ignored)",
        alter.checkpoint_drops_the_rng_state,
    ),
    Mutant(
        "collator-masks-only-padding",
        ("HF-05",),
        "DataCollatorForLanguageModeling masks padding positions only, not every pad-token id",
        collator_masks_only_padding,
    ),
    Mutant(
        "trainer-counts-every-label",
        ("HF-06",),
        "Trainer divides by every label, the first of each row too",
        trainer_counts_every_label,
    ),
)
