"""Datasets: folders of Parquet files plus ``_manifest.json`` (schema, row count, content hash).

The manifest is written last and is the commit marker: a folder without one is incomplete and never read.
The content hash is the dataset's version; it does not depend on row order or on how the rows are split
into files, so two engines that write the same rows give the same hash. A folder's row order, which a model
trained on its rows in that order depends on, has a digest of its own (:func:`row_order`): it does not depend
on how the rows are cut into files either, only on their sequence.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.data.storage import (
    COMMIT_FILE,
    atomic_dir,
    exists,
    join,
    read_json,
    split_uri,
    write_text_atomic,
)

MANIFEST = COMMIT_FILE  # written last: a folder without one is never read


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder has no manifest: it was never written, or its write did not finish."""


class EmptySplitError(ValueError):
    """A split of a prepared dataset has no rows: no entity fell into it (too few entities for its share)."""


@dataclass(frozen=True)
class Manifest:
    """What a dataset folder holds; ``content_hash`` is its version."""

    uri: str
    rows: int
    schema: dict[str, str]
    content_hash: str
    created_at: str
    extra: dict[str, Any]
    # a folder of it (``split=train``) -> the digest of its rows' sequence (:func:`row_order`); older: none
    row_order: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _parquet_dataset(uri: str) -> pads.Dataset:
    fs, path = url_to_fs(uri)
    return pads.dataset(
        path, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=True
    )


def _type_name(data_type: pa.DataType) -> str:
    """Engine-neutral type name: Dask writes large_string and dictionary columns where Spark writes string."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    return str(data_type)


# The row-order digest's base: odd, so that its powers mod 2**64 never reach 0 (the golden ratio's 64 bits).
ORDER_BASE = 0x9E3779B97F4A7C15
MOD = 2**64


@dataclass(frozen=True)
class FileHash:
    """One file's rows: the sum of their hashes (mod 2**64), how many, and their sequence's polynomial hash
    ``sum(h_i * ORDER_BASE**(rows-1-i))`` mod 2**64, which a file's successor extends (:func:`chain`)."""

    uri: str
    total: int
    rows: int
    order: int


FileMapper = Callable[[Callable[[list[str]], list[FileHash]], list[list[str]]], list[list[FileHash]]]


def chain(order: int, rows: int, following: int) -> int:
    """The sequence hash of a sequence (``order``) followed by ``rows`` rows whose sequence hash is ``following``:
    the same whether the rows came in one file or in many."""
    return (order * pow(ORDER_BASE, rows, MOD) + following) % MOD


def _sequence_hash(row_hashes: np.ndarray) -> int:
    """The polynomial hash of one batch of row hashes, in numpy's wrapping uint64 arithmetic."""
    powers = np.ones(len(row_hashes), dtype=np.uint64)
    with np.errstate(over="ignore"):
        if len(row_hashes) > 1:  # ORDER_BASE**(n-1-i): the last row's power is 1
            steps = np.full(len(row_hashes) - 1, ORDER_BASE, dtype=np.uint64)
            powers[:-1] = np.multiply.accumulate(steps)[::-1]
        return int((row_hashes * powers).sum(dtype=np.uint64))


def _hash_files(root_uri: str, names: list[str], file_uris: list[str]) -> list[FileHash]:
    """Each file's :class:`FileHash`, one batch in memory at a time."""
    fs, root = url_to_fs(root_uri)
    found = []
    for uri in file_uris:
        dataset = pads.dataset(
            [url_to_fs(uri)[1]], filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=root
        )
        total, rows, order = np.uint64(0), 0, 0
        for batch in dataset.to_batches(columns=names, batch_size=65_536):  # in the file's order
            frame = batch.to_pandas()
            for name in frame.columns:
                if isinstance(frame[name].dtype, pd.CategoricalDtype):
                    frame[name] = frame[name].astype(object)
            if frame.empty:
                continue
            row_hashes = pd.util.hash_pandas_object(frame[names], index=False).to_numpy(dtype=np.uint64)
            with np.errstate(over="ignore"):
                total = np.uint64(total + row_hashes.sum(dtype=np.uint64))
            order = chain(order, len(frame), _sequence_hash(row_hashes))
            rows += len(frame)
        found.append(FileHash(uri, int(total), rows, order))
    return found


@dataclass(frozen=True)
class ContentHash:
    digest: str
    rows: int
    schema: dict[str, str]
    files: list[FileHash]  # in the folder's order (:func:`folder_files`)


def content_hash(
    uri: str, columns: list[str] | None = None, map_files: FileMapper | None = None
) -> ContentHash:
    """Order-independent hash of a Parquet folder's rows, its row count and schema; and each file's hashes.

    Rows are hashed one by one and the hashes summed, so two engines that write the same rows into
    different files, in a different order, give the same hash. Files are hashed independently, batch by
    batch: ``map_files`` (an engine's :meth:`~pipelines.engines.Engine.map_files`) spreads them over a cluster's workers,
    so the driver never reads the data; without it they are hashed here, one batch in memory at a time.
    """
    dataset = _parquet_dataset(uri)
    names = columns or sorted(dataset.schema.names)
    schema = {name: _type_name(dataset.schema.field(name).type) for name in names}
    fs, _ = url_to_fs(uri)
    files = [fs.unstrip_protocol(f) for f in sorted(dataset.files)]
    groups = [files[i : i + 4] for i in range(0, len(files), 4)]
    task = functools.partial(_hash_files, uri, names)
    parts = [
        f for part in (map_files or (lambda fn, items: [fn(i) for i in items]))(task, groups) for f in part
    ]
    total = sum(part.total for part in parts) % MOD
    rows = sum(part.rows for part in parts)
    digest = hashlib.sha256()
    digest.update(json.dumps(schema, sort_keys=True).encode())
    digest.update(str(rows).encode())
    digest.update(int(total).to_bytes(8, "little"))
    return ContentHash(digest.hexdigest(), rows, schema, parts)


