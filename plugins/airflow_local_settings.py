"""Airflow's local settings: every Airflow process (scheduler, dag-processor, API server, triggerer, Celery
workers, task runners) imports this module before it opens its metadata database (Airflow puts the plugins
folder on ``sys.path`` and imports ``airflow_local_settings`` from it). It sets no Airflow setting.

It mends one thing: Airflow 3.3 tells a lock held by another transaction (PostgreSQL's SQLSTATE 55P03, "could
not obtain lock on row") from a real database failure by the driver error's ``pgcode``, psycopg2's name for the
SQLSTATE. psycopg 3, the PostgreSQL driver of this project, names it ``sqlstate`` only, so Airflow took every
such lock for a failure. Measured: the scheduler picks tasks under ``SELECT ... FROM slot_pool FOR NO KEY UPDATE
NOWAIT``; a pool edited (``airflow pools set``, the UI, the REST API) at that moment raised LockNotAvailable, and
the scheduler exited ("Exception when executing SchedulerJob._run_scheduler_loop"), where it should skip one
pass. The dag-processor's and a backfill's locks are read the same way. psycopg 3's errors get ``pgcode`` as
another name for ``sqlstate``; tests/integration/test_airflow_local_settings.py holds a real row lock.
"""

from __future__ import annotations

import psycopg

__all__: list[str] = []  # Airflow copies every name listed here into airflow.settings: none


def _pgcode(error: psycopg.Error) -> str | None:
    """psycopg2's name for an error's SQLSTATE."""
    return error.sqlstate


if not hasattr(psycopg.Error, "pgcode"):
    psycopg.Error.pgcode = property(_pgcode)  # type: ignore[attr-defined]
