"""S001's mutants: alterations of ReLU's behaviour (and of the step that trains through it) that
its claims' tests must notice (trainclaims.mutants)."""

from __future__ import annotations

from trainclaims.families import alterations as alter
from trainclaims.mutants import Mutant

MUTANTS = (
    Mutant(
        "relu-leaks",
        ("S001-01", "S001-03", "S001-04", "S001-06", "S001-08"),
        "relu, relu_, F.relu and nn.ReLU pass 0.01 times negative inputs and their gradient",
        alter.relu_leaks,
    ),
    Mutant(
        "relu-gradient-one-at-zero",
        ("S001-02",),
        "relu's derivative at exactly 0 is 1",
        alter.relu_gradient_one_at_zero,
    ),
    Mutant(
        "sgd-climbs-the-gradient",
        ("S001-05",),
        "SGD moves parameters along their gradient (up the loss)",
        alter.sgd_climbs_the_gradient,
    ),
    Mutant(
        "leaky-relu-ignores-its-slope",
        ("S001-07",),
        "F.leaky_relu and nn.LeakyReLU use the slope 0.01 whatever slope is given",
        alter.leaky_relu_ignores_its_slope,
    ),
)
