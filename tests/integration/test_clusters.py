"""The distributed path: a real Spark standalone cluster and a real Dask cluster, as local processes.

The Spark master and worker are started with pyspark's own launch script (``bin/spark-class``), the Dask
scheduler and two workers with the ``dask`` command, all on loopback. The settings point at them exactly
as a team's settings would point at their clusters (``CT_SPARK_MASTER``, ``CT_DASK_SCHEDULER``), and
validate and prepare there must give exactly what the embedded engines give.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.data import storage
from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import DataContractError, validate
from pipelines.settings import get_settings
from tests.conftest import DAY

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """A standalone master and one worker (2 cores), started by pyspark's spark-class."""
    import pyspark

    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("spark-logs")
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    port, ui = _free_port(), _free_port()
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
        stdout=open(logs / "master.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen(
        [
            *launch,
            "org.apache.spark.deploy.worker.Worker",
            url,
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "3g",
            "--webui-port",
            str(_free_port()),
            "--work-dir",
            str(logs / "work"),
        ],
        env=env,
        stdout=open(logs / "worker.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def alive_workers() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as response:
                body = response.read()
            # A master still starting (slowly, on busy cores) can answer with an empty page: not up yet.
            return bool(body.strip()) and json.loads(body).get("aliveworkers", 0) >= 1

        _wait(alive_workers, "the Spark standalone master with one worker")
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver (this process) binds to loopback too
        yield url
    finally:
        os.environ.pop("SPARK_LOCAL_IP", None)
        _stop([master, worker])


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded worker processes, started with the dask command."""
    logs = tmp_path_factory.mktemp("dask-logs")
    dask_cli = str(Path(sys.executable).parent / "dask")
    port = _free_port()
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


def _run_window(settings, engine: str) -> dict:
    generate(settings, DAY, "none")
    validated = validate(settings, DAY, engine)
    prepared = prepare(settings, DAY, engine)
    return {"validated": validated, "prepared": prepared, "profile": storage.read_json(prepared["profile"])}


def _same(embedded: dict, clustered: dict) -> None:
    assert clustered["validated"]["rows"] == embedded["validated"]["rows"]
    raw = [p["content_hash"] for p in clustered["validated"]["partitions"]]
    assert raw == [p["content_hash"] for p in embedded["validated"]["partitions"]]
    for key in ("rows", "split_rows", "content_hash"):
        assert clustered["prepared"][key] == embedded["prepared"][key], key
    for name, column in embedded["profile"]["columns"].items():
        other = clustered["profile"]["columns"][name]
        assert column["nulls"] == other["nulls"] and column.get("counts") == other.get("counts"), name


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_the_cluster_gives_exactly_the_embedded_results(engine, spark_cluster, dask_cluster, tmp_path):
    common = {"rows_per_day": 6000, "window_days": 2}
    embedded = _run_window(get_settings(state_dir=tmp_path / "embedded", **common), engine)
    cluster_settings = get_settings(
        state_dir=tmp_path / "cluster", spark_master=spark_cluster, dask_scheduler=dask_cluster, **common
    )
    clustered = _run_window(cluster_settings, engine)
    _same(embedded, clustered)
    assert clustered["prepared"]["rows"] == 12_000

    # A broken day gets the same report on the cluster as embedded.
    reports = {}
    for name, settings in (
        ("embedded", get_settings(state_dir=tmp_path / "embedded", **common)),
        ("cluster", cluster_settings),
    ):
        generate(settings, DAY, "missing_values")
        with pytest.raises(DataContractError) as caught:
            validate(settings, DAY, engine)
        reports[name] = caught.value.violations
    assert reports["embedded"] == reports["cluster"]
    assert {(v.column, v.rule) for v in reports["cluster"]} == {
        ("amount", "not_nullable"),
        ("avg_basket", "max_null_share(0.1)"),
    }


def test_the_cluster_did_the_work(spark_cluster, dask_cluster):
    """The sessions really run on the clusters, not on an embedded fallback."""
    from pipelines.engines import open_engine

    settings = get_settings(spark_master=spark_cluster, dask_scheduler=dask_cluster)
    with open_engine("dask", settings) as engine:
        assert engine.client.scheduler.address == dask_cluster
        assert len(engine.client.scheduler_info()["workers"]) == 2
    with open_engine("spark", settings) as engine:
        spark = engine.spark
        assert spark.sparkContext.master == spark_cluster
        assert spark.range(1000).rdd.getNumPartitions() >= 1 and spark.range(1000).count() == 1000
