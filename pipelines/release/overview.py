"""What the Models view in Airflow shows, and where Airflow's links into MLflow point.

For one dataset's registered model: the champion (the alias, and the promotion history's record of it), the
challenger, the versions newest first with their validation and holdout metrics, dataset version, gate
decision and the Airflow run that made them, the whole promotion history, the drift of recent runs (from
the run records :mod:`pipelines.data.runlog` writes), and the versions a rollback may target: every version
but the champion whose files pass the sha256 check against the manifest stored at registration
(:mod:`pipelines.release.integrity`), as ``move_champion`` checks before it moves anything.

The MLflow UI's addresses follow the routes MLflow 3's UI builds itself (``#/experiments/<id>/runs/<run>``,
``.../artifacts/<path>``, ``#/models/<name>/versions/<n>``). The pure helpers here take plain data; the
readers (:func:`read`, :func:`mlflow_link`, :func:`recent_drift`) talk to MLflow and the data root, and
import them only when called, so Airflow can import this module cheaply.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from pipelines.release.history import MOVED
from pipelines.settings import INCLUDE_DIR, Settings

VERSIONS_SHOWN = 30  # newest versions with their metrics (one MLflow run read each)
CANDIDATES_CHECKED = 10  # versions whose files are checked for the rollback list, earlier champions first
DRIFT_RUNS_SHOWN = 10
VERIFIED_FOR_S = 600.0  # how long a sha256 check of a version's files is trusted by the view
DRIFT_REPORT = "drift.html"  # inside the drift artifacts folder the drift stage logs
DECISION_RECORD = "gate/decision.md"
METRIC_PREFIXES = ("val_", "holdout_")
_DAY_FOLDER = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")


# --- The MLflow UI's addresses -------------------------------------------------------------------------


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str, artifact_path: str | None = None) -> str:
    """A run's page in the MLflow UI, or one of its artifacts (MLflow 3's ``getRunPageRoute``)."""
    page = f"{ui_url.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{page}/artifacts/{quote(artifact_path.strip('/'))}" if artifact_path else page


def mlflow_model_url(ui_url: str, model: str) -> str:
    """A registered model's page in the MLflow UI, with all its versions (MLflow 3's ``getModelPageRoute``)."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(model, safe='')}"


def mlflow_model_version_url(ui_url: str, model: str, version: int) -> str:
    """A model version's page in the MLflow UI (MLflow 3's ``getModelVersionPageRoute``)."""
    return f"{mlflow_model_url(ui_url, model)}/versions/{int(version)}"


@dataclass(frozen=True)
class MlflowTarget:
    """A page of the MLflow UI: a run (``artifact_path``: one of its artifacts), or a model version."""

    run_id: str | None = None
    artifact_path: str | None = None
    model: str | None = None
    version: int | None = None

    def url(self, ui_url: str, experiment_id: str | None) -> str:
        """The page's address; a run's page needs the run's experiment."""
        if self.run_id is not None:
            if experiment_id is None:
                raise ValueError(f"the page of run {self.run_id} needs its experiment id")
            return mlflow_run_url(ui_url, experiment_id, self.run_id, self.artifact_path)
        if self.model is None or self.version is None:
            raise ValueError("an MLflow target is a run or a model version")
        return mlflow_model_version_url(ui_url, self.model, self.version)


def _text(returned: Any, key: str) -> str | None:
    value = returned.get(key) if isinstance(returned, Mapping) else None
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def train_target(returned: Any) -> MlflowTarget | None:
    """``train`` returned its MLflow run: ``{"run_id": ...}``."""
    run_id = _text(returned, "run_id")
    return MlflowTarget(run_id=run_id) if run_id else None


def version_target(returned: Any) -> MlflowTarget | None:
    """``register`` returned ``{"name", "version"}``; ``promote`` returned ``{"name", "champion"}`` (a dry run:
    ``"would_promote"``): the version registered, or the one promoted."""
    name = _text(returned, "name")
    if name is None:
        return None
    assert isinstance(returned, Mapping)
    for key in ("version", "would_promote", "champion"):
        if (version := _number(returned.get(key))) is not None:
            return MlflowTarget(model=name, version=version)
    return None


