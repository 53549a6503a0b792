"""Datasets: folders of Parquet files plus ``_manifest.json`` (schema, row count, content hash).

The manifest is written last and is the commit marker: a folder without one is incomplete and never read.
The content hash is the dataset's version; it does not depend on row order or on how the rows are split
into files, so two engines that write the same rows give the same hash.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
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


FileMapper = Callable[[Callable[[list[str]], tuple[int, int]], list[list[str]]], list[tuple[int, int]]]


def _hash_files(root_uri: str, names: list[str], file_uris: list[str]) -> tuple[int, int]:
    """Sum of the row hashes (mod 2**64) and the row count of some files of a dataset folder."""
    fs, root = url_to_fs(root_uri)
    paths = [url_to_fs(f)[1] for f in file_uris]
    dataset = pads.dataset(
        paths, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=root
    )
    total, rows = np.uint64(0), 0
    for batch in dataset.to_batches(columns=names, batch_size=65_536):
        frame = batch.to_pandas()
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].astype(object)
        if frame.empty:
            continue
        row_hashes = pd.util.hash_pandas_object(frame[names], index=False).to_numpy(dtype=np.uint64)
        with np.errstate(over="ignore"):
            total = np.uint64(total + row_hashes.sum(dtype=np.uint64))
        rows += len(frame)
    return int(total), rows


def content_hash(
    uri: str, columns: list[str] | None = None, map_files: FileMapper | None = None
) -> tuple[str, int, dict[str, str]]:
    """Order-independent hash of a Parquet folder's rows, its row count and schema.

    Rows are hashed one by one and the hashes summed, so two engines that write the same rows into
    different files, in a different order, give the same hash. Files are hashed independently, batch by
    batch: ``map_files`` (an engine's :meth:`~pipelines.engines.Engine.map_files`) spreads them over a cluster's workers,
    so the driver never reads the data; without it they are hashed here, one batch in memory at a time.
    """
    dataset = _parquet_dataset(uri)
    names = columns or sorted(dataset.schema.names)
    schema = {name: _type_name(dataset.schema.field(name).type) for name in names}
    fs, _ = url_to_fs(uri)
    files = [fs.unstrip_protocol(f) for f in dataset.files]
    groups = [files[i : i + 4] for i in range(0, len(files), 4)]
    task = functools.partial(_hash_files, uri, names)
    parts = (map_files or (lambda fn, items: [fn(i) for i in items]))(task, groups)
    total = sum(part[0] for part in parts) % 2**64
    rows = sum(part[1] for part in parts)
    digest = hashlib.sha256()
    digest.update(json.dumps(schema, sort_keys=True).encode())
    digest.update(str(rows).encode())
    digest.update(int(total).to_bytes(8, "little"))
    return digest.hexdigest(), rows, schema


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
) -> Manifest:
    """Hash a written Parquet folder and commit it with its manifest (``final_uri``: where it will live)."""
    digest, rows, schema = content_hash(uri, columns, map_files)
    manifest = Manifest(
        uri=final_uri or uri,
        rows=rows,
        schema=schema,
        content_hash=digest,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra=extra or {},
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
