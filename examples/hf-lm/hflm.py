"""Our GPT-2, built from a config (no download), the padded data we train it on, and the loop we
train it with. The labels are Hugging Face's: unshifted (``input_ids`` with -100 at padding, as
``DataCollatorForLanguageModeling(mlm=False)`` gives them where the pad token is not EOS); the
model shifts them inside."""

from __future__ import annotations

import functools

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, LENGTH, PAD, EOS, IGNORE = 64, 24, 0, 1, -100


def gpt2(seed: int = 0, dropout: float = 0.1, use_cache: bool = True) -> GPT2LMHeadModel:
    """Our model as it comes from transformers: its own loss, a ModelOutput, unshifted labels
    (``use_cache=False`` where its blocks are checkpointed: a recomputed block must not grow a cache)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=LENGTH,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        use_cache=use_cache,
    )
    return GPT2LMHeadModel(config)


model = functools.partial(gpt2, 0)  # as we train it
model_without_dropout = functools.partial(gpt2, 0, 0.0)  # for equalities over several steps
model_checkpointed = functools.partial(gpt2, 0, 0.1, False)  # as we train it with checkpointed blocks


def batch(step: int, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` sequences of 3 to 24 tokens ending in EOS, longest first, right-padded: the
    micro-batches of a step hold different numbers of tokens."""
    g = torch.Generator().manual_seed(1000 * seed + step)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=g).sort(descending=True).values
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = torch.randint(2, VOCAB, (n, LENGTH), generator=g)
    ids[torch.arange(n), lengths - 1] = EOS
    ids = ids * mask + PAD * (1 - mask)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


def batches(steps: int, n: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return [batch(step, n, seed) for step in range(steps)]


def sgd(params):
    """Our optimizer (picklable)."""
    return torch.optim.SGD(params, lr=0.1)


def train_step(model, optimizer, micro_batches) -> torch.Tensor:
    """Our loop's body for one optimizer step: the model's own loss over the step's token count
    (``num_items_in_batch``: the labels it predicts, one fewer per sequence than it is given), the
    gradients clipped at 1.0, the step, and the loss we log."""
    count = sum(int((mb["labels"][:, 1:] != IGNORE).sum()) for mb in micro_batches)
    logged = torch.zeros(())
    for mb in micro_batches:
        loss = model(**mb, num_items_in_batch=count).loss
        loss.backward()
        logged += loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return logged
