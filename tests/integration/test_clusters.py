"""The distributed path: a real Spark standalone cluster and a real Dask cluster, as local processes.

The Spark master and two workers (the fixtures in conftest.py) are started with pyspark's own launch script (``bin/spark-class``), the Dask
scheduler and two workers with the ``dask`` command, all on loopback. The settings point at them exactly
as a team's settings would point at their clusters (``CT_SPARK_MASTER``, ``CT_DASK_SCHEDULER``), and
validate and prepare there must give exactly what the embedded engines give.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.data import storage
from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import DataContractError, validate
from pipelines.settings import get_settings
from tests.days import DAY

pytestmark = pytest.mark.slow


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


def _same_broken_day_report(embedded, elsewhere, engine: str) -> None:
    """A broken day gets the same violations report elsewhere (a cluster, a Connect server) as embedded."""
    reports = []
    for settings in (embedded, elsewhere):
        generate(settings, DAY, "missing_values")
        with pytest.raises(DataContractError) as caught:
            validate(settings, DAY, engine)
        reports.append(caught.value.violations)
    assert reports[0] == reports[1]
    assert {(v.column, v.rule) for v in reports[1]} == {
        ("amount", "not_nullable"),
        ("avg_basket", "max_null_share(0.1)"),
    }


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

    _same_broken_day_report(get_settings(state_dir=tmp_path / "embedded", **common), cluster_settings, engine)


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


# A task's process with a Connect session: no SparkContext, no gateway, no java child (run apart from pytest,
# whose own earlier sessions and servers are JVMs).
_THIN_CLIENT = """
import sys, psutil
from pyspark import SparkContext
from pipelines.engines import open_engine
from pipelines.settings import get_settings
with open_engine("spark", get_settings(state_dir=sys.argv[1], spark_remote=sys.argv[2])) as engine:
    assert engine.spark.range(1000).mapInPandas(lambda batches: batches, "id long").count() == 1000
    children = [child.name() for child in psutil.Process().children(recursive=True)]
print(SparkContext._gateway is None, SparkContext._jvm is None, children)
"""


def test_spark_connect_gives_exactly_the_embedded_results(spark_connect, tmp_path):
    """CT_SPARK_REMOTE: the stages' sessions are Spark Connect clients of a standing server."""
    from pyspark import TaskContext
    from pyspark.errors import PythonException

    from pipelines.engines import open_engine
    from pipelines.engines.spark_engine import CONNECT_MARK, is_connect, spark_session

    common = {"rows_per_day": 6000, "window_days": 2}
    remote = get_settings(state_dir=tmp_path / "connect", spark_remote=spark_connect, **common)
    connected = _run_window(remote, "spark")
    # pyspark marks a process that opened a Connect session as a Connect client; the mark goes with the
    # session, so the same process can start a driver of its own afterwards.
    assert CONNECT_MARK not in os.environ
    embedded = get_settings(state_dir=tmp_path / "embedded", **common)
    _same(_run_window(embedded, "spark"), connected)
    _same_broken_day_report(embedded, remote, "spark")

    probe = subprocess.run(
        [sys.executable, "-c", _THIN_CLIENT, str(tmp_path / "probe"), spark_connect],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "True True []", probe.stdout + probe.stderr

    with open_engine("spark", remote) as engine:
        assert is_connect(engine.spark)
        # The session's own settings, not the server's defaults (200 partitions, no concurrent writers).
        assert engine.spark.conf.get("spark.sql.shuffle.partitions") == str(remote.spark_shuffle_partitions)
        assert engine.spark.conf.get("spark.sql.maxConcurrentOutputFileWriters") == "8"
        # Tasks without RDDs: the results in the items' order, any picklable value.
        assert engine.map_files(lambda n: {"n": n, "square": n * n}, [3, 1, 2]) == [
            {"n": 3, "square": 9},
            {"n": 1, "square": 1},
            {"n": 2, "square": 4},
        ]
        assert engine.map_files(lambda n: n, []) == []
        many = engine.map_files(lambda n: (n, TaskContext.get().partitionId()), list(range(300)))
        assert [n for n, _ in many] == list(range(300))  # more items than tasks: slices, still in order
        assert len({task for _, task in many}) <= 2 * remote.spark_shuffle_partitions
        # A task's failure reaches the caller, naming what failed.
        with pytest.raises(PythonException, match="ZeroDivisionError"):
            engine.map_files(lambda n: 1 // n, [1, 0])
        # A driver of its own cannot open while the process is a Connect client.
        with pytest.raises(RuntimeError, match="close the connect session first"):
            with spark_session(remote, classic=True):
                pass
    assert CONNECT_MARK not in os.environ
