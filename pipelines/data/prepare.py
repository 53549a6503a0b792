"""Prepare: raw window to features and a stable train/validation/holdout split, on the run's engine.

The engine reads the window's raw partitions, runs the contract's feature rules
(:func:`pipelines.data.features.build_features`) on every partition without collecting the data into the
driver, and writes Parquet partitioned by split, with the window's reference profile beside it. The result
is committed atomically with a manifest whose content hash does not depend on the engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from pipelines.data import datasets, runlog, sources, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.features import (
    FEATURES_VERSION,
    SPLIT_COLUMN,
    SPLITS,
    build_features,
    feature_names,
    holdout_label,
    holdout_start,
    prepared_schema,
    raw_columns,
)
from pipelines.data.moments import split_moments
from pipelines.data.profile import PROFILE_FILE, build_profile
from pipelines.engines import Engine, Table, check_engine, open_engine
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class UnvalidatedDayError(ValueError):
    """A raw partition of the window was validated under another contract than the dataset's current one."""


def _has_source(settings: Settings, contract: Contract, day: dt.date) -> bool:
    try:
        sources.partition(settings, contract, day)
    except sources.SourceMissingError:
        return False
    return True


def _window(settings: Settings, contract: Contract, end: dt.date) -> tuple[dict[str, str], list[str]]:
    """The committed raw partitions of the window by day, and the days missing: what validate checked.

    A day is missing when the contract allows gaps and it has no raw partition, or its source has no data any
    more (withdrawn upstream; validate reports it missing, so an earlier run's partition of it is not used).
    Otherwise a missing day fails when its partition is read. A partition validated under another contract
    than today's is refused, naming the days: validate the window again first.
    """
    raw_uris, missing, stale = {}, [], []
    for day in storage.window_days(end, settings.window_days):
        uri = storage.raw_uri(settings.resolved_data_root, settings.dataset, day)
        committed = storage.exists(storage.join(uri, datasets.MANIFEST))
        if contract.source.missing_days == "skip" and not (
            committed and _has_source(settings, contract, day)
        ):
            missing.append(day)
            continue
        raw_uris[day.isoformat()] = uri
        if committed and not contract.validated_under(
            datasets.read_manifest(uri).extra.get("contract_fingerprint")
        ):
            stale.append(day.isoformat())
    sources.check_gaps(settings, contract, missing)
    if stale:
        raise UnvalidatedDayError(
            f"the raw data of {', '.join(stale)} ({settings.dataset}) was validated under another version of "
            f"its contract ({settings.resolved_contract_path}): run `pipelines validate -d {end}` (the "
            "retrain DAG's validate task) before prepare"
        )
    return raw_uris, [day.isoformat() for day in missing]


class RawChangedError(RuntimeError):
    """A raw day of the window was committed again while prepare read it (a validate of that day beside it)."""


def _check_raw_unchanged(raw_uris: dict[str, str], raw_hashes: dict[str, str]) -> None:
    """Refuse a prepared window whose raw days were replaced while it was read: its rows may be the new
    version's (the files keep their names) under the old version's hash, the dataset version of other rows.
    The task fails and its retry prepares the window again, from the days as they are then."""
    changed = [
        day for day, uri in raw_uris.items() if datasets.read_manifest(uri).content_hash != raw_hashes[day]
    ]
    if changed:
        raise RawChangedError(
            f"the raw data of {', '.join(changed)} was committed again while prepare read it (a validate of "
            "that day ran beside it): nothing was written; run prepare again"
        )


def _split_rows(uri: str) -> int:
    """Rows of one written split; 0 when no row fell into it (few entities: the writer makes no folder). The
    stage that needs the split names it as empty (training, evaluation)."""
    return datasets.count_rows(uri) if datasets.folder_files(uri) else 0


