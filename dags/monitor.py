"""
### monitor

Every hour (at 5 past, once serving has written the hour's last rows), judges the hour before of served
traffic (the prediction log) against the champion, and asks for a retrain when the evidence says so.
Triggered by hand, it judges the hour up to the moment it was triggered (to the end of that minute, which
it waits out, with serving's last flush: about a minute at most); given a logical date, the whole hours of its
data interval, as a scheduled run. An interval is never judged before it is over and its rows are written
(a logical date in the future fails, named, rather than judging the part served so far).

`monitor`: one task over `pipelines.monitoring.monitor.monitor`, on Dask or Spark (`engine` param), for the
run's data interval:

* **feature drift** of the served rows against the champion's reference profile (the gate's tests, each
  feature's from the contract), and **critical columns**;
* **prediction drift**: the served probabilities against the champion's on its own holdout;
* **live quality**: once a day's labels are due (the contract's `label_delay_hours` after it ends), the
  champion's primary metric on the served rows joined to their labels, against its holdout figure. Rows sent
  without an entity id and event time are counted as unjoinable. Drift with no labels yet is reported as
  such;
* **data quality**: nulls against the reference, values outside the contract, volume against the same hour
  of earlier days.

The monitoring policy (`include/monitoring/<dataset>.yaml`, else `include/monitoring_policy.yaml`) turns
breaches into a verdict. When it asks for a retrain, the task emits an event of the dataset's asset
(`ct-retrain://<dataset>`, through the alias `ct-retrain-requests`) whose `extra` carries the reason and the
figures; the `retrain` DAG is scheduled on its daily time *or* that asset, and records what started it.
Cooldown, the settling time after a promotion and the daily budget are enforced here: a suppressed request
is recorded with its reason (`pipelines monitor history`), and no event is emitted. A re-run of an hour
judges it again and never asks twice (`already_asked`), unless Airflow holds no event of its ask (the task
that asked failed after recording it): then it asks again. A run that failed before deciding asked for
nothing, and its retry asks. An hour judged late is judged against the champion of its end (the promotion
history), not today's. A day's live metric asks once per champion, not every hour that sees it.

The report (Evidently's HTML with every signal above it, JSON, Prometheus text) is written under
`<data_root>/monitoring/<dataset>/` and logged to the MLflow experiment `<experiment>-monitoring`, tagged
with the champion's version. `pipelines monitor -d <date> [--hour H]` runs the same without Airflow.

`prune`, once the interval is judged: the policy's `retention` (`pipelines.monitoring.retention`) removes
the reports (and the monitoring runs) and the prediction log's days more than that many days before the
interval's day. Figures and trigger records are kept. An interval whose log (or whose labelled day's log) was
removed is refused, not judged again on fewer rows. `pipelines monitor prune -d <date> [--dry-run]` runs the same without Airflow.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task
from common.assets import RETRAIN_REQUESTS, retrain_request
from common.params import dataset_param, engine_param

# As in retrain.py: MLflow's log lines through Airflow's task logging at their own level, not as stderr.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

DAG_ID = Path(__file__).stem


def _interval(context: Any) -> Any:
    """The run's interval: a scheduled run's (or one given a logical date) whole hours of its data interval;
    triggered with no logical date, the hour up to when it was asked."""
    from pipelines.monitoring.monitor import Interval

    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return Interval.whole_hours(start, end)
    return Interval.hour_up_to(context["dag_run"].run_after)


@task(outlets=[RETRAIN_REQUESTS], inlets=[RETRAIN_REQUESTS])
def monitor() -> dict[str, Any]:
    from pipelines.monitoring.monitor import monitor as run
    from pipelines.monitoring.monitor import wait_until_judgeable
    from pipelines.settings import get_settings

    context = get_current_context()
    params = context["params"]
    interval = _interval(context)

    def delivered(name: str, start: dt.datetime) -> bool:
        """Whether Airflow holds this dataset's request for the interval ``name`` (the events through the
        alias since the interval began at ``start``: an event is registered only when the task that emitted it
        succeeds)."""
        events = context["inlet_events"][RETRAIN_REQUESTS].after(start.isoformat())
        return any(
            (e.extra or {}).get("dataset") == params["dataset"] and (e.extra or {}).get("interval") == name
            for e in events
        )

    settings = get_settings(dataset=params["dataset"], engine=params["engine"])
    wait_until_judgeable(settings, interval)  # a run by hand: its minute's end and serving's last flush
    result = run(settings, interval, delivered=delivered)
    if "event" in result:  # the policy asked for a retrain: the dataset's asset gets an event
        context["outlet_events"][RETRAIN_REQUESTS].add(
            retrain_request(params["dataset"]), extra=result["event"]
        )
    return {k: result[k] for k in ("interval", "rows", "state", "verdict") if k in result}


@task
def prune() -> dict[str, Any]:
    """Once the interval is judged, what the policy's retention says is old on its day is removed."""
    from pipelines.monitoring.retention import prune_now
    from pipelines.settings import get_settings

    context = get_current_context()
    settings = get_settings(dataset=context["params"]["dataset"])
    result = prune_now(settings, _interval(context).day)
    removed = ("reports_removed", "prediction_log_removed", "runs_deleted")
    return {k: len(v) if k in removed else v for k, v in result.items()}


@dag(
    dag_id=DAG_ID,
    # At 5 past every hour, the hour before it; a run triggered by hand judges the hour up to that moment.
    schedule=CronTriggerTimetable("5 * * * *", timezone="UTC", interval=dt.timedelta(hours=1)),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["continuous-training", "monitor"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "dataset": dataset_param(
            "Whose champion's served traffic is judged (its prediction log and contract)."
        ),
        "engine": engine_param(
            "Engine",
            "Dask or Spark reads the prediction log and computes the figures; both give the same. CT_ENGINE by "
            "default.",
        ),
    },
)
def monitor_dag() -> None:
    monitor() >> prune()


monitor_dag()
