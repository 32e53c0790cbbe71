"""The launcher, from the outside: S002-11..15 (and TP-01/04) where users run them, ranks started
by torchrun (trainclaims.launch on every rank, trainclaims-torchrun around torchrun), here two
torchrun agents on 127.0.0.1 acting as two nodes of one process each, judged by the suite
(``--ranks-results``) as it judges the ranks it spawns; and how such a job ends when a rank raises
or is killed, or when it never forms."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401  imported before pytester's in-process runs (see test_self_plugin)

from trainclaims import registry
from trainclaims.launch import write_results
from trainclaims.ranks import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.trainclaims,
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available in this build"),
    pytest.mark.skipif(
        shutil.which("trainclaims-torchrun") is None, reason="trainclaims is not installed (pip install -e .)"
    ),
]


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.Popen(
        [sys.executable, "-m", "trainclaims.torchrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the job's processes are a group of their own: none outlives the test
    )


def two_nodes(port: int, out: Path, cwd: Path, *launch: str) -> list[subprocess.Popen]:
    """Two torchrun agents on the loopback, nodes 0 and 1 of one rank each, c10d rendezvous, gloo on
    the CPU: both "nodes" are this machine, where each rank has LOCAL_RANK 0 and would take
    ``cuda:0`` on a CUDA host (NCCL refuses two ranks on one GPU)."""
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    common.append("--rdzv-id=trainclaims-test")
    return [
        torchrun(*common, f"--node-rank={n}", "--", f"--out={out}", "--device=cpu", *launch, cwd=cwd) for n in (0, 1)
    ]


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """Every agent's exit code and output, read side by side (a node whose output is not read would
    block on a full pipe and hold the others in torchrun's exit barrier). Past ``timeout``, all the
    agents together, every process of the job is killed, the ranks included (torchrun starts each
    in a session of its own), and the test fails with every node's output."""
    texts: list[str] = ["" for _ in procs]

    def read(i: int) -> None:
        texts[i] = procs[i].communicate()[0]

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(procs))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    for r in readers:
        r.join(max(0.0, deadline - time.monotonic()))
    if any(r.is_alive() for r in readers):
        for pid in [pid for p in procs for pid in descendants(p.pid)] + [p.pid for p in procs]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for r in readers:
            r.join(30)
        nodes = "\n".join(
            f"--- node {i} (exit code {p.returncode}):\n{t}" for i, (p, t) in enumerate(zip(procs, texts, strict=True))
        )
        pytest.fail(f"the torchrun job did not end within {timeout} s:\n{nodes}")
    return [(p.returncode, t) for p, t in zip(procs, texts, strict=True)]


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def left_behind(tag: str) -> list[str]:
    """Processes of the job still running (pgrep on the job's own results folder)."""
    found = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


def same_numbers(a: object, b: object) -> bool:
    """The same structure and the same numbers to rounding (float32's, absolute 1e-9 near zero)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_numbers(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def verdicts(path: Path) -> dict[str, str]:
    claims = json.loads(path.read_text())["claims"]
    data_parallel = ("S002-11", "S002-12", "S002-13", "S002-14", "S002-15", "TP-01", "TP-04")
    return {c["id"]: c["verdict"] for c in claims if c["id"] in data_parallel and c["tests"]}


@pytest.fixture
def project(pytester, monkeypatch, opt_in):
    """A copy of the data-parallel claims' tests (S002's and TP's) in a project of their own."""
    pytester.makeini(opt_in)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    modules = {name: (ROOT / "suites" / f"{name}.py").read_text() for name in DATA_PARALLEL_MODULES}
    pytester.makepyfile(**{f"{name}_copy": text for name, text in modules.items()})
    return pytester


DATA_PARALLEL_MODULES = ("test_s002_data_parallel", "test_tp_data_parallel")


CLAIM_TESTS = ["-m", "not benchmark", "-k", "not raises and not port", "-p", "no:cacheprovider", "-q"]


def test_two_torchrun_nodes_give_the_verdicts_of_the_ranks_the_suite_spawns(project, ranks, tmp_path):
    """The launched job's results and the spawned ranks' results of the same experiments, each
    judged by the data-parallel claims' tests (``--ranks-results``): the same verdicts, and the same
    numbers to rounding. The spawned ranks' results are this session's where its data-parallel tests
    already ran them (``ranks.spawned``), else they are run here."""
    out = tmp_path / "cluster-results"
    start = time.monotonic()
    done = finish(two_nodes(free_port(), out, project.path), timeout=120)
    launched_s = time.monotonic() - start
    for rc, text in done:
        assert rc == 0, text
    job = json.loads((out / "ranks.json").read_text())
    env = job["environment"]
    assert (env["world_size"], env["nodes"], env["backend"], env["launcher"]) == (2, 2, "gloo", "torchrun")
    # rank 0 is on whichever node joined first: c10d's rendezvous ignores --node-rank
    assert any("experiments on 2 ranks written to" in text for _, text in done), done

    spawned = {e.id: [{"result": r} for r in ranks.spawned(e)] for e in registry.experiments(("ieee",), "cpu")}
    assert set(spawned) == set(job["experiments"])
    here = {"world_size": 2, "nodes": 1, "backend": "gloo", "launcher": "spawned"}
    write_results(tmp_path / "spawned", here, spawned)
    for key, theirs in job["experiments"].items():
        assert same_numbers([r["result"] for r in theirs], [r["result"] for r in spawned[key]]), key

    judged = {}
    for name, folder in (("launched", out), ("spawned", tmp_path / "spawned")):
        run = project.runpytest_inprocess(*CLAIM_TESTS, f"--ranks-results={folder}", f"--report-dir={name}")
        assert run.ret == 0, run.stdout.str()[-3000:]
        judged[name] = (run.parseoutcomes(), verdicts(project.path / name / "claims.json"))
    assert judged["launched"] == judged["spawned"]
    assert {"S002-11", "S002-12", "S002-13", "S002-15", "TP-01", "TP-04"} <= set(judged["launched"][1])
    report = json.loads((project.path / "launched" / "claims.json").read_text())
    where = {t["evidence"].get("ranks_ran_on") for c in report["claims"] for t in c["tests"] if t["evidence"]}
    assert "torchrun: 2 ranks on 2 nodes, gloo, torch " + torch.__version__ in where, where
    print(f"two torchrun nodes: {launched_s:.1f} s; verdicts {judged['launched'][1]}")


