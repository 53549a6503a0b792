"""A dataset's source: the daily partitions a team's upstream writes, as Parquet or CSV, on any fsspec URI.

The contract's ``source.uri`` (or ``CT_SOURCE_URI``) is a template: ``{ds}`` becomes the day, so
``s3://lake/tx/ds={ds}`` and ``/data/exports/{ds}.csv`` both work. A folder is read whole (files whose names
start with ``_`` or ``.`` are skipped, as Spark and Hive do), a file or a glob as it is.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.data.contract import Contract
from pipelines.data.validation import EXAMPLES
from pipelines.engines.base import first_csv_line, parse_csv_header
from pipelines.settings import FileFormat, Settings

SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "csv": (".csv", ".csv.gz", ".tsv")}


class SourceMissingError(FileNotFoundError):
    """The source has no data for a day (yet): upstream is late or the URI is wrong. A retry may succeed."""


class SourceReadError(OSError):
    """Reading a source file failed for a reason that is no fault of its content: a timeout, a dropped
    connection, a permission, a file that went away while the day was read. The task fails and Airflow's retry
    reads the day again; the day is not quarantined. Content that does not parse never raises it."""


@dataclass(frozen=True)
class UnreadableFile:
    """A file of a source partition that cannot be read at all (empty, truncated, not the declared format)."""

    uri: str
    reason: str


@dataclass(frozen=True)
class SourcePartition:
    """One day of a source: its files and a fingerprint that changes when any file does."""

    day: dt.date
    uri: str
    format: FileFormat
    files: list[str]
    fingerprint: str
    bytes: int = 0


def template(settings: Settings, contract: Contract) -> str:
    return settings.source_uri or contract.source.uri


def resolve(settings: Settings, contract: Contract, day: dt.date) -> str:
    """The source URI of one day, with ``{ds}``, ``{data_root}``, ``{dataset}`` and ``${VAR}`` filled in."""
    return _fill(settings, contract, day.isoformat())


def pattern(settings: Settings, contract: Contract) -> str:
    """The source URI with everything but ``{ds}`` filled in: where the days are looked for."""
    return _fill(settings, contract, "{ds}")


class SourceUriError(ValueError):
    """The source URI template names a placeholder or an environment variable that is not there."""


def _fill(settings: Settings, contract: Contract, ds: str) -> str:
    uri = os.path.expandvars(template(settings, contract))
    # expandvars leaves an unset variable as it is. Only ${NAME} is taken for one: a bare $ is a path's own
    # (Azure's $web container).
    if unset := re.findall(r"\$\{(\w+)\}", uri):
        names = ", ".join(sorted(set(unset)))
        raise SourceUriError(
            f"source URI {uri!r} names the environment variable(s) {names}, which are not set"
        )
    try:
        return uri.format(ds=ds, data_root=settings.resolved_data_root, dataset=contract.dataset)
    except (KeyError, IndexError) as exc:
        raise SourceUriError(
            f"source URI {uri!r} has an unknown placeholder {exc}; use {{ds}}, {{data_root}} or {{dataset}}"
        ) from None


def check_gaps(settings: Settings, contract: Contract, missing: list[dt.date]) -> None:
    """Raise :class:`SourceMissingError` unless the contract allows these days of the window to be missing.

    The message names the days, the dataset and the source URI template the days were looked for at.
    """
    if not missing:
        return
    days = ", ".join(day.isoformat() for day in missing)
    where = f"dataset {contract.dataset}, source {pattern(settings, contract)}"
    rule = contract.source
    if rule.missing_days == "fail":
        raise SourceMissingError(
            f"no data for {days} ({where}): upstream has not written it yet, or the source URI is wrong. If "
            "days may be missing, set source.missing_days: skip and source.max_missing_days in the contract"
        )
    if len(missing) >= settings.window_days:
        raise SourceMissingError(f"no data for any day of the window ({days}; {where})")
    if len(missing) > rule.max_missing_days:
        raise SourceMissingError(
            f"{len(missing)} days of the window have no data ({days}; {where}), more than the contract's "
            f"source.max_missing_days {rule.max_missing_days}"
        )


def _is_data_file(path: str, fmt: str, root: str) -> bool:
    """A data file of the day's folder ``root``: none of its names below it starts with ``_`` or ``.`` (a
    writer's ``_temporary/`` or ``.staging/`` folder holds files not yet committed)."""
    below = path[len(root) :].strip("/").split("/")
    return not any(part.startswith(("_", ".")) for part in below) and below[-1].lower().endswith(
        SUFFIXES[fmt]
    )


