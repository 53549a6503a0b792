"""Validate: each day of the source against the data contract, on Dask or Spark, before anything trains.

Row-level rules (types, nulls, ranges, non-finite values, categories, the event time's day, missing and
unexpected columns) are a pandera schema applied to every partition, on whichever engine runs: Dask maps it
over its partitions, Spark over Arrow batches with ``mapInPandas``. Rules about the whole day (row count, null
share, all-null columns, unique ids, duplicate rows) are aggregations on the same engine. Only small
findings (counts and a few example values) ever reach the driver, so the day can be any size.

A day that holds its contract is written, with the contract's types, as a committed raw partition with a
manifest. A day that breaks it is quarantined (its files copied beside a report of every violation) and
the stage raises :class:`DataContractError`: nothing downstream runs and no model is touched.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from fsspec.core import url_to_fs
from pandera.errors import SchemaErrors

from pipelines import runlog, sources, storage
from pipelines.contract import Contract, load_contract
from pipelines.engines import engine_session, file_mapper, local_path
from pipelines.settings import Settings

log = logging.getLogger(__name__)
# pandera's own concat of failure cases trips a pandas FutureWarning that says nothing about the data.
warnings.filterwarnings("ignore", message="The behavior of DataFrame concatenation", category=FutureWarning)

TABLE = "<table>"
MISSING, UNEXPECTED, UNREADABLE = "missing column", "unexpected column", "unreadable file"
EXAMPLES = 5
_PANDAS_TYPES = {"string": object, "category": object, "int": "int64", "float": "float64"}
_SPARK_TYPES = {"string": "string", "category": "string", "int": "bigint", "float": "double"}
FINDINGS_COLUMNS = ["kind", "column", "rule", "failing", "examples"]
_SPARK_FINDINGS = "kind string, column string, rule string, failing long, examples array<string>"


@dataclass(frozen=True)
class Violation:
    """One broken rule: the column, the rule, how many rows (or files) fail it, and a few example values."""

    column: str
    rule: str
    failing: int
    examples: list[str]

    def describe(self) -> str:
        return (
            f"column '{self.column}' breaks rule '{self.rule}': {self.failing} failing, e.g. {self.examples}"
        )


@dataclass
class ValidationReport:
    """Everything validation found for one day of one dataset; saved as JSON and Markdown."""

    dataset: str
    day: str
    source: str
    engine: str
    contract_version: int
    rows: int
    files: int
    violations: list[Violation] = field(default_factory=list)
    null_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_markdown(self) -> str:
        verdict = "holds its contract" if self.ok else f"breaks its contract ({len(self.violations)} rule(s))"
        lines = [
            f"# Validation of {self.dataset} for {self.day}: {verdict}",
            "",
            f"- source: `{self.source}` ({self.files} file(s), {self.rows} rows)",
            f"- contract: {self.dataset} v{self.contract_version}; engine: {self.engine}; {self.seconds:.1f} s",
            "",
        ]
        if self.violations:
            lines += ["| column | rule | failing | examples |", "|---|---|---|---|"]
            for v in self.violations:
                examples = ", ".join(f"`{e}`" for e in v.examples)
                lines.append(f"| {v.column} | {v.rule} | {v.failing} | {examples} |")
        return "\n".join(lines) + "\n"


class DataContractError(ValueError):
    """Data broke its contract; the message names each column, rule and example values."""

    def __init__(self, reports: list[ValidationReport], quarantined: list[str] | None = None):
        self.reports = reports
        self.violations = [v for report in reports for v in report.violations]
        self.quarantined = quarantined or []
        parts = []
        for report in reports:
            lines = "\n".join(f"  - {v.describe()}" for v in report.violations)
            parts.append(
                f"{report.source} ({report.dataset}, {report.day}) violates its data contract "
                f"({len(report.violations)} problem(s)):\n{lines}"
            )
        if self.quarantined:
            parts.append("quarantined, with the report: " + ", ".join(self.quarantined))
        super().__init__("\n".join(parts))


# --- the pandera schema, applied to one partition --------------------------------------------------------


def _day_bounds(day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day, tz="UTC")
    return start, start + pd.Timedelta(days=1)


def build_schema(contract: Contract, day: dt.date | None = None, text: bool = False) -> pa.DataFrameSchema:
    """The contract's row-level rules as a strict pandera schema.

    ``text``: every column arrives as text (CSV), so each is coerced to its type and a value that does not
    parse is a failure case. Otherwise only floats are coerced (an int column holding floats is a type error,
    never a silent truncation). ``day``: event times must fall on that day (UTC).
    """
    columns: dict[str, pa.Column] = {}
    for name, spec in contract.columns.items():
        checks = []
        if spec.type == "timestamp":
            if day is not None and name == contract.event_time and contract.event_time_within_partition:
                start, end = _day_bounds(day)
                checks.append(
                    pa.Check(
                        lambda s, lo=start, hi=end: (s >= lo) & (s < hi), name=f"within_partition_day({day})"
                    )
                )
            columns[name] = pa.Column(
                pd.DatetimeTZDtype("us", "UTC"), checks=checks, nullable=spec.nullable, coerce=True
            )
            continue
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        if spec.allowed is not None:
            checks.append(pa.Check.isin(spec.allowed))
        if spec.type in ("int", "float"):
            checks.append(pa.Check(lambda s: np.isfinite(s.astype("float64")), name="finite"))
        columns[name] = pa.Column(
            _PANDAS_TYPES[spec.type],
            checks=checks,
            nullable=spec.nullable,
            coerce=text or spec.type == "float",
        )
    return pa.DataFrameSchema(columns, strict=True, name=contract.dataset)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One pandas representation whatever engine produced the batch: object strings, UTC timestamps."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or isinstance(column.dtype, pd.StringDtype):
            column = column.astype(object).where(column.notna(), None)
        elif pd.api.types.is_datetime64_dtype(column.dtype):  # Spark hands over naive UTC
            column = column.dt.tz_localize("UTC")
        out[name] = column
    return pd.DataFrame(out, index=frame.index)


def render(value: Any) -> str:
    """An example value as text, the same on every engine."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "null"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp | dt.datetime):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value) if isinstance(value, float) else str(value)


