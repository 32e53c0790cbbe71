"""What the CUDA paths decide, decided on the CPU: the launcher's backend and device, the fault
drill's tensors, FSDP2's mesh, the mode pinned inside a launched experiment and on spawned ranks,
each NCCL rank's GPU, the TF32 probe against simulated TF32 rounding both ways, the device check
before any capability query, the device a test's probe runs on under xdist, one clock per
benchmark row, a baseline from another machine, and the driver a CUDA build needs. (The GPU runs
themselves: ``.ci/gpu-check``, docs/running.md "On GPU runners".)"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from trainclaims.fixtures.keys import placed_device

from trainclaims import bench, devices, gating, launch, modes, numerics
from trainclaims.families.s002 import data_parallel as ddp
from trainclaims.ranks import Experiment, rank_gpu, run_ranks

pytestmark = pytest.mark.trainclaims
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- 1, 2: the launcher


def test_the_launcher_takes_nccl_and_the_local_gpu_only_where_cuda_is_asked_for_or_found():
    assert launch.backend_and_device("auto", 1, True, 2) == ("nccl", "cuda:1")
    assert launch.backend_and_device("auto", 0, False, 0) == ("gloo", "cpu")
    assert launch.backend_and_device("cpu", 0, True, 8) == ("gloo", "cpu")
    with pytest.raises(ValueError, match="LOCAL_RANK 1 has no GPU: 1 visible"):
        launch.backend_and_device("cuda", 1, True, 1)


def test_the_torchrun_tests_launch_gloo_on_the_cpu_whatever_the_host_has(monkeypatch):
    """Both "nodes" are this machine with LOCAL_RANK 0: on a CUDA host --device auto would put both
    ranks on cuda:0, which NCCL refuses ("Duplicate GPU detected")."""
    spec = importlib.util.spec_from_file_location("torchrun_tests", ROOT / "suites" / "test_self_torchrun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "torchrun", lambda *args, cwd: args)
    for args in module.two_nodes(1234, Path("out"), Path(".")):
        assert "--device=cpu" in args[args.index("--") :]


@pytest.mark.parametrize("written", [True, False], ids=["results-written", "no-results"])
def test_a_rendezvous_error_after_the_job_wrote_its_results_is_the_shutdowns_not_the_jobs(
    written, monkeypatch, tmp_path, capsys
):
    """Seen under load: the c10d store's connection dropped as the agents shut down ("did not
    complete", exit code 2) after rank 0 had written ranks.json."""
    import torch.distributed.run as torch_run
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

    from trainclaims import torchrun

    def run(args):
        if written:
            launch.write_results(tmp_path, {"world_size": 2}, {})
        raise RendezvousConnectionError("The connection to the C10d store has failed.")

    monkeypatch.setattr(torch_run, "run", run)
    code = torchrun.main(["--standalone", "--nproc-per-node=1", "--", f"--out={tmp_path}"])
    err = capsys.readouterr().err
    if written:
        assert code == 0
        assert f"the job's results are complete ({tmp_path / 'ranks.json'}); the rendezvous at" in err, err
    else:
        assert code == 2
        assert "did not complete: RendezvousConnectionError: The connection to the C10d store has failed." in err


def test_the_fault_drill_puts_its_collectives_on_the_ranks_device(monkeypatch, tmp_path):
    """An NCCL group all-reduces CUDA tensors only ("No backend type associated with device type cpu")."""
    seen = []
    monkeypatch.setattr(dist, "all_reduce", lambda t: seen.append(t.device.type))
    env = launch.RankEnv(rank=0, world=2, local_rank=0, addr="127.0.0.1", port=1, launcher="env")
    args = argparse.Namespace(out=tmp_path, drill="raise", drill_seconds=0.0)
    launch._drill(env, args, "meta")  # a device every machine has, standing for the rank's GPU
    assert seen
    assert set(seen) == {"meta"}


# --------------------------------------------------------------------------- 3: FSDP2's mesh


