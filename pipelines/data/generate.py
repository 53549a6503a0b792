"""Demo data source: a synthetic but realistic churn dataset, one Parquet partition a day.

Customers have stable attributes (age, region, plan, sign-up date); each day a sample of them transacts.
The data is deterministic for (seed, date, scenario). Scenarios inject what production data does to a
model: ``covariate_shift`` (inputs move), ``concept_drift`` (the input-to-label relation changes, and the
channel mix moves with it, as when a competitor's app launch changes who leaves),
``missing_values`` (nulls where the contract forbids them) and ``schema_break`` (a renamed column and a
numeric column sent as text).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data import runlog, sources, storage
from pipelines.data.contract import dataset_contract
from pipelines.settings import DEMO_CUSTOMERS, Settings

log = logging.getLogger(__name__)

Scenario = Literal["none", "covariate_shift", "concept_drift", "missing_values", "schema_break"]


class NoGeneratorError(ValueError):
    """The dataset's data comes from its own source, not from the demo generator."""


SCENARIOS: tuple[str, ...] = ("none", "covariate_shift", "concept_drift", "missing_values", "schema_break")

CUSTOMER_POOL = DEMO_CUSTOMERS  # one row per customer a day: the most rows a day can have
EPOCH = dt.date(2020, 1, 1)
CHANNELS = np.array(["web", "app", "store"])
REGIONS = np.array(["north", "south", "east", "west"])
PLANS = np.array(["basic", "plus", "pro"])


def _customers(seed: int) -> pd.DataFrame:
    """Stable customer attributes, the same for every day."""
    rng = np.random.default_rng([seed, 0])
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(CUSTOMER_POOL)],
            "age": np.clip(rng.normal(42, 13, CUSTOMER_POOL), 18, 95).astype("int64"),
            "region": REGIONS[rng.choice(4, CUSTOMER_POOL, p=[0.3, 0.25, 0.25, 0.2])],
            "plan": PLANS[rng.choice(3, CUSTOMER_POOL, p=[0.5, 0.35, 0.15])],
            "signup_offset": rng.integers(0, 2400, CUSTOMER_POOL),
        }
    )


def _label_logit(frame: pd.DataFrame, scenario: str) -> np.ndarray:
    log_amount = np.log1p(frame["amount"].to_numpy())
    tenure_years = frame["tenure_days"].to_numpy() / 365.0 - 3.5
    txn = np.log1p(frame["num_txn_30d"].to_numpy())
    basic = (frame["plan"] == "basic").to_numpy(float)
    app = (frame["channel"] == "app").to_numpy(float)
    age = (frame["age"].to_numpy() - 42) / 13
    if scenario == "concept_drift":
        # Long-tenured, high-spending customers now leave: the old model's ranking inverts.
        return (
            -1.1
            + 0.9 * (log_amount - 4.0)
            + 0.6 * tenure_years
            - 0.9 * (txn - 2.0)
            + 0.2 * basic
            - 0.6 * app
            + 0.4 * age
        )
    return (
        -1.4
        - 0.8 * (log_amount - 4.0)
        - 0.45 * tenure_years
        - 0.7 * (txn - 2.0)
        + 0.9 * basic
        + 0.5 * app
        - 0.3 * age
    )


