"""Thread helpers for NumPy work that releases the GIL: a bounded ordered map, one BLAS thread."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    func: Callable[[T], R], items: Iterable[T], workers: int | None = None
) -> Iterator[R]:
    """`func` over `items` in threads, in order, with at most `workers` items in flight (so a
    generator of big chunks is not read ahead into memory, as `Executor.map` would)."""
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def one_blas_thread():
    """Context in which BLAS runs single-threaded: the background fits and scores in its own
    threads, and BLAS threads nested in them (or competing with other jobs for the cores) spin
    while they wait: a class's fit took 5 CPU s with them and 2 without."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")
