"""The Dask engine: a client on a scheduler (``CT_DASK_SCHEDULER``), or embedded: Dask's threaded scheduler in
this process for small inputs, a LocalCluster of worker processes for large ones."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.engines.base import (
    Aggregation,
    KeyFn,
    PartitionFn,
    R,
    Reduction,
    Repeated,
    Scan,
    T,
    Table,
    aggregate_parquet_files,
    arrow_meta,
    between_filters,
    combine_partials,
    combined_moments,
    csv_header_groups,
    local_path,
    parquet_footers,
    partition_moments,
)
from pipelines.host import usable_cores
from pipelines.settings import FileFormat, Settings

CSV_BLOCK_BYTES = 64 * 2**20  # a CSV file is read in partitions of about this many bytes


def dask_cores(settings: Settings) -> int:
    """The cores Dask works on: ``CT_DASK_WORKERS``, or the machine's (the threads of the threaded scheduler,
    the worker processes of an embedded LocalCluster)."""
    return settings.dask_workers or usable_cores()


@contextlib.contextmanager
def dask_client(
    settings: Settings, input_bytes: int | None = None, processes_from_mb: int | None = None
) -> Iterator[Any]:
    """A client on the configured scheduler, on an embedded LocalCluster sized for the input, or none.

    Inputs of at least ``processes_from_mb`` (default ``CT_DASK_PROCESSES_FROM_MB``), or of unknown size,
    get a LocalCluster of worker processes, one per core: the per-partition pandas work holds the GIL, so
    threads would not add cores, and workers spill to disk past their memory limit, so a window larger than
    memory still prepares. Smaller inputs run on Dask's threaded scheduler in this process, one thread per
    core, and the context yields no client: nothing starts, and ``distributed`` is not even imported (a
    LocalCluster of threads took 0.2-0.3 s of a monitor task's 1M-row pass, with the import). Every
    computation goes through ``dask.compute``, which takes whichever scheduler this context set.
    """
    import dask

    # Partitions stay plain pandas (object strings), the types pandera checks and Spark hands over too.
    with dask.config.set({"dataframe.convert-string": False}):
        threshold = settings.dask_processes_from_mb if processes_from_mb is None else processes_from_mb
        cores = dask_cores(settings)
        if not settings.dask_scheduler and input_bytes is not None and input_bytes < threshold * 2**20:
            # An executor, not the name "threads": naming a scheduler makes Dask import distributed to look
            # for a client. The pool is this context's own, shut down with it. Joins shuffle in memory
            # (Dask's default without a client shuffles through files on disk).
            with (
                ThreadPoolExecutor(cores, "ct-dask") as pool,
                dask.config.set({"scheduler": pool, "dataframe.shuffle.method": "tasks"}),
            ):
                yield None
            return
        from distributed import Client, LocalCluster

        if settings.dask_scheduler:
            with Client(settings.dask_scheduler) as client:
                yield client
            return
        with (
            LocalCluster(
                n_workers=cores,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,  # worker start/stop chatter; errors still show
                local_directory=str(settings.state_dir / "dask-worker-space"),
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


def _repeated(keys: Any, examples: int) -> tuple[Any, Any]:
    """Lazy (surplus rows, smallest repeated keys) of a Dask series of keys."""
    counts = keys.value_counts()
    repeated = counts[counts > 1]
    smallest = repeated.map_partitions(
        lambda s: pd.Series(sorted(map(str, s.index))[:examples], dtype=object), meta=(None, object)
    )
    return (repeated - 1).sum(), smallest


def _filtered(paths: Sequence[str], column: str, low: Any, high: Any) -> tuple[pa.Schema, list[Any]]:
    """The files' common schema and the filters of ``low <= column < high`` on it.

    A filtered read casts every file to one schema, by default the first file's: a first file whose column
    was all nulls (typed null) would fail every later file's strings. The common schema takes the type the
    other files give it. Times compare with the column's kind: naive times (UTC by this project's
    convention) with naive bounds.
    """
    schema, _ = parquet_footers(paths)
    return schema, between_filters(schema.field(column).type, column, low, high)


def _quoted_line_breaks_as_lf(frame: pd.DataFrame) -> pd.DataFrame:
    """Every line break inside a value (CRLF, or a lone CR) read as LF, as on Spark
    (:meth:`SparkEngine._read_csv`): pandas keeps the bytes as written."""
    changed = {
        name: frame[name].str.replace("\r\n?", "\n", regex=True)
        for name in frame.columns
        if frame[name].str.contains("\r", regex=False, na=False).any()
    }
    return frame.assign(**changed) if changed else frame


def _own_names(stem: str, count: int, taken: Collection[str]) -> list[str]:
    """``count`` names for temporary columns, none of them in ``taken`` (a ``_`` put before the stem till so)."""
    while any(str(name).startswith(stem) for name in taken):
        stem = f"_{stem}"
    return [f"{stem}{index}" for index in range(count)]


def negative_zero(values: pd.Series) -> pd.Series:
    """Whether each value is -0.0 (1) or not (0): pandas and Spark both sort it as 0.0, and rows equal but for it
    differ once written (their hashes too), so a sort breaks the tie on it."""
    floats = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(((floats == 0) & np.signbit(floats)).astype("int8"), index=values.index)


#: Rows (of the first two sort keys) taken from each partition to cut the rows into ranges, and in all (fewer from
#: each partition where many partitions), so that the driver sorts a bounded sample.
RANGE_SAMPLE = 1000
RANGE_SAMPLE_TOTAL = 200_000


def _missing(values: pd.Series) -> np.ndarray:
    """Which values sort as null: pandas' nulls and a nullable Float64's NaN, which pandas keeps apart."""
    missing = values.isna().to_numpy()
    if values.dtype.kind == "f":
        missing |= np.isnan(values.to_numpy(dtype="float64", na_value=np.nan))
    return missing


def _pair_order(pair: tuple[Any, Any]) -> tuple[Any, tuple[Any, ...]]:
    """A (first, second) key pair's place in the sort: by the first, then the second, a null second (None) last."""
    return pair[0], (1,) if pair[1] is None else (0, pair[1])


