"""
### retrain

Retrains the model on the logical date's data and promotes it only when the promotion gate says so.

`validate → prepare → train → register → evaluate ∥ drift → gate → route → [approve →] promote`, and
`gate → prune`, and `requeue` beside them

**What starts it.** The daily schedule (01:00 UTC, the previous day's data), a person (Trigger), a
backfill, or the `monitor` DAG: when served traffic breaches the monitoring policy, the monitor emits an
event of the dataset's asset (`ct-retrain://<dataset>`), and a run starts at once for that dataset and the
day of the traffic it judged (the event's `extra`; params keep their defaults). Requests that queue while a
retrain runs are consumed by the one run that follows: it retrains the dataset that waited longest, on its
newest request, and its **requeue** task asks again for each other dataset's newest request (and for one
Airflow's queue left behind), which starts a run of its own after it. The train run's
MLflow tags (`ct.started_by`, `ct.start_reason`), the decision record (`started_by`) and the promotion history's
trigger (`gate (monitor)`, `gate (schedule)`, ...) record what started it. A demo source day that exists is
kept by a run the monitor asked for: it is what was served.

* **validate** first checks the record: a champion alias moved outside the gate (it disagrees with the
  promotion history) fails the run with what to do (before any data is written), and an interrupted
  promotion is resolved. For the demo dataset it then writes the day's partition of the demo source (the
  `scenario` param injects drift; a retry writes the same rows again, overwriting any hand edit of that
  day); a real dataset reads its own source. It checks each day of the source against
  `include/contracts/<dataset>.yaml` on the chosen engine and ingests it as a typed raw partition; a
  violation quarantines the day with a report and fails the run, with no retry.
* **prepare** builds features, the train/validation/holdout split and the window's reference profile on Dask
  or Spark (`engine` param).
* **train** fits the model the dataset's model settings describe (`include/models/`; the `model_family` param
  can pick torch or scikit-learn), stopping early on the validation loss, logged to MLflow; a retry reuses
  the run only when its training identity (data version, family, hyperparameters, code) is unchanged. The
  task stops past `CT_TRAIN_TIMEOUT_S` (3 h) and an hour (a training in the task's own process has no launcher
  to stop it); its retry resumes from the last checkpoint.
* **register** makes it a new model version, alias `challenger`, with lineage tags.
* **evaluate** scores challenger and champion (each verified against its sha256 manifest) on the same holdout:
  the primary metric, a paired bootstrap interval of the difference, slices, one-row latency and model size.
  **drift** writes an Evidently report against the champion's reference profile.
* **gate** applies the promotion policy (`include/policies/<dataset>.yaml` or `include/promotion_policy.yaml`)
  and logs its decision record to MLflow, to this log and to XCom. **route** skips everything after a
  rejection; when the policy says `approval: required`, **approve** waits for a person to approve or reject
  in the Airflow UI (Required Actions), showing the decision record. **promote** moves `champion` by
  compare-and-set, written ahead in the promotion history; with the `dry_run` param it records "would
  promote" and moves nothing. Serving follows the history's champion: with `CT_SERVE_URLS` set, promote also
  calls every replica's `POST /admin/reload` and returns their answers (a replica swaps before answering);
  each replica also polls.
* **prune**, once the gate has decided: prepared windows of days more than `CT_PREPARED_KEEP_DAYS` (30) before
  the run's day are removed, except the windows of versions holding an alias or once champion and any written
  in the last 4 days, and so are training
  job folders no run will resume (`CT_TRAINING_JOBS_KEEP_DAYS`, 7, after their last write; at once when their
  model is logged). With the `dry_run` param it lists them and removes nothing.

**History and backfills.** The logical date is the data's day, so any day of the data can be run: the DAG
starts at `CT_START_DATE` (default 2000-01-01; Airflow creates no task for an earlier date) and catchup is
off. A range of old days is an Airflow backfill, run by the scheduler one day at a time: from the UI (the DAG's
"Backfill" button), or `airflow backfill create --dag-id retrain --from-date 2011-02-13 --to-date
2011-02-15T01:00:00+00:00` (logical dates fall at 01:00, the schedule's time; `--dag-run-conf` sets params).
A paused DAG runs nothing, backfills included; unpausing it also schedules the newest interval with the
default params, as every scheduled run does. A day with no data fails `validate` naming the day, unless the
contract allows the gap (`source.missing_days: skip`).

**Triggering from the UI.** A paused DAG runs nothing, so the trigger form's "Unpause retrain on trigger"
is ticked. Unpausing also starts the daily schedule: Airflow creates the newest interval's scheduled run
(yesterday's data, default params) at once, and as one run is active at a time, your run may wait behind it
(it shows as queued). That run is the schedule's, not a fault; its gate judges it like any other. To try
params without it, leave the DAG paused and run one date with `airflow dags test retrain <date> -c '<conf>'`.

Every task is a few lines over one function of the `pipelines` package and passes small JSON through XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, get_current_context, task
from common.assets import (
    RETRAIN_REQUESTS,
    any_retrain_request,
    datasets,
    plan,
    request_day,
    requests_of,
    requeue_plan,
    retrain_request,
    run_day,
)
from common.params import dataset_param, engine_param

# MLflow gives its loggers a handler of their own on stderr, which Airflow records as errors: a successful
# run showed its INFO lines in red. Left unconfigured, they go through Airflow's task logging at their own
# level. Set here, before any task imports MLflow (a task process parses this file first).
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

DAG_ID = Path(__file__).stem
log = logging.getLogger(__name__)


def _start_date() -> dt.datetime:
    """The earliest logical date this DAG runs: ``CT_START_DATE`` (YYYY-MM-DD), early enough for any history.

    Airflow creates no task for a logical date before it, so a backfill of older data needs it earlier.
    """
    value = os.environ.get("CT_START_DATE", "2000-01-01")
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"CT_START_DATE={value!r} is not a date (YYYY-MM-DD)") from None


#: The settings' default of CT_TRAIN_TIMEOUT_S (a DAG file imports no ``pipelines`` module while it is parsed;
#: tests/dags/test_dag_integrity.py holds the two equal).
TRAIN_TIMEOUT_S = 3 * 3600
#: What the train task does besides training: reading the moments and splits, logging and exporting the model.
TRAIN_TASK_MARGIN = dt.timedelta(hours=1)


def _train_task_timeout() -> dt.timedelta:
    """The train task's limit: ``CT_TRAIN_TIMEOUT_S`` and :data:`TRAIN_TASK_MARGIN`. A launched training stops
    itself at CT_TRAIN_TIMEOUT_S, naming its ranks; one rank in the task's own process (the default below a
    million rows) has no launcher to stop it, and a training that hung there held the run's lock, and the DAG's
    one active run, for good. Airflow fails the task past this, and its retry resumes from the last checkpoint."""
    value = os.environ.get("CT_TRAIN_TIMEOUT_S", str(TRAIN_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 30 * 86_400:  # the settings' bounds (NaN fails them too)
        raise ValueError(f"CT_TRAIN_TIMEOUT_S={value!r} is not a number of seconds above 0, at most 30 days")
    return dt.timedelta(seconds=seconds) + TRAIN_TASK_MARGIN


APPROVAL_TIMEOUT = dt.timedelta(days=3)  # unanswered: the default, Reject, is taken


def _events() -> list[Any]:
    """The asset events (retrain requests) that started this run; none for any other run."""
    context = get_current_context()
    if context["dag_run"].run_type != "asset_triggered":
        return []
    return [event for found in context["triggering_asset_events"].values() for event in found]


def _request() -> dict[str, Any] | None:
    """The retrain request this run serves (see ``common.assets.plan``), else None.

    Its ``dataset`` is the asset's; a request with no ``day`` (an event posted by hand, from the UI's asset
    page) retrains the day before it was asked for, the latest whole day, as the daily schedule does. The other
    datasets' requests that came with it are asked for again by the ``requeue`` task."""
    requests, refused = requests_of(_events())
    chosen, _ = plan(requests)
    if chosen is None:
        if refused:  # every request that started the run is malformed: no retry mends its extra
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("; ".join(refused))
        return None
    return chosen.extra | {"day": request_day(chosen), "requested_at": chosen.asked_at.isoformat()}


