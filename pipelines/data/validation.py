"""Validation's pure core: the contract's rules as a pandera schema, and what a partition's check finds.

Nothing here knows which engine runs it: :func:`partition_findings` checks one pandas partition and
returns small findings (counts and a few example values per column and rule), :func:`merge_findings`
reduces every partition's findings to the day's, and :func:`table_violations` applies the rules about a
whole day to the merged counts. The engines (:mod:`pipelines.engines`) run these on every partition.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow

from pipelines.data.contract import ColumnSpec, Contract

# pandera is imported where a schema is built: importing it imports pyspark.pandas when that is installed.
if TYPE_CHECKING:
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

# pandera's own concat of failure cases trips a pandas FutureWarning that says nothing about the data.
warnings.filterwarnings("ignore", message="The behavior of DataFrame concatenation", category=FutureWarning)

TABLE = "<table>"
MISSING, UNEXPECTED, UNREADABLE = "missing column", "unexpected column", "unreadable file"
UNREADABLE_DATA = "unreadable data"
MALFORMED_ROWS = "malformed rows (another number of fields than the header)"
EXAMPLES = 5
UNIQUE, DUPLICATE_ROWS = "unique", "duplicate_rows"
#: The largest magnitude a float column may hold: float32's (the models' precision, and what serving takes).
FLOAT32_MAX = float(np.finfo(np.float32).max)

_PANDAS_TYPES = {"string": object, "int": "int64", "float": "float64", "bool": bool}
_BOOLEAN_TEXT = {"true": True, "false": False}
FINDINGS_SCHEMA = pyarrow.schema(
    [
        ("kind", pyarrow.string()),
        ("column", pyarrow.string()),
        ("rule", pyarrow.string()),
        ("failing", pyarrow.int64()),
        ("examples", pyarrow.list_(pyarrow.string())),
    ]
)
FINDINGS_COLUMNS = FINDINGS_SCHEMA.names


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
    #: The CSV files no reader may split at line breaks (:attr:`pipelines.data.sources.CsvShape.whole`): the
    #: ingest reads them as validation read them.
    read_whole: list[str] = field(default_factory=list)

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
    never a silent truncation; text in a number column is found before: :func:`_text_in_number_fields`).
    ``day``: event times must fall on that day (UTC).
    """
    import pandera.pandas as pa
    from pandera.engines import pandas_engine

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
            # ISO 8601 in any precision (a CSV export mixes 00:00:00 and 00:05:59.999999123).
            stamp = pandas_engine.DateTime(  # type: ignore[call-arg]  # a dataclass its stubs do not show
                unit="us", tz=dt.UTC, to_datetime_kwargs={"format": "ISO8601"}
            )
            columns[name] = pa.Column(stamp, checks=checks, nullable=spec.nullable, coerce=True)
            continue
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        if spec.allowed is not None:
            checks.append(pa.Check.isin(spec.allowed))
        if spec.type in ("int", "float"):
            checks.append(pa.Check(lambda s: np.isfinite(s.astype("float64")), name="finite"))
        if spec.type == "float":
            # Models compute in float32, where a larger value is infinite (serving refuses it too); the profile's
            # variance of values past 1.3e154 overflowed, and prepare failed with a bare OverflowError.
            checks.append(
                pa.Check(lambda s: ~(np.abs(s.astype("float64")) > FLOAT32_MAX), name="float32_range")
            )
        value_type = spec.value_type
        columns[name] = pa.Column(
            _PANDAS_TYPES[value_type],
            checks=checks,
            nullable=spec.nullable,
            # Booleans are never coerced: pandas reads any non-empty text as True (see parse_booleans).
            coerce=value_type != "bool" and (text or value_type == "float"),
        )
    return pa.DataFrameSchema(columns, strict=True, name=contract.dataset)


def _widens_to_int64(dtype: Any) -> bool:
    """A narrower integer type, whose every value an int64 holds (uint64's do not)."""
    return (
        isinstance(dtype, np.dtype)
        and dtype.kind in "iu"
        and dtype != np.dtype("int64")
        and np.can_cast(dtype, np.int64)
    )


def _is_number(value: Any) -> bool:
    """An integer, a float or a Parquet decimal (as pandas holds them in an object column); not a boolean."""
    return isinstance(value, (int, float, decimal.Decimal, np.number)) and not isinstance(
        value, (bool, np.bool_)
    )


