"""The ``dataset`` parameter every DAG of this folder takes, with one name rule.

The rule is the settings' ``DATASET_NAME`` (a DAG file imports no ``pipelines`` module while it is parsed;
``tests/dags/test_dag_integrity.py`` holds the two equal), so the trigger form refuses what a task would.
"""

from __future__ import annotations

import os
import re

from airflow.sdk import Param

DATASET_PATTERN = r"^[A-Za-z0-9_-]+$"


def default_dataset() -> str:
    """The deployment's dataset, as the CLI and serving take it: ``CT_DATASET``, else the demo's.

    Read where the DAG is parsed (the scheduler's and the DAG processor's environment), so a scheduled run acts
    on the dataset the deployment names. A name the rule refuses fails the DAG's import, naming the variable.
    """
    name = os.environ.get("CT_DATASET", "transactions")
    if not re.fullmatch(DATASET_PATTERN, name):
        raise ValueError(f"CT_DATASET={name!r}: a dataset name holds only letters, digits, '_' and '-'")
    return name


def dataset_param(description: str, default: str | None = None) -> Param:
    """The trigger form's dataset field: letters, digits, '_' and '-' (it names folders, files and models);
    ``CT_DATASET`` by default."""
    return Param(
        default or default_dataset(),
        type="string",
        pattern=DATASET_PATTERN,
        title="Dataset",
        description=description,
    )
