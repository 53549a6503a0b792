"""Validate: each day of the source against the data contract, on the run's engine, before anything trains.

Each file is checked first, alone: readable, its columns (a Parquet footer's, a CSV header's) those of the
contract, a CSV file's rows as wide as its header. Row-level rules (types, nulls, ranges, non-finite
values, categories, the event time's day) are a pandera schema applied to every partition by the engine;
rules about the whole day (row count, null share, all-null columns, unique ids, duplicate rows) are
aggregations on the same engine (:mod:`pipelines.data.validation` holds the rules). Only small findings
(counts and a few example values) ever reach the driver, so the day can be any size.

A day that holds its contract is written, with the contract's types, as a committed raw partition with a
manifest. A day that breaks it is quarantined (its files copied beside a report of every violation) and
the stage raises :class:`DataContractError`: nothing downstream runs and no model is touched.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Collection
from typing import Any

import pandas as pd

from pipelines.data import datasets, runlog, sources, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.quarantine import quarantine, save_report
from pipelines.data.validation import (
    EXAMPLES,
    FINDINGS_SCHEMA,
    MALFORMED_ROWS,
    TABLE,
    UNREADABLE,
    UNREADABLE_DATA,
    DataContractError,
    ValidationReport,
    Violation,
    coerce_partition,
    columns_disagree,
    duplicate_keys,
    file_schema_violations,
    merge_findings,
    partition_findings,
    shown_key,
    table_violations,
)
from pipelines.engines import Engine, check_engine, open_engine
from pipelines.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["DataContractError", "check_partition", "ingest_day", "validate"]


def _read(
    engine: Engine, source: sources.SourcePartition, contract: Contract, whole: Collection[str] = ()
) -> Any:
    return engine.read(source.files, source.format, contract.source.csv_delimiter, csv_whole_files=whole)


def _check_rows(
    engine: Engine,
    source: sources.SourcePartition,
    contract: Contract,
    report: ValidationReport,
    whole: Collection[str] = (),
) -> None:
    """Every partition through the pandera schema, and the duplicate rules over the whole day.

    Missing and unexpected columns are left to :func:`file_schema_violations`, which names the files.
    ``whole``: the CSV files no read may split at line breaks (:attr:`~pipelines.data.sources.CsvShape.whole`).
    """
    text, day = source.format == "csv", source.day
    raw = _read(engine, source, contract, whole)
    empty = engine.empty_frame(raw)
    none = partition_findings(empty, contract, day, text)  # the day's counts even when it has no rows
    keys = duplicate_keys(contract, list(empty.columns), text)
    scan = engine.scan(
        raw, lambda frame: partition_findings(frame, contract, day, text), FINDINGS_SCHEMA, keys, EXAMPLES
    )
    findings = pd.concat([none, scan.summaries], ignore_index=True)
    report.rows, report.null_counts, found = merge_findings(findings[findings["kind"] != "schema"])
    duplicates = {
        rule: (found_keys.surplus, [shown_key(rule, key) for key in found_keys.examples])
        for rule, found_keys in scan.repeated.items()
    }
    report.violations += found + table_violations(contract, report.rows, report.null_counts, duplicates)


def _times_outside(engine: Engine, columns: dict[str, list[str]]) -> list[Violation]:
    """A violation per time column holding times outside pandas' range, read on the engine's workers from the
    files whose footers could not rule it out. The rows are then not checked: no engine can hand them over."""
    counts: dict[str, int] = {}
    shown: dict[str, set[str]] = {}
    for found in engine.map_files(sources.times_outside, list(columns.items())):
        for name, (count, examples) in found.items():
            counts[name] = counts.get(name, 0) + count
            shown.setdefault(name, set()).update(examples)
    return [
        Violation(name, sources.TIME_RANGE_RULE, counts[name], sorted(shown[name])[:EXAMPLES])
        for name in sorted(counts)
    ]


def _unreadable(source: sources.SourcePartition, broken: list[sources.UnreadableFile]) -> Violation:
    names = [f"{sources.shown_name(source, b.uri)}: {b.reason}" for b in broken]
    return Violation(TABLE, UNREADABLE, len(broken), names[:EXAMPLES])


def _csv_shapes(engine: Engine, columns: dict[str, list[str]], contract: Contract) -> list[sources.CsvShape]:
    """Each CSV file read whole, once, on the engine's workers, by the same function on every engine."""
    check = functools.partial(_shape_of, contract.source.csv_delimiter)
    return engine.map_files(check, [(uri, len(names)) for uri, names in columns.items()])