def _as_numpy_booleans(column: pd.Series) -> pd.Series:
    """pandas' nullable ``boolean`` or Arrow's ``bool[pyarrow]`` (a pandas writer's metadata asks for them) as
    Spark hands booleans over: numpy bool, or objects with None where a null is."""
    if column.isna().any():
        return column.astype(object).where(column.notna(), None)
    return column.astype(bool)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One pandas representation whatever engine produced the batch: object strings, UTC timestamps, integers
    as int64, booleans as numpy's."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or isinstance(column.dtype, pd.StringDtype):
            column = column.astype(object).where(column.notna(), None)
        elif pd.api.types.is_bool_dtype(column.dtype) and column.dtype != np.dtype(bool):
            column = _as_numpy_booleans(column)
        elif pd.api.types.is_datetime64_dtype(column.dtype):  # Spark hands over naive UTC
            column = column.dt.tz_localize("UTC")
        elif _widens_to_int64(column.dtype):  # int32 (DuckDB's INTEGER, Spark's IntegerType), int8, uint16...
            column = column.astype("int64")
        out[name] = column
    return pd.DataFrame(out, index=frame.index)


def parse_booleans(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """Boolean columns of a text partition (CSV) as booleans (``true`` or ``false`` in any case), and the
    values of each that are neither. Those are set to False, after being reported, so that no other rule
    reports them again."""
    names = [n for n, spec in contract.columns.items() if spec.value_type == "bool" and n in frame.columns]
    if not names:
        return frame, {}
    frame, broken = frame.copy(), {}
    for name in names:
        column = frame[name]
        parsed = column.map(lambda v: _BOOLEAN_TEXT.get(v.lower()) if isinstance(v, str) else v)
        bad = column.notna() & ~parsed.map(lambda v: type(v) is bool)
        if bad.any():
            broken[name] = list(column[bad])
        frame[name] = parsed.where(~bad, False).astype(bool) if column.notna().all() else parsed.where(~bad)
    return frame, broken


# A number as a CSV writes it: ASCII digits, a sign, a point, an exponent, spaces around; NaN and infinity in any
# case (a NaN is the null it becomes; an infinity fails the finite check). Python's int and float, which the
# coercion uses, also read "1_9" (19: a digit-group underscore), "٢٠" (20: digits of another script) and other
# Unicode spaces: a mangled field committed as another number, with no error.
_PLAIN_NUMBER = {
    "int": re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*"),
    "float": re.compile(
        r"[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)[ \t]*",
        re.IGNORECASE,
    ),
}
PLAIN_NUMBER_RULE = "number (ASCII digits, no '_')"


def _read_loosely(value: Any, kind: str) -> bool:
    """Whether text that is no plain number is read as one by the coercion (Python's ``int`` or ``float``)."""
    if not isinstance(value, str) or _PLAIN_NUMBER[kind].fullmatch(value):
        return False
    try:
        (int if kind == "int" else float)(value)
    except ValueError:
        return False  # no number at all: the schema's coercion reports it
    return True


def loose_numbers(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """A text partition's (CSV's) number columns: the values the coercion would read as numbers though they are
    no plain number, by column; and the partition without their rows, which the other checks then leave out
    (a value made another number, or a null, would be reported again under another rule)."""
    broken, loose_rows = {}, np.zeros(len(frame), dtype=bool)
    for name, spec in contract.columns.items():
        if spec.value_type not in ("int", "float") or name not in frame.columns:
            continue
        column = frame[name]
        if column.dtype != object:
            continue
        loose = column.map(lambda v, kind=spec.value_type: _read_loosely(v, kind)).to_numpy(dtype=bool)
        if loose.any():
            broken[name] = list(column[loose])
            loose_rows |= loose
    return (frame[~loose_rows] if loose_rows.any() else frame), broken


def render(value: Any) -> str:
    """An example value as text, the same on every engine."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT or value is pd.NA:
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


def _case_finding(
    frame: pd.DataFrame, column: str, check: str, group: pd.DataFrame, type_broken: set[Any]
) -> dict[str, Any] | None:
    """The finding of one (column, check) group of pandera's failure cases; None when it adds nothing."""
    if check in ("column_in_dataframe", "column_in_schema"):
        return _finding("schema", column, MISSING if check == "column_in_dataframe" else UNEXPECTED, 1, [])
    if check.startswith("coerce_dtype("):  # values that do not parse as the type (nulls aside)
        values = [v for v in group["failure_case"] if render(v) != "null"]
        return _finding("rows_failing", column, check, len(values), _smallest(values)) if values else None
    if check.startswith("dtype("):
        if not group["index"].isna().all():
            return None
        # The column as a whole has another type: every row fails.
        rule = f"{check} (found {group['failure_case'].iloc[0]})"
        return _finding("rows_failing", column, rule, len(frame), _smallest(frame[column].head(1000)))
    if column in type_broken and check != "not_nullable":
        return None  # checks on a column of the wrong type only repeat the type error
    return _finding("rows_failing", column, check, len(group), _smallest(group["failure_case"]))


def _schema_findings(frame: pd.DataFrame, contract: Contract, errors: SchemaErrors) -> list[dict[str, Any]]:
    cases = errors.failure_cases
    cases = cases.assign(check=cases["check"].astype(str), column=cases["column"].astype(object))
    presence = cases["check"].isin(["column_in_dataframe", "column_in_schema"])
    cases.loc[presence, "column"] = cases.loc[presence, "failure_case"]
    typed = cases["check"].str.startswith(("coerce_dtype(", "dtype("))
    type_broken = set(cases.loc[typed, "column"])
    found = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        name = TABLE if column is None or column == contract.dataset else str(column)
        if (finding := _case_finding(frame, name, check, group, type_broken)) is not None:
            found.append(finding)
    return found


def _reads_as_nan(value: Any) -> bool:
    """Text a number column's coercion reads as NaN (Python's ``float``: ``NaN``, ``nan``, `` -NaN ``)."""
    try:
        return math.isnan(float(value))
    except ValueError:
        return False


def _nulls(column: pd.Series, spec: ColumnSpec, text: bool) -> int:
    """The column's nulls as its type holds them: in a text partition (CSV), a number written ``NaN`` is one."""
    nulls = int(column.isna().sum())
    if text and spec.value_type in ("int", "float"):
        # The values that do not read as numbers: text for NaN, or text the schema reports as not parsing.
        unread = column[column.notna() & pd.to_numeric(column, errors="coerce").isna()]
        nulls += int(unread.map(_reads_as_nan).sum())
    return nulls


def _text_in_number_fields(frame: pd.DataFrame, contract: Contract) -> dict[str, list[Any]]:
    """The int and float fields of a typed partition (Parquet) that hold other values than numbers (text: the
    column's type changed upstream), with those values. Coerced, ``"1_000"``, ``"NaN"`` or ``"٢٠"`` passed as
    numbers and nulls past every rule, and pandera names an object column's type error only while it holds no
    null."""
    found = {}
    for name, spec in contract.columns.items():
        if spec.value_type in ("int", "float") and name in frame.columns and frame[name].dtype == object:
            if others := [value for value in frame[name].dropna().tolist() if not _is_number(value)]:
                found[name] = others
    return found


def partition_findings(
    frame: pd.DataFrame, contract: Contract, day: dt.date | None, text: bool
) -> pd.DataFrame:
    """Pandera's failures on one partition, grouped by (column, rule), plus its row and null counts."""
    from pandera.errors import SchemaErrors

    frame = normalise(frame)
    found = [_finding("rows", TABLE, "rows", len(frame), [])]
    if text:
        frame, broken = parse_booleans(frame, contract)
        for name, values in broken.items():
            found.append(
                _finding("rows_failing", name, "boolean (true or false)", len(values), _smallest(values))
            )
        frame, loose = loose_numbers(frame, contract)
        for name, values in loose.items():
            found.append(_finding("rows_failing", name, PLAIN_NUMBER_RULE, len(values), _smallest(values)))
    for name, spec in contract.columns.items():
        if name in frame.columns:
            found.append(_finding("nulls", name, "nulls", _nulls(frame[name], spec, text), []))
    # A number column of text is its type's error alone: its ranges and nulls would only repeat it.
    texts = {} if text else _text_in_number_fields(frame, contract)
    for name, values in texts.items():
        rule = f"dtype('{_PANDAS_TYPES[contract.columns[name].value_type]}') (found object)"
        found.append(_finding("rows_failing", name, rule, len(values), _smallest(values)))
    try:
        build_schema(contract, day, text).validate(frame, lazy=True)
    except SchemaErrors as errors:
        found += [case for case in _schema_findings(frame, contract, errors) if case["column"] not in texts]
    return pd.DataFrame(found, columns=FINDINGS_COLUMNS)


def file_schema_violations(columns: Mapping[str, list[str]], contract: Contract) -> list[Violation]:
    """Missing and unexpected columns, from each file's own columns (``columns``: a file's name to its Parquet
    footer's or CSV header's names): a violation per column, naming the files that lack it or have it."""
    missing: dict[str, list[str]] = {}
    unexpected: dict[str, list[str]] = {}
    for name, names in columns.items():
        for column in contract.columns:
            if column not in names:
                missing.setdefault(column, []).append(name)
        for column in names:
            if column not in contract.columns:
                unexpected.setdefault(column, []).append(name)
    return [
        Violation(column, rule, len(files), sorted(files)[:EXAMPLES])
        for rule, found in ((MISSING, missing), (UNEXPECTED, unexpected))
        for column, files in sorted(found.items())
    ]


def columns_disagree(columns: Mapping[str, list[str]]) -> bool:
    """Whether the files have different sets of columns: no engine reads them together by name (Dask fails,
    Spark takes one file's columns), so their rows are not checked."""
    return len({frozenset(names) for names in columns.values()}) > 1


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
            column = TABLE if rule == DUPLICATE_ROWS else "+".join(contract.unique)
            found.append(Violation(column, rule, failing, examples))
    return found


#: The precision a committed partition holds its times in (coerce_partition's cast).
COMMITTED_TIME = "datetime64[us, UTC]"


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values in the same types whatever engine or batch produced them.

    An engine hands a column over in the type its batch happens to need (an int column with a null in one
    Spark batch arrives as floats there): numbers become float64, times UTC at the microseconds they are
    committed with (:func:`coerce_partition`), text stays text: two rows a nanosecond apart are one row once
    committed, so the duplicate and unique rules see them as one.
    """
    frame = normalise(frame)
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype):
            out[name] = pd.Series(column.to_numpy(dtype="float64", na_value=np.nan), index=frame.index)
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            out[name] = column.dt.tz_convert("UTC").astype(COMMITTED_TIME).astype("datetime64[ns, UTC]")
        else:
            out[name] = column
    return pd.DataFrame(out, index=frame.index)


def _text(column: pd.Series, integral: bool) -> pd.Series:
    """A canonical column as text; an int column's values as ints (``42``, never ``42.0``)."""
    if integral:
        return column.map(
            lambda v: render(int(v)) if math.isfinite(v) and float(v).is_integer() else render(v)
        )
    return column.map(render).astype(object)


def _is_whole_number(dtype: Any) -> bool:
    return pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _key_text(frame: pd.DataFrame, columns: list[str], contract: Contract) -> pd.Series:
    """Each row's values of ``columns`` as text, exactly: integers as integers (never through a float, which
    holds whole numbers exactly only up to 2**53), text as it is. Several columns' values make a JSON array,
    a null as JSON's null: joined with a separator, ``("a|b", "c")`` and ``("a", "b|c")`` made one key, as did
    a null and the text ``"null"``, and two distinct rows failed the day as duplicates."""
    normal = normalise(frame[columns])
    floats = canonical(normal)
    text = []
    for c in columns:
        if _is_whole_number(normal[c].dtype):
            text.append(normal[c].map(render).astype(object))
            continue
        declared_int = c in contract.columns and contract.columns[c].value_type == "int"
        text.append(_text(floats[c], declared_int and pd.api.types.is_float_dtype(floats[c].dtype)))
    if len(columns) == 1:
        return text[0]
    values = [part.to_numpy(dtype=object) for part in text]
    nulls = [normal[c].isna().to_numpy() for c in columns]
    keys = [
        json.dumps(
            [None if null else value for value, null in zip(row, absent, strict=True)], ensure_ascii=False
        )
        for row, absent in zip(zip(*values, strict=True), zip(*nulls, strict=True), strict=True)
    ]
    return pd.Series(keys, index=frame.index, dtype=object)


_HALF = 2**32


def _hashable(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """:func:`canonical`, exact for the contract's int columns: each as two float64 columns (the value's floor
    division and remainder by 2**32), which hold any int64 exactly and are the same whether a batch hands the
    column over as integers or, holding a null, as floats (whole floats divide and remainder exactly)."""
    normal = normalise(frame)
    out = canonical(normal)
    for name in frame.columns:
        spec = contract.columns.get(name)
        column = normal[name]
        if spec is None or spec.value_type != "int" or not pd.api.types.is_numeric_dtype(column.dtype):
            continue
        if _is_whole_number(column.dtype):
            whole = column.astype("Int64")
            high = (whole // _HALF).to_numpy(dtype="float64", na_value=np.nan)
            low = (whole % _HALF).to_numpy(dtype="float64", na_value=np.nan)
        else:
            values = out[name].to_numpy()
            high, low = np.floor_divide(values, _HALF), np.mod(values, _HALF)
        at = out.columns.get_loc(name)
        out = out.drop(columns=[name])
        out.insert(at, name, high)
        out.insert(at + 1, f"{name}\0low", low)
    return out


def _parsed(column: pd.Series, spec: ColumnSpec) -> pd.Series:
    """A text column (CSV) in its contract type, as the raw partition will hold it (:func:`coerce_partition`);
    as written when a value does not parse (the schema reports it)."""
    if spec.value_type in ("string", "bool"):  # booleans: parse_booleans
        return column
    present = column.notna()
    try:
        if spec.type == "timestamp":
            return pd.to_datetime(column, utc=True, format="ISO8601")
        values = column[present].astype(_PANDAS_TYPES[spec.value_type])
    except (ValueError, TypeError, OverflowError):  # text that is no number or time of the type
        return column
    if spec.value_type == "int":  # nullable, every id exact (a float holds whole numbers up to 2**53)
        typed = pd.Series(pd.NA, index=column.index, dtype="Int64")
    else:
        typed = pd.Series(np.nan, index=column.index, dtype="float64")
    typed[present] = values
    return typed


def _typed(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """A text partition's values in the contract's types, so that keys compare values and not how they were
    written: ``7`` and ``07``, ``1.5`` and ``1.50``, or one instant in two time zones are the same."""
    frame = parse_booleans(normalise(frame), contract)[0]
    return pd.DataFrame(
        {
            name: _parsed(frame[name], contract.columns[name]) if name in contract.columns else frame[name]
            for name in frame.columns
        },
        index=frame.index,
    )


def duplicate_keys(contract: Contract, columns: list[str], text: bool = False) -> dict[str, Any]:
    """Per duplicate rule of the contract that applies to a table of ``columns``, the function giving each
    row's key as text: the ``unique`` columns joined, or the entity id and a hash of the whole (canonical)
    row. Keys are the same on every engine and batch, so both engines count the same duplicates. ``text``:
    the table's columns arrive as text (CSV), and are read in their types first."""
    typed = functools.partial(_typed, contract=contract) if text else (lambda frame: frame)
    rules: dict[str, Any] = {}
    if contract.unique and set(contract.unique) <= set(columns):
        rules[UNIQUE] = lambda frame: _key_text(typed(frame), contract.unique, contract)
    if not contract.allow_duplicate_rows:
        entity = contract.entity_id if contract.entity_id in columns else columns[0]

        def row_key(frame: pd.DataFrame) -> pd.Series:
            frame = typed(frame)
            hashes = pd.util.hash_pandas_object(_hashable(frame, contract), index=False).astype(str)
            return _key_text(frame, [entity], contract) + "#" + hashes.astype(object)

        rules[DUPLICATE_ROWS] = row_key
    return rules


def shown_key(rule: str, key: str) -> str:
    """A repeated key as a person reads it: a duplicate row is named by its entity id alone."""
    return key.rsplit("#", 1)[0] if rule == DUPLICATE_ROWS else key


def coerce_partition(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """A validated partition with the contract's types, in the contract's column order."""
    frame = parse_booleans(normalise(frame), contract)[0]
    out = {}
    for name, spec in contract.columns.items():
        if spec.type == "timestamp":
            out[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601").astype(COMMITTED_TIME)
        else:
            out[name] = frame[name].astype(_PANDAS_TYPES[spec.value_type])
    return pd.DataFrame(out, index=frame.index)
