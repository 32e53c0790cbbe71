"""The HF family's models and data: a GPT-2 and a Llama built from small configs (no download),
and padded causal-LM batches whose micro-batches hold different numbers of tokens, with Hugging
Face's unshifted labels (-100 at padding). transformers is imported when a model is built."""

from __future__ import annotations

import functools

import torch

VOCAB, LENGTH, PAD, EOS, IGNORE = 64, 24, 0, 1, -100


def gpt2(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """GPT2LMHeadModel, 2 layers of width 32: its own loss, a ModelOutput, unshifted labels."""
    from transformers import GPT2Config, GPT2LMHeadModel

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
    )
    return GPT2LMHeadModel(config).float()


def llama(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """LlamaForCausalLM, 2 layers of width 32 (its attention dropout only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=LENGTH,
        attention_dropout=dropout,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).float()


MODELS = {"gpt2": functools.partial(gpt2, 0), "llama": functools.partial(llama, 0)}
GPT2_WITH_DROPOUT = functools.partial(gpt2, 0, 0.1)


def batch(step: int, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` sequences of 3 to 24 tokens ending in EOS, longest first, right-padded: a step's
    first micro-batch holds more tokens than its last."""
    g = torch.Generator().manual_seed(1000 * seed + step)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=g).sort(descending=True).values
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = torch.randint(2, VOCAB, (n, LENGTH), generator=g)
    ids[torch.arange(n), lengths - 1] = EOS
    ids = ids * mask + PAD * (1 - mask)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


def batches(steps: int = 3, n: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return [batch(step, n, seed) for step in range(steps)]


TEXTS = ["a b c d e <eos>", "f g <eos>", "h i j a b c d e f <eos>"]  # for the collator: 3 real EOS
WORDS = "a b c d e f g h i j".split()
