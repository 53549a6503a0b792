"""A rank's own part of a split: disjoint row ranges over the split's Parquet row groups, read batch by batch.

The split's files (sorted by name) and their row groups, in order, make one sequence of rows; rank ``r`` of
``w`` takes rows ``[r*n//w, (r+1)*n//w)``, so every row belongs to exactly one rank and the parts differ by at
most one row whatever the world size and however the engine cut the files. A rank reads only the row groups
that overlap its range, from the data root (any fsspec URI), one batch at a time into its own arrays: no
process holds the whole split, and a rank's data costs its part plus one batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.data import datasets
from pipelines.training.job import SplitChangedError

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class RowGroup:
    uri: str
    index: int
    rows: int


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one row group."""

    group: RowGroup
    start: int
    stop: int


@dataclass(frozen=True)
class Shard:
    """One rank's features (float32) and labels (float32) of one split, the sequence of rows the ranks' parts
    were cut from (:func:`layout`) and the whole split's rows (its footers' count)."""

    x: np.ndarray
    y: np.ndarray
    layout: str = ""
    split_rows: int = 0

    def __len__(self) -> int:
        return len(self.y)


def row_groups(file_uris: list[str]) -> list[RowGroup]:
    """Every row group of the files, in order, from their footers alone."""
    groups = []
    for uri in file_uris:
        fs, path = url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            metadata = pq.ParquetFile(fh).metadata
        groups += [RowGroup(uri, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)]
    return groups


def layout(groups: list[RowGroup], row_order: str | None = None) -> str:
    """What a rank's data position is a position in: the sequence of rows the ranks' parts are cut from.

    A split whose dataset's manifest holds its :func:`~pipelines.data.datasets.row_order` (``row_order``) is known
    by that digest: prepare run again on the other engine, or on a cluster of another size, writes the same rows in
    the same order cut into other files and row groups, and every rank's part and its place in it still mean the
    same rows. Otherwise (a dataset prepared before its manifests kept row orders, a folder with no manifest, or
    one written again while it was read) by its cut, the files' names and their row groups' row counts in order,
    which tells nothing of the rows' order: the same rows cut otherwise count as another sequence."""
    if row_order is not None:
        return f"rows:{row_order}"
    cut = [[g.uri.rsplit("/", 1)[-1], g.index, g.rows] for g in groups]
    return hashlib.sha256(json.dumps(cut).encode()).hexdigest()[:16]


def _manifest(dataset_uri: str) -> datasets.Manifest | None:
    """The dataset's manifest; None where it has none (or it is being written again)."""
    try:
        return datasets.read_manifest(dataset_uri)
    # none (DatasetNotFoundError), or an object store's publish removed it meanwhile
    except FileNotFoundError:
        return None


def bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows of ``rows``: a contiguous range; the ranges are disjoint and cover every row."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return rank * rows // world_size, (rank + 1) * rows // world_size


def plan(groups: list[RowGroup], rank: int, world_size: int) -> list[Piece]:
    """The pieces of row groups that make rank ``rank``'s part."""
    start, stop = bounds(sum(g.rows for g in groups), rank, world_size)
    pieces, offset = [], 0
    for group in groups:
        low, high = max(start, offset), min(stop, offset + group.rows)
        if low < high:
            pieces.append(Piece(group, low - offset, high - offset))
        offset += group.rows
    return pieces


