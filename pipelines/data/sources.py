"""A dataset's source: the daily partitions a team's upstream writes, as Parquet or CSV, on any fsspec URI.

The contract's ``source.uri`` (or ``CT_SOURCE_URI``) is a template: ``{ds}`` becomes the day, so
``s3://lake/tx/ds={ds}`` and ``/data/exports/{ds}.csv`` both work. A folder is read whole (files whose names
start with ``_`` or ``.`` are skipped, as Spark and Hive do), a file or a glob as it is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.data.contract import Contract
from pipelines.settings import FileFormat, Settings

SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "csv": (".csv", ".csv.gz", ".tsv")}


class SourceMissingError(FileNotFoundError):
    """The source has no data for a day (yet): upstream is late or the URI is wrong. A retry may succeed."""


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


def _fill(settings: Settings, contract: Contract, ds: str) -> str:
    uri = os.path.expandvars(template(settings, contract))
    try:
        return uri.format(ds=ds, data_root=settings.resolved_data_root, dataset=contract.dataset)
    except (KeyError, IndexError) as exc:
        raise ValueError(
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
    for field in schema:
        data_type = field.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
            data_type = pa.string()
        types[field.name] = str(data_type)
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


def unreadable_files(source: SourcePartition, contract: Contract) -> list[UnreadableFile]:
    """Files that fail before any row is read: empty, a Parquet footer or CSV header that does not parse, or
    a Parquet file whose columns have other types than the day's first file (no engine reads them alike).

    Only footers and first lines are read, so this is cheap however large the files are.
    """
    broken = []
    first: tuple[str, dict[str, str]] | None = None  # a Parquet file's name and column types
    for uri in source.files:
        fs, path = url_to_fs(uri)
        if int(fs.info(path).get("size") or 0) == 0:
            broken.append(UnreadableFile(uri, "empty file (0 bytes)"))
            continue
        try:
            if source.format == "parquet":
                with fs.open(path, "rb") as fh:
                    types = _column_types(pq.read_schema(fh))
                first = first or (uri.rsplit("/", 1)[-1], types)
                if reason := _schema_difference(types, *first):
                    broken.append(UnreadableFile(uri, reason))
            else:
                with fs.open(path, "rb", compression="infer") as fh:
                    header = fh.readline().decode("utf-8").strip()
                if not header:
                    broken.append(UnreadableFile(uri, "no header line"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            broken.append(UnreadableFile(uri, f"not a readable {source.format} file: {exc}"))
    return broken
