"""S002's mutants: alterations of train/eval, BatchNorm, gradient accumulation and data-parallel
training that its claims' tests must notice (trainclaims.mutants)."""

from __future__ import annotations

from trainclaims.families import alterations as alter
from trainclaims.mutants import Mutant

DISTRIBUTED = ("distributed", "slow")  # the tests that can notice an alteration of DDP

MUTANTS = (
    Mutant(
        "train-eval-not-recursive",
        ("S002-01",),
        "module.train()/eval() set training on the module itself, not on its children",
        alter.train_eval_not_recursive,
    ),
    Mutant(
        "batchnorm-affine-weight-starts-at-half",
        ("S002-02",),
        "an affine BatchNorm's gamma starts at 0.5",
        alter.batchnorm_affine_weight_starts_at_half,
    ),
    Mutant(
        "batchnorm-eval-uses-batch-statistics",
        ("S002-01", "S002-03"),
        "BatchNorm normalizes with the batch's statistics in eval too",
        alter.batchnorm_eval_uses_batch_statistics,
    ),
    Mutant(
        "batchnorm-momentum-reversed",
        ("S002-04",),
        "BatchNorm's running statistics move by 1 - momentum towards the batch's",
        alter.batchnorm_momentum_reversed,
    ),
    Mutant(
        "backward-overwrites-gradients",
        ("S002-06", "S002-07", "S002-09"),
        "backward() overwrites .grad instead of adding to it: micro-batches do not accumulate",
        alter.backward_overwrites_gradients,
    ),
    Mutant(
        "cross-entropy-mean-is-sum",
        ("S002-07",),
        "cross_entropy's default reduction sums over the batch instead of averaging",
        alter.cross_entropy_reduction_swapped("mean", "sum"),
    ),
    Mutant(
        "batchnorm-frozen-in-training",
        ("S002-08",),
        "BatchNorm normalizes with its running statistics in training and never updates them",
        alter.batchnorm_frozen_in_training,
    ),
    Mutant(
        "ddp-sums-gradients",
        ("S002-11",),
        "DistributedDataParallel sums the ranks' gradients instead of averaging them",
        alter.ddp_sums_gradients,
        marks=DISTRIBUTED,
    ),
    Mutant(
        "no-sync-still-synchronizes",
        ("S002-12",),
        "DistributedDataParallel.no_sync() does nothing: every backward pass all-reduces",
        alter.no_sync_still_synchronizes,
        marks=DISTRIBUTED,
    ),
)