def read(
    split_uri: str, features: list[str], label: str, rank: int, world_size: int, batch_rows: int = BATCH_ROWS
) -> Shard:
    """Read rank ``rank``'s part of a split into float32 arrays, one batch at a time."""
    # The manifest before and after: its row order is the files' only if the dataset was not written again meanwhile
    dataset_uri, _, folder = split_uri.rstrip("/").rpartition("/")
    before = _manifest(dataset_uri)
    groups = row_groups(datasets.folder_files(split_uri))
    pieces = plan(groups, rank, world_size)
    rows = sum(p.stop - p.start for p in pieces)
    x = np.empty((rows, len(features)), dtype=np.float32)
    y = np.empty(rows, dtype=np.float32)
    filled = 0
    for piece in pieces:
        filled = _fill(piece, features, label, x, y, filled, batch_rows)
        # Arrow's pool keeps a row group's freed buffers otherwise, and more with every row group (measured:
        # 1.25 MB a MB of part at the peak without this, 1.1 with it)
        pa.default_memory_pool().release_unused()
    if filled != rows:  # the footers promised other row counts than the data holds
        raise RuntimeError(f"read {filled} rows of {split_uri} where its Parquet footers promised {rows}")
    after = _manifest(dataset_uri)
    order = after.row_order.get(folder) if after and after == before else None
    return Shard(x, y, layout(groups, order), sum(g.rows for g in groups))


class SplitPublishedWhileReadError(RuntimeError):
    """A rank read a split while the dataset's manifest was written again (or removed): it cannot tell which
    version its rows are. A restart reads the split again."""


def _described(layout_name: str) -> str:
    if layout_name.startswith("rows:"):
        return f"in the sequence {layout_name.removeprefix('rows:')}"
    return f"in files and row groups {layout_name} (no row order in the manifest)"


def check(shard: Shard, split_uri: str, rows: int | None, layouts: dict[str, str], rank: int) -> None:
    """Fail where rank ``rank``'s read of a split is not the split its job was made from: other rows than the job
    counted, or another sequence of rows than the job's (``layouts``, by folder), both :class:`SplitChangedError`;
    or a read the rank could not name while the job names the split by its manifest's row order (the manifest was
    written again while it read), :class:`SplitPublishedWhileReadError`. Every rank holds its read to the job's,
    so no two ranks train on different versions, and none on a split the job's scaling was not computed from."""
    expected = layouts.get(split_uri.rstrip("/").rpartition("/")[2])
    # First: a read that overlapped a publish tells nothing of the version, its row count included (it may have
    # listed the folder while it was moved aside, or an object store's copy half made)
    if expected is not None and expected.startswith("rows:") and not shard.layout.startswith("rows:"):
        raise SplitPublishedWhileReadError(
            f"rank {rank} read {split_uri} while the dataset's manifest was written again (or removed), so it cannot "
            "tell which version its rows are: a restart of the ranks reads the split again"
        )
    changes = []
    if rows is not None and shard.split_rows != rows:
        changes.append(f"it holds {shard.split_rows} rows where the job counted {rows}")
    if expected is not None and shard.layout != expected:
        changes.append(f"its rows are {_described(shard.layout)} where the job's were {_described(expected)}")
    if changes:
        raise SplitChangedError(
            f"rank {rank} read {split_uri} as another version than its training job was made from: "
            + "; ".join(changes)
            + ". The dataset was prepared again since the job was made; the task's retry makes it afresh"
        )


def _fill(
    piece: Piece, features: list[str], label: str, x: np.ndarray, y: np.ndarray, filled: int, batch_rows: int
) -> int:
    """Copy a piece's rows into ``x`` and ``y`` from row ``filled`` on; the next free row."""
    fs, path = url_to_fs(piece.group.uri)
    with fs.open(path, "rb") as fh:
        batches = pq.ParquetFile(fh).iter_batches(
            batch_size=batch_rows, row_groups=[piece.group.index], columns=[*features, label]
        )
        seen = 0
        for batch in batches:
            low, high = max(piece.start, seen), min(piece.stop, seen + batch.num_rows)
            seen += batch.num_rows
            if low >= high:
                continue
            part = batch.slice(low - (seen - batch.num_rows), high - low)
            for column, name in enumerate(features):
                x[filled : filled + len(part), column] = part.column(name).to_numpy(zero_copy_only=False)
            y[filled : filled + len(part)] = part.column(label).to_numpy(zero_copy_only=False)
            filled += len(part)
            if seen >= piece.stop:
                break
    return filled
