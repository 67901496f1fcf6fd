"""Micro-batching: requests that arrive within a few milliseconds share one batched `generate`.

One worker takes the first waiting request, waits up to `window_ms` for companions (up to `max_batch_size`), and runs
each group of equal decoding settings as one batch in a generation thread, so the event loop keeps accepting
requests meanwhile; what arrives during a batch forms the next one. At most `max_queue` requests wait; beyond that
`submit` raises `QueueFullError` (the API answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from grok.serve.engine import Generated, PreparedCase, Sampling, TokenSink

GenerateFn = Callable[[Sequence[PreparedCase], Sampling, Sequence[int], Sequence[TokenSink | None]], list[Generated]]


class QueueFullError(RuntimeError):
    """The queue already holds `max_queue` waiting requests."""


@dataclass
class _Job:
    case: PreparedCase
    sampling: Sampling
    sink: TokenSink | None
    future: asyncio.Future


class Batcher:
    """The generation queue of one engine."""

    def __init__(self, generate: GenerateFn, max_batch_size: int, window_ms: float, max_queue: int) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError(f"batching: max_batch_size and max_queue must be >= 1, got {max_batch_size}, {max_queue}")
        self.generate = generate
        self.max_batch_size = max_batch_size
        self.window_s = window_ms / 1000
        self.max_queue = max_queue
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run (for tests, /healthz, the benchmark)
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the worker (in the running event loop)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grok-generate")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; requests still waiting fail."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def submit(self, case: PreparedCase, sampling: Sampling, sink: TokenSink | None = None) -> asyncio.Future:
        """Queue one request; the future resolves to its `Generated`. `sink` (called from the generation thread)
        receives its text deltas."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() has not been awaited")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(case, sampling, sink, future))
        except asyncio.QueueFull as error:
            raise QueueFullError(f"{self.max_queue} requests are already waiting") from error
        return future

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(jobs) < self.max_batch_size:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [job for job in jobs if not job.future.done()]  # a client that gave up is dropped here

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.sampling.batch_key, []).append(job)
            for group in groups.values():
                self.batch_sizes[len(group)] += 1
                try:
                    results = await loop.run_in_executor(
                        self._executor,
                        self.generate,
                        [job.case for job in group],
                        group[0].sampling,
                        [job.sampling.max_new_tokens for job in group],
                        [job.sink for job in group],
                    )
                except Exception as error:  # one failing batch fails its own requests, not the worker
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                for job, result in zip(group, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
