"""Clusters as local processes on loopback, shared by the integration tests that need one (started once)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.net import free_port


def _wait(condition, what: str, timeout: float = 300.0) -> None:  # JVMs start slowly on busy cores
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f}s")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master and two workers of one core each, started by pyspark's spark-class: the cluster the
    engine tests prepare data on and the spark launcher trains on (one rank per worker)."""
    import pyspark

    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("spark-logs")
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    # The daemons log at Spark's own INFO level, whatever a Spark session of this process set before (the
    # pipelines' log4j file logs warnings only, and the master's "Bound MasterWebUI" line was then never written).
    env.pop("LOG4J_CONFIGURATION_FILE", None)
    port, ui = free_port(), free_port()
    master_log = logs / "master.log"
    launch = [str(home / "bin" / "spark-class")]
    master = subprocess.Popen(
        [
            *launch,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(master_log, "w"),
        stderr=subprocess.STDOUT,
    )
    workers: list[subprocess.Popen] = []

    def started_at() -> str | None:
        # The address the master bound, from its log: a port taken between free_port() and the JVM binding it
        # (the suite's other process opens ports all the time) moves the master to the next one, and workers
        # given the chosen one would wait for it until the fixture timed out.
        bound = re.search(r"Starting Spark master at (spark://\S+)", master_log.read_text())
        return bound.group(1) if bound else None

    try:  # one place stops the master and whatever workers started, however the start ends
        _wait(lambda: started_at() is not None or master.poll() is not None, "the Spark standalone master")
        if (url := started_at()) is None:
            raise RuntimeError(
                f"the Spark master exited ({master.returncode}): {master_log.read_text()[-2000:]}"
            )
        for index in range(2):  # each one kept as it starts: the finally stops those that did
            workers.append(
                subprocess.Popen(
                    [
                        *launch,
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "2g",
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(logs / f"work-{index}"),
                    ],
                    env=env,
                    stdout=open(logs / f"worker-{index}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
            )

        def alive_workers() -> bool:
            # The UI's address is read from the master's own log ("Bound MasterWebUI to ..., and started at
            # http://...:PORT"), not assumed: a port taken between free_port() and the JVM binding it moves the
            # master's UI to the next one. (A fresh-clone CI run once got an HTML page at the chosen port.)
            bound = re.search(
                r"Bound MasterWebUI to \S+ and started at http://[^:\s]+:(\d+)", master_log.read_text()
            )
            at = bound.group(1) if bound else ui  # the line not written (yet): the port chosen
            with urllib.request.urlopen(f"http://127.0.0.1:{at}/json/", timeout=2) as response:
                body = response.read()
            seen["answer"] = f"port {at}: {body[:300]!r}"
            # A master still starting (slowly, on busy cores) can answer with a page that is not its JSON yet.
            try:
                status = json.loads(body)
            except ValueError:
                return False
            return isinstance(status, dict) and status.get("aliveworkers", 0) >= 2

        seen = {"answer": "no answer"}
        try:
            _wait(alive_workers, "the Spark standalone master with two workers")
        except TimeoutError as exc:  # what it answered last, and its log's last lines, to tell why
            tail = master_log.read_text()[-2000:]
            raise TimeoutError(f"{exc}; its UI answered {seen['answer']}; its log ends:\n{tail}") from None
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver (this process) binds to loopback too
        yield url
    finally:
        os.environ.pop("SPARK_LOCAL_IP", None)
        _stop([master, *workers])


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded worker processes, started with the dask command."""
    logs = tmp_path_factory.mktemp("dask-logs")
    dask_cli = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=open(logs / "scheduler.log", "w"),
        stderr=subprocess.STDOUT,
    )
    workers = subprocess.Popen(
        [
            dask_cli,
            "worker",
            address,
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--memory-limit",
            "2GiB",
            "--no-dashboard",
            "--local-directory",
            str(logs / "work"),
        ],
        stdout=open(logs / "workers.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        from distributed import Client

        def two_workers() -> bool:
            with Client(address, timeout=5) as client:
                return len(client.scheduler_info()["workers"]) == 2

        _wait(two_workers, "the Dask scheduler with two workers")
        yield address
    finally:
        _stop([scheduler, workers])


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory):
    """A Spark Connect server on loopback (a ``local[2]`` driver), as a team runs one beside its cluster: the
    URL ``CT_SPARK_REMOTE`` takes."""
    from pipelines.engines.spark_engine import connect_server

    logs = tmp_path_factory.mktemp("spark-connect-logs")
    port = free_port()
    command, env = connect_server("local[2]", port)
    server = subprocess.Popen(
        command,
        env={**env, "SPARK_LOCAL_IP": "127.0.0.1"},
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def listening() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with {server.returncode}; see {logs}")
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True

        _wait(listening, "the Spark Connect server")
        yield f"sc://127.0.0.1:{port}"
    finally:
        _stop([server])
