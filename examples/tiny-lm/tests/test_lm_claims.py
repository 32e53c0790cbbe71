"""The claims about training our tiny LM, each measured by a trainclaims check and judged into the
report. The parameter-trajectory checks train with SGD: AdamW turns the rounding noise of a
parameter whose gradient is 0 (the key bias of attention: softmax ignores a shift of every key)
into whole lr-sized updates, so two equal computations part after one step; SGD compares the
gradients themselves."""

import pytest
from tinylm import adamw, batches, lm, lm_without_dropout, token_mean_loss

from trainclaims import checks
from trainclaims.modes import get


@pytest.mark.claim("LM-01")
def test_token_normalized_accumulation_equals_the_larger_batch(device, numerics, evidence):
    result = checks.token_accumulation(
        lm_without_dropout, batches(3), k=2, normalize="tokens", device=device, numerics=numerics
    )
    result.judge(evidence)


@pytest.mark.claim("LM-02")
def test_the_logged_loss_is_the_large_batchs_token_mean(device, numerics, evidence):
    result = checks.logged_loss(
        lm_without_dropout, batches(3), k=2, optimizer_fn=adamw, device=device, numerics=numerics
    )
    result.judge(evidence)


@pytest.mark.claim("LM-03")
def test_ddp_with_the_global_token_count_equals_one_process(evidence):
    result = checks.ddp_token_accumulation(lm_without_dropout, batches(2), world=2, k=2)
    result.judge(evidence)


@pytest.mark.claim("LM-04")
def test_checkpointing_our_blocks_keeps_every_gradient(device, numerics, evidence):
    result = checks.activation_checkpointing(
        lm, batches(2), loss_fn=token_mean_loss, blocks=lambda model: model.blocks, device=device, numerics=numerics
    )
    result.judge(evidence)


@pytest.mark.claim("LM-05")
def test_clipping_after_unscale_sees_the_float32_norm(device, evidence):
    why = get("fp16-autocast").unsupported(device)
    if why:
        pytest.skip(why)
    result = checks.clipping_under_scaler(
        lm_without_dropout, batches(3), max_norm=0.1, loss_fn=token_mean_loss, optimizer_fn=adamw, device=device
    )
    assert result.values["float32_clipped_steps"] == 3, "max_norm must clip every step for the claim to be tested"
    result.judge(evidence)
