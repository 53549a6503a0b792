"""What a data engine does for the stages: the one interface both Dask and Spark implement.

The stages (validate, prepare) hold the logic as plain pandas functions and hand them to an engine, which
runs them on every partition of a table wherever its workers are (or, for :meth:`Engine.aggregate_parquet`,
on the rows of a few files at a time). A stage never asks which engine it has.
A table is the engine's own lazy frame (a Dask DataFrame, a Spark DataFrame); only small results (findings,
statistics, counts) come back to the driver as pandas or plain Python.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import pandas as pd
import pyarrow as pa

from pipelines.settings import FileFormat

Table = Any  # the engine's own frame: dask.dataframe.DataFrame or pyspark.sql.DataFrame
PartitionFn = Callable[[pd.DataFrame], pd.DataFrame]
KeyFn = Callable[[pd.DataFrame], pd.Series]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Repeated:
    """Keys seen more than once: how many rows are surplus (a key seen n times counts n - 1), and examples."""

    surplus: int
    examples: list[str]


@dataclass(frozen=True)
class Scan:
    """One pass over a table: every partition's summary, concatenated, and the repeated keys per rule."""

    summaries: pd.DataFrame
    repeated: dict[str, Repeated]


Aggregation = Literal["sum", "min", "max"]
Reduction = Literal["sum", "min", "max", "count"]


