"""Self-tests of trainclaims.checks, the checks users run on their own models: each one holds
where the claim is true and reports "does not hold", with the numbers, where it is not."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainclaims import checks
from trainclaims.modes import get

pytestmark = pytest.mark.trainclaims


def mlp(bn: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), *([nn.BatchNorm1d(16)] if bn else []), nn.ReLU(), nn.Linear(16, 3))


def data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(3, (n,), generator=g)


class AlwaysDropout(nn.Module):
    """Dropout that ignores eval(): what eval_determinism exists to catch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, training=True)


def test_accumulation_holds_with_loss_over_k_and_not_without():
    batches = [data(16, s) for s in range(3)]
    assert checks.accumulation(mlp, batches, k=4).holds
    undivided = checks.accumulation(mlp, batches, k=4, divide=False)
    assert not undivided.holds
    with pytest.raises(
        AssertionError, match=r"with the loss undivided .* \(needs <= 0\.0001\); .*likely: the loss is not divided by k"
    ):
        undivided.assert_holds()


def test_accumulation_with_batchnorm_differs_and_needs_a_batchnorm():
    result = checks.accumulation_with_batchnorm(lambda: mlp(bn=True), [data(16)], k=2)
    assert result.holds, str(result)
    assert result.values["running_stat_updates"] == [2]
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        checks.accumulation_with_batchnorm(mlp, [data(16)], k=2)


def test_eval_determinism_catches_a_dropout_that_ignores_eval():
    assert checks.eval_determinism(lambda: nn.Sequential(mlp(), nn.Dropout(0.5)), [data(8)[0]]).holds
    broken = checks.eval_determinism(lambda: nn.Sequential(mlp(), AlwaysDropout()), [data(8)[0]])
    assert not broken.holds
    assert broken.gap > 0


def test_batchnorm_eval_holds_and_a_batch_statistics_model_does_not():
    x = data(64)[0]
    assert checks.batchnorm_eval(lambda: mlp(bn=True), list(x.split(16)), inputs=data(8, 1)[0]).holds

    def batch_stats() -> nn.Module:  # track_running_stats=False: batch statistics in eval too
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16, track_running_stats=False), nn.Linear(16, 3))

    with pytest.raises(ValueError, match="keeps no running statistics"):
        checks.batchnorm_eval(batch_stats, list(x.split(16)), inputs=data(8, 1)[0])


def test_reparametrization_holds_with_lr_over_s_squared_and_gradients_scale_with_s():
    batches = [data(16, s) for s in range(3)]
    assert checks.reparametrization(mlp, batches, s=255.0).holds
    grads = checks.gradient_scaling(mlp, [data(16)], s=255.0)
    assert grads.holds
    assert grads.values["norm_ratio"] == pytest.approx(255.0, rel=1e-4)


def test_gradient_at_zero_is_exact():
    assert checks.gradient_at_zero(F.relu, expected=0.0).holds
    half = checks.gradient_at_zero(lambda x: torch.maximum(x, torch.zeros_like(x)), expected=0.0)
    assert not half.holds
    assert half.values["at_plus_zero"] == 0.5


def test_a_training_steps_flops_are_counted_for_any_model():
    x, y = data(16)
    flops = checks.step_flops(nn.Linear(6, 3), (x, y))
    # forward addmm 2*B*I*O and the weight's gradient as much again (the input needs none)
    assert flops["total"] == 4 * 16 * 6 * 3
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    counted = checks.step_flops(conv, (torch.randn(2, 1, 8, 8), torch.randint(3, (2,))))
    assert counted["convolution"] == 2 * 2 * 4 * 6 * 6 * 9  # forward: 2 * N * C_out * H_out * W_out * k*k


