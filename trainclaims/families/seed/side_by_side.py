"""Training several configs on CPU side by side, in worker threads, each with its share of the
intra-op threads (an engine on top of :func:`trainclaims.families.seed.engine.train`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

from trainclaims.families.seed.data import Dataset
from trainclaims.families.seed.engine import ProgressFn, TrainConfig, TrainResult, train


class _Stopped(Exception):
    """Raised inside a worker's training loop when the caller has stopped waiting."""


def train_side_by_side(
    configs: list[TrainConfig],
    data: Dataset,
    progress_of: Callable[[TrainConfig], ProgressFn | None] | None = None,
) -> list[TrainResult]:
    """Train ``configs`` on CPU in worker threads, each with its share of the intra-op threads
    (1 each on 2 cores), and return their results in order. ``progress_of(config)`` is called as
    each run starts (in its worker) for that run's progress callback.

    Why: small GEMMs (250x784 by 784x300) and the per-step elementwise ops scale poorly over two
    threads, and Python's per-step overhead does not scale at all; two single-threaded runs side by
    side keep both cores busy (and OpenMP's spinning threads stop eating CPU). Measured on the
    2-core machines, seed-000 sweep of 8 variants x 20 epochs, in one pytest run each: one after
    another with 2 threads 232 s (fashion-mnist) + 131 s (synthetic), user CPU 12.1 min; side by
    side 135 s + 87 s, user CPU 7.4 min (1 epoch, ad hoc: 1.15-1.35x and 1.0-1.5x). Each run
    is deterministic (the same numbers as one run alone with the same thread count), but its float32
    rounding differs from a 2-thread run's, as any change of thread count may.
    """
    threads = torch.get_num_threads()
    workers = max(1, min(len(configs), threads))
    per_worker = max(1, threads // workers)
    stop = threading.Event()
    report = threading.Lock()  # progress writes to the terminal: one line at a time

    def watched(fn: ProgressFn | None) -> ProgressFn:
        def call(epoch: int, epochs: int, loss: float, acc: float) -> None:
            if stop.is_set():
                raise _Stopped
            if fn is not None:
                with report:
                    fn(epoch, epochs, loss, acc)

        return call

    def job(config: TrainConfig) -> TrainResult:
        torch.set_num_threads(per_worker)  # this thread's OpenMP and MKL pools
        return train(config, data, watched(progress_of(config) if progress_of else None))

    pool = ThreadPoolExecutor(workers, thread_name_prefix="trainclaims-train")
    try:
        futures = [pool.submit(job, c) for c in configs]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        return [f.result() for f in failed or futures]  # the first failure raises
    finally:
        stop.set()  # on an error or Ctrl-C the other runs stop at their next epoch
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
