"""Self-tests of parallel runs: pytest-xdist workers ship what they measured to the controller,
which writes one set of reports; tests that share training runs stay on one worker; benchmarks
skip; a crashed worker's test is reported as not measured; CUDA instances spread over the GPUs."""

import json

import pytest

from trainclaims.devices import place, worker_index

pytest.importorskip("xdist", reason="pytest-xdist is not installed: pip install -e '.[xdist]' -c constraints.txt")

PARALLEL_SUITE = """
import os

import pytest
from trainclaims.claims import Verdict
from trainclaims.families.seed.engine import TrainConfig

TINY = TrainConfig(model="fc", epochs=1, hidden=8)


@pytest.mark.claim("S000-01")
@pytest.mark.parametrize("tier", ["synthetic"])
def test_first_run(data, trainer, evidence):
    evidence.record(pid=os.getpid(), acc=trainer(TINY, data).final_accuracy)


@pytest.mark.claim("S001-01")
@pytest.mark.parametrize("n", range(6))
def test_spread_over_workers(n, evidence):
    evidence.record(n=n)


@pytest.mark.benchmark
def test_throughput(benchmark):
    benchmark(sum, range(10))


# last in the file, first test first: plain load scheduling would give them to different workers
@pytest.mark.claim("S000-03")
@pytest.mark.parametrize("tier", ["synthetic"])
def test_shares_the_run(data, trainer, evidence):
    evidence.record(pid=os.getpid(), acc=trainer(TINY, data).final_accuracy)
    evidence.conclude(Verdict.CONDITIONAL, "shares the first test's run")


@pytest.mark.claim("S002-10")
def test_crashes_its_worker():
    os._exit(3)
"""


@pytest.mark.slow  # two worker processes that import torch: 10-15 s, outside the fast tier
def test_a_parallel_run_writes_one_report_with_what_every_worker_measured(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeini("[pytest]\ntrainclaims_paths = .\n")  # a claims suite: loadgroup by default under -n
    pytester.makepyfile(PARALLEL_SUITE)
    result = pytester.runpytest_subprocess("-n", "2", "--device=cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8, failed=1, skipped=1)
    # the default under -n: loadgroup, and no worker restarts (xdist 3.8.0 hangs restarting a
    # crashed worker under loadgroup): the run ends at the crash instead
    result.stdout.fnmatch_lines(["*xdist: worker gw? crashed and worker restarting disabled*"])
    claims = {c["id"]: c for c in json.loads((pytester.path / "reports" / "claims.json").read_text())["claims"]}

    shared = [t for cid in ("S000-01", "S000-03") for t in claims[cid]["tests"]]
    assert [t["test"].split("::")[1] for t in shared] == [
        "test_first_run[cpu-synthetic]",
        "test_shares_the_run[cpu-synthetic]",
    ]
    assert shared[0]["evidence"]["pid"] == shared[1]["evidence"]["pid"], (
        "tests sharing a training run ran on one worker"
    )
    assert shared[0]["evidence"]["acc"] == shared[1]["evidence"]["acc"]
    assert claims["S000-03"]["verdict"] == "conditional"
    assert claims["S000-03"]["why"] == "shares the first test's run"
    assert [t["device"] for t in shared] == ["cpu", "cpu"]

    spread = claims["S001-01"]["tests"]
    assert sorted(t["evidence"]["n"] for t in spread) == list(range(6))
    assert claims["S001-01"]["verdict"] == "holds"

    crashed = claims["S002-10"]
    assert crashed["verdict"] == "not measured"
    assert "crashed while running" in crashed["why"]
    assert crashed["tests"][0]["outcome"] == "crashed"

    bench = json.loads((pytester.path / "reports" / "benchmarks.json").read_text())
    assert bench["benchmarks"] == []
    [skipped] = bench["not_measured"]
    assert skipped["why"].startswith("skipped: benchmarks are not measured under pytest-xdist")
    assert "pytest -m benchmark -p no:xdist" in skipped["why"]


@pytest.mark.parametrize(
    ("asked", "worker", "gpus", "placed"),
    [
        ("cuda", 0, 4, "cuda:0"),
        ("cuda", 5, 4, "cuda:1"),
        ("cuda", 3, 2, "cuda:1"),
        ("cuda", 3, 1, "cuda"),  # one GPU: every worker shares it
        ("cuda", None, 4, "cuda"),  # not under xdist
        ("cuda:2", 1, 4, "cuda:2"),  # asked for explicitly
        ("cpu", 1, 4, "cpu"),
    ],
)
def test_worker_i_runs_its_cuda_instances_on_gpu_i_mod_n(asked, worker, gpus, placed):
    assert place(asked, worker, gpus) == placed


@pytest.mark.parametrize(
    ("worker_id", "index"), [("gw0", 0), ("gw12", 12), ("master", None), (None, None), ("gwx", None)]
)
def test_xdist_worker_ids_are_read_as_their_number(worker_id, index):
    assert worker_index(worker_id) == index


@pytest.mark.slow  # two worker processes: a few seconds
def test_a_bad_claim_mark_under_xdist_is_a_collection_error_not_an_internal_error(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeini("[pytest]\ntrainclaims_paths = .\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.claim('S999-01')\ndef test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "--no-report", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["claim mark: *::test_x: unknown claim id 'S999-01'*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
