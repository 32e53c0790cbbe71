"""The seed documents' nets. The families that train them through the engine name them
(``Family.models``: ``TrainConfig(model="fc")``); the engine trains any other model factory by its
import path (trainclaims.families.seed.models)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def seed_fc(in_features: int, hidden: int = 300, classes: int = 10) -> nn.Sequential:
    """The net of seed 000: Linear(D, 300, bias=False) -> ReLU -> Linear(300, 10, bias=False)."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, hidden, bias=False),
            relu=nn.ReLU(),
            fc2=nn.Linear(hidden, classes, bias=False),
        )
    )


def bn_fc(in_features: int, hidden: int = 300, classes: int = 10) -> nn.Sequential:
    """The seed net with BatchNorm1d after the first layer (the S002 experiments)."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, hidden, bias=False),
            bn1=nn.BatchNorm1d(hidden),
            relu=nn.ReLU(),
            fc2=nn.Linear(hidden, classes, bias=False),
        )
    )


def xor_net(hidden: int = 30) -> nn.Sequential:
    """Seed 001's XOR net: 2 -> 30 -> ReLU -> 1, no biases (the numpy example's w1, w2)."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(2, hidden, bias=False),
            relu=nn.ReLU(),
            fc2=nn.Linear(hidden, 1, bias=False),
        )
    )


def strong_mlp(in_features: int, hidden: int = 1024, classes: int = 10) -> nn.Sequential:
    """A stronger fully connected recipe for S000-11: two wide hidden layers with BatchNorm."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, hidden),
            bn1=nn.BatchNorm1d(hidden),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, hidden // 2),
            bn2=nn.BatchNorm1d(hidden // 2),
            relu2=nn.ReLU(),
            fc3=nn.Linear(hidden // 2, classes),
        )
    )


MODELS = {"fc": seed_fc, "mlp-strong": strong_mlp, "fc-bn": bn_fc}  # the short names configs use