def test_a_killed_rank_ends_the_torchrun_job_within_seconds_naming_it(tmp_path):
    out = tmp_path / "killed-job"
    procs = two_nodes(free_port(), out, tmp_path, "--drill=hold", "--drill-seconds=60")
    pids = out / "pids"
    deadline = time.monotonic() + 60
    while len(list(pids.glob("rank-*.pid"))) < 2:
        assert time.monotonic() < deadline, "the ranks did not start"
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
        time.sleep(0.2)
    before = left_behind(str(out))
    assert len(before) >= 4, before  # two agents, two ranks
    start = time.monotonic()
    os.kill(int((pids / "rank-1.pid").read_text()), signal.SIGKILL)
    done = finish(procs, timeout=30)
    took = time.monotonic() - start
    after = left_behind(str(out))
    print(f"pgrep before the kill: {len(before)} processes; after the job ended: {len(after)}; {took:.1f} s")
    assert took < 10, f"the job took {took:.1f} s to end after rank 1 was killed"
    assert all(rc != 0 for rc, _ in done), done
    both = "\n".join(text for _, text in done)  # rank 1 is on either node (c10d ignores --node-rank)
    assert "trainclaims-torchrun: the job failed: rank 1 (local rank 0 on " in both, both
    assert "killed by SIGKILL" in both, both
    assert after == [], after


def test_a_job_whose_ranks_are_done_ends_though_a_thread_lingers_on_every_rank(tmp_path):
    """A rank's part done, a thread left running (as a library's worker may) would hold the
    interpreter's exit, and the agent would wait for that rank: the job would not end. Each rank
    ends once every rank is done, without waiting for what it leaves behind."""
    out = tmp_path / "lingering-job"
    done = finish(two_nodes(free_port(), out, tmp_path, "--drill=linger"), timeout=120)
    assert [rc for rc, _ in done] == [0, 0], done
    assert left_behind(str(out)) == []


def test_a_rank_that_raises_stops_every_rank_within_seconds_naming_it(tmp_path):
    out = tmp_path / "raising-job"
    start = time.monotonic()
    done = finish(two_nodes(free_port(), out, tmp_path, "--drill=raise"), timeout=60)
    took = time.monotonic() - start
    assert all(rc != 0 for rc, _ in done), done
    both = "\n".join(text for _, text in done)  # rank 1 is on either node (c10d ignores --node-rank)
    assert "rank 1 failed: RuntimeError: fault drill: rank 1 raises" in both, both
    # rank 0, waiting in a collective for rank 1, is stopped by the failure rank 1 left in the store
    assert "rank 0: stopping: rank 1 failed: RuntimeError: fault drill" in both, both
    assert took < 30, took
    assert left_behind(str(out)) == []
    assert not (out / "ranks.json").exists()


def test_a_rendezvous_that_never_completes_ends_in_one_line_naming_the_endpoint(tmp_path):
    port = free_port()
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    job = torchrun(*common, "--node-rank=0", "--rdzv-conf=join_timeout=2", "--", f"--out={tmp_path}", cwd=tmp_path)
    ((rc, text),) = finish([job], timeout=60)
    assert rc == 2, text
    lines = [line for line in text.splitlines() if line.startswith("trainclaims-torchrun:")]
    assert len(lines) == 1, text
    assert f"the rendezvous at 127.0.0.1:{port} (c10d, nodes 2) did not complete" in lines[0]


def test_a_process_group_that_never_forms_ends_in_one_line_naming_the_endpoint(tmp_path):
    port = free_port()
    env = os.environ | {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    run = subprocess.run(
        [sys.executable, "-m", "trainclaims.launch", f"--out={tmp_path}", "--timeout=1", "--device=cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"trainclaims.launch: rank 0: the process group at 127.0.0.1:{port} (2 ranks, gloo) did not form within "
        f"1 s: {run.stderr.split(' 1 s: ', 1)[1].strip()}"
    ]


def test_the_launcher_outside_a_launcher_says_how_to_start_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    run = subprocess.run(
        [sys.executable, "-m", "trainclaims.launch", f"--out={tmp_path}"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.startswith("trainclaims.launch: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set: run this")
