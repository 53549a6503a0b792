"""Prepare: raw window to features and a stable train/validation/holdout split, on Dask or Spark.

Both engines read the window's raw partitions, apply the contract's feature rules without collecting the
data into the driver, and write Parquet partitioned by split. The result is committed atomically with a
manifest whose content hash does not depend on the engine.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pipelines import runlog, storage
from pipelines.contract import Contract, load_contract
from pipelines.engines import engine_session, file_mapper, local_path
from pipelines.features import SPLIT_COLUMN, build_features, feature_names, output_columns
from pipelines.profile import PROFILE_FILE, profile_dask, profile_spark
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def transform_dask(client: Any, raw_files: list[str], out_uri: str, contract: Contract) -> Any:
    """Raw window to prepared rows, partition by partition, written as Parquet by split; returns the raw frame."""
    import dask.dataframe as dd

    files = [local_path(f) for f in raw_files]
    raw = dd.read_parquet(files, ignore_metadata_file=True, dataset={"partitioning": None})
    meta = build_features(raw._meta, contract)
    prepared = raw.map_partitions(build_features, contract, meta=meta)
    prepared.to_parquet(
        local_path(out_uri), partition_on=[SPLIT_COLUMN], write_index=False, write_metadata_file=False
    )
    return raw


def spark_features(raw: Any, contract: Contract) -> Any:
    """The rules of :func:`pipelines.features.build_features`, in Spark SQL."""
    from pyspark.sql import functions as F

    engineered = []
    for column in contract.numeric_features:
        spec = contract.columns[column]
        value = F.col(column).cast("double")
        if spec.log:
            value = F.log1p(F.when(value < 0, F.lit(0.0)).otherwise(value))
        if spec.nullable:
            engineered.append(F.coalesce(value, F.lit(0.0)).alias(f"f_{column}"))
            engineered.append(F.col(column).isNull().cast("double").alias(f"f_{column}__missing"))
        else:
            engineered.append(value.alias(f"f_{column}"))
    for column in contract.categorical_features:
        for allowed in contract.columns[column].allowed or []:
            hit = F.when(F.col(column) == F.lit(allowed), F.lit(1.0)).otherwise(F.lit(0.0))
            engineered.append(hit.alias(f"f_{column}__{allowed}"))
    bucket = F.pmod(F.crc32(F.col(contract.entity_id).cast("binary")), F.lit(100))
    train_cut = contract.splits["train"]
    validation_cut = train_cut + contract.splits["validation"]
    split = (
        F.when(bucket < train_cut, F.lit("train"))
        .when(bucket < validation_cut, F.lit("validation"))
        .otherwise(F.lit("holdout"))
        .alias(SPLIT_COLUMN)
    )
    keys = [contract.entity_id, contract.event_time, *contract.feature_columns, contract.label]
    prepared = raw.select(*[F.col(c) for c in keys], *engineered, split)
    return prepared.select(*output_columns(contract), SPLIT_COLUMN)


def transform_spark(spark: Any, raw_files: list[str], out_uri: str, contract: Contract) -> Any:
    """The same transform on Spark; returns the raw frame."""
    raw = spark.read.parquet(*raw_files)
    spark_features(raw, contract).write.mode("overwrite").partitionBy(SPLIT_COLUMN).parquet(out_uri)
    return raw


TRANSFORMS = {"dask": transform_dask, "spark": transform_spark}
PROFILERS = {"dask": profile_dask, "spark": profile_spark}


@runlog.stage("prepare")
def prepare(settings: Settings, logical_date: dt.date, engine: str | None = None) -> dict[str, Any]:
    """Build the run's features and splits; return the dataset URI, its content hash and split sizes."""
    engine = engine or settings.engine
    if engine not in TRANSFORMS:
        raise ValueError(f"unknown engine '{engine}'; choose one of {', '.join(TRANSFORMS)}")
    contract = load_contract(settings.resolved_contract_path)
    raw_uris = [
        storage.raw_uri(settings.resolved_data_root, settings.dataset, day)
        for day in storage.window_days(logical_date, settings.window_days)
    ]
    out_uri = storage.features_uri(settings.resolved_data_root, settings.dataset, logical_date)
    raw_files = [f for uri in raw_uris for f in storage.parquet_files(uri)]  # committed partitions only
    with (
        storage.atomic_dir(out_uri) as tmp,
        engine_session(engine, settings, storage.total_bytes(raw_files)) as session,
    ):
        raw = TRANSFORMS[engine](session, raw_files, tmp, contract)
        reference_profile = PROFILERS[engine](raw, contract)
        storage.write_json_atomic(storage.join(tmp, PROFILE_FILE), reference_profile)
        split_rows = {
            split: storage.count_rows(storage.split_uri(tmp, split))
            for split in ("train", "validation", "holdout")
        }
        manifest = storage.write_manifest(
            tmp,
            extra={
                "engine": engine,
                "raw": raw_uris,
                "split_rows": split_rows,
                "features": feature_names(contract),
                "contract": contract.dataset,
                "contract_version": contract.version,
            },
            final_uri=out_uri,
            map_files=file_mapper(engine, session),
        )
    log.info(
        "prepared %d rows with %s into %s (hash %s)",
        manifest.rows,
        engine,
        out_uri,
        manifest.content_hash[:12],
    )
    return {
        "uri": out_uri,
        "engine": engine,
        "rows": manifest.rows,
        "split_rows": split_rows,
        "content_hash": manifest.content_hash,
        "profile": storage.join(out_uri, PROFILE_FILE),
    }
