"""deploy/postgres.sh, the team stack's PostgreSQL, run with real PostgreSQL binaries (the pgserver wheel's) as
its container runs it: a first start killed while it makes the cluster or between two databases, then a
restart."""

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


def _wrap(wrappers: Path, name: str, body: str) -> None:
    """A ``name`` on the script's PATH before the real one: ``body``, then the real one unless it exited."""
    wrapper = wrappers / name
    wrapper.write_text(f"#!/bin/bash\n{body}\n")
    wrapper.chmod(0o755 | stat.S_IROTH | stat.S_IXOTH)


class _Stack:
    """deploy/postgres.sh as its container runs it: with the test's wrappers first on its PATH."""

    def __init__(self, tmp_path: Path):
        self.prefix, self.binaries = _as_postgres_user(tmp_path)
        self.data = tmp_path / "pgdata"
        self.wrappers = tmp_path / "bin"
        self.wrappers.mkdir()
        self.wrappers.chmod(0o755)
        self.script = tmp_path / "postgres.sh"
        shutil.copy(ROOT / "deploy" / "postgres.sh", self.script)
        self.script.chmod(0o755)
        self.port = free_port()
        self.env = [
            "env",
            f"PATH={self.wrappers}:{self.binaries}:/usr/bin:/bin",
            f"PGDATA={self.data}",
            f"PGPORT={self.port}",
            "POSTGRES_PASSWORD=secret-for-the-test",
            f"POSTGRES_DATABASES={DATABASES}",
            "LC_ALL=C.UTF-8",
        ]

    def killed_start(self) -> subprocess.CompletedProcess[str]:
        """A start that a wrapper ends as a kill would; the server it started for the set-up is not left."""
        first = subprocess.run(
            [*self.prefix, *self.env, "bash", str(self.script)], capture_output=True, text=True, timeout=300
        )
        assert first.returncode != 0, first.stdout + first.stderr
        status = subprocess.run(
            [*self.prefix, f"{self.binaries}/pg_ctl", "-D", str(self.data), "status"],
            capture_output=True,
            timeout=60,
        )
        assert status.returncode in (3, 4), status  # stopped, or no cluster at all
        return first

    def serve(self) -> tuple[set[str] | None, str]:
        """Start it and list the databases of the server it runs (None: it never answered), and its output."""
        server = subprocess.Popen(
            [*self.prefix, *self.env, "bash", str(self.script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        names = None
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and server.poll() is None:
                listed = subprocess.run(
                    [
                        f"{self.binaries}/psql",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
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
        return names, output


def test_a_first_start_killed_between_two_databases_creates_the_rest_at_the_next_start(tmp_path):
    """The first start created the cluster (its PG_VERSION), then the databases: killed after the first of them
    (a compose down, the OOM killer), the restart saw PG_VERSION, created nothing, and served a cluster that
    passed its health check without mlflow and ct, for good."""
    stack = _Stack(tmp_path)
    dies = tmp_path / "dies-at-mlflow"
    dies.touch()
    # As the kill would: the start ends with mlflow not made.
    _wrap(
        stack.wrappers,
        "createdb",
        f'for a in "$@"; do [[ $a == mlflow && -e {dies} ]] && exit 137; done\nexec {stack.binaries}/createdb "$@"',
    )
    assert "created database airflow" in stack.killed_start().stdout
    dies.unlink()
    names, output = stack.serve()
    assert names is not None, output
    assert set(DATABASES.split()) <= names, (names, output)
    assert "created database mlflow" in output and "created database ct" in output
    assert "created database airflow" not in output  # made by the first start, not made again
    assert (stack.data / "ct-databases").read_text() == DATABASES


@pytest.mark.parametrize("killed", ["initdb", "move"])
def test_a_first_start_killed_while_it_makes_the_cluster_makes_it_at_the_next_start(tmp_path, killed):
    """initdb writes PG_VERSION first and the cluster's control file late: one killed in between left a folder
    that every later start took for a cluster, and PostgreSQL could not start on it, for good. Killed while
    initdb runs, or while its cluster is moved into place, the next start makes it, or ends the move."""
    stack = _Stack(tmp_path)
    dies = tmp_path / "dies"
    dies.touch()
    if killed == "initdb":  # its PG_VERSION written, its control file not
        _wrap(
            stack.wrappers,
            "initdb",
            f'{stack.binaries}/initdb "$@" || exit\nif [ -e {dies} ]; then\n'
            '  while [ $# -gt 0 ]; do [ "$1" = -D ] && rm "$2/global/pg_control"; shift; done\n  exit 137\nfi',
        )
    else:  # every file of the cluster moved but PG_VERSION
        _wrap(
            stack.wrappers,
            "mv",
            f'for a in "$@"; do [[ $a == */PG_VERSION && -e {dies} ]] && exit 137; done\nexec /bin/mv "$@"',
        )
    stack.killed_start()
    dies.unlink()
    names, output = stack.serve()
    assert names is not None, output
    assert set(DATABASES.split()) <= names, (names, output)
    assert sorted(p.name for p in stack.data.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_a_folder_holding_files_but_no_cluster_is_refused_as_it_is(tmp_path):
    """PGDATA pointed at a folder of something else: the start names it and leaves its files alone."""
    stack = _Stack(tmp_path)
    kept = stack.data / "notes.txt"
    kept.write_text("not a cluster")
    if stack.prefix:
        shutil.chown(kept, *(stack.data.stat().st_uid, stack.data.stat().st_gid))
    refused = stack.killed_start()
    assert refused.returncode == 2 and "holds" in refused.stderr and "notes.txt" in refused.stderr, refused
    assert kept.read_text() == "not a cluster" and sorted(p.name for p in stack.data.iterdir()) == [
        "notes.txt"
    ]
