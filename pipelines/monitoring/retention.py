"""Retention: the monitor's reports and the prediction log removed once they are old (the policy's ``retention``).

An hourly monitor writes a self-contained HTML report of about 4 MB twice an interval (the data root and its
MLflow run), and serving writes every row it answers: both grow without end unless something removes them.
:func:`prune` removes, relative to the day of the interval a monitor run judged (so a re-run of a date removes
what its first run removed, and a late run of an old date removes less, never more):

- ``reports/ds=<day>/`` of the days more than ``retention.reports_days`` before, and the monitoring
  experiment's runs of those days (deleted as MLflow deletes a run: ``mlflow gc`` frees their artifacts);
- the prediction log's ``ds=<day>/`` (and ``_unreadable/ds=<day>/``) of the days more than
  ``retention.prediction_log_days`` before.

The figures and the trigger records (a few kB an interval: the trend and the cooldown are made of them) are
kept. Before it removes anything, :func:`prune` records how far it goes (``retention.json`` beside the
figures, only ever moved later; written again after the removals, for a prune beside it), and the monitor
refuses an interval whose log, or whose labelled day's log, was removed (:class:`PrunedIntervalError`) rather
than judge it again on fewer rows and give another verdict: its figures, written when it was judged, stand.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from pipelines.data import storage
from pipelines.monitoring.logfiles import UNREADABLE
from pipelines.monitoring.policy import MonitoringPolicy

if TYPE_CHECKING:
    from pipelines.settings import Settings

log = logging.getLogger(__name__)

HORIZON = "retention.json"
PREDICTION_LOG = "prediction_log_before"  # the horizon's key: the first day of log still kept


class PrunedIntervalError(ValueError):
    """An interval whose prediction log retention has removed: it cannot be judged again."""


def horizon_uri(settings: Settings) -> str:
    return storage.join(settings.monitoring_uri, HORIZON)


def kept_from(settings: Settings) -> dt.date | None:
    """The first day of the prediction log still kept, once retention has removed any day before it."""
    uri = horizon_uri(settings)
    return dt.date.fromisoformat(storage.read_json(uri)[PREDICTION_LOG]) if storage.exists(uri) else None


def check_judgeable(settings: Settings, interval: str, first_day: dt.date, labels_day: dt.date) -> None:
    """Refuse the interval named ``interval`` when the log of its first day, or of ``labels_day`` (the day whose
    served rows it joins to their labels), was removed: judged again without them, its verdict would not be the
    one it had."""
    first_kept = kept_from(settings)
    if first_kept is None or min(first_day, labels_day) >= first_kept:
        return
    which = "its traffic" if first_day < first_kept else f"the traffic of {labels_day}, whose labels it joins"
    raise PrunedIntervalError(
        f"the prediction log of {settings.dataset} before {first_kept} was removed by retention "
        f"(retention.prediction_log_days of the monitoring policy): the interval {interval} cannot be "
        f"judged again without {which}; what it was judged when its log was there stands "
        "(`pipelines monitor history`)"
    )


def _old_runs(client: Any, experiment: str, dataset: str, before: dt.date) -> list[str]:
    """The monitoring runs of ``dataset`` that judged intervals of days before ``before`` (by their ``interval``
    tag: an interval judged late, or again, is a run started long after its day)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.dataset = '{dataset}'",
            max_results=1000,
            page_token=token,
        )
        runs += [
            run.info.run_id for run in page if run.data.tags.get("interval", "9999")[:10] < before.isoformat()
        ]
        token = page.token
        if not token:
            return runs


def prune(
    settings: Settings, policy: MonitoringPolicy, day: dt.date, client: Any = None, dry_run: bool = False
) -> dict[str, Any]:
    """Remove what the policy's retention says is old on ``day`` (the judged interval's day); what it removed
    (with ``dry_run``, what it would). ``client``: MLflow's, for the monitoring runs (none: left).

    The policy is checked against the contract first (a log kept for fewer days than its labels take is
    refused, as the monitor refuses it), and a day after today is refused: a typo of a year would remove the
    whole log, and the monitor would refuse every interval after it."""
    from pipelines.data.contract import dataset_contract
    from pipelines.monitoring.policy import check_against_contract

    contract = dataset_contract(settings)
    check_against_contract(
        policy, contract.feature_columns, contract.label_delay_hours, settings.resolved_monitoring_policy_path
    )
    storage.check_not_future(day, "retention of the monitor's reports and prediction log")
    rule = policy.retention
    reports_before = None if rule.reports_days is None else day - dt.timedelta(days=rule.reports_days)
    log_before = (
        None if rule.prediction_log_days is None else day - dt.timedelta(days=rule.prediction_log_days)
    )
    reports: list[str] = []
    runs: list[str] = []
    if reports_before is not None:
        reports = storage.day_folders_before(storage.join(settings.monitoring_uri, "reports"), reports_before)
        if client is not None:
            runs = _old_runs(client, settings.monitoring_experiment, settings.dataset, reports_before)
    log_days: list[str] = []
    if log_before is not None:
        log_days = [
            *storage.day_folders_before(settings.prediction_log_uri, log_before),
            *storage.day_folders_before(storage.join(settings.prediction_log_uri, UNREADABLE), log_before),
        ]
    result: dict[str, Any] = {
        "day": day.isoformat(),
        "reports_before": None if reports_before is None else reports_before.isoformat(),
        PREDICTION_LOG: None if log_before is None else log_before.isoformat(),
        "reports_removed": reports,
        "prediction_log_removed": log_days,
        "runs_deleted": runs,
        "dry_run": dry_run,
    }
    if dry_run:
        return result
    _advance_horizon(settings, log_before)
    for uri in [*reports, *log_days]:
        storage.remove(uri)
        log.info("retention: removed %s", uri)
    # Again: a prune of an earlier day beside this one (a person's, beside the DAG's) may have read the record
    # before this one wrote it, and written its earlier day over it since.
    _advance_horizon(settings, log_before)
    for run_id in runs:
        client.delete_run(run_id)
    if runs:
        log.info("retention: deleted %d monitoring runs of days before %s", len(runs), reports_before)
    return result


def _advance_horizon(settings: Settings, log_before: dt.date | None) -> None:
    """Record the first day of log kept (none: no log retention), before anything is removed: only ever later
    (a late run of an older date removes less, and must not bring back a day that is gone)."""
    if log_before is None:
        return
    first_kept = kept_from(settings)
    if first_kept is None or log_before > first_kept:
        storage.write_json_atomic(
            horizon_uri(settings),
            {
                PREDICTION_LOG: log_before.isoformat(),
                "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )


def prune_now(settings: Settings, day: dt.date, dry_run: bool = False) -> dict[str, Any]:
    """:func:`prune` with the dataset's monitoring policy and MLflow's client: the monitor DAG's task, and
    ``pipelines monitor prune``."""
    from pipelines.monitoring.policy import load_monitoring_policy
    from pipelines.release import tracking

    policy = load_monitoring_policy(settings.resolved_monitoring_policy_path)
    return prune(settings, policy, day, tracking.configure(settings), dry_run=dry_run)