def partition(settings: Settings, contract: Contract, day: dt.date) -> SourcePartition:
    """List one day's files; raise :class:`SourceMissingError` when there are none."""
    uri = resolve(settings, contract, day)
    fmt = contract.source.format
    fs, path = url_to_fs(uri)
    if any(ch in path for ch in "*?["):
        paths = sorted(p for p in fs.glob(path) if fs.isfile(p))
    elif fs.isdir(path):
        paths = sorted(p for p in fs.find(path) if _is_data_file(p, fmt, path))
    elif fs.isfile(path):
        paths = [path]
    else:
        paths = []
    if not paths:
        raise SourceMissingError(
            f"no {fmt} data for {day} at {uri} (dataset {contract.dataset}): upstream has not written it yet, "
            "or the source URI is wrong"
        )
    listing = []
    for p in paths:
        info = fs.info(p)
        stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
        listing.append([p, int(info.get("size") or 0), str(stamp)])
    fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    size = sum(entry[1] for entry in listing)
    return SourcePartition(day, uri, fmt, [fs.unstrip_protocol(p) for p in paths], fingerprint, size)


def _column_types(schema: pa.Schema) -> dict[str, str]:
    """Each column's type as an engine reads it: a dictionary of strings is a string, any string type too."""
    types = {}
    for column in schema:
        data_type = column.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
            data_type = pa.string()
        types[column.name] = str(data_type)
    return types


def _schema_difference(types: dict[str, str], first_name: str, first: dict[str, str]) -> str | None:
    """Why a day's Parquet file cannot be read together with its first file (same columns, other types)."""
    for name, data_type in types.items():
        if name in first and first[name] != data_type:
            return (
                f"column '{name}' is {data_type} in this file but {first[name]} in {first_name}: "
                "one day's files must have the same types"
            )
    return None


@dataclass(frozen=True)
class SourceFiles:
    """What the files of a day hold before any row is read: each readable file's columns, in its order (a
    Parquet footer's, a CSV header's), and the files that cannot be read as their format at all."""

    columns: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    #: Parquet files whose footer says a time column may hold a time outside pandas' nanosecond range (or has no
    #: statistics to tell), with those columns: :func:`times_outside` reads them.
    times_to_check: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvShape:
    """The rows of a CSV file with another number of fields than its header (``malformed``, a few of them as
    ``examples``), or why the file does not parse as CSV at all (``error``); whether it holds a quote."""

    uri: str
    malformed: int = 0
    examples: list[str] = field(default_factory=list)
    error: str | None = None
    #: The file holds a ``"``: a quoted value may hold a line break, so no reader may split it at line breaks.
    quoted: bool = False
    #: Some line ends in a lone CR (an old Mac export): Dask finds a block's lines by LF, and read every block
    #: of such a file to its end, each row as many times as the file had blocks.
    lone_cr: bool = False

    @property
    def whole(self) -> bool:
        """No reader may split the file at line breaks: each is read by one task."""
        return self.quoted or self.lone_cr


def file_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def shown_name(source: SourcePartition, uri: str) -> str:
    """A file of the day as a report names it: its path below the day's folder (its name for a file or glob)."""
    fs, root = url_to_fs(source.uri)
    _, path = url_to_fs(uri)
    below = path[len(root) :].strip("/") if path.startswith(root.rstrip("/") + "/") else ""
    return below or file_name(uri)