def _smallest(values: Any) -> list[str]:
    return sorted({render(v) for v in values})[:EXAMPLES]


def _finding(kind: str, column: str, rule: str, failing: int, examples: list[str]) -> dict[str, Any]:
    return {"kind": kind, "column": column, "rule": rule, "failing": int(failing), "examples": examples}


def partition_findings(
    frame: pd.DataFrame, contract: Contract, day: dt.date | None, text: bool
) -> pd.DataFrame:
    """Pandera's failures on one partition, grouped by (column, rule), plus its row and null counts."""
    frame = normalise(frame)
    found = [_finding("rows", TABLE, "rows", len(frame), [])]
    for name in contract.columns:
        if name in frame.columns:
            nulls = int(frame[name].isna().sum())
            found.append(_finding("nulls", name, "nulls", nulls, []))
    try:
        build_schema(contract, day, text).validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases.assign(check=cases["check"].astype(str), column=cases["column"].astype(object))
        presence = cases["check"].isin(["column_in_dataframe", "column_in_schema"])
        cases.loc[presence, "column"] = cases.loc[presence, "failure_case"]
        typed = cases["check"].str.startswith(("coerce_dtype(", "dtype("))
        type_broken = set(cases.loc[typed, "column"])
        for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
            column = TABLE if column is None or column == contract.dataset else str(column)
            if check in ("column_in_dataframe", "column_in_schema"):
                rule = MISSING if check == "column_in_dataframe" else UNEXPECTED
                found.append(_finding("schema", column, rule, 1, []))
            elif check.startswith("coerce_dtype("):  # values that do not parse as the type (nulls aside)
                values = [v for v in group["failure_case"] if render(v) != "null"]
                if values:
                    found.append(_finding("rows_failing", column, check, len(values), _smallest(values)))
            elif check.startswith("dtype("):
                if group["index"].isna().all():  # the column as a whole has another type: every row fails
                    rule = f"{check} (found {group['failure_case'].iloc[0]})"
                    found.append(
                        _finding(
                            "rows_failing", column, rule, len(frame), _smallest(frame[column].head(1000))
                        )
                    )
            elif column in type_broken and check != "not_nullable":
                continue  # checks on a column of the wrong type only repeat the type error
            else:
                found.append(
                    _finding("rows_failing", column, check, len(group), _smallest(group["failure_case"]))
                )
    return pd.DataFrame(found, columns=FINDINGS_COLUMNS)


