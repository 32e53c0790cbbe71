"""The data-parallel claims' experiments on ranks that a launcher started: torchrun, Slurm's srun,
a Kubernetes job. Each process of the job runs this module::

    torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m trainclaims.launch --out cluster-results

Every rank reads the env:// variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``; under srun ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` where torchrun's are
absent), uses NCCL on its own GPU (``cuda:LOCAL_RANK``) where CUDA is present and gloo on CPU, and
runs every rank experiment the installed families plan (:func:`trainclaims.registry.experiments`:
the same functions, with the same arguments, that the suite's tests run on ranks they spawn), each
with its numerics mode pinned, on the rank's device. Rank 0 prints each experiment as it
finishes and writes ``OUT/ranks.json``: every rank's result of every experiment and what they ran
on (world size, nodes, backend, devices, torch, CUDA and NCCL versions, the launcher). The suite
judges such a folder as it judges its own ranks::

    pytest -m distributed --ranks-results=cluster-results

Faults: a rank that raises tells the others through the job's store and every rank stops within a
second or two, each naming the rank that failed (exit code 1); a rank that dies (killed, out of
memory) is seen by its peers' collectives and by torchrun, which ends the rest. A process group
that does not form (a rank that never starts, a wrong ``MASTER_ADDR``) ends after ``--timeout``
seconds with one line naming the endpoint (exit code 2). Nothing is written unless every
experiment ran on every rank.

The end: rank 0 writes ``ranks.json`` first; then every rank counts itself done in the job's store
and waits (at most a minute) for the others, destroys the process group (at most 10 s) and exits
at once, skipping the interpreter's finalization: a rank whose work is done ends within a second,
and its agent with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainclaims.cli import described
from trainclaims.ranks import RESULTS_FILE, write_results

__all__ = ["RESULTS_FILE", "main", "rank_env", "write_results"]

FAILED_KEY = "trainclaims/failed"
DONE_KEY = "trainclaims/done"  # how many ranks have done their part (the end: _end)


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world: int
    local_rank: int
    addr: str
    port: int
    launcher: str


def rank_env(environ: dict[str, str] | None = None) -> RankEnv:
    """This process's place in the job, from torchrun's variables or, failing those, Slurm's;
    ValueError (one line) naming what is missing."""
    env = os.environ if environ is None else environ
    slurm = "RANK" not in env and "SLURM_PROCID" in env
    names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID") if slurm else ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    missing = [n for n in (*names[:2], "MASTER_ADDR", "MASTER_PORT") if n not in env]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} not set: run this under torchrun (torchrun ... -m trainclaims.launch) or srun "
            "with MASTER_ADDR and MASTER_PORT exported"
        )
    if "TORCHELASTIC_RUN_ID" in env:
        launcher = "torchrun"
    elif slurm or "SLURM_JOB_ID" in env:
        launcher = "slurm"
    else:
        launcher = "env"
    return RankEnv(
        rank=int(env[names[0]]),
        world=int(env[names[1]]),
        local_rank=int(env.get(names[2], "0")),
        addr=env["MASTER_ADDR"],
        port=int(env["MASTER_PORT"]),
        launcher=launcher,
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from trainclaims.modes import parse_modes

    p = argparse.ArgumentParser(prog="python -m trainclaims.launch", description=described(__doc__))
    p.add_argument("--out", required=True, type=Path, help="folder rank 0 writes ranks.json into")
    p.add_argument(
        "--numerics",
        default="ieee",
        type=parse_modes,
        help="comma list of numerics modes to run the experiments in (as pytest's --numerics). Default: ieee",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="cuda: NCCL, one GPU per LOCAL_RANK; cpu: gloo. Default: auto (cuda where present)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds for the process group to form and for any one collective. Default: %(default)s",
    )
    p.add_argument("--only", default="", help="run only the experiments whose id contains this text (S002-12)")
    p.add_argument(
        "--drill",
        choices=("hold", "raise", "linger"),
        help="a fault drill instead of the experiments, to see how the job ends: 'hold' keeps every rank in "
        "collectives for --drill-seconds (each writes OUT/pids/rank-N.pid: kill one), 'linger' leaves a thread "
        "running on every rank after its part (as a library's worker thread may), 'raise' makes the last "
        "rank raise after a second",
    )
    p.add_argument("--drill-seconds", type=float, default=60.0, help="how long 'hold' holds. Default: %(default)s")
    return p.parse_args(argv)


def backend_and_device(option: str, local_rank: int, cuda_available: bool, gpus: int) -> tuple[str, str]:
    """The process group's backend and this rank's device: NCCL on ``cuda:LOCAL_RANK`` for
    ``--device=cuda``, and for ``auto`` where CUDA is present; gloo on the CPU otherwise. ValueError
    (one line) where this rank's LOCAL_RANK has no GPU."""
    if option == "cuda" or (option == "auto" and cuda_available):
        if gpus <= local_rank:
            raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: {gpus} visible")
        return "nccl", f"cuda:{local_rank}"
    return "gloo", "cpu"


