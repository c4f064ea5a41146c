"""Micro-batching: concurrent requests to one model share one forward pass.

Each model has a :class:`MicroBatcher`. A request :meth:`~MicroBatcher.submit`s
its prepared input and awaits its own output. One asyncio task per model
collects waiting inputs (up to ``max_batch``, waiting at most ``max_wait_s``
for the batch to fill) and runs the batch in the inference executor, so the
event loop never runs a model.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


class QueueFull(RuntimeError):
    """The model's queue is at its bound; the caller should answer 503."""


@dataclass
class BatchInfo:
    batch_size: int
    queue_ms: float
    inference_ms: float


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    def __init__(self, name: str, run_batch: Callable[[list[Any]], list[Any]], executor: Executor, *,
                 max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[str, int, float], None] | None = None,
                 on_depth: Callable[[str, int], None] | None = None):
        self.name = name
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda *_: None)
        self._on_depth = on_depth or (lambda *_: None)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, item: Any) -> tuple[Any, BatchInfo]:
        """The model's output for ``item`` and how its batch went.
        Raises :class:`QueueFull` at once when the queue is at its bound."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} waiting)")
        job = _Job(item, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.put_nowait(job)
        self._on_depth(self.name, self._queue.qsize())
        return await job.future

    async def _collect(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        # Take what is already waiting, then give late arrivals up to max_wait_s.
        deadline = time.perf_counter() + self.max_wait_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        self._on_depth(self.name, self._queue.qsize())
        # A request that timed out or went away no longer wants its answer.
        return [j for j in jobs if not j.future.done()]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            if not jobs:
                continue
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, [j.item for j in jobs])
                if len(outputs) != len(jobs):
                    raise RuntimeError(f"{self.name}: {len(outputs)} outputs for a batch of {len(jobs)}")
            except Exception as e:  # the model failed: every request of the batch hears why
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            took = time.perf_counter() - started
            self._on_batch(self.name, len(jobs), took)
            for j, out in zip(jobs, outputs):
                if not j.future.done():
                    info = BatchInfo(len(jobs), round((started - j.enqueued) * 1000, 2), round(took * 1000, 2))
                    j.future.set_result((out, info))
