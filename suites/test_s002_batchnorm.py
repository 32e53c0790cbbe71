"""S002: BatchNorm parameters and modes, running statistics, gradient accumulation vs a larger
batch, and non_blocking copies."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

from trainclaims import checks
from trainclaims import numerics as num
from trainclaims.claims import Verdict
from trainclaims.families.s002 import BN_MIN_GAP, BN_TOL, EMA_CORRECTED_MAX_GAP, EMA_UNCORRECTED_MIN_GAP
from trainclaims.families.seed.engine import TrainConfig
from trainclaims.modes import REFERENCE, Mode
from trainclaims.step import unequal_skips

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def bn_input(dims: int, batch: int, channels: int, g: torch.Generator, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(N, C) for BatchNorm1d, (N, C, 3, 2) for 2d, (N, C, 2, 2, 2) for 3d; mean 1.5, std 2."""
    spatial = {1: (), 2: (3, 2), 3: (2, 2, 2)}[dims]
    return (torch.randn(batch, channels, *spatial, generator=g, dtype=torch.float64) * 2 + 1.5).to(device, dtype)


def per_channel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, biased var, unbiased var) over every axis but the channels', in float64 on the CPU,
    where the reference EMA is kept (on CUDA a device tensor here met the CPU EMA and raised)."""
    flat = x.double().cpu().transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=False), flat.var(1, unbiased=True)


def shaped(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


# --------------------------------------------------------------------------- S002-01


@pytest.mark.claim("S002-01")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_train_and_eval_set_training_recursively_through_nested_modules(device, mode):
    model = nn.Sequential(
        nn.Linear(4, 4),
        nn.Sequential(nn.BatchNorm1d(4), nn.ModuleList([nn.Dropout(0.5), nn.Sequential(nn.ReLU())])),
    ).to(device)
    getattr(model, "eval" if mode == "train" else "train")()  # start from the other mode
    returned = getattr(model, mode)()
    assert returned is model
    assert {m.training for m in model.modules()} == {mode == "train"}


@pytest.mark.claim("S002-01")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_batchnorm_in_eval_normalizes_with_the_running_statistics(device, dtype, dims):
    g = torch.Generator().manual_seed(dims)
    bn = BATCHNORMS[dims](5, eps=1e-3).to(device, dtype)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5, generator=g))
        bn.running_var.copy_(torch.rand(5, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(5, generator=g))
        bn.bias.copy_(torch.randn(5, generator=g))
    bn.eval()
    x = bn_input(dims, 4, 5, g, dtype, device)
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    y = bn(x)
    rm, rv, w, b = (shaped(t.double(), x) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias))
    want = (x.double() - rm) / torch.sqrt(rv + bn.eps) * w + b
    atol, rtol = BN_TOL[dtype]
    torch.testing.assert_close(y.double(), want, atol=atol, rtol=rtol)
    assert torch.equal(bn.running_mean, before[0]), "eval does not update the running statistics"
    assert torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]


@pytest.mark.claim("S002-01")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(p=st.floats(0.05, 0.95))
def test_dropout_is_the_identity_in_eval_and_zeroes_about_p_in_train(device, dtype, p):
    drop = nn.Dropout(p).to(device)
    x = torch.ones(400_000, dtype=dtype, device=device)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    y = drop(x)
    zeroed = (y == 0).double().mean().item()
    # 6 standard deviations of a Binomial(n, p) fraction: false alarm rate ~2e-9 per example.
    bound = 6 * (p * (1 - p) / x.numel()) ** 0.5
    assert abs(zeroed - p) < bound, f"zeroed {zeroed:.5f} of the entries, p={p}"
    kept = y[y != 0]
    # survivors are scaled by 1/(1-p), up to the rounding of that factor in ``dtype``
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))


# --------------------------------------------------------------------------- S002-02


@pytest.mark.claim("S002-02")
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_affine_batchnorm_has_gamma_one_and_beta_zero_that_receive_gradients(device, dims):
    bn = BATCHNORMS[dims](6).to(device)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert torch.equal(bn.weight, torch.ones(6, device=device))
    assert torch.equal(bn.bias, torch.zeros(6, device=device))
    x = bn_input(dims, 8, 6, torch.Generator().manual_seed(0), torch.float32, device)
    (bn(x) * torch.linspace(-1, 1, x.numel(), device=device).reshape(x.shape)).sum().backward()
    assert bn.weight.grad is not None
    assert bn.bias.grad is not None
    assert (bn.weight.grad != 0).all()
    assert (bn.bias.grad != 0).all()


@pytest.mark.claim("S002-02")
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_batchnorm_without_affine_has_no_parameters(device, dims):
    bn = BATCHNORMS[dims](6, affine=False).to(device)
    assert list(bn.parameters()) == []
    assert bn.weight is None
    assert bn.bias is None


# --------------------------------------------------------------------------- S002-03 / S002-04


@st.composite
def bn_runs(draw: st.DrawFn) -> dict:
    return {
        "dims": draw(st.sampled_from([1, 2, 3])),
        "channels": draw(st.integers(1, 6)),
        "batch": draw(st.integers(2, 12)),
        "batches": draw(st.integers(1, 6)),
        "momentum": draw(st.one_of(st.none(), st.floats(1e-3, 1.0), st.just(1.0), st.just(0.1))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@pytest.mark.claim("S002-04")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(run=bn_runs())
def test_running_statistics_follow_the_ema_of_batch_mean_and_unbiased_variance(device, dtype, run):
    g = torch.Generator().manual_seed(run["seed"])
    bn = BATCHNORMS[run["dims"]](run["channels"], momentum=run["momentum"]).to(device, dtype).train()
    mean = torch.zeros(run["channels"], dtype=torch.float64)
    var = torch.ones(run["channels"], dtype=torch.float64)
    atol, rtol = BN_TOL[dtype]
    for n in range(1, run["batches"] + 1):
        x = bn_input(run["dims"], run["batch"], run["channels"], g, dtype, device)
        y = bn(x)
        m_batch, v_biased, v_unbiased = per_channel(x)
        # training output: normalized with the *biased* batch variance
        want = (x.double() - shaped(m_batch.to(device), x)) / torch.sqrt(shaped(v_biased.to(device), x) + bn.eps)
        torch.testing.assert_close(y.double(), want, atol=atol * 10, rtol=rtol * 10)
        # momentum=None: cumulative moving average, factor 1/num_batches_tracked
        m = 1.0 / n if run["momentum"] is None else run["momentum"]
        mean = (1 - m) * mean + m * m_batch
        var = (1 - m) * var + m * v_unbiased  # running_var stores the *unbiased* variance
    assert int(bn.num_batches_tracked) == run["batches"]
    torch.testing.assert_close(bn.running_mean.double().cpu(), mean, atol=atol, rtol=rtol)
    torch.testing.assert_close(bn.running_var.double().cpu(), var, atol=atol, rtol=rtol)


# Over 40 batches of 16 from N(3, 2^2), momentum 0.1, float64: the running statistics follow the
# hand-computed EMA to rounding, while the EMA of the *biased* variance ends lower by about 1/16
# (each batch's biased variance is 15/16 of its unbiased one; the shared start value 1 keeps weight
# 0.9^40 = 1.5%): measured 6.226-6.229% below over seeds 0-4.
EMA_TRACE = {"batches": 40, "batch": 16, "momentum": 0.1, "mean": 3.0, "std": 2.0}


@pytest.mark.claim("S002-04")
def test_running_statistics_trace_the_ema_of_the_unbiased_batch_variance_over_40_batches(device, evidence):
    cfg = EMA_TRACE
    m = cfg["momentum"]
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm1d(1, momentum=m).to(device, torch.float64)
    mean, var, var_biased = 0.0, 1.0, 1.0
    trace: dict[str, list[float]] = {k: [] for k in ("running_mean", "ema_mean", "running_var")}
    trace |= {"ema_var_unbiased": [], "ema_var_biased": []}
    for _ in range(cfg["batches"]):
        x = torch.randn(cfg["batch"], 1, generator=g, dtype=torch.float64) * cfg["std"] + cfg["mean"]
        bn(x.to(device))
        mean = (1 - m) * mean + m * x.mean().item()
        var = (1 - m) * var + m * x.var(unbiased=True).item()
        var_biased = (1 - m) * var_biased + m * x.var(unbiased=False).item()
        for key, value in zip(
            trace, (bn.running_mean.item(), mean, bn.running_var.item(), var, var_biased), strict=True
        ):
            trace[key].append(value)
    data = f"N({cfg['mean']:g}, {cfg['std']:g}^2)"
    evidence.record(ema_trace=trace, momentum=m, batch=cfg["batch"], data=data, device=device)
    torch.testing.assert_close(trace["running_mean"], trace["ema_mean"], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(trace["running_var"], trace["ema_var_unbiased"], atol=1e-12, rtol=1e-10)
    below = 1 - trace["ema_var_biased"][-1] / trace["running_var"][-1]
    assert 0.055 < below < 0.07, f"the biased-variance EMA ends {below:.2%} below running_var (expected ~1/16)"


@pytest.mark.claim("S002-04")
def test_batchnorm_momentum_defaults_to_0_1(device):
    for cls in BATCHNORMS.values():
        assert cls(3).momentum == 0.1


@pytest.mark.deterministic  # eval and train outputs compared bit for bit
@pytest.mark.claim("S002-03")
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_with_running_stats_eval_uses_them_and_without_batch_statistics_are_used_in_eval_too(device, dims):
    g = torch.Generator().manual_seed(dims)
    x = bn_input(dims, 8, 4, g, torch.float64, device)
    tracked = BATCHNORMS[dims](4).to(device, torch.float64)
    tracked(x)  # one training batch
    tracked.eval()
    m, v, unbiased = per_channel(x)
    batch_stats = (x - shaped(m.to(device), x)) / torch.sqrt(shaped(v.to(device), x) + tracked.eps)
    assert not torch.allclose(tracked(x), batch_stats)
    # it uses the running statistics: one EMA step (momentum 0.1) from mean 0, variance 1
    running_mean, running_var = (0.1 * m).to(device), (0.9 + 0.1 * unbiased).to(device)
    want = (x - shaped(running_mean, x)) / torch.sqrt(shaped(running_var, x) + tracked.eps)
    torch.testing.assert_close(tracked(x), want, atol=1e-12, rtol=1e-10)

    untracked = BATCHNORMS[dims](4, track_running_stats=False).to(device, torch.float64)
    assert untracked.running_mean is None
    assert untracked.running_var is None
    assert untracked.num_batches_tracked is None
    assert dict(untracked.named_buffers()) == {}
    untracked.eval()
    want = (x - shaped(m.to(device), x)) / torch.sqrt(shaped(v.to(device), x) + untracked.eps)
    torch.testing.assert_close(untracked(x), want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(untracked(x), untracked.train()(x), atol=0, rtol=0)


@pytest.mark.claim("S002-03")
def test_reset_running_stats_restores_zeros_ones_and_zero_batches(device):
    bn = nn.BatchNorm1d(3).to(device)
    for _ in range(3):
        bn(torch.randn(5, 3, device=device) + 2)
    bn.reset_running_stats()
    assert torch.equal(bn.running_mean, torch.zeros(3, device=device))
    assert torch.equal(bn.running_var, torch.ones(3, device=device))
    assert int(bn.num_batches_tracked) == 0


# --------------------------------------------------------------------------- S002-05

EVAL_BATCHES = (1, 2, 8, 64)
# Measured (CPU, torch 2.14.1; fc-bn = seed net + BatchNorm1d(300), seed-000 recipe; seeds 0-2;
# 3 epochs on fashion-mnist, 5 on synthetic; first 4096 test images). Accuracy with running
# statistics, and the points lost when each eval batch normalizes with its own statistics:
#   fashion-mnist  running 85.0-86.7%; lost at batch 2: 30.0-32.7, 8: 4.8-6.0, 64: -1.9..+0.1
#   synthetic      (seeds 0-7) running 40.9-42.9%; lost at batch 2: -3.75..-1.6 (a gain), 8: -1.15..+0.95,
#                  64: -0.68..+1.47 (no effect: the claim's "worse" does not show, the test says conditional)
# Batch size 1 is degenerate: BatchNorm1d raises ValueError ("Expected more than 1 value per channel").
# At batch 2 every feature is normalized to -1/+1: only the sign of the difference survives.
S002_05_EPOCHS = {"fashion-mnist": 3, "synthetic": 5}
# Bands for (running - batch statistics) accuracy, per tier and eval batch size: measured range
# widened by about 3 points for other seeds and devices; synthetic's batch 2 by 1.1 points above, so
# that its band excludes 0 (the gain measured on every seed: no effect there would be a change).
S002_05_LOSS = {
    "fashion-mnist": {2: (0.20, 0.45), 8: (0.02, 0.10), 64: (-0.04, 0.03)},
    "synthetic": {2: (-0.07, -0.005), 8: (-0.04, 0.03), 64: (-0.03, 0.03)},
}


def accuracy_with_batch_statistics(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, numerics: Mode = REFERENCE
) -> float:
    """Eval mode, but every BatchNorm normalizes with the statistics of the eval batch itself
    (track_running_stats=False, no buffers), as the source's warning describes."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    n = len(x) // batch * batch
    x = x.to(next(model.parameters()).dtype)  # as trained: a mode may hold the parameters in another dtype
    with torch.no_grad(), num.autocast(numerics, x.device):
        out = torch.cat([model(x[i : i + batch]) for i in range(0, n, batch)])
    return (out.argmax(1) == y[:n]).double().mean().item()


