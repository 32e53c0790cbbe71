"""TP: claims from today's training practice, in one process (TP-01's and TP-04's data-parallel
halves: test_tp_data_parallel.py). The bands and the per-line tables are the family's
(trainclaims.families.tp), each with its measurement; the generic claims go through
trainclaims.checks, the checks users point at their own models."""

from __future__ import annotations

import functools
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainclaims import checks
from trainclaims import numerics as num
from trainclaims.claims import Verdict
from trainclaims.families import tp
from trainclaims.families.tp import lm
from trainclaims.modes import get
from trainclaims.step import ModeLoss

K = (2, 4)


def lm_mode(run, numerics):
    """``run()`` on the tiny LM in ``numerics``; skips where this torch's TransformerEncoder cannot
    take its masks under CPU bf16 autocast, as the family's table says (an error the table does
    not expect fails)."""
    try:
        return run()
    except RuntimeError as err:
        if "Expected attn_mask dtype" not in str(err) or get(numerics).autocast != "bfloat16":
            raise
        table = tp.TRANSFORMER_MASKS_BF16_CPU
        problem = table.check(False)
        if problem:
            raise AssertionError(problem) from err
        pytest.skip(f"{table.what}: {table.range_for().source}")


# --------------------------------------------------------------------------- TP-01, TP-02


@pytest.mark.claim("TP-01")
@pytest.mark.parametrize("k", K)
def test_token_normalized_accumulation_is_the_large_batch_and_loss_over_k_is_not(k, device, numerics, evidence):
    run = functools.partial(checks.token_accumulation, lm.lm(0), lm.batches(0), k=k, device=device, numerics=numerics)
    fixed = lm_mode(run, numerics)  # its broken side, each micro-batch's mean / k, runs too
    evidence.record(
        k=k,
        tokens_per_micro_batch=fixed.values["tokens_per_micro_batch"],
        **{
            tp.ACCUMULATION_EVIDENCE: {
                "tokens": fixed.values["gap_per_step"],
                "mean": fixed.values["broken_gap_per_step"],
            }
        },
    )
    fixed.judge(evidence)
    assert fixed.broken > tp.MEAN_OVER_K_MIN_GAP, (
        f"each micro-batch's mean / k came within {fixed.broken:.3g} of the large batch with token counts "
        f"{fixed.values['tokens_per_micro_batch']}: the recipe's error should show (> {tp.MEAN_OVER_K_MIN_GAP})"
    )


@pytest.mark.claim("TP-01")
def test_with_equal_token_counts_loss_over_k_is_the_large_batch(evidence):
    control = checks.token_accumulation(lm.lm(0), lm.batches(0, lengths="equal"), k=2, normalize="mean")
    evidence.record(equal_lengths_gap=control.gap)
    control.assert_holds()


@pytest.mark.claim("TP-02")
@pytest.mark.parametrize("k", K)
def test_the_logged_loss_is_the_large_batchs_and_the_undivided_sum_is_k_times_it(k, device, numerics, evidence):
    run = functools.partial(checks.logged_loss, lm.lm(0), lm.batches(0), k=k, device=device, numerics=numerics)
    logged = lm_mode(run, numerics)  # its broken side, the undivided sum, is judged beyond the bound too
    summed, last = run(normalize="sum", contrast=False), run(normalize="last", contrast=False)
    evidence.record(sum_ratio_per_step=summed.values["ratio_per_step"], last_micro_batch_gap=last.gap)
    logged.judge(evidence)
    off = max(abs(r - k) for r in summed.values["ratio_per_step"])
    assert off <= tp.SUM_LOGGED_MAX_OFF_K, (
        f"the undivided sum read {summed.values['ratio_per_step']} of the loss, not ~{k}"
    )
    assert last.gap > tp.LAST_LOGGED_MIN_GAP, f"the last micro-batch's mean came within {last.gap:.3g} of the loss"


# --------------------------------------------------------------------------- TP-03


