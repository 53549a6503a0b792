"""MLflow adapter: point the client at the configured store, and the lineage every run carries."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

from pipelines.settings import PROJECT_ROOT, Settings

_RUN_KEY = re.compile(r"[\w./:+-]{1,250}")

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RunContext:
    """Who asked for this work: the orchestrator's ids, or the CLI's."""

    run_key: str
    dag_id: str = "cli"
    dag_run_id: str = "manual"
    url: str | None = None  # the Airflow run's page (:func:`airflow_run_url`); runs and versions link back
    started_by: str = "cli"  # what started the run: schedule, manual (a person), backfill, monitor, cli
    start_reason: str | None = None  # the monitor's reason, when it asked for the run

    def __post_init__(self) -> None:
        if not _RUN_KEY.fullmatch(self.run_key):
            raise ValueError(
                f"run key {self.run_key!r} may hold only letters, digits and . _ / : + - (no quotes or spaces)"
            )
        # It names the training's job folder below <data_root>/training/<dataset>/: "../x" put it elsewhere.
        if any(part in ("", ".", "..") for part in self.run_key.split("/")):
            raise ValueError(
                f"run key {self.run_key!r} names a folder of training jobs: its parts between '/' may not be "
                "empty, '.' or '..'"
            )

    def tags(self) -> dict[str, str]:
        return (
            {
                "ct.run_key": self.run_key,
                "airflow.dag_id": self.dag_id,
                "airflow.run_id": self.dag_run_id,
                "git.commit": git_commit(),
                "ct.started_by": self.started_by,
            }
            | ({"airflow.run_url": self.url} if self.url else {})
            | ({"ct.start_reason": self.start_reason[:5000]} if self.start_reason else {})
        )


def daily_run_key(day: dt.date) -> str:
    """The run key prefix of a day's training, whoever runs it (the retrain DAG, ``pipelines train``).

    The training's identity is appended to it, so the same day and configuration trained from the command line
    after the DAG (or before it) reuses that model rather than registering a copy of it.
    """
    return f"retrain/{day}"


@contextlib.contextmanager
def no_mlflow_prints() -> Iterator[None]:
    """Silence what MLflow prints to stderr itself (``register_model``'s "Created version ..."): Airflow records
    a task's stderr as errors, and the caller logs what happened at its real level."""
    before = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = before


def airflow_run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The page of one DAG run in Airflow 3's UI, under its ``[api] base_url``."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


@functools.cache
def git_commit() -> str:
    """The checkout's commit (``CT_GIT_COMMIT`` wins, for images built without .git)."""
    if commit := os.environ.get("CT_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def configure(settings: Settings, *, experiment: bool = True) -> MlflowClient:
    """Point MLflow at the configured store and, unless ``experiment`` is False, make sure the experiment exists.

    A reader (serving) passes False: on a server with permissions, whoever creates the experiment manages it,
    and that must be the pipeline's account, not a read-only one.
    """
    # MLflow draws a progress bar on stderr for every artifact download, which Airflow's task log shows as
    # an error; a user's own setting wins.
    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith("sqlite:///"):
        from filelock import FileLock

        database = Path(uri[len("sqlite:///") :])
        database.parent.mkdir(parents=True, exist_ok=True)
        # The first client creates and migrates the SQLite store: two tasks doing it at once (a backfill
        # beside a scheduled run) collide in the migration, so creation is one at a time on this host.
        with FileLock(f"{database}.init.lock"):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # the tracking store is created here
            client.search_registered_models(max_results=1)  # and the registry's
    else:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if experiment:
        ensure_experiment(client, settings, settings.experiment)
        mlflow.set_experiment(settings.experiment)
    return client


def ensure_experiment(client: MlflowClient, settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created under the artifact root when it does not exist yet."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = settings.artifact_root
    if location is not None and "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    try:
        where = None if location is None else f"{location.rstrip('/')}/{name}"
        return str(client.create_experiment(name, artifact_location=where))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:  # not a lost creation race
            raise
        return str(found.experiment_id)


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        raise ValueError(
            f"MLflow has no experiment {settings.experiment!r}: run a stage that configures it first"
        )
    return str(experiment.experiment_id)


def run_of(version: ModelVersion) -> str:
    """The MLflow run a model version was registered from (every version this project registers has one)."""
    if not version.run_id:
        raise ValueError(f"{version.name} v{version.version} has no source run")
    return str(version.run_id)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist yet."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        # MLflow's basic-auth server answers a non-admin's alias read of a model that does not exist with 403
        # (it does not say which names exist); the model itself answers 404 then. A real refusal stays one.
        if exc.error_code == "PERMISSION_DENIED" and not model_exists(client, name):
            return None
        raise


def version_exists(client: MlflowClient, name: str, version: int) -> bool:
    """Whether ``version`` of the registered model ``name`` is in the registry (not deleted)."""
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


@functools.cache
def artifact_store_errors() -> tuple[type[BaseException], ...]:
    """What a download from the artifact store raises when the store fails: MLflow's and the file system's
    errors, and those of the cloud SDK an artifact store runs on (boto3, google-cloud, azure), if installed.
    """
    return (
        MlflowException,
        OSError,
        *_sdk_errors(
            ("botocore.exceptions", ("BotoCoreError", "ClientError")),
            ("google.api_core.exceptions", ("GoogleAPIError",)),
            ("azure.core.exceptions", ("AzureError",)),
        ),
    )


def _sdk_errors(*where: tuple[str, tuple[str, ...]]) -> list[type[BaseException]]:
    """The named exception classes of the cloud SDKs that are installed (module, class names)."""
    errors: list[type[BaseException]] = []
    for module, names in where:
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(found, name) for name in names]
    return errors


# PostgreSQL's SQLSTATEs of a server out of reach for now: class 08 (connection exception), and a server
# shutting down, crashed or starting up (57P01-57P03).
_PG_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03")


def _database_unreachable(exc: BaseException | None) -> bool:
    """A PostgreSQL connection that failed or was cut (psycopg's ``OperationalError`` with no SQLSTATE, as a
    refused or timed-out connection has, or a transient one); not an answer of the server (a missing table, a
    syntax error, a serialization failure, which carry their own)."""
    # Not imported: no error of it to tell apart (a task never preloads it).
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith(_PG_TRANSIENT_STATES)


def unavailable(exc: BaseException) -> bool:
    """Whether a registry, artifact store or database failure means it was out of reach for now (a connection
    refused or reset, a timeout, a 5xx or throttling once MLflow's own retries ran out, a PostgreSQL server
    that refused or dropped the connection or is restarting), not an answer about the files or the rows (not
    there, refused). Walks the exception's causes: MLflow wraps what ``requests`` raised, SQLAlchemy what
    psycopg raised."""
    import requests
    import sqlalchemy.exc

    transient: tuple[type[BaseException], ...] = (
        ConnectionError,  # the socket's: refused, reset, aborted
        TimeoutError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.RetryError,  # MLflow's retries of a 429 or 5xx ran out
        sqlalchemy.exc.TimeoutError,  # no connection of the pool came free in time
        *_sdk_errors(
            ("botocore.exceptions", ("ConnectionError", "HTTPClientError")),
            ("google.api_core.exceptions", ("ServerError", "TooManyRequests")),
            ("azure.core.exceptions", ("ServiceRequestError", "ServiceResponseError")),
        ),
    )
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, transient) or _database_unreachable(current):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and _database_unreachable(current.orig):
            return True  # SQLAlchemy's wrapper names the driver's error as ``orig`` (its cause, when raised)
        status = _http_status(current)
        if status is not None and (status >= 500 or status == 429):
            return True
        # An error raised "from None" hid what it was raised from: that is not why it was raised.
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an HTTP error carries (requests', or a cloud SDK's client error), if any."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def load_json_artifact(artifact_uri: str) -> Any:
    """A JSON artifact of a run (for example ``runs:/<run>/reference_profile.json``), parsed."""
    return json.loads(mlflow.artifacts.load_text(artifact_uri))
