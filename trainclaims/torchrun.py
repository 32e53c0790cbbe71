"""``trainclaims-torchrun``: torchrun running ``python -m trainclaims.launch`` on every rank, with
its failures in one line each. Its arguments are torchrun's, then ``--``, then the launcher's::

    trainclaims-torchrun --nnodes=2 --node-rank=0 --nproc-per-node=4 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29500 --rdzv-conf=join_timeout=120 -- --out cluster-results

(one such command on each node). It is torchrun itself (``torch.distributed.run``, no restarts
unless ``--max-restarts`` says so); what it adds is what a CI log needs: a rendezvous that does not
complete (a node that never starts, a wrong endpoint) ends after torchrun's ``join_timeout`` with
one line naming the endpoint; a rank that fails or is killed ends the job with one line naming the
rank, its host and its exit code or signal, after torchrun has stopped the other ranks. Exit code 1
for a failed rank, 2 for a job that never formed. A rendezvous error after the job wrote its results
(the launcher's ``--out``/ranks.json, written whole once every experiment ran on every rank) is the
agents' shutdown, not the job's: it is said in one line, and the exit code is 0.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _failure_line(err: object) -> str:
    failures = getattr(err, "failures", {}) or {}
    parts = []
    for rank, f in sorted(failures.items()):
        code = getattr(f, "exitcode", None)
        if isinstance(code, int) and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        parts.append(f"rank {rank} (local rank {getattr(f, 'local_rank', '?')} on {getattr(f, 'hostname', '?')}) {how}")
    return "; ".join(parts) or str(err)


def _results(launch_args: list[str]) -> Path | None:
    """The ranks.json the launcher writes with these arguments (``--out DIR`` or ``--out=DIR``)."""
    from trainclaims.ranks import RESULTS_FILE

    for i, arg in enumerate(launch_args):
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1]) / RESULTS_FILE
        if arg == "--out" and i + 1 < len(launch_args):
            return Path(launch_args[i + 1]) / RESULTS_FILE
    return None


def main(argv: list[str] | None = None) -> int:
    torchrun_args, launch_args = _split(list(sys.argv[1:] if argv is None else argv))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    args = parse_args([*torchrun_args, "-m", "trainclaims.launch", *launch_args])
    if not any(a.startswith("--max-restarts") or a.startswith("--max_restarts") for a in torchrun_args):
        args.max_restarts = 0  # a claim run that failed is not retried behind the reader's back
    results = _results(launch_args)
    started = time.time()
    try:
        run(args)
    except RendezvousError as err:
        endpoint = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if results is not None and results.exists() and results.stat().st_mtime >= started:
            print(
                f"trainclaims-torchrun: the job's results are complete ({results}); the rendezvous at {endpoint} "
                f"failed as the agents shut down: {type(err).__name__}: {first}",
                file=sys.stderr,
            )
            return 0
        print(
            f"trainclaims-torchrun: the rendezvous at {endpoint} ({args.rdzv_backend}, nodes {args.nnodes}) did not "
            f"complete: {type(err).__name__}: {first}",
            file=sys.stderr,
        )
        return 2
    except ChildFailedError as err:
        print(f"trainclaims-torchrun: the job failed: {_failure_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