@pytest.mark.claim("TP-03")
def test_clipping_after_unscale_sees_the_fp32_norm_and_before_it_the_scaled_one(device, evidence):
    mode = get("fp16-autocast")
    why = mode.unsupported(device)
    if why:
        pytest.skip(f"fp16-autocast with a GradScaler: {why}")
    data = [tp_mlp_batch(seed) for seed in range(10)]
    result = checks.clipping_under_scaler(functools.partial(tp_mlp, 0), data, max_norm=0.1, device=device)
    evidence.record(before_unscale_norm_ratio=result.broken, update_ratio=result.values["update_ratio"])
    assert result.values["float32_clipped_steps"] == len(data), "max_norm must clip every float32 step for a test"
    result.judge(evidence)  # the broken side (clipping before unscale_) is judged beyond the bound too
    assert result.broken > tp.SCALED_NORM_MIN_RATIO, result


@pytest.mark.claim("TP-03")
@pytest.mark.parametrize("mode", ["ieee", "bf16-autocast"])
def test_a_mode_without_a_grad_scaler_measures_no_clipping_under_one(mode):
    result = checks.clipping_under_scaler(functools.partial(tp_mlp, 0), [tp_mlp_batch(0)], max_norm=0.1, numerics=mode)
    assert result.unmeasured, result
    assert not result.holds
    with pytest.raises(checks.NotMeasured, match="without a GradScaler"):
        result.assert_holds()


def tp_mlp(seed: int, dropout: float = 0.0, bn: bool = False) -> nn.Sequential:
    """MLP 16-64-64-4 (BatchNorm after the first layer where ``bn``; Dropout after each ReLU)."""
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(64)] if bn else []
    return nn.Sequential(
        nn.Linear(16, 64), *norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(64, 4),
    )  # fmt: skip


def tp_mlp_batch(seed: int, n: int = 32, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(n, 16, generator=g) + shift, torch.randint(4, (n,), generator=g)


# --------------------------------------------------------------------------- TP-05, TP-06


@pytest.mark.claim("TP-05")
def test_checkpointing_keeps_every_gradient_dropout_included(device, numerics, evidence):
    data = [tp_mlp_batch(seed, 16) for seed in range(2)]
    result = checks.activation_checkpointing(functools.partial(tp_mlp, 0, 0.5), data, device=device, numerics=numerics)
    result.judge(evidence)


@pytest.mark.claim("TP-05")
def test_without_the_rng_state_the_recomputed_dropout_masks_differ(device, evidence):
    data = [tp_mlp_batch(seed, 16) for seed in range(2)]
    dropped = checks.activation_checkpointing(
        functools.partial(tp_mlp, 0, 0.5), data, device=device, preserve_rng_state=False
    )
    evidence.record(no_rng_state_gap=dropped.gap)
    assert dropped.gap > tp.NO_RNG_MIN_GAP, dropped


class _Reentrant(nn.Module):
    """A block checkpointed reentrantly on an input that does not require grad; ``head`` (where
    given) carries the graph past it."""

    def __init__(self, with_head: bool, reentrant: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 16) if with_head else None
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = checkpoint(self.block, x, use_reentrant=self.reentrant)
        return out + self.head(x) if self.head is not None else out


NO_GRAD_WARNING = "None of the inputs have requires_grad=True"


@pytest.mark.claim("TP-06")
def test_a_reentrant_checkpoint_on_inputs_without_grad_gives_its_parameters_none(device, numerics, evidence):
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).to(device)
    none, warned = {}, {}
    for reentrant in (True, False):
        model = num.place(_Reentrant(with_head=True, reentrant=reentrant), numerics, device)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ModeLoss(model, lambda out, _: out.float().sum(), numerics, device)((x, x)).backward()
        none[reentrant] = sum(p.grad is None for p in model.block.parameters())
        warned[reentrant] = any(NO_GRAD_WARNING in str(w.message) for w in seen)
    evidence.record(block_tensors=4, none_reentrant=none[True], none_non_reentrant=none[False], warned=warned[True])
    assert none[False] == 0, "use_reentrant=False must give the block its gradients"
    if none[True] == 4:
        assert warned[True], f"no warning {NO_GRAD_WARNING!r}"
        return
    if none[True] == 0 and get(numerics).compiles:  # measured on every line: dynamo traces it as non-reentrant
        evidence.conclude(
            Verdict.REFUTED,
            "under torch.compile the reentrant checkpoint gave its parameters gradients (0 of 4 None, no warning): "
            "dynamo traces through it as a non-reentrant one",
        )
        return
    pytest.fail(f"{none[True]} of the block's 4 tensors had no gradient (expected 4)")


