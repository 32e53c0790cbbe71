"""This project's claim family: what we rely on when we train our tiny language model
(`pytest --claims` lists them)."""

import pytest

from trainclaims.claims import Family

FAMILY = Family(
    id="LM",
    title="Training our tiny causal language model",
    catalogue="""
LM-01 | Accumulating 2 micro-batches, each micro-batch's token sum divided by the step's token count, gives our LM the steps of batches twice as large although the micro-batches hold different numbers of tokens.
LM-02 | The loss our loop logs under accumulation (the step's token-normalized loss) is the large batch's token-mean loss.
LM-03 | On 2 DDP ranks, each micro-batch's token sum over the global token count (all-reduced) trains our LM as one process on the whole batch.
LM-04 | Checkpointing our transformer blocks (use_reentrant=False) leaves every gradient unchanged, Dropout included.
LM-05 | Under fp16 autocast our loop clips after scaler.unscale_, so clip_grad_norm_ sees the gradient norm float32 training sees.
""",
)


@pytest.hookimpl(optionalhook=True)
def pytest_trainclaims_families():
    return [FAMILY]
