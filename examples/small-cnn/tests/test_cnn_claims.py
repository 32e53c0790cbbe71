"""The claims about our CNN, each measured by a trainclaims check and judged into the report."""

import pytest
import torch
from smallcnn import batches, cnn, cnn_without_bn, cnn_without_dropout, images

from trainclaims import checks


@pytest.mark.claim("CNN-01")
def test_accumulation_equals_the_larger_batch(device, numerics, evidence):
    result = checks.accumulation(cnn_without_bn, batches(3, 32), k=4, divide=True, device=device, numerics=numerics)
    result.judge(evidence)


@pytest.mark.claim("CNN-02")
@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_with_batchnorm_differs_from_the_larger_batch(device, k, evidence):
    result = checks.accumulation_with_batchnorm(cnn_without_dropout, batches(1, 32), k=k, device=device)
    result.judge(evidence)


@pytest.mark.claim("CNN-03")
def test_batchnorm_in_eval_uses_the_running_statistics(device, evidence):
    x, _ = images(64, seed=1)
    result = checks.batchnorm_eval(cnn, list(x.split(16)), inputs=images(8, seed=2)[0], device=device)
    result.judge(evidence)


@pytest.mark.claim("CNN-04")
def test_eval_predictions_are_deterministic_with_dropout(device, evidence):
    result = checks.eval_determinism(cnn, [images(16)[0]], device=device)
    assert result.values["dropout_layers"] == 1
    result.judge(evidence)


@pytest.mark.claim("CNN-05")
@pytest.mark.parametrize("micro_batches", [1, 2])
def test_ddp_on_two_gloo_ranks_equals_one_process(micro_batches, evidence):
    result = checks.ddp_against_one_process(cnn_without_bn, batches(2, 16), world=2, k=micro_batches)
    result.judge(evidence)


@pytest.mark.claim("CNN-06")
def test_inputs_times_255_with_the_first_layer_rescaled_train_the_same(device, evidence):
    result = checks.reparametrization(cnn_without_dropout, batches(3, 16), s=255.0, device=device, dtype=torch.float64)
    result.judge(evidence)


@pytest.mark.claim("CNN-07")
def test_ddp_with_batchnorm_differs_from_one_process(evidence):
    result = checks.ddp_batchnorm(cnn_without_dropout, batches(1, 32), world=2)
    result.judge(evidence)


@pytest.mark.claim("CNN-08")
def test_running_statistics_follow_the_ema_of_the_unbiased_batch_variance(device, evidence):
    x, _ = images(80, seed=3)
    result = checks.running_statistics(cnn, list(x.split(16)), device=device)
    result.judge(evidence)
