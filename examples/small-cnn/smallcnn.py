"""The project's own model and data: a small CNN with BatchNorm and Dropout on 8x8 one-channel
images of 3 classes (synthetic: a bright quadrant per class, plus noise), as tensors.

Model factories are module-level functions (``functools.partial`` where they take arguments):
the data-parallel check sends them to its rank processes.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

CLASSES = 3


class SmallCNN(nn.Module):
    def __init__(self, batchnorm: bool = True, dropout: float = 0.25) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            norm(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            norm(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(16, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_cnn(seed: int = 0, batchnorm: bool = True, dropout: float = 0.25) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(batchnorm, dropout)


# the model without BatchNorm (accumulation and DDP equal the larger batch only without it) and
# without Dropout (two copies of the model must draw the same function to be compared step by step)
cnn = functools.partial(make_cnn, 0)
cnn_without_bn = functools.partial(make_cnn, 0, batchnorm=False, dropout=0.0)
cnn_without_dropout = functools.partial(make_cnn, 0, dropout=0.0)


def images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (float32, in [0, 1]) and their labels: class c brightens quadrant c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    for c in range(CLASSES):
        rows, cols = divmod(c, 2)
        x[y == c, :, rows * 4 : rows * 4 + 4, cols * 4 : cols * 4 + 4] += 0.5
    return x, y


def batches(steps: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = images(steps * size, seed)
    return list(zip(x.split(size), y.split(size), strict=True))
