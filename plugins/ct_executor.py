"""Airflow's LocalExecutor with warm workers: the stages' libraries are imported once, before the workers are
forked, so every task (itself forked from a worker) starts with torch, MLflow, Evidently and Dask loaded.

Select it with ``AIRFLOW__CORE__EXECUTOR=ct_executor.PreloadingLocalExecutor`` (``scripts/env.sh`` does, so
``make airflow`` and the suite's real Airflow run it). The plugins folder is on every Airflow component's
import path. The scheduler imports :data:`pipelines.preload.MODULES` when it starts its executor (about 9 s on
2 cores, within the 30 s its health check allows) and holds them; the README's "What a DAG run costs beyond
its stages" gives the memory and the time each task saves. After upgrading a library, restart the scheduler.
"""

from __future__ import annotations

import logging
import multiprocessing
import os

from airflow.executors.local_executor import LocalExecutor

from pipelines.preload import preload

log = logging.getLogger(__name__)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose worker processes are forked after :func:`pipelines.preload.preload`."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            # MLflow gives its loggers a stderr handler of their own when it is first imported, and a task
            # inherits them: Airflow would record its INFO lines as errors. The DAG files say the same before
            # a task imports MLflow; here MLflow is imported before any DAG file is read.
            os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
            # A library that cannot be imported is left to the tasks, which fail on it in their own logs;
            # the scheduler starts either way.
            preload(strict=False)
        else:
            # A spawned worker starts a fresh interpreter: importing here would warm nothing.
            log.warning(
                "multiprocessing starts workers with %r, not fork: tasks start cold",
                multiprocessing.get_start_method(),
            )
        super().start()
