"""Where per-frame work runs: the executor protocol and the local threaded executor.

**Workers compute; only the driver writes to the store.** DuckDB allows one read-write process
at a time, so however many threads, processes or machines compute, their results travel back
to the driver (the process that called the stage), where one writer commits them batch by
batch (`pipeline.embed.BatchWriter`). A worker of these stages never opens the store, and
never needs to: it gets everything it works on (frame ids, paths, settings) from the driver.
(`analyze --executor ray` is the one reader: its tasks read the stored thumbnails read-only
while the driver holds no connection; `pipeline.ray_executor.RayFrameSpread`.)

An executor runs two functions over planned batches and yields one result per batch:

- `prepare(item)`: per-item work, e.g. read and decode one frame's file. Run in workers.
- `finish(prepared_items)`: per-batch work on the prepared items of one batch, e.g. model
  inference on the decoded batch. Its result is what the driver commits.

The functions are the same whatever runs them (threads here, a cluster elsewhere), so a frame
gives the same vector with every executor.

`LocalExecutor` is the first implementation: `prepare` in a pool of threads (or, with
`processes=True`, of worker processes started by a forkserver), a few batches ahead (Pillow's
decoder and the model release the GIL), `finish` in the calling thread, so decoding overlaps
inference and the model never waits for the disk. It yields batches in order, one at a time;
while one batch is finished, the next `ahead + 1` are being prepared, so memory holds a bounded
number of prepared items however many there are. `embed` prepares in threads (decoding is all
its workers do); `run`'s one pass prepares in processes, as `ingest` does (hashing, EXIF and
the thumbnail's JPEG encoding hold the GIL), and its `prepare` must then be picklable.

To add an executor (e.g. Ray Data): write a class with the same `map_batches` signature that
yields one result per batch (in any order; each result says which frames it holds). `prepare`
and `finish` must then be picklable (module-level functions, `functools.partial` of them, or a
callable class, which Ray Data instantiates once per actor, so a model is built once per actor
rather than once per batch), and the driver keeps the one writer.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.pool import AsyncResult
from typing import Callable, Iterator, Protocol, Sequence, TypeVar

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")

#: Batches decoded ahead: while one batch is finished, the next PREFETCH_BATCHES + 1 are prepared.
PREFETCH_BATCHES = 2


class Executor(Protocol):
    """Runs `prepare` on every item and `finish` on every batch's prepared items."""

    def map_batches(
        self,
        batches: Sequence[Sequence[Item]],
        prepare: Callable[[Item], Prepared],
        finish: Callable[[list[Prepared]], Result],
    ) -> Iterator[Result]:
        """Yield `finish([prepare(item) for item in batch])` for every batch."""
        ...


def session(settings):
    """Context in which the stage's executors run: nothing to start for `executor = "local"`;
    for `"ray"`, joined to the cluster at `settings.ray_address` (or a Ray started on this
    machine alone), which fails at once when Ray is missing or the cluster unreachable. Nested
    sessions share the first (`run`'s stages use one)."""
    if settings.executor != "ray":
        return contextlib.nullcontext()
    from pipeline.ray_executor import ray_session

    return ray_session(settings.ray_address)


def choose(
    settings,
    local: Callable[[], "Executor"],
    path_of: Callable | None = None,
    setup: Callable[[], None] | None = None,
) -> "Executor":
    """The executor `settings.executor` names, inside `session(settings)`: `local()` for
    "local"; for "ray" a `pipeline.ray_executor.RayExecutor` in batches of
    `settings.batch_size`, which checks `path_of(item)` for a sample of items on every node and
    runs `setup()` in each worker before its items (e.g. Pillow's limits)."""
    if settings.executor != "ray":
        return local()
    from pipeline.ray_executor import RayExecutor

    return RayExecutor(settings.batch_size, settings.ray_stall_seconds, paths=path_of, setup=setup)


class LocalExecutor:
    """`prepare` in `workers` threads (processes with `processes=True`), batches in advance;
    `finish` in the caller's thread.

    Results come in batch order. Stopping the iteration (an error in the driver, Ctrl-C)
    cancels the batches not yet started (threads: waits for the running ones; processes: ends
    them, their work is pure). Worker processes come from a forkserver (never a fork of a
    process holding TensorFlow or DuckDB threads), preloading `preload` modules and running
    `initializer(*initargs)` once each (e.g. `imagestats.configure_worker`); they exit by
    themselves when the driver is killed.
    """

    def __init__(
        self,
        workers: int,
        ahead: int = PREFETCH_BATCHES,
        processes: bool = False,
        preload: Sequence[str] = (),
        initializer: Callable | None = None,
        initargs: tuple = (),
    ):
        self.workers = max(1, int(workers))
        self.ahead = max(0, int(ahead))
        self.processes = processes
        self.preload = list(preload)
        self.initializer, self.initargs = initializer, tuple(initargs)

    def map_batches(
        self,
        batches: Sequence[Sequence[Item]],
        prepare: Callable[[Item], Prepared],
        finish: Callable[[list[Prepared]], Result],
    ) -> Iterator[Result]:
        pool = (
            _ProcessPool(self.workers, self.preload, self.initializer, self.initargs)
            if self.processes
            else _ThreadPool(self.workers)
        )
        remaining = iter(batches)
        in_flight: deque[list] = deque()

        def submit_next() -> None:
            batch = next(remaining, None)
            if batch is not None:
                in_flight.append([pool.submit(prepare, item) for item in batch])

        try:
            for _ in range(self.ahead + 1):
                submit_next()
            while in_flight:
                prepared = [pool.result(handle) for handle in in_flight.popleft()]
                submit_next()
                yield finish(prepared)
        finally:
            pool.stop()


class _ThreadPool:
    def __init__(self, workers: int):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")

    def submit(self, func: Callable, item) -> Future:
        return self._pool.submit(func, item)

    def result(self, handle: Future):
        return handle.result()

    def stop(self) -> None:
        """Cancel what has not started; wait for what has."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class _ProcessPool:
    """A `multiprocessing` pool from a forkserver. Not `concurrent.futures`' process pool: its
    workers hold both ends of their task pipe, so they outlive a driver killed with SIGKILL,
    where a `multiprocessing.Pool` worker sees the pipe close and exits."""

    def __init__(
        self,
        workers: int,
        preload: Sequence[str],
        initializer: Callable | None = None,
        initargs: tuple = (),
    ):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        self._pool = context.Pool(workers, initializer=initializer, initargs=initargs)

    def submit(self, func: Callable, item) -> AsyncResult:
        return self._pool.apply_async(func, (item,))

    def result(self, handle: AsyncResult):
        return handle.get()

    def stop(self) -> None:
        """Every result the driver wanted is in (or no longer wanted): end the workers."""
        self._pool.terminate()
        self._pool.join()
