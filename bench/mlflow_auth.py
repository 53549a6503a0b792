"""The team stack's MLflow server with and without its login cache (``auth_cache_ttl_seconds``).

Two servers of the basic-auth app run side by side, as ``deploy/mlflow-server.sh`` starts one (one worker each
here, a SQLite store), one checking every request's password against its scrypt hash, the other keeping a login
that passed for 60 s. Rounds of sequential authenticated calls (the registry's alias lookup a serving replica
polls, and a run's read) go to each in turn, interleaved, so both meet the same machine.

    python bench/mlflow_auth.py [--calls 200] [--rounds 3]

Prints each server's calls/s, p50 and p99 per round, and the ratio of the cached server's median over rounds to
the uncached one's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CONFIG = """[mlflow]
default_permission = READ
database_uri = sqlite:///{folder}/auth.db
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = {ttl}
"""
MODEL = "bench-model"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(folder: Path, ttl: int, password: str) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir()
    (folder / "auth.ini").write_text(CONFIG.format(folder=folder, ttl=ttl))
    port = _free_port()
    env = os.environ | {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    command += ["--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def wait_ready(server: subprocess.Popen[bytes], url: str, auth: tuple[str, str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the MLflow server at {url} exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"the MLflow server at {url} did not answer within 180 s")
    api = f"{url}/api/2.0/mlflow"
    httpx.post(
        f"{api}/registered-models/create", json={"name": MODEL}, auth=auth, timeout=30
    ).raise_for_status()


def one_round(url: str, auth: tuple[str, str], calls: int) -> list[float]:
    """Seconds per call: an alias lookup (none set yet), then a model's read, in turn."""
    seconds = []
    with httpx.Client(base_url=f"{url}/api/2.0/mlflow", auth=auth, timeout=30) as http:
        for i in range(calls):
            started = time.perf_counter()
            if i % 2:
                answer = http.get("/registered-models/get", params={"name": MODEL})
                answer.raise_for_status()
            else:
                answer = http.get("/registered-models/alias", params={"name": MODEL, "alias": "champion"})
                # the model has no such alias (MLflow answers 400): the login was checked all the same
                assert answer.status_code == 400 and "not found" in answer.text, answer.text
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    password = secrets.token_urlsafe(18)
    auth = ("admin", password)
    with tempfile.TemporaryDirectory(prefix="ct-bench-auth-") as tmp:
        servers = {
            name: start(Path(tmp, name), ttl, password) for name, ttl in (("uncached", 0), ("cached", 60))
        }
        try:
            for server, url in servers.values():
                wait_ready(server, url, auth)
            rates: dict[str, list[float]] = {name: [] for name in servers}
            for round_ in range(1, args.rounds + 1):
                for name, (_, url) in servers.items():
                    seconds = one_round(url, auth, args.calls)
                    rate = len(seconds) / sum(seconds)
                    rates[name].append(rate)
                    q = statistics.quantiles(seconds, n=100)
                    print(
                        f"round {round_} {name:>8}: {rate:7.1f} calls/s, p50 {q[49] * 1000:6.1f} ms, "
                        f"p99 {q[98] * 1000:6.1f} ms ({len(seconds)} calls)"
                    )
            uncached, cached = (statistics.median(rates[name]) for name in ("uncached", "cached"))
            print(f"median calls/s: uncached {uncached:.1f}, cached {cached:.1f}: {cached / uncached:.2f}x")
        finally:
            for server, _ in servers.values():
                server.terminate()
            for server, _ in servers.values():
                server.wait(timeout=60)


if __name__ == "__main__":
    main()