def bn_eval_accuracies(model: nn.Module, data, numerics: Mode = REFERENCE) -> tuple[float, dict[int, float]]:
    """Accuracy with running statistics, and with each eval batch size's own, evaluated in the
    numerics mode's autocast region where it has one (the model as trained: eager)."""
    x, y = data.x_test[:4096], data.y_test[:4096]
    x = x.to(next(model.parameters()).dtype)  # as trained: a mode may hold the parameters in another dtype
    with torch.no_grad(), num.autocast(numerics, x.device):
        running = (model.eval()(x).argmax(1) == y).double().mean().item()
    return running, {b: accuracy_with_batch_statistics(model, x, y, b, numerics) for b in EVAL_BATCHES[1:]}


@pytest.mark.slow
@pytest.mark.claim("S002-05")
@pytest.mark.parametrize("tier", ["fashion-mnist", "synthetic"])
def test_small_eval_batches_with_batch_statistics_lose_accuracy(data, tier, device, trainer, numerics, evidence):
    model = trainer(TrainConfig(model="fc-bn", epochs=S002_05_EPOCHS[tier], numerics=numerics), data).model
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        accuracy_with_batch_statistics(model, data.x_test[:4], data.y_test[:4], 1)
    running, acc = bn_eval_accuracies(model, data, numerics)
    evidence.record(tier=tier, running_stats_accuracy=running, batch_stats_accuracy=acc, batch_1="ValueError")
    for b, (lo, hi) in S002_05_LOSS[tier].items():
        assert lo <= running - acc[b] <= hi, f"batch {b}: {acc[b]:.3f} vs running statistics {running:.3f}"
    change = ", ".join(f"{acc[b] - running:+.1%} at batch {b}" for b in acc)  # batch statistics - running
    versus = f"accuracy with batch statistics vs running ones: {change}"
    if running - acc[2] > 0:
        evidence.conclude(Verdict.HOLDS, f"{tier}: {versus}; batch 1 raises ValueError")
    else:
        evidence.conclude(Verdict.CONDITIONAL, f"holds on real data (fashion-mnist), not on {tier}: {versus}")