def _range_cuts(keys: Any, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The (first key, second key) pairs that cut ``keys`` (a Dask frame of the sort's first one or two keys) into
    about ``partitions`` ranges of as many rows: quantiles of evenly spaced rows of each partition (one pass over
    the two columns), distinct, ascending. Cut on the pair, not the first key alone, a first value that many rows
    share (an entity with most of the events) is spread over several ranges by its second key (their times).

    Returns the pairs' first values (ascending; a value repeats where its rows span several ranges) and their
    second values (None for a null, which sorts last; None throughout for one key)."""
    per = max(16, min(RANGE_SAMPLE, RANGE_SAMPLE_TOTAL // max(partitions, 1)))

    def spaced(frame: pd.DataFrame) -> pd.DataFrame:
        return frame if len(frame) <= per else frame.iloc[np.linspace(0, len(frame) - 1, per).astype(int)]

    sample = keys.map_partitions(spaced, meta=keys._meta).compute()
    # In Python's order, which _range_of's search and the partitions' sort (Arrow's) keep: a categorical's by value
    present = ~_missing(sample.iloc[:, 0])
    firsts = sample.iloc[:, 0][present].to_numpy(dtype=object)
    seconds = np.full(len(firsts), None, dtype=object)
    if sample.shape[1] > 1:
        second = sample.iloc[:, 1][present]
        seconds[~_missing(second)] = second[~_missing(second)].to_numpy(dtype=object)
    pairs = sorted(zip(firsts, seconds, strict=True), key=_pair_order)
    picked = sorted(
        {pairs[len(pairs) * i // partitions] for i in range(1, partitions)} if pairs else set(),
        key=_pair_order,
    )
    return np.array([a for a, _ in picked], dtype=object), np.array([b for _, b in picked], dtype=object)


def _range_of(
    first: pd.Series, firsts: np.ndarray, second: pd.Series | None = None, seconds: np.ndarray | None = None
) -> pd.Series:
    """Each row's range: how many cut pairs (``firsts``, ``seconds``: :func:`_range_cuts`) are at or below its
    (first, second) keys; a null first key's is the last (nulls sort last), a null second sorts after every value.
    Without ``second``, the cuts' first values alone: a row is at or past every cut of its first value."""
    ranges = np.full(len(first), len(firsts), dtype="int64")
    present = np.flatnonzero(~_missing(first))
    values = first.iloc[present].to_numpy(dtype=object)
    low = np.searchsorted(firsts, values, side="left")
    high = np.searchsorted(firsts, values, side="right")
    found = high.copy()
    if second is not None and seconds is not None:
        # A first value some cuts hold: the cuts of that value at or below the row's second key. The rows grouped
        # by their first value once (not scanned again for each value: rows times cuts)
        spans = np.flatnonzero(high > low)
        beyond = _missing(second)[present[spans]]
        theirs = second.iloc[present[spans]].to_numpy(dtype=object)
        order = np.argsort(low[spans], kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(low[spans][order])) + 1):
            if not len(rows):
                continue
            at, end = low[spans[rows[0]]], high[spans[rows[0]]]
            known = np.array([b for b in seconds[at:end] if b is not None], dtype=object)
            counts = np.full(len(rows), end - at, dtype="int64")  # a null second: past every cut of its value
            valued = ~beyond[rows]
            counts[valued] = np.searchsorted(known, theirs[rows[valued]], side="right")
            found[spans[rows]] = at + counts
    ranges[present] = found
    return pd.Series(ranges, index=first.index)


def _ranges_of(frame: pd.DataFrame, firsts: np.ndarray, seconds: np.ndarray) -> pd.Series:
    """:func:`_range_of` of a partition's first one or two sort keys."""
    second = frame.iloc[:, 1] if frame.shape[1] > 1 else None
    return _range_of(frame.iloc[:, 0], firsts, second, seconds)


def _sortable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary column as its values; a float column's NaN (a nullable Float64 keeps them apart) as null."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    return column


def sorted_frame(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``frame``'s rows by ``keys``, each ascending, nulls (and NaN, which pandas takes for null) last, rows equal
    in every key in their order; a categorical key by its values, as Spark sorts them. Arrow's sort reads a later
    key only where the earlier ones tie; pandas' factorises every key of every row (measured on a 200,000-row
    partition of prepare's 11 raw columns and 2 sign keys: 0.74 s, Arrow's 0.32 s)."""
    table = pa.Table.from_pandas(frame[list(keys)], preserve_index=False)  # NaN in a float column: null
    columns = [_sortable(c) for c in table.columns]
    order = pc.sort_indices(
        pa.Table.from_arrays(columns, names=table.column_names),
        sort_keys=[(name, "ascending", "at_end") for name in table.column_names],
    )
    return frame.take(order.to_numpy()).reset_index(drop=True)


class DaskEngine:
    """:class:`pipelines.engines.base.Engine` on Dask: whichever scheduler :func:`dask_client` set."""

    name = "dask"

    def __init__(self, client: Any | None, cores: int | None = None):
        """``client``: the distributed client computations run on; None on the threaded scheduler, whose
        threads are ``cores`` (default: the machine's)."""
        import pyarrow as pa_arrow

        self.client = client
        self.cores = cores or usable_cores()
        self.unreadable_errors: tuple[type[BaseException], ...] = (pa_arrow.ArrowException,)
        self.read_failed_errors: tuple[type[BaseException], ...] = (OSError,)  # pyarrow's, fsspec's

    def read(
        self,
        files: Sequence[str],
        fmt: FileFormat = "parquet",
        csv_delimiter: str = ",",
        arrow_strings: bool = False,
        between: tuple[str, Any, Any] | None = None,
        csv_whole_files: Collection[str] = (),
    ) -> Table:
        import dask
        import dask.dataframe as dd

        paths = [local_path(f) for f in files]
        if fmt == "csv":
            if between is not None:
                raise ValueError("between filters Parquet reads only")
            return self._read_csv(files, csv_delimiter, set(csv_whole_files))
        # No hive partitioning: a source folder named ds=2026-11-20 must not add a "ds" column.
        # Arrow strings: the monitor's pass over 1M logged rows took 1.0-1.3 s instead of 1.5-1.7 s. (Dask's
        # categoricals were as fast, but fail on a file whose column is all nulls, typed null.)
        dataset: dict[str, Any] = {"partitioning": None}
        filters = None
        if between is not None:
            # The filter in Arrow, before pandas: the monitor's pass over 2M logged rows, a few of each
            # file's rows outside its interval, took 1.18-1.29 s of CPU instead of 1.36-1.44 s in pandas.
            dataset["schema"], filters = _filtered(paths, *between)
        with dask.config.set({"dataframe.convert-string": arrow_strings}):
            # index=False: a column a pandas writer kept as its index (its metadata says so) stays a column, as
            # Spark and the footer check read it; it was the index here, and a broken unique rule on it passed.
            return dd.read_parquet(
                paths, index=False, ignore_metadata_file=True, dataset=dataset, filters=filters
            )

    @staticmethod
    def _read_csv(files: Sequence[str], csv_delimiter: str, whole: set[str]) -> Table:
        """The files by their headers: a group of files with the same header at a time (Dask puts the first
        file's header before every block of a file but its first), the columns in the first group's order.
        A file in ``whole`` is one partition (Dask splits a file at the first line break after each block's
        start, inside quotes or not); the others are read in blocks of :data:`CSV_BLOCK_BYTES`."""
        import dask.dataframe as dd

        groups = csv_header_groups(files, csv_delimiter)
        order = groups[0][0]
        tables = []
        for header, members in groups:
            for blocksize in (CSV_BLOCK_BYTES, None):
                chosen = [local_path(f) for f in members if (f in whole) == (blocksize is None)]
                if not chosen:
                    continue
                table = dd.read_csv(
                    chosen,
                    dtype=str,
                    sep=csv_delimiter,
                    # The header's names as they are: pandas would rename an empty one ("Unnamed: 5", the
                    # name a trailing delimiter gives), and the contract's check names the column it found.
                    header=0,
                    names=header,
                    keep_default_na=False,
                    na_values=[""],
                    blocksize=blocksize,
                )
                if blocksize is None:  # files with quotes: a value may hold a line break
                    table = table.map_partitions(_quoted_line_breaks_as_lf, meta=table._meta)
                tables.append(table[order] if sorted(header) == sorted(order) else table)
        return tables[0] if len(tables) == 1 else dd.concat(tables)

    def empty_frame(self, table: Table) -> pd.DataFrame:
        return table._meta.copy()

    def select(self, table: Table, columns: Sequence[str]) -> Table:
        return table[list(columns)]

    def map_partitions(self, table: Table, fn: PartitionFn, schema: pa.Schema) -> Table:
        return table.map_partitions(fn, meta=arrow_meta(schema))

    def scan(
        self,
        table: Table,
        summarise: PartitionFn,
        schema: pa.Schema,
        keys: Mapping[str, KeyFn],
        examples: int,
    ) -> Scan:
        import dask

        summaries = table.map_partitions(summarise, meta=arrow_meta(schema))
        lazy_keys = {
            rule: _repeated(table.map_partitions(key, meta=(None, object)), examples)
            for rule, key in keys.items()
        }
        computed, counted = dask.compute(summaries, lazy_keys)
        repeated = {
            rule: Repeated(int(surplus), sorted(smallest)[:examples])
            for rule, (surplus, smallest) in counted.items()
        }
        return Scan(computed.reset_index(drop=True), repeated)

    def moments(self, table: Table, columns: Sequence[str]) -> dict[str, tuple[int, float, float]]:
        import dask

        names = list(columns)
        meta = pd.DataFrame(
            {"column": pd.Series(dtype=object), "count": pd.Series(dtype="int64"), "mean": [], "m2": []}
        )
        parts = table[names].map_partitions(partition_moments, names, meta=meta)
        return combined_moments(dask.compute(parts)[0])

    def aggregate(
        self,
        table: Table,
        fn: PartitionFn,
        schema: pa.Schema,
        keys: Sequence[str],
        how: Mapping[str, Aggregation],
    ) -> pd.DataFrame:
        meta = arrow_meta(schema)

        def combine(frame: pd.DataFrame) -> pd.DataFrame:
            return combine_partials(frame, keys, how)

        # A tree of pandas combines, eight partials at a time: Dask's groupby-agg on the same small frames
        # took longer (the monitor's pass over 10M logged rows, in one process: 11.1 s against 9.5 s).
        partials = table.map_partitions(fn, meta=meta)
        combined = partials.reduction(
            chunk=combine, combine=combine, aggregate=combine, meta=meta, split_every=8
        ).compute()
        return combined.sort_values(list(keys)).reset_index(drop=True)

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
        # Its own tasks, as on Spark, not read()'s partitions: read() makes a partition of every file, and
        # the monitor's pass over a day of log as the app writes it (8,641 files of 116 rows, a file per
        # 10 s flush) took 93 s so; a few groups of files, each scanned by one pyarrow dataset, took 7.4 s.
        tasks = 2 * (sum(self.client.nthreads().values()) if self.client is not None else self.cores)
        return aggregate_parquet_files(self.map_files, tasks, files, columns, fn, keys, how, between)

    def join(self, left: Table, right: Table, on: Sequence[str]) -> Table:
        return left.merge(right, on=list(on), how="inner")

    def reduce(self, table: Table, keys: Sequence[str], how: Mapping[str, tuple[str, Reduction]]) -> Table:
        sums = {name: column for name, (column, fn) in how.items() if fn == "sum"}

        # A key with no value has no sum (pandas says 0), as on Spark and in SQL: the sums' counts are taken in
        # the same pass, under names no output column has, and dropped once they have masked the sums.
        counts = dict(zip(sums, _own_names("__count_", len(sums), {*how, *keys}), strict=True))

        def part(frame: pd.DataFrame) -> pd.DataFrame:
            grouped = frame.groupby(list(keys), as_index=False, sort=False)
            reduced = grouped.agg(
                **dict(how), **{counts[name]: (column, "count") for name, column in sums.items()}
            )
            for name, count in counts.items():
                reduced[name] = reduced[name].where(reduced[count] > 0)
            return reduced.drop(columns=list(counts.values()))

        # Each key's rows in one partition, then pandas groups them there. Dask's own groupby-agg with
        # split_out gave a table that a later merge on the keys failed to plan (dask-expr took the groupby's
        # index for the keys' columns: "['entity_id' 'event_time'] not in index").
        shuffled = table.shuffle(list(keys), npartitions=table.npartitions)
        return shuffled.map_partitions(part, meta=part(table._meta))

    def sort(self, table: Table, keys: Sequence[str]) -> Table:
        # Ranges of the first two keys' values to partitions (a null first key in the last), cut at quantiles of a
        # sample of them (Dask's own sort_values takes quantiles of every value of one key, which on a string key
        # cost more than its shuffle, cannot place a null, and puts a value most rows share in one partition),
        # then each partition sorted by every key (:func:`sorted_frame`) and, key by key, by whether a float key
        # holds -0.0 (pandas and Arrow take it for 0.0), as on Spark.
        cutting = list(keys[:2])
        firsts, seconds = _range_cuts(table[cutting], table.npartitions)
        floats = [c for c in keys if table[c].dtype.kind == "f"]
        part, *signs = _own_names("__sort_", len(floats) + 1, table.columns)
        ranged = table.assign(
            **{part: table[cutting].map_partitions(_ranges_of, firsts, seconds, meta=(None, "int64"))},
            **{
                name: table[c].map_partitions(negative_zero, meta=(None, "int8"))
                for name, c in zip(signs, floats, strict=True)
            },
        )
        by = [*keys, *signs]
        shuffled = ranged.set_index(part, divisions=list(range(len(firsts) + 2)))
        # Each partition's index from 0, so the set_index's divisions are not the result's
        return shuffled.map_partitions(
            lambda frame: sorted_frame(frame.reset_index(drop=True), by).drop(columns=signs),
            meta=table._meta.reset_index(drop=True),
            clear_divisions=True,
        )

    def write_parquet(
        self, table: Table, uri: str, partition_on: str | None = None, sorted_by: Sequence[str] = ()
    ) -> None:
        # A partition's rows go to its files in order (the partitioned writer groups them keeping their order).
        table.to_parquet(
            local_path(uri),
            partition_on=[partition_on] if partition_on else None,
            write_index=False,
            write_metadata_file=False,
            # Names that sort as the partitions do: Dask's own part.10 sorts before part.2.
            name_function=lambda i: f"part.{i:06d}.parquet",
        )

    def map_files(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        import dask

        return list(dask.compute(*[dask.delayed(fn, pure=False)(item) for item in items]))