@task(outlets=[RETRAIN_REQUESTS], inlets=[retrain_request(name) for name in datasets()])
def requeue() -> dict[str, Any]:
    """Requests this run consumed and does not retrain, and requests Airflow left behind while a retrain ran,
    are asked for again (an event of the dataset's asset, through the alias), so that each dataset gets a run
    of its own. Without this such a request was lost, and its monitor, which counts its ask as delivered, held
    the next one back for the cooldown. See ``common.assets.ask_again``.
    """
    context = get_current_context()
    run = context["dag_run"]

    def newer(dataset: str, after: dt.datetime) -> Any:
        return context["inlet_events"][retrain_request(dataset)].after(after.isoformat())

    consumed, _ = requests_of(_events())
    chosen, asks, already = requeue_plan(consumed, newer, context["run_id"], run.start_date or run.run_after)
    for dataset, extra in asks:  # registered in this order once the task succeeds: longest waiting first
        context["outlet_events"][RETRAIN_REQUESTS].add(retrain_request(dataset), extra=extra)
    retrains = chosen.dataset if chosen is not None else None
    asked = [dataset for dataset, _ in asks]
    if asked:
        log.warning(
            "this run retrains %s; the requests for %s are asked for again: each starts a retrain run of "
            "its own after this one",
            retrains,
            ", ".join(asked),
        )
    return {"retrains": retrains, "asked_again": asked, "already_asked": already}


