"""Claim family S000 (scaling the inputs of a fully connected net): its claims, the experiment's
input-scaling variants as training configs, and the report part that plots the run's sweeps.

Every variant is the source's recipe (SGD lr 0.02, momentum 0.9, weight decay 1e-4, batch 250,
20 epochs, inputs in [0, 1]) with the changes the source describes; per-layer tuples are
(fc1, fc2).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch

from trainclaims import plots
from trainclaims.claims import Family, ReportContext
from trainclaims.families.s000.mutants import MUTANTS
from trainclaims.families.seed import PLUGIN, TRAINING_RUNS
from trainclaims.families.seed.engine import TrainConfig, TrainResult
from trainclaims.families.seed.nets import seed_fc
from trainclaims.modes import REFERENCE

S = 255.0
# the source's recipe: its net, SGD lr 0.02, momentum 0.9, weight decay 1e-4, batch 250, 20 epochs
BASE = TrainConfig(model=seed_fc, hidden=300, epochs=20, batch_size=250, lr=0.02, momentum=0.9, weight_decay=1e-4)

VARIANTS: dict[str, TrainConfig] = {
    # S000-01: the original net
    "baseline": BASE,
    # S000-02: inputs*255
    "x255": BASE.with_(input_scale=S),
    # S000-03: inputs*255, lr/255
    "x255-lr/255": BASE.with_(input_scale=S, lr_scale=(1 / S, 1 / S)),
    # S000-04: inputs*255, both layers' initial weights /255, lr/255
    "x255-W1W2/255-lr/255": BASE.with_(input_scale=S, init_scale=(1 / S, 1 / S), lr_scale=(1 / S, 1 / S)),
    # S000-05: inputs*255, W1/255 only, lr/255 in both layers
    "x255-W1/255-lr/255": BASE.with_(input_scale=S, init_scale=(1 / S, 1.0), lr_scale=(1 / S, 1 / S)),
    # S000-06: inputs*255, W1/255 only, lr/255 in the first layer only
    "x255-W1/255-lr1/255": BASE.with_(input_scale=S, init_scale=(1 / S, 1.0), lr_scale=(1 / S, 1.0)),
    # S000-07: inputs*255, W1/255, lr/255^2 in both layers
    "x255-W1/255-lr/255^2": BASE.with_(input_scale=S, init_scale=(1 / S, 1.0), lr_scale=(1 / S**2, 1 / S**2)),
    # S000-07, the other reading: lr/255^2 in both layers, weights unchanged
    "x255-lr/255^2": BASE.with_(input_scale=S, lr_scale=(1 / S**2, 1 / S**2)),
}
# S000-08's recipe (inputs*255, W1/255, first-layer lr/255^2 and weight decay*255^2) is tested as a
# property on random data (suites/test_s000_input_scaling.py). On real data, as a variant of this
# sweep, it measured within 0.08 points of the baseline after 20 epochs (fashion-mnist, seeds 0-2)
# and within 0.6 points (synthetic); it was taken out of the sweep to keep the module under 5 min.


# --------------------------------------------------------------------------- bands and verdict lines
# (what suites/test_s000_input_scaling.py judges the sweep by, with the measurements behind them)

CHANCE = 0.10

# Test accuracy after 20 epochs, seed 0, per tier and variant: the band each run must land in.
# Measured on CPU (torch 2.14.1), seeds 0 / 1 / 2, in percent, trained side by side (1 intra-op
# thread per run, as the sweep runs on CPU); in brackets where the earlier measurement (2 intra-op
# threads, batched or one by one: another float32 rounding) differed:
#   variant                      fashion-mnist               synthetic
#   baseline                     86.8 / 87.4 / 87.7 (87.8)   52.9 (53.0) / 55.4 (55.8) / 55.0 (55.2)
#   x255                         10.0 (10.7) / 10.0 / 10.0   10.2 / 10.2 / 10.2
#   x255-lr/255                  86.2 / 85.7 / 86.1          43.0 / 44.0 / 44.5
#   x255-W1W2/255-lr/255         86.2 / 86.9 / 88.0          51.9 / 49.7 / 46.9 (47.6)
#   x255-W1/255-lr/255           86.6 / 86.9 / 87.2          10.9 (11.0) / 10.2 / 10.2
#   x255-W1/255-lr1/255          85.0 / 85.5 / 79.3 (81.2)   10.2 / 10.2 / 10.2
#   x255-W1/255-lr/255^2         83.5 / 83.6 / 83.4          24.5 / 24.7 / 25.8
#   x255-lr/255^2                70.9 / 71.5 / 70.6          34.5 / 34.6 / 35.2
# Bands: the measured range (both ways) widened by about 3 points. CIFAR-10 (absent here, so none of
# its bands is measured): the source's figures (~50% baseline, ~43% with lr/255) +-5 points, "restored"
# and "works" as the baseline's band, chance for x255; None where the source gives no number, only a
# word ("has trouble", "does not help"): a one-sided (0, 47%) band admitted no effect at all, so those
# variants are recorded, not banded, until a run on CIFAR-10 measures them.
ACCURACY_BANDS: dict[str, dict[str, tuple[float, float] | None]] = {
    "fashion-mnist": {
        "baseline": (0.84, 0.90),
        "x255": (0.08, 0.13),
        "x255-lr/255": (0.83, 0.89),
        "x255-W1W2/255-lr/255": (0.84, 0.90),
        "x255-W1/255-lr/255": (0.84, 0.90),
        "x255-W1/255-lr1/255": (0.77, 0.88),
        "x255-W1/255-lr/255^2": (0.80, 0.87),
        "x255-lr/255^2": (0.66, 0.76),
    },
    "synthetic": {
        "baseline": (0.49, 0.60),
        "x255": (0.08, 0.13),
        "x255-lr/255": (0.39, 0.49),
        "x255-W1W2/255-lr/255": (0.43, 0.56),
        "x255-W1/255-lr/255": (0.08, 0.15),
        "x255-W1/255-lr1/255": (0.08, 0.13),
        "x255-W1/255-lr/255^2": (0.20, 0.31),
        "x255-lr/255^2": (0.30, 0.40),
    },
    "cifar10": {
        "baseline": (0.45, 0.55),
        "x255": (0.08, 0.13),
        "x255-lr/255": (0.38, 0.48),
        "x255-W1W2/255-lr/255": (0.45, 0.55),
        "x255-W1/255-lr/255": None,
        "x255-W1/255-lr1/255": None,
        "x255-W1/255-lr/255^2": (0.45, 0.55),
        "x255-lr/255^2": None,
    },
}
# Fraction of dead hidden units (zero on every test image) after 20 epochs. Measured, seeds 0-2:
#   x255-W1/255-lr/255     fashion-mnist 66 / 66 / 77%      synthetic 99.7 / 100 / 100%
#   x255-W1/255-lr1/255    fashion-mnist 83 / 79 / 91%      synthetic 100 / 100 / 100%
#   x255-W1/255-lr/255^2   fashion-mnist 0.3 / 0 / 0.3%     synthetic 17 / 21 / 18% (baseline 20-25%)
# (Earlier 2-thread runs: 84 / 78 / 92% for the second row on fashion-mnist, the rest the same.)
# Not measured on CIFAR-10 (the source reports accuracy only): no dead-unit bands there.
DEAD_BANDS = {
    "fashion-mnist": {
        "x255-W1/255-lr/255": (0.50, 0.92),
        "x255-W1/255-lr1/255": (0.65, 1.0),
        "x255-W1/255-lr/255^2": (0.0, 0.03),
    },
    "synthetic": {
        "x255-W1/255-lr/255": (0.95, 1.0),
        "x255-W1/255-lr1/255": (0.95, 1.0),
        "x255-W1/255-lr/255^2": (0.10, 0.30),
    },
}
# x255: dead units 99.7-100%, test images with all-zero outputs 99.99-100% (fashion-mnist, synthetic).
DEAD_AFTER_X255 = 0.99
ZERO_OUTPUTS_AFTER_X255 = 0.99
# "All outputs become zero" holds where at most 1 test image in 1000 keeps a non-zero output (one
# image of 10,000 did on fashion-mnist seed 2); between that and the asserted 99% it is conditional.
ALL_ZERO_FOR_PRACTICAL_PURPOSES = 0.999
# |baseline - (W1,W2/255 + lr/255)|: fashion-mnist 0.26-0.58 points, synthetic 1.0-8.2 points.
# (Seeds 0-2, side by side; earlier 2-thread runs: 0.16-0.33 and 2.2-7.6.)
RESTORED_WITHIN = {"fashion-mnist": 0.02, "synthetic": 0.12, "cifar10": 0.03}
RESTORED_EXACTLY = 0.02  # "restored" (holds) within 2 points; beyond, it restores most (conditional)
# Seeds whose mean gap decides S000-04's verdict. On synthetic one seed is not enough: its gaps
# (1.0 / 5.7 / 8.2 points, seeds 0-2) straddle the 2-point line, so seeds 1-2 of the two variants
# are trained too (4 runs, ~40 s on 2 cores). On fashion-mnist every seed is far inside it
# (0.26-0.58). CIFAR-10's spread is unmeasured: three seeds there too.
RESTORED_VERDICT_SEEDS = {"fashion-mnist": (0,), "synthetic": (0, 1, 2), "cifar10": (0, 1, 2)}
# S000-05/06 "hold" where training fails outright, i.e. loses more than this against the baseline.
# Measured, seeds 0-2: fashion-mnist loses 0.2-0.5 (S000-05) and 1.8 / 1.9 / 8.4 points (S000-06),
# with 66-91% dead units: the trouble shows as dead units (conditional); synthetic loses 42-45 points
# (at chance: holds). The line sits in the gap between the tiers, away from every measured seed.
FAILS_OUTRIGHT = 0.15
# ||dL/dW1|| at step 0, x255 / baseline (same initial weights): fashion-mnist 672 / 808 / 570,
# synthetic 1775 / 1295 / 1455 (seeds 0-2). CIFAR-10: not measured; the source's explanation implies >= s.
FIRST_STEP_RATIO = {"fashion-mnist": (300, 2000), "synthetic": (600, 4000), "cifar10": (100, 10_000)}
# First-epoch roughness (mean upward jump of log loss per step), 0..255 with lr/255 over [0, 1]:
# fashion-mnist 1.86 / 1.78 / 2.21, synthetic 7.58 / 2.98 / 5.12 (seeds 0-2). CIFAR-10: not measured;
# the lower line of the other tiers (1.3: rougher than [0, 1], which the claim says) until it is.
ROUGHNESS_RATIO = {"fashion-mnist": (1.3, 4.0), "synthetic": (1.5, 10.0), "cifar10": (1.3, math.inf)}
# S000-07's two readings: which one reaches the higher accuracy, as measured.
S000_07_BETTER = {"fashion-mnist": "with W1/255", "synthetic": "without"}


def variants(seed: int = 0, epochs: int | None = None, numerics: str = "ieee") -> dict[str, TrainConfig]:
    changes: dict[str, object] = {"seed": seed, "numerics": numerics} | ({"epochs": epochs} if epochs else {})
    return {name: config.with_(**changes) for name, config in VARIANTS.items()}


def plot_sweep(results: dict[str, TrainResult], title: str, path: Path) -> Path:
    """Loss and ||dL/dW1|| per step for every variant of one tier and device."""
    plt = plots.pyplot()
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, r in results.items():
        window = max(1, r.steps_per_epoch // 4)
        ax_loss.plot(plots.smooth(r.loss, window).numpy(), label=f"{name} ({r.final_accuracy:.1%})", lw=1)
        ax_grad.plot(plots.smooth(r.grad_norm[:, 0], window).numpy(), label=name, lw=1)
    for ax, what in ((ax_loss, "training loss"), (ax_grad, "||dL/dW1||")):
        ax.set_yscale("log")
        ax.set_xlabel(f"step (moving average over a quarter epoch; {r.steps_per_epoch} steps an epoch)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7, title="variant (final test accuracy)", title_fontsize=7)
    fig.suptitle(f"S000 input scaling: {title} (torch {torch.__version__})")
    return plots.save(fig, path)


def report_sweeps(ctx: ReportContext) -> list[Path]:
    """``s000_<tier>_<device>.png`` for every tier and device on which this run trained the sweep
    (every seed-0 variant; a run of part of it, e.g. a smoke run, draws nothing). The device's
    ``:`` becomes ``-`` (``cuda-0``): a colon is no file name on Windows, and artifact uploads
    refuse it. A numerics mode other than ieee adds ``_<mode>``."""
    names = {config: name for name, config in VARIANTS.items()}
    groups: dict[tuple[str, str, str], dict[str, TrainResult]] = defaultdict(dict)
    for (config, dataset, device), result in ctx.extra.get(TRAINING_RUNS, {}).items():
        reference = config.with_(numerics=REFERENCE)
        if reference in names:
            groups[(dataset, device, config.numerics.name)][names[reference]] = result
    return [
        plot_sweep(
            {name: results[name] for name in VARIANTS if name in results},
            f"{dataset} on {device}, seed 0, {BASE.epochs} epochs" + (f", {mode}" if mode != "ieee" else ""),
            ctx.report_dir / f"s000_{dataset}_{device.replace(':', '-')}{'' if mode == 'ieee' else '_' + mode}.png",
        )
        for (dataset, device, mode), results in sorted(groups.items())
        if len(results) == len(VARIANTS)
    ]


# --------------------------------------------------------------------------- the bands its tests judge by
# (each with its measurement; suites/ imports them from here)

# Measured (CPU, 3 seeds each, 300 steps): relative difference of s*W1' from W1 at most 6.4e-8 in
# float64 and 6.2e-7 in float32 for s in {3.7, 255, 1e4}; losses within 1.6e-9 (float64) and
# 2.2e-7 (float32). Float32, s=255: 1.3e-7 after 10 steps, 2.6e-7 after 50, 4.1e-7 after 100.
# But hypothesis found float32 runs that part: s=1.5, seed 339072: 1.4e-7 after 15 steps, 1.7e-4
# after 20, because at step 15 a hidden pre-activation 1.7e-8 (relative to the layer's largest) from
# 0 is on in one run and off in the other, and from there the trajectories separate. So the property
# is: within rounding up to the first such flip, and a flip only at a pre-activation within rounding
# of 0. Measured on 300 more float32 examples (s in [1.5, 4] and [1.5, 1e4], 60 steps, random seeds):
# no flip, at most 3.1e-7. float64 held to 1e-6 over 60 steps in every example.
REPARAM = {torch.float64: (60, 1e-6), torch.float32: (60, 1e-4)}  # dtype: (max steps, relative tolerance)
FLIP_MARGIN = {torch.float64: 1e-10, torch.float32: 1e-4}  # a flip further from 0 than this is no rounding
FC_CEILING = 0.52  # "~50% is the maximum": a fully connected net clearly above it refutes the claim


FAMILY = Family(
    id="S000",
    title="Scaling the inputs of a fully connected net (CIFAR-10, 3072-300-10, SGD 0.02/0.9/1e-4)",
    catalogue="""