class _GuardedReader(io.RawIOBase):
    """A source file's bytes, whose I/O failures are :class:`SourceReadError`: whatever parses the bytes (pyarrow,
    gzip, the csv module) may raise ``OSError`` about their content too, and only this tells the two apart."""

    def __init__(self, handle: IO[bytes], uri: str):
        super().__init__()
        self._handle, self._uri = handle, uri

    def _failed(self, exc: OSError) -> SourceReadError:
        return SourceReadError(f"reading source file {self._uri} failed: {type(exc).__name__}: {exc}")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # a writable buffer (collections.abc.Buffer from Python 3.12)
        view = memoryview(buffer).cast("B")
        try:
            data = self._handle.read(len(view))
        except OSError as exc:
            raise self._failed(exc) from exc
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._handle.seek(offset, whence)
        except OSError as exc:
            raise self._failed(exc) from exc

    def tell(self) -> int:
        return self._handle.tell()


@contextlib.contextmanager
def _source_bytes(uri: str) -> Iterator[io.BufferedIOBase]:
    """A source file's bytes, decompressed when its name ends in ``.gz``; I/O failures raise
    :class:`SourceReadError` (opening it too)."""
    fs, path = url_to_fs(uri)
    try:
        handle = fs.open(path, "rb")
    except OSError as exc:
        raise SourceReadError(f"opening source file {uri} failed: {type(exc).__name__}: {exc}") from exc
    with handle:
        raw = io.BufferedReader(_GuardedReader(handle, uri))
        yield gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw


class NotUtf8Error(ValueError):
    """A CSV file's bytes are not UTF-8 (the contract's encoding); names the line and the byte."""


class NulByteError(ValueError):
    """A CSV file holds a NUL byte: UTF-8, but pandas ends the value there and Spark keeps it whole, so the
    engines would commit different rows (and content hashes) from one file; names the line."""


class _Scanned(io.RawIOBase):
    """A CSV file's bytes as they are read: whether a ``"`` was among them, and that they are UTF-8 (else
    :class:`NotUtf8Error`). Spark reads bytes that are not UTF-8 as U+FFFD and passes the file, pandas fails
    the read: both engines judge such a file alike only if it is found first."""

    def __init__(self, inner: io.BufferedIOBase):
        super().__init__()
        self._inner, self.quoted = inner, False
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._lines = 0  # line breaks before this chunk: LF, CRLF or a lone CR (engines.base.CSV_LINE_BREAK)
        self._cr_last = False  # the chunk before ended with a CR: an LF starting this one is its CRLF
        #: The line breaks outside quoted values by kind: the lines' own ends.
        self.ends = {"LF": 0, "CRLF": 0, "CR": 0}
        self._inside = False  # this chunk starts inside a quoted value
        # The chunk before ended with a CR outside quotes: whether it is a CRLF is this chunk's to tell.
        self._end_cr = False

    @property
    def lines(self) -> int:
        """The line breaks read so far."""
        return self._lines

    @property
    def lone_cr(self) -> bool:
        """Some line ends in a CR alone."""
        return self.ends["CR"] > 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        self.quoted = self.quoted or b'"' in data
        pending = len(self._utf8.getstate()[0])  # a character's first bytes, from the chunk before
        try:
            self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            at = max(0, exc.start - pending)
            line = self._lines + self._breaks(data[:at], _kinds(data[:at])) + 1
            raise NotUtf8Error(f"not UTF-8 at line {line}, byte 0x{exc.object[exc.start]:02x}") from exc
        if (nul := data.find(b"\x00")) >= 0:
            line = self._lines + self._breaks(data[:nul], _kinds(data[:nul])) + 1
            raise NulByteError(
                f"a NUL byte at line {line} (pandas ends the value there, Spark keeps it: the engines would "
                "commit different rows)"
            )
        kinds = _kinds(data)  # counted once: for the lines, and for the line ends of a chunk with no quote
        self._lines += self._breaks(data, kinds)
        self._count_ends(data, kinds)
        self._cr_last = data.endswith(b"\r")
        view[: len(data)] = data
        return len(data)

    def _count_ends(self, data: bytes, kinds: tuple[int, int, int]) -> None:
        """Note the kinds of line break in ``data`` outside quoted values (a ``"`` opens or closes one; a
        doubled one inside closes and opens it again). A chunk with no quote, outside one, is counted as it is;
        a chunk whose kinds of break (inside quotes or not) were all seen outside already is not looked into:
        it adds no kind (the counts are then the least there are). So a file of one kind of line break pays for
        its first chunk only."""
        starts_outside = not self._inside
        if self._end_cr:  # the CR that ended the chunk before: an LF starting this one makes it a CRLF
            self._end_cr = False
            if starts_outside and data.startswith(b"\n"):
                self.ends["CRLF"] += 1
                data, kinds = data[1:], (kinds[0], kinds[1] - 1, kinds[2])
            else:
                self.ends["CR"] += 1
        seen = {kind for kind, count in self.ends.items() if count}
        if not self._inside and b'"' not in data:
            text, (crlf, lf, cr) = data, kinds
        elif {kind for kind, count in zip(("CRLF", "LF", "CR"), kinds, strict=True) if count} <= seen:
            self._inside ^= data.count(b'"') % 2 == 1
            self._end_cr = not self._inside and data.endswith(b"\r")
            return
        else:
            parts = data.split(b'"')
            self._inside ^= (len(parts) - 1) % 2 == 1
            text = b"\x00".join(parts[0 if starts_outside else 1 :: 2])  # NUL: no break spans two of them
            crlf, lf, cr = _kinds(text)
        if not self._inside and text.endswith(b"\r"):  # its kind is the next chunk's to tell
            self._end_cr, cr = True, cr - 1
        self.ends["CRLF"] += crlf
        self.ends["LF"] += lf
        self.ends["CR"] += cr

    def _breaks(self, data: bytes, kinds: tuple[int, int, int]) -> int:
        """The line breaks in ``data`` (its :func:`_kinds`), read after the chunk before: a CRLF cut between
        the two is one."""
        return sum(kinds) - (self._cr_last and data.startswith(b"\n"))


