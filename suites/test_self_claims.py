"""Self-tests of the claim suites: break the behaviour a claim test pins (by monkeypatching
PyTorch inside a pytester run of the real claim module) and check that the claim test fails
loudly, and that the unbroken run passes."""

from pathlib import Path

import pytest
import torchvision  # noqa: F401  imported before any in-process run: pytester unloads what a run
from hypothesis import settings

# (torchvision: pytester unloads what a run imported, and torchvision cannot be imported twice in one process)

ROOT = Path(__file__).resolve().parents[1]

RELU_PASSES_GRADIENT_AT_ZERO = '''
import pytest
import torch
import torch.nn.functional as F

_relu = F.relu


class ReluOneAtZero(torch.autograd.Function):
    """relu whose backward passes the gradient at x == 0 (the x >= 0 convention)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x >= 0).to(grad.dtype)


@pytest.fixture(autouse=True)
def relu_convention_changed(monkeypatch):
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: ReluOneAtZero.apply(x))
'''


# Inner runs only need to see a claim test fail: no shrinking of the failing example (7 s a run).
NO_SHRINK = """

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    from hypothesis import Phase, settings
    from trainclaims.hypothesis_profiles import register_profiles, registered

    chosen = settings.get_profile(registered(register_profiles()))  # the suite's profile, less the shrinking
    settings.register_profile("no-shrink", chosen, phases=[Phase.explicit, Phase.generate])
    settings.load_profile("no-shrink")
"""


@pytest.fixture
def claim_suite(pytester, monkeypatch):
    """A pytester dir with the suite's conftest; ``add`` copies a claim module in (under another
    basename: the outer session has imported the original as ``test_s00N_...`` already)."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

    def add(module: str, extra_conftest: str = "") -> None:
        conftest = "import pytest\n" + NO_SHRINK + extra_conftest
        pytester.makeconftest(conftest)
        pytester.makepyfile(**{f"test_copy_of_{module}": (ROOT / "suites" / f"{module}.py").read_text()})

    pytester.add = add
    before = settings.get_current_profile_name()
    yield pytester
    settings.load_profile(before)  # hypothesis settings are process-wide: undo the inner run's load


SELECT_RELU = ["--device=cpu", "--no-report", "-k", "pinned_convention and F.relu and float32"]


def test_the_relu_convention_test_passes_on_pytorchs_relu(claim_suite):
    claim_suite.add("test_s001_relu")
    result = claim_suite.runpytest_inprocess(*SELECT_RELU)
    result.assert_outcomes(passed=1)


def test_the_relu_convention_test_fails_naming_op_dtype_device_when_relus_backward_changes(claim_suite):
    claim_suite.add("test_s001_relu", RELU_PASSES_GRADIENT_AT_ZERO)
    result = claim_suite.runpytest_inprocess(*SELECT_RELU)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*F.relu on cpu torch.float32: d/dx at +0.0/-0.0 is [[]1.0, 1.0[]], pinned convention 0.0*"]
    )


BN_BROKEN = """
import pytest
import torch
import torch.nn.functional as F

_batch_norm = F.batch_norm


def wrong_momentum(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum * 0.9, eps)


def biased_running_var(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                       eps=1e-5):
    out = _batch_norm(input, running_mean, running_var, weight, bias, training, 0.0 if training else momentum, eps)
    if training and running_mean is not None:
        dims = [0, *range(2, input.dim())]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * input.mean(dims))
            running_var.mul_(1 - momentum).add_(momentum * input.var(dims, unbiased=False))
    return out


@pytest.fixture(autouse=True)
def batch_norm_broken(monkeypatch):
    monkeypatch.setattr(F, "batch_norm", {broken})
"""
SELECT_EMA = ["--device=cpu", "--no-report", "-k", "running_statistics_follow_the_ema and float64"]


def test_the_running_statistics_test_passes_on_pytorchs_batchnorm(claim_suite):
    claim_suite.add("test_s002_batchnorm")
    result = claim_suite.runpytest_inprocess(*SELECT_EMA)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("broken", ["wrong_momentum", "biased_running_var"])
def test_the_running_statistics_test_fails_on_a_wrong_momentum_or_a_biased_running_variance(claim_suite, broken):
    claim_suite.add("test_s002_batchnorm", BN_BROKEN.replace("{broken}", broken))
    result = claim_suite.runpytest_inprocess(*SELECT_EMA)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Tensor-likes are not close!*"])


SGD_BROKEN = '''
import pytest
import torch

_SGD = torch.optim.SGD


class SGDIgnoring(_SGD):
    """SGD that drops one per-group setting: every group falls back to the default."""

    def __init__(self, params, *args, **kwargs):
        params = list(params)
        if params and isinstance(params[0], dict):
            params = [{{k: v for k, v in g.items() if k != "{ignored}"}} for g in params]
        super().__init__(params, *args, **kwargs)


@pytest.fixture(autouse=True)
def sgd_broken(monkeypatch):
    monkeypatch.setattr(torch.optim, "SGD", SGDIgnoring)
'''
SELECT_REPARAM = ["--device=cpu", "--no-report", "-k", "power_of_two and float64"]


def test_the_rescaling_property_passes_on_pytorchs_sgd(claim_suite):
    claim_suite.add("test_s000_input_scaling")
    result = claim_suite.runpytest_inprocess(*SELECT_REPARAM)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("ignored", ["lr", "weight_decay"])
def test_the_rescaling_property_fails_when_sgd_ignores_per_group_lr_or_weight_decay(claim_suite, ignored):
    claim_suite.add("test_s000_input_scaling", SGD_BROKEN.format(ignored=ignored))
    result = claim_suite.runpytest_inprocess(*SELECT_REPARAM)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*losses differ*"])


def test_the_practice_familys_rank_plan_names_every_experiment_its_tests_make():
    """What a launched job runs for TP-01 and TP-04: the broken variants in the reference mode only."""
    from trainclaims.families import tp

    ids = {e.id for e in tp.rank_plan(("ieee", "bf16-autocast"), "cpu")}
    assert "TP-01/ddp_tokens/local/ieee" in ids
    assert "TP-04/fsdp_clip/clip_grad_norm_/bf16-autocast" in ids
    assert "TP-04/fsdp_clip/local shards/bf16-autocast" not in ids
