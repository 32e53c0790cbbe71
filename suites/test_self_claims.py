"""Self-tests of the claim suites: break the behaviour a claim test pins (by monkeypatching
PyTorch inside a pytester run of the real claim module) and check that the claim test fails
loudly, and that the unbroken run passes."""

import os
from pathlib import Path

import pytest
import torchvision  # noqa: F401  imported before any in-process run: pytester unloads what a run

# imported, and torchvision cannot be imported twice in one process

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


@pytest.fixture
def claim_suite(pytester, monkeypatch):
    """A pytester dir with the suite's conftest; ``add`` copies a claim module in (under another
    basename: the outer session has imported the original as ``test_s00N_...`` already)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def add(module: str, extra_conftest: str = "") -> None:
        pytester.makeconftest((ROOT / "conftest.py").read_text() + extra_conftest)
        pytester.makepyfile(**{f"test_copy_of_{module}": (ROOT / "suites" / f"{module}.py").read_text()})

    pytester.add = add
    return pytester


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
