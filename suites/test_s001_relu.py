"""S001: backpropagation through ReLU, as properties over ops, dtypes and devices."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from trainclaims import checks
from trainclaims.claims import Verdict
from trainclaims.families.s001 import LEAKY_MIN_MOVE, RECOVERY_BANDS, RECOVERY_STEPS, XOR_MIN_RATE, XOR_SEEDS
from trainclaims.families.s001.relu_ops import OPS, ReluLike
from trainclaims.families.s001.xor import X, Y, source_step, source_weights, train_xor
from trainclaims.known import Known

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


OP_IDS = [op.name for op in OPS]


def values(dtype: torch.dtype) -> st.SearchStrategy[float]:
    """Floats that stress a ReLU: +-0.0, subnormals of ``dtype``, small and large magnitudes."""
    tiny = torch.finfo(dtype).smallest_normal
    big = min(1e4, torch.finfo(dtype).max / 4)
    return st.one_of(
        st.sampled_from([0.0, -0.0, 6.0]),
        st.floats(-tiny, tiny),
        st.floats(-big, big, allow_nan=False, allow_infinity=False),
    )


@st.composite
def tensors(draw: st.DrawFn, dtype: torch.dtype) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 5), min_size=0, max_size=3))
    n = math.prod(shape)
    return torch.tensor(draw(st.lists(values(dtype), min_size=n, max_size=n)), dtype=dtype).reshape(shape)


def grad_of(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y.detach(), g


def where_mismatch(op: ReluLike, x: torch.Tensor, got: torch.Tensor, want: torch.Tensor) -> str:
    bad = (got != want).nonzero()[0].tolist()
    return (
        f"{op.name} on {x.device} {x.dtype}: d/dx at x={x[tuple(bad)].item()!r} is {got[tuple(bad)].item()}, "
        f"expected {want[tuple(bad)].item()}"
    )


@pytest.mark.claim("S001-01")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_relu_like_ops_are_max_0_x_with_derivative_0_below_and_1_above_zero(device, dtype, data):
    """Every op on every drawn tensor, away from exactly 0 (one property per dtype: the ops are
    cheap, the examples are not); a failure names op, dtype and device."""
    x = data.draw(tensors(dtype)).to(device)
    away = x != 0  # what an op does at exactly 0 is S001-02's claim, not this one's
    for op in OPS:
        y, g = grad_of(op.fn, x)
        want_y = x.clamp(0, op.cap)
        assert torch.equal(y, want_y), f"{op.name} on {device} {dtype}: forward differs from max(0, x)"
        want_g = ((x > 0) & (x < op.cap)).to(dtype)
        assert torch.equal(g[away], want_g[away]), where_mismatch(op, x, torch.where(away, g, want_g), want_g)


@pytest.mark.claim("S001-02")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_relu_like_op_gradient_at_exactly_zero_is_its_pinned_convention(device, dtype, op, evidence):
    """Each op's derivative at +0.0 and -0.0 is its convention for the installed torch: one value on
    every torch, or the value its range of torch versions documents (trainclaims.known)."""
    known = isinstance(op.at_zero, Known)
    want = op.at_zero.range_for() if known else None  # None: no measurement for this torch, measured here
    expected = (want.value if want else math.nan) if known else op.at_zero
    result = checks.gradient_at_zero(op.fn, expected=expected, device=device, dtype=dtype)
    got = [result.values["at_plus_zero"], result.values["at_minus_zero"]]
    evidence.record(op=op.name, dtype=str(dtype), device=device, grad_at_plus0=got[0], grad_at_minus0=got[1])
    if known:
        op.at_zero.record(evidence, got[0])  # what trainclaims-releases reads for the table
        for value in got:
            problem = op.at_zero.check(value)
            assert problem is None, f"{op.name} on {device} {dtype}: {problem}"
        note = op.at_zero.note()
        if note:
            evidence.record(known_change=note)
        return
    assert result.holds, (
        f"{op.name} on {device} {dtype}: d/dx at +0.0/-0.0 is {got}, pinned convention {op.at_zero} "
        f"(a behaviour change: torch {torch.__version__} has another convention)"
    )


@pytest.mark.claim("S001-02")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_relu_like_ops_do_not_all_agree_at_zero(device, dtype, evidence):
    x = torch.zeros(1, dtype=dtype, device=device)
    table = {op.name: grad_of(op.fn, x)[1].item() for op in OPS}
    evidence.record(dtype=str(dtype), device=device, derivative_at_zero=table)
    assert table["F.relu"] == 0.0, "the claim: PyTorch's relu passes no gradient at exactly 0"
    if len(set(table.values())) > 1:
        evidence.conclude(Verdict.HOLDS, f"relu passes 0 at 0; the ops disagree: {table}")
    else:  # the claim's second half is false here: every ReLU-like op passes the same at 0
        evidence.conclude(Verdict.REFUTED, f"every ReLU-like op passes {table['F.relu']:g} at 0: {table}")


ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def two_layer(activation: type[nn.Module], d_in: int = 5, hidden: int = 7, d_out: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, hidden), activation(), nn.Linear(hidden, d_out))  # the one line


# Each activation's derivative by hand, from its input z and output h (not from autograd: the code
# under test): what swapping the activation brings with it, the backprop code staying the same.
DERIVATIVES = {
    nn.Sigmoid: lambda z, h: h * (1 - h),
    nn.Tanh: lambda z, h: 1 - h * h,
    nn.ReLU: lambda z, h: (z > 0).to(z.dtype),
}


def manual_backprop(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Forward and backward by hand through Linear -> activation -> Linear -> softmax + CE, the same
    code whichever activation the model has: only the activation's derivative (its own, by hand)
    comes with it."""
    fc1, act, fc2 = model
    with torch.no_grad():
        z1 = x @ fc1.weight.T + fc1.bias
        h = act(z1)
        logits = h @ fc2.weight.T + fc2.bias
        p = logits.softmax(1)
        d_logits = (p - F.one_hot(y, p.shape[1]).to(p.dtype)) / len(x)
        d_w2, d_b2 = d_logits.T @ h, d_logits.sum(0)
        d_h = d_logits @ fc2.weight
        d_z1 = d_h * DERIVATIVES[type(act)](z1, h)
        d_w1, d_b1 = d_z1.T @ x, d_z1.sum(0)
    return [d_w1, d_b1, d_w2, d_b2]


