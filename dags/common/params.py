"""The ``dataset`` parameter every DAG of this folder takes, with one name rule.

The rule is the settings' ``DATASET_NAME`` (a DAG file imports no ``pipelines`` module while it is parsed;
``tests/dags/test_dag_integrity.py`` holds the two equal), so the trigger form refuses what a task would.
"""

from __future__ import annotations

from airflow.sdk import Param

DATASET_PATTERN = r"^[A-Za-z0-9_-]+$"


def dataset_param(description: str, default: str = "transactions") -> Param:
    """The trigger form's dataset field: letters, digits, '_' and '-' (it names folders, files and models)."""
    return Param(default, type="string", pattern=DATASET_PATTERN, title="Dataset", description=description)