def _csv_shape_violations(source: sources.SourcePartition, shapes: list[sources.CsvShape]) -> list[Violation]:
    """Rows with another number of fields than their file's header, and files that do not parse as CSV."""
    found = []
    if broken := [sources.UnreadableFile(shape.uri, shape.error) for shape in shapes if shape.error]:
        found.append(_unreadable(source, broken))
    if malformed := sum(shape.malformed for shape in shapes):
        examples = [example for shape in shapes for example in shape.examples]
        found.append(Violation(TABLE, MALFORMED_ROWS, malformed, examples[:EXAMPLES]))
    return found


def _damaged_files(engine: Engine, source: sources.SourcePartition) -> list[sources.UnreadableFile]:
    """The day's Parquet files whose data does not decode (their footers did), each read whole on the engine's
    workers: after a read of the day failed, whether a file or the storage failed (nothing found: the read's
    own error is raised)."""
    if source.format != "parquet":
        return []
    reasons = engine.map_files(sources.parquet_damage, list(source.files))
    return [
        sources.UnreadableFile(uri, reason)
        for uri, reason in zip(source.files, reasons, strict=True)
        if reason is not None
    ]


def _shape_of(delimiter: str, file: tuple[str, int]) -> sources.CsvShape:
    return sources.csv_shape(file[0], delimiter, file[1])


def check_partition(engine: Engine, source: sources.SourcePartition, contract: Contract) -> ValidationReport:
    """Every rule of the contract on one day of the source; the report lists what is broken.

    First each file alone: readable, its columns those of the contract, a CSV file's rows as wide as its
    header. The rows are checked only when every file can be read, all files have the same columns (in any
    order: the engines read by name) and no CSV row is malformed, so no engine drops, shifts or pads a value.
    A failure to read the bytes (:class:`~pipelines.data.sources.SourceReadError`) is raised, not reported:
    it is no fault of the data, and a retry reads the day again. A read of the rows that fails in a worker
    has each Parquet file read whole (:func:`~pipelines.data.sources.parquet_damage`): a file whose data does
    not decode is reported unreadable; when none is found, the read's error is raised.
    """
    started = time.perf_counter()
    report = ValidationReport(
        dataset=contract.dataset,
        day=source.day.isoformat(),
        source=source.uri,
        engine=engine.name,
        contract_version=contract.version,
        rows=0,
        files=len(source.files),
    )
    inspected = sources.inspect_files(source, contract)
    if inspected.unreadable:
        report.violations = [_unreadable(source, inspected.unreadable)]
    else:
        shown = {sources.shown_name(source, uri): names for uri, names in inspected.columns.items()}
        report.violations = file_schema_violations(shown, contract)
        whole: list[str] = []
        if source.format == "csv":
            shapes = _csv_shapes(engine, inspected.columns, contract)
            report.violations += _csv_shape_violations(source, shapes)
            whole = report.read_whole = [shape.uri for shape in shapes if shape.whole]
        if inspected.times_to_check:
            report.violations += _times_outside(engine, inspected.times_to_check)
        if not columns_disagree(shown) and not any(
            v.rule in (UNREADABLE, MALFORMED_ROWS, sources.TIME_RANGE_RULE) for v in report.violations
        ):
            try:
                _check_rows(engine, source, contract, report, whole)
            except engine.unreadable_errors as exc:  # the engine cannot read the files it was given
                if gone := [uri for uri in source.files if not storage.exists(uri)]:
                    # Not their content: a file removed or replaced since the day was listed (Spark's analysis
                    # says PATH_NOT_FOUND, where Dask's read raises SourceReadError). Read the day again.
                    raise sources.SourceReadError(
                        f"{len(gone)} source file(s) went away while the day was read, e.g. {gone[0]}"
                    ) from exc
                message = str(exc).strip().splitlines()[0][:300]
                report.violations += [Violation(TABLE, UNREADABLE_DATA, len(source.files), [message])]
            except engine.read_failed_errors:  # the files' bytes, or the storage: each file is examined
                if not (damaged := _damaged_files(engine, source)):
                    raise
                report.violations += [_unreadable(source, damaged)]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _unchanged(
    settings: Settings, contract: Contract, source: sources.SourcePartition
) -> dict[str, Any] | None:
    """The summary of a day already ingested from exactly these source files under this contract."""
    raw = storage.raw_uri(settings.resolved_data_root, settings.dataset, source.day)
    if not storage.exists(storage.join(raw, datasets.MANIFEST)):
        return None
    manifest = datasets.read_manifest(raw)
    if manifest.extra.get("source_fingerprint") != source.fingerprint or not contract.validated_under(
        manifest.extra.get("contract_fingerprint")
    ):
        return None
    log.info("%s: source unchanged since it was validated; keeping %s", source.day, raw)
    return {
        "day": source.day.isoformat(),
        "source": source.uri,
        "uri": raw,
        "rows": manifest.rows,
        "content_hash": manifest.content_hash,
        "status": "unchanged",
    }