class Engine(Protocol):
    """A session on one engine, open for the length of a stage (see :func:`pipelines.engines.open_engine`)."""

    name: str
    #: Errors that mean "these files cannot be read as a table", as opposed to "the cluster is down".
    unreadable_errors: tuple[type[BaseException], ...]
    #: Errors a worker's read of files fails with, whether the files' bytes or the storage failed: a caller
    #: that can examine the files one by one tells the two apart (a damaged Parquet page arrives so).
    read_failed_errors: tuple[type[BaseException], ...]

    def read(
        self,
        files: Sequence[str],
        fmt: FileFormat = "parquet",
        csv_delimiter: str = ",",
        arrow_strings: bool = False,
        between: tuple[str, Any, Any] | None = None,
        csv_whole_files: Collection[str] = (),
    ) -> Table:
        """The rows of some files. CSV columns arrive as text (nulls for empty fields); Parquet as typed.

        CSV is read as pandas reads it: ``"`` quotes a field, a doubled ``""`` inside is one quote, a quoted
        field may hold the delimiter and line breaks. ``csv_whole_files``: the CSV files whose quoted values
        may hold line breaks (:attr:`pipelines.data.sources.CsvShape.whole`): each is read by one task, as a
        reader that splits a file at line breaks would cut such a value in two rows. Other CSV files may be
        split into parts of a file each.

        ``arrow_strings``: Parquet text may arrive as pandas' Arrow-backed strings (``pd.NA`` for nulls)
        instead of Python strings, one object per row, for partition functions that only count or compare
        text. The engine chooses: Dask does (and hands dates and decimals over as Arrow-backed types too),
        Spark hands over Python strings.

        ``between``: ``(column, low, high)``, only the rows with ``low <= column < high`` (Parquet only).
        The engine filters as it reads: Parquet row groups whose statistics lie outside are not decoded,
        and the rest are filtered before they become pandas.
        """
        ...

    def empty_frame(self, table: Table) -> pd.DataFrame:
        """The table's columns with the pandas types its partitions have, and no rows."""
        ...

    def select(self, table: Table, columns: Sequence[str]) -> Table:
        """Some columns of the table (read from Parquet, only those columns are read)."""
        ...

    def map_partitions(self, table: Table, fn: PartitionFn, schema: pa.Schema) -> Table:
        """``fn`` on every partition (a pandas frame in, a pandas frame of ``schema``'s columns out). The partitions
        keep their order, and a partition's rows the order ``fn`` gives them."""
        ...

    def sort(self, table: Table, keys: Sequence[str]) -> Table:
        """The rows sorted by ``keys`` (ascending, NaN taken for null, nulls last; then, among rows equal in every
        key, by each float key in turn, 0.0 before -0.0) across the partitions, which come in order: the same rows
        come in the same order from every engine, however the input cut them."""
        ...

    def scan(
        self,
        table: Table,
        summarise: PartitionFn,
        schema: pa.Schema,
        keys: Mapping[str, KeyFn],
        examples: int,
    ) -> Scan:
        """``summarise`` every partition and collect the summaries; count the keys that repeat across the table.

        ``keys`` maps a rule name to a function giving each row's key as text; a rule's examples are its
        smallest ``examples`` repeated keys. Dask does it all in one pass over the data.
        """
        ...

    def aggregate(
        self,
        table: Table,
        fn: PartitionFn,
        schema: pa.Schema,
        keys: Sequence[str],
        how: Mapping[str, Aggregation],
    ) -> pd.DataFrame:
        """``fn`` on every partition (partial aggregates of ``schema``'s columns), then the rows with equal
        ``keys`` combined across the table, each other column by ``how`` (sum, min or max); on the driver,
        sorted by ``keys``.

        The pandas function holds the statistics, so every engine computes the same ones, exactly.
        """
        ...

    def moments(self, table: Table, columns: Sequence[str]) -> dict[str, tuple[int, float, float]]:
        """Per number column, the count, mean and population standard deviation of its finite values (nulls,
        NaN and infinities left out), in one pass, numerically stable (a large mean over a small spread keeps
        its std); a column without a finite value is left out. Engines may differ in the last bits."""
        ...

    def aggregate_parquet(
        self,
        files: Sequence[str],
        columns: Sequence[str],
        fn: PartitionFn,
        schema: pa.Schema,
        keys: Sequence[str],
        how: Mapping[str, Aggregation],
        between: tuple[str, Any, Any] | None = None,
    ) -> pd.DataFrame:
        """:meth:`aggregate` of ``columns`` of Parquet files, their text as pandas categories (read from
        Parquet's dictionary pages, not decoded value by value: a third less CPU for the monitor's pass; the
        categories may hold values no row of a frame has, and nulls are ``NaN``), each engine reading the files
        its fastest way; ``between`` as in :meth:`read`.

        The files are read with their common schema: a file's column of nulls takes the type the other files
        give it, and a file without one of the columns reads it as nulls. ``fn`` gets frames of any number of
        rows, the files' rows cut into parts as the engine reads them, and must give the same totals however
        they are cut. On both engines the files go in a few groups of about equal bytes, two per core, and
        each task scans its group with pyarrow (:func:`aggregate_parquet_files`; Spark's executors need the
        data root's fsspec filesystem): handing rows over from Spark's reader cost more than the statistics
        on them, and Dask's reader makes a partition, and a call, of every file.
        """
        ...

    def join(self, left: Table, right: Table, on: Sequence[str]) -> Table:
        """The rows of ``left`` and ``right`` whose ``on`` columns are equal (an inner join), on the workers."""
        ...

    def reduce(self, table: Table, keys: Sequence[str], how: Mapping[str, tuple[str, Reduction]]) -> Table:
        """One row per distinct value of ``keys`` (none null): the keys, and each column of ``how`` (its name to
        an input column and the sum, min, max or count of that column's non-null values over the key's rows; a
        key with none has a null sum, min and max, and a count of 0, on every engine).
        On the workers, a table: the keys need not fit in the driver."""
        ...

    def write_parquet(
        self, table: Table, uri: str, partition_on: str | None = None, sorted_by: Sequence[str] = ()
    ) -> None:
        """Write the table as Parquet files under the folder ``uri`` (hive-partitioned on one column if given).

        The files are named in the order of the table's partitions, so reading a folder's files in name order
        reads its rows in the table's order. ``sorted_by``: the keys the table was sorted by (:meth:`sort`), for a
        writer that must sort each task's rows by the partition column (Spark's) to keep that order within it."""
        ...

    def map_files(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` on each item on the engine's workers (Dask: a task each; Spark: in slices of items); the
        results in order."""
        ...


def local_path(uri: str) -> str:
    """A path Dask and Spark both accept: ``file://`` stripped, any other scheme kept."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def parse_csv_header(line: str, delimiter: str) -> list[str]:
    """A CSV header line's column names, as pandas and Spark read them (``"`` quotes, doubled inside)."""
    return next(csv.reader([line], delimiter=delimiter), [])


#: What ends a line of a CSV file, as both engines and pyarrow read one: LF, CRLF or a lone CR.
CSV_LINE_BREAK = re.compile(rb"\r\n?|\n")


def first_csv_line(handle: Any) -> str:
    """The first line of a CSV file open for binary reading (its first MiB at most), whichever break ends it:
    a file of lone-CR lines is read as lines by pandas, pyarrow and Spark, and was one line of it all here.
    A byte order mark before it (Excel's "CSV UTF-8") is not part of the first name: pandas and Spark skip it."""
    return CSV_LINE_BREAK.split(handle.readline(2**20), maxsplit=1)[0].decode("utf-8-sig")


def csv_header(uri: str, delimiter: str) -> list[str]:
    """The column names in a CSV file's first line (any fsspec URI; ``.gz`` decompressed)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    with fs.open(path, "rb", compression="infer") as handle:
        return parse_csv_header(first_csv_line(handle), delimiter)


def csv_header_groups(files: Sequence[str], delimiter: str) -> list[tuple[list[str], list[str]]]:
    """The CSV files grouped by their header, in order of first appearance: (columns, files) each.

    Neither engine maps a file's columns by its own header when it reads several files at once: Spark takes one
    file's header for all, Dask the first file's for every block but each file's first. An engine reads each
    group apart, by its header, and puts the columns in the first group's order.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for uri in files:
        groups.setdefault(tuple(csv_header(uri, delimiter)), []).append(uri)
    return [(list(header), members) for header, members in groups.items()]


def arrow_meta(schema: pa.Schema) -> pd.DataFrame:
    """An empty pandas frame with the columns and types a partition of ``schema`` has."""
    return schema.empty_table().to_pandas()


def combine_partials(
    frame: pd.DataFrame, keys: Sequence[str], how: Mapping[str, Aggregation]
) -> pd.DataFrame:
    """The rows with equal ``keys`` combined, each other column by ``how`` (partials of :meth:`Engine.aggregate`).
    A null key is a group of its own, as Spark's ``groupBy`` keeps it: pandas' default dropped its rows."""
    return frame.groupby(list(keys), sort=False, dropna=False).agg(dict(how)).reset_index()


def between_filters(kind: pa.DataType, column: str, low: Any, high: Any) -> list[tuple[str, str, Any]]:
    """pyarrow filters of ``low <= column < high`` for a column of type ``kind``: a naive time column (UTC by
    this project's convention) is compared with naive bounds, as pyarrow will not compare naive with aware."""
    if pa.types.is_timestamp(kind) and kind.tz is None:
        low, high = (pd.Timestamp(bound).tz_convert("UTC").tz_localize(None) for bound in (low, high))
    return [(column, ">=", low), (column, "<", high)]


def _values_of_dictionaries(schema: pa.Schema) -> pa.Schema:
    """``schema`` with a dictionary column (a file written from pandas categories) as the type of its values."""
    return pa.schema(
        [
            field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field
            for field in schema
        ]
    )


class UnreadableParquetError(pa.ArrowInvalid):
    """A file whose Parquet footer cannot be parsed: cut short, overwritten, or not Parquet at all. Its bytes
    were read, so this is the file's fault, never the storage's (a storage failure raises as itself). An
    ``ArrowInvalid``, as pyarrow's own reader raises for most such files."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri} is not a readable Parquet file: {reason}")
        self.uri = uri
        self.reason = reason


FOOTER_READ = 64 * 1024  # bytes read from a file's end at once: its footer, but for a file of many columns


def parquet_footer(uri: str) -> Any:
    """A Parquet file's footer (``pyarrow.parquet.FileMetaData``), of any fsspec URI.

    Its bytes are read first and parsed in memory after, so that a failure of the storage (a timeout, a lost
    connection) raises as itself and a footer that does not parse raises :class:`UnreadableParquetError`:
    pyarrow reports both as ``OSError`` when it reads the file itself.
    """
    import os

    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - FOOTER_READ, 0))
        tail = handle.read()
        length = int.from_bytes(tail[-8:-4], "little") if size >= 12 else 0
        if size >= 12 and tail[-4:] == b"PAR1" and len(tail) < length + 8 <= size - 4:
            handle.seek(size - length - 8)
            tail = handle.read()
    if size < 12 or tail[-4:] != b"PAR1":
        raise UnreadableParquetError(uri, f"{size} bytes with no Parquet footer at their end (cut short?)")
    if length + 8 > size - 4:
        raise UnreadableParquetError(uri, f"its footer says {length} bytes, more than the file's {size}")
    try:
        return pq.read_metadata(pa.BufferReader(tail[-(length + 8) :]))
    except (pa.ArrowException, OSError) as exc:  # parsed from memory: the bytes are wrong, not the storage
        raise UnreadableParquetError(uri, f"its footer does not parse ({exc})") from exc


def partition_moments(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per column, one partition's count, mean and sum of squared deviations from that mean (M2) of its finite
    values: rows that :func:`combined_moments` joins exactly (Chan et al.'s pairwise update)."""
    import numpy as np

    rows = []
    for name in columns:
        values = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype="float64", na_value=np.nan)
        values = values[np.isfinite(values)]
        if len(values):
            mean = float(values.mean())
            centred = values - mean
            rows.append((name, len(values), mean, float(np.einsum("i,i->", centred, centred))))
    return pd.DataFrame(rows, columns=["column", "count", "mean", "m2"])


def combined_moments(partials: pd.DataFrame) -> dict[str, tuple[int, float, float]]:
    """:func:`partition_moments`' rows of every partition joined per column: (count, mean, population std)."""
    import math

    found: dict[str, tuple[int, float, float]] = {}
    for name, count, mean, m2 in partials.itertuples(index=False):
        if name in found:
            n, m, s = found[name]
            total = n + count
            delta = mean - m
            found[name] = (total, m + delta * count / total, s + m2 + delta * delta * n * count / total)
        else:
            found[name] = (int(count), float(mean), float(m2))
    return {name: (n, m, math.sqrt(max(s, 0.0) / n)) for name, (n, m, s) in found.items()}


def parquet_footers(uris: Sequence[str]) -> tuple[pa.Schema, list[int]]:
    """The Parquet files' common schema, as a read of them all takes it, and each file's bytes of data (its row
    groups' uncompressed size): read from the footers alone, of any fsspec URI.

    Types are widened to one that holds every file's values (Arrow's permissive promotion): a file's column of
    nulls takes the type the other files give it, text and large text read as large text, whole numbers and
    floats as floats; a column a file stored as a dictionary (written from pandas categories) reads as its
    values. Types no widening joins (text and numbers) are refused by Arrow, naming the column; a file whose
    footer does not parse, by :class:`UnreadableParquetError`, naming the file."""
    schemas, sizes = [], []
    for uri in uris:
        footer = parquet_footer(uri)
        schemas.append(_values_of_dictionaries(footer.schema.to_arrow_schema()))
        sizes.append(sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups)))
    return pa.unify_schemas(schemas, promote_options="permissive"), sizes


ROWS_PER_CALL = 500_000  # aggregate_parquet_files: rows handed to the partition function at once, about


def plan_files(
    files: Sequence[str], columns: Sequence[str], groups: int
) -> tuple[pa.Schema, list[list[str]]]:
    """The files' common schema of ``columns`` (:func:`parquet_footers`'s; a file without a column reads
    nulls), and the files in at most ``groups`` groups of about equal bytes of data (largest first, each to
    the lightest group). A column that no file has is refused by name."""
    common, sizes = parquet_footers(files)
    missing = [name for name in columns if name not in common.names]
    if missing:
        raise ValueError(f"no file of {len(files)} has the column(s) {', '.join(missing)}")
    found: list[list[str]] = [[] for _ in range(min(groups, len(files)))]
    loads = [0] * len(found)
    for size, uri in sorted(zip(sizes, files, strict=True), key=lambda item: -item[0]):
        lightest = loads.index(min(loads))
        found[lightest].append(uri)
        loads[lightest] += size
    return pa.schema([common.field(name) for name in columns]), found


def file_batches(
    uris: Sequence[str],
    schema: pa.Schema,
    filters: list[tuple[str, str, Any]] | None,
    text_as_dictionary: bool = False,
) -> Iterator[pa.RecordBatch]:
    """``schema``'s columns of Parquet files on one filesystem (any fsspec URI), as record batches cast to it:
    a column a file lacks is all nulls, a column of nulls takes the schema's type; with ``filters``, only the
    rows they keep (row groups whose statistics lie outside are not decoded). ``text_as_dictionary``: text
    columns as Arrow dictionaries (:func:`dictionary_text`), as Parquet stores them, not decoded value by value.

    One pyarrow dataset scan of all the files: its threads open and read several files at once, so a folder
    of small files (the prediction log's, a file per flush) costs a fraction of a read per file.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    if not uris:
        raise ValueError("file_batches needs at least one file")
    located = [url_to_fs(uri) for uri in uris]
    filesystems = {fs for fs, _ in located}  # fsspec's instances compare by protocol and options
    if len(filesystems) > 1:
        kinds = ", ".join(sorted(str(fs.protocol) for fs in filesystems))
        raise ValueError(f"the files lie on {len(filesystems)} filesystems ({kinds}); one read takes one")
    read_format: Any = "parquet"
    if text_as_dictionary:
        schema = dictionary_text(schema)
        text = [field.name for field in schema if pa.types.is_dictionary(field.type)]
        read_format = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=text))
    dataset = ds.dataset(
        [path for _, path in located], schema=schema, format=read_format, filesystem=located[0][0]
    )
    return iter(
        dataset.to_batches(
            columns=schema.names, filter=None if filters is None else pq.filters_to_expression(filters)
        )
    )


def dictionary_text(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its text columns as dictionaries of that text."""
    return pa.schema(
        [
            field.with_type(pa.dictionary(pa.int32(), field.type))
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            else field
            for field in schema
        ]
    )


def batch_runs(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[list[pa.RecordBatch]]:
    """The non-empty batches, in runs of at least ``rows`` rows (a run ends with the batch that reaches it),
    the last run whatever is left; nothing for no rows at all. Streams: one run is held at a time."""
    held, count = [], 0
    for batch in batches:
        if batch.num_rows:
            held.append(batch)
            count += batch.num_rows
        if count >= rows:
            yield held
            held, count = [], 0
    if held:
        yield held


def aggregate_file_group(
    uris: Sequence[str],
    schema: pa.Schema,
    filters: list[tuple[str, str, Any]] | None,
    columns: list[str],
    fn: PartitionFn,
    keys: Sequence[str],
    how: Mapping[str, Aggregation],
) -> pd.DataFrame:
    """``fn``'s partials of one group of files (:func:`file_batches`), combined across its calls (one call's
    as ``fn`` gave them: the driver combines every group's): ``fn`` gets ``columns`` of about
    :data:`ROWS_PER_CALL` rows at a time (the read batch that reaches it included: at most 131,072 more), text
    as pandas categories (the files' dictionaries unified), and is never called on a file's empty part; a
    group without any row gets ``fn``'s partials of none."""

    read = dictionary_text(schema)

    def call(batches: list[pa.RecordBatch]) -> pd.DataFrame:
        return fn(pa.Table.from_batches(batches, schema=read).select(columns).to_pandas())

    runs = batch_runs(file_batches(uris, schema, filters, text_as_dictionary=True), ROWS_PER_CALL)
    partials = [call(run) for run in runs] or [call([])]
    if len(partials) == 1:
        return partials[0]
    return combine_partials(pd.concat(partials, ignore_index=True), keys, how)


def aggregate_parquet_files(
    map_files: Callable[[Callable[[list[str]], pd.DataFrame], list[list[str]]], list[pd.DataFrame]],
    tasks: int,
    files: Sequence[str],
    columns: Sequence[str],
    fn: PartitionFn,
    keys: Sequence[str],
    how: Mapping[str, Aggregation],
    between: tuple[str, Any, Any] | None,
) -> pd.DataFrame:
    """:meth:`Engine.aggregate_parquet` on any engine's ``map_files``: the files in ``tasks`` groups of about
    equal bytes (:func:`plan_files`), each group read and aggregated by one task (:func:`aggregate_file_group`),
    the tasks' partials combined on the driver, sorted by ``keys``."""
    if not files:
        raise ValueError("aggregate_parquet needs at least one file")
    selected = list(columns)
    read = selected if between is None or between[0] in selected else [*selected, between[0]]
    common, groups = plan_files(files, read, tasks)
    filters = None if between is None else between_filters(common.field(between[0]).type, *between)
    found = map_files(
        lambda group: aggregate_file_group(group, common, filters, selected, fn, keys, how), groups
    )
    combined = combine_partials(pd.concat(found, ignore_index=True), keys, how)
    return combined.sort_values(list(keys)).reset_index(drop=True)