def test_judge_makes_an_equality_in_another_numerics_mode_conditional_with_the_gap():
    from trainclaims.claims import Evidence
    from trainclaims.results import Verdict

    evidence = Evidence("t", ("X-01",))
    checks.Checked("c", "a equals b", "equal", 3e-3, 1e-4, mode=get("bf16-autocast")).judge(evidence)
    assert evidence.verdict == Verdict.CONDITIONAL
    assert evidence.values["gap"] == 3e-3
    older = Evidence("t", ("X-01",))
    with pytest.warns(DeprecationWarning, match=r"judge\(evidence, numerics\) is deprecated"):
        checks.Checked("c", "a equals b", "equal", 3e-3, 1e-4).judge(older, "bf16-autocast")  # the 0.3 form
    assert older.verdict == Verdict.CONDITIONAL
    assert evidence.values["gap"] == 3e-3


def test_running_statistics_follow_the_ema_and_the_check_tells_the_biased_variance_apart():
    result = checks.running_statistics(lambda: mlp(bn=True), list(data(64)[0].split(8)))
    assert result.holds, str(result)
    assert result.values["biased_var_gap"] > 100 * result.values["var_gap"]

    class BiasedBN(nn.BatchNorm1d):  # stores the biased variance: the EMA the check must refuse
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            if self.training:
                with torch.no_grad():
                    n = x.shape[0]
                    self.running_var.sub_(self.momentum * x.var(0) * (1 - (n - 1) / n))
            return out

    def biased() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), BiasedBN(16), nn.Linear(16, 3))

    assert not checks.running_statistics(biased, list(data(64)[0].split(8))).holds


def ddp_rank_result(gaps, parameters, synced, micro=1):
    return {
        "gaps": gaps,
        "synced_backwards": synced,
        "parameters": parameters,
        "dtype": "torch.float32",
        "numerics": "ieee",
        "micro_batches": micro,
    }


def test_the_ddp_verdict_fails_on_a_gap_on_replicas_that_differ_and_on_extra_all_reduces():
    """checks.ddp_verdict judges what the ranks returned (spawned here, or by a launched job):
    each of the three ways the claim can fail, from hand-made rank results (the ranks themselves
    run in test_s002_data_parallel.py and in the example project)."""
    same = [[1.0, 2.0], [3.0]]
    good = checks.ranks.ddp_verdict([ddp_rank_result([1e-8, 2e-8], same, [1, 1])] * 2)
    assert good.holds
    assert (good.gap, good.bound) == (2e-8, checks.tolerance(torch.float32)[1])
    assert not checks.ranks.ddp_verdict([ddp_rank_result([1e-8, 3e-3], same, [1, 1])] * 2).holds
    apart = [ddp_rank_result([0.0], same, [1]), ddp_rank_result([0.0], [[1.0, 2.5], [3.0]], [1])]
    verdict = checks.ranks.ddp_verdict(apart)
    assert not verdict.holds
    assert "the replicas differ between ranks (gap 0.224)" in verdict.claim
    every_micro_batch = checks.ranks.ddp_verdict([ddp_rank_result([0.0], same, [2], micro=2)] * 2)
    assert not every_micro_batch.holds
    assert "all-reduced, per step and rank: [[2], [2]] (expected 1 each)" in every_micro_batch.claim
    assert checks.ranks.ddp_verdict([ddp_rank_result([2e-5], same, [1])] * 2, bound=1e-4).holds, "a family's own bound"


def test_the_ddp_batchnorm_verdict_needs_a_gap_and_each_ranks_own_statistics():
    def rank(output_gap, gradient_gap, stat_gap):
        return {"output_gap": output_gap, "gradient_gap": gradient_gap, "running_stat_gap": stat_gap}

    env = {"dtype": "torch.float64", "numerics": "ieee"}
    assert checks.ranks.ddp_batchnorm_verdict([rank(0.2, 0.3, 0.0) | env, rank(0.4, 0.3, 0.0) | env]).gap == 0.2
    assert not checks.ranks.ddp_batchnorm_verdict([rank(0.2, 0.3, 0.0) | env, rank(1e-9, 0.3, 0.0) | env]).holds
    shared = checks.ranks.ddp_batchnorm_verdict([rank(0.2, 0.3, 0.0) | env, rank(0.2, 0.3, 0.5) | env])
    assert not shared.holds
    assert "not its own shard's: gaps [0.0, 0.5]" in shared.claim