@pytest.mark.claim("TP-06")
def test_with_nothing_else_in_the_graph_backward_raises(evidence):
    model = _Reentrant(with_head=False)
    with pytest.warns(UserWarning, match=NO_GRAD_WARNING):
        out = model(torch.randn(4, 16))
    with pytest.raises(RuntimeError, match="does not require grad") as raised:
        out.sum().backward()
    evidence.record(error=str(raised.value).splitlines()[0])


# --------------------------------------------------------------------------- TP-07


@pytest.mark.claim("TP-07")
def test_the_averaged_model_keeps_the_source_models_batchnorm_statistics(device, numerics, evidence):
    data = [tp_mlp_batch(seed, shift=2.0) for seed in range(20)]
    result = checks.averaged_batchnorm(
        functools.partial(tp_mlp, 0, 0.0, True), data, start=5, device=device, numerics=numerics
    )
    evidence.record(update_bn_gap=result.values["update_bn_gap"])
    result.judge(evidence)
    assert result.values["update_bn_gap"] > tp.UPDATE_BN_MIN_GAP, (
        "the copied statistics were those of the averaged weights: update_bn changed them by only "
        f"{result.values['update_bn_gap']:.3g}"
    )


@pytest.mark.claim("TP-07")
def test_with_use_buffers_the_statistics_are_averaged_too(evidence):
    data = [tp_mlp_batch(seed, shift=2.0) for seed in range(20)]
    result = checks.averaged_batchnorm(functools.partial(tp_mlp, 0, 0.0, True), data, start=5, use_buffers=True)
    evidence.record(gap_to_source=result.values["gap_to_source"])
    result.judge(evidence)
    assert result.values["gap_to_source"] > tp.UPDATE_BN_MIN_GAP


# --------------------------------------------------------------------------- TP-08, TP-09


OPTIMIZERS = {
    "SGD(momentum .9, wd .1)": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.1),
    "Adam": functools.partial(torch.optim.Adam, lr=1e-2),
    "AdamW(wd .1)": functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    "SGD": functools.partial(torch.optim.SGD, lr=0.1),  # no state, no decay: a zero gradient moves nothing
}


@pytest.mark.claim("TP-08")
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_grad_sets_none_and_a_none_gradient_is_skipped_but_a_zero_one_moves(name, device, evidence):
    moved = {}
    for set_to_none in (True, False):
        torch.manual_seed(0)
        a, b = nn.Linear(8, 8).to(device), nn.Linear(8, 8).to(device)
        opt = OPTIMIZERS[name]([*a.parameters(), *b.parameters()])
        x = torch.randn(16, 8, device=device)
        (a(x).square().mean() + b(x).square().mean()).backward()  # step 1: both branches
        opt.step()
        opt.zero_grad() if set_to_none else opt.zero_grad(set_to_none=False)
        assert (b.weight.grad is None) == set_to_none, "zero_grad()'s default must set gradients to None"
        before = b.weight.detach().clone()
        a(x).square().mean().backward()  # step 2: branch a only
        opt.step()
        moved[set_to_none] = ((b.weight.detach() - before).norm() / before.norm()).item()
    evidence.record(moved_none=moved[True], moved_zero=moved[False])
    assert moved[True] == 0, f"a parameter whose gradient is None moved {moved[True]:.3g}"
    if name == "SGD":
        assert moved[False] == 0, f"plain SGD moved a zero-gradient parameter by {moved[False]:.3g}"
    else:
        assert moved[False] > tp.ZERO_GRAD_MIN_MOVE, f"{name} moved a zero-gradient parameter only {moved[False]:.3g}"


