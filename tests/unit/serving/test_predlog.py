"""The prediction log: served rows land in Parquet by day; a failing sink keeps, then drops and counts them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.model.signature import RowKeys
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.predlog import PredictionLog, held_bytes


def _log(
    uri: str, metrics: ServingMetrics, max_buffer_rows: int = 1000, max_buffer_bytes: int = 2**30
) -> PredictionLog:
    return PredictionLog(
        uri,
        "ct-test",
        metrics,
        flush_rows=10_000,
        flush_seconds=60,
        max_buffer_rows=max_buffer_rows,
        max_buffer_bytes=max_buffer_bytes,
    )


KINDS = {"x": "number", "plan": "string"}


def _batch(n: int, start: float = 0.0, request: str = "r"):
    """``append``'s arguments after the version: one request of ``n`` rows."""
    x = np.arange(start, start + n, dtype="float64")
    columns = {"x": x, "plan": np.array(["basic"] * n, dtype=object)}
    return [columns], x / 100, (x > 1).astype("int64"), [(request, n, None)], KINDS


def test_served_rows_are_written_by_day_with_their_model_and_prediction(tmp_path):
    metrics = ServingMetrics()
    sink = _log(str(tmp_path / "predictions"), metrics)
    sink.append(3, *_batch(2))
    sink.append(4, *_batch(3, start=10))
    sink.flush()
    days = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert len(days) == 1 and days[0].startswith("ds=")
    table = pads.dataset(str(tmp_path / "predictions"), format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas().sort_values("x")
    assert frame["model_version"].tolist() == [3, 3, 4, 4, 4]
    assert frame["x"].tolist() == [0.0, 1.0, 10.0, 11.0, 12.0] and set(frame["plan"]) == {"basic"}
    assert frame["probability"].tolist() == [0.0, 0.01, 0.1, 0.11, 0.12]
    assert set(frame["model_name"]) == {"ct-test"} and str(frame["served_at"].dtype) == "datetime64[us, UTC]"
    assert frame["request_id"].tolist() == ["r"] * 5
    assert frame["entity_id"].isna().all() and frame["event_time"].isna().all()  # sent none: unjoinable
    assert metrics.log_rows._value.get() == 5 and sink.files_written == 2  # a file per model version
    assert not list((tmp_path / "predictions").rglob(".*.tmp"))  # written under a temporary name, renamed


def test_a_failing_sink_keeps_the_rows_for_the_next_flush(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log's folder should be")
    metrics = ServingMetrics()
    sink = _log(str(blocker / "predictions"), metrics)
    sink.append(1, *_batch(4))
    sink.flush()
    assert metrics.log_failures._value.get() == 1 and sink.last_error and metrics.log_rows._value.get() == 0
    blocker.unlink()
    sink.flush()
    assert metrics.log_rows._value.get() == 4 and sink.last_error is None


def test_past_the_buffer_bound_rows_are_dropped_and_counted(tmp_path):
    metrics = ServingMetrics()
    sink = _log(str(tmp_path / "p"), metrics, max_buffer_rows=5)
    sink.append(1, *_batch(3))
    sink.append(1, *_batch(3))  # would make 6: dropped whole
    sink.append(1, *_batch(2))
    assert metrics.log_dropped._value.get() == 3 and metrics.log_buffered._value.get() == 5


def test_past_the_buffer_bound_in_bytes_rows_are_dropped_and_what_was_written_frees_its_bytes(tmp_path):
    """A failing sink and long strings (entity ids, free text: as long as a request body allows) filled memory
    long before the row bound: 200,000 rows of 4 MB ids are 800 GB. The buffer is bounded in bytes too."""
    metrics = ServingMetrics()
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log's folder should be")
    sink = _log(str(blocker / "p"), metrics, max_buffer_rows=1000, max_buffer_bytes=3 * 2**20)
    long_id = "e" * 2**20  # one MiB
    for n in range(4):
        cols, probability, label, _, kinds = _batch(1, start=n)
        keys = RowKeys(np.array([long_id], dtype=object), np.array(["NaT"], dtype="datetime64[us]"))
        sink.append(1, cols, probability, label, [(f"r{n}", 1, keys)], kinds)
    assert metrics.log_dropped._value.get() == 2 and metrics.log_buffered._value.get() == 2  # 2 MiB and more
    assert 2 * 2**20 < sink._pending_bytes < 3 * 2**20
    sink.flush()  # the sink fails: nothing is freed
    assert sink._pending_bytes > 2 * 2**20
    blocker.unlink()
    assert sink.flush() and sink._pending_bytes == 0 and metrics.log_rows._value.get() == 2
    sink.append(1, *_batch(3))  # room again
    assert metrics.log_buffered._value.get() == 3


def _rows_on_disk(root) -> int:
    return sum(pq.read_metadata(path).num_rows for path in root.rglob("part-*.parquet"))


def _pending(sink: PredictionLog, when: dt.datetime, version: int, columns: dict, n: int) -> None:
    """A scored batch of numbers buffered as if served at ``when`` (``append`` takes the time of the call)."""
    kinds = dict.fromkeys(columns, "number")
    sink._pending.append(
        (when, version, [columns], np.full(n, 0.5), np.zeros(n, "int64"), [("r", n, None)], kinds)
    )
    sink._pending_rows += n
    sink._pending_bytes += held_bytes(sink._pending[-1])


def test_a_flush_across_midnight_whose_second_day_fails_writes_no_row_twice(tmp_path):
    root = tmp_path / "p"
    sink = _log(str(root), ServingMetrics())
    before, after = (
        dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    _pending(sink, before, 1, {"x": np.arange(3.0)}, 3)
    _pending(sink, after, 1, {"x": np.arange(2.0)}, 2)
    root.mkdir()
    (root / "ds=2026-12-01").write_text("a file where the second day's folder should be")
    sink.flush()
    assert _rows_on_disk(root) == 3 and sink._pending_rows == 2 and sink.last_error
    (root / "ds=2026-12-01").unlink()
    sink.flush()
    assert _rows_on_disk(root) == 5 and sink._pending_rows == 0 and sink.metrics.log_rows._value.get() == 5


def test_versions_with_other_inputs_in_one_flush_keep_every_column(tmp_path):
    root = tmp_path / "p"
    sink = _log(str(root), ServingMetrics())
    when = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    _pending(sink, when, 1, {"x": np.ones(2), "old": np.ones(2)}, 2)
    _pending(sink, when, 2, {"x": np.ones(3), "new": np.ones(3)}, 3)
    sink.flush()
    files = {}
    for path in root.rglob("part-*.parquet"):
        table = pq.read_table(path)
        files[table["model_version"][0].as_py()] = (
            table.num_rows,
            set(table.column_names) & {"x", "old", "new"},
        )
    assert files == {1: (2, {"x", "old"}), 2: (3, {"x", "new"})}


def test_a_batch_arrow_cannot_convert_is_dropped_and_counted_and_the_rest_written(tmp_path):
    root = tmp_path / "p"
    sink = _log(str(root), ServingMetrics())
    when = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    _pending(sink, when, 1, {"x": np.array(["a", 1.5], dtype=object)}, 2)  # text and a number in one column
    _pending(sink, when, 2, {"x": np.ones(3)}, 3)
    sink.flush()
    assert _rows_on_disk(root) == 3 and sink._pending_rows == 0
    assert sink.metrics.log_dropped._value.get() == 2 and sink.metrics.log_rows._value.get() == 3
    sink.append(
        2, [{"x": np.ones(4)}], np.full(4, 0.5), np.zeros(4, "int64"), [("r", 4, None)], {"x": "number"}
    )
    sink.flush()
    assert _rows_on_disk(root) == 7  # nothing stuck in the buffer


def test_rows_the_sink_refuses_at_shutdown_are_counted_as_dropped(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log's folder should be")
    metrics = ServingMetrics()
    sink = _log(str(blocker / "predictions"), metrics)
    sink.start()
    sink.append(1, *_batch(7))
    sink.stop()
    assert not sink._thread.is_alive() and metrics.log_failures._value.get() >= 3  # tried again
    assert metrics.log_dropped._value.get() == 7 and metrics.log_buffered._value.get() == 0


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    root = tmp_path / "p"
    sink = _log(str(root), ServingMetrics())
    sink.append(1, *_batch(2))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    sink.flush()
    assert sink._pending_rows == 2 and "No space left" in sink.last_error
    assert not [path for path in root.rglob("*") if path.is_file()]


def test_stop_writes_what_is_buffered(tmp_path):
    metrics = ServingMetrics()
    sink = _log(str(tmp_path / "p"), metrics)
    sink.start()
    sink.append(1, *_batch(2))
    sink.stop()
    assert metrics.log_rows._value.get() == 2


def test_an_unforeseen_sink_failure_is_counted_and_the_writer_keeps_going():
    import time

    metrics = ServingMetrics()
    sink = PredictionLog("nosuchprotocol://bucket/p", "ct-test", metrics, 1, 0.05, 1000, 2**30)
    sink.start()
    sink.append(1, *_batch(2))
    deadline = time.monotonic() + 30
    while metrics.log_failures._value.get() < 2 and time.monotonic() < deadline:  # it keeps retrying
        time.sleep(0.02)
    assert metrics.log_failures._value.get() >= 2 and sink._thread.is_alive()
    assert "nosuchprotocol" in sink.last_error and metrics.log_buffered._value.get() == 2
    sink.stop()


def test_each_row_carries_its_request_id_and_the_join_keys_its_request_sent(tmp_path):
    metrics = ServingMetrics()
    sink = _log(str(tmp_path / "predictions"), metrics)
    parts, probability, label, _, kinds = _batch(3)
    keys = RowKeys(
        np.array(["c1", None], dtype=object),
        np.array(["2026-11-30T10:00:00", "NaT"], dtype="datetime64[us]"),
    )
    sink.append(2, parts, probability, label, [("first", 1, None), ("second", 2, keys)], kinds)
    sink.flush()
    frame = pads.dataset(str(tmp_path / "predictions"), partitioning="hive").to_table().to_pandas()
    frame = frame.sort_values("x")
    assert frame["request_id"].tolist() == ["first", "second", "second"]
    assert frame["entity_id"].tolist()[1] == "c1" and frame["entity_id"].isna().tolist() == [
        True,
        False,
        True,
    ]
    assert str(frame["event_time"].dtype) == "datetime64[us, UTC]"
    assert frame["event_time"].iloc[1] == pd.Timestamp("2026-11-30T10:00:00Z")
    assert frame["event_time"].isna().tolist() == [True, False, True]


def test_a_failing_sink_is_tried_again_after_the_flush_interval_not_at_every_request(tmp_path):
    """While the sink failed, the buffer stayed past flush_rows, every request asked for a flush, and the
    writer tried at once: hundreds of writes a second to a full disk or a throttling store."""
    import time

    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log's folder should be")
    metrics = ServingMetrics()
    sink = PredictionLog(
        str(blocker / "p"),
        "ct-test",
        metrics,
        flush_rows=1,
        flush_seconds=3600,
        max_buffer_rows=10**6,
        max_buffer_bytes=2**30,
    )
    sink.start()
    sink.append(1, *_batch(2))
    deadline = time.monotonic() + 30
    while metrics.log_failures._value.get() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    for n in range(50):  # each asks for a flush, as a request does
        sink.append(1, *_batch(2, start=10 * n))
        time.sleep(0.02)
    assert metrics.log_failures._value.get() == 1  # the next try waits for flush_seconds
    blocker.unlink()
    sink.stop()  # wakes the writer: the sink works again, and every row is written once
    assert metrics.log_rows._value.get() == 102 and metrics.log_dropped._value.get() == 0


class ClientError(Exception):
    """An object store client's own error, not an OSError (botocore's ClientError, as s3fs may let through)."""


@pytest.mark.parametrize("error", [OSError, ClientError])
def test_a_part_copied_into_place_whose_temporary_copy_was_not_removed_is_not_written_again(
    monkeypatch, error
):
    """An object store moves a file by a copy, then a removal: when the removal failed, the part was in place,
    and the rows it holds, kept for the next flush, were in the log twice (with an error other than OSError,
    the flush raised and the temporary copy stayed)."""
    import uuid

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    fails = {"left": 1}
    remove = MemoryFileSystem.rm

    def throttled(self, path, *args, **kwargs):
        if str(path).endswith(".tmp") and fails["left"]:
            fails["left"] -= 1
            raise error("503 SlowDown on DELETE")
        return remove(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "rm", throttled)
    root = f"memory://predlog-{uuid.uuid4().hex[:8]}"
    metrics = ServingMetrics()
    sink = _log(root, metrics)
    sink.append(1, *_batch(5))
    sink.flush()
    sink.flush()
    fs = fsspec.filesystem("memory")
    parts = [p for p in fs.find(root.removeprefix("memory:/")) if p.endswith(".parquet")]
    assert len(parts) == 1 and metrics.log_rows._value.get() == 5 and sink._pending_rows == 0
    assert sum(pq.read_table(fs.open(p, "rb")).num_rows for p in parts) == 5
    assert not [p for p in fs.find(root.removeprefix("memory:/")) if p.endswith(".tmp")]


def test_an_input_named_as_a_log_column_is_kept_apart_and_a_contract_refuses_such_a_feature(
    tmp_path, contract
):
    import pytest

    from pipelines.data.contract import LOG_OWN_COLUMNS, Contract
    from pipelines.serving.predlog import LOG_COLUMNS

    assert set(LOG_COLUMNS) == set(LOG_OWN_COLUMNS)
    sink = _log(str(tmp_path / "p"), ServingMetrics())
    x = np.array([3.5, 4.5])
    sink.append(
        1,
        [{"served_at": x, "probability": x + 1}],
        np.array([0.2, 0.9]),
        np.array([0, 1]),
        [("r", 2, None)],
        {"served_at": "number", "probability": "number"},
    )
    sink.flush()
    frame = pads.dataset(str(tmp_path / "p"), format="parquet", partitioning="hive").to_table().to_pandas()
    assert frame["input_served_at"].tolist() == [3.5, 4.5] and frame["input_probability"].tolist() == [
        4.5,
        5.5,
    ]
    assert (
        frame["probability"].tolist() == [0.2, 0.9] and str(frame["served_at"].dtype) == "datetime64[us, UTC]"
    )
    columns = {**contract.model_dump()["columns"], "probability": {"type": "float", "role": "feature"}}
    with pytest.raises(
        ValueError, match="feature\\(s\\) 'probability' have the name of a column the prediction log"
    ):
        Contract.model_validate({**contract.model_dump(), "columns": columns})


def test_each_input_is_written_with_its_signatures_type_whatever_a_flushs_traffic_held(tmp_path):
    """An integer input with a null in one request was written as double (its values beyond 2^53 rounded,
    those of the other requests of its batch too), an optional string no request sent as Arrow's null type:
    the parts of one model version had as many schemas as the traffic had shapes."""
    from pipelines.model.signature import Field, InputSchema

    schema = InputSchema(
        [
            Field("n", "integer", False),
            Field("x", "number", True),
            Field("s", "string", False),
            Field("b", "boolean", False),
        ]
    )
    big = 2**60 + 1  # no double holds it
    exact = schema.parse_request({"rows": [{"n": big, "x": 1.0}]}, 10)
    with_null = schema.parse_request({"rows": [{"n": None, "x": 2.0}, {"n": 3, "x": 0.5, "b": True}]}, 10)
    assert with_null.columns["n"].dtype == "float64"  # what the model is given: a null as NaN
    root = tmp_path / "p"
    sink = _log(str(root), ServingMetrics())
    requests = [("a", 1, None), ("b", 2, None)]
    sink.append(
        1, [exact.columns, with_null.columns], np.full(3, 0.5), np.zeros(3, "int64"), requests, schema.kinds
    )
    sink.flush()
    plain = schema.parse_request({"rows": [{"n": 7, "x": 1.0, "s": "web", "b": False}]}, 10)
    sink.append(1, [plain.columns], np.full(1, 0.5), np.zeros(1, "int64"), [("c", 1, None)], schema.kinds)
    sink.flush()
    tables = [pq.read_table(path) for path in sorted(root.rglob("part-*.parquet"))]
    assert len(tables) == 2 and tables[0].schema == tables[1].schema
    types = {name: str(tables[0].schema.field(name).type) for name in ("n", "x", "s", "b")}
    assert types == {"n": "int64", "x": "double", "s": "string", "b": "bool"}
    assert tables[0]["n"].to_pylist() == [big, None, 3] and tables[1]["n"].to_pylist() == [7]
    assert tables[0]["s"].to_pylist() == [None] * 3 and tables[0]["b"].to_pylist() == [None, None, True]


def test_an_integer_the_model_was_given_as_a_double_beyond_int64_is_logged_as_int64s_largest(tmp_path):
    from pipelines.model.signature import INT64_MAX, Field, InputSchema

    schema = InputSchema([Field("n", "integer", False)])
    parsed = schema.parse_request({"rows": [{"n": INT64_MAX}, {"n": None}, {"n": -(2**63)}]}, 10)
    sink = _log(str(tmp_path / "p"), ServingMetrics())
    sink.append(1, [parsed.columns], np.full(3, 0.5), np.zeros(3, "int64"), [("r", 3, None)], schema.kinds)
    sink.flush()
    (path,) = (tmp_path / "p").rglob("part-*.parquet")
    assert pq.read_table(path)["n"].to_pylist() == [INT64_MAX, None, -(2**63)]


def test_a_request_whose_columns_are_not_its_versions_signature_is_refused_by_name(tmp_path):
    sink = _log(str(tmp_path / "p"), ServingMetrics())
    with pytest.raises(
        ValueError, match=r"columns \['x'\] are not its model version's signature's \['plan', 'x'\]"
    ):
        sink.append(1, [{"x": np.ones(2)}], np.full(2, 0.5), np.zeros(2, "int64"), [("r", 2, None)], KINDS)
    assert sink._pending_rows == 0