# --------------------------------------------------------------------------- each check, broken on purpose
# Every public check must read "does not hold" on a model or behaviour broken the way its claim
# rules out, with its numbers. (The others above: accumulation undivided, eval_determinism with a
# Dropout that ignores eval(), gradient_at_zero with maximum's 0.5, running_statistics with a
# biased running variance, the DDP verdicts on hand-made rank results.)


class FrozenBN(nn.BatchNorm1d):
    """A BatchNorm that normalizes with its running statistics in training too, and never updates
    them: micro-batches and ranks no longer see their own batch's statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def frozen_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), FrozenBN(16), nn.ReLU(), nn.Linear(16, 3))


class NoVarianceBN(nn.BatchNorm1d):
    """Ignores running_var in eval (divides by sqrt(1 + eps)): gap 0.12 on the check's model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        ones = torch.ones_like(self.running_var)
        return F.batch_norm(x, self.running_mean, ones, self.weight, self.bias, False, 0.0, self.eps)


def no_variance_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), NoVarianceBN(16), nn.ReLU(), nn.Linear(16, 3))


def test_accumulation_with_batchnorm_does_not_hold_where_batchnorm_ignores_the_batch():
    broken = checks.accumulation_with_batchnorm(frozen_bn, [data(16)], k=2)
    assert not broken.holds  # the same gradient, and no update of the running statistics
    assert "running statistics took [0] updates over 1 batches (expected 2 each)" in broken.claim


def test_batchnorm_eval_does_not_hold_where_eval_ignores_the_running_variance():
    x = data(64)[0] * 3 + 1  # a variance far from 1
    broken = checks.batchnorm_eval(no_variance_bn, list(x.split(16)), inputs=data(8, 1)[0])
    assert not broken.holds
    assert broken.gap > 0.05, broken
    with pytest.raises(AssertionError, match=r"batchnorm_eval: .* gap .* does not hold \[layers=1"):
        broken.assert_holds()


class GroupBlindSGD(torch.optim.SGD):
    """SGD that applies its defaults to every group, ignoring each group's lr and weight decay."""

    def __init__(self, groups, **defaults):
        flat = [p for g in groups for p in g["params"]]
        super().__init__(flat, **defaults)


def test_reparametrization_does_not_hold_where_the_optimizer_ignores_per_group_settings(monkeypatch):
    batches = [data(16, s) for s in range(3)]
    monkeypatch.setattr(torch.optim, "SGD", GroupBlindSGD)
    broken = checks.reparametrization(mlp, batches, s=4.0, weight_decay=1e-2)
    assert not broken.holds
    assert broken.values["first_layer_gap"] > 1e-2, broken


def test_gradient_scaling_does_not_hold_where_the_inputs_are_normalized_before_the_first_layer():
    def normalized() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    broken = checks.gradient_scaling(normalized, [data(16)], s=255.0)
    assert not broken.holds
    assert broken.values["norm_ratio"] < 1.0  # W1/s shrinks the gradient instead: x*s is normalized away


def summed(state, bucket):
    """DDP's all-reduce without the division by the world size: the ranks' gradients summed."""
    import torch.distributed as dist

    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def cnn_free_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_against_one_process_does_not_hold_where_ddp_sums_the_ranks_gradients():
    batches = [data(16, s) for s in range(3)]
    assert checks.ddp_against_one_process(cnn_free_mlp, batches).holds
    broken = checks.ddp_against_one_process(cnn_free_mlp, batches, comm_hook=summed)
    assert not broken.holds
    assert broken.gap > 1e-2, broken


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_batchnorm_does_not_hold_where_batchnorm_ignores_each_ranks_batch():
    broken = checks.ddp_batchnorm(frozen_bn, [data(16)])
    assert not broken.holds
    assert broken.gap < 1e-6, broken


# --------------------------------------------------------------------------- the language-model and practice checks