def _adam_pair(seed: int, steps: int) -> dict[str, list[torch.Tensor]]:
    """Linear(4, 2) trained ``steps`` steps (MSE, lr 1e-2, wd 0.1) four ways, its parameters after."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    lr, wd = 1e-2, 0.1
    out = {}
    for way in ("Adam(wd)", "AdamW(wd)", "Adam + L2 by hand", "Adam + decay by hand"):
        torch.manual_seed(seed)
        model = nn.Linear(4, 2)
        if way == "Adam(wd)":
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        elif way == "AdamW(wd)":
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    if way == "Adam + L2 by hand":
                        p.grad.add_(p, alpha=wd)
                    elif way == "Adam + decay by hand":
                        p.mul_(1 - lr * wd)
            opt.step()
        out[way] = [p.detach().clone() for p in model.parameters()]
    return out


@pytest.mark.claim("TP-09")
@pytest.mark.parametrize("seed", range(5))
def test_adam_with_weight_decay_is_not_adamw(seed, evidence):
    runs = _adam_pair(seed, steps=10)
    gap = checks.relative_gap(runs["Adam(wd)"], runs["AdamW(wd)"])
    evidence.record(adam_l2_vs_adamw_gap=gap)
    assert gap > tp.ADAM_L2_MIN_GAP, f"Adam(weight_decay) came within {gap:.3g} of AdamW"


@pytest.mark.claim("TP-09")
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 5))
def test_adam_weight_decay_is_l2_on_the_gradient_and_adamw_is_decay_on_the_weights(seed, steps):
    runs = _adam_pair(seed, steps)
    for a, b in zip(runs["Adam(wd)"], runs["Adam + L2 by hand"], strict=True):
        assert torch.equal(a, b), "Adam's weight_decay is not L2 added to the gradient"
    for a, b in zip(runs["AdamW(wd)"], runs["Adam + decay by hand"], strict=True):
        assert torch.equal(a, b), "AdamW's decay is not p *= 1 - lr * wd before Adam's step"


# --------------------------------------------------------------------------- TP-10, TP-11


def _changed(variant: str, lr: float = 1e-4, seed: int = 0, steps: int = 3) -> int:
    """How many of 1000 weights in [1, 2) ``steps`` AdamW steps (loss sum(w * x), x ~ N(0, 1)) changed."""
    g = torch.Generator().manual_seed(seed)
    start = 1 + torch.rand(1000, generator=g)
    xs = [torch.randn(1000, generator=g) for _ in range(steps)]
    dtype = torch.bfloat16 if variant == "pure bfloat16" else torch.float32
    w = start.to(dtype, copy=True).requires_grad_()
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
    for x in xs:
        opt.zero_grad()
        if variant == "float32 master, bf16 compute":
            loss = (w.to(torch.bfloat16) * x.to(torch.bfloat16)).float().sum()
        elif variant == "float32 under bf16 autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (w * x).sum()
        else:
            loss = (w * x.to(dtype)).sum()
        loss.backward()
        opt.step()
    return int((w.detach() != start.to(dtype)).sum())


MASTER_VARIANTS = ("pure bfloat16", "float32", "float32 master, bf16 compute", "float32 under bf16 autocast")


@pytest.mark.claim("TP-10")
def test_pure_bfloat16_adamw_loses_updates_below_half_an_ulp_and_fp32_master_weights_keep_them(evidence):
    changed = {v: _changed(v) for v in MASTER_VARIANTS}
    control = _changed("pure bfloat16", lr=1e-2, steps=1)  # one step of lr * sign(gradient): above half an ulp
    evidence.record(**{tp.MASTER_EVIDENCE: {v: n / 1000 for v, n in changed.items()}}, pure_bf16_lr_1e_2=control)
    assert changed["pure bfloat16"] == 0, f"{changed['pure bfloat16']} of 1000 bfloat16 weights changed at lr 1e-4"
    assert all(changed[v] == 1000 for v in MASTER_VARIANTS[1:]), changed
    assert control == 1000, f"one step at lr 1e-2 (above half an ulp) changed only {control} of 1000 bfloat16 weights"


def _adam_half_step(device: str, dtype: torch.dtype, **kwargs) -> torch.Tensor:
    """One Adam step on 1000 ones whose gradient is exactly 0 on the first 500."""
    p = torch.ones(1000, dtype=dtype, device=device, requires_grad=True)
    p.grad = torch.cat([torch.zeros(500), torch.linspace(0.1, 1, 500)]).to(device, dtype)
    torch.optim.Adam([p], lr=1e-3, **kwargs).step()
    return p.detach()


@pytest.mark.claim("TP-11")
@pytest.mark.parametrize("kwargs", [{}, {"foreach": False}], ids=["default", "for-loop"])
def test_adams_default_eps_is_zero_in_float16_and_a_zero_gradient_becomes_nan(device, kwargs, evidence):
    assert torch.tensor(1e-8, dtype=torch.float16).item() == 0.0
    nans = int(_adam_half_step(device, torch.float16, **kwargs).isnan().sum())
    controls = {
        "eps 1e-7": int(_adam_half_step(device, torch.float16, eps=1e-7, **kwargs).isnan().sum()),
        "float32": int(_adam_half_step(device, torch.float32, **kwargs).isnan().sum()),
    }
    evidence.record(nan_of_500_zero_gradients=nans, **{f"nan {k}": v for k, v in controls.items()})
    assert nans == 500, f"{nans} of the 500 zero-gradient elements became NaN"
    assert controls == {"eps 1e-7": 0, "float32": 0}, controls


@pytest.mark.claim("TP-11")
def test_the_fused_cpu_adam_computes_in_float32_and_gives_no_nan(evidence):
    table = tp.FUSED_ADAM_CPU
    try:
        nans = int(_adam_half_step("cpu", torch.float16, fused=True).isnan().sum())
    except RuntimeError as err:  # this torch has no fused CPU Adam: where the table says so, a skip
        table.record(evidence, False)
        problem = table.check(False)
        if problem:
            raise AssertionError(problem) from err
        pytest.skip(f"{table.what}: not on torch {torch.__version__} ({table.range_for().source})")
    table.record(evidence, True)
    assert table.check(True) is None, table.check(True)
    evidence.record(nan_fused=nans)
    assert nans == 0, f"fused=True turned {nans} zero-gradient elements into NaN"


# --------------------------------------------------------------------------- TP-12


def _attention_inputs(lq: int, lk: int, seed: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, 8, generator=g, dtype=torch.float64).to(device, dtype) for n in (lq, lk, lk)]


def _sdpa_gaps(lq: int, lk: int, seed: int, dtype: torch.dtype, device: str) -> tuple[float, float]:
    q, k, v = _attention_inputs(lq, lk, seed, dtype, device)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True).double()
    gaps = []
    for diagonal in (0, lk - lq):  # top left, bottom right
        mask = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal)
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
        gaps.append(((out - ref).abs().max() / ref.abs().max()).item())
    return gaps[0], gaps[1]


@pytest.mark.claim("TP-12")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sdpa_is_causal_with_fewer_queries_than_keys_is_top_left_aligned(device, dtype, evidence):
    top_left, bottom_right = _sdpa_gaps(2, 5, 0, dtype, device)
    evidence.record(top_left_gap=top_left, bottom_right_gap=bottom_right, lq=2, lk=5)
    assert top_left <= tp.SDPA_MAX_GAP[num.dtype_name(dtype)], top_left
    assert bottom_right > tp.SDPA_BOTTOM_RIGHT_MIN_GAP, bottom_right


@pytest.mark.claim("TP-12")
@given(lq=st.integers(1, 6), extra=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_for_every_shape_with_fewer_queries_the_mask_is_the_top_left_one(lq, extra, seed):
    top_left, bottom_right = _sdpa_gaps(lq, lq + extra, seed, torch.float32, "cpu")
    assert top_left <= tp.SDPA_MAX_GAP["float32"], (top_left, bottom_right)
    assert bottom_right > tp.SDPA_BOTTOM_RIGHT_MIN_GAP, (top_left, bottom_right)


# --------------------------------------------------------------------------- TP-13


def _compiled_dropout(p: float, seed: int, fallback_random: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Compiled ``nn.Dropout(p)`` on a tensor of ones (its output) and eager's mask, same seed."""
    import torch._inductor.config as inductor

    torch._dynamo.reset()  # a fresh compile: dynamo's cache would otherwise reuse the other setting's graph
    drop = nn.Dropout(p)
    x = torch.ones(1000, 1000)
    saved = inductor.fallback_random
    inductor.fallback_random = fallback_random
    try:
        torch.manual_seed(seed)
        compiled = num.compiled(drop, "compile")(x)
    finally:
        inductor.fallback_random = saved
    torch.manual_seed(seed)
    return compiled, drop(x) != 0


