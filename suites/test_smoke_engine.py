"""Smoke claims: the engine trains the seed-000 FC net to well above chance on every data tier.

A short run of S000-01's recipe: the full 20-epoch measurements are in the S000 module.
"""

import pytest

from trainclaims.claims import Verdict
from trainclaims.families.seed.engine import TrainConfig

CHANCE = 0.10
# (epochs, test accuracy the smoke run must beat), per tier. Measured on CPU, torch 2.14.1,
# seeds 0-4: synthetic after 2 epochs 26.8-34.4%; fashion-mnist after 1 epoch 80.0-81.5%.
# CIFAR-10 (not present here): the source reports ~50% after 20 epochs; 30% after 2 is a
# conservative floor until it is measured where the data set is present.
SMOKE = {"synthetic": (2, 0.20), "fashion-mnist": (1, 0.70), "cifar10": (2, 0.30)}


@pytest.mark.claim("S000-01")
def test_engine_trains_the_seed_net_well_above_chance(data, tier, trainer, numerics, evidence):
    """In every --numerics mode: the fast tier's training in that mode (the floors, measured in
    ieee, sit far below what any mode measured: see the closing numbers in reports/claims.md)."""
    epochs, floor = SMOKE[tier]
    result = trainer(TrainConfig(model="fc", epochs=epochs, numerics=numerics), data)
    evidence.record(**result.summary(), epochs=epochs, floor=floor, smoke=True)
    assert result.final_accuracy > floor, f"{tier}: {result.final_accuracy:.1%} after {epochs} epochs"
    # Not the x255 failure mode (100% dead). Measured: synthetic 19.7% dead after 2 epochs (seed 0),
    # 22-24% after 20 (seeds 0-1); fashion-mnist 0%.
    assert result.dead_fraction[-1] < 0.5
    evidence.conclude(
        Verdict.NOT_MEASURED,
        f"smoke run only ({epochs} epochs, {result.final_accuracy:.1%} on {tier}): the 20-epoch claim is "
        "measured by the slow S000 tests",
    )
