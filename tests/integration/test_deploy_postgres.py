"""deploy/postgres.sh, the team stack's PostgreSQL, run with real PostgreSQL binaries (the pgserver wheel's) as
its container runs it: a first start killed between two databases, then a restart."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.net import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DATABASES = "airflow mlflow ct"


def _as_postgres_user(tmp_path: Path) -> tuple[list[str], Path]:
    """The command prefix that runs as a user PostgreSQL accepts (root: pgserver's own), and a data folder it
    owns: initdb and postgres refuse to run as root."""
    from pgserver._commands import POSTGRES_BIN_PATH

    data = tmp_path / "pgdata"
    data.mkdir()
    data.chmod(0o700)
    if os.geteuid() != 0:
        return [], POSTGRES_BIN_PATH
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists("pgserver")
    for path in (POSTGRES_BIN_PATH, data):
        ensure_prefix_permissions(path)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    assert entry is not None
    shutil.chown(data, entry.pw_uid, entry.pw_gid)
    return ["runuser", "-u", "pgserver", "--"], POSTGRES_BIN_PATH


def test_a_first_start_killed_between_two_databases_creates_the_rest_at_the_next_start(tmp_path):
    """The first start created the cluster (its PG_VERSION), then the databases: killed after the first of them
    (a compose down, the OOM killer), the restart saw PG_VERSION, created nothing, and served a cluster that
    passed its health check without mlflow and ct, for good."""
    prefix, binaries = _as_postgres_user(tmp_path)
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    dies = tmp_path / "dies-at-mlflow"
    dies.touch()
    createdb = wrappers / "createdb"  # as the kill would: the start ends with mlflow not made
    createdb.write_text(
        f'#!/bin/bash\nfor a in "$@"; do [[ $a == mlflow && -e {dies} ]] && exit 137; done\n'
        f'exec {binaries}/createdb "$@"\n'
    )
    createdb.chmod(0o755)
    for path in (wrappers, createdb):
        path.chmod(path.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
    script = tmp_path / "postgres.sh"
    shutil.copy(ROOT / "deploy" / "postgres.sh", script)
    script.chmod(0o755)
    port = free_port()
    env = [
        "env",
        f"PATH={wrappers}:{binaries}:/usr/bin:/bin",
        f"PGDATA={tmp_path / 'pgdata'}",
        f"PGPORT={port}",
        "POSTGRES_PASSWORD=secret-for-the-test",
        f"POSTGRES_DATABASES={DATABASES}",
        "LC_ALL=C.UTF-8",
    ]
    first = subprocess.run([*prefix, *env, "bash", str(script)], capture_output=True, text=True, timeout=300)
    assert first.returncode != 0 and "created database airflow" in first.stdout, first.stdout + first.stderr
    status = subprocess.run(
        [*prefix, f"{binaries}/pg_ctl", "-D", str(tmp_path / "pgdata"), "status"],
        capture_output=True,
        timeout=60,
    )
    assert status.returncode == 3, status  # the server it started for the set-up is stopped, not left running
    dies.unlink()
    server = subprocess.Popen(
        [*prefix, *env, "bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline, names = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            listed = subprocess.run(
                [
                    f"{binaries}/psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "ct",
                    "-d",
                    "postgres",
                    "-tAc",
                    "SELECT datname FROM pg_database ORDER BY datname",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PGPASSWORD": "secret-for-the-test"},
            )
            if listed.returncode == 0:
                names = set(listed.stdout.split())
                break
            time.sleep(0.5)
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0].decode()
    assert names is not None, output
    assert set(DATABASES.split()) <= names, (names, output)
    assert "created database mlflow" in output and "created database ct" in output
    assert "created database airflow" not in output  # made by the first start, not made again
    assert (tmp_path / "pgdata" / "ct-databases").read_text() == DATABASES
