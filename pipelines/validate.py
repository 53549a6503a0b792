"""Validate raw partitions against the data contract (pandera), before anything trains on them."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from pipelines import runlog, storage
from pipelines.contract import Contract, load_contract
from pipelines.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"string": str, "int": "int64", "float": "float64", "category": str}


@dataclass(frozen=True)
class Violation:
    column: str
    rule: str
    failing: int
    examples: list[Any]

    def describe(self) -> str:
        return (
            f"column '{self.column}' breaks rule '{self.rule}': {self.failing} failing, e.g. {self.examples}"
        )


class DataContractError(ValueError):
    """Data broke its contract; the message names each column, rule and example values."""

    def __init__(self, uri: str, violations: list[Violation]):
        self.uri = uri
        self.violations = violations
        lines = "\n".join(f"  - {v.describe()}" for v in violations)
        super().__init__(f"{uri} violates its data contract ({len(violations)} problem(s)):\n{lines}")


def _null_share_check(limit: float) -> pa.Check:
    return pa.Check(
        lambda s: bool(s.isna().mean() <= limit), ignore_na=False, name=f"max_null_share({limit})"
    )


def build_schema(contract: Contract) -> pa.DataFrameSchema:
    """A pandera schema equivalent to the contract (strict: unexpected columns fail too)."""
    columns: dict[str, pa.Column] = {}
    frame_checks = [
        pa.Check(lambda frame: len(frame) >= contract.min_rows, name=f"min_rows({contract.min_rows})"),
    ]
    for name, spec in contract.columns.items():
        checks = []
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        if spec.allowed is not None:
            checks.append(pa.Check.isin(spec.allowed))
        if spec.type in ("int", "float"):
            checks.append(pa.Check(lambda s: np.isfinite(s.astype("float64")), name="finite"))
        if spec.type == "timestamp":
            columns[name] = pa.Column(pd.DatetimeTZDtype("us", "UTC"), nullable=spec.nullable, coerce=True)
            continue
        if spec.nullable and spec.max_null_share is not None:
            checks.append(_null_share_check(spec.max_null_share))
        columns[name] = pa.Column(
            _DTYPES[spec.type], checks=checks, nullable=spec.nullable, coerce=spec.type == "float"
        )
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=True, name=contract.dataset)


_COLUMN_PRESENCE = ("column_in_dataframe", "column_in_schema")


def _violations(errors: SchemaErrors, dataset: str) -> list[Violation]:
    cases = errors.failure_cases.copy()
    cases["check"] = cases["check"].astype(str)
    presence = cases["check"].isin(_COLUMN_PRESENCE)
    # A missing or unexpected column is reported against that column, not against the table.
    cases.loc[presence, "column"] = cases.loc[presence, "failure_case"]
    cases["column"] = cases["column"].where(cases["column"] != dataset, "<table>").fillna("<table>")
    # Once a column has the wrong type, its value checks only repeat the type error: keep the type error.
    type_broken = set(cases.loc[cases["check"].str.contains("dtype"), "column"])
    found: list[Violation] = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False):
        if column in type_broken and "dtype" not in check:
            continue
        if check in _COLUMN_PRESENCE:
            check = "missing column" if check == "column_in_dataframe" else "unexpected column"
        examples = group["failure_case"].drop_duplicates().head(5).tolist()
        found.append(Violation(str(column), check, int(len(group)), [_plain(v) for v in examples]))
    return found


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def validate_frame(frame: pd.DataFrame, contract: Contract, uri: str = "<frame>") -> pd.DataFrame:
    """Return the frame coerced to the contract's types, or raise :class:`DataContractError`."""
    try:
        return build_schema(contract).validate(frame, lazy=True)
    except SchemaErrors as errors:
        raise DataContractError(uri, _violations(errors, contract.dataset)) from None


@runlog.stage("validate")
def validate(settings: Settings, logical_date: dt.date) -> dict[str, object]:
    """Validate every raw partition of the run's window; raise on the first partition that fails."""
    contract = load_contract(settings.resolved_contract_path)
    checked = []
    for day in storage.window_days(logical_date, settings.window_days):
        uri = storage.raw_uri(settings.resolved_data_root, settings.dataset, day)
        manifest = storage.read_manifest(uri)
        validate_frame(storage.read_parquet(uri), contract, uri)
        checked.append({"uri": uri, "rows": manifest.rows, "content_hash": manifest.content_hash})
        log.info("%s holds its contract (%d rows)", uri, manifest.rows)
    return {"logical_date": logical_date.isoformat(), "partitions": checked, "contract": contract.dataset}
