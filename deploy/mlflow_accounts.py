"""The MLflow server's accounts for the stack: the pipeline's and serving's, through the basic-auth REST API.

Run once per start of the stack (the ``mlflow-init`` service), as the admin from the env file; it is
idempotent: an account that exists gets its password from the env file again, so rotating one of these two
secrets is a change of the env file and a restart. The admin's own password is the server's from its first
start: change it through MLflow's update-password API, then in the env file. The pipeline's account is an ordinary user: it creates the experiments
and registered models it writes, and so manages them (it may change their versions and aliases). Serving's
account reads, as people do by default. Nothing here is needed by the embedded (single-machine) defaults.
"""

from __future__ import annotations

import os
import sys
import time

import httpx

WAIT_S = float(os.environ.get("CT_WAIT_TIMEOUT_S", "300"))


def _wait_for(client: httpx.Client) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"mlflow-init: {client.base_url} did not answer /health within {WAIT_S:.0f} s")
        time.sleep(1)


def ensure_user(client: httpx.Client, username: str, password: str) -> str:
    """Create ``username`` with ``password``, or set the password of the user that exists; what was done."""
    found = client.get("/api/2.0/mlflow/users/get", params={"username": username})
    if found.status_code == 200:
        answer = client.patch(
            "/api/2.0/mlflow/users/update-password", json={"username": username, "password": password}
        )
        answer.raise_for_status()
        return "password set"
    if found.status_code != 404:
        found.raise_for_status()
    answer = client.post("/api/2.0/mlflow/users/create", json={"username": username, "password": password})
    answer.raise_for_status()
    return "created"


def main() -> None:
    admin = (os.environ.get("MLFLOW_ADMIN_USERNAME") or "admin", os.environ["MLFLOW_ADMIN_PASSWORD"])
    accounts = [
        (os.environ.get("CT_MLFLOW_USERNAME") or "pipeline", os.environ["CT_MLFLOW_PASSWORD"]),
        (os.environ.get("CT_SERVING_MLFLOW_USERNAME") or "serving", os.environ["CT_SERVING_MLFLOW_PASSWORD"]),
    ]
    with httpx.Client(
        base_url=os.environ.get("MLFLOW_URL", "http://mlflow:5000"), auth=admin, timeout=30
    ) as client:
        _wait_for(client)
        for username, password in accounts:
            print(f"mlflow-init: {username}: {ensure_user(client, username, password)}")


if __name__ == "__main__":
    main()
