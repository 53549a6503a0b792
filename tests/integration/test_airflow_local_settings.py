"""plugins/airflow_local_settings.py, loaded as Airflow loads it, on a real PostgreSQL through psycopg 3: a row
lock held by another transaction is what Airflow calls a lock not available (its scheduler then skips a pass),
not a database failure (its scheduler exited)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _lock_error(url: str) -> sqlalchemy.exc.OperationalError:
    """The error a ``NOWAIT`` row lock gets while another transaction holds the row, as the scheduler's
    ``SELECT ... FROM slot_pool FOR NO KEY UPDATE NOWAIT`` gets it while a pool is edited."""
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as setup:
            setup.execute(sqlalchemy.text("CREATE TABLE slot_pool (pool text PRIMARY KEY, slots int)"))
            setup.execute(sqlalchemy.text("INSERT INTO slot_pool VALUES ('default_pool', 128)"))
        with engine.begin() as editor, engine.begin() as scheduler:
            editor.execute(sqlalchemy.text("UPDATE slot_pool SET slots = 0 WHERE pool = 'default_pool'"))
            with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
                scheduler.execute(sqlalchemy.text("SELECT pool FROM slot_pool FOR NO KEY UPDATE NOWAIT"))
            return raised.value
    finally:
        engine.dispose()


def test_a_row_lock_held_elsewhere_is_a_lock_not_available_to_airflow(postgres, monkeypatch):
    import airflow.settings
    from airflow.utils.sqlalchemy import is_lock_not_available_error

    error = _lock_error(postgres.database("local_settings"))
    assert error.orig.sqlstate == "55P03", error  # PostgreSQL's lock_not_available
    before = dict(vars(airflow.settings))
    monkeypatch.syspath_prepend(str(PLUGINS))  # Airflow puts its plugins folder on sys.path, then imports it
    monkeypatch.delitem(sys.modules, "airflow_local_settings", raising=False)
    airflow.settings.import_local_settings()
    assert sys.modules["airflow_local_settings"].__file__ == str(PLUGINS / "airflow_local_settings.py")
    assert is_lock_not_available_error(error), error
    assert error.orig.pgcode == "55P03"
    # It sets no Airflow setting.
    assert {k for k, v in vars(airflow.settings).items() if before.get(k, object()) is not v} == set()
