"""The micro-batcher: requests that arrive together share one model call, never across models."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from pipelines.serving.batcher import MicroBatcher
from pipelines.serving.metrics import ServingMetrics
from tests.unit.serving.scoring import columns, served


class Sink:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def append(self, version, parts, probability, label, requests, kinds) -> None:
        assert sum(rows for _, rows, _ in requests) == len(probability)
        # each request's own columns, in the batch's order, and the signature the log types them by
        assert [len(next(iter(part.values()))) for part in parts] == [rows for _, rows, _ in requests]
        assert all(part.keys() == kinds.keys() for part in parts)
        self.batches.append((version, len(probability)))


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def _batched(batcher: MicroBatcher, requests):
    batcher.start()
    try:
        return await asyncio.gather(
            *(batcher.predict(model, cols, len(cols["x"])) for model, cols in requests)
        )
    finally:
        await batcher.stop()


def test_requests_queued_together_are_scored_in_one_call_each_getting_its_rows():
    model, metrics, sink = served(1), ServingMetrics(), Sink()
    requests = [(model, columns(0.0)), (model, columns(1.0, -1.0)), (model, columns(2.0))]
    answers = _run(_batched(MicroBatcher(256, 0.0, metrics, sink), requests))
    assert model.pyfunc.calls == 1 and sink.batches == [(1, 4)]
    for (_, cols), (probability, label) in zip(requests, answers, strict=True):
        expected = 1 / (1 + np.exp(-cols["x"]))
        np.testing.assert_allclose(probability, expected)
        assert label.tolist() == (expected >= 0.5).astype(int).tolist()
    assert metrics.rows._value.get() == 4


def test_a_batch_never_mixes_models_nor_exceeds_its_row_limit():
    old, new, metrics = served(1, weight=1.0), served(2, weight=-1.0), ServingMetrics()
    requests = [(old, columns(1.0)), (new, columns(1.0)), (old, columns(2.0, 3.0)), (old, columns(4.0))]
    answers = _run(_batched(MicroBatcher(3, 0.0, metrics), requests))
    assert answers[0][0][0] == pytest.approx(1 / (1 + np.exp(-1.0)))  # scored on the model it arrived with
    assert answers[1][0][0] == pytest.approx(1 / (1 + np.exp(1.0)))
    assert new.pyfunc.calls == 1 and old.pyfunc.calls == 2  # rows 1+2 fit in 3; the 4th row waits its turn


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on():
    broken, good = served(1), served(2)
    broken.pyfunc.fail = ValueError("the model broke")

    async def scenario():
        batcher = MicroBatcher(256, 0.0, ServingMetrics())
        batcher.start()
        try:
            with pytest.raises(ValueError, match="the model broke"):
                await batcher.predict(broken, columns(1.0), 1)
            return await batcher.predict(good, columns(0.0), 1)
        finally:
            await batcher.stop()

    probability, _ = _run(scenario())
    assert probability.tolist() == [0.5]


class ChokesOnNegatives:
    """A model that raises on any negative x: one request of a batch that fails it."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, frame):
        self.calls += 1
        if (frame["x"] < 0).any():
            raise ValueError("a negative x")
        return pd.DataFrame({"probability": np.full(len(frame), 0.25)})


def test_one_request_that_fails_its_batch_fails_alone():
    model, sink = served(1), Sink()
    model.pyfunc = ChokesOnNegatives()
    requests = [(model, columns(1.0)), (model, columns(-1.0)), (model, columns(2.0, 3.0))]

    async def scenario():
        batcher = MicroBatcher(256, 0.0, ServingMetrics(), sink)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.predict(m, cols, len(cols["x"])) for m, cols in requests), return_exceptions=True
            )
        finally:
            await batcher.stop()

    first, second, third = _run(scenario())
    assert isinstance(second, ValueError) and "a negative x" in str(second)
    assert first[0].tolist() == [0.25] and third[0].tolist() == [0.25, 0.25]
    assert model.pyfunc.calls == 4  # the batch, then each request alone
    assert sorted(sink.batches) == [(1, 1), (1, 2)]  # only what was answered is logged


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def append(self, *args) -> None:
        self.calls += 1
        raise RuntimeError("the log broke")


def test_a_failure_after_the_answers_neither_fails_nor_scores_them_again():
    model, sink = served(1), BrokenSink()
    requests = [(model, columns(1.0)), (model, columns(2.0))]
    answers = _run(_batched(MicroBatcher(256, 0.0, ServingMetrics(), sink), requests))
    assert [len(probability) for probability, _ in answers] == [1, 1]
    assert model.pyfunc.calls == 1 and sink.calls == 1  # not scored, nor logged, a second time


def test_requests_still_queued_at_shutdown_are_answered_503():
    from pipelines.model.signature import RequestError

    async def scenario():
        batcher = MicroBatcher(256, 0.0, ServingMetrics())  # never started: nothing takes the queue
        waiting = asyncio.ensure_future(batcher.predict(served(1), columns(1.0), 1))
        await asyncio.sleep(0)
        await batcher.stop()
        return await asyncio.gather(waiting, return_exceptions=True)

    (refused,) = _run(scenario())
    assert isinstance(refused, RequestError) and refused.status == 503 and "shutting down" in refused.message