def _drill(env: RankEnv, args: argparse.Namespace, device: str) -> None:
    """The fault drill's collectives, on the rank's device (an NCCL group takes CUDA tensors only)."""
    import torch
    import torch.distributed as dist

    pids = args.out / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"rank-{env.rank}.pid").write_text(str(os.getpid()))
    seconds = {"raise": 1.0, "hold": args.drill_seconds}.get(args.drill, 0.0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        dist.all_reduce(torch.ones(1, device=device))
        time.sleep(0.01)
    if args.drill == "raise" and env.rank == env.world - 1:
        raise RuntimeError(f"fault drill: rank {env.rank} raises")
    if args.drill == "linger":  # a non-daemon thread that never ends: the interpreter's exit would wait for it
        threading.Thread(target=threading.Event().wait, name="trainclaims-drill-linger").start()
    dist.all_reduce(torch.ones(1, device=device))  # the others wait here for the rank that raised


def run_experiment(e: Any, rank: int, world: int, device: str) -> tuple[Any, dict[str, Any]]:
    """One rank's part of a rank experiment (:class:`trainclaims.ranks.Experiment`) on ``device``,
    with its numerics mode's precision pinned whatever the job's settings (``ieee`` off any TF32
    the process was started with), the mode's probe run first (tf32: that cuBLAS computes in
    TF32), and what the mode did watched: (its result, what the mode did, as JSON)."""
    from trainclaims.ranks import run_in_mode

    return run_in_mode(e.fn, rank, world, e.args, e.mode, device, device=device)


def _say(env: RankEnv, text: str) -> None:
    print(f"trainclaims.launch: rank {env.rank}: {text}", file=sys.stderr, flush=True)


def _watch_for_failures(env: RankEnv, timeout: dt.timedelta) -> None:
    """A daemon thread with a store connection of its own: when another rank reports a failure in
    the job's store, stop this one at once (it may be blocked in a collective that will never
    complete: gloo and NCCL would wait for their timeout)."""
    import torch.distributed as dist

    watcher = dist.TCPStore(env.addr, env.port, env.world, is_master=False, timeout=timeout)

    def watch() -> None:
        try:
            watcher.wait([FAILED_KEY], dt.timedelta(days=7))
            why = watcher.get(FAILED_KEY).decode()
        except Exception:  # the store went away: the job is ending anyway
            return
        _say(env, f"stopping: {why}")
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="trainclaims-failure-watch").start()


END_TIMEOUT_S = 60.0  # at most, for the other ranks to reach the end once this one's part is done
DESTROY_TIMEOUT_S = 10.0  # at most, for destroying the process group at the end