# --------------------------------------------------------------------------- S002-06


@pytest.mark.deterministic  # the same backward twice, compared bit for bit
@pytest.mark.claim("S002-06")
@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradients_add_up_across_backward_calls_until_zero_grad(device, set_to_none):
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    a, b = torch.randn(4, 5, device=device), torch.randn(4, 5, device=device)
    grads = []
    for x in (a, b):
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append(model.weight.grad.clone())
    model.zero_grad()
    model(a).square().sum().backward()
    model(b).square().sum().backward()
    torch.testing.assert_close(model.weight.grad, grads[0] + grads[1])
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert model.weight.grad is None
    else:
        assert torch.equal(model.weight.grad, torch.zeros_like(model.weight))
    model(b).square().sum().backward()
    torch.testing.assert_close(model.weight.grad, grads[1], atol=0, rtol=0)


# --------------------------------------------------------------------------- S002-07

ACCUM_TOL = {dt: checks.tolerance(dt) for dt in (torch.float64, torch.float32)}  # (1e-12, 1e-10), (1e-5, 1e-4)
ACCUM_OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
}


def mlp(seed: int, device: str, dtype: torch.dtype, bn: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).to(device, dtype)


def accumulate(model, opt, micro_batches, divide: bool) -> None:
    opt.zero_grad()
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x), y)
        (loss / len(micro_batches) if divide else loss).backward()


