"""The claims about training our GPT-2, each measured by a trainclaims check on the model as it
comes from transformers (a ModelOutput, Hugging Face's unshifted labels, its own loss) and judged
into the report. The equalities over several steps train without Dropout and with SGD: Dropout
draws other masks in each copy, and AdamW turns rounding noise into whole updates."""

import pytest
from hflm import batches, model_checkpointed, model_without_dropout, sgd, train_step

from trainclaims import checks
from trainclaims.families.hf import checks as hf


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Our model is tiny: one intra-op thread runs it fastest on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.claim("HFLM-01")
def test_our_loop_takes_the_large_batchs_steps_and_logs_its_loss(evidence):
    result = checks.training_loop(train_step, model_without_dropout, batches(3), k=2, optimizer_fn=sgd, max_norm=1.0)
    result.judge(evidence)


@pytest.mark.claim("HFLM-02")
def test_the_models_own_loss_over_the_steps_token_count_accumulates_as_the_large_batch(evidence):
    result = checks.token_accumulation(model_without_dropout, batches(3), k=2, loss_fn=checks.model_token_sum)
    result.judge(evidence)


@pytest.mark.claim("HFLM-03")
def test_the_loss_our_loop_logs_is_the_large_batchs(evidence):
    result = checks.logged_loss(model_without_dropout, batches(3), k=2, optimizer_fn=sgd)
    result.judge(evidence)


@pytest.mark.claim("HFLM-04")
def test_checkpointing_our_blocks_as_hugging_face_does_keeps_every_gradient(evidence):
    result = checks.activation_checkpointing(
        model_checkpointed, batches(2), blocks=lambda m: m.transformer.h, use_reentrant=True
    )
    result.judge(evidence)


@pytest.mark.claim("HFLM-05")
def test_trainer_with_accumulation_takes_the_large_batchs_steps(evidence):
    result = hf.trainer_accumulation(model_without_dropout, batches(3), k=2, optimizer_fn=sgd)
    result.judge(evidence)
