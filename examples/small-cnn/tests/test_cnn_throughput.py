"""The CNN's training step as a benchmark (pytest-benchmark): samples/s and FLOP/s from
``checks.step_flops`` (convolutions included), with what the numbers mean beside them in the
report. It sits under ``trainclaims_paths``, so it runs on every device of ``--device``;
``pytest -m "not benchmark"`` leaves it out, ``--benchmark-disable`` runs it once, untimed."""

import pytest
import torch
import torch.nn.functional as F
from smallcnn import batches, cnn

from trainclaims import bench, checks
from trainclaims.devices import synchronize

BATCH = 64


@pytest.mark.benchmark(group="small CNN training step, batch 64")
def test_cnn_training_step_throughput(benchmark, device):
    model = cnn().to(device)
    x, y = (t.to(device) for t in batches(1, BATCH)[0])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    flops = checks.step_flops(model, (x, y))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        synchronize(device)

    benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    bench.record(
        benchmark,
        device,
        samples=BATCH,
        flops=flops["total"],
        note=f"convolution FLOPs {flops.get('convolution', 0):,} of {flops['total']:,} a step (FlopCounterMode)",
    )