def test_token_accumulation_does_not_hold_with_each_micro_batchs_own_mean():
    from trainclaims.families.tp import lm

    assert checks.token_accumulation(lm.lm(0), lm.batches(0, 2), k=2).holds
    broken = checks.token_accumulation(lm.lm(0), lm.batches(0, 2), k=2, normalize="mean")
    assert not broken.holds
    assert broken.gap > 0.05, broken
    with pytest.raises(ValueError, match="normalize='sum'"):
        checks.token_accumulation(lm.lm(0), lm.batches(0, 1), k=2, normalize="sum")


def test_logged_loss_does_not_hold_where_the_loop_logs_the_sum_of_the_micro_batches_means():
    from trainclaims.families.tp import lm

    assert checks.logged_loss(lm.lm(0), lm.batches(0, 2), k=2).holds
    broken = checks.logged_loss(lm.lm(0), lm.batches(0, 2), k=2, normalize="sum")
    assert not broken.holds
    assert all(abs(r - 2) < 0.25 for r in broken.values["ratio_per_step"]), broken


def test_clipping_under_scaler_does_not_hold_where_the_loop_clips_before_unscale():
    from trainclaims.modes import get

    why = get("fp16-autocast").unsupported("cpu")
    if why:
        pytest.skip(why)
    batches = [data(32, s) for s in range(3)]
    assert checks.clipping_under_scaler(mlp, batches, max_norm=0.05).holds
    broken = checks.clipping_under_scaler(mlp, batches, max_norm=0.05, unscale=False)
    assert not broken.holds
    assert broken.values["norm_ratio_per_step"][0] > 1e3, broken  # the scale, 2^16


def dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


def test_activation_checkpointing_does_not_hold_without_the_rng_state():
    assert checks.activation_checkpointing(dropout_mlp, [data(16)]).holds
    broken = checks.activation_checkpointing(dropout_mlp, [data(16)], preserve_rng_state=False)
    assert not broken.holds
    assert broken.gap > 0.1, broken
    assert not broken.values["bitwise_equal"]


class BufferlessAverage(torch.optim.swa_utils.AveragedModel):
    """Averages the parameters and leaves the BatchNorm buffers as they were at the start."""

    def update_parameters(self, model: nn.Module) -> None:
        kept = [b.detach().clone() for b in self.module.buffers()]
        super().update_parameters(model)
        with torch.no_grad():
            for b, old in zip(self.module.buffers(), kept, strict=True):
                b.copy_(old)


def test_averaged_batchnorm_does_not_hold_where_the_buffers_are_not_the_sources():
    batches = [(x + 2, y) for x, y in (data(16, s) for s in range(6))]
    bn_mlp = lambda: mlp(bn=True)  # noqa: E731
    assert checks.averaged_batchnorm(bn_mlp, batches, start=2).holds
    broken = checks.averaged_batchnorm(bn_mlp, batches, start=2, averager=BufferlessAverage)
    assert not broken.holds
    assert broken.gap > 0.1, broken
    with pytest.raises(ValueError, match="no BatchNorm"):
        checks.averaged_batchnorm(mlp, batches)


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_token_accumulation_does_not_hold_with_each_ranks_own_token_count():
    from trainclaims.families.tp import lm

    broken = checks.ddp_token_accumulation(lm.lm(0), lm.batches(0, 2), count="local")
    assert not broken.holds
    assert broken.gap > 0.05, broken


def test_a_gradscaler_that_skipped_every_step_is_said_not_a_gap_beyond_the_bound():
    from trainclaims.errors import NotMeasured

    values = {"steps": 3, "scaler_skips": [3, 0]}
    result = checks.Checked("token_accumulation", "k micro-batches", "equal", float("inf"), 1e-4, values)
    assert not result.holds
    assert "the GradScaler skipped every one of the 3 steps (skips per run: 3 / 0)" in str(result)
    with pytest.raises(NotMeasured, match="a lower init_scale"):
        result.assert_holds()
    some = checks.Checked("token_accumulation", "k", "equal", 0.5, 1e-4, {"steps": 3, "scaler_skips": [1, 0]})
    assert not some.unmeasured
    assert "does not hold" in str(some)