def _kinds(text: bytes) -> tuple[int, int, int]:
    """The CRLFs, lone LFs and lone CRs in ``text`` (a CR at its end counted lone)."""
    lf, cr = text.count(b"\n"), text.count(b"\r")
    crlf = text.count(b"\r\n") if lf and cr else 0
    return crlf, lf - crlf, cr - crlf


def _file_size(uri: str) -> int:
    fs, path = url_to_fs(uri)
    try:
        return int(fs.info(path).get("size") or 0)
    except OSError as exc:
        raise SourceReadError(f"reading the size of source file {uri} failed: {exc}") from exc


# What bad content raises while it is parsed (a SourceReadError, an OSError too, is re-raised before these):
# pyarrow's errors (some, such as a footer's "Couldn't deserialize thrift", are OSError), gzip's, UTF-8's.
_BAD_CONTENT = (pa.ArrowException, OSError, ValueError, EOFError, zlib.error)


# The times pandas holds (nanoseconds in an int64), which both engines hand their checks: a time outside it
# (a sentinel 9999-12-31, a typo 3026) failed either engine's read with no report, at every retry.
_NS_RANGE = (-(2**63) + 1, 2**63 - 1)  # int64's smallest is NaT
_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
TIME_RANGE_RULE = "within pandas' time range (1677-09-21 to 2262-04-11)"


