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


# The settings' ``ENGINE_NAMES`` (``tests/dags/test_dag_integrity.py`` holds the two equal).
ENGINES = ["dask", "spark"]


def default_engine() -> str:
    """The deployment's engine, as the CLI takes it: ``CT_ENGINE``, else Dask. Read where the DAG is parsed, so
    a scheduled run (and one the monitor asks for) runs on the engine the deployment names: the param's fixed
    default ``dask`` overrode ``CT_ENGINE`` in every run nobody triggered by hand. A value the settings refuse
    fails the DAG's import, naming the variable."""
    name = os.environ.get("CT_ENGINE", "dask")
    if name not in ENGINES:
        raise ValueError(f"CT_ENGINE={name!r}: the engine is one of {', '.join(ENGINES)}")
    return name


def engine_param(title: str, description: str) -> Param:
    """The trigger form's engine field: Dask or Spark, ``CT_ENGINE`` by default."""
    return Param(default_engine(), enum=ENGINES, title=title, description=description)


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
