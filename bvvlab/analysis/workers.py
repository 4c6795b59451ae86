"""The probes' worker processes: each per-layer metric is a job for forked workers (scikit-learn
imported before the fork, one BLAS and torch thread per worker, SIGINT left to the parent)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor

import torch

from bvvlab.analysis.items import ProbeError

# ============================================================================ all metrics of one model


def default_jobs() -> int:
    """Worker processes for the per-layer metrics (the probes' fits, retrieval, silhouettes): the
    usable cores, at most 4 (0, this process, where fork is unavailable)."""
    if not sys.platform.startswith("linux"):
        return 0
    return max(1, min(4, len(os.sched_getaffinity(0))))


class _Serial:
    """The pool's interface, run in this process at submit time."""

    _max_workers = 0

    def submit(self, fn, *args, **kwargs) -> Future:
        f: Future = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def _worker_init() -> None:
    """Each worker: one BLAS and one torch thread for good (the jobs are small and the workers
    share the cores), and Ctrl-C left to the parent, which stops the workers itself."""
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)
    torch.set_num_threads(1)


@contextlib.contextmanager
def probe_pool(jobs: int | None = None):
    """Where the per-layer metrics run: `jobs` forked worker processes (Linux), or this process
    (`jobs` 0, no fork, or a daemonic process). The probes' logistic-regression fits dominate;
    they are small and Python-bound, so threads do not help, and forked workers start in
    milliseconds with scikit-learn already imported (here, before the fork). A worker runs only
    NumPy/scikit-learn code on arrays it is sent, never torch or CUDA, which is what makes forking
    a process that holds a model safe here. While the workers live, this process's torch and BLAS
    threads leave their cores to them (idle OpenMP threads spin and starve the fits otherwise).
    Read the results inside the block: pending jobs are cancelled when it ends. Results do not
    depend on `jobs`."""
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 0:
        raise ProbeError(f"jobs={jobs}: give a number of worker processes, 0 or more (0 computes in this process)")
    if (jobs == 0 or "fork" not in multiprocessing.get_all_start_methods() or not sys.platform.startswith("linux")
            or multiprocessing.current_process().daemon):  # a daemonic process may not have children
        yield _Serial()
        return
    from concurrent.futures.process import BrokenProcessPool

    import sklearn.linear_model  # noqa: F401  (imported once here, not once per worker)
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    threads = torch.get_num_threads()
    left = max(1, min(threads, len(os.sched_getaffinity(0)) - jobs))
    blas = max([i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"] or [1])
    ex = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork in any multi-threaded process: safe here
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            ex.submit(int).result()  # fork the workers now, inside the filter
    except (BrokenProcessPool, OSError) as exc:
        ex.shutdown(wait=False, cancel_futures=True)
        raise ProbeError(f"could not start {jobs} worker processes ({exc}): pass --jobs 0 (jobs=0) to compute in "
                         "this process") from None
    torch.set_num_threads(left)
    try:
        with threadpool_limits(min(left, blas), user_api="blas"):
            yield ex
    except BrokenProcessPool:
        raise ProbeError("a probe worker process died (out of memory?): pass --jobs 0 (jobs=0) to compute in this "
                         "process, or fewer items") from None
    except BaseException:  # Ctrl-C or an error: the queued jobs are not wanted, stop the workers now
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
        ex.shutdown(wait=True, cancel_futures=True)