def _unit_range(unit: str) -> tuple[int, int]:
    """The stored values of a time column of ``unit`` that lie within :data:`_NS_RANGE`."""
    per = _NS_PER[unit]
    return -(-_NS_RANGE[0] // per), _NS_RANGE[1] // per


def _parquet_columns(uri: str) -> tuple[dict[str, str], list[str]]:
    """A Parquet file's column types, and its time columns whose statistics do not show every value within
    pandas' range (outside it, or no statistics)."""
    with _source_bytes(uri) as fh:
        metadata = pq.ParquetFile(fh).metadata
    schema = metadata.schema.to_arrow_schema()
    return _column_types(schema), _times_maybe_outside(metadata, schema)


def _times_maybe_outside(metadata: pq.FileMetaData, schema: pa.Schema) -> list[str]:
    maybe = []
    for name in schema.names:
        data_type = schema.field(name).type
        if not pa.types.is_timestamp(data_type) or data_type.unit == "ns":
            continue
        low, high = _unit_range(data_type.unit)
        index = metadata.schema.names.index(name) if name in metadata.schema.names else None
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(index) if index is not None else None
            stats = chunk.statistics if chunk is not None else None
            if stats is None or not stats.has_min_max or not low <= stats.min_raw <= stats.max_raw <= high:
                maybe.append(name)
                break
    return maybe


def times_outside(item: tuple[str, list[str]]) -> dict[str, tuple[int, list[str]]]:
    """Of a Parquet file's time ``columns``, those holding a time outside pandas' range: how many rows, and
    up to five of those times, the smallest first (a task on an engine's worker; the same on every engine)."""
    import numpy as np
    import pyarrow.compute as pc

    uri, columns = item
    with _source_bytes(uri) as fh:
        table = pq.read_table(fh, columns=columns)
    found = {}
    for name in columns:
        column = table.column(name)
        low, high = _unit_range(column.type.unit)
        values = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
        values = values[~np.isnan(values)] if values.dtype.kind == "f" else values  # nulls arrive as NaN
        outside = values[(values < low) | (values > high)].astype("int64")
        if len(outside):
            shown = sorted(set(outside.tolist()))[:EXAMPLES]
            found[name] = (
                len(outside),
                [str(np.datetime64(value, column.type.unit)) for value in shown],
            )
    return found


def parquet_damage(uri: str) -> str | None:
    """Why a Parquet file's data does not decode (a damaged page, a cut column chunk), or None when every row
    group decodes: each is read whole (a task on an engine's worker). A failure to read the bytes raises
    :class:`SourceReadError`."""
    try:
        with _source_bytes(uri) as fh:
            found = pq.ParquetFile(fh)
            for group in range(found.num_row_groups):
                found.read_row_group(group)
    except SourceReadError:
        raise
    except _BAD_CONTENT as exc:
        return f"its data does not decode: {str(exc).strip()[:200]}"
    return None


def _csv_columns(uri: str, delimiter: str) -> list[str] | None:
    """The header's column names; None when the file has no header line."""
    with _source_bytes(uri) as fh:
        line = first_csv_line(fh)
    return parse_csv_header(line, delimiter) if line.strip() else None


def _duplicated(names: list[str]) -> list[str]:
    return sorted({name for name in names if names.count(name) > 1})


def inspect_files(source: SourcePartition, contract: Contract) -> SourceFiles:
    """Each file's columns, and the files that fail before any row is read: empty, a Parquet footer or CSV
    header that does not parse, a header naming a column twice, or a Parquet file whose columns have other
    types than the day's first file (no engine reads them alike).

    Only footers and first lines are read, so this is cheap however large the files are. A failure to read
    the bytes (a timeout, a lost connection) raises :class:`SourceReadError`: it says nothing about the data.
    """
    found = SourceFiles()
    first: tuple[str, dict[str, str]] | None = None  # a Parquet file's name and column types
    for uri in source.files:
        if _file_size(uri) == 0:
            found.unreadable.append(UnreadableFile(uri, "empty file (0 bytes)"))
            continue
        try:
            if source.format == "parquet":
                types, times = _parquet_columns(uri)
                first = first or (file_name(uri), types)
                if reason := _schema_difference(types, *first):
                    found.unreadable.append(UnreadableFile(uri, reason))
                    continue
                names = list(types)
                if checked := [name for name in times if name in contract.columns]:
                    found.times_to_check[uri] = checked
            else:
                header = _csv_columns(uri, contract.source.csv_delimiter)
                if header is None:
                    found.unreadable.append(UnreadableFile(uri, "no header line"))
                    continue
                if twice := _duplicated(header):
                    reason = f"the header names column(s) {', '.join(map(repr, twice))} more than once"
                    found.unreadable.append(UnreadableFile(uri, reason))
                    continue
                names = header
        except SourceReadError:
            raise
        except _BAD_CONTENT as exc:
            found.unreadable.append(UnreadableFile(uri, f"not a readable {source.format} file: {exc}"))
            continue
        found.columns[uri] = names
    return found


def csv_shape(uri: str, delimiter: str, width: int) -> CsvShape:
    """The rows of a CSV file whose number of fields is not ``width``, its header's (read whole, streaming, with
    pyarrow: a task on an engine's worker). An engine would pad such a row with nulls, drop its extra fields
    (Spark) or fail the read (pandas), so both engines give the same verdict only if it is found first.

    Fields are split as pandas splits them: ``"`` quotes (doubled inside), quoted line breaks, blank lines
    skipped. Whether the file holds a ``"`` at all is noted (``quoted``): the engines read such a file whole.
    Bytes that are not UTF-8 make the file unreadable, naming the line. A failure to read the bytes raises
    :class:`SourceReadError`.
    """
    import pyarrow.csv as pv

    name, malformed = file_name(uri), [0]
    examples: list[str] = []

    def on_malformed(row: Any) -> str:
        malformed[0] += 1
        if len(examples) < EXAMPLES:
            examples.append(
                f"{name}: a row of {row.actual_columns} fields, the header has {row.expected_columns}: "
                f"{row.text[:80]}"
            )
        return "skip"

    names = [f"f{i}" for i in range(width)]
    try:
        with _source_bytes(uri) as fh:
            seen = _Scanned(fh)
            reader = pv.open_csv(
                seen,
                read_options=pv.ReadOptions(column_names=names, skip_rows=1),
                parse_options=pv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_malformed
                ),
                # One column converted, as text: the rows are counted, not typed.
                convert_options=pv.ConvertOptions(
                    include_columns=names[:1], column_types={"f0": pa.string()}
                ),
            )
            for _ in reader:
                pass
    except SourceReadError:
        raise
    except _BAD_CONTENT as exc:
        if isinstance(exc, pa.ArrowInvalid) and "skip initial" in str(exc) and not seen.lines:
            return CsvShape(uri)  # its header alone, with no line break after it: no rows, as with one
        return CsvShape(uri, malformed[0], examples, f"not a readable csv file: {str(exc).strip()[:200]}")
    kinds = {kind: count for kind, count in seen.ends.items() if count}
    if (seen.quoted or seen.lone_cr) and len(kinds) > 1:
        # Read whole (Spark's multiLine), such a file is split at its first line's kind of break only: a later
        # lone CR was read into a value, merging two rows, and a CRLF after LF lines left its CR in the last one.
        ends = " and ".join(kinds)
        return CsvShape(
            uri,
            malformed[0],
            examples,
            f"not a readable csv file: its lines end in {ends} (outside quoted values); a file with quotes or "
            "lone-CR lines must end every line alike (Spark splits it at its first line's kind of line break "
            "only, pandas at every kind): write one kind of line break",
        )
    if seen.quoted and (stray := _stray_quote(uri, delimiter)):
        return CsvShape(uri, malformed[0], examples, f"not a readable csv file: {stray}")
    return CsvShape(uri, malformed[0], examples, quoted=seen.quoted, lone_cr=seen.lone_cr)


def _stray_quote(uri: str, delimiter: str) -> str | None:
    """Where a quoted value's closing ``"`` is followed by anything but the delimiter, a line break or the
    quote that doubles it, as in a backslash-escaped quote (``"C000\\"5133"``, MySQL's export): pandas goes on
    reading the value after the quote, Spark reads it otherwise, so the engines would commit different rows.
    Python's csv module in strict mode splits fields as pandas does and stops there; a second pass, made only
    over files that hold a quote."""
    import csv

    csv.field_size_limit(2**31 - 1)  # pandas has no limit on a value's size; the module's default is 128 KiB
    with _source_bytes(uri) as fh, io.TextIOWrapper(cast(Any, fh), encoding="utf-8", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
        try:
            for _ in reader:
                pass
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                return (
                    f"a quoted value is never closed: its quote opens on a line before {reader.line_num}, the "
                    'last, and the file ends inside it (a quote inside quotes is written doubled, "")'
                )
            return (
                f"a quoted value ends at line {reader.line_num} with a quote followed by more of the value "
                f'({exc}); inside quotes write a quote doubled (""), not escaped with a backslash: '
                "pandas and Spark read it otherwise, and the engines would commit different rows"
            )
    return None
