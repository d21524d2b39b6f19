"""The same work over many items -- captures, folds, models -- in this process, on every core,
or on a Dask cluster (``--workers N``, ``--scheduler ADDRESS``).

:class:`Runner.map` calls a function on each item and yields the results in the items' order,
whatever order they finish in, so that a command's output is the same with one worker, many,
or a cluster. The function and the items travel by pickle: the function is a module-level one
of this package (workers import the project, the same version), the items small (paths and
settings; each worker reads the captures itself).

* One worker: a plain loop in this process.
* Several: a process pool, its workers forked from this process (they start at once, with
  what it imported), or from a clean ``forkserver`` process once torch is loaded here (a fork
  of a process whose OpenMP threads run can hang). Each worker uses one thread for torch and
  OpenMP, as the project trains and evaluates (``OMP_NUM_THREADS=1``).
* A scheduler: a Dask ``distributed`` client on an existing cluster; the workers there must
  see the captures at the same paths (a shared file system) or read them from URLs the
  workers can open (``docs/cluster.md``).

Warnings raised in a worker (a capture read in part) come back with its result and are issued
here, in the items' order; an error in a worker is raised here. The progress bar counts items
as they finish.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Callable, Iterable, Iterator

from classifier.errors import IotClassError


class ParallelError(IotClassError):
    pass


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def one_thread() -> None:
    """Torch and OpenMP on one thread in this process (each worker: the cores are the workers')."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _run(fn: Callable, item) -> tuple:
    """In a worker: ``fn(item)`` and the warnings it raised."""
    one_thread()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(item)
    return result, [w.message for w in caught]


#: What :meth:`Runner.map_shared` hands its function in a forked worker, by key: set in this
#: process before the pool forks, so the workers inherit it (no pickling of it).
_SHARED: dict = {}


def _run_shared(fn: Callable, key: int, item) -> tuple:
    """In a forked worker: ``fn(shared, item)``, ``shared`` inherited from the parent."""
    shared = _SHARED[key]
    return _run(lambda it: fn(shared, it), item)


def _run_with(fn: Callable, item, shared) -> tuple:
    """On a Dask worker: ``fn(shared, item)``, ``shared`` scattered to the worker once."""
    return _run(lambda it: fn(shared, it), item)


class Runner:
    """Where :meth:`map` runs: ``workers`` processes on this machine (None: one per core; 1: this
    process), or the Dask cluster at ``scheduler`` (an address such as ``tcp://host:8786``)."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        if workers is not None and workers < 1:
            raise ParallelError(f"--workers must be at least 1, got {workers}")
        self.scheduler = scheduler
        self.workers = cores() if workers is None else workers
        self._pool = None
        self._client = None

    @property
    def local(self) -> bool:
        """Whether the work runs in this process."""
        return self.scheduler is None and self.workers == 1

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _executor(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            if "torch" in sys.modules:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(["classifier.parallel", "classifier.features.pipeline", "torch"])
            else:
                ctx = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=one_thread)
        return self._pool

    def client(self):
        """The Dask client (connected on first use)."""
        if self._client is None:
            try:
                from distributed import Client
            except ImportError:
                raise ParallelError("--scheduler needs dask's distributed package (make install installs it)") \
                    from None
            try:
                self._client = Client(self.scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise ParallelError(f"--scheduler {self.scheduler}: cannot connect: {exc}") from None
        return self._client

    def map(self, fn: Callable, items: Iterable, desc: str = "", unit: str = "file") -> Iterator:
        """``fn(item)`` for each item, in the items' order (see the module docstring)."""
        items = list(items)
        if self.local:
            yield from self._map_here(lambda item: fn(item), items, desc, unit)
        elif self.scheduler is not None:
            yield from self._map_dask([(_run, fn, item) for item in items], desc, unit)
        else:
            yield from self._map_pool(self._executor(), [(_run, fn, item) for item in items], desc, unit)

    def map_shared(self, fn: Callable, shared, items: Iterable, desc: str = "", unit: str = "run") -> Iterator:
        """``fn(shared, item)`` for each item, in the items' order, where ``shared`` is large and
        read-only (the features of a data selection, which folds and models train on). A pool's
        workers are forked from this process once ``shared`` is set, so they inherit it (it is
        never pickled; torch may be loaded here, as long as it has run nothing on several
        threads); a Dask cluster gets it once per worker (``scatter``). Torch and OpenMP run
        one thread everywhere, this process included: the output does not depend on where
        each item ran."""
        items = list(items)
        one_thread()
        if self.local or (self.scheduler is None and len(items) <= 1):
            yield from self._map_here(lambda item: fn(shared, item), items, desc, unit)
        elif self.scheduler is not None:
            client = self.client()
            handle = client.scatter(shared, broadcast=True)
            yield from self._map_dask([(_run_with, fn, item, handle) for item in items], desc, unit)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            key = id(shared)
            _SHARED[key] = shared
            pool = ProcessPoolExecutor(max_workers=min(self.workers, len(items)),
                                       mp_context=multiprocessing.get_context("fork"), initializer=one_thread)
            try:
                yield from self._map_pool(pool, [(_run_shared, fn, key, item) for item in items], desc, unit)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                _SHARED.pop(key, None)

    @staticmethod
    def _bar(total: int, desc: str, unit: str):
        from tqdm import tqdm
        return tqdm(None, total=total, desc=desc, unit=unit, disable=None, leave=False, file=sys.stderr)

    def _map_here(self, call: Callable, items: list, desc: str, unit: str) -> Iterator:
        bar = self._bar(len(items), desc, unit)
        try:
            for item in items:
                yield call(item)
                bar.update(1)
        finally:
            bar.close()

    @staticmethod
    def _deliver(done: dict, k: int):
        result, caught = done.pop(k)
        for message in caught:
            # shown as the one-process run shows it: not folded by the warnings registry into
            # the same text issued here before (an earlier command in this process); the
            # filters still apply
            warnings.warn_explicit(message, type(message), __file__, 0, module=__name__, registry={})
        return result

    def _map_pool(self, pool, calls: list, desc: str, unit: str) -> Iterator:
        """``calls``: (function, *arguments) each, run in ``pool``; results in their order."""
        from concurrent.futures import FIRST_COMPLETED, wait
        bar = self._bar(len(calls), desc, unit)
        futures = {pool.submit(*call): k for k, call in enumerate(calls)}
        pending = set(futures)
        done: dict = {}
        k = 0
        try:
            while k < len(calls):
                if k not in done:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done[futures[f]] = f.result()
                        bar.update(1)
                    continue
                yield self._deliver(done, k)
                k += 1
        finally:
            for f in pending:
                f.cancel()
            bar.close()

    def _map_dask(self, calls: list, desc: str, unit: str) -> Iterator:
        """``calls``: (function, *arguments) each, run on the cluster; results in their order."""
        from distributed import as_completed
        client = self.client()
        bar = self._bar(len(calls), desc, unit)
        futures = [client.submit(*call, pure=False) for call in calls]
        index = {f.key: k for k, f in enumerate(futures)}
        done: dict = {}
        k = 0
        try:
            for f in as_completed(futures):
                done[index[f.key]] = f.result()
                bar.update(1)
                while k in done:
                    yield self._deliver(done, k)
                    k += 1
        finally:
            client.cancel([f for f in futures if not f.done()])
            bar.close()


def add_runner_options(parser, what: str = "captures") -> None:
    """``--workers N`` and ``--scheduler ADDRESS`` on a command."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"processes the {what} are spread over (default: one per core, here {cores()}; "
                             "1: this process); the output is the same")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on an existing Dask cluster (e.g. tcp://10.0.0.5:8786) instead; its workers read "
                             "the captures at the same paths (docs/cluster.md)")


def runner_from_args(args) -> Runner:
    return Runner(getattr(args, "workers", None), getattr(args, "scheduler", None))