@pytest.mark.slow
@pytest.mark.claim("TP-13")
@pytest.mark.parametrize("p", [0.5, 0.1])
def test_compiled_dropout_keeps_1_minus_p_but_not_eagers_masks(p, evidence):
    out, eager = _compiled_dropout(p, 0, fallback_random=False)
    kept = out != 0
    n = kept.numel()
    z = (kept.double().mean().item() - (1 - p)) / math.sqrt(p * (1 - p) / n)
    scale = out[kept].double()  # the kept values of ones: 1 / (1 - p), as eager's Dropout scales them
    scale_gap = (scale - 1 / (1 - p)).abs().max().item() * (1 - p)
    agreement = (kept == eager).double().mean().item()
    same_as_eager, eager_again = _compiled_dropout(p, 0, fallback_random=True)
    fallback_agreement = ((same_as_eager != 0) == eager_again).double().mean().item()
    evidence.record(
        kept_z=z, kept_scale_gap=scale_gap, agreement_with_eager=agreement, fallback_random_agreement=fallback_agreement
    )
    assert abs(z) <= tp.DROPOUT_MAX_Z, f"compiled Dropout kept {kept.double().mean().item():.5f}, z={z:.2f}"
    assert scale_gap <= tp.DROPOUT_SCALE_MAX_GAP, f"compiled Dropout's kept values are off 1/(1-p) by {scale_gap:.3g}"
    independent = p * p + (1 - p) * (1 - p)  # two independent masks agree this often
    assert agreement <= max(tp.MASK_MAX_AGREEMENT, independent + 0.01), f"the masks agree on {agreement:.4f}"
    assert fallback_agreement == 1.0, f"with fallback_random the masks agree on only {fallback_agreement:.4f}"


