"""deploy/airflow_passwords.py: the team stack's Airflow passwords file, written from the env file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "airflow_passwords.py"


def _run(tmp_path: Path, users: str, given: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    file = tmp_path / "passwords.json"
    env = {
        "PATH": os.environ["PATH"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(file),
        "AIRFLOW_ADMIN_PASSWORD": "admin-secret",
    }
    if given is not None:
        env["AIRFLOW_USER_PASSWORDS"] = given
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return done, file


def test_every_user_gets_the_env_files_password_and_only_the_owner_reads_the_file(tmp_path):
    (tmp_path / "passwords.json").write_text(
        json.dumps({"admin": "old", "gone": "made-up", "alice": "made-up"})
    )
    done, file = _run(tmp_path, "admin:admin, alice:viewer,bob:op", "alice:a:b-c, bob:bob-secret")
    assert done.returncode == 0, done.stderr
    # alice's password holds a colon; gone, no longer a user, is dropped; what Airflow made up is replaced
    assert json.loads(file.read_text()) == {"admin": "admin-secret", "alice": "a:b-c", "bob": "bob-secret"}
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert not (tmp_path / "passwords.json.tmp").exists()


@pytest.mark.parametrize(
    ("users", "given", "said"),
    [
        # Airflow would make one up for alice and print it in its log
        (
            "admin:admin,alice:viewer",
            None,
            "AIRFLOW_USERS names ['alice'] but AIRFLOW_USER_PASSWORDS gives them",
        ),
        ("admin:admin,alice:viewer", "alice:", "holds 'alice' without user:password"),
        ("admin:admin,alice:viewer", "alice", "holds 'alice' without user:password"),
        ("admin:admin,alice:viewer", "alice:x,alice:y", "gives 'alice' a password again"),
        ("admin:admin", "admin:x", "admin's is AIRFLOW_ADMIN_PASSWORD"),
        ("admin:admin", "alcie:x", "names ['alcie'], who are not in AIRFLOW_USERS"),
    ],
)
def test_a_user_left_without_a_password_or_a_password_for_nobody_stops_the_start(
    tmp_path, users, given, said
):
    done, file = _run(tmp_path, users, given)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not file.exists()  # nothing written: Airflow never starts on a half-made file
