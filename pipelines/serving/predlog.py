"""The prediction log: every served row, its prediction, the model version and the time, as Parquet.

Each row also carries its request's id and, when the client sent them, the contract's entity id and event
time (``entity_id``, ``event_time``; null otherwise): what the monitor joins the labels that arrive later on.

Each input column is written with its model signature's type, whatever the traffic of a flush held: an
``integer`` as int64 (a null as null, not the whole column as a double), a ``number`` as double, a ``string``
as string (null when no request of the flush sent it), a ``boolean`` as bool; so every part of one model
version has one schema. The values are the ones the model was given: an integer request column holding a
null is given to the model as doubles, so its values beyond 2^53 in magnitude are logged as the nearest
double's int64.

Batches are handed over in memory (a deque append) after they are scored; a writer thread turns them
into a Parquet file per flush, UTC day and model version under ``<uri>/ds=<UTC day>/``, written under a
temporary name, flushed to the disk when it is local, and renamed, so a reader never sees half a file; each
file's rows leave the buffer once it is in place, so a retry never writes a row twice. A failing sink (full
disk, lost bucket) is counted and retried on the next flush; while it fails, rows are held up to a bound and
then dropped and counted. Rows are also dropped, counted and logged as errors when Arrow cannot make a table
of them (they would block the buffer for good) and when the sink still refuses them at shutdown after three
tries.
A request never waits on, or fails because of, the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.data import storage
from pipelines.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from pipelines.model.signature import RowKeys

log = logging.getLogger(__name__)

# Columns the log adds beside the model's inputs, each with its Arrow type.
LOG_COLUMNS: dict[str, pa.DataType] = {
    "served_at": pa.timestamp("us", tz="UTC"),
    "model_name": pa.string(),
    "model_version": pa.int64(),
    "request_id": pa.string(),
    "entity_id": pa.string(),
    "event_time": pa.timestamp("us", tz="UTC"),
    "probability": pa.float64(),
    "label": pa.int64(),
}
Requests = list[tuple[str, int, "RowKeys | None"]]  # each request of a batch: its id, rows and join keys
# The signature's JSON kinds (``InputSchema.kinds``) to the Arrow type an input column is written as.
KIND_TYPES: dict[str, pa.DataType] = {
    "number": pa.float64(),
    "integer": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}
_INT64_END = 2.0**63  # the first double above int64's largest value (2^63 - 1 is not a double)

# A sink that fails to take a file (a full disk, a lost bucket, a folder that is not writable): fsspec's
# file systems raise OSError (FileNotFoundError, PermissionError ...), pyarrow its ArrowException.
SINK_ERRORS: tuple[type[BaseException], ...] = (OSError, pa.ArrowException)
STOP_TRIES = 3  # flushes at shutdown, 1 s and 2 s apart, before the rows still buffered are dropped


def held_bytes(batch: tuple[Any, ...]) -> int:
    """About what a buffered batch holds in memory: its arrays' bytes and its strings' characters."""
    _, _, parts, probability, label, requests, _ = batch
    arrays = [probability, label, *(values for part in parts for values in part.values())]
    strings = [values for values in arrays if values.dtype == object]
    total = sum(values.nbytes for values in arrays)
    for request_id, _, keys in requests:
        total += len(request_id)
        if keys is not None:
            total += keys.entity_id.nbytes + keys.event_time.nbytes
            strings.append(keys.entity_id)
    for values in strings:
        total += sum(len(value) for value in values.tolist() if isinstance(value, str))
    return total


class PredictionLog:
    def __init__(
        self,
        uri: str,
        model_name: str,
        metrics: ServingMetrics,
        flush_rows: int,
        flush_seconds: float,
        max_buffer_rows: int,
        max_buffer_bytes: int,
    ):
        self.uri = uri.rstrip("/")
        self.model_name = model_name
        self.metrics = metrics
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer_rows = max_buffer_rows
        self.max_buffer_bytes = max_buffer_bytes
        self.files_written = 0
        self.last_error: str | None = None
        self._pending: deque[
            tuple[
                dt.datetime,
                int,
                list[dict[str, np.ndarray]],
                np.ndarray,
                np.ndarray,
                Requests,
                Mapping[str, str],
            ]
        ] = deque()
        self._pending_rows = 0
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._flush_now = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ct-prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is buffered (retried for up to :data:`STOP_TRIES` flushes), then stop. Rows the sink still
        refuses are counted as dropped and logged as an error: the process is about to lose them."""
        self._stop.set()
        self._flush_now.set()
        self._thread.join(timeout=60)
        if self._thread.is_alive():  # a write slower than the wait: its rows are lost with the process
            log.error(
                "prediction log: still writing to %s after 60 s at shutdown; %d buffered rows may be lost",
                self.uri,
                self._pending_rows,
            )

    def append(
        self,
        version: int,
        parts: list[dict[str, np.ndarray]],
        probability: np.ndarray,
        label: np.ndarray,
        requests: Requests,
        kinds: Mapping[str, str],
    ) -> None:
        """Buffer a scored batch: ``parts`` are its requests' input columns and ``requests`` its requests
        (id, rows, join keys), both in row order; ``kinds`` is the model version's signature (each input's JSON
        kind, as :attr:`InputSchema.kinds`), which sets the type each input column is written with."""
        rows = len(probability)
        for part in parts:  # a caller's bug (a request parsed with another signature): the batcher logs it
            if part.keys() != kinds.keys():
                raise ValueError(
                    f"prediction log: a request's input columns {sorted(part)} are not its model version's "
                    f"signature's {sorted(kinds)}"
                )
        batch = (dt.datetime.now(dt.UTC), version, parts, probability, label, requests, kinds)
        size = held_bytes(batch)
        with self._lock:
            # Bounded in rows and in bytes: a row's strings (an entity id, a free text field) are as long as
            # a request body allows, and 200,000 rows of 4 MB ids held while the sink fails are 800 GB.
            if (
                self._pending_rows + rows > self.max_buffer_rows
                or self._pending_bytes + size > self.max_buffer_bytes
            ):
                self.metrics.log_dropped.inc(rows)
                return
            self._pending.append(batch)
            self._pending_rows += rows
            self._pending_bytes += size
            self.metrics.log_buffered.set(self._pending_rows)
        if self._pending_rows >= self.flush_rows:
            self._flush_now.set()

    def flush(self) -> bool:
        """Write everything buffered now (the writer thread does this on its own); False when the sink failed.

        A file per UTC day and model version, each taken off the buffer once it is in place: a retry after a
        failure writes only what was not written (never a row twice). A failing sink keeps the rest for the
        next flush; a batch Arrow cannot make a table of is dropped, counted and logged, not retried forever.
        """
        with self._lock:
            batches = list(self._pending)
        if not batches:
            return True
        groups: dict[tuple[str, int], list[Any]] = {}
        for batch in batches:
            groups.setdefault((batch[0].date().isoformat(), batch[1]), []).append(batch)
        for (day, version), group in groups.items():
            try:
                table = self._table(group)
            except (pa.ArrowException, ValueError, TypeError) as exc:  # Arrow or numpy cannot convert them
                self._take(group, written=False)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "prediction log: %d rows of model version %d could not be made a table (%s); dropped",
                    sum(len(batch[3]) for batch in group),
                    version,
                    exc,
                    exc_info=exc,  # its trace: a numpy error here may be this code's
                )
                continue
            try:
                self._write(day, table)
            except SINK_ERRORS as exc:  # keep the rows; the next flush tries again
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.log_failures.inc()
                log.warning(
                    "prediction log write to %s failed (%s); rows kept for the next try", self.uri, exc
                )
                return False
            self._take(group, written=True)
            self.last_error = None
        return True

    def _take(self, group: list[Any], written: bool) -> None:
        """Take ``group``'s batches off the buffer (by identity: batches that came in meanwhile stay)."""
        taken = {id(batch) for batch in group}
        rows = sum(len(batch[3]) for batch in group)
        size = sum(held_bytes(batch) for batch in group)
        with self._lock:
            self._pending = deque(batch for batch in self._pending if id(batch) not in taken)
            self._pending_rows -= rows
            self._pending_bytes -= size
            self.metrics.log_buffered.set(self._pending_rows)
        (self.metrics.log_rows if written else self.metrics.log_dropped).inc(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._flush_now.wait(self.flush_seconds)
            self._flush_now.clear()
            if not self._flush_logged():
                # A failing sink is tried again after flush_seconds, however full the buffer: the rows that
                # keep it full asked for a flush with every request, and a full disk or a throttling store was
                # written to (a partial file each time, a warning each time) hundreds of times a second.
                self._stop.wait(self.flush_seconds)
        for attempt in range(STOP_TRIES):
            self._flush_logged()
            if not self._pending_rows:
                return
            if attempt + 1 < STOP_TRIES:
                time.sleep(2.0**attempt)
        with self._lock:
            lost, self._pending, self._pending_rows, self._pending_bytes = self._pending_rows, deque(), 0, 0
            self.metrics.log_buffered.set(0)
        self.metrics.log_dropped.inc(lost)
        log.error(
            "prediction log: %d rows not written to %s at shutdown (%s); dropped",
            lost,
            self.uri,
            self.last_error,
        )

    def _flush_logged(self) -> bool:
        try:
            return self.flush()
        except Exception as exc:  # noqa: BLE001 - the writer thread's boundary: an unforeseen failure is
            # logged with its trace and counted, the rows stay buffered, and the thread keeps writing
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.log_failures.inc()
            log.exception("prediction log write to %s failed unexpectedly; rows kept", self.uri)
            return False

    def _write(self, day: str, table: pa.Table) -> None:
        """``table`` as a new file of the day's folder: written under a temporary name (removed if the write
        fails), then renamed."""
        fs, root = url_to_fs(f"{self.uri}/ds={day}")
        fs.makedirs(root, exist_ok=True)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp, final = f"{root}/.{name}.tmp", f"{root}/{name}"
        try:
            with fs.open(tmp, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                storage.on_disk(fs, handle)  # a part cut short by a power loss would stop the monitor's reads
            fs.mv(tmp, final)
        # Any failure, a client library's own error type too: re-raised unless the part is in place.
        except Exception as exc:
            placed = False
            with contextlib.suppress(*SINK_ERRORS):
                # An object store moves by a copy, then a removal: a removal that failed after the copy left
                # the part in place, whole, and its rows written again by the next flush were in the log twice.
                placed = fs.exists(final)
            with contextlib.suppress(*SINK_ERRORS):  # a full disk must not keep the half-written file
                if fs.exists(tmp):
                    fs.rm(tmp)
            if not placed:
                raise
            log.warning(
                "prediction log: %s is in place, but its temporary copy was not removed: %s", final, exc
            )
        self.files_written += 1

    def _table(self, batches: list[Any]) -> pa.Table:
        served_at = np.concatenate(
            [np.full(len(b[3]), np.datetime64(b[0].replace(tzinfo=None), "us")) for b in batches]
        )
        data: dict[str, Any] = {
            "served_at": pa.array(served_at, type=LOG_COLUMNS["served_at"]),
            "model_name": pa.array([self.model_name] * len(served_at), type=pa.string()),
            "model_version": np.concatenate([np.full(len(b[3]), b[1], dtype="int64") for b in batches]),
        }
        kinds = batches[0][6]  # one model version per table: one signature
        parts = [part for b in batches for part in b[2]]
        for name, kind in kinds.items():
            # An input named as one of the log's own columns (a model of MLflow's own kind: a contract
            # refuses such a feature) kept apart: one of the two was lost, whichever was written last.
            data[f"input_{name}" if name in LOG_COLUMNS else name] = _column(
                [part[name] for part in parts], kind
            )
        requests = [request for b in batches for request in b[5]]
        per_row = np.repeat(np.arange(len(requests), dtype="int32"), [request[1] for request in requests])
        ids = pa.array([request[0] for request in requests], type=pa.string())
        # Each request's id once, repeated in Arrow's C++ (not a Python string per row).
        data["request_id"] = pa.DictionaryArray.from_arrays(pa.array(per_row), ids).cast(pa.string())
        data["entity_id"], data["event_time"] = _keys(requests, len(served_at))
        data["probability"] = np.concatenate([b[3] for b in batches])
        data["label"] = np.concatenate([b[4] for b in batches])
        return pa.table(data)


def _keys(requests: Requests, rows: int) -> tuple[pa.Array, pa.Array]:
    """The entity id and event time of every row (null where a request sent none)."""
    if all(keys is None for _, _, keys in requests):  # the common case: no per-row work at all
        return pa.nulls(rows, pa.string()), pa.nulls(rows, LOG_COLUMNS["event_time"])
    entities, times = [], []
    for _, rows, keys in requests:
        if keys is None:
            entities.append(np.full(rows, None, dtype=object))
            times.append(np.full(rows, np.datetime64("NaT"), dtype="datetime64[us]"))
        else:
            entities.append(keys.entity_id)
            times.append(keys.event_time)
    entity = pa.array(np.concatenate(entities), type=pa.string(), from_pandas=True)
    when = pa.array(np.concatenate(times), type=pa.timestamp("us"), from_pandas=True).cast(
        LOG_COLUMNS["event_time"]
    )
    return entity, when


def _column(parts: list[np.ndarray], kind: str) -> pa.Array:
    """The requests' values of one input as the Arrow type of its signature's ``kind``: one Arrow array made
    of the concatenation (a flush of 5,000 one-row requests is 5,000 parts)."""
    if kind == "integer":
        if all(part.dtype.kind in "iu" for part in parts):  # no request held a null: exact int64 already
            return pa.array(np.concatenate(parts), type=pa.int64())
        # A request holding a null is doubles, the others exact int64: concatenated together they were all
        # rounded to doubles. Each kind is concatenated apart and put back in the rows' order.
        doubles = np.array([part.dtype.kind == "f" for part in parts])
        from_doubles = np.repeat(doubles, [len(part) for part in parts])
        ints = np.empty(len(from_doubles), dtype="int64")
        if not doubles.all():
            ints[~from_doubles] = np.concatenate([p for p, d in zip(parts, doubles, strict=True) if not d])
        converted, null = _integers(np.concatenate([p for p, d in zip(parts, doubles, strict=True) if d]))
        ints[from_doubles] = converted
        mask = np.zeros(len(ints), dtype=bool)
        mask[from_doubles] = null
        return pa.array(ints, mask=mask, type=pa.int64())
    if any(part.dtype == object for part in parts):  # strings; booleans with a null
        values = np.concatenate([part.astype(object) for part in parts])
    else:
        values = np.concatenate(parts)
    return pa.array(values, type=KIND_TYPES[kind], from_pandas=True)


def _integers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Doubles of an integer input (its request held a null) as int64, and where they are null (NaN)."""
    null = np.isnan(values)
    beyond = values >= _INT64_END  # the double nearest to int64's largest value: written as that value
    ints = np.where(null | beyond, 0.0, values).astype("int64")
    ints[beyond] = np.iinfo("int64").max
    return ints, null
