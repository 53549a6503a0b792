"""
### rollback

Moves a dataset's `champion` back to an earlier model version, in one action from the Airflow UI
(**Trigger DAG** opens the form).

* **Target version**: leave it empty to roll back to the previous champion (taken from the promotion
  history), or name any registered version.
* **Reason**: required; it is kept in the promotion history beside who and when.

The task goes through the same path as `pipelines rollback` on the command line: the target's files are
checked against the sha256 manifest stored at registration, then the alias moves by compare-and-set under the
promotion lock, written ahead in the promotion history (`pipelines history`), the record of the champion.
Serving follows that record and hot-swaps to the target. A rollback is also how a version is made champion
on the record after someone moved the alias outside the gate.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from common.params import dataset_param

# As in retrain.py: MLflow's log lines through Airflow's task logging at their own level, not as stderr.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

DAG_ID = Path(__file__).stem


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["continuous-training", "rollback"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        "dataset": dataset_param(
            "Whose champion to roll back; the registered model is ct-<dataset> unless "
            "CT_MODEL_NAME says otherwise."
        ),
        "to_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Target version",
            description="The model version to make champion. Empty: the previous champion. The Models view "
            "(Airflow's navigation) lists the versions whose files check out, and rolls back from there.",
        ),
        "from_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Champion it rolls back from",
            description="Roll back only while this version is champion (the Models view sends the one it "
            "showed); another champion by then is recorded as a conflict and nothing moves. Empty: whichever "
            "version is champion.",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=3,
            maxLength=500,
            title="Reason",
            description="Why the champion is rolled back; kept in the promotion history.",
        ),
    },
)
def rollback() -> None:
    @task(retries=0)
    def roll_back() -> dict[str, Any]:
        from pipelines.release.promote import rollback as run
        from pipelines.settings import get_settings

        context = get_current_context()
        params = context["params"]
        user = getattr(context["dag_run"], "triggering_user_name", None)
        return run(
            get_settings(dataset=params["dataset"]),
            params["to_version"],
            params["reason"],
            trigger=f"rollback DAG ({user})" if user else "rollback DAG",
            dag_id=DAG_ID,
            run_id=context["run_id"],
            from_version=params.get("from_version"),
        )

    roll_back()


rollback()
