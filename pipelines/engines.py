"""Sessions on the two data engines: a Dask client and a Spark session, embedded or on a cluster.

One setting switches each from embedded to distributed: ``CT_DASK_SCHEDULER`` (``tcp://host:8786``) and
``CT_SPARK_MASTER`` (``spark://host:7077``). Stages open a session for the length of their work and close it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.settings import Settings


def local_path(uri: str) -> str:
    """A path Dask and Spark both accept: ``file://`` stripped, any other scheme kept."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


@contextlib.contextmanager
def dask_client(settings: Settings, input_bytes: int | None = None) -> Iterator[Any]:
    """A client on the configured scheduler, or on an embedded LocalCluster sized for the input.

    Inputs of at least ``CT_DASK_PROCESSES_FROM_MB`` (or of unknown size) get worker processes, one per
    core: the per-partition pandas work holds the GIL, so threads would not add cores, and workers spill
    to disk past their memory limit, so a window larger than memory still prepares. Smaller inputs run on
    threads in this process, which starts in a fraction of a second instead of seconds.
    """
    import dask
    from distributed import Client, LocalCluster

    # Partitions stay plain pandas (object strings), the types pandera checks and Spark hands over too.
    with dask.config.set({"dataframe.convert-string": False}):
        if settings.dask_scheduler:
            with Client(settings.dask_scheduler) as client:
                yield client
            return
        processes = input_bytes is None or input_bytes >= settings.dask_processes_from_mb * 2**20
        cores = settings.dask_workers or os.cpu_count() or 2
        with (
            LocalCluster(
                n_workers=cores if processes else 1,
                threads_per_worker=1 if processes else cores,
                processes=processes,
                dashboard_address=None,
                silence_logs=logging.ERROR,  # worker start/stop chatter; errors still show
                local_directory=str(settings.state_dir / "dask-worker-space"),
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


@contextlib.contextmanager
def spark_session(settings: Settings, app_name: str = "continuous-training") -> Iterator[Any]:
    """A Spark session on the configured master (``local[2]`` by default), set for UTC and Parquet micros."""
    from pyspark.sql import SparkSession

    # Executors (on a cluster too) run the same interpreter as the driver: the pandas UDFs need our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Writes partitioned by a few values (split=train/validation/holdout) keep a writer per value open
        # instead of sorting every task's rows by the partition column first.
        .config("spark.sql.maxConcurrentOutputFileWriters", "8")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        spark.stop()


@contextlib.contextmanager
def engine_session(engine: str, settings: Settings, input_bytes: int | None = None) -> Iterator[Any]:
    """A Dask client or a Spark session, held for all the work of one stage on ``input_bytes`` of data."""
    if engine == "spark":
        with spark_session(settings) as spark:
            yield spark
    else:
        with dask_client(settings, input_bytes) as client:
            yield client


def file_mapper(engine: str, session: Any) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """``map`` over the engine's workers: Dask futures, or one Spark task per item."""
    if engine == "spark":
        return lambda fn, items: session.sparkContext.parallelize(items, max(1, len(items))).map(fn).collect()
    return lambda fn, items: session.gather(session.map(fn, items, pure=False))
