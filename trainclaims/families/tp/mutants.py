"""TP's mutants: for each claim, alterations of the PyTorch behaviour it states that its tests must
notice (trainclaims.mutants; the alterations: trainclaims.families.alterations)."""

from __future__ import annotations

from trainclaims.families import alterations as alter
from trainclaims.mutants import Mutant

DISTRIBUTED = ("distributed", "slow")  # the tests that can notice an alteration of DDP or FSDP2

MUTANTS = (
    Mutant(
        "backward-overwrites-gradients",
        ("TP-01",),
        "backward() overwrites .grad instead of adding to it: micro-batches do not accumulate",
        alter.backward_overwrites_gradients,
    ),
    Mutant(
        "cross-entropy-sum-is-mean",
        ("TP-01", "TP-02"),
        "cross_entropy(reduction='sum') returns the mean over the counted tokens",
        alter.cross_entropy_reduction_swapped("sum", "mean"),
    ),
    Mutant(
        "clip-scales-nothing",
        ("TP-03", "TP-04"),
        "clip_grad_norm_ returns the total norm and leaves the gradients unscaled",
        alter.clip_scales_nothing,
    ),
    Mutant(
        "unscale-leaves-gradients-scaled",
        ("TP-03",),
        "GradScaler.unscale_ leaves the gradients multiplied by the scale",
        alter.unscale_leaves_gradients_scaled,
    ),
    Mutant(
        "clip-returns-the-local-norm",
        ("TP-04",),
        "clip_grad_norm_ over FSDP2 shards clips by and returns the norm of the rank's own shards",
        alter.clip_returns_the_local_norm,
        marks=DISTRIBUTED,
    ),
    Mutant(
        "checkpoint-drops-the-rng-state",
        ("TP-05",),
        "checkpoint recomputes without the forward pass's RNG state (preserve_rng_state ignored)",
        alter.checkpoint_drops_the_rng_state,
    ),
    Mutant(
        "checkpoint-recomputation-leaks-its-rng-draws",
        ("TP-05",),
        "the recomputation leaves the RNG where its draws ended, not where the caller's were",
        alter.checkpoint_recomputation_leaks_its_rng_draws,
    ),
    Mutant(
        "reentrant-checkpoint-is-non-reentrant",
        ("TP-06",),
        "checkpoint(use_reentrant=True) behaves as use_reentrant=False",
        alter.reentrant_checkpoint_is_non_reentrant,
    ),
    Mutant(
        "averaged-model-averages-buffers",
        ("TP-07",),
        "AveragedModel averages the BatchNorm buffers whatever use_buffers says",
        alter.averaged_model_averages_buffers,
    ),
    Mutant(
        "averaged-model-keeps-the-latest-weights",
        ("TP-07",),
        "AveragedModel.update_parameters copies the latest weights instead of averaging",
        alter.averaged_model_keeps_the_latest_weights,
    ),
    Mutant(
        "update-bn-does-nothing",
        ("TP-07",),
        "swa_utils.update_bn leaves the BatchNorm statistics as they were",
        alter.update_bn_does_nothing,
    ),
    Mutant(
        "zero-grad-keeps-zeros",
        ("TP-08",),
        "optimizer.zero_grad() fills zeros by default instead of setting None",
        alter.zero_grad_keeps_zeros,
    ),
    Mutant(
        "adam-decouples-weight-decay",
        ("TP-09",),
        "Adam(weight_decay) decays the weights as AdamW does",
        alter.adam_decouples_weight_decay,
    ),
    Mutant(
        "bfloat16-updates-rounded-stochastically",
        ("TP-10",),
        "optimizers round a bfloat16 parameter's new value stochastically: small updates survive",
        alter.bfloat16_updates_rounded_stochastically,
    ),
    Mutant(
        "half-precision-steps-in-float32",
        ("TP-11",),
        "Adam computes a float16 parameter's step in float32 (eps 1e-8 is not 0 there)",
        alter.half_precision_steps_in_float32,
    ),
    Mutant(
        "sdpa-causal-mask-bottom-right",
        ("TP-12",),
        "scaled_dot_product_attention(is_causal=True) aligns the mask to the bottom right",
        alter.sdpa_causal_mask_bottom_right,
    ),
    Mutant(
        "compiled-dropout-uses-eager-masks",
        ("TP-13",),
        "inductor draws compiled Dropout's masks from eager's RNG",
        alter.compiled_dropout_uses_eager_masks,
        marks=("slow",),
    ),
    Mutant(
        "relu-in-place-copies",
        ("TP-14",),
        "relu_, F.relu(inplace=True) and nn.ReLU(inplace=True) return a copy and leave the input",
        alter.relu_in_place_copies,
    ),
    Mutant(
        "ddp-sums-gradients",
        ("TP-01",),
        "DistributedDataParallel sums the ranks' gradients instead of averaging them",
        alter.ddp_sums_gradients,
        marks=DISTRIBUTED,
    ),
)
