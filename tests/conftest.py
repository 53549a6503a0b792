"""Shared fixtures. Airflow's home is pointed at a throwaway folder before anything imports Airflow."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.days import DAY

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ct-airflow-test-"))
_SESSION_PID = os.getpid()


@atexit.register
def _remove_airflow_home() -> None:
    if os.getpid() == _SESSION_PID:  # not from a forked child that exits through atexit
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)  # a scratch folder: what is left is /tmp's


_ROOT = Path(__file__).resolve().parent.parent
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GIT_PYTHON_REFRESH": "quiet",
    }
)
warnings.filterwarnings("ignore", category=DeprecationWarning)
logging.getLogger("py4j").setLevel(logging.WARNING)  # its atexit message goes to a closed stream


@pytest.fixture
def settings(tmp_path: Path):
    """Settings on a fresh state folder, with small data and short training."""
    from pipelines.settings import get_settings

    return get_settings(state_dir=tmp_path / "state", rows_per_day=3000, train_epochs=3)


@pytest.fixture(scope="session")
def contract():
    from pipelines.data.contract import load_contract

    return load_contract(_ROOT / "include" / "contracts" / "transactions.yaml")


@pytest.fixture(scope="session")
def clean_frame():
    from pipelines.data.generate import generate_day

    return generate_day(DAY, seed=7, rows=2000)


class Postgres:
    """A real PostgreSQL 16 (pgserver ships its binaries in the wheel), on a Unix socket in a temp folder."""

    def __init__(self, server):
        self.server = server

    def database(self, name: str) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import re

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self.server.psql(f"DROP DATABASE IF EXISTS {name};")
        self.server.psql(f"CREATE DATABASE {name};")
        return self.server.get_uri(name)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    import fasteners
    import pgserver

    # Run as root, pgserver creates its system user (`useradd pgserver`) outside its own lock: the suite's
    # processes starting their servers at once on a fresh machine would both try, and one would fail.
    with fasteners.InterProcessLock(Path(tempfile.gettempdir()) / "ct-tests-pgserver.lock"):
        server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    yield Postgres(server)
    server.cleanup()
    # pgserver also registers the same cleanup to run at exit, where it would log to pytest's closed
    # output ("--- Logging error ---" after the summary): stopped here, it has nothing left to do then.
    atexit.unregister(server._cleanup)
