"""What the monitor's tests share: a champion made the way a retrain run makes one, and traffic to send."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd

FEATURES = ["amount", "age", "tenure_days", "num_txn_30d", "avg_basket", "channel", "region", "plan"]


def today(margin_minutes: int = 5) -> dt.date:
    """Today (UTC), after waiting out the day's last minutes, so that what is sent next falls on it."""
    while (now := dt.datetime.now(dt.UTC)).hour == 23 and now.minute >= 60 - margin_minutes:
        time.sleep(5)
    return now.date()


def train_champion(settings, day: dt.date) -> int:
    """A scikit-learn model trained on ``day``'s demo data, evaluated on its holdout and promoted."""
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.evaluation.evaluate import evaluate
    from pipelines.release import tracking
    from pipelines.release.promote import promote
    from pipelines.release.register import register
    from pipelines.training.train import train

    generate(settings, day, "none")
    validate(settings, day)
    prepared = prepare(settings, day, "dask")
    trained = train(settings, day, prepared["uri"], tracking.RunContext("test/monitor"), "sklearn")
    version = register(settings, day, trained["run_id"])["version"]
    evaluate(settings, day, prepared["uri"], version)
    promote(settings, day, version, None)
    return int(version)


def request_rows(frame: pd.DataFrame, keyed: int) -> list[dict]:
    """The rows of a demo frame as a client sends them; the first ``keyed`` carry their entity id and event time."""
    rows = []
    for index, row in enumerate(frame.to_dict(orient="records")):
        body = {name: row[name] for name in FEATURES}
        body["avg_basket"] = None if pd.isna(body["avg_basket"]) else body["avg_basket"]
        if index < keyed:
            body |= {"customer_id": row["customer_id"], "event_ts": row["event_ts"].isoformat()}
        rows.append(body)
    return rows
