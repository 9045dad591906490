"""Micro-batching: requests that arrive together share one call of a batch function.

`MicroBatcher.submit(group)` queues one request's items and waits for their result. One worker
task takes the first group waiting, collects the groups that arrive within `window` seconds
(or until `max_items` items), and runs `work(groups)` once, in its own thread, so the event
loop keeps accepting requests meanwhile; while it runs, the next groups queue up and make the
next batch. `work` returns one result per group, in order. Its error goes to every group of
that batch, and the next batch is served normally.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Waiting(Generic[Item]):
    items: list[Item]
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did: calls of `work`, groups and items through it, the largest batch."""

    n_batches: int = 0
    n_groups: int = 0
    n_items: int = 0
    max_groups: int = 0
    seconds: float = 0.0
    sizes: list[int] = field(default_factory=list)  # groups per batch, the last 1000

    def add(self, groups: int, items: int, seconds: float) -> None:
        self.n_batches += 1
        self.n_groups += groups
        self.n_items += items
        self.max_groups = max(self.max_groups, groups)
        self.seconds += seconds
        self.sizes = self.sizes[-999:] + [groups]


class MicroBatcher(Generic[Item]):
    """Groups of items from concurrent callers -> one `work(groups)` call per few ms."""

    def __init__(
        self, work: Callable[[list[list[Item]]], list[Any]], window: float, max_items: int
    ):
        self.work = work
        self.window = max(0.0, float(window))
        self.max_items = max(1, int(max_items))
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Waiting[Item]] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def submit(self, items: list[Item]) -> Any:
        """Queue one group; its result once the batch it joins is done (or its error)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            n_items = len(batch[0].items)
            deadline = loop.time() + self.window
            while n_items < self.max_items:
                try:
                    if not self._queue.empty():
                        waiting = self._queue.get_nowait()
                    else:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        waiting = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(waiting)
                n_items += len(waiting.items)
            batch = [w for w in batch if not w.future.cancelled()]  # callers that went away
            if not batch:
                continue
            groups = [w.items for w in batch]
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._pool, self.work, groups)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
            else:
                for waiting, result in zip(batch, results):
                    if not waiting.future.done():
                        waiting.future.set_result(result)
            self.stats.add(len(groups), n_items, time.monotonic() - started)
