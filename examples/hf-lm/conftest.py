"""This project's claim family: what we rely on when we train our GPT-2 with transformers, in our
own loop and with its Trainer (`pytest --claims` lists them)."""

import pytest

from trainclaims.claims import Family

FAMILY = Family(
    id="HFLM",
    title="Training our GPT-2 from transformers",
    catalogue="""
HFLM-01 | Our loop (the model's own loss over the step's token count, clipped at 1.0) takes the steps of batches twice as large and logs their loss, though its micro-batches hold different numbers of tokens.
HFLM-02 | Accumulating 2 micro-batches of our GPT-2 with its own loss and num_items_in_batch (the step's token count) gives the steps of batches twice as large.
HFLM-03 | The loss our loop logs under accumulation is the large batch's token-mean loss.
HFLM-04 | Gradient checkpointing our GPT-2's blocks as Hugging Face does (use_reentrant=True, keyword arguments) leaves every gradient unchanged, Dropout included.
HFLM-05 | Trainer with gradient_accumulation_steps=2 on our padded data takes the steps of batches twice as large (its loss over the step's token count).
""",
)


@pytest.hookimpl(optionalhook=True)
def pytest_trainclaims_families():
    return [FAMILY]
