"""The family's tiny causal language model and its padded, variable-length batches.

``nn.TransformerEncoder`` (d_model 32, 2 heads, 2 layers, feed-forward 64) with a causal mask and
a key-padding mask, a vocabulary of 50, sequences of up to 12 tokens. A batch is a mapping of
``input_ids``, ``attention_mask`` and ``labels``, the labels shifted here (``labels[:, t]`` is the
token after ``t``) and ``-100`` (``ignore_index``) where no token follows (padding, the last
position). A Hugging Face collator gives labels unshifted (its models shift them inside): the
checks take those with ``labels="unshifted"``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from trainclaims.checks.tokens import IGNORE_INDEX

VOCAB, WIDTH, HEADS, LAYERS, FEEDFORWARD, MAX_LENGTH = 50, 32, 2, 2, 64, 12
LENGTHS = ("sorted", "half", "equal")


class TinyLM(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(MAX_LENGTH, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, FEEDFORWARD, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        h = self.tokens(input_ids) + self.positions(torch.arange(n, device=input_ids.device))
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=input_ids.device), 1)
        return self.head(self.encoder(h, mask=causal, src_key_padding_mask=attention_mask == 0))


def tiny_lm(seed: int = 0, dropout: float = 0.0) -> TinyLM:
    """The model from ``seed`` (a factory for the checks: ``functools.partial(tiny_lm, seed)``)."""
    torch.manual_seed(seed)
    return TinyLM(dropout)


def lm(seed: int = 0) -> functools.partial:
    return functools.partial(tiny_lm, seed)


def batch(seed: int, step: int, n: int = 8, lengths: str = "sorted") -> dict[str, torch.Tensor]:
    """``n`` sequences padded to :data:`MAX_LENGTH`. ``lengths``: "sorted" (uniform in [2, 12],
    longest first, as a length-grouped sampler gives them: micro-batches of unequal token counts),
    "half" (half the sequences 12 tokens, the rest 3), "equal" (all 12: the control)."""
    if lengths not in LENGTHS:
        raise ValueError(f"lengths={lengths!r}; accepted: {', '.join(LENGTHS)}")
    g = torch.Generator().manual_seed(1000 * seed + step)
    ids = torch.randint(1, VOCAB, (n, MAX_LENGTH), generator=g)
    if lengths == "equal":
        size = torch.full((n,), MAX_LENGTH)
    elif lengths == "half":
        size = torch.tensor([MAX_LENGTH] * (n // 2) + [3] * (n - n // 2))
    else:
        size = torch.randint(2, MAX_LENGTH + 1, (n,), generator=g).sort(descending=True).values
    mask = (torch.arange(MAX_LENGTH)[None, :] < size[:, None]).long()
    ids = ids * mask  # pad id 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(seed: int, steps: int = 3, n: int = 8, lengths: str = "sorted") -> list[dict[str, torch.Tensor]]:
    return [batch(seed, step, n, lengths) for step in range(steps)]
