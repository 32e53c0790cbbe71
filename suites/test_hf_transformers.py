"""HF: Hugging Face transformers as it comes (trainclaims.families.hf): Trainer's accumulation, the
loss it logs and the count it divides by, a causal LM's own loss with num_items_in_batch,
checkpointing with Dropout, the language-modelling collator. Each test measures the claim on the
installed transformers and reads the family's table for that release: where the table says the
release breaks the claim, the measurement must agree and the claim is *refuted* with the numbers
(the broken side shown beyond the bound too); a value off the table fails as an unknown change.
CPU only, float32: the claims are about what transformers computes, not about a device. Without
transformers (pip install 'trainclaims[hf]') every test skips with that line."""

from __future__ import annotations

import pytest

from trainclaims.claims import Verdict
from trainclaims.families import hf
from trainclaims.families.hf import checks as hfc
from trainclaims.families.hf import models

pytest.importorskip("transformers", reason=f"the Hugging Face family needs transformers: {hfc.INSTALL}")

K = 2
pytestmark = pytest.mark.usefixtures("one_thread")  # suites/conftest.py: the models are tiny


def judged_by_table(result, table, evidence) -> None:
    """The claim as the release's table has it: where the table says this release breaks it, the
    measurement must show it broken (else an unknown change fails) and the verdict is refuted with
    the numbers; elsewhere (a release that keeps it, or one not measured) the check judges."""
    if not result.unmeasured:
        table.record(evidence, result.holds)
    found = table.range_for()
    if found is not None and found.value is False:
        evidence.record(**result.numbers())
        problem = table.check(result.holds)
        assert problem is None, f"{problem}: {result}"
        evidence.conclude(Verdict.REFUTED, f"{result} ({found.source})")
        return
    result.judge(evidence)


@pytest.fixture(scope="module")
def batches():
    return models.batches(3)


@pytest.mark.claim("HF-01")
def test_trainers_accumulation_takes_the_large_batchs_steps(batches, evidence):
    result = hfc.trainer_accumulation(models.MODELS["gpt2"], batches, k=K)
    judged_by_table(result, hf.TRAINER_ACCUMULATION, evidence)


@pytest.mark.claim("HF-02")
def test_the_loss_trainer_logs_under_accumulation_is_the_steps(batches, evidence):
    result = hfc.trainer_logged_loss(models.MODELS["gpt2"], batches, k=K)
    judged_by_table(result, hf.TRAINER_LOGGED, evidence)


@pytest.mark.claim("HF-03")
def test_the_models_own_loss_with_num_items_in_batch_adds_up_to_the_whole_batchs(batches, evidence):
    result = hfc.model_loss_with_num_items(models.MODELS["gpt2"], batches, k=K)
    judged_by_table(result, hf.GPT2_NUM_ITEMS, evidence)


@pytest.mark.claim("HF-04")
def test_gradient_checkpointing_keeps_every_gradient_with_dropout(batches, evidence):
    result = hfc.gradient_checkpointing(models.GPT2_WITH_DROPOUT, batches[:2])
    judged_by_table(result, hf.CHECKPOINTING, evidence)


@pytest.mark.claim("HF-05")
def test_the_collator_with_pad_as_eos_masks_every_real_eos_label(evidence):
    shared = hfc.collator_labels(hfc.word_tokenizer(models.WORDS), models.TEXTS)
    own = hfc.collator_labels(hfc.word_tokenizer(models.WORDS, pad="[PAD]"), models.TEXTS)  # the control
    evidence.record(pad_is_eos=shared, pad_of_its_own=own)
    assert shared["padding_left"] == 0, f"padding labels left unmasked: {shared}"
    assert own["real_eos_masked"] == 0, f"a pad token of its own masked real EOS labels: {own}"
    masks_all = shared["real_eos_masked"] == shared["real_eos"] > 0 and shared["other_real_masked"] == 0
    hf.COLLATOR_MASKS_EOS.record(evidence, masks_all)
    problem = hf.COLLATOR_MASKS_EOS.check(masks_all)
    assert problem is None, f"{problem}: {shared}"
    assert masks_all, f"{shared['real_eos_masked']} of {shared['real_eos']} real EOS labels masked: {shared}"


@pytest.mark.claim("HF-06")
@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_trainers_step_is_the_models_own_over_the_labels_it_predicts(model, batches, evidence):
    result = hfc.trainer_count(models.MODELS[model], batches)
    table = {"gpt2": hf.TRAINER_COUNT_GPT2, "llama": hf.TRAINER_COUNT_LLAMA}[model]
    judged_by_table(result, table, evidence)
