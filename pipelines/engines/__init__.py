"""Data engines: one interface (:class:`Engine`), a Dask and a Spark implementation, and the one switch.

``open_engine(name, settings)`` is the only place that knows which engines exist. One setting each moves
an engine from embedded to a cluster: ``CT_DASK_SCHEDULER`` (``tcp://host:8786``) and ``CT_SPARK_MASTER``
(``spark://host:7077``), or ``CT_SPARK_REMOTE`` (``sc://host:15002``) for a Spark Connect server's sessions
with no driver in the task. A stage opens an engine for the length of its work and closes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pipelines.engines.base import Engine, Repeated, Scan, Table, local_path
from pipelines.settings import ENGINE_NAMES, Settings

__all__ = ["Engine", "Repeated", "Scan", "Table", "check_engine", "local_path", "open_engine"]


def check_engine(name: str) -> str:
    """``name`` if it is a known engine; a ValueError naming the choices otherwise."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown engine '{name}'; choose one of {', '.join(ENGINE_NAMES)}")
    return name


@contextlib.contextmanager
def open_engine(
    name: str, settings: Settings, input_bytes: int | None = None, processes_from_mb: int | None = None
) -> Iterator[Engine]:
    """An engine session for one stage's work on about ``input_bytes`` of input (None: unknown).

    ``processes_from_mb``: the input size from which Dask's embedded cluster starts worker processes rather
    than threads (default ``CT_DASK_PROCESSES_FROM_MB``); Spark ignores it.
    """
    if check_engine(name) == "spark":
        from pipelines.engines.spark_engine import SparkEngine, spark_session

        with spark_session(settings) as spark:
            yield SparkEngine(spark)
    else:
        from pipelines.engines.dask_engine import DaskEngine, dask_client, dask_cores

        with dask_client(settings, input_bytes, processes_from_mb) as client:
            yield DaskEngine(client, dask_cores(settings))  # the threaded scheduler's threads
