"""Micro-batching: requests that arrive together are scored in one model call.

Requests queue their column arrays; one task takes everything queued (up to ``max_rows``) and scores it
in one call; the requests that arrive meanwhile form the next batch. A batch of up to ``INLINE_ROWS``
rows of the project's own models is scored on the event loop itself (a fraction of a millisecond; handing it
to a thread costs more, and two threads contending for the GIL cost most); a bigger one, and any batch of a
model of its own kind (an MLflow pyfunc, whose call may take any time), goes to the model thread, so the loop
keeps answering /health and parsing while it runs. When other requests are still being parsed, it waits
for them for at most ``max_wait`` so they join; a lone client never waits. Requests are grouped by the model they read at their start, so a
request started before a swap is scored on the old model even when its batch runs after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.model.signature import RequestError
from pipelines.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from pipelines.model.runtime import ServedModel
    from pipelines.model.signature import RowKeys
    from pipelines.serving.predlog import PredictionLog

log = logging.getLogger(__name__)

INLINE_ROWS = 512


class Arrival:
    """A request being read: counted in ``arriving`` until it is queued (or ends without being queued)."""

    def __init__(self, batcher: MicroBatcher):
        self._batcher = batcher
        self._counted = True
        batcher.arriving += 1

    def queued(self) -> None:
        """The request's rows are about to be queued: it is no longer arriving."""
        if self._counted:
            self._counted = False
            self._batcher.arriving -= 1

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.queued()


@dataclass
class _Item:
    model: ServedModel
    columns: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    request_id: str
    keys: RowKeys | None


def _predict(model: Any, columns: dict[str, np.ndarray]) -> Any:
    """``model.predict`` on the model thread. A ``StopIteration`` it raises (a ``next()`` on an exhausted
    iterator in a model's code) cannot be set on the future that awaits it: asyncio raised a TypeError in its
    loop instead, the future never resolved, and the batcher waited on it for good, every later request with
    it. It is raised as a RuntimeError, as a coroutine raises it."""
    try:
        return model.predict(columns)
    except StopIteration as exc:
        raise RuntimeError(f"the model raised StopIteration: {exc!r}") from exc


class MicroBatcher:
    def __init__(
        self,
        max_rows: int,
        max_wait_s: float,
        metrics: ServingMetrics,
        sink: PredictionLog | None = None,
    ):
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self.sink = sink
        self.arriving = 0  # requests read but not yet queued: worth waiting for
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ct-model")
        self._task: asyncio.Task | None = None
        self._scoring: list[_Item] = []  # the batch being scored
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ct-micro-batcher")

    async def stop(self) -> None:
        """Stop batching; a request still queued is answered 503 (the server is stopping), not left waiting, and
        so is one queued after (its body was still arriving): nothing would ever score it."""
        self._stopped = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)
        for item in [*self._scoring, *self._queue]:  # the batch the cancel cut short, and the queue
            if not item.future.done():
                item.future.set_exception(RequestError(503, "the server is shutting down; send it again"))
        self._queue.clear()
        self._queued_rows = 0

    def arrival(self) -> Arrival:
        """Count a request as arriving while it is read and parsed (``with batcher.arrival() as a: ...``)."""
        return Arrival(self)

    async def predict(
        self,
        model: ServedModel,
        columns: dict[str, np.ndarray],
        rows: int,
        request_id: str = "",
        keys: RowKeys | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and labels of ``rows`` rows; ``request_id`` and ``keys`` are logged with them."""
        if self._stopped:
            raise RequestError(503, "the server is shutting down; send it again")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(model, columns, rows, future, request_id, keys))
        self._queued_rows += rows
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self.max_wait_s and self.arriving and self._queued_rows < self.max_rows:
                    deadline = loop.time() + self.max_wait_s
                    while self.arriving and self._queued_rows < self.max_rows and loop.time() < deadline:
                        await asyncio.sleep(0)  # let the arriving requests finish parsing and queue
                batch = self._scoring = self._take()
                try:
                    await self._score(loop, batch)
                except Exception as exc:  # noqa: BLE001 - the batcher outlives a failed batch
                    await self._one_by_one(loop, batch, exc)
                # Not kept past its batch (a cancel, the stop, leaves it for stop to answer): a model swapped out,
                # and its files, would stay in memory until the next request came.
                self._scoring = batch = []

    async def _one_by_one(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Item], failure: Exception
    ) -> None:
        """A failed batch's requests scored again one by one, so that one request's failure (a 422 of its own,
        a value the model chokes on) is that request's alone. Each failing request gets its error, which the
        app answers (a RequestError) or the guard logs and answers with a 500."""
        unanswered = [item for item in batch if not item.future.done()]
        if not unanswered:  # its requests had their answers: what failed came after (the log's append)
            log.error("a batch failed after its requests were answered", exc_info=failure)
            return
        for item in unanswered if len(unanswered) > 1 else []:
            try:
                await self._score(loop, [item])
            except Exception as alone:  # noqa: BLE001 - as in _run, for one request
                if not item.future.done():
                    item.future.set_exception(alone)
        for item in unanswered:
            if not item.future.done():
                item.future.set_exception(failure)

    def _take(self) -> list[_Item]:
        """Items of one model, oldest first, up to max_rows (a single bigger request goes alone)."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        keep: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.model is first.model and rows + item.rows <= self.max_rows:
                batch.append(item)
                rows += item.rows
            else:
                keep.append(item)
        self._queue.extendleft(reversed(keep))
        self._queued_rows -= rows
        return batch

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        model = batch[0].model
        if len(batch) == 1:
            columns = batch[0].columns
        else:
            columns = {
                name: np.concatenate([item.columns[name] for item in batch]) for name in batch[0].columns
            }
        total = sum(item.rows for item in batch)
        started = time.perf_counter()
        if total <= INLINE_ROWS and model.scores_inline:
            probability, label = model.predict(columns)
        else:
            probability, label = await loop.run_in_executor(self._executor, _predict, model, columns)
        self.metrics.model_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_rows.observe(total)
        self.metrics.batch_requests.observe(len(batch))
        self.metrics.rows.inc(total)
        offset = 0
        for item in batch:
            end = offset + item.rows
            if not item.future.done():  # the client may have gone away
                item.future.set_result((probability[offset:end], label[offset:end]))
            offset = end
        if self.sink is not None:
            requests = [(item.request_id, item.rows, item.keys) for item in batch]
            # Each request's own columns: the batch's concatenation made an integer column a double where
            # one request had a null in it, and the log writes the signature's types.
            parts = [item.columns for item in batch]
            self.sink.append(model.version, parts, probability, label, requests, model.schema.kinds)