def runs_uri_target(uri: str | None, file_name: str | None = None) -> MlflowTarget | None:
    """A ``runs:/<run>/<path>`` URI as an artifact of that run (``file_name`` inside ``<path>``)."""
    if not uri or not uri.startswith("runs:/"):
        return None
    run_id, _, path = uri[len("runs:/") :].partition("/")
    if not run_id:
        return None
    artifact = "/".join(part for part in (path.strip("/"), file_name) if part)
    return MlflowTarget(run_id=run_id, artifact_path=artifact or None)


def drift_target(returned: Any) -> MlflowTarget | None:
    """``drift`` returned where it logged its report: ``{"mlflow_artifacts": "runs:/<run>/drift"}``."""
    return runs_uri_target(_text(returned, "mlflow_artifacts"), DRIFT_REPORT)


def decision_target(decided: Any, registered: Any) -> MlflowTarget | None:
    """The decision record the gate logged to the challenger's run: the gate returned the challenger's
    version, ``register`` (same DAG run) the run it was registered from."""
    run_id = _text(registered, "run_id")
    if run_id is None or not isinstance(decided, Mapping) or not isinstance(registered, Mapping):
        return None
    if _number(decided.get("challenger_version")) != _number(registered.get("version")):
        return None  # not the version this run registered: no record of ours to point at
    return MlflowTarget(run_id=run_id, artifact_path=DECISION_RECORD)


@functools.lru_cache(maxsize=4096)
def _experiment_of(tracking_uri: str, run_id: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id)


def mlflow_link(settings: Settings, target: MlflowTarget) -> str:
    """The MLflow UI address of ``target`` (a run's experiment is read once per run and remembered)."""
    experiment = _experiment_of(settings.tracking_uri, target.run_id) if target.run_id else None
    return target.url(settings.mlflow_ui_url, experiment)


# --- What the Models view shows ------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    version: int
    created: str
    aliases: tuple[str, ...]
    run_id: str | None
    metrics: dict[str, float]
    dataset_version: str | None
    gate_decision: str | None
    airflow_run_url: str | None
    mlflow_url: str
    run_url: str | None


@dataclass(frozen=True)
class Candidate:
    version: int
    label: str


@dataclass(frozen=True)
class DriftRow:
    day: str
    drift_share: float | None
    drifted_columns: int | None
    columns: int | None
    reference: str | None
    finished_at: str | None


@dataclass(frozen=True)
class Overview:
    dataset: str
    model: str
    champion: int | None  # where the champion alias points
    recorded_champion: int | None  # the champion by the promotion history (the record)
    challenger: int | None
    problem: str | None  # alias and history disagree, or a move is half done
    versions: list[VersionRow]
    total_versions: int
    history: list[dict[str, Any]]  # newest first
    drift: list[DriftRow]
    candidates: list[Candidate]
    refused: list[tuple[int, str]]  # versions checked for the rollback list whose files failed, and why
    unchecked: int  # versions not checked for the rollback list (beyond CANDIDATES_CHECKED)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def known_datasets(settings: Settings) -> list[str]:
    """The datasets the view offers: each with a contract under include/contracts, and the configured one."""
    return sorted({path.stem for path in (INCLUDE_DIR / "contracts").glob("*.yaml")} | {settings.dataset})


def format_timestamp(millis: int | None) -> str:
    """MLflow's epoch milliseconds as a UTC time a person reads (``2026-11-30 17:02 UTC``)."""
    if millis is None:
        return ""
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def version_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's validation and holdout metrics (``val_*``, ``holdout_*``), by name."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(METRIC_PREFIXES)}