@pytest.mark.skipif(ddp.fsdp2()[0] is None, reason="this torch has no FSDP2 fully_shard (torch 2.4+)")
def test_fsdp2_shards_over_a_mesh_of_the_ranks_device_type_given_explicitly(monkeypatch):
    """fully_shard without a mesh builds one on the accelerator where one is visible, even for CPU
    ranks on gloo; the experiment hands it a mesh on its own device's type."""
    real, _ = ddp.fsdp2()
    meshes = []

    def recording(module, **kw):
        meshes.append(kw.get("mesh"))
        return real(module, **kw)

    monkeypatch.setattr(ddp, "fsdp2", lambda device="cpu": (recording, None))
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", store=dist.FileStore(f"{folder}/store", 1), rank=0, world_size=1)
        try:
            out = ddp.fsdp_against_one_large_batch(0, 1, "float64", 1, 8, 0, device="cpu")
        finally:
            dist.destroy_process_group()
    assert meshes
    assert all(m is not None and m.device_type == "cpu" for m in meshes)
    assert out["local_fraction"] == 1.0


# --------------------------------------------------------------------------- 4, 6: modes pinned on ranks


def precision(rank: int, world: int, device: str = "cpu") -> dict:
    return numerics.precision_settings()


def test_a_launched_experiment_runs_in_its_modes_precision_whatever_the_process_had():
    saved = numerics._snapshot()
    try:
        torch.set_float32_matmul_precision("high")  # as a job's own code or a library might
        ieee, _ = launch.run_experiment(Experiment("x/ieee", precision, (), "ieee"), 0, 1, "cpu")
        tf32, _ = launch.run_experiment(Experiment("x/tf32", precision, (), "tf32"), 0, 1, "cpu")
    finally:
        numerics._restore(saved)
    assert ieee["float32_matmul_precision"] == "highest"
    assert tf32["float32_matmul_precision"] == "high"
    if "cuda.matmul.fp32_precision" in ieee:  # torch 2.9+: the new API's leaves
        assert (ieee["cuda.matmul.fp32_precision"], tf32["cuda.matmul.fp32_precision"]) == ("ieee", "tf32")


@pytest.mark.slow  # 5 s: two spawned gloo ranks; CI runs it in the full run
@pytest.mark.distributed
def test_spawned_ranks_run_in_the_tests_mode():
    assert {r["float32_matmul_precision"] for r in run_ranks(precision, 2, mode="tf32")} == {"high"}
    assert {r["float32_matmul_precision"] for r in run_ranks(precision, 2, mode="ieee")} == {"highest"}


def test_each_nccl_rank_owns_its_gpu_and_gloo_ranks_none():
    assert [rank_gpu("nccl", r, 2) for r in range(2)] == [0, 1]
    assert rank_gpu("gloo", 1, 0) is None
    with pytest.raises(ValueError, match="rank 1 on NCCL needs GPU 1: 1 visible"):
        rank_gpu("nccl", 1, 1)


def test_a_tf32_instance_judging_an_nccl_jobs_results_is_not_skipped_as_a_cpu_one():
    """S002-11..13 have no device parameter; judging an NCCL job's results their mode ran on CUDA
    (on the job's machines, whose probe came with the results): only the device type decides."""
    tf32 = modes.get("tf32")
    assert "is a CUDA mode" in tf32.unsupported("cpu")
    assert tf32.unsupported("cuda", here=False) is None


# --------------------------------------------------------------------------- 5: the TF32 probe