def test_a_request_whose_body_was_still_arriving_at_shutdown_is_answered_503():
    """A request took its batcher before reading its body; the batcher stopped while the body came (the server
    shutting down), then the request queued on it and waited for good: nothing scores a stopped batcher's queue."""
    from pipelines.model.signature import RequestError

    async def scenario():
        batcher = MicroBatcher(256, 0.0, ServingMetrics())
        batcher.start()
        await batcher.stop()
        return await asyncio.gather(
            asyncio.wait_for(batcher.predict(served(1), columns(1.0), 1), 5), return_exceptions=True
        )

    (refused,) = _run(scenario())
    assert isinstance(refused, RequestError) and refused.status == 503 and "shutting down" in refused.message


def test_an_arrival_is_counted_until_it_is_queued_or_ends():
    batcher = MicroBatcher(256, 0.001, ServingMetrics())
    with batcher.arrival() as first:
        with batcher.arrival():
            assert batcher.arriving == 2
        assert batcher.arriving == 1  # the second ended (an error) without being queued
        first.queued()
        assert batcher.arriving == 0
        first.queued()  # counted once, however often it is said
    assert batcher.arriving == 0


def test_a_model_that_raises_stop_iteration_on_the_model_thread_fails_its_request_only():
    """Asyncio cannot set a StopIteration on a future: the batch scored on the model thread never got its
    answer, and every later request waited behind it (while /ready said 200)."""
    from pipelines.serving.batcher import INLINE_ROWS

    class Exhausted:
        def predict(self, frame):
            return pd.DataFrame({"probability": [next(iter(()))] * len(frame)})

    stuck, good = served(1), served(2)
    stuck.pyfunc = Exhausted()
    big = {"x": np.zeros(INLINE_ROWS + 1)}

    async def scenario():
        batcher = MicroBatcher(10_000, 0.0, ServingMetrics())
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="the model raised StopIteration"):
                await batcher.predict(stuck, big, INLINE_ROWS + 1)
            return await batcher.predict(good, columns(0.0), 1)
        finally:
            await batcher.stop()

    probability, _ = _run(scenario())
    assert probability.tolist() == [0.5]


def test_a_model_that_answers_another_number_of_rows_fails_its_request_not_its_neighbours():
    """A user's pyfunc that scores only complete rows (``dropna``) passed its warm-up on neutral rows; in a
    micro-batch, its short answer shifted one client's predictions onto another's request."""
    from pipelines.model.runtime import ModelOutputError, ServedModel
    from pipelines.model.signature import Field, InputSchema

    class DropsNulls:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            kept = frame.dropna()
            return pd.DataFrame({"probability": 1 / (1 + np.exp(-kept["x"].to_numpy()))})

    schema = InputSchema([Field("x", "number", True), Field("y", "number", False)])
    model = ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=schema, pyfunc=DropsNulls())
    model.warm_up(8)

    async def scenario():
        batcher = MicroBatcher(256, 0.001, ServingMetrics())
        batcher.start()
        a = schema.parse_request({"rows": [{"x": 5.0, "y": None}, {"x": 5.0, "y": 1.0}]}, 100)
        b = schema.parse_request({"rows": [{"x": -5.0, "y": 1.0}]}, 100)
        answers = await asyncio.gather(
            batcher.predict(model, a.columns, a.rows),
            batcher.predict(model, b.columns, b.rows),
            return_exceptions=True,
        )
        await batcher.stop()
        return answers

    a, b = asyncio.run(scenario())
    assert isinstance(a, ModelOutputError) and "gave 1 probabilities and 1 labels for 2 rows" in str(a)
    assert not isinstance(b, BaseException) and len(b[0]) == 1 and b[0][0] < 0.5  # its own answer


def test_a_model_of_its_own_kind_is_scored_off_the_event_loop_however_small_its_batch():
    """A pyfunc runs code that may take any time: scored on the loop, one slow call stalled /health, /ready,
    /metrics and the parsing of every other request."""
    import threading

    class Recording:
        def __init__(self) -> None:
            self.threads: list[str] = []

        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            self.threads.append(threading.current_thread().name)
            return pd.DataFrame({"probability": np.full(len(frame), 0.25)})

    model = served(1)
    model.pyfunc = recording = Recording()
    assert not model.scores_inline
    answers = _run(_batched(MicroBatcher(256, 0.0, ServingMetrics()), [(model, columns(1.0))]))
    assert answers[0][0].tolist() == [0.25]
    assert recording.threads and all(name.startswith("ct-model") for name in recording.threads), (
        recording.threads
    )


def test_a_scored_batch_is_not_kept_so_a_model_swapped_out_is_freed_before_the_next_request():
    import gc
    import weakref

    async def scenario():
        batcher = MicroBatcher(256, 0.0, ServingMetrics())
        batcher.start()
        try:
            old = served(1)
            await batcher.predict(old, columns(1.0), 1)
            gone = weakref.ref(old)
            del old  # swapped out: the holder no longer has it
            await asyncio.sleep(0)  # the batcher's loop goes back to waiting for the next request
            gc.collect()
            return gone() is None
        finally:
            await batcher.stop()

    assert _run(scenario())
