"""Micro-batching of concurrent score requests.

A TorchScript call has a fixed cost (dispatch, allocation) that dwarfs the per-event work of a
small energy MLP, so scoring 50 concurrent 1-event requests as one 50-row call is far cheaper
than 50 calls. Requests put (model, rows, future) on a queue; one worker takes what is queued
(up to ``max_events``), concatenates the rows of each model version, scores each version once in
a one-thread executor (model work does not block the event loop, and one thread keeps torch from
fighting itself for cores), and hands each request its slice.

Waiting only pays when there is traffic to wait for: the worker waits ``wait_ms`` for stragglers
only when it found more than one job queued (after letting requests the event loop already has
in hand queue theirs); a lone request is scored at once. With ``inline_max_events`` > 0, a
request of at most that many events that finds the node quiet (nothing queued, nothing being
scored, and no other request for ``inline_idle_ms``) is scored right on the event loop: for a
1-event request the model call (tens of microseconds) costs less than the two thread
hand-overs it saves, and there is nothing for it to hold up. Under steady traffic requests
arrive closer together than that and are batched, which costs far less per event (one model
call for 32 events costs about what one for a single event does).

Each job carries the ``LoadedModel`` captured when the request was routed, and the batcher
groups by that object, not by the node's current snapshot: a swap mid-flight only changes
which objects later requests capture, and a request queued before it is scored by the model it
was routed to. No request fails because of a swap.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Scorer(Protocol):
    version: str

    def score(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(eq=False)
class _Job:
    model: Scorer
    x: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    """Gathers concurrent ``score`` calls into one model call per version."""

    def __init__(self, *, max_events: int = 1024, wait_ms: float = 1.0, inline_max_events: int = 0,
                 inline_idle_ms: float = 1.0, on_batch: Callable[[str, int], None] | None = None):
        self.max_events = max_events
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.inline_max_events = inline_max_events
        self.inline_idle_s = max(0.0, inline_idle_ms) / 1000.0
        self._last_call = float("-inf")  # loop time of the latest score call
        self.on_batch = on_batch
        self._busy = False  # the worker holds jobs (gathering or scoring them)
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0  # model calls made, for tests and /stats

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker on the running loop (call from the app's lifespan)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebm-score")
        self._worker = asyncio.create_task(self._run(), name="ebm-micro-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with CancelledError."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._worker = self._executor = None

    async def score(self, model: Scorer, x: np.ndarray) -> np.ndarray:
        """Energies of ``x`` under ``model`` (the exact object given, whatever is served by then)."""
        if not self.running or self._queue is None:
            raise RuntimeError("the micro-batcher is not running; start it in the app's lifespan")
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet = now - self._last_call >= self.inline_idle_s
        self._last_call = now
        if quiet and len(x) <= self.inline_max_events and not self._busy and self._queue.empty():
            return self._score_inline(model, x)
        fut = loop.create_future()
        self._queue.put_nowait(_Job(model, x, fut))
        return await fut

    def _score_inline(self, model: Scorer, x: np.ndarray) -> np.ndarray:
        """Score on the event loop (the caller checked that the node is quiet)."""
        energies = model.score(x)
        if len(energies) != len(x):
            raise RuntimeError(f"model {model.version} returned {len(energies)} energies for {len(x)} events")
        self._count_batch(model, len(x))
        return energies

    def _count_batch(self, model: Scorer, n: int) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(model.version, n)

    async def _gather(self) -> list[_Job]:
        """The next jobs: the first one queued, then what else is queued now, and when that is
        more than one (there is traffic), what else is queued within ``wait_s``."""
        assert self._queue is not None
        jobs = [await self._queue.get()]
        self._busy = True
        n = self._drain(jobs, len(jobs[0].x))
        if n < self.max_events and self.wait_s > 0:
            if len(jobs) == 1:
                await asyncio.sleep(0)  # requests the loop already has in hand queue theirs first
                n = self._drain(jobs, n)
            if len(jobs) > 1:
                await asyncio.sleep(self.wait_s)
                self._drain(jobs, n)
        return jobs

    def _drain(self, jobs: list[_Job], n: int) -> int:
        assert self._queue is not None
        while n < self.max_events and not self._queue.empty():
            job = self._queue.get_nowait()
            jobs.append(job)
            n += len(job.x)
        return n

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._busy = False
            jobs = await self._gather()
            try:
                await self._score_jobs(loop, jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.cancel()
                raise
            except BaseException as e:  # noqa: BLE001 - the worker must outlive any one batch
                log.exception("micro-batch failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)

    async def _score_jobs(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in jobs:
            if not job.future.done():  # a cancelled request (client gone) costs nothing
                groups.setdefault(id(job.model), []).append(job)
        for group in groups.values():
            model = group[0].model
            x = group[0].x if len(group) == 1 else np.concatenate([j.x for j in group])
            try:
                energies = await loop.run_in_executor(self._executor, model.score, x)
                if len(energies) != len(x):
                    raise RuntimeError(f"model {model.version} returned {len(energies)} energies for {len(x)} events")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - fails this version's requests only
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self._count_batch(model, len(x))
            start = 0
            for job in group:
                end = start + len(job.x)
                if not job.future.done():
                    job.future.set_result(energies[start:end])
                start = end
