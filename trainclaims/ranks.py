"""Running a function on k ranks of a real torch.distributed process group, in processes this
module starts itself (spawn), on a free loopback port: no external launcher.

``run_ranks(fn, world_size, *args)`` returns every rank's result, in rank order. A rank that raises
makes it raise :class:`RankFailed` at once, naming the rank and its traceback; the other ranks are
ended (never a hang: the process group and every collective have a timeout, and the whole run a
deadline). Every process is joined before it returns, and a port taken by someone else between
choosing and binding it is retried on another.

``fn(rank, world_size, *args)`` must be importable by name (a module-level function) and return
plain data (numbers, lists, strings): it travels back through a pipe.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from trainclaims import numerics
from trainclaims.modes import REFERENCE, Mode
from trainclaims.mutants import active as active_mutant

LOOPBACK = "127.0.0.1"
COLLECTIVE_TIMEOUT_S = 30  # process-group init and every collective
RUN_DEADLINE_S = 120  # the whole run, start-up included (2 ranks on 2 cores: about 3 s)
PORT_TRIES = 3
_PORT_CLASH = ("address already in use", "eaddrinuse", "errno 98")


class RankFailed(RuntimeError):
    """A rank raised (its traceback is in the message), or the run passed its deadline."""


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def rank_gpu(backend: str, rank: int, gpus: int) -> int | None:
    """The GPU a spawned rank owns: GPU ``rank`` (of ``gpus``) where the backend is NCCL (which needs
    one GPU per rank, chosen before the group forms), else None. ValueError where there are fewer
    GPUs than ranks need."""
    if backend != "nccl":
        return None
    if rank >= gpus:
        raise ValueError(f"rank {rank} on NCCL needs GPU {rank}: {gpus} visible")
    return rank


def _rank_main(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    threads: int,
    fn: Callable,
    args: tuple,
    out: Any,
    mode: Mode = REFERENCE,
    mutant: Any = None,
) -> None:
    import inspect

    import torch
    import torch.distributed as dist

    from trainclaims.mutants import adopt

    torch.set_num_threads(threads)  # k ranks share the parent's cores
    try:
        adopt(mutant)  # the mutation tier: PyTorch altered here as in the process that started the ranks
        gpu = rank_gpu(backend, rank, torch.cuda.device_count() if backend == "nccl" else 0)
        options = {}
        if gpu is not None:
            torch.cuda.set_device(gpu)  # before the group: NCCL binds each rank to its own GPU
            if "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch 2.3+
                options["device_id"] = torch.device("cuda", gpu)
        dist.init_process_group(
            backend,
            init_method=f"tcp://{LOOPBACK}:{port}",
            rank=rank,
            world_size=world_size,
            timeout=dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
            **options,
        )
        try:
            device = f"cuda:{gpu}" if gpu is not None else "cpu"
            result, acted = run_in_mode(fn, rank, world_size, args, mode, device)
        finally:
            dist.destroy_process_group()
        out.put(("ok", rank, (result, acted)))
    except BaseException:
        out.put(("error", rank, traceback.format_exc()))


def run_in_mode(
    fn: Callable[..., Any], rank: int, world: int, args: tuple, mode: Mode, on: str, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    """``fn(rank, world, *args, **kwargs)`` as a test of ``mode`` runs: its precision pinned whatever
    the process had (a rank is a process of its own; a launched job's may have had TF32 on), its
    before-test hook run on the device ``on`` (what it keeps between tests cleared, its probe), and what the
    modes did on this rank watched: (the result, what the modes did, as JSON, for the test's proof).
    The one way a rank runs in its mode, spawned here or launched (trainclaims.launch)."""
    with numerics.pinned(mode), numerics.watch() as acted:
        numerics.before_test(mode, on)
        result = fn(rank, world, *args, **kwargs)
    return result, acted.to_json()


def with_keywords(rank: int, world: int, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``fn(rank, world, **kwargs)``: how a rank function that takes keyword arguments only (the
    checks' rank functions) goes through :func:`run_ranks`."""
    return fn(rank, world, **kwargs)


def run_ranks(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    port: int | None = None,
    deadline_s: float = RUN_DEADLINE_S,
    mode: Mode = REFERENCE,
) -> list[Any]:
    """``[fn(0, world_size, *args), ..., fn(world_size - 1, ...)]``, each on its own rank, with the
    numerics mode ``mode``'s precision pinned on every rank (on NCCL each rank on its own GPU)."""
    for attempt in range(PORT_TRIES):
        try:
            return _run_once(fn, world_size, args, backend, port or free_port(), deadline_s, mode)
        except RankFailed as err:
            if attempt + 1 == PORT_TRIES or not any(s in str(err).lower() for s in _PORT_CLASH):
                raise
            port = None  # someone else holds it: another port
    raise AssertionError("unreachable")


ERROR_GRACE_S = 2.0  # after a rank's error, how long to wait for the others' (to find the first cause)


def _failures(out: Any, world_size: int, port: int, errors: dict[int, str]) -> str:
    """Every rank's error that arrives within :data:`ERROR_GRACE_S`, the cause first: a rank whose
    own code raised before a rank whose collective failed because a peer was gone."""
    deadline = time.monotonic() + ERROR_GRACE_S
    while len(errors) < world_size and time.monotonic() < deadline:
        try:
            status, rank, value = out.get(timeout=0.1)
        except queue.Empty:
            continue
        if status == "error":
            errors[rank] = value

    def knock_on(tb: str) -> bool:  # the last frame is in torch.distributed: it failed in a collective
        frames = [line for line in tb.splitlines() if line.lstrip().startswith("File ")]
        return bool(frames) and f"torch{os.sep}distributed" in frames[-1]

    ranks = sorted(errors, key=lambda r: (knock_on(errors[r]), r))
    return "\n".join(f"rank {r} of {world_size} failed (port {port}):\n{errors[r]}" for r in ranks)


def _context(fn: Callable) -> Any:
    """forkserver where the platform has it: one server process imports torch (and the rank
    function's module) once, and every rank is forked from it: a 2-rank run of an empty function
    took 0.08 s instead of spawn's 1.8 s of importing torch again in each rank (2 cores), and the
    data-parallel tests 31 s instead of 61 s; spawn elsewhere. Never plain fork:
    the test process has threads (OpenMP, gloo) that a fork would copy half-way."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # read when the server starts (the first run): the rank function's module then, others on use
        ctx.set_forkserver_preload(["__main__", "torch", "torch.distributed", __name__, fn.__module__])
        return ctx
    return mp.get_context("spawn")


def _run_once(
    fn: Callable, world_size: int, args: tuple, backend: str, port: int, deadline_s: float, mode: Mode
) -> list[Any]:
    ctx = _context(fn)
    out = ctx.Queue()
    env = {"MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    procs = []
    try:
        for rank in range(world_size):
            threads = max(1, torch.get_num_threads() // world_size)
            p = ctx.Process(
                target=_rank_main,
                args=(rank, world_size, port, backend, threads, fn, args, out, mode, active_mutant()),
                daemon=True,
            )
            p.start()
            procs.append(p)
        results: dict[int, Any] = {}
        deadline = time.monotonic() + deadline_s
        while len(results) < world_size:
            try:
                status, rank, value = out.get(timeout=0.2)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results]
                if dead:
                    raise RankFailed(
                        f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode}) without a result"
                    ) from None
                if time.monotonic() > deadline:
                    waiting = [r for r in range(world_size) if r not in results]
                    raise RankFailed(
                        f"ranks {waiting} did not finish within {deadline_s:.0f} s (port {port})"
                    ) from None
                continue
            if status == "error":
                raise RankFailed(_failures(out, world_size, port, {rank: value}))
            results[rank], acted = value
            numerics.note(numerics.Acted.from_json(acted))  # the test's numerics mode acted on its ranks
        return [results[r] for r in range(world_size)]
    finally:
        for p in procs:  # the others stop here, whatever happened
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        out.close()
        out.join_thread()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- results of a launched job


RESULTS_FILE = "ranks.json"  # what rank 0 of a launched job writes (trainclaims.launch)
RESULTS_SCHEMA = 1


def write_results(out: Path, environment: dict[str, Any], results: dict[str, Any]) -> Path:
    """``out/ranks.json``: every rank's result of every experiment (by its id) and what the job ran
    on, written whole or not at all (trainclaims.files.atomic_write)."""
    import json

    from trainclaims.files import atomic_write

    path = out / RESULTS_FILE
    atomic_write(
        path, json.dumps({"schema": RESULTS_SCHEMA, "environment": environment, "experiments": results}, indent=1)
    )
    return path


@dataclass(frozen=True)
class Experiment:
    """A rank experiment: ``fn(rank, world, *args)`` on every rank of a process group, named by an
    explicit ``id`` (``S002-11/ddp/float32/ieee``) under which a launched job writes its results
    and a test finds them. ``args`` are plain data (JSON: a launched job's results carry them);
    ``mode`` is the numerics mode it measures (the launcher runs it in that mode)."""

    id: str
    fn: Callable[..., Any]
    args: tuple = ()
    mode: Mode = REFERENCE

    @property
    def name(self) -> str:
        return f"{self.id}: {self.fn.__name__}({', '.join(map(repr, self.args))})"

    @classmethod
    def of_call(cls, fn: Callable[..., Any], args: tuple) -> Experiment:
        """An experiment named by its function and arguments (a call made without an Experiment)."""
        import json

        return cls(f"{fn.__name__}{json.dumps(list(args), default=str)}", fn, tuple(args))


class RankResults:
    """The results folder of a job that ran ``python -m trainclaims.launch`` on its ranks."""

    def __init__(self, folder: Path, environment: dict[str, Any], experiments: dict[str, list[dict]]) -> None:
        self.folder, self.environment, self.experiments = folder, environment, experiments

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RankResults:
        """ValueError (one line) for a folder that is not there or holds no readable ranks.json."""
        import json

        path = Path(folder) / RESULTS_FILE
        if not Path(folder).is_dir():
            raise ValueError(f"--ranks-results {folder}: no such folder (python -m trainclaims.launch --out writes it)")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"--ranks-results {folder}: no {RESULTS_FILE} in it (the job did not finish, or wrote elsewhere)"
            ) from None
        except (OSError, ValueError) as err:
            raise ValueError(f"--ranks-results {path}: cannot be read: {err}") from None
        experiments = data.get("experiments") if isinstance(data, dict) else None
        if not isinstance(experiments, dict) or data.get("schema") != RESULTS_SCHEMA:
            raise ValueError(f"--ranks-results {path}: not a trainclaims.launch results file (schema {RESULTS_SCHEMA})")
        return cls(Path(folder), data.get("environment") or {}, data["experiments"])

    def describe(self) -> str:
        """What the job ran on, in a few words (for the evidence of each test that used it)."""
        e = self.environment
        nodes = f"{e.get('nodes', '?')} node{'s' if e.get('nodes') != 1 else ''}"
        nccl = f", NCCL {e['nccl']}" if e.get("nccl") else ""
        return (
            f"{e.get('launcher', '?')}: {e.get('world_size', '?')} ranks on {nodes}, {e.get('backend', '?')}, "
            f"torch {e.get('torch', '?')}{nccl}"
        )

    def get(self, experiment: Experiment) -> list[Any] | None:
        """Every rank's result of the experiment (by its id), in rank order (each rank's numerics
        activity is noted for the test), or None where the job did not run it."""
        every = self.experiments.get(experiment.id)
        if every is None:
            return None
        for rank in every:
            numerics.note(numerics.Acted.from_json(rank.get("acted")))
        return [rank["result"] for rank in every]