def _end(env: RankEnv, store: Any, timeout: float) -> None:
    """End this rank once every rank has done its part (rank 0: its results written): each counts
    itself in the job's store and waits, bounded, until all have; the process group is destroyed,
    bounded too; then the process exits at once, without the interpreter's finalization. That
    finalization (a GC pass over torch's modules, the process group's C++ objects destroyed with
    their gloo threads still running) took 3.0-3.5 s of a rank's end on 2 cores, and is where a rank
    whose work was done could stay (its agent then waits for it: the job did not end)."""
    import torch.distributed as dist

    done = False
    wait_s = min(timeout, END_TIMEOUT_S)
    deadline = time.monotonic() + wait_s
    try:
        arrived = store.add(DONE_KEY, 1)
        while arrived < env.world and time.monotonic() < deadline:
            time.sleep(0.05)
            arrived = store.add(DONE_KEY, 0)
        done = arrived >= env.world
    except Exception:  # the store's host left, which it does only once every rank has arrived
        done = True
    if not done:
        _say(env, f"the other ranks did not reach the end within {wait_s:g} s; this rank's part is done")
    ender = threading.Thread(target=dist.destroy_process_group, daemon=True, name="trainclaims-destroy")
    ender.start()
    ender.join(DESTROY_TIMEOUT_S)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        env = rank_env()
    except ValueError as err:
        print(f"trainclaims.launch: {err}", file=sys.stderr)
        return 2
    if env.rank == 0 and args.out.exists() and not args.out.is_dir():
        print(f"trainclaims.launch: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2

    import torch
    import torch.distributed as dist

    from trainclaims import registry
    from trainclaims.devices import device_name
    from trainclaims.mutants import activate_from_env

    activate_from_env(registry.installed())  # the mutation tier reaches a launched job's ranks too
    available = torch.cuda.is_available()
    try:
        backend, device = backend_and_device(
            args.device, env.local_rank, available, torch.cuda.device_count() if available else 0
        )
    except ValueError as err:
        _say(env, str(err))
        return 2
    cuda = backend == "nccl"
    if cuda:
        torch.cuda.set_device(env.local_rank)
    timeout = dt.timedelta(seconds=args.timeout)
    # torchrun's agent hosts the store on MASTER_PORT itself (TORCHELASTIC_USE_AGENT_STORE);
    # elsewhere rank 0 does, and waits for every rank to join it
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        store = dist.TCPStore(
            env.addr,
            env.port,
            env.world,
            is_master=env.rank == 0 and not agent_store,
            timeout=timeout,
            wait_for_workers=env.rank == 0 and not agent_store,
        )
        dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world, timeout=timeout)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _say(
            env,
            f"the process group at {env.addr}:{env.port} ({env.world} ranks, {backend}) did not form within "
            f"{args.timeout:g} s: {first}",
        )
        return 2
    _watch_for_failures(env, timeout)

    experiments = [] if args.drill else [e for e in registry.experiments(args.numerics, device) if args.only in e.id]
    results: dict[str, Any] = {}
    try:
        if args.drill:
            _drill(env, args, device)
        for i, e in enumerate(experiments, 1):
            start = time.perf_counter()
            mine, acted = run_experiment(e, env.rank, env.world, device)
            every = [None] * env.world
            dist.all_gather_object(every, {"result": mine, "acted": acted})
            results[e.id] = every
            if env.rank == 0:
                _say(env, f"[{i}/{len(experiments)}] {e.name}: {time.perf_counter() - start:.1f} s")
        where = [None] * env.world
        where_mine = {"host": socket.gethostname(), "device": f"{device} ({device_name(device)})"}
        dist.all_gather_object(where, where_mine)
    except Exception as err:
        try:
            if store.check([FAILED_KEY]):  # another rank failed first: this one's error is the echo of it
                _say(env, f"stopping: {store.get(FAILED_KEY).decode()}")
                os._exit(1)
            why = f"rank {env.rank} failed: {type(err).__name__}: {err}"
            traceback.print_exc()
            store.set(FAILED_KEY, why)
            _say(env, why)
        finally:
            os._exit(1)
    if env.rank == 0 and not args.drill:
        environment = {
            "world_size": env.world,
            # torchrun's agents (GROUP_WORLD_SIZE), Slurm's nodes, else the distinct hosts
            "nodes": int(
                os.environ.get("GROUP_WORLD_SIZE") or os.environ.get("SLURM_NNODES") or len({w["host"] for w in where})
            ),
            "hosts": sorted({w["host"] for w in where}),
            "backend": backend,
            "devices": [w["device"] for w in where],
            "launcher": env.launcher,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
            "python": platform.python_version(),
            "numerics_modes": [str(m) for m in args.numerics],
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        path = write_results(args.out, environment, results)
        _say(env, f"{len(experiments)} experiments on {env.world} ranks written to {path}")
    _end(env, store, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