def row_order(files: list[FileHash]) -> str:
    """The digest of the rows' sequence through ``files`` in the order given: equal for the same rows in the same
    order however they are cut into files, and other for another order (the hashes cover the columns hashed)."""
    order, rows = 0, 0
    for file in files:
        order = chain(order, file.rows, file.order)
        rows += file.rows
    return hashlib.sha256(f"{rows}:{order:016x}".encode()).hexdigest()[:16]


def column_names(uri: str) -> list[str]:
    """The columns of a Parquet folder (a hive partition's key included), sorted."""
    return sorted(_parquet_dataset(uri).schema.names)


def count_rows(uri: str) -> int:
    """Rows of a Parquet folder, from the files' footers alone."""
    return _parquet_dataset(uri).count_rows()


def write_manifest(
    uri: str,
    extra: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    final_uri: str | None = None,
    map_files: FileMapper | None = None,
    ordered: Sequence[str] = (),
) -> Manifest:
    """Hash a written Parquet folder and commit it with its manifest (``final_uri``: where it will live), with the
    row order of each of its folders ``ordered`` (``split=train``: the files a reader takes in :func:`folder_files`'
    order)."""
    hashed = content_hash(uri, columns, map_files)
    by_uri = {file.uri: file for file in hashed.files}
    orders = {folder: row_order([by_uri[f] for f in folder_files(join(uri, folder))]) for folder in ordered}
    manifest = Manifest(
        uri=final_uri or uri,
        rows=hashed.rows,
        schema=hashed.schema,
        content_hash=hashed.digest,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra=extra or {},
        row_order=orders,
    )
    write_text_atomic(join(uri, MANIFEST), manifest.to_json())
    return manifest


def read_manifest(uri: str) -> Manifest:
    manifest_uri = join(uri, MANIFEST)
    if not exists(manifest_uri):
        raise DatasetNotFoundError(
            f"No committed dataset at {uri} (no {MANIFEST}); run the stage that writes it."
        )
    return Manifest(**read_json(manifest_uri))


def parquet_files(uri: str) -> list[str]:
    """The data files of a committed dataset folder (recursively; ``_`` and ``.`` names skipped), as URIs."""
    read_manifest(uri)
    return folder_files(uri)


def folder_files(uri: str) -> list[str]:
    """The Parquet files under a folder, sorted (``_`` and ``.`` names skipped); none when it does not exist
    (a split no row fell into). For a folder inside a committed dataset, such as one split."""
    fs, path = url_to_fs(uri)
    if not fs.exists(path):
        return []
    names = sorted(
        p
        for p in fs.find(path)
        if p.endswith(".parquet")
        and not any(part.startswith(("_", ".")) for part in p[len(path) :].split("/"))
    )
    return [fs.unstrip_protocol(p) for p in names]


class NotParquetError(ValueError):
    """A file given as Parquet data that is not Parquet (a CSV export, say)."""


def any_parquet_files(uri: str) -> list[str]:
    """The Parquet files of any folder (recursively), or the file itself: a user's data, no manifest needed. A
    file that does not start as Parquet does (``PAR1``) is a :class:`NotParquetError` naming it."""
    fs, path = url_to_fs(uri)
    if fs.isfile(path):
        with fs.open(path, "rb") as handle:
            if handle.read(4) != b"PAR1":  # a CSV gave pyarrow's ArrowInvalid with its traceback
                raise NotParquetError(f"{uri} is not a Parquet file (it does not start with Parquet's PAR1)")
        return [fs.unstrip_protocol(path)]
    names = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    if not names:
        raise FileNotFoundError(f"no Parquet files under {uri}")
    return [fs.unstrip_protocol(p) for p in names]


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a committed Parquet folder into pandas (small data: holdouts, samples, tests)."""
    read_manifest(uri)
    return _parquet_dataset(uri).to_table(columns=columns).to_pandas()


def read_split(features: str, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one split (train, validation, holdout) of a committed prepared dataset."""
    read_manifest(features)
    if not folder_files(split_uri(features, split)):
        raise EmptySplitError(
            f"the {split} split of {features} has no rows: no entity fell into it; prepare more days or more "
            "entities, or give the split a larger share in the contract's splits"
        )
    return _parquet_dataset(split_uri(features, split)).to_table(columns=columns).to_pandas()


def write_parquet_frame(frame: pd.DataFrame, uri: str, extra: dict[str, Any] | None = None) -> Manifest:
    """Write one pandas frame as a committed dataset folder (atomic, replacing any earlier version)."""
    with atomic_dir(uri) as tmp:
        fs, path = url_to_fs(tmp)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with fs.open(join(path, "part-0.parquet"), "wb") as fh:
            pq.write_table(table, fh, coerce_timestamps="us", allow_truncated_timestamps=True)
        write_manifest(tmp, extra, final_uri=uri)
    return read_manifest(uri)
