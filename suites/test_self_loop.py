"""checks.training_loop: the user's own loop body for one optimizer step, against the large batch.
A correct loop holds; a loop that divides each micro-batch's mean by k (on token batches of unequal
counts), one that clips before unscale_, one that zeroes inside the micro-batch loop, one that logs
the sum of the means, and one without no_sync under DDP each fail naming the step and the fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainclaims import checks
from trainclaims.families.tp import lm

pytestmark = pytest.mark.trainclaims
IGNORE = -100


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(3, (n,), generator=g)


def _logits(model, micro):
    return model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"])


def _token_loss(model, micro, reduction: str) -> torch.Tensor:
    logits = _logits(model, micro)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), micro["labels"].reshape(-1), ignore_index=IGNORE, reduction=reduction
    )


# the user's loops: module-level, as DDP's ranks need them


def token_loop(model, optimizer, micro_batches):
    """Correct: each micro-batch's token sum over the step's token count; one zero_grad, one step."""
    total = sum(int((m["labels"] != IGNORE).sum()) for m in micro_batches)
    optimizer.zero_grad()
    logged = 0.0
    for micro in micro_batches:
        loss = _token_loss(model, micro, "sum") / total
        loss.backward()
        logged += loss.item()
    optimizer.step()
    return logged


def mean_over_k_loop(model, optimizer, micro_batches):
    """The 2024 accumulation bug: each micro-batch's token mean / k."""
    optimizer.zero_grad()
    logged = 0.0
    for micro in micro_batches:
        loss = _token_loss(model, micro, "mean") / len(micro_batches)
        loss.backward()
        logged += loss.item()
    optimizer.step()
    return logged


def zero_inside_loop(model, optimizer, micro_batches):
    """zero_grad inside the micro-batch loop: only the last micro-batch's gradient reaches the step."""
    for x, y in micro_batches:
        optimizer.zero_grad()
        (F.cross_entropy(model(x), y) / len(micro_batches)).backward()
    optimizer.step()


def mean_loop(model, optimizer, micro_batches):
    """Correct for a classifier (equal micro-batches): each micro-batch's mean / k."""
    optimizer.zero_grad()
    logged = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x), y) / len(micro_batches)
        loss.backward()
        logged += loss.item()
    optimizer.step()
    return logged


def sum_logging_loop(model, optimizer, micro_batches):
    """Trains correctly, logs the sum of the micro-batches' means (k times the loss)."""
    optimizer.zero_grad()
    logged = 0.0
    for x, y in micro_batches:
        loss = F.cross_entropy(model(x), y)
        (loss / len(micro_batches)).backward()
        logged += loss.item()
    optimizer.step()
    return logged


SCALER: dict[str, torch.amp.GradScaler] = {}


def _scaler() -> torch.amp.GradScaler:
    return SCALER.setdefault("cpu", torch.amp.GradScaler("cpu"))


def clip_before_unscale_loop(model, optimizer, micro_batches):
    """fp16 autocast with a GradScaler, clipping the scaled gradients."""
    scaler = _scaler()
    optimizer.zero_grad()
    for x, y in micro_batches:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y) / len(micro_batches)
        scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    scaler.step(optimizer)
    scaler.update()


def clip_after_unscale_loop(model, optimizer, micro_batches):
    scaler = _scaler()
    optimizer.zero_grad()
    for x, y in micro_batches:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y) / len(micro_batches)
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    scaler.step(optimizer)
    scaler.update()


def ddp_loop(model, optimizer, micro_batches):
    """Correct under DDP: every micro-batch but the last under no_sync."""
    optimizer.zero_grad()
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with model.no_sync() if not last else _nothing():
            (F.cross_entropy(model(x), y) / len(micro_batches)).backward()
    optimizer.step()


def no_sync_missing_loop(model, optimizer, micro_batches):
    optimizer.zero_grad()
    for x, y in micro_batches:
        (F.cross_entropy(model(x), y) / len(micro_batches)).backward()
    optimizer.step()


def _nothing():
    import contextlib

    return contextlib.nullcontext()


# --------------------------------------------------------------------------- the tests


def test_a_correct_token_loop_holds_and_the_2024_bug_fails_at_step_1_with_the_fix():
    good = checks.training_loop(token_loop, lm.lm(0), lm.batches(0), k=2)
    assert good.holds, good
    assert good.values["calls_per_step"][0] == "zero_grad backward backward step"
    bad = checks.training_loop(mean_over_k_loop, lm.lm(0), lm.batches(0), k=2)
    assert not bad.holds
    assert "step 1: each micro-batch's own mean / k" in bad.claim, bad
    assert "fix: divide each micro-batch's token sum by the step's token count" in bad.claim, bad


def test_zero_grad_inside_the_micro_batch_loop_fails_naming_it():
    batches = [data(16, s) for s in range(3)]
    assert checks.training_loop(mean_loop, mlp, batches, k=4).holds
    bad = checks.training_loop(zero_inside_loop, mlp, batches, k=4)
    assert not bad.holds
    assert "step 1: zero_grad between the micro-batches' backward passes" in bad.claim, bad
    assert "fix: call optimizer.zero_grad() once per step" in bad.claim, bad


def test_a_loop_that_logs_the_sum_of_the_means_fails_on_the_logged_loss():
    bad = checks.training_loop(sum_logging_loop, mlp, [data(16, s) for s in range(3)], k=4)
    assert not bad.holds
    assert "step 1: the loop logs 4" in bad.claim, bad
    assert bad.values["gap_per_step"][-1] <= 1e-4  # it trained right


def test_clipping_before_unscale_fails_and_after_it_holds_in_fp16():
    from trainclaims.modes import get

    why = get("fp16-autocast").unsupported("cpu")
    if why:
        pytest.skip(why)
    batches = [data(16, s) for s in range(3)]
    kwargs = {"k": 2, "max_norm": 0.1, "numerics": "fp16-autocast", "logs": False}
    SCALER.clear()
    good = checks.training_loop(clip_after_unscale_loop, mlp, batches, **kwargs)
    assert good.holds, good
    SCALER.clear()
    bad = checks.training_loop(clip_before_unscale_loop, mlp, batches, **kwargs)
    assert not bad.holds
    assert "step 1: clip_grad_norm_ before scaler.unscale_(optimizer)" in bad.claim, bad
    assert "fix: call scaler.unscale_(optimizer) before clip_grad_norm_" in bad.claim, bad


@pytest.mark.distributed
@pytest.mark.slow
def test_under_ddp_a_loop_without_no_sync_fails_naming_it():
    batches = [data(16, s) for s in range(2)]
    good = checks.training_loop(ddp_loop, mlp, batches, k=2, world=2)
    assert good.holds, good
    bad = checks.training_loop(no_sync_missing_loop, mlp, batches, k=2, world=2)
    assert not bad.holds
    assert "step 1: 2 of 2 backward passes all-reduced (outside no_sync)" in bad.claim, bad
    assert "fix: run every micro-batch but the last inside model.no_sync()" in bad.claim, bad
