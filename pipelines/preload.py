"""The libraries the stages use, imported ahead by a long-lived worker so that its tasks start warm.

A task runs in a process forked from its worker (Airflow's LocalExecutor and Celery workers both fork one
per task), and a fork inherits every module its parent has imported. Imported once in the worker, torch,
MLflow, Evidently, Dask, pandera and scikit-learn cost each task nothing; imported by each task, they cost
it seconds (measured cold on 2 cores: torch with the compiler stack its optimisers load 6.9 s, MLflow with
its SQL stores 7.0 s, Evidently 9.4 s, scikit-learn's metrics 3.0 s).

Only imports happen here: no thread, connection, file or JVM is opened, so what the fork copies is safe to
use in the child. The list follows what the stages import (``tests/unit/test_preload.py`` checks that a
fresh interpreter imports every module named here).
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

# In the order the stages of one run need them; each entry is what the stage imports on its first call.
MODULES: tuple[str, ...] = (
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pandas",
    "scipy.stats",
    "dask.dataframe",
    "pandera.pandas",
    "pyspark.sql",
    "pipelines.data.validate",
    "pipelines.data.prepare",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "torch",
    "torch.distributed",
    # torch's optimisers import the compiler stack on their first step (2.3 s on its own).
    "torch._dynamo",
    "sklearn.metrics",
    "sklearn.ensemble",
    "pipelines.training.train",
    "pipelines.evaluation.evaluate",
    "evidently",
    "evidently.presets",
    "evidently.legacy.calculations.stattests",
    "pipelines.evaluation.drift",
    "pipelines.release.register",
    "pipelines.release.promote",
)


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import ``modules``; the seconds each took (0 for one already imported). An import that fails is a
    broken install: it raises, naming the module."""
    seconds: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        importlib.import_module(name)
        seconds[name] = round(time.perf_counter() - started, 3)
    log.info("preloaded %d modules in %.1f s", len(seconds), sum(seconds.values()))
    return seconds
