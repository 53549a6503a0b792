"""The prediction log's files: the ones a reader takes, and the compaction of the app's small files by hour.

The app writes a file per flush, ``part-<ns>-<hex>.parquet`` in ``ds=<day>/`` (:mod:`pipelines.serving.predlog`;
``<ns>``: when the flush began writing it), every 10 s at most: a day of one replica's traffic is 8,640 files,
and each costs a reader about 0.7 ms to open and scan whatever its rows (a day of 1M rows in 8,641 files took
the monitor's pass 7.4 s on Dask, in 5 files 0.4 s; measured 2026-12-02 on 2 cores).

:func:`compact` rewrites the parts of each closed hour (by the time in their names) into one file per hour
and schema, ``compacted-<the hour's last ns>-<hex of the schema>-<hex of this compaction>.parquet``, whose
footer lists the parts it holds; then removes those parts. Every row is kept, with its values and types.

- **Readers** (:func:`log_files`) take every compacted file and every part that no compacted file lists, so a
  part is read once whether compaction ran before or after the listing, or stopped between its write and its
  removals (the next compaction removes them). A reader that listed parts which compaction then removed
  fails on the missing file, loudly, and its retry reads the compacted file: it never counts a row twice.
- **Two compactions at once** (a person's ``pipelines monitor compact`` beside a scheduled run) each write a
  file of their own name. The one whose listing came later holds every part the other holds (parts are only
  removed after a compacted file is in place, and a listing that sees one compacts nothing more of its hour
  and schema), so a reader takes the file whose parts include the other's, and the next compaction removes
  the other. A compaction that finds its parts removed by the other writes nothing.
- **Closed hour**: its end at least :data:`SETTLE` ago. A part's name takes the time its flush began
  writing, and its rename follows within milliseconds (seconds on an object store); the replicas' and the
  monitor's clocks must agree within :data:`SETTLE` (NTP keeps them within milliseconds). A part of an
  hour and schema that shows up after its compaction stays a part and is read as one.
- Pointed at the folder directly, another reader (pandas, Spark, DuckDB) sees each row once, except between
  a compacted file's rename and its parts' removal, and after a compaction that stopped there (or ran beside
  another) until the next one.
- Only the app's part names are compacted: files of other names in the folder are read and left alone.
- **A file that is not readable Parquet** (cut short by a crash of its writer or its disk, overwritten) would
  stop every later pass over its day. :func:`set_aside` moves it out of the day's folder to
  ``_unreadable/ds=<day>/`` under the log (a folder that pandas, Spark and this module's readers skip), beside
  a note of why: its bytes are kept for a person, and the monitor names it in its report. Compaction sets
  aside the parts of the hours it compacts whose footer does not parse or whose data does not decode
  (:func:`data_damage`), and any compacted file whose footer does not parse; the monitor's pass, any other
  file whose footer does not parse or whose data does not decode (the hour it judges is often not closed).
  Only bytes that were read and do not parse count: a storage failure fails the run, and its retry reads the
  file again.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from pipelines.data import datasets, storage
from pipelines.engines.base import (
    UnreadableParquetError,
    batch_runs,
    file_batches,
    parquet_footer,
    parquet_footers,
)

log = logging.getLogger(__name__)

PART = re.compile(r"/part-(\d{19})-[0-9a-f]{8}\.parquet$")
COMPACTED = re.compile(r"/compacted-(\d{19})-([0-9a-f]{8})-[0-9a-f]{8}\.parquet$")
UNREADABLE = "_unreadable"  # under the log: the files set aside, by day
PARTS_KEY = "ct.compacted_parts"  # the compacted file's footer: the names of the parts it holds
SETTLE = dt.timedelta(minutes=2)
HOUR_NS = 3600 * 10**9
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ROW_GROUP_ROWS = 100_000


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def ns_of(moment: dt.datetime) -> int:
    """An aware time in nanoseconds since the epoch, exactly (a float of them is off by up to 256 ns)."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000


def written_ns(uri: str) -> int | None:
    """A log file's time in its name: a part's when its flush began writing, a compacted file's its hour's
    last nanosecond. Every row in it was served at or before that time. None for any other name."""
    found = PART.search(uri) or COMPACTED.search(uri)
    return int(found.group(1)) if found else None