S000-01 | The baseline FC net reaches about 50% test accuracy on CIFAR-10 after 20 epochs.
S000-02 | With inputs*255 training no longer converges: gradients blow up after a few steps and every output becomes zero (dead ReLUs).
S000-03 | inputs*255 with lr/255 helps but reaches only about 43% on CIFAR-10 in 20 epochs (slower convergence).
S000-04 | inputs*255 with both layers' initial weights /255 and lr/255 restores the original accuracy.
S000-05 | inputs*255 with only W1 /255 and lr/255 in both layers has trouble training.
S000-06 | inputs*255 with only W1 /255 and lr/255 in the first layer only does not help either.
S000-07 | inputs*255 with W1 /255 and lr/255^2 in both layers works (also read without W1 /255).
S000-08 | Inputs*s, W1/s, first-layer lr/s^2 and weight decay*s^2 give the same outputs and trajectory as the original (W1' = W1/s at every step).
S000-09 | One learning rate for all weights: large inputs make the gradient of W1 scale with s, so updates overshoot.
S000-10 | Pixel values in [0,1] converge more smoothly than 0..255.
S000-11 | About 50% is the most a fully connected network can get on CIFAR-10.
""",
    report_parts=(report_sweeps,),
    mutants=MUTANTS,
    plugin=PLUGIN,
)