@st.composite
def accumulation_runs(draw: st.DrawFn) -> dict:
    return {
        "k": draw(st.integers(1, 5)),
        "micro": draw(st.integers(1, 8)),
        "steps": draw(st.integers(1, 4)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "optimizer": draw(st.sampled_from(list(ACCUM_OPTIMIZERS))),
    }


@pytest.mark.claim("S002-07")
@pytest.mark.parametrize("dtype", list(ACCUM_TOL), ids=str)
@given(run=accumulation_runs())
@example(run={"k": 3, "micro": 3, "steps": 1, "seed": 2150304, "optimizer": "adam"})  # see below
def test_accumulating_k_micro_batches_with_loss_over_k_equals_one_k_times_larger_batch(device, dtype, run):
    """At every step the accumulated gradient (loss/k) equals the large batch's to the dtype's
    rounding, and so do the parameters after the steps. Adam in float32 is the exception for the
    parameters: its first step is lr * g / (|g| + eps), so a gradient element that is rounding noise
    (~1e-11 here) on both sides becomes a step of up to 1e-4 in opposite directions (hypothesis'
    example above: 1 of 48 elements off by 1.0e-4, torch 2.1.2 and any other). There the gradients
    are compared from the same parameters: the large-batch copy takes the accumulated copy's
    parameters after each step."""
    k, micro = run["k"], run["micro"]
    g = torch.Generator().manual_seed(run["seed"])
    accumulated, large = mlp(run["seed"], device, dtype), mlp(run["seed"], device, dtype)
    opt_a = ACCUM_OPTIMIZERS[run["optimizer"]](accumulated.parameters())
    opt_l = ACCUM_OPTIMIZERS[run["optimizer"]](large.parameters())
    resync = run["optimizer"] == "adam" and dtype == torch.float32
    atol, rtol = ACCUM_TOL[dtype]
    for _ in range(run["steps"]):
        x = torch.randn(k * micro, 6, generator=g, dtype=dtype).to(device)
        y = torch.randint(3, (k * micro,), generator=g).to(device)
        accumulate(accumulated, opt_a, list(zip(x.split(micro), y.split(micro), strict=True)), True)
        accumulate(large, opt_l, [(x, y)], True)
        for p_a, p_l in zip(accumulated.parameters(), large.parameters(), strict=True):
            torch.testing.assert_close(p_a.grad, p_l.grad, atol=atol, rtol=rtol)
        opt_a.step()
        opt_l.step()
        if resync:
            with torch.no_grad():
                for p_a, p_l in zip(accumulated.parameters(), large.parameters(), strict=True):
                    p_l.copy_(p_a)
    for p_a, p_l in zip(accumulated.parameters(), large.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_l, atol=atol, rtol=rtol)


@pytest.mark.claim("S002-07")
@given(k=st.integers(2, 6), micro=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_without_dividing_the_loss_the_accumulated_gradient_is_k_times_the_large_batch_gradient(device, k, micro, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k * micro, 6, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(3, (k * micro,), generator=g).to(device)
    accumulated, large = mlp(seed, device, torch.float64), mlp(seed, device, torch.float64)
    for xb, yb in zip(x.split(micro), y.split(micro), strict=True):
        F.cross_entropy(accumulated(xb), yb).backward()
    F.cross_entropy(large(x), y).backward()
    for p_a, p_l in zip(accumulated.parameters(), large.parameters(), strict=True):
        torch.testing.assert_close(p_a.grad, k * p_l.grad, atol=1e-12, rtol=1e-10)


# S002-07 per numerics mode: fixed examples in float32 (what the modes act on): the mlp above,
# k=4 micro-batches of 8, 3 steps, SGD with momentum, seeds 0-4. Measured in ieee (CPU): the
# parameters agree to 2.4e-7 relative; ACCUM_TOL[float32] is the bound the properties use.
ACCUM_MODE = {"k": 4, "micro": 8, "steps": 3, "seeds": (0, 1, 2, 3, 4)}


def accumulation_in_mode(device: str, seed: int, numerics: Mode) -> checks.Checked:
    """trainclaims.checks.accumulation on the mlp above, in ``numerics`` (the check users run on
    their own models): its gap is the max over parameters of |accumulated - large batch| / |large
    batch| (norms)."""
    k, micro = ACCUM_MODE["k"], ACCUM_MODE["micro"]
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(ACCUM_MODE["steps"]):
        x = torch.randn(k * micro, 6, generator=g)
        batches.append((x, torch.randint(3, (k * micro,), generator=g)))
    result = checks.accumulation(
        lambda: mlp(seed, device, torch.float32),
        batches,
        k=k,
        optimizer_fn=ACCUM_OPTIMIZERS["sgd-momentum"],
        device=device,
        numerics=numerics,
    )
    return result


@pytest.mark.claim("S002-07")
def test_accumulation_equals_the_larger_batch_in_each_numerics_mode(device, numerics, evidence):
    """In ieee: equal to float32 rounding (asserted, as the properties above). In another mode the
    gap is measured: holds there within the same bound, else conditional with the gap."""
    results = [accumulation_in_mode(device, seed, numerics) for seed in ACCUM_MODE["seeds"]]
    gaps = [r.gap for r in results]
    evidence.record(numerics=numerics, relative_parameter_gap=gaps, **{k: v for k, v in ACCUM_MODE.items()})
    unequal = "; ".join(filter(None, (unequal_skips(r.values["scaler_skips"]) for r in results)))
    # Measured (seeds 0-4, largest gap): CPU bf16-autocast 5.3e-4, fp16-autocast 5.5e-5, compile
    # 8.5e-8 (as ieee); H100 tf32 within 1e-4, bf16-autocast 4.8e-4.
    what = f"accumulated and large-batch parameters agree after {ACCUM_MODE['steps']} steps"
    evidence.judge_in_mode(numerics, max(gaps), ACCUM_TOL[torch.float32][1], what, unequal=unequal)


# --------------------------------------------------------------------------- S002-08


@pytest.mark.claim("S002-08")
@pytest.mark.parametrize("k", [2, 4])
def test_with_batchnorm_accumulation_differs_from_the_large_batch_and_updates_stats_k_times(
    device, k, numerics, evidence
):
    # ieee: float64, as measured above; another mode: float32, the dtype it acts on
    dtype = torch.float64 if numerics == num.REFERENCE else torch.float32
    diffs = []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(8 * k, 6, generator=g, dtype=dtype).to(device) * 2 + 1
        y = torch.randint(3, (8 * k,), generator=g).to(device)
        result = checks.accumulation_with_batchnorm(
            lambda seed=seed: mlp(seed, device, dtype, bn=True),
            [(x, y)],
            k=k,
            device=device,
            numerics=numerics,
            min_gap=BN_MIN_GAP,
        )
        assert result.values["running_stat_updates"] == [k]  # the micro-batches' k updates
        assert result.values["large_batch_updates"] == [1]
        diffs.append(result.gap)
    evidence.record(k=k, dtype=str(dtype), relative_gradient_difference=diffs)
    assert min(diffs) > BN_MIN_GAP, f"relative gradient differences {diffs}"


def ema_gaps(device: str, seed: int, m: float = 0.1, k: int = 4, steps: int = 5) -> dict[str, float]:
    """Relative gaps between k micro-batch running statistics and the large batch's, corrected
    (momentum 1-(1-m)^k) and uncorrected (momentum m), with the uncorrected gap predicted."""
    micro, channels = 8, 4096
    g = torch.Generator().manual_seed(seed)
    mu = (torch.rand(channels, generator=g, dtype=torch.float64) * 4 + 3).to(device)
    sigma = (torch.rand(channels, generator=g, dtype=torch.float64) + 2).to(device)  # var far from its init 1
    micro_bn = nn.BatchNorm1d(channels, momentum=m).to(device, torch.float64)
    corrected = nn.BatchNorm1d(channels, momentum=1 - (1 - m) ** k).to(device, torch.float64)
    uncorrected = nn.BatchNorm1d(channels, momentum=m).to(device, torch.float64)
    for _ in range(steps):
        x = torch.randn(k * micro, channels, generator=g, dtype=torch.float64).to(device) * sigma + mu
        for xb in x.split(micro):
            micro_bn(xb)
        corrected(x)
        uncorrected(x)

    def gap(other: nn.BatchNorm1d, buffer: str, ref: torch.Tensor) -> float:
        return ((getattr(micro_bn, buffer) - getattr(other, buffer)).mean() / ref.mean()).abs().item()

    return {
        "corrected_mean": gap(corrected, "running_mean", mu),
        "corrected_var": gap(corrected, "running_var", sigma**2),
        "uncorrected_mean": gap(uncorrected, "running_mean", mu),
        "uncorrected_var": gap(uncorrected, "running_var", sigma**2),
        "predicted_uncorrected": (1 - m) ** steps - (1 - m) ** (k * steps),
    }


@pytest.mark.claim("S002-08")
def test_momentum_correction_makes_running_stats_match_the_large_batch_in_expectation(device, evidence):
    gaps = ema_gaps(device, seed=0)
    evidence.record(momentum=0.1, k=4, steps=5, **gaps)
    assert gaps["corrected_mean"] < EMA_CORRECTED_MAX_GAP
    assert gaps["corrected_var"] < EMA_CORRECTED_MAX_GAP
    assert gaps["uncorrected_mean"] > EMA_UNCORRECTED_MIN_GAP
    assert gaps["uncorrected_var"] > EMA_UNCORRECTED_MIN_GAP
    assert abs(gaps["uncorrected_mean"] - gaps["predicted_uncorrected"]) < EMA_CORRECTED_MAX_GAP


# --------------------------------------------------------------------------- S002-09


def step_schedule(n_micro_batches: int, k: int, source: bool) -> list[tuple[int, int]]:
    """Run the source's loop (typos fixed) on a tiny model: at every optimizer.step(), (index, how
    many micro-batches' gradients the step applies). The count is read off the gradient PyTorch
    accumulated (over one micro-batch's: every micro-batch is the same and lr is 0, so the model
    stays put), not off the loop: the schedule's effect, as torch's accumulation gives it."""
    model = nn.Linear(2, 1)
    x, target = torch.ones(1, 2), torch.ones(1, 1)
    F.mse_loss(model(x), target).backward()
    single = model.weight.grad.clone()
    model.zero_grad()
    steps: list[tuple[int, int]] = []

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):  # type: ignore[override]
            steps.append((index, round((model.weight.grad / single).mean().item())))
            return super().step(closure)

    optimizer = Recorder(model.parameters(), lr=0.0)
    data = [(x, target)] * n_micro_batches
    # The source writes `for index, data, target in enumerate(...)` and `criterion(data, target)`;
    # the loop below is what it means.
    for index, (xb, yb) in enumerate(data):
        loss = F.mse_loss(model(xb), yb)
        loss.backward()
        if (index % k == 0) if source else ((index + 1) % k == 0):
            optimizer.step()
            optimizer.zero_grad()
    return steps


@pytest.mark.claim("S002-09")
@given(k=st.integers(2, 8), n=st.integers(1, 40))
def test_the_sources_schedule_steps_after_the_first_micro_batch_and_the_fixed_one_every_k(k, n, evidence):
    source = step_schedule(n, k, source=True)
    fixed = step_schedule(n, k, source=False)
    assert source[0] == (0, 1), "the source's first step comes after a single micro-batch"
    assert [i for i, _ in source] == list(range(0, n, k))
    assert all(acc == k for _, acc in source[1:])
    assert [i for i, _ in fixed] == list(range(k - 1, n, k))
    assert all(acc == k for _, acc in fixed)
    evidence.record(
        note="source's loop also has two typos: `for index, data, target in enumerate(dataloader)` "
        "(needs `index, (data, target)`) and `criterion(data, target)` (needs `output`)",
        example_k4_n10={"source": step_schedule(10, 4, True), "fixed": step_schedule(10, 4, False)},
    )


# --------------------------------------------------------------------------- S002-10


@pytest.mark.claim("S002-10")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64], ids=str)
def test_non_blocking_copies_from_pinned_memory_are_identical_after_synchronize(device, dtype):
    if torch.device(device).type != "cuda":
        pytest.skip("needs CUDA: non_blocking host-to-device copies from pinned memory")
    host = (torch.arange(1 << 20) % 977).to(dtype).pin_memory()
    assert host.is_pinned()
    on_device = host.to(device, non_blocking=True)
    torch.cuda.synchronize(device)
    assert torch.equal(on_device.cpu(), host)
    back = torch.empty_like(host).pin_memory()
    back.copy_(on_device * 2, non_blocking=True)
    torch.cuda.synchronize(device)
    assert torch.equal(back, host * 2)