def merge_findings(findings: pd.DataFrame) -> tuple[int, dict[str, int], list[Violation]]:
    """Reduce per-partition findings to the day's rows, null counts and violations (engine-neutral)."""
    rows = int(findings.loc[findings["kind"] == "rows", "failing"].sum())
    nulls = findings[findings["kind"] == "nulls"].groupby("column")["failing"].sum()
    violations = []
    for (kind, column, rule), group in findings[findings["kind"].isin(["schema", "rows_failing"])].groupby(
        ["kind", "column", "rule"], sort=True
    ):
        failing = int(group["failing"].max() if kind == "schema" else group["failing"].sum())
        examples = sorted({e for values in group["examples"] for e in values})[:EXAMPLES]
        violations.append(Violation(column, rule, failing, examples))
    return rows, {str(k): int(v) for k, v in nulls.items()}, violations


def table_violations(
    contract: Contract,
    rows: int,
    null_counts: dict[str, int],
    duplicates: dict[str, tuple[int, list[str]]],
) -> list[Violation]:
    """The rules about a whole day: row count, null share, all-null columns, unique ids, duplicate rows."""
    found = []
    if rows < contract.min_rows:
        found.append(Violation(TABLE, f"min_rows({contract.min_rows})", rows, [f"{rows} rows"]))
    for name, spec in contract.columns.items():
        nulls = null_counts.get(name)
        if nulls is None or rows == 0:
            continue
        if nulls == rows:
            found.append(Violation(name, "all_null", nulls, [f"all {rows} rows are null"]))
        elif spec.max_null_share is not None and nulls / rows > spec.max_null_share:
            found.append(
                Violation(name, f"max_null_share({spec.max_null_share})", nulls, [f"{nulls / rows:.1%} null"])
            )
    for rule, (failing, examples) in duplicates.items():
        if failing:
            column = TABLE if rule == "duplicate_rows" else "+".join(contract.unique)
            found.append(Violation(column, rule, failing, examples))
    return found


# --- engines ---------------------------------------------------------------------------------------------


def _key_text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    text = [frame[c].map(render).astype(object) for c in columns]
    key = text[0]
    for more in text[1:]:
        key = key + "|" + more
    return key


def _dask_read(source: sources.SourcePartition, contract: Contract) -> Any:
    import dask.dataframe as dd

    paths = [local_path(f) for f in source.files]
    if source.format == "csv":
        return dd.read_csv(
            paths, dtype=str, sep=contract.source.csv_delimiter, keep_default_na=False, na_values=[""],
            blocksize="64MB",
        )  # fmt: skip
    # No hive partitioning: a source folder named ds=2026-11-20 must not add a "ds" column.
    return dd.read_parquet(paths, ignore_metadata_file=True, dataset={"partitioning": None})