# --------------------------------------------------------------------------- TP-14


def _relu_net(inplace: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(inplace=inplace), nn.Linear(24, 3))


@pytest.mark.claim("TP-14")
def test_in_place_relu_has_the_forward_and_gradients_of_the_out_of_place_op(device, numerics, evidence):
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(3, (16,)).to(device)
    outs, grads = [], []
    for inplace in (False, True):
        model = num.place(_relu_net(inplace), numerics, device)
        out, loss = ModeLoss(model, F.cross_entropy, numerics, device).with_output((x, y))
        loss.backward()
        outs.append(out.detach())
        grads.append([p.grad for p in model.parameters()])
    same = torch.equal(outs[0], outs[1]) and all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    evidence.record(
        forward_gap=checks.relative_gap(outs[1], outs[0]), gradient_gap=checks.relative_gap(grads[1], grads[0])
    )
    assert same, "in-place ReLU's forward or gradients differ from the out-of-place op's"


@pytest.mark.claim("TP-14")
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_relu_in_place_returns_its_input_overwritten_with_no_negatives_left(shape, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    want = torch.relu(x)
    for op in (lambda t: F.relu(t, inplace=True), torch.relu_, lambda t: nn.ReLU(inplace=True)(t)):
        t = x.clone()
        version = t._version
        out = op(t)
        assert out is t
        assert torch.equal(t, want)
        assert t._version == version + 1


@pytest.mark.claim("TP-14")
def test_in_place_relu_on_a_tensor_backward_needs_raises(evidence):
    x = torch.randn(64, requires_grad=True)
    s = torch.sigmoid(x)  # sigmoid's backward reads its output
    torch.relu_(s)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as raised:
        s.sum().backward()
    node = re.search(r"which is output 0 of (\w+)", str(raised.value))
    named = node.group(1) if node else None
    evidence.record(node=named)
    tp.INPLACE_ERROR_NODE.record(evidence, named)
    problem = tp.INPLACE_ERROR_NODE.check(named)
    assert problem is None, problem