def dataset_version(raw_hashes: dict[str, str], contract: Contract, holdout_from: dt.date | None) -> str:
    """The prepared dataset's version: the same input rows give the same version on any engine or CPU.

    It is derived from what decides the prepared rows, never from the floating-point features: the content
    hashes of the window's typed raw partitions by day (values as read, not computed), the contract's rules, the
    version of the feature code and how the holdout is chosen.
    """
    identity = {
        "raw": raw_hashes,
        "contract": contract.fingerprint(),
        "features": FEATURES_VERSION,
        "holdout_from": holdout_from.isoformat() if holdout_from else "hash split",
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def write_prepared(
    session: Engine, raw: Table, contract: Contract, holdout_from: dt.date | None, uri: str
) -> None:
    """The transform: the raw rows to features and split, written under ``uri`` partitioned by split.

    Sorted by the raw values (which the row hashes cover, the same on every engine and CPU), before the features
    are computed (sorting the prepared rows computed them twice, for the sort's sample and for the write): each
    split's rows then come in one order from Dask and Spark alike, so the ranks' parts and batches, and the model
    trained on them, do not depend on the engine or on how its tasks cut the input.
    """
    keys = raw_columns(contract)
    prepared = session.map_partitions(
        session.sort(raw, keys),
        lambda frame: build_features(frame, contract, holdout_from),
        prepared_schema(contract),
    )
    session.write_parquet(prepared, uri, partition_on=SPLIT_COLUMN, sorted_by=keys)


@runlog.stage("prepare")
def prepare(
    settings: Settings, logical_date: dt.date, engine: str | None = None, holdout_days: int | None = None
) -> dict[str, Any]:
    """Build the run's features and splits; return the dataset URI, its content hash and split sizes.

    ``holdout_days``: the promotion policy's ``holdout.latest_days``: hold out the newest days of the window
    instead of a hash share of the entities.
    """
    engine_name = check_engine(engine or settings.engine)
    holdout_from = holdout_start(logical_date, holdout_days, settings.window_days)
    contract = dataset_contract(settings)
    raw_uris, missing = _window(settings, contract, logical_date)
    out_uri = storage.features_uri(settings.resolved_data_root, settings.dataset, logical_date)
    raw_files = [f for uri in raw_uris.values() for f in datasets.parquet_files(uri)]  # committed only
    raw_hashes = {day: datasets.read_manifest(uri).content_hash for day, uri in raw_uris.items()}
    version = dataset_version(raw_hashes, contract, holdout_from)
    with (
        storage.atomic_dir(out_uri) as tmp,
        open_engine(engine_name, settings, storage.total_bytes(raw_files)) as session,
    ):
        raw = session.read(raw_files)
        write_prepared(session, raw, contract, holdout_from, tmp)
        storage.write_json_atomic(storage.join(tmp, PROFILE_FILE), build_profile(session, raw, contract))
        split_rows = {str(split): _split_rows(storage.split_uri(tmp, split)) for split in SPLITS}
        # The training split's feature moments: training scales with them, so no rank reads the whole split.
        features = feature_names(contract)
        train_files = datasets.folder_files(storage.split_uri(tmp, "train"))
        moments = split_moments(train_files, features, session.map_files)
        # The hash (the prepared dataset's identity) covers the rows as read and split, not the features computed
        # from them: a float feature's last bits follow the CPU (numpy's log1p differs between its AVX-512 and
        # baseline kernels), and the same rows hashed apart on two workers.
        computed = set(features)
        manifest = datasets.write_manifest(
            tmp,
            columns=[name for name in datasets.column_names(tmp) if name not in computed],
            extra={
                "dataset_version": version,
                "engine": engine_name,
                "raw": list(raw_uris.values()),
                "missing_days": missing,
                "split_rows": split_rows,
                "holdout": holdout_label(logical_date, holdout_days, settings.window_days),
                "features": features,
                "train_moments": {"features": features, **moments.to_json()},
                "contract": contract.dataset,
                "contract_version": contract.version,
            },
            final_uri=out_uri,
            map_files=session.map_files,
            # The rows' order in each split, which training takes them in (the sort's; each engine cuts it apart).
            ordered=[storage.split_folder(split) for split in SPLITS],
        )
        _check_raw_unchanged(raw_uris, raw_hashes)  # before the commit: the rows read are the version named
    log.info(
        "prepared %d rows with %s into %s (dataset version %s)",
        manifest.rows,
        engine_name,
        out_uri,
        version[:12],
    )
    return {
        "uri": out_uri,
        "engine": engine_name,
        "rows": manifest.rows,
        "split_rows": split_rows,
        "dataset_version": version,
        "missing_days": missing,
        "content_hash": manifest.content_hash,
        "profile": storage.join(out_uri, PROFILE_FILE),
    }