def _dask_duplicates(raw: Any, contract: Contract) -> dict[str, Any]:
    """Lazy (failing, examples) per duplicate rule; keys are compared as text, as on Spark."""

    def counted(keys: Any) -> tuple[Any, Any]:
        counts = keys.value_counts()
        repeated = counts[counts > 1]
        examples = repeated.map_partitions(
            lambda s: pd.Series(sorted(map(str, s.index))[:EXAMPLES], dtype=object), meta=(None, object)
        )
        return (repeated - 1).sum(), examples

    rules: dict[str, Any] = {}
    present = set(raw.columns)
    if contract.unique and set(contract.unique) <= present:
        rules["unique"] = counted(raw.map_partitions(_key_text, contract.unique, meta=(None, object)))
    if not contract.allow_duplicate_rows:
        entity = contract.entity_id if contract.entity_id in present else raw.columns[0]

        def row_keys(frame: pd.DataFrame) -> pd.Series:
            hashes = pd.util.hash_pandas_object(normalise(frame), index=False).astype(str)
            return frame[entity].map(render).astype(object) + "#" + hashes.astype(object)

        rules["duplicate_rows"] = counted(raw.map_partitions(row_keys, meta=(None, object)))
    return rules


def _findings_dask(
    session: Any, source: sources.SourcePartition, contract: Contract
) -> tuple[pd.DataFrame, dict[str, tuple[int, list[str]]]]:
    import dask

    text = source.format == "csv"
    raw = _dask_read(source, contract)
    meta = pd.DataFrame({c: pd.Series(dtype=object) for c in FINDINGS_COLUMNS}).astype({"failing": "int64"})
    findings = raw.map_partitions(partition_findings, contract, source.day, text, meta=meta)
    schema_only = partition_findings(raw._meta, contract, source.day, text)
    duplicates = _dask_duplicates(raw, contract)
    computed_findings, computed_duplicates = dask.compute(findings, duplicates)
    result = {}
    for rule, (failing, examples) in computed_duplicates.items():
        shown = sorted(examples)[:EXAMPLES]
        if rule == "duplicate_rows":
            shown = [key.rsplit("#", 1)[0] for key in shown]
        result[rule] = (int(failing), shown)
    return pd.concat([schema_only, computed_findings], ignore_index=True), result


def _spark_read(spark: Any, source: sources.SourcePartition, contract: Contract) -> Any:
    if source.format == "csv":
        return (
            spark.read.option("header", True)
            .option("sep", contract.source.csv_delimiter)
            .option("mode", "PERMISSIVE")
            .csv(source.files)
        )
    return spark.read.parquet(*source.files)


def _spark_duplicates(raw: Any, contract: Contract) -> dict[str, tuple[int, list[str]]]:
    from pyspark.sql import functions as F

    def counted(frame: Any, keys: list[str], example: Any) -> tuple[int, list[str]]:
        groups = frame.groupBy(*keys).agg(F.count(F.lit(1)).alias("_n"), F.min(example).alias("_example"))
        repeated = groups.filter(F.col("_n") > 1).cache()
        failing = repeated.agg(F.sum(F.col("_n") - 1)).first()[0] or 0
        shown = [r[0] for r in repeated.select("_example").orderBy("_example").limit(EXAMPLES).collect()]
        repeated.unpersist()
        return int(failing), shown

    present = set(raw.columns)
    rules = {}
    if contract.unique and set(contract.unique) <= present:
        key = F.concat_ws("|", *[F.coalesce(F.col(c).cast("string"), F.lit("null")) for c in contract.unique])
        rules["unique"] = counted(raw.withColumn("_key", key), ["_key"], F.col("_key"))
    if not contract.allow_duplicate_rows:
        entity = contract.entity_id if contract.entity_id in present else raw.columns[0]
        example = F.coalesce(F.col(entity).cast("string"), F.lit("null"))
        rules["duplicate_rows"] = counted(raw, raw.columns, example)
    return rules


def _findings_spark(
    spark: Any, source: sources.SourcePartition, contract: Contract
) -> tuple[pd.DataFrame, dict[str, tuple[int, list[str]]]]:
    text, day = source.format == "csv", source.day

    def per_batch(batches: Any) -> Any:
        for batch in batches:
            yield partition_findings(batch, contract, day, text)

    raw = _spark_read(spark, source, contract)
    schema_only = partition_findings(raw.limit(0).toPandas(), contract, day, text)
    findings = raw.mapInPandas(per_batch, schema=_SPARK_FINDINGS).toPandas()
    findings["examples"] = findings["examples"].map(lambda e: [] if e is None else list(e))
    duplicates = _spark_duplicates(raw, contract)
    return pd.concat([schema_only, findings], ignore_index=True), duplicates


