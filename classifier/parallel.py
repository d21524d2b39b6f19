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
        from tqdm import tqdm
        bar = tqdm(None, total=len(items), desc=desc, unit=unit, disable=None, leave=False, file=sys.stderr)
        try:
            if self.local:
                for item in items:
                    yield fn(item)
                    bar.update(1)
                return
            if self.scheduler is not None:
                yield from self._map_dask(fn, items, bar)
            else:
                yield from self._map_pool(fn, items, bar)
        finally:
            bar.close()

    @staticmethod
    def _deliver(done: dict, k: int):
        result, caught = done.pop(k)
        for message in caught:
            warnings.warn(message, stacklevel=3)
        return result

    def _map_pool(self, fn, items, bar) -> Iterator:
        from concurrent.futures import FIRST_COMPLETED, wait
        pool = self._executor()
        futures = {pool.submit(_run, fn, item): k for k, item in enumerate(items)}
        pending = set(futures)
        done: dict = {}
        k = 0
        try:
            while k < len(items):
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

    def _map_dask(self, fn, items, bar) -> Iterator:
        from distributed import as_completed
        client = self.client()
        futures = client.map(_run, [fn] * len(items), items, pure=False)
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