class _OwnLossLM(nn.Module):
    """A causal LM that computes its own loss as Hugging Face's do: labels= (unshifted), and
    num_items_in_batch= to divide its token sum by (its mean without it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(16, 8), nn.Linear(8, 16)

    def forward(self, input_ids, attention_mask=None, labels=None, num_items_in_batch=None):
        logits = self.head(torch.tanh(self.embed(input_ids)).cumsum(1))
        if labels is None:
            return {"logits": logits}
        flat, target = logits[:, :-1].reshape(-1, 16), labels[:, 1:].reshape(-1)
        reduction = "sum" if num_items_in_batch is not None else "mean"
        loss = F.cross_entropy(flat, target, ignore_index=-100, reduction=reduction)
        return {"logits": logits, "loss": loss / num_items_in_batch if num_items_in_batch is not None else loss}


def _own_loss_batches(steps: int = 2, n: int = 4) -> list[dict[str, torch.Tensor]]:
    out = []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        lengths = torch.tensor([10, 9, 3, 2])[:n]
        mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
        ids = torch.randint(1, 16, (n, 10), generator=g) * mask
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def test_token_accumulation_trains_on_the_models_own_loss_given_labels_and_the_count():
    result = checks.token_accumulation(
        _OwnLossLM, _own_loss_batches(), k=2, loss_fn=checks.model_token_sum, labels="unshifted"
    )
    assert result.holds, str(result)
    assert result.broken > 1e-2, str(result)


# --------------------------------------------------------------------------- what a check needs, said before it trains


def _one_line_misuse(call, *match: str) -> str:
    """``call`` stops with a Misuse before it trains: one line holding every ``match``."""
    from trainclaims.errors import Misuse

    with pytest.raises(Misuse) as stopped:
        call()
    text = str(stopped.value)
    assert "\n" not in text, text
    for part in match:
        assert part in text, text
    return text


def test_a_mean_loss_where_a_sum_is_needed_stops_in_one_line_naming_loss_fn():
    for check in (checks.token_accumulation, checks.logged_loss):
        _one_line_misuse(
            lambda check=check: check(
                _OwnLossLM, _own_loss_batches(), k=2, loss_fn=checks.unshifted_mean_cross_entropy, labels="unshifted"
            ),
            f"{check.__name__}: loss_fn returns",
            "it must sum over the counted tokens",
            "checks.token_sum",
        )
    # the sum of the same labels goes through: the stop is the loss's, not the model's
    checks.token_accumulation(_OwnLossLM, _own_loss_batches(), k=2, labels="unshifted").assert_holds()


class _DropoutLM(_OwnLossLM):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.1)

    def forward(self, input_ids, attention_mask=None, labels=None, num_items_in_batch=None):
        return {"logits": self.head(self.drop(torch.tanh(self.embed(input_ids)).cumsum(1)))}


def test_dropout_and_batchnorm_stop_a_check_before_it_trains_naming_the_module_and_the_fix():
    _one_line_misuse(
        lambda: checks.token_accumulation(_DropoutLM, _own_loss_batches(), k=2, labels="unshifted"),
        "token_accumulation: the model has Dropout (drop (p=0.1))",
        "build it with p=0",
    )
    x, y = data(16)
    bn = lambda: nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))  # noqa: E731
    _one_line_misuse(
        lambda: checks.accumulation(bn, [(x, y)], k=2), "accumulation: the model has BatchNorm (1)", "accumulation_with"
    )


def test_a_model_that_caches_keys_stops_activation_checkpointing_with_the_reason():
    class Caching(_OwnLossLM):
        config = type("Config", (), {"use_cache": True})()

    _one_line_misuse(
        lambda: checks.activation_checkpointing(Caching, _own_loss_batches(), labels="unshifted"),
        "activation_checkpointing: the model caches keys (config.use_cache=True)",
        "model.config.use_cache = False",
    )


@pytest.mark.parametrize("wrap", ["tensor", "tuple", "mapping"])
def test_a_models_logits_are_read_from_a_tensor_a_tuple_or_a_mapping(wrap):
    class Wrapped(_OwnLossLM):
        def forward(self, input_ids, attention_mask=None, labels=None, num_items_in_batch=None):
            logits = super().forward(input_ids)["logits"]
            return {"tensor": logits, "tuple": (logits, None), "mapping": {"logits": logits}}[wrap]

    checks.token_accumulation(Wrapped, _own_loss_batches(), k=2, labels="unshifted").assert_holds()
    _one_line_misuse(lambda: checks.logits_of({"loss": torch.tensor(1.0)}), "the model returned a dict")


def test_unshifted_labels_count_every_position_but_each_rows_first():
    batch = _own_loss_batches(1)[0]  # rows of 10, 9, 3 and 2 tokens: 24 labels, 20 of them predicted
    assert checks.token_count(batch) == 24
    assert checks.token_count(batch, labels="unshifted") == 20


@pytest.fixture
def hf_models(one_thread):
    """The HF family's models and batches (a GPT-2 from a small config), on one thread; the test skips
    with the install line without transformers."""
    from trainclaims.families.hf import checks as hfc
    from trainclaims.families.hf import models

    pytest.importorskip("transformers", reason=f"needs transformers: {hfc.INSTALL}")
    return models


def test_a_gpt2_as_it_comes_goes_through_the_token_checks_and_checkpointing_without_a_wrapper(hf_models):
    """A GPT2LMHeadModel (a ModelOutput, Hugging Face's unshifted labels read off the model, its
    blocks called with keywords) in token_accumulation, logged_loss and activation_checkpointing
    (reentrant too), no wrapper; given a mean where a sum is needed, the check stops in one line."""
    gpt2, batches = hf_models.MODELS["gpt2"], hf_models.batches(2)
    result = checks.token_accumulation(gpt2, batches, k=2)
    result.assert_holds()
    assert result.broken > 1e-3, str(result)  # each micro-batch's mean / k parts from the large batch
    checks.logged_loss(gpt2, batches, k=2).assert_holds()

    def with_dropout_no_cache():
        model = hf_models.GPT2_WITH_DROPOUT()
        model.config.use_cache = False  # as Hugging Face does when it checkpoints (the check stops otherwise)
        return model

    for reentrant in (False, True):
        checks.activation_checkpointing(
            with_dropout_no_cache, batches[:1], blocks=lambda m: list(m.transformer.h), use_reentrant=reentrant
        ).assert_holds()
    _one_line_misuse(
        lambda: checks.token_accumulation(gpt2, batches, k=2, loss_fn=checks.unshifted_mean_cross_entropy),
        "token_accumulation: loss_fn returns",
    )


def test_the_default_mean_loss_reads_a_hugging_face_causal_lms_labels_as_unshifted(hf_models):
    """A GPT-2 as it comes in a check that takes a mean loss (accumulation, clipping, DDP...): the
    default loss aligns its unshifted labels as Hugging Face does, and equals the model's own loss."""
    model, batch = hf_models.MODELS["gpt2"](), hf_models.batch(0)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    output = model(**inputs)
    own = model(**batch).loss
    assert checks.mean_cross_entropy(output, batch["labels"]).item() == pytest.approx(own.item(), rel=1e-6)
    assert checks.mean_cross_entropy(output.to_tuple(), batch["labels"]).item() != pytest.approx(own.item(), rel=1e-3)
    # and it runs a check as it comes: a token mean / k over micro-batches of unequal token counts
    # is not the large batch's (TP-01's 2024 bug, on Hugging Face's labels)
    result = checks.accumulation(hf_models.MODELS["gpt2"], hf_models.batches(2), k=2)
    assert not result.holds, str(result)
    assert result.gap > 0.1, str(result)