@pytest.mark.claim("S001-03")
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_swapping_the_activation_changes_one_module_and_no_backprop_code(device, name):
    models = {n: two_layer(a).to(device) for n, a in ACTIVATIONS.items()}
    differing = [i for i, layers in enumerate(zip(*models.values(), strict=True)) if len({type(m) for m in layers}) > 1]
    assert differing == [1], "only the activation module differs between the three nets"
    model = models[name]
    x, y = torch.randn(8, 5, device=device), torch.randint(3, (8,), device=device)
    F.cross_entropy(model(x), y).backward()
    auto = [p.grad for p in model.parameters()]
    torch.testing.assert_close(manual_backprop(model, x, y), auto)


# {dtype: (atol, rtol)}: manual and autograd sum in different orders.
BACKPROP_TOL = {dt: checks.tolerance(dt) for dt in (torch.float64, torch.float32)}  # (1e-12, 1e-10), (1e-5, 1e-4)


@st.composite
def mlp_problem(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    return (
        draw(st.integers(1, 32)),  # batch
        draw(st.integers(1, 20)),  # inputs
        draw(st.integers(1, 40)),  # hidden
        draw(st.integers(2, 10)),  # classes
        draw(st.integers(0, 2**31 - 1)),  # seed
    )


@pytest.mark.claim("S001-04")
@pytest.mark.parametrize("dtype", list(BACKPROP_TOL), ids=str)
@given(problem=mlp_problem())
def test_step_by_step_chain_rule_through_relu_and_softmax_equals_autograd(device, dtype, problem):
    batch, d_in, hidden, classes, seed = problem
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d_in, generator=g, dtype=dtype).to(device)
    y = torch.randint(classes, (batch,), generator=g).to(device)
    w1 = torch.randn(hidden, d_in, generator=g, dtype=dtype).to(device).requires_grad_()
    w2 = torch.randn(classes, hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    # By hand, as the source asks ("step by step"): the ReLU derivative is 1 where z > 0, else 0.
    z = x @ w1.T
    h = z.clamp(min=0)
    logits = h @ w2.T
    d_logits = (logits.softmax(1) - F.one_hot(y, classes).to(dtype)) / batch  # softmax + CE
    d_w2 = d_logits.T @ h
    d_h = d_logits @ w2
    d_z = d_h * (z > 0).to(dtype)
    d_w1 = d_z.T @ x
    F.cross_entropy(torch.relu(x @ w1.T) @ w2.T, y).backward()
    atol, rtol = BACKPROP_TOL[dtype]
    torch.testing.assert_close(d_w1.detach(), w1.grad, atol=atol, rtol=rtol)
    torch.testing.assert_close(d_w2.detach(), w2.grad, atol=atol, rtol=rtol)


@pytest.mark.claim("S001-04")
@given(seed=st.integers(0, 2**32 - 1))
def test_the_sources_numpy_xor_gradients_equal_autograd(device, seed):
    w1, w2 = source_weights(seed)
    loss, _, g1, g2 = source_step(w1, w2)
    t1 = torch.tensor(w1, device=device, requires_grad=True)
    t2 = torch.tensor(w2, device=device, requires_grad=True)
    x, y = torch.tensor(X, device=device), torch.tensor(Y, device=device)
    t_loss = (torch.relu(x @ t1) @ t2 - y).square().sum()
    t_loss.backward()
    # The source zeroes grad_h only where h < 0 (h == 0 passes), PyTorch where h <= 0: h == 0 only
    # on the input (0, 0), whose row contributes nothing to grad_w1, so the gradients agree.
    torch.testing.assert_close(t_loss.item(), loss, atol=0, rtol=1e-12)
    torch.testing.assert_close(t1.grad.cpu().numpy(), g1, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(t2.grad.cpu().numpy(), g2, atol=1e-12, rtol=1e-10)


@pytest.mark.claim("S001-04")
@given(seed=st.integers(0, 2**31 - 1))
def test_relu_net_passes_gradcheck_away_from_zero(device, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64).to(device)
    w1 = torch.randn(5, 4, generator=g, dtype=torch.float64).to(device)
    w2 = torch.randn(3, 5, generator=g, dtype=torch.float64).to(device)
    # Keep every pre-activation at least 0.1 away from the kink, farther than gradcheck's eps:
    # a fixed offset moves the ones that fall closer.
    z = x @ w1.T
    bias = torch.where(z.abs() < 0.1, torch.where(z < 0, -0.2, 0.2), 0.0)

    def net(w1_: torch.Tensor, w2_: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ w1_.T + bias) @ w2_.T

    assert torch.autograd.gradcheck(net, (w1.requires_grad_(), w2.requires_grad_()), eps=1e-6, atol=1e-6)


@pytest.mark.claim("S001-05")
def test_the_sources_xor_net_learns_xor_for_almost_every_seed(device, numerics, evidence):
    # ieee: the source's float64. Another mode trains in float32, the dtype that mode acts on
    # (autocast leaves float64 alone); the rate is asserted the same.
    dtype = torch.float64 if numerics.reference else torch.float32
    runs = train_xor(list(range(XOR_SEEDS)), device=device, dtype=dtype, numerics=numerics)
    learned = runs.learned
    rate = learned.float().mean().item()
    failed = [s for s, ok in zip(runs.seeds, learned.tolist(), strict=True) if not ok]
    evidence.record(
        seeds=XOR_SEEDS,
        dtype=str(dtype),
        success_rate=rate,
        failed_seeds=failed,
        loss_fell=(runs.loss[:, -1] < runs.loss[:, 0]).float().mean().item(),
        median_loss_start_end=[runs.loss[:, 0].median().item(), runs.loss[:, -1].median().item()],
    )
    assert rate >= XOR_MIN_RATE, f"learned XOR for {rate:.2%} of {XOR_SEEDS} seeds; failed: {failed[:20]}"
    assert (runs.loss[:, -1] < runs.loss[:, 0]).all()
    evidence.conclude(Verdict.HOLDS, f"learns XOR for {rate:.2%} of seeds 0..{XOR_SEEDS - 1}; fails for {failed}")


def dead_unit_problem(
    seed: int, device: str, activation: nn.Module
) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """Non-negative inputs, a first layer whose unit 0 has negative weights and bias: its
    pre-activation is < 0 on every input. The target needs every unit."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 4, generator=g).to(device) + 0.5
    y = 1 + x.sum(1, keepdim=True)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), activation, nn.Linear(3, 1)).to(device)
    with torch.no_grad():
        model[0].weight[0] = -model[0].weight[0].abs() - 0.1
        model[0].bias[0] = -1.0
        model[2].weight.fill_(1.0)
    return model, x, y


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
}


@pytest.mark.claim("S001-06")
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 60))
def test_a_dead_relu_unit_gets_exactly_zero_gradient_and_stays_dead(device, optimizer, seed, steps):
    model, x, y = dead_unit_problem(seed, device, nn.ReLU())
    opt = OPTIMIZERS[optimizer](model.parameters())  # no weight decay
    w0, b0 = model[0].weight[0].clone(), model[0].bias[0].clone()
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        assert model[0].weight.grad[0].eq(0).all()
        assert model[0].bias.grad[0] == 0
        opt.step()
    assert torch.equal(model[0].weight[0], w0), "the dead unit's weights moved"
    assert torch.equal(model[0].bias[0], b0), "the dead unit's bias moved"
    assert (model[0](x)[:, 0] <= 0).all(), "the dead unit came back"


@pytest.mark.claim("S001-06")
@given(seed=st.integers(0, 2**31 - 1), slope=st.floats(1e-3, 1.0))
def test_the_same_unit_gets_slope_times_the_upstream_gradient_with_leaky_relu(device, seed, slope):
    model, x, y = dead_unit_problem(seed, device, nn.LeakyReLU(slope))
    z = model[0](x)
    h = model[1](z)
    (d_h,) = torch.autograd.grad(F.mse_loss(model[2](h), y), h, retain_graph=True)
    (d_z,) = torch.autograd.grad(h, z, d_h)
    assert (z[:, 0] < 0).all()
    torch.testing.assert_close(d_z[:, 0], slope * d_h[:, 0], atol=0, rtol=1e-6)
    assert (d_z[:, 0] != 0).any(), "the leaky unit receives a gradient"


@pytest.mark.claim("S001-06")
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_with_leaky_relu_the_unit_recovers_only_where_the_optimizer_pushes_it(device, optimizer, evidence):
    recovered, moved = {}, {}
    for seed in range(10):
        model, x, y = dead_unit_problem(seed, device, nn.LeakyReLU(0.1))
        opt = OPTIMIZERS[optimizer](model.parameters())
        w0 = model[0].weight[0].detach().clone()
        for step in range(RECOVERY_STEPS):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
            if (model[0](x)[:, 0] > 0).any():
                recovered[seed] = step + 1
                break
        moved[seed] = ((model[0].weight[0].detach() - w0).norm() / w0.norm()).item()
    lo, hi = RECOVERY_BANDS[optimizer]
    evidence.record(optimizer=optimizer, recovered_of_10=len(recovered), steps_to_recover=recovered, weight_moved=moved)
    # the effect itself, for every optimizer: the leaky unit's weights move (a dead ReLU's do not)
    assert min(moved.values()) > LEAKY_MIN_MOVE, f"{optimizer}: the leaky unit's weights barely moved: {moved}"
    assert lo <= len(recovered) <= hi, f"{optimizer}: recovered for {len(recovered)}/10 seeds: {recovered}"
    evidence.conclude(
        Verdict.CONDITIONAL,
        "a dead ReLU unit never recovers (exactly zero gradient); with leaky ReLU it gets a gradient and "
        "recovers where the optimizer keeps pushing (SGD+momentum), often not with plain SGD or Adam",
    )


@pytest.mark.claim("S001-07")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(slope=st.floats(0, 10, allow_nan=False), data=st.data())
def test_leaky_relu_scales_negative_inputs_and_their_gradient_by_the_slope(device, dtype, slope, data):
    x = data.draw(tensors(dtype)).to(device)
    y, g = grad_of(lambda t: F.leaky_relu(t, slope), x)
    s = torch.tensor(slope, dtype=dtype)
    assert torch.equal(y, torch.where(x > 0, x, x * s))
    # at exactly 0 leaky_relu passes the slope (measured), so slope 0 gives ReLU's 0
    want = torch.where(x > 0, torch.ones_like(x), s.to(device).expand_as(x))
    assert torch.equal(g, want)


@pytest.mark.claim("S001-07")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_leaky_relu_with_slope_zero_equals_relu_but_for_the_sign_of_zero(device, dtype, data, evidence):
    x = data.draw(tensors(dtype)).to(device)
    y_leaky, g_leaky = grad_of(lambda t: F.leaky_relu(t, 0.0), x)
    y_relu, g_relu = grad_of(F.relu, x)
    assert torch.equal(y_leaky, y_relu), "equal as numbers"
    assert torch.equal(g_leaky, g_relu), "gradients equal too"
    # Measured: not bit for bit. leaky_relu computes x * 0 = -0.0 for x < 0; relu gives +0.0.
    # The sign bits differ exactly there, and at x = -0.0 as the device has it: relu(-0.0) is -0.0
    # on CPU (torch 2.1-2.14) but +0.0 on CUDA (torch 2.11, H100), where leaky_relu keeps -0.0.
    differ = torch.signbit(y_leaky) != torch.signbit(y_relu)
    negative_zero = (x == 0) & torch.signbit(x)
    assert torch.equal(differ & ~negative_zero, x < 0), (
        f"sign of zero differs at {x[differ].tolist()}, expected where x < 0 (and at -0.0 on some devices)"
    )
    relu_of_negative_zero = F.relu(torch.tensor(-0.0, dtype=dtype, device=device)).item()
    evidence.record(relu_of_negative_zero=str(relu_of_negative_zero))
    evidence.conclude(
        Verdict.CONDITIONAL,
        "negative_slope=0 equals ReLU in value and gradient, but not bit for bit: "
        f"leaky_relu gives -0.0 where relu gives +0.0 for x < 0 (relu(-0.0) = {relu_of_negative_zero} on {device})",
    )


@pytest.mark.claim("S001-08")
@given(pre=st.lists(st.floats(-1e6, 0, allow_nan=False), min_size=2, max_size=16), seed=st.integers(0, 2**31 - 1))
def test_a_single_relu_unit_before_softmax_gives_one_output_for_every_negative_input(device, pre, seed):
    torch.manual_seed(seed)
    head = nn.Linear(1, 10).to(device)  # the single ReLU unit feeds a 10-way softmax
    z = torch.tensor(pre, device=device).unsqueeze(1).requires_grad_(True)
    probs = head(torch.relu(z)).softmax(1)
    assert (probs == probs[0]).all(), "inputs with different negative pre-activations were told apart"
    probs[:, 0].sum().backward()
    assert (z.grad == 0).all(), "no gradient reaches the unit to learn from them either"
    # a leaky unit keeps the difference (in the logits: large inputs saturate the softmax)
    leaky_logits = head(F.leaky_relu(z.detach(), 0.01))
    if max(pre) - min(pre) > 1:
        assert not (leaky_logits == leaky_logits[0]).all()