def _check_unchanged(settings: Settings, contract: Contract, source: sources.SourcePartition) -> None:
    """Raise :class:`~pipelines.data.sources.SourceReadError` when the day's files are no longer the ones
    validated (upstream rewrote or removed them since the check): what was read for the commit may not be
    what was checked. A retry validates the day as it is then."""
    try:
        now = sources.partition(settings, contract, source.day)
    except sources.SourceMissingError as exc:
        raise sources.SourceReadError(
            f"the source of {source.day} ({source.uri}) went away while it was validated; nothing was committed"
        ) from exc
    if now.fingerprint != source.fingerprint:
        raise sources.SourceReadError(
            f"the source of {source.day} ({source.uri}) changed while it was validated (files rewritten, added "
            "or removed); nothing was committed, and a retry validates it as it is now"
        )


def ingest_day(
    engine: Engine, settings: Settings, contract: Contract, source: sources.SourcePartition
) -> tuple[ValidationReport | None, dict[str, Any]]:
    """Validate one day and commit it as a raw partition; (report, summary). Unchanged days are skipped."""
    day = source.day
    if (summary := _unchanged(settings, contract, source)) is not None:
        return None, summary
    report = check_partition(engine, source, contract)
    report_uri = save_report(settings, report, day)
    if not report.ok:
        return report, {
            "day": day.isoformat(),
            "source": source.uri,
            "status": "failed",
            "report": report_uri,
        }
    raw = storage.raw_uri(settings.resolved_data_root, settings.dataset, day)
    with storage.atomic_dir(raw) as tmp:
        typed = engine.map_partitions(
            # As validation read them: a file with quoted line breaks or lone-CR lines split in blocks was
            # cut inside a value, or read once per block.
            _read(engine, source, contract, report.read_whole),
            lambda frame: coerce_partition(frame, contract),
            contract.arrow_schema(),
        )
        engine.write_parquet(typed, tmp)
        manifest = datasets.write_manifest(
            tmp,
            extra={
                "source": source.uri,
                "source_files": source.files,
                "source_fingerprint": source.fingerprint,
                "contract": contract.dataset,
                "contract_version": contract.version,
                "contract_fingerprint": contract.fingerprint(),
                "engine": engine.name,
                "validation_report": report_uri,
            },
            final_uri=raw,
            map_files=engine.map_files,
        )
        _check_unchanged(settings, contract, source)  # still in the temporary folder: a raise commits nothing
    log.info(
        "%s: %d rows hold contract %s v%d; committed %s",
        day,
        report.rows,
        contract.dataset,
        contract.version,
        raw,
    )
    summary = {
        "day": day.isoformat(),
        "source": source.uri,
        "uri": raw,
        "rows": manifest.rows,
        "content_hash": manifest.content_hash,
        "status": "validated",
        "report": report_uri,
    }
    return report, summary


@runlog.stage("validate")
def validate(settings: Settings, logical_date: dt.date, engine: str | None = None) -> dict[str, Any]:
    """Validate and ingest every day of the run's window; raise :class:`DataContractError` if any day fails.

    Every day is checked before the error is raised, so one report shows all that is wrong in the window.
    """
    engine_name = check_engine(engine or settings.engine)
    contract = dataset_contract(settings)
    days, missing = [], []
    for day in storage.window_days(logical_date, settings.window_days):
        try:
            days.append(sources.partition(settings, contract, day))
        except sources.SourceMissingError:
            missing.append(day)
    sources.check_gaps(settings, contract, missing)
    if missing:
        log.warning("no data for %s: a gap the contract allows; training on the other days", missing)
    partitions: list[dict[str, Any]] = [{"day": day.isoformat(), "status": "missing"} for day in missing]
    failed, quarantined = [], []
    with open_engine(engine_name, settings, sum(source.bytes for source in days)) as session:
        for source in days:
            report, summary = ingest_day(session, settings, contract, source)
            partitions.append(summary)
            if report is not None and not report.ok:
                failed.append(report)
                quarantined.append(quarantine(settings, source, report))
                log.error(
                    "%s: %d rule(s) broken, see %s", source.day, len(report.violations), summary["report"]
                )
    if failed:
        raise DataContractError(failed, quarantined)
    return {
        "logical_date": logical_date.isoformat(),
        "contract": contract.dataset,
        "contract_version": contract.version,
        "engine": engine_name,
        "rows": sum(p.get("rows", 0) for p in partitions),
        "partitions": sorted(partitions, key=lambda p: p["day"]),
        "missing_days": [day.isoformat() for day in missing],
    }
