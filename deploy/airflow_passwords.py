"""The Airflow simple auth manager's passwords file, from the env file, before the API server starts.

Every user of ``AIRFLOW_USERS`` gets the password the env file gives it: ``admin`` its ``AIRFLOW_ADMIN_PASSWORD``,
the others theirs in ``AIRFLOW_USER_PASSWORDS`` (``user:password,user:password``). A user without one is an
error that names it: Airflow would make one up and print it in the API server's log, where anyone who reads the
logs reads it, and make up another when the container is recreated. The file holds these users only (a user
taken out of ``AIRFLOW_USERS`` can no longer sign in) and is written whole, readable by its owner alone.
Exit 2 on a bad setting, with the reason on stderr.
"""

from __future__ import annotations

import json
import os
import sys


class PasswordsError(ValueError):
    """A setting of the env file that leaves a user without a password, or names one twice."""


def users(setting: str) -> list[str]:
    """The user names of ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` (``user:role``, comma-separated), as
    Airflow reads them."""
    return [entry.strip().split(":")[0] for entry in setting.split(",") if entry.strip()]


def passwords(user_setting: str, admin_password: str, given: str) -> dict[str, str]:
    """Each user's password: admin's, then those of ``given`` (``user:password``, comma-separated; a password
    may hold a colon, not a comma)."""
    found = {"admin": admin_password}
    for entry in (e.strip() for e in given.split(",")):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise PasswordsError(f"AIRFLOW_USER_PASSWORDS holds {user or entry!r} without user:password")
        if user in found:
            why = "admin's is AIRFLOW_ADMIN_PASSWORD" if user == "admin" else "once is enough"
            raise PasswordsError(f"AIRFLOW_USER_PASSWORDS gives {user!r} a password again ({why})")
        found[user] = password
    named = users(user_setting)
    if unknown := sorted(set(found) - set(named) - {"admin"}):
        raise PasswordsError(
            f"AIRFLOW_USER_PASSWORDS names {unknown}, who are not in AIRFLOW_USERS ({named})"
        )
    if missing := [user for user in named if user not in found]:
        raise PasswordsError(
            f"AIRFLOW_USERS names {missing} but AIRFLOW_USER_PASSWORDS gives them no password: Airflow would "
            "make one up and print it in the API server's log. Add user:password for each to the env file."
        )
    return {user: found[user] for user in ["admin", *named] if user in found}


def write(path: str, chosen: dict[str, str]) -> None:
    """Replace the file at once, readable by its owner only."""
    descriptor = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(chosen, out)
    os.replace(f"{path}.tmp", path)


def main() -> int:
    try:
        chosen = passwords(
            os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"),
            os.environ["AIRFLOW_ADMIN_PASSWORD"],
            os.environ.get("AIRFLOW_USER_PASSWORDS", ""),
        )
    except PasswordsError as error:
        print(f"airflow-apiserver: {error}", file=sys.stderr)
        return 2
    write(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"], chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
