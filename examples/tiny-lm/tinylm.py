"""Our tiny causal language model and its data: what a user of trainclaims brings.

A decoder-only transformer made of ``nn.TransformerEncoder`` layers with a causal mask (d_model
64, 4 heads, 2 layers, Dropout 0.1), a vocabulary of 96 and sequences of up to 24 tokens. Batches
are dicts of ``input_ids``, ``attention_mask`` and ``labels``, the labels shifted by us (label t is
the token after t; ``-100`` at padding and at the last position: a Hugging Face collator gives them
unshifted, and its models shift them inside), sorted by length as a length-grouped sampler sorts
them, so micro-batches hold different numbers of tokens. It trains
with AdamW, and its blocks may be checkpointed (``checkpointing=True``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

VOCAB, WIDTH, HEADS, LAYERS, LENGTH = 96, 64, 4, 2, 24
IGNORE = -100


class TinyLM(nn.Module):
    def __init__(self, dropout: float = 0.1, checkpointing: bool = False) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(LENGTH, WIDTH)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=dropout, batch_first=True, norm_first=True)
            for _ in range(LAYERS)
        )
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)
        self.checkpointing = checkpointing

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        h = self.tokens(input_ids) + self.positions(torch.arange(n, device=input_ids.device))
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=input_ids.device), 1)
        padding = attention_mask == 0
        for block in self.blocks:
            if self.checkpointing:
                h = checkpoint(block, h, causal, padding, use_reentrant=False)
            else:
                h = block(h, src_mask=causal, src_key_padding_mask=padding)
        return self.head(self.norm(h))


def tiny_lm(seed: int = 0, dropout: float = 0.1, checkpointing: bool = False) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(dropout, checkpointing)


lm = functools.partial(tiny_lm, 0)  # the model as we train it
lm_without_dropout = functools.partial(tiny_lm, 0, 0.0)  # for equalities over several steps


def adamw(params):
    """Our optimizer (picklable: the DDP check sends it to its ranks)."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)


def batch(step: int, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` sequences of 3 to 24 tokens, longest first, padded with id 0."""
    g = torch.Generator().manual_seed(1000 * seed + step)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=g).sort(descending=True).values
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(steps: int, n: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return [batch(step, n, seed) for step in range(steps)]


def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Our training loss: the cross entropy averaged over the batch's counted tokens."""
    return F.cross_entropy(logits.reshape(-1, VOCAB).float(), labels.reshape(-1), ignore_index=IGNORE)