FINDERS = {"dask": _findings_dask, "spark": _findings_spark}


def _unreadable_errors(engine: str) -> tuple[type[BaseException], ...]:
    """Errors that mean "these files cannot be read as a table", not "the cluster is down"."""
    import pyarrow as pa_arrow

    if engine == "spark":
        from pyspark.errors import AnalysisException

        return (AnalysisException,)
    return (pa_arrow.ArrowException,)


def check_partition(
    session: Any, source: sources.SourcePartition, contract: Contract, engine: str
) -> ValidationReport:
    """Every rule of the contract on one day of the source; the report lists what is broken."""
    started = time.perf_counter()
    report = ValidationReport(
        dataset=contract.dataset,
        day=source.day.isoformat(),
        source=source.uri,
        engine=engine,
        contract_version=contract.version,
        rows=0,
        files=len(source.files),
    )
    broken = sources.unreadable_files(source, contract)
    if broken:
        names = [f"{b.uri.rsplit('/', 1)[-1]}: {b.reason}" for b in broken]
        report.violations = [Violation(TABLE, UNREADABLE, len(broken), names[:EXAMPLES])]
    else:
        try:
            findings, duplicates = FINDERS[engine](session, source, contract)
        except _unreadable_errors(engine) as exc:  # the engine cannot read the files it was given
            message = str(exc).strip().splitlines()[0][:300]
            report.violations = [Violation(TABLE, "unreadable data", len(source.files), [message])]
        else:
            report.rows, report.null_counts, report.violations = merge_findings(findings)
            report.violations += table_violations(contract, report.rows, report.null_counts, duplicates)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# --- writing: raw partitions, reports, quarantine ---------------------------------------------------------