@functools.lru_cache(maxsize=256)
def _compacted_parts(uri: str) -> frozenset[str]:
    """The URIs of the parts a compacted file holds, from its footer. Kept by URI: a compacted file is written
    once, under a name of its own, and never rewritten, so a run that compacts a folder and then lists it to
    read (the monitor) reads each footer once, where an object store makes it a request per file. A run reads
    two or three days' folders (a file per hour and schema); 256 files keep that many runs' worth in a
    long-lived process without holding every part name it ever saw (an hour is up to 360 parts a replica)."""
    metadata = parquet_footer(uri).metadata or {}
    try:
        names = json.loads(metadata[PARTS_KEY.encode()])
    except KeyError:
        raise ValueError(
            f"{uri} is named as a compacted log file but its footer lists no parts ({PARTS_KEY})"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}: its footer's list of parts ({PARTS_KEY}) is not JSON ({exc})") from exc
    return frozenset(storage.join(_folder(uri), name) for name in names)


def _taken(files: Sequence[str]) -> tuple[dict[str, frozenset[str]], list[str]]:
    """The compacted files among ``files`` a reader takes, each with the URIs of the parts it holds; and those
    it does not: every part of theirs is held by another taken file (two compactions ran at once)."""
    held = {uri: _compacted_parts(uri) for uri in files if COMPACTED.search(uri)}
    dropped = [
        uri
        for uri, parts in held.items()
        if any(
            other != uri and (parts < more or (parts == more and other < uri)) for other, more in held.items()
        )
    ]
    return {uri: parts for uri, parts in held.items() if uri not in dropped}, dropped


def log_files(folder: str) -> list[str]:
    """The files of one ``ds=<day>`` folder of the log that a reader takes: every row once. A compacted file
    whose footer does not parse raises :class:`UnreadableParquetError` (a reader may :func:`set_aside` it)."""
    files = datasets.folder_files(folder)
    taken, dropped = _taken(files)
    held = {part for parts in taken.values() for part in parts}
    return [uri for uri in files if uri not in held and uri not in dropped]


def _schema_key(uri: str) -> str:
    schema = parquet_footer(uri).schema.to_arrow_schema()
    return hashlib.sha256(schema.remove_metadata().to_string().encode()).hexdigest()[:8]


