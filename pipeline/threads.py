"""Thread helpers for NumPy work that releases the GIL: a bounded ordered map, reading one item
ahead, one BLAS thread."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_workers: int | None = None  # `use_workers`: the default of `bounded_map` in this process


def use_workers(n: int | None) -> None:
    """Make `bounded_map` use `n` threads by default in this process (None: up to 4, as many
    as the cores): a Ray task given a few CPUs of a bigger node uses those, not the node's."""
    global _workers
    _workers = None if n is None else max(1, int(n))


def bounded_map(
    func: Callable[[T], R], items: Iterable[T], workers: int | None = None
) -> Iterator[R]:
    """`func` over `items` in threads, in order, with at most `workers` items in flight (so a
    generator of big chunks is not read ahead into memory, as `Executor.map` would)."""
    workers = workers or _workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_END = object()


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """`items` in order, the next one produced in a thread of its own while the caller works on
    this one: a reader of chunks (the store's thumbnails, decoded) keeps the cores busy instead
    of leaving them idle between chunks. One item ahead at most, so memory holds two chunks;
    the items are produced one at a time, never concurrently, and an error in producing one is
    raised where the caller asks for it."""
    source = iter(items)
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(next, source, _END)
        while True:
            item = ahead.result()
            if item is _END:
                return
            ahead = pool.submit(next, source, _END)
            yield item


def one_blas_thread():
    """Context in which BLAS runs single-threaded: the background fits and scores in its own
    threads, and BLAS threads nested in them (or competing with other jobs for the cores) spin
    while they wait: a class's fit took 5 CPU s with them and 2 without."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")
