"""The prediction log's files: the ones a reader takes, and the compaction of the app's small files by hour.

The app writes a file per flush, ``part-<ns>-<hex>.parquet`` in ``ds=<day>/`` (:mod:`pipelines.serving.predlog`;
``<ns>``: when the flush began writing it), every 10 s at most: a day of one replica's traffic is 8,640 files,
and each costs a reader about 0.7 ms to open and scan whatever its rows (a day of 1M rows in 8,641 files took
the monitor's pass 7.4 s on Dask, in 5 files 0.4 s; measured 2026-12-02 on 2 cores).

:func:`compact` rewrites the parts of each closed hour (by the time in their names) into one file per hour
and schema, ``compacted-<the hour's last ns>-<hex of the schema>.parquet``, sorted by ``served_at``, whose
footer lists the parts it holds; then removes those parts. Every row is kept, with its values and types.

- **Readers** (:func:`log_files`) take every compacted file and every part that no compacted file lists, so a
  part is read once whether compaction ran before or after the listing, or stopped between its write and its
  removals (the next compaction removes those). A reader that listed parts which compaction then removed
  fails on the missing file, loudly, and its retry reads the compacted file: it never counts a row twice.
  Pointed at the folder directly, another reader (pandas, Spark, DuckDB) sees each row once except in the
  moment between a compacted file's rename and its parts' removal.
- **Closed hour**: its end at least :data:`SETTLE` ago. A part's name takes the time its flush began
  writing, and its rename follows within milliseconds (seconds on an object store); the replicas' and the
  monitor's clocks must agree within :data:`SETTLE` (NTP keeps them within milliseconds).
- **Idempotent**: an hour and schema that has its compacted file is not compacted again; a part of it that
  shows up later (a clock further off than :data:`SETTLE`) stays a part and is read as one. Two compactions
  of one hour at once read the same parts and write the same name: the last rename leaves one file.
- Only the app's part names are touched: files of other names in the folder are read and left alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from pipelines.data import datasets, storage
from pipelines.engines.base import file_batches, parquet_footers

PART = re.compile(r"/part-(\d{19})-[0-9a-f]{8}\.parquet$")
COMPACTED = re.compile(r"/compacted-(\d{19})-[0-9a-f]{8}\.parquet$")
PARTS_KEY = b"ct.compacted_parts"  # the compacted file's footer: the names of the parts it holds
SETTLE = dt.timedelta(minutes=2)
HOUR_NS = 3600 * 10**9
ROW_GROUP_ROWS = 100_000


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def written_ns(uri: str) -> int | None:
    """A log file's time in its name: a part's when its flush began writing, a compacted file's its hour's
    last nanosecond. Every row in it was served at or before that time. None for any other name."""
    found = PART.search(uri) or COMPACTED.search(uri)
    return int(found.group(1)) if found else None


def _compacted_parts(uri: str) -> list[str]:
    import pyarrow.parquet as pq

    with storage.open_read(uri) as handle:
        metadata = pq.read_metadata(handle).metadata or {}
    if PARTS_KEY not in metadata:
        raise ValueError(
            f"{uri} is named as a compacted log file but its footer lists no parts ({PARTS_KEY!r})"
        )
    return list(json.loads(metadata[PARTS_KEY]))


def _listed(files: Sequence[str]) -> dict[str, list[str]]:
    """The compacted files among ``files``, each with the URIs of the parts it holds."""
    return {
        uri: [storage.join(_folder(uri), name) for name in _compacted_parts(uri)]
        for uri in files
        if COMPACTED.search(uri)
    }


def log_files(folder: str) -> list[str]:
    """The files of one ``ds=<day>`` folder of the log that a reader takes: every row once."""
    files = datasets.folder_files(folder)
    held = {part for parts in _listed(files).values() for part in parts}
    return [uri for uri in files if uri not in held]


def _schema_key(schema: Any) -> str:
    return hashlib.sha256(schema.remove_metadata().to_string().encode()).hexdigest()[:8]


def compact(log_uri: str, day: dt.date, now: dt.datetime | None = None) -> dict[str, int]:
    """Compact the closed hours of the log's ``ds=<day>`` folder; what it did (files written, parts and rows
    compacted, parts removed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    moment = time.time_ns() if now is None else int(now.timestamp() * 10**9)
    closed_before = (moment - int(SETTLE.total_seconds() * 10**9)) // HOUR_NS * HOUR_NS
    folder = storage.join(log_uri, f"ds={day.isoformat()}")
    files = datasets.folder_files(folder)
    listed = _listed(files)
    done = {"files": 0, "parts": 0, "rows": 0, "removed": 0}
    present = set(files)
    for parts in listed.values():  # a compaction that stopped before removing its parts
        for part in parts:
            if part in present:
                storage.remove(part)
                done["removed"] += 1
    held = {part for parts in listed.values() for part in parts}
    groups: dict[str, list[str]] = {}
    for uri in files:
        found = PART.search(uri)
        if found and uri not in held and int(found.group(1)) < closed_before:
            with storage.open_read(uri) as handle:
                schema = pq.read_schema(handle)
            hour_end = (int(found.group(1)) // HOUR_NS + 1) * HOUR_NS
            name = f"compacted-{hour_end - 1}-{_schema_key(schema)}.parquet"
            groups.setdefault(storage.join(_folder(uri), name), []).append(uri)
    for target, parts in sorted(groups.items()):
        if target in present:  # compacted already; these parts came later and stay parts
            continue
        schema, _ = parquet_footers(parts[:1])
        table = pa.Table.from_batches(list(file_batches(parts, schema, None)), schema=schema)
        table = table.sort_by("served_at") if "served_at" in table.column_names else table
        footer = {PARTS_KEY: json.dumps(sorted(_name(part) for part in parts)).encode()}
        buffer = io.BytesIO()
        pq.write_table(
            table.replace_schema_metadata({**(table.schema.metadata or {}), **footer}),
            buffer,
            compression="zstd",
            row_group_size=ROW_GROUP_ROWS,
        )
        storage.write_bytes_atomic(target, buffer.getvalue())
        for part in parts:
            storage.remove(part)
        done["files"] += 1
        done["parts"] += len(parts)
        done["rows"] += table.num_rows
        done["removed"] += len(parts)
    return done