def data_damage(uri: str) -> str | None:
    """Why a log file's data does not decode (a damaged page), or None when it all does: its bytes are read
    first and decoded in memory after, so a storage failure raises as itself (a task on an engine's worker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = storage.read_bytes(uri)
    try:
        pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:  # decoded from memory: the bytes are wrong, not the storage
        return f"its data does not decode ({str(exc).strip()[:200]})"
    return None


def undecodable(engine: Any, files: list[str]) -> UnreadableParquetError | None:
    """After a pass over ``files`` failed on ``engine``: the first file whose data does not decode (each read
    whole on the engine's workers, :func:`data_damage`), or None when they all do (the failure is another's)."""
    damage = engine.map_files(data_damage, files)
    found = next(((uri, reason) for uri, reason in zip(files, damage, strict=True) if reason), None)
    return None if found is None else UnreadableParquetError(*found)


def set_aside(uri: str, reason: str) -> str:
    """Move a log file that cannot be read from ``<log>/ds=<day>/`` to ``<log>/_unreadable/ds=<day>/``, with a
    note of why beside it (``<name>.json``); where it went. A file another run set aside first is left there."""
    folder = _folder(uri)
    target = storage.join(_folder(folder), UNREADABLE, _name(folder), _name(uri))
    storage.write_json_atomic(
        f"{target}.json",
        {"file": uri, "reason": reason, "set_aside_at": dt.datetime.now(dt.UTC).isoformat()},
    )
    try:
        storage.move(uri, target)
    except FileNotFoundError:
        if not storage.exists(target):
            raise
    log.warning("%s set aside to %s: %s", uri, target, reason)
    return target


def _readable_taken(files: list[str], done: dict[str, Any]) -> tuple[dict[str, frozenset[str]], list[str]]:
    """:func:`_taken` of ``files``, any compacted file whose footer does not parse set aside first (and taken
    out of ``files``); ``done["set_aside"]`` lists where each went."""
    while True:
        try:
            return _taken(files)
        except UnreadableParquetError as exc:
            done["set_aside"].append(set_aside(exc.uri, exc.reason))
            files.remove(exc.uri)


def compact(log_uri: str, day: dt.date, now: dt.datetime | None = None) -> dict[str, Any]:
    """Compact the closed hours of the log's ``ds=<day>`` folder; what it did: compacted files written, parts
    and rows in them, files removed (parts, and compacted files another one holds), groups skipped because a
    compaction beside this one took their parts, and where each file it found unreadable was set aside
    (:func:`set_aside`)."""
    moment = time.time_ns() if now is None else ns_of(now)
    closed_before = (moment - int(SETTLE.total_seconds() * 10**9)) // HOUR_NS * HOUR_NS
    folder = storage.join(log_uri, f"ds={day.isoformat()}")
    files = datasets.folder_files(folder)
    done: dict[str, Any] = {"files": 0, "parts": 0, "rows": 0, "removed": 0, "skipped": 0, "set_aside": []}
    taken, dropped = _readable_taken(files, done)
    present = set(files)
    held = {part for parts in taken.values() for part in parts}
    for uri in dropped + sorted(held & present):  # a compaction that stopped before its removals, or ran
        storage.remove(uri)  # beside another
        done["removed"] += 1
    compacted = {found.groups() for uri in taken if (found := COMPACTED.search(uri))}
    groups: dict[tuple[str, str], list[str]] = {}
    for uri in files:
        found = PART.search(uri)
        if found and uri not in held and int(found.group(1)) < closed_before:
            hour_last = str((int(found.group(1)) // HOUR_NS + 1) * HOUR_NS - 1)
            try:
                key = _schema_key(uri)
            except UnreadableParquetError as exc:
                done["set_aside"].append(set_aside(uri, exc.reason))
                continue
            groups.setdefault((hour_last, key), []).append(uri)
    for (hour_last, schema_key), parts in sorted(groups.items()):
        if (hour_last, schema_key) in compacted:  # these parts came after their hour was compacted
            continue
        target = storage.join(
            _folder(parts[0]), f"compacted-{hour_last}-{schema_key}-{uuid.uuid4().hex[:8]}.parquet"
        )
        rows, parts = _write_decodable(target, parts, done)
        if rows is None:
            done["skipped"] += 1
            continue
        if not parts:  # every part of the group set aside
            continue
        for part in parts:
            storage.remove(part)
        done["files"] += 1
        done["parts"] += len(parts)
        done["rows"] += rows
        done["removed"] += len(parts)
    return done


def _write_decodable(target: str, parts: list[str], done: dict[str, Any]) -> tuple[int | None, list[str]]:
    """:func:`_write` of the parts, a part whose data does not decode set aside first (a write that fails has
    each part read whole, :func:`data_damage`; none found, its own error is raised); the rows written and the
    parts they came from."""
    import pyarrow as pa

    while parts:
        try:
            return _write(target, parts), parts
        except (OSError, pa.ArrowException):  # a part's data, or the storage
            damaged = {part: reason for part in parts if (reason := data_damage(part)) is not None}
            if not damaged:
                raise
            done["set_aside"] += [set_aside(part, reason) for part, reason in damaged.items()]
            parts = [part for part in parts if part not in damaged]
    return 0, []


def _write(target: str, parts: list[str]) -> int | None:
    """The parts' rows in one file at ``target``, its footer listing them; their rows, or None when a part is
    gone (a compaction beside this one took them) and nothing was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not all(storage.exists(part) for part in parts):
        log.info("%s: parts of this hour were compacted beside this run; left to it", _folder(target))
        return None
    schema, _ = parquet_footers(parts[:1])
    rows = 0
    with (
        storage.atomic_file(target) as handle,
        pq.ParquetWriter(handle, schema, compression="zstd") as writer,
    ):
        for run in batch_runs(file_batches(parts, schema, None), ROW_GROUP_ROWS):  # a row group each
            table = pa.Table.from_batches(run, schema=schema)
            writer.write_table(table)
            rows += table.num_rows
        writer.add_key_value_metadata({PARTS_KEY: json.dumps(sorted(_name(part) for part in parts))})
    return rows