def generate_day(day: dt.date, seed: int, rows: int, scenario: str = "none") -> pd.DataFrame:
    """Rows for one day; deterministic for (seed, day, rows, scenario)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}'; choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng([seed, day.toordinal()])
    customers = _customers(seed)
    chosen = customers.iloc[np.sort(rng.choice(CUSTOMER_POOL, size=rows, replace=False))].reset_index(
        drop=True
    )
    shift = scenario == "covariate_shift"
    channel_p = {"covariate_shift": [0.2, 0.65, 0.15], "concept_drift": [0.3, 0.52, 0.18]}.get(
        scenario, [0.45, 0.35, 0.2]
    )
    frame = pd.DataFrame(
        {
            "customer_id": chosen["customer_id"].to_numpy(),
            "event_ts": pd.Timestamp(day, tz="UTC")
            + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, rows)), unit="ms"),
            "amount": np.round(rng.lognormal(4.6 if shift else 4.0, 0.8, rows), 2),
            "age": chosen["age"].to_numpy() + (7 if shift else 0),
            "tenure_days": (day - EPOCH).days - chosen["signup_offset"].to_numpy(),
            "num_txn_30d": rng.poisson(9 if shift else 6, rows).astype("int64"),
            "avg_basket": np.round(rng.gamma(2.0, 20.0, rows), 2),
            "channel": CHANNELS[rng.choice(3, rows, p=channel_p)],
            "region": chosen["region"].to_numpy(),
            "plan": chosen["plan"].to_numpy(),
        }
    )
    frame["tenure_days"] = frame["tenure_days"].clip(lower=0).astype("int64")
    frame["age"] = frame["age"].clip(upper=100).astype("int64")
    # A few honest gaps: the contract allows up to 10% nulls in avg_basket.
    frame.loc[rng.random(rows) < 0.02, "avg_basket"] = np.nan
    logit = _label_logit(frame, scenario) + rng.normal(0, 0.5, rows)
    frame["churned"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")

    if scenario == "missing_values":
        frame.loc[rng.random(rows) < 0.35, "avg_basket"] = np.nan
        frame.loc[rng.random(rows) < 0.05, "amount"] = np.nan
    elif scenario == "schema_break":
        frame = frame.rename(columns={"plan": "plan_tier"})
        frame["amount"] = frame["amount"].map(lambda v: f"{v:.2f} EUR")
    return frame


def write_source_day(frame: pd.DataFrame, uri: str) -> None:
    """Write one day of the demo source as an upstream system would: a folder holding one Parquet file."""
    with storage.atomic_dir(uri) as tmp:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with storage.open_write(storage.join(tmp, "part-0.parquet")) as fh:
            pq.write_table(table, fh, coerce_timestamps="us", allow_truncated_timestamps=True)


def has_generator(settings: Settings) -> bool:
    """Whether the dataset's source is written by the demo generator (and not overridden by CT_SOURCE_URI)."""
    contract = dataset_contract(settings)
    return contract.source.generator == "transactions" and not settings.source_uri


@runlog.stage("generate")
def generate(
    settings: Settings,
    logical_date: dt.date,
    scenario: str = "none",
    days: int | None = None,
    keep_existing: bool = False,
) -> dict[str, object]:
    """Write the demo source's partitions for the window ending on ``logical_date``; return their URIs.

    The logical date's partition is rewritten in full with the scenario, so a re-run of the same date and
    scenario gives the same rows; with ``keep_existing`` (a retrain the monitor asked for: the day's source
    is what was served) it is kept when it exists. Earlier days of the window are written (with no scenario)
    only when missing: what an earlier run wrote for its own date is left as it was.
    """
    contract = dataset_contract(settings)
    if contract.source.generator != "transactions":
        raise NoGeneratorError(
            f"dataset '{contract.dataset}' has no demo generator: its data comes from {contract.source.uri}"
        )
    if settings.source_uri:
        raise NoGeneratorError(
            f"CT_SOURCE_URI is set ({settings.source_uri}): the source is your own data, which the demo "
            "generator never overwrites; unset it to generate demo data"
        )
    partitions: list[dict[str, object]] = []
    for day in storage.window_days(logical_date, days or settings.window_days):
        uri = sources.resolve(settings, contract, day)
        if (day != logical_date or keep_existing) and storage.exists(uri):
            partitions.append({"day": day.isoformat(), "uri": uri, "status": "kept"})
            continue
        day_scenario = scenario if day == logical_date else "none"
        frame = generate_day(day, settings.seed, settings.rows_per_day, day_scenario)
        write_source_day(frame, uri)
        log.info("wrote %s rows to %s (scenario %s)", len(frame), uri, day_scenario)
        partitions.append({"day": day.isoformat(), "uri": uri, "rows": len(frame), "scenario": day_scenario})
    return {"logical_date": logical_date.isoformat(), "scenario": scenario, "partitions": partitions}