def coerce_partition(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """A validated partition with the contract's types, in the contract's column order."""
    frame = normalise(frame)
    out = {}
    for name, spec in contract.columns.items():
        if spec.type == "timestamp":
            out[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        else:
            out[name] = frame[name].astype(_PANDAS_TYPES[spec.type])
    return pd.DataFrame(out, index=frame.index)


def _write_raw_dask(session: Any, source: sources.SourcePartition, contract: Contract, out: str) -> None:
    raw = _dask_read(source, contract)
    meta = coerce_partition(raw._meta, contract)
    typed = raw.map_partitions(coerce_partition, contract, meta=meta)
    typed.to_parquet(local_path(out), write_index=False, write_metadata_file=False)


def _write_raw_spark(spark: Any, source: sources.SourcePartition, contract: Contract, out: str) -> None:
    from pyspark.sql import functions as F

    raw = _spark_read(spark, source, contract)
    columns = []
    for name, spec in contract.columns.items():
        if spec.type == "timestamp":
            columns.append(F.to_timestamp(F.col(name)).alias(name))
        else:
            columns.append(F.col(name).cast(_SPARK_TYPES[spec.type]).alias(name))
    raw.select(*columns).write.mode("overwrite").parquet(out)


WRITERS = {"dask": _write_raw_dask, "spark": _write_raw_spark}


def quarantine_uri(data_root: str, dataset: str, day: dt.date) -> str:
    return storage.join(data_root, "quarantine", dataset, f"ds={storage.ds_str(day)}")


def _save_report(settings: Settings, report: ValidationReport, day: dt.date) -> str:
    folder = storage.reports_uri(settings.resolved_data_root, report.dataset, day)
    storage.write_json_atomic(storage.join(folder, "validation.json"), report.to_dict())
    storage.write_text_atomic(storage.join(folder, "validation.md"), report.to_markdown())
    return storage.join(folder, "validation.json")


def quarantine(settings: Settings, source: sources.SourcePartition, report: ValidationReport) -> str:
    """Copy the failing day's files beside its report, under ``quarantine/<dataset>/ds=<day>/``."""
    target = quarantine_uri(settings.resolved_data_root, report.dataset, source.day)
    with storage.atomic_dir(target) as tmp:
        for uri in source.files:
            src_fs, src_path = url_to_fs(uri)
            with (
                src_fs.open(src_path, "rb") as src,
                storage.open_write(storage.join(tmp, "files", src_path.rsplit("/", 1)[-1])) as dst,
            ):
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        storage.write_json_atomic(storage.join(tmp, "validation.json"), report.to_dict())
        storage.write_text_atomic(storage.join(tmp, "validation.md"), report.to_markdown())
    return target


def ingest_day(
    session: Any, settings: Settings, contract: Contract, source: sources.SourcePartition, engine: str
) -> tuple[ValidationReport | None, dict[str, Any]]:
    """Validate one day and commit it as a raw partition; (report, summary). Unchanged days are skipped."""
    day = source.day
    raw = storage.raw_uri(settings.resolved_data_root, contract.dataset, day)
    if storage.exists(storage.join(raw, storage.MANIFEST)):
        manifest = storage.read_manifest(raw)
        if (
            manifest.extra.get("source_fingerprint") == source.fingerprint
            and manifest.extra.get("contract_fingerprint") == contract.fingerprint()
        ):
            log.info("%s: source unchanged since it was validated; keeping %s", day, raw)
            summary = {"day": day.isoformat(), "source": source.uri, "uri": raw, "rows": manifest.rows,
                       "content_hash": manifest.content_hash, "status": "unchanged"}  # fmt: skip
            return None, summary
    report = check_partition(session, source, contract, engine)
    report_uri = _save_report(settings, report, day)
    if not report.ok:
        return report, {
            "day": day.isoformat(),
            "source": source.uri,
            "status": "failed",
            "report": report_uri,
        }
    with storage.atomic_dir(raw) as tmp:
        WRITERS[engine](session, source, contract, tmp)
        manifest = storage.write_manifest(
            tmp,
            extra={
                "source": source.uri,
                "source_files": source.files,
                "source_fingerprint": source.fingerprint,
                "contract": contract.dataset,
                "contract_version": contract.version,
                "contract_fingerprint": contract.fingerprint(),
                "engine": engine,
                "validation_report": report_uri,
            },
            final_uri=raw,
            map_files=file_mapper(engine, session) if session is not None else None,
        )
    log.info("%s: %d rows hold contract %s v%d; committed %s", day, report.rows, contract.dataset,
             contract.version, raw)  # fmt: skip
    summary = {"day": day.isoformat(), "source": source.uri, "uri": raw, "rows": manifest.rows,
               "content_hash": manifest.content_hash, "status": "validated", "report": report_uri}  # fmt: skip
    return report, summary


@runlog.stage("validate")
def validate(settings: Settings, logical_date: dt.date, engine: str | None = None) -> dict[str, Any]:
    """Validate and ingest every day of the run's window; raise :class:`DataContractError` if any day fails.

    Every day is checked before the error is raised, so one report shows all that is wrong in the window.
    """
    engine = engine or settings.engine
    if engine not in FINDERS:
        raise ValueError(f"unknown engine '{engine}'; choose one of {', '.join(FINDERS)}")
    contract = load_contract(settings.resolved_contract_path)
    days = [
        sources.partition(settings, contract, day)
        for day in storage.window_days(logical_date, settings.window_days)
    ]
    partitions, failed, quarantined = [], [], []
    with engine_session(engine, settings, sum(source.bytes for source in days)) as session:
        for source in days:
            report, summary = ingest_day(session, settings, contract, source, engine)
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
        "engine": engine,
        "rows": sum(p["rows"] for p in partitions),
        "partitions": partitions,
    }