def format_metric(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def version_row(
    *,
    version: int,
    created_ms: int | None,
    aliases: Iterable[str],
    tags: Mapping[str, str],
    run_id: str | None,
    metrics: Mapping[str, float],
    experiment_id: str | None,
    ui_url: str,
    model: str,
) -> VersionRow:
    """One version as the view lists it, from what MLflow says of the version and its run."""
    return VersionRow(
        version=int(version),
        created=format_timestamp(created_ms),
        aliases=tuple(sorted(aliases)),
        run_id=run_id,
        metrics=version_metrics(metrics),
        dataset_version=tags.get("dataset.version"),
        gate_decision=tags.get("gate.decision"),
        airflow_run_url=web_url(tags.get("airflow.run_url")),
        mlflow_url=mlflow_model_version_url(ui_url, model, version),
        run_url=mlflow_run_url(ui_url, experiment_id, run_id) if run_id and experiment_id else None,
    )


def web_url(value: str | None) -> str | None:
    """``value`` when it is an http(s) address with a host, else None. A link the view renders from an MLflow tag
    (which anyone who may edit the version can write): a ``javascript:`` one ran in Airflow's origin when
    clicked, with the session of whoever clicked it (a rollback triggered and its DAG unpaused as them)."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:  # an unbalanced [ in the host
        return None
    return value if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def earlier_champions(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Versions the history made champion, the most recent first, each once."""
    found: list[int] = []
    for row in reversed(list(rows)):
        version = row.get("to_version")
        if row.get("outcome") in MOVED and version is not None and version not in found:
            found.append(int(version))
    return found


def rollback_order(
    versions: Iterable[int], rows: Iterable[Mapping[str, Any]], champion: int | None, limit: int
) -> list[int]:
    """The versions to check for the rollback list, at most ``limit``: earlier champions (most recent first),
    then the other versions newest first; never the champion on the record."""
    existing = set(versions)
    ordered = [v for v in earlier_champions(rows) if v in existing]
    ordered += sorted(existing - set(ordered), reverse=True)
    return [v for v in ordered if v != champion][: max(limit, 0)]


def candidate_label(version: int, row: VersionRow | None, was_champion: bool) -> str:
    """How a version is offered in the rollback form: its number, when it was made, what the gate said."""
    parts = [f"v{version}"]
    if row is not None:
        parts.append(row.created)
        if row.gate_decision:
            parts.append(f"gate: {row.gate_decision}")
        parts += [f"{name} {format_metric(value)}" for name, value in list(row.metrics.items())[:2]]
    if was_champion:
        parts.append("champion before")
    return " · ".join(part for part in parts if part)


def history_view(rows: Iterable[Mapping[str, Any]], airflow_url: str | None) -> list[dict[str, Any]]:
    """The promotion history newest first, each row with the gate's verdict and a link to its Airflow run."""
    from pipelines.release.tracking import airflow_run_url

    view = []
    for row in reversed(list(rows)):
        shown = {k: v for k, v in row.items() if k != "decision"}
        shown["gate"] = _verdict(row.get("decision"))
        shown["run_url"] = (
            airflow_run_url(airflow_url, row["dag_id"], row["run_id"])
            if airflow_url and row.get("dag_id") and row.get("run_id")
            else None
        )
        view.append(shown)
    return view


def _verdict(decision: Any) -> str | None:
    if isinstance(decision, str) and decision:
        try:
            decision = json.loads(decision)
        except json.JSONDecodeError:
            return None
    return decision.get("decision") if isinstance(decision, dict) else None


def drift_row(day: str, record: Mapping[str, Any]) -> DriftRow:
    """One run's drift, from the record the drift stage left for its logical date."""
    result = record.get("result") or {}
    reference = result.get("reference")
    if reference and result.get("reference_version") is not None:
        reference = f"{reference} v{result['reference_version']}"
    columns = result.get("columns")
    return DriftRow(
        day=day,
        drift_share=result.get("drift_share"),
        drifted_columns=result.get("drifted_columns"),
        columns=len(columns) if isinstance(columns, Mapping) else None,
        reference=reference,
        finished_at=record.get("finished_at"),
    )


class VerifiedVersions:
    """sha256 checks of versions' files, each remembered for ``ttl_s``: a page view must not download every
    model each time. The rollback itself checks again before it moves anything."""

    def __init__(self, ttl_s: float = VERIFIED_FOR_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._found: dict[tuple[str, ...], tuple[float, str | None]] = {}

    def check(self, key: tuple[str, ...], verify: Callable[[], str | None]) -> str | None:
        """None when the files are verified, else why not; ``verify`` runs when nothing fresh is remembered."""
        now = time.monotonic()
        with self._lock:
            found = self._found.get(key)
        if found is not None and now - found[0] < self.ttl_s:
            return found[1]
        problem = verify()
        with self._lock:
            self._found[key] = (time.monotonic(), problem)
        return problem


VERIFIED = VerifiedVersions()


def recent_drift(settings: Settings, limit: int = DRIFT_RUNS_SHOWN) -> list[DriftRow]:
    """The drift of the newest ``limit`` runs of the dataset, from their run records (one listing, then one
    small JSON file per run)."""
    from fsspec.core import url_to_fs

    from pipelines.data import storage

    root = storage.join(settings.resolved_data_root, "runs", settings.dataset)
    fs, path = url_to_fs(root)
    if not fs.exists(path):
        return []
    days = sorted(
        (
            m.group(1)
            for name in fs.ls(path, detail=False)
            if (m := _DAY_FOLDER.match(posixpath.basename(name)))
        ),
        reverse=True,
    )
    rows = []
    for day in days:
        uri = storage.run_record_uri(
            settings.resolved_data_root, settings.dataset, dt.date.fromisoformat(day), "drift"
        )
        if storage.exists(uri):
            rows.append(drift_row(day, storage.read_json(uri)))
        if len(rows) >= limit:
            break
    return rows


def _verify(client: Any, name: str, version: int) -> str | None:
    from pipelines.release import integrity

    with tempfile.TemporaryDirectory(prefix="ct-overview-") as tmp:
        try:
            integrity.fetch_verified(client, name, version, tmp)
        except (
            integrity.IntegrityError,
            integrity.StoreUnavailableError,
            integrity.LocalResourceError,
        ) as exc:
            return str(exc)
    return None


def _rows(
    client: Any, settings: Settings, versions: list[Any], aliases: Mapping[int, list[str]]
) -> dict[int, VersionRow]:
    """``aliases``: by version number (a registry search leaves the versions' own alias lists empty)."""
    from mlflow.exceptions import MlflowException

    rows = {}
    for mv in versions:
        metrics: Mapping[str, float] = {}
        experiment = None
        if mv.run_id:
            try:
                run = client.get_run(mv.run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:  # a version whose run was purged keeps its row, without metrics
                metrics, experiment = run.data.metrics, str(run.info.experiment_id)
        rows[int(mv.version)] = version_row(
            version=int(mv.version),
            created_ms=mv.creation_timestamp,
            aliases=aliases.get(int(mv.version), ()),
            tags=mv.tags or {},
            run_id=mv.run_id,
            metrics=metrics,
            experiment_id=experiment,
            ui_url=settings.mlflow_ui_url,
            model=settings.model_name,
        )
    return rows


def read(
    settings: Settings,
    airflow_url: str | None = None,
    verified: VerifiedVersions = VERIFIED,
    versions_shown: int = VERSIONS_SHOWN,
    candidates_checked: int = CANDIDATES_CHECKED,
) -> Overview:
    """Everything the Models view shows for ``settings``' dataset; ``airflow_url`` links history rows to
    their Airflow runs."""
    from pipelines.release import audit, history, tracking

    client = tracking.configure(settings)
    name = settings.model_name
    found = audit.audit(settings, client)
    rows = history.read(settings, name)
    everything = sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version), reverse=True
    )
    by_number = {int(v.version): v for v in everything}
    order = rollback_order(by_number, rows, found.recorded, candidates_checked)
    shown = everything[:versions_shown]
    aliases: dict[int, list[str]] = {}
    if everything:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(int(number), []).append(alias)
    listed = _rows(
        client,
        settings,
        shown + [by_number[v] for v in order if v not in {int(s.version) for s in shown}],
        aliases,
    )
    challenger = tracking.version_by_alias(client, name, tracking.CHALLENGER)
    before = set(earlier_champions(rows))
    candidates, refused = [], []
    for version in order:
        digest = (by_number[version].tags or {}).get("ct.artifact_sha256", "")
        key = (settings.tracking_uri, name, str(version), digest)
        problem = verified.check(key, functools.partial(_verify, client, name, version))
        if problem is None:
            candidates.append(
                Candidate(version, candidate_label(version, listed.get(version), version in before))
            )
        else:
            refused.append((version, problem))
    return Overview(
        dataset=settings.dataset,
        model=name,
        champion=found.alias,
        recorded_champion=found.recorded,
        challenger=None if challenger is None else int(challenger.version),
        problem=found.problem(),
        versions=[listed[int(v.version)] for v in shown],
        total_versions=len(everything),
        history=history_view(rows, airflow_url),
        drift=recent_drift(settings),
        candidates=candidates,
        refused=refused,
        unchecked=max(len(everything) - (1 if found.recorded in by_number else 0) - len(order), 0),
    )
