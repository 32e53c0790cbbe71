"""S000's mutants for the claims its fast tier measures (the reparametrization, the gradient's
scale): alterations of the optimizer and autograd that their tests must notice (trainclaims.mutants)."""

from __future__ import annotations

from trainclaims.families import alterations as alter
from trainclaims.mutants import Mutant

MUTANTS = (
    Mutant(
        "sgd-ignores-group-learning-rates",
        ("S000-08",),
        "SGD steps every parameter group with the default lr, not the group's own",
        alter.sgd_ignores_group_learning_rates,
    ),
    Mutant(
        "linear-weight-gradient-ignores-input-scale",
        ("S000-09",),
        "a linear layer's weight gradient is computed from its input divided by the input's largest magnitude",
        alter.linear_weight_gradient_ignores_input_scale,
    ),
)
