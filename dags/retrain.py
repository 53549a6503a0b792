"""
### retrain

Retrains the model on the logical date's data and promotes it only when the promotion gate says so.

`generate → validate → prepare → train → register → evaluate → drift → gate → should_promote → promote`

* **generate** writes the day's partition of the demo source (the `scenario` param injects drift); it is
  skipped for a dataset that reads its own source.
* **validate** checks each day of the source against `include/contracts/<dataset>.yaml` on the chosen
  engine and ingests it as a typed raw partition; a violation quarantines the day with a report and fails the
  run, with no retry.
* **prepare** builds features, the train/validation/holdout split and the window's reference profile on Dask
  or Spark (`engine` param).
* **train** fits a torch MLP with DDP, or a scikit-learn model (`model_family` param), logged to MLflow.
* **register** makes it a new model version, alias `challenger`, with lineage tags.
* **evaluate** scores challenger and champion on the same holdout; **drift** writes an Evidently report.
* **gate** applies `include/promotion_policy.yaml`; a rejection skips **promote**.

Every task is a few lines over one function of the `pipelines` package and passes small JSON through XCom.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

DAG_ID = Path(__file__).stem


def _settings() -> Any:
    from pipelines.settings import get_settings

    params = get_current_context()["params"]
    return get_settings(
        dataset=params["dataset"], engine=params["engine"], model_family=params["model_family"]
    )


def _day() -> dt.date:
    """The data date of this run: its logical date (the start of its daily data interval)."""
    context = get_current_context()
    logical = context.get("logical_date") or context["dag_run"].run_after
    return logical.date()


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["continuous-training", "retrain"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "dataset": Param(
            "transactions",
            type="string",
            pattern=r"^[A-Za-z0-9_-]+$",
            title="Dataset",
            description="Its contract is include/contracts/<dataset>.yaml; the source URI comes from the "
            "contract or CT_SOURCE_URI.",
        ),
        "engine": Param(
            "dask",
            enum=["dask", "spark"],
            title="Data preparation engine",
            description="Dask or Spark runs the prepare stage; both give the same features.",
        ),
        "model_family": Param(
            "torch",
            enum=["torch", "sklearn"],
            title="Model family",
            description="torch: an MLP trained with DDP; sklearn: gradient-boosted trees.",
        ),
        "scenario": Param(
            "none",
            enum=["none", "covariate_shift", "concept_drift", "missing_values", "schema_break"],
            title="Demo data scenario",
            description="Injects drift or broken data into the demo source for this date "
            "(only for a dataset written by the demo generator).",
        ),
    },  # fmt: skip
)
def retrain() -> None:
    @task
    def generate() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.generate import generate as run
        from pipelines.generate import has_generator

        settings = _settings()
        if not has_generator(settings):
            raise AirflowSkipException(
                f"dataset {settings.dataset} reads its own source; nothing to generate"
            )
        return run(settings, _day(), get_current_context()["params"]["scenario"])

    @task(trigger_rule="none_failed")
    def validate() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.validate import DataContractError
        from pipelines.validate import validate as run

        try:
            return run(_settings(), _day())
        except DataContractError as exc:  # bad data does not get better on retry
            raise AirflowFailException(str(exc)) from exc

    @task
    def prepare() -> dict[str, Any]:
        from pipelines.prepare import prepare as run

        return run(_settings(), _day())

    @task
    def train(prepared: dict[str, Any]) -> dict[str, Any]:
        from pipelines.tracking import RunContext
        from pipelines.train import train as run

        settings, context = _settings(), get_current_context()
        key = f"{DAG_ID}/{_day()}/{settings.model_family}/{prepared['content_hash'][:16]}"
        return run(settings, _day(), prepared["uri"], RunContext(key, DAG_ID, context["run_id"]))

    @task
    def register(trained: dict[str, Any]) -> dict[str, Any]:
        from pipelines.register import register as run

        return run(_settings(), _day(), trained["run_id"])

    @task
    def evaluate(prepared: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
        from pipelines.evaluate import evaluate as run

        return run(_settings(), _day(), prepared["uri"], registered["version"])

    @task
    def drift(prepared: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
        from pipelines.drift import drift as run

        return run(_settings(), _day(), prepared["uri"], registered["version"])

    @task
    def gate(evaluation: dict[str, Any], drift_summary: dict[str, Any]) -> dict[str, Any]:
        from pipelines.gate import gate as run

        return run(_settings(), _day(), evaluation, drift_summary)

    @task.short_circuit
    def should_promote(decision: dict[str, Any]) -> bool:
        return decision["decision"] == "promote"

    @task
    def promote(decision: dict[str, Any]) -> dict[str, Any]:
        from pipelines.promote import promote as run

        context = get_current_context()
        return run(
            _settings(), _day(), decision["challenger_version"], decision["champion_version"],
            decision=decision, dag_id=DAG_ID, run_id=context["run_id"],
        )  # fmt: skip

    prepared = prepare()
    generate() >> validate() >> prepared
    registered = register(train(prepared))
    decision = gate(evaluate(prepared, registered), drift(prepared, registered))
    should_promote(decision) >> promote(decision)


retrain()