def _started_by() -> dict[str, Any]:
    """What started this run: the schedule, a person (manual), a backfill, the monitor with its reason (and
    the run that asked for it again, if one did), or an event posted by hand on a request asset."""
    request = _request()
    if request is not None:
        by = "monitor" if request.get("interval") else "asset_event"  # the monitor names its interval
        started = {"by": by, "reason": request.get("reason"), "interval": request.get("interval")}
        return started | ({"requeued_by": request["requeued_by"]} if request.get("requeued_by") else {})
    run_type = get_current_context()["dag_run"].run_type
    kind = str(getattr(run_type, "value", run_type))  # an enum of str: its value, not "DagRunType.SCHEDULED"
    return {"by": {"scheduled": "schedule"}.get(kind, kind), "reason": None}


def _settings() -> Any:
    from pipelines.settings import get_settings

    params = get_current_context()["params"]
    overrides = {"promotion_dry_run": True} if params.get("dry_run") else {}
    if params["model_family"] != "default":
        overrides["model_family"] = params["model_family"]
    request = _request()  # a run the monitor asked for retrains the dataset it watched
    dataset = request["dataset"] if request else params["dataset"]
    return get_settings(dataset=dataset, engine=params["engine"], **overrides)


class ApprovalBranch(HITLBranchOperator):
    """Approve → promote, Reject → record_rejection; who answered is kept in XCom (key ``responded_by``)."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        user = event.get("responded_by_user") or {}
        who = user.get("name") or user.get("id") or "nobody: the request timed out"
        context["ti"].xcom_push(key="responded_by", value=who)
        return super().execute_complete(context=context, event=event)


def _day() -> dt.date:
    """The data date of this run: its logical date (the start of its daily data interval), or the latest whole
    day when that one had not ended when the run was asked for (``run_day``); for a run the monitor asked for,
    the day of the traffic it judged."""
    request = _request()
    if request is not None:
        return dt.date.fromisoformat(request["day"])
    context = get_current_context()
    return run_day(context.get("logical_date"), context["dag_run"].run_after)


@task
def validate() -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.data.generate import generate, has_generator
    from pipelines.data.validate import DataContractError
    from pipelines.data.validate import validate as run
    from pipelines.release import audit

    settings = _settings()
    # The run starts by checking the record: a champion alias moved outside the gate stops it here.
    checked = audit.check(settings)
    if not checked["consistent"]:
        raise AirflowFailException(checked["problem"])
    if has_generator(settings):
        # The demo dataset's day arrives here (the scenario param shapes it); a real dataset reads its source.
        # A run the monitor asked for keeps the day's source: it is what was served.
        keep = _request() is not None
        generate(settings, _day(), get_current_context()["params"]["scenario"], keep_existing=keep)
    try:
        return run(settings, _day())
    except DataContractError as exc:  # bad data does not get better on retry
        raise AirflowFailException(str(exc)) from exc


@task
def prepare() -> dict[str, Any]:
    from pipelines.data.prepare import prepare as run
    from pipelines.evaluation.policy import load_policy

    settings = _settings()
    holdout = load_policy(settings.resolved_policy_path).holdout  # the policy chooses the holdout
    return run(settings, _day(), holdout_days=holdout.latest_days)


@task(execution_timeout=_train_task_timeout())
def train(prepared: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.configuration import conf

    from pipelines.release.tracking import RunContext, airflow_run_url, daily_run_key
    from pipelines.training.train import train as run

    settings, context = _settings(), get_current_context()
    # train() adds the training's identity (dataset version, family, hyperparameters, code), so a retry
    # reuses the run only when nothing that decides the model has changed; `pipelines train` uses the same key.
    key = daily_run_key(_day())
    # The MLflow run and its model version link back to this run's page (Airflow's own base URL setting).
    url = airflow_run_url(
        conf.get("api", "base_url", fallback="http://localhost:8080"), DAG_ID, context["run_id"]
    )
    started = _started_by()
    run_context = RunContext(key, DAG_ID, context["run_id"], url, started["by"], started["reason"])
    return run(settings, _day(), prepared["uri"], run_context)


@task
def register(trained: dict[str, Any]) -> dict[str, Any]:
    from pipelines.release.register import register as run

    return run(_settings(), _day(), trained["run_id"])


@task
def evaluate(prepared: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
    from pipelines.evaluation.evaluate import evaluate as run

    return run(_settings(), _day(), prepared["uri"], registered["version"])


@task
def drift(prepared: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
    from pipelines.evaluation.drift import drift as run

    return run(_settings(), _day(), prepared["uri"], registered["version"])


@task
def gate(evaluation: dict[str, Any], drift_summary: dict[str, Any]) -> dict[str, Any]:
    from pipelines.evaluation.gate import gate as run

    settings = _settings()
    record = run(settings, _day(), evaluation, drift_summary)
    record["started_by"] = _started_by()  # kept with the decision in the promotion history
    # The approval page renders the Markdown; the return value, which the UI's XCom view shows, stays the
    # structured record. The dataset is the one this run trains: a run the monitor asked for trains the
    # dataset it watched, whatever the params say.
    ti = get_current_context()["ti"]
    ti.xcom_push(key="markdown", value=record.pop("markdown"))
    ti.xcom_push(key="dataset", value=settings.dataset)
    return record


@task.branch
def route(decision: dict[str, Any]) -> str | None:
    if decision["decision"] != "promote":
        return None  # rejected: approve and promote are skipped, the champion stays
    if decision.get("approval") == "required" and not decision.get("dry_run"):
        return "approve"
    return "promote"


@task
def record_rejection(decision: dict[str, Any]) -> dict[str, Any]:
    from pipelines.release.promote import record_rejection as run

    context = get_current_context()
    who = context["ti"].xcom_pull(task_ids="approve", key="responded_by")
    return run(
        _settings(),
        decision["challenger_version"],
        decision["champion_version"],
        who or "unknown",
        decision=decision,
        dag_id=DAG_ID,
        run_id=context["run_id"],
    )


@task(trigger_rule="none_failed_min_one_success")
def promote(decision: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.release.audit import AliasMovedError
    from pipelines.release.integrity import IntegrityError
    from pipelines.release.promote import ChampionChangedError, PromotionRefusedError
    from pipelines.release.promote import promote as run

    context = get_current_context()
    approved_by = context["ti"].xcom_pull(task_ids="approve", key="responded_by")
    try:
        return run(
            _settings(),
            _day(),
            decision["challenger_version"],
            decision["champion_version"],
            reason=f"gate ({decision['started_by']['by']})",  # the history's trigger: what started the run
            decision=decision,
            dag_id=DAG_ID,
            run_id=context["run_id"],
            approved_by=approved_by,
        )
    except (PromotionRefusedError, ChampionChangedError, AliasMovedError, IntegrityError) as exc:
        # Each is recorded in the promotion history, and a retry would meet the same answer and record it
        # again: a person's word, a champion that moved since the gate, an alias moved outside it, or files
        # that fail their manifest. The task fails once, naming it.
        raise AirflowFailException(str(exc)) from exc


@task
def prune(decision: dict[str, Any]) -> dict[str, Any]:
    """Once the day is decided: its retention (prepared windows, training jobs no run will resume)."""
    from pipelines.training.retention import prune as run

    settings = _settings()
    return run(settings, _day(), dry_run=settings.promotion_dry_run)


@dag(
    dag_id=DAG_ID,
    # Daily, or sooner when the monitor asks for a retrain of a dataset (see the monitor DAG).
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"), assets=any_retrain_request()
    ),
    start_date=_start_date(),
    catchup=False,
    max_active_runs=1,
    tags=["continuous-training", "retrain"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "dataset": dataset_param(
            "Its contract is include/contracts/<dataset>.yaml; the source URI comes from the "
            "contract or CT_SOURCE_URI."
        ),
        "engine": engine_param(
            "Data preparation engine",
            "Dask or Spark runs the prepare stage; both give the same features. CT_ENGINE by default.",
        ),
        "model_family": Param(
            "default",
            enum=["default", "torch", "sklearn"],
            title="Model family",
            description="default: the dataset's model settings (include/models/<dataset>.yaml, else "
            "include/models/default.yaml) choose; torch: an MLP (DDP across processes for large data); "
            "sklearn: gradient-boosted trees.",
        ),
        "scenario": Param(
            "none",
            enum=["none", "covariate_shift", "concept_drift", "missing_values", "schema_break"],
            title="Demo data scenario",
            description="Injects drift or broken data into the demo source for this date "
            "(only for a dataset written by the demo generator).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Gate and record the decision, but move nothing: a passing challenger is recorded "
            "as 'would promote' in the promotion history.",
        ),
    },
)
def retrain() -> None:
    approve = ApprovalBranch(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='gate', key='dataset') }} model "
        "v{{ ti.xcom_pull(task_ids='gate')['challenger_version'] }}?",
        body="{{ ti.xcom_pull(task_ids='gate', key='markdown') }}",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "promote", "Reject": "record_rejection"},
        defaults=["Reject"],
        response_timeout=APPROVAL_TIMEOUT,
    )
    requeue()  # beside validate: a run whose own dataset fails still passes the others' requests on
    prepared = prepare()
    validate() >> prepared
    registered = register(train(prepared))
    decision = gate(evaluate(prepared, registered), drift(prepared, registered))
    routed = route(decision)
    prune(decision)
    promoted = promote(decision)
    routed >> [approve, promoted]
    approve >> [promoted, record_rejection(decision)]


retrain()
