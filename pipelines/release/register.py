"""Register: the trained model becomes a new version of the registered model, alias ``challenger``.

Idempotent: under the model's registry lock, a version is looked up by its run key tag (then by its source
run) before one is created, so a retried or re-run task of the same DAG run never makes a second version,
even when two of them race. The version is created with its lineage tags and the sha256 manifest of its
files (:mod:`pipelines.release.integrity`) in one call, so no version exists without them.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipelines.data import runlog
from pipelines.release import history, integrity, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)

LINEAGE_TAGS = (
    "dataset.version",
    "dataset.hash",
    "dataset.uri",
    "dataset.engine",
    "model.family",
    "logical_date",
    "airflow.dag_id",
    "airflow.run_id",
    "airflow.run_url",
    "git.commit",
    "ct.run_key",
    "ct.training_identity",
    "reference_profile",
)


@runlog.stage("register")
def register(settings: Settings, logical_date: dt.date, run_id: str) -> dict[str, Any]:
    """Register the run's model (once), copy its lineage tags onto the version, point ``challenger`` at it."""
    client = tracking.configure(settings)
    name = settings.model_name
    try:
        client.create_registered_model(name, description="Continuously retrained classifier; see the README.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run_tags = client.get_run(run_id).data.tags
    run_key = run_tags.get("ct.run_key")
    tags = None
    if _existing_version(client, name, run_id, run_key) is None:
        # The model's files are read and hashed before the promotion lock is taken: a large model's download
        # would otherwise hold back every promotion and rollback for its whole length.
        tags = _version_tags(run_id, run_tags)
    with history.promotion_lock(settings, name):
        version = _existing_version(client, name, run_id, run_key)
        if version is not None:
            log.info("run %s is already version %s of %s", run_id, version.version, name)
        else:
            tags = tags or _version_tags(run_id, run_tags)  # the version found before the lock is gone
            with tracking.no_mlflow_prints():  # this stage logs what it registered, below
                version = mlflow.register_model(run_tags["ct.model_uri"], name, tags=tags)
            log.info(
                "registered run %s as version %s of %s (sha256 %s)",
                run_id,
                version.version,
                name,
                tags[integrity.DIGEST_TAG][:12],
            )
        # Under the lock, as promote moves the alias away from a version it makes champion. A re-run of a day
        # whose version is champion by now leaves it champion only; a re-run of an older day leaves the alias
        # on the newer challenger registered since.
        champion = tracking.version_by_alias(client, name, tracking.CHAMPION)
        challenger = tracking.version_by_alias(client, name, tracking.CHALLENGER)
        if champion is not None and champion.version == version.version:
            log.info("version %s of %s is the champion: no challenger alias", version.version, name)
        elif challenger is not None and _newer(challenger) > _newer(version):
            log.info(
                "version %s of %s is of older data than the challenger, v%s: the alias stays",
                version.version,
                name,
                challenger.version,
            )
        else:
            client.set_registered_model_alias(name, tracking.CHALLENGER, version.version)
    version = client.get_model_version(name, version.version)
    tags = {k: v for k, v in version.tags.items() if k != integrity.MANIFEST_TAG}
    return {"name": name, "version": int(version.version), "run_id": run_id, "tags": tags}


class NoModelLoggedError(ValueError):
    """The training run to register logged no model: it failed, was killed, or is still running."""


def _newer(version: ModelVersion) -> tuple[str, int]:
    """How new a version is: the last day of its data (its ``logical_date``), then its number. A re-run of an
    older day with new code or settings registers a version of a higher number, of older data: by number it
    took the alias from the newer day's challenger."""
    return (version.tags.get("logical_date") or "", int(version.version))


def _version_tags(run_id: str, run_tags: dict[str, str]) -> dict[str, str]:
    """The run's lineage tags and its model files' manifest (read and hashed here), for its new version."""
    model_uri = run_tags.get("ct.model_uri")
    if not model_uri:
        raise NoModelLoggedError(
            f"MLflow run {run_id} has no ct.model_uri tag: it did not finish logging a model (a training that "
            "failed, was stopped or still runs); register the run of a training that finished"
        )
    with tempfile.TemporaryDirectory(prefix="ct-register-") as tmp:
        manifest = integrity.build_manifest(integrity.download(model_uri, tmp))
    log.info("run %s's model: %d files, %d bytes", run_id, len(manifest["files"]), manifest["total_bytes"])
    tags = {key: run_tags[key] for key in LINEAGE_TAGS if key in run_tags}
    return tags | integrity.tags_for(manifest)


def _existing_version(
    client: MlflowClient, name: str, run_id: str, run_key: str | None
) -> ModelVersion | None:
    """The version already registered for this run key (or, for older versions, this source run)."""
    if run_key:
        found = client.search_model_versions(f"name = '{name}' and tags.`ct.run_key` = '{run_key}'")
        if found:
            return min(found, key=lambda v: int(v.version))
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None