def to_tf32(x: torch.Tensor, nearest: bool) -> torch.Tensor:
    """float32 rounded to TensorFloat-32's 10-bit mantissa: to nearest (even), or truncated."""
    bits = x.contiguous().view(torch.int32)
    if nearest:
        bits = bits + 0x0FFF + ((bits >> 13) & 1)
    return (bits & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("nearest", [True, False], ids=["round-to-nearest", "truncation"])
def test_the_tf32_probe_tells_tf32_rounding_from_ieee_either_way(nearest):
    """Measured: IEEE 2.1e-7, TF32 2.9e-4 (nearest) / 7.7e-4 (truncated), against the line 2e-5."""

    def tf32_matmul(a, b):  # tensor cores: TF32 inputs, products summed in float32
        return (to_tf32(a, nearest).double() @ to_tf32(b, nearest).double()).float()

    simulated = modes.tf32_probe_error("cpu", tf32_matmul)
    ieee = modes.tf32_probe_error("cpu")
    assert simulated > 10 * modes.TF32_MIN_ERROR, simulated
    assert ieee < modes.TF32_MIN_ERROR / 50, ieee
    tf32, reference = modes.get("tf32"), modes.get("ieee")
    assert tf32.proof(modes.Acted(tf32_probes=1, tf32_error=simulated), tf32)[0]
    assert not tf32.proof(modes.Acted(tf32_probes=1, tf32_error=ieee), tf32)[0]
    acted, why = reference.proof(modes.Acted(tf32_probes=1, tf32_error=simulated), reference)
    assert not acted
    assert "TF32 is on although ieee pins it off" in why


def test_the_probe_runs_only_where_tf32_exists():
    assert modes.tf32_probe("cpu") == modes.Acted()


# --------------------------------------------------------------------------- 7: device checks


def test_the_device_is_checked_before_any_capability_query(monkeypatch):
    """--numerics tf32 --device cuda:1 on one GPU: "not available", not an INTERNALERROR."""

    def never(*_a):
        raise AssertionError("capability asked of a device that does not exist")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", never)
    assert modes.get("tf32").unsupported("cuda:1") == "tf32: cuda:1 not available (1 CUDA devices)"


def test_under_xdist_the_probe_runs_on_the_workers_placed_gpu(monkeypatch):
    item = SimpleNamespace(callspec=SimpleNamespace(params={"device": "cuda"}))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert placed_device(item) == "cuda:1"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert placed_device(item) == "cuda"


# --------------------------------------------------------------------------- 8: benchmark clocks


def test_the_gemm_probe_and_the_rounds_share_one_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "elapsed", lambda fn, device: calls.append(str(device)) or 1.0)
    probe = bench.GemmProbe(((4, 4, 4),), torch.float32, "cpu")
    bench.timed_rounds(lambda: None, "cpu", rounds=2, warmup=1, between=probe)
    assert calls == ["cpu"] * 6  # 3 probes and 3 rounds, each through bench.elapsed
    assert (bench.timer("cuda:0"), bench.timer("cpu")) == ("cuda events", "perf_counter")


def test_every_time_in_a_row_comes_from_the_same_rounds():
    stats = SimpleNamespace(stats=SimpleNamespace(data=[9.0, 9.0], median=9.0))  # pytest-benchmark's clock
    fake = SimpleNamespace(stats=stats, extra_info={})
    bench.record(fake, "cpu", samples=10, flops=100, times=[1.0, 2.0, 3.0])
    info = fake.extra_info
    assert (info["mean_s"], info["min_s"], info["median_s"]) == (2.0, 1.0, 2.0)


def test_a_baseline_from_another_machine_is_not_compared_but_named():
    row = {"fullname": "b::t[cuda]", "device": "cuda", "samples_per_s": 1.0, "device_name": "NVIDIA H100"}
    outcome = gating.gate_benchmarks([{**row, "device_name": "NVIDIA A100"}], [row])
    assert (outcome.compared, outcome.missing) == (0, 1)
    assert "measured on NVIDIA A100, this run on NVIDIA H100: not compared" in outcome.lines[0]


# --------------------------------------------------------------------------- 9: the environment


def test_a_cuda_build_that_sees_no_gpu_names_the_driver_it_needs():
    assert "R580" in devices.driver_hint("13.0")
    assert "R525" in devices.driver_hint("12.4")
    assert devices.driver_hint(None) == ""


def test_the_environment_records_the_tf32_overrides(monkeypatch):
    from trainclaims.environment import numeric_settings

    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    settings = numeric_settings()
    assert settings["NVIDIA_TF32_OVERRIDE"] == "1"
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE" in settings


@pytest.mark.slow  # 4 s: the check's dry run and a refused start; CI runs it in the full run
def test_the_gpu_check_has_a_dry_run_and_stops_clearly_without_a_gpu(tmp_path):
    import subprocess
    import sys

    script = ROOT / ".ci" / "gpu-check"
    dry = subprocess.run([sys.executable, script, "--dry-run", f"--out={tmp_path}/g"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m 'gpu and not benchmark' --require-gpu" in dry.stdout
    assert "--numerics=ieee" in dry.stdout
    assert not (tmp_path / "g").exists()  # a dry run writes nothing
    if not torch.cuda.is_available():
        real = subprocess.run([sys.executable, script, f"--out={tmp_path}/g"], capture_output=True, text=True)
        assert real.returncode == 2
        assert real.stderr.strip().splitlines()[-1].startswith("gpu-check: no GPU here")
