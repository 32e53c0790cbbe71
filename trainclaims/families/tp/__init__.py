"""Claim family TP: today's training practice. Fourteen claims that cost engineers days with
PyTorch now (the 2024 gradient-accumulation bug, clipping under a GradScaler and over FSDP2 shards,
activation checkpointing, weight averaging with BatchNorm, optimizers in half precision, SDPA's
causal mask, compiled Dropout, in-place ReLU), each with its source, its bands (measured, written
beside them), the ops some torch lines lack (``CAPABILITIES``) and the behaviours that differ by
torch line (``KNOWN``), and a report part that draws what a run measured.

Its language-model claims run on a tiny causal LM (:mod:`.lm`); its data-parallel ones are
:mod:`.data_parallel`'s rank experiments. The generic claims are public checks users point at their
own models (trainclaims.checks: ``token_accumulation``, ``ddp_token_accumulation``,
``logged_loss``, ``clipping_under_scaler``, ``fsdp_clip_norm``, ``activation_checkpointing``,
``averaged_batchnorm``). Registered as the ``tp`` entry point of ``trainclaims.families``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainclaims import plots
from trainclaims.claims import Family, ReportContext
from trainclaims.families.tp.mutants import MUTANTS
from trainclaims.known import FSDP2_ON_CPU as FSDP2_ON_CPU  # the core's table, read by TP-04's tests
from trainclaims.known import Capability, Known, Range, measured_in

# --------------------------------------------------------------------------- the report part

ACCUMULATION_CLAIM, ACCUMULATION_EVIDENCE = "TP-01", "gap_per_step_by_recipe"  # {recipe: [gap after each step]}
MASTER_CLAIM, MASTER_EVIDENCE = "TP-10", "moved_share"  # {variant: share of weights an update changed}


def report_practice(ctx: ReportContext) -> list[Path]:
    """``tp_practice.png``: TP-01's parameter gap to the large batch after each step, with the fix
    (the step's token count) and without (each micro-batch's mean / k), per mode and k; and TP-10's
    share of weights that an AdamW update changed in pure bfloat16 against float32 master weights
    (nothing where neither test passed in this run)."""
    accumulation = ctx.measured(ACCUMULATION_CLAIM, ACCUMULATION_EVIDENCE)
    master = ctx.measured(MASTER_CLAIM, MASTER_EVIDENCE)
    if not accumulation and not master:
        return []
    plt = plots.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, ev in enumerate(accumulation):
        for recipe, gaps in ev[ACCUMULATION_EVIDENCE].items():
            style = "-" if recipe == "tokens" else "--"
            label = f"{'token sum / step count' if recipe == 'tokens' else 'mean / k'}, k={ev['k']}, {ev['numerics']}"
            a.semilogy(
                range(1, len(gaps) + 1), [max(g, 1e-12) for g in gaps], style, marker="o", color=f"C{i}", label=label
            )
    a.set_xlabel("optimizer step")
    a.set_ylabel("parameter gap to the large batch (relative)")
    a.set_title("TP-01: accumulation with unequal token counts", fontsize=10)
    if accumulation:
        a.legend(fontsize=7)
    a.grid(alpha=0.3)
    if master:
        shares = master[0][MASTER_EVIDENCE]
        b.bar(range(len(shares)), [100 * v for v in shares.values()], color=["C3", "C0", "C2", "C1"][: len(shares)])
        b.set_xticks(range(len(shares)), list(shares), fontsize=8, rotation=12)
        b.set_ylabel("% of the 1000 weights an update changed")
        b.set_ylim(0, 105)
    b.set_title("TP-10: AdamW lr 1e-4 on weights in [1, 2), 3 steps", fontsize=10)
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(f"TP: training practice, as this run measured it (torch {torch.__version__})")
    return [plots.save(fig, ctx.report_dir / "tp_practice.png")]


# --------------------------------------------------------------------------- the bands its tests judge by
# (each with its measurement; suites/test_tp_*.py import them from here). "Measured" without a
# machine: CPU (2 cores), torch 2.1.2, 2.6.0, 2.14.1 and 2.15.0, seeds 0-9, float32, unless said.

# TP-01: each micro-batch's token mean / k against the large batch, the parameter gap after 3 SGD
# steps on the tiny LM (sorted lengths, seeds 0-4): 0.39-0.62 (k=2 and 4) in ieee, bf16-autocast,
# fp16-autocast, bf16-weights and compile (the token-normalized recipe: 1.5e-7-2.8e-7 in ieee and
# compile; the modes' own rounding in the others); the first step's gradient 0.24-1.11 (seeds 0-9);
# with equal lengths (the control) the same recipe is the large batch within float32's tolerance
# (gradient 1.5e-7-1.6e-7). Across 2 DDP gloo ranks x 2 micro-batches (seeds 0-4): the global count
# 1.7e-7-2.3e-7, each rank's own count 0.45-0.84.
MEAN_OVER_K_MIN_GAP = 0.05
# TP-02: the undivided sum of k micro-batch means, logged, over the large batch's loss: 1.97-2.04 at
# k=2, 3.88-4.10 at k=4 (every line, every mode measured).
SUM_LOGGED_MAX_OFF_K = 0.25
# TP-02: the last micro-batch's own token mean, logged, against the large batch's loss: |ratio - 1|
# 6.5e-3-5.8e-2 (k=2), 3.3e-2-0.148 (k=4) over seeds 0-9 (torch 2.14.1, each recipe trained and
# logged by its own step); the token-normalized step 3.2e-8-2.3e-7; each micro-batch's mean / k
# 2.4e-3-3.0e-2; the undivided sum k times (|ratio - k| 4.6e-3-0.122).
LAST_LOGGED_MIN_GAP = 1e-3
# TP-03: clipping the scaled gradients (before unscale_) sees the scale times float32's norm: ratio
# 6.54e4-6.56e4 (the initial scale 2^16; fp16-autocast, torch 2.6.0/2.14.1/2.15.0).
SCALED_NORM_MIN_RATIO = 1e3
# TP-04: the norm of one rank's own gradient shards against the global norm (2 gloo ranks, MLP
# 16-64-64-4, batch 16, seeds 0-4, torch 2.14.1): 0.62-0.78 of it (gap 0.22-0.38); clip_grad_norm_
# itself: the same norm on both ranks, 6.0e-8-1.5e-7 from one process's (torch 2.15.0 the same).
LOCAL_SHARD_MIN_GAP = 0.1
# TP-05: checkpointing without the RNG state (preserve_rng_state=False), the tests' MLP with
# Dropout(0.5), 2 batches of 16, seeds 0-9 (torch 2.14.1): the gradient gap to the plain net
# 0.59-0.93 in ieee, bf16-/fp16-autocast and bf16-weights; with it: 0, bit for bit, in those and in
# compile (fallback_random; seeds 0-2). (A 3-layer net with Dropout in the block: 0.78-1.09 on
# 2.14/2.15, 0.81-1.07 on 2.1/2.6: eager CPU masks changed between 2.6 and 2.14.)
NO_RNG_MIN_GAP = 0.3
# TP-07: the averaged model's copied BatchNorm statistics against those update_bn computes for the
# averaged weights (the tests' MLP with BatchNorm, 20 SGD steps on inputs of mean 2, averaged from
# step 5, seeds 0-9, torch 2.14.1): 0.131-0.149 in ieee, bf16-/fp16-autocast, bf16-weights and
# compile; the copy itself: 0, bit for bit, in every one (a smaller net: 0.115-0.133 on every line).
UPDATE_BN_MIN_GAP = 0.03
# TP-08: how far a parameter whose gradient was set to zero (not None) moves on the next step, relative
# to its size (the tests' two Linear(8, 8) branches, step 2 uses one; seeds 0-9, torch 2.14.1):
# SGD(momentum 0.9, weight decay 0.1) 0.036-0.058; Adam 0.031-0.037; AdamW(wd 0.1) 0.032-0.038; plain
# SGD 0 (no state, no decay: the control); a None gradient: 0 for every optimizer.
ZERO_GRAD_MIN_MOVE = 0.01
# TP-09: Adam(weight_decay) against AdamW(weight_decay), the parameter gap after 10 steps (Linear(4, 2),
# lr 1e-2, wd 0.1): 9.9e-3-0.155 (3 steps: 2.97e-3-6.06e-2 over seeds 0-19); by hand 0, bit for bit.
ADAM_L2_MIN_GAP = 1e-3
# TP-12: SDPA(is_causal=True) with Lq < Lk against the explicit masks, max|out - ref| / max|ref| in
# float64's reference: top-left 3.9e-8-8.8e-8 (float32), bottom-right 1.29-2.73 (Lq=2, Lk=5).
SDPA_MAX_GAP = {"float64": 1e-12, "float32": 1e-6}
SDPA_BOTTOM_RIGHT_MIN_GAP = 1e-2  # over hypothesis' shapes; 1.29-2.73 at Lq=2, Lk=5
# TP-13: compiled Dropout, the kept fraction's z-score over 10^6 elements: -1.52-3.30 (p=0.5); the
# share of elements whose compiled mask agrees with eager's: 0.499-0.501 (p=0.5; independent masks
# give 0.5), 1.0 exactly with inductor's fallback_random (every line).
DROPOUT_MAX_Z = 5.0
# TP-13: the kept values of a tensor of ones against 1/(1-p), relative: float32's rounding of
# the scale (1/(1-p) is not exact in float32 for p=0.1: 1.2e-7), measured the same on torch 2.14.1
# eager and compiled; an unscaled Dropout would keep 1.0 (gap p).
DROPOUT_SCALE_MAX_GAP = 1e-6
MASK_MAX_AGREEMENT = 0.6

# --------------------------------------------------------------------------- per torch line (measured)


def _half_adam_step() -> None:
    p = torch.ones(2, dtype=torch.float16, requires_grad=True)
    p.grad = torch.ones_like(p)
    torch.optim.Adam([p], foreach=False).step()


HALF_ADAM_CPU = Capability(
    Known(
        "float16 Adam/AdamW (foreach and for-loop) on CPU",
        (
            Range(
                "<2.2", False, "measured: torch 2.1.2 raises '\"addcdiv_cpu_out\" not implemented'", measured_in("<2.2")
            ),
            Range(
                ">=2.2",
                True,
                "measured on torch 2.2.2 to 2.15.0, every line",
                measured_in(">=2.2"),
            ),
        ),
    ),
    _half_adam_step,
    r"\"addcdiv_cpu_out\" not implemented for 'Half'",
)
CAPABILITIES = (HALF_ADAM_CPU,)

FUSED_ADAM_CPU = Known(
    "fused=True Adam/AdamW on CPU",
    (
        Range(
            "<2.4",
            False,
            "measured: torch 2.1.2, 2.2.2 and 2.3.1 raise 'fused=True requires ... cuda, xpu, privateuseone'",
            measured_in("<2.4"),
        ),
        Range(
            ">=2.4",
            True,
            "measured on torch 2.4.1 to 2.15.0, every line (the kernel computes in float32)",
            measured_in(">=2.4"),
        ),
    ),
    probe=lambda: _fused_adam(),
)
FSDP2_CLIP_GLOBAL_NORM = Known(
    "clip_grad_norm_ over FSDP2 shards (CPU, gloo) returns the global norm",
    (
        Range(
            ">=2.7,<2.10",
            False,
            "measured on torch 2.7.1 and 2.8.0: twice the global norm on both ranks (12.47 against one process's "
            "6.2355: likely the float32 gradients summed over the ranks, pytorch #162338, as S002-15 measures); on "
            "2.9.1 each rank's own shards' norm, the DTensor's partial value (0.267 and 0.297 against 0.399; "
            "pytorch #170862, reported on 2.9.1), the gradients clipped as one process's (gap 1.0e-6)",
            measured_in(">=2.7,<2.10"),
        ),
        Range(
            ">=2.10",
            True,
            "measured on torch 2.10.0, 2.11.0, 2.12.1, 2.13.0, 2.14.1 and 2.15.0 (likely pytorch #159856, #165962: "
            "the norm of a Partial DTensor made full first; merged after 2.9, not confirmed by a bisect)",
            measured_in(">=2.10"),
        ),
    ),
)
TRANSFORMER_MASKS_BF16_CPU = Known(
    "nn.TransformerEncoder with a causal and a padding mask under CPU bf16 autocast",
    (
        Range(
            "<2.2",
            False,
            "measured: torch 2.1.2 raises 'Expected attn_mask dtype to be bool or to match query dtype'",
            measured_in("<2.2"),
        ),
        Range(
            ">=2.2",
            True,
            "measured on torch 2.2.2 to 2.15.0, every line",
            measured_in(">=2.2"),
        ),
    ),
    probe=lambda: _transformer_masks_bf16(),
)
INPLACE_ERROR_NODE = Known(
    "the node autograd's in-place error names for a sigmoid's output",
    (
        Range(
            "<2.13",
            "SigmoidBackward0",
            "measured on torch 2.1.2 to 2.12.1, every line",
            measured_in("<2.13"),
        ),
        Range(">=2.13", "Sigmoid", "measured from torch 2.13.0 (2.13.0, 2.14.1, 2.15.0)", measured_in(">=2.13")),
    ),
    probe=lambda: _inplace_error_node(),
)
KNOWN = (FUSED_ADAM_CPU, FSDP2_CLIP_GLOBAL_NORM, TRANSFORMER_MASKS_BF16_CPU, INPLACE_ERROR_NODE)


# --------------------------------------------------------------------------- the tables' probes (trainclaims-releases)


def _works(fn: Any) -> bool:
    try:
        fn()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
    return True


def _fused_adam() -> bool:
    p = torch.ones(2, dtype=torch.float16, requires_grad=True)
    p.grad = torch.ones_like(p)
    return _works(lambda: torch.optim.Adam([p], fused=True).step())


def _transformer_masks_bf16() -> bool:
    from trainclaims.families.tp.lm import batch, tiny_lm

    inputs = {k: v for k, v in batch(0, 0).items() if k != "labels"}
    model = tiny_lm(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _works(lambda: model(**inputs))


def _inplace_error_node() -> str | None:
    import re

    s = torch.sigmoid(torch.randn(4, requires_grad=True))
    torch.relu_(s)
    try:
        s.sum().backward()
    except RuntimeError as err:
        found = re.search(r"which is output 0 of (\w+)", str(err))
        return found.group(1) if found else None
    return None


def rank_plan(modes: tuple, device: str) -> list:
    """The rank experiments of TP-01's and TP-04's data-parallel tests (:func:`.data_parallel.plan`;
    imported when a launched job asks: it imports torch.distributed)."""
    from trainclaims.families.tp.data_parallel import plan

    return plan(modes, device)


FAMILY = Family(
    id="TP",
    title="Today's training practice: language models, mixed precision, sharding, checkpointing, averaging",
    catalogue="""
TP-01 | With a token-mean loss and micro-batches of unequal token counts, accumulating loss/k does not give the large batch's step; summing the token losses and dividing by the step's total token count does, and across DDP ranks the count is the global one (transformers #34242, #34373, #37474; torchtitan #2206).
TP-02 | The loss a loop logs under accumulation is the large batch's loss: one value per optimizer step, not the k-times sum or the last micro-batch's (transformers PR #35438).
TP-03 | With fp16 autocast and a GradScaler, clipping after scaler.unscale_(optimizer) clips the true gradient as fp32 training does; clipping the scaled gradients compares the scale times the norm with the limit (PyTorch AMP examples, "Gradient clipping"; Lightning #9694; pytorch/examples #1196).
TP-04 | clip_grad_norm_ over FSDP2-sharded parameters returns the global norm: the same on every rank and one process's norm on the full model (torchtitan #766; pytorch #170862; FSDP1 #72548).
TP-05 | Activation checkpointing (use_reentrant=False) leaves every gradient unchanged, Dropout included: the RNG state is restored for the recomputation; with preserve_rng_state=False it is not (torch.utils.checkpoint docs; OLMo-core PR #828).
TP-06 | A reentrant checkpoint whose inputs do not require grad gives its parameters no gradient: a warning, then None or an error (torch.utils.checkpoint docs; transformers #26221, #21381).
TP-07 | AveragedModel with use_buffers=False (the default) averages the parameters only; its BatchNorm buffers are the source model's, not statistics of the averaged weights; update_bn recomputes them (torch.optim.swa_utils docs).
TP-08 | zero_grad() sets gradients to None (the default since 2.0): the optimizer skips a parameter whose grad is None but still moves one whose grad is zero where momentum or weight decay act (Optimizer.zero_grad docs).
TP-09 | Adam with weight_decay (L2 added to the gradient) is not AdamW (decoupled decay) (Loshchilov & Hutter, arXiv 1711.05101; torch.optim.AdamW docs).
TP-10 | With weights and optimizer in pure bfloat16, AdamW updates below half an ulp vanish; fp32 master weights (or fp32 parameters under autocast) keep them (pytorch/ao PR #1124; workofart/ml-by-hand PR #85).
TP-11 | Adam's default eps = 1e-8 is 0 in float16: an element whose gradient is exactly 0 becomes NaN after one step (pytorch #147437).
TP-12 | scaled_dot_product_attention(is_causal=True) with fewer queries than keys aligns the causal mask to the top left (FlashAttention-style code assumes bottom right) (F.scaled_dot_product_attention docs; pytorch #108108, #126873).
TP-13 | Under torch.compile, Dropout keeps the fraction 1-p of elements in expectation, but its masks are not eager's (unless inductor's fallback_random) (pytorch #142853; torchdynamo #2042).
TP-14 | In-place ReLU overwrites its input and returns it, with the forward and gradients of the out-of-place op; where backward needs the tensor it overwrote, autograd raises (the version counter) rather than returning a wrong gradient (autograd mechanics docs, "In-place operations with autograd").
""",
    report_parts=(report_practice,),
    rank_plan=rank_plan,
    capabilities=CAPABILITIES,
    mutants=MUTANTS,
    known=KNOWN,
)
