"""The continuous-training platform inside Airflow: links from the retrain DAG's tasks to MLflow, and a Models
view with the champion, the versions, the promotion history and a rollback.

Thin by design: what the view shows and where a link points is :mod:`pipelines.release.overview`; this file
wires it to Airflow. Airflow loads plugins in every component (a task process too), so the top of this file
imports only what is cheap; the web app is built on its first request, in the API server.

* Extra links (``operator_extra_links``) on the retrain DAG's ``@task`` tasks, from what each task returned
  (its XCom ``return_value``): ``train`` to its MLflow run, ``register`` and ``promote`` to the model version,
  ``drift`` to the drift report, ``gate`` to the decision record. ``CT_MLFLOW_UI_URL`` is the MLflow UI.
* A FastAPI app under ``/ct`` and a "Models" entry in Airflow's navigation (``external_views``). Plugin
  routes are not protected by Airflow on their own: every route here depends on Airflow's own security
  dependencies (a signed-in user who may read the retrain DAG's runs), and the rollback on the right to
  trigger the ``rollback`` DAG, which it triggers through Airflow's own trigger endpoint, as that user.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations, and the routes are
# defined inside build_app(), where postponed (string) annotations could not be resolved.
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

log = logging.getLogger(__name__)

RETRAIN, ROLLBACK = "retrain", "rollback"
URL_PREFIX = "/ct"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def _base_path() -> str:
    """The path Airflow is served under (``[api] base_url``), so links work behind a path prefix too."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


# --- Extra links ---------------------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    """An XCom value as stored: JSON, sometimes JSON text inside the JSON column; plain JSON only."""
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def returned(ti_key: "TaskInstanceKey", task_id: str) -> Any:
    """What ``task_id`` returned in the DAG run of ``ti_key`` (its XCom ``return_value``), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    return None if row is None else _decode(row.value)


class _MlflowLink(BaseOperatorLink):
    """A link from some of the retrain DAG's tasks to a page of the MLflow UI; empty (hidden) elsewhere."""

    name = ""
    tasks: tuple[str, ...] = ()
    operators = [_PythonDecoratedOperator]  # the @task tasks; the link shows only on ``tasks`` of retrain

    def target(self, ti_key: "TaskInstanceKey") -> Any:
        raise NotImplementedError

    def get_link(self, operator: Any, *, ti_key: "TaskInstanceKey") -> str:
        if ti_key.dag_id != RETRAIN or ti_key.task_id not in self.tasks:
            return ""
        target = self.target(ti_key)
        if target is None:  # the task has not returned (yet): no link
            return ""
        from mlflow.exceptions import MlflowException

        from pipelines.release.overview import mlflow_link
        from pipelines.settings import get_settings

        try:
            return mlflow_link(get_settings(), target)
        except MlflowException as exc:  # the registry is down or lost the run: the task page still opens
            log.warning("no %s link for %s: MLflow answered %s", self.name, ti_key, exc)
            return ""


class MlflowRunLink(_MlflowLink):
    name = "MLflow run"
    tasks = ("train",)

    def target(self, ti_key: "TaskInstanceKey") -> Any:
        from pipelines.release.overview import train_target

        return train_target(returned(ti_key, ti_key.task_id))


class ModelVersionLink(_MlflowLink):
    name = "MLflow model version"
    tasks = ("register", "promote")

    def target(self, ti_key: "TaskInstanceKey") -> Any:
        from pipelines.release.overview import version_target

        return version_target(returned(ti_key, ti_key.task_id))


class DriftReportLink(_MlflowLink):
    name = "Drift report"
    tasks = ("drift",)

    def target(self, ti_key: "TaskInstanceKey") -> Any:
        from pipelines.release.overview import drift_target

        return drift_target(returned(ti_key, ti_key.task_id))


class DecisionRecordLink(_MlflowLink):
    name = "Decision record"
    tasks = ("gate",)

    def target(self, ti_key: "TaskInstanceKey") -> Any:
        from pipelines.release.overview import decision_target

        # The record is logged to the challenger's run, which ``register`` of the same DAG run returned.
        return decision_target(returned(ti_key, "gate"), returned(ti_key, "register"))


# --- The Models view -----------------------------------------------------------------------------------


def _may(user: Any, method: str, dag_id: str, entity: Any) -> bool:
    """Whether Airflow's auth manager lets ``user`` do ``method`` on ``entity`` of ``dag_id``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    return bool(
        get_auth_manager().is_authorized_dag(method=method, access_entity=entity, details=details, user=user)
    )


def _approvals(session: Any, base_url: str) -> list[dict[str, Any]]:
    """The retrain DAG's approval requests nobody has answered yet (Airflow's human-in-the-loop records)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    from pipelines.release.tracking import airflow_run_url

    query = (
        select(TaskInstance.run_id, HITLDetail.subject, HITLDetail.created_at)
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(TaskInstance.dag_id == RETRAIN, HITLDetail.responded_at.is_(None))
        .where(TaskInstance.state == "deferred")
        .order_by(HITLDetail.created_at.desc())
    )
    return [
        {
            "run_id": run_id,
            "subject": subject,
            "created": created_at.strftime("%Y-%m-%d %H:%M UTC"),
            "run_url": airflow_run_url(base_url, RETRAIN, run_id),
        }
        for run_id, subject, created_at in session.execute(query)
    ]


def _cross_site(request: Any) -> str | None:  # a fastapi Request (fastapi is imported on first use)
    """Where a browser's post may come from another site (a CSRF): None when it is from Airflow's own pages.

    An ``Origin``, else a ``Referer``, must be this host. A signed-in browser is known by its cookie, which
    ``SameSite=lax`` still sends from any page of the same site (another port of the host: MLflow, serving,
    Dask), so one that sends neither (``Origin: null`` from a page with ``Referrer-Policy: no-referrer``), let
    through before, is refused; a client that sends its own ``Authorization`` header is no cross-site form."""
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value and value != "null":
            return None if urlsplit(value).netloc == request.headers.get("host") else value
    if request.headers.get("authorization"):
        return None
    return "a page that sent neither its Origin nor its Referer"


def _is_paused(session: Any, dag_id: str) -> bool:
    from airflow.models.dag import DagModel

    dag = session.get(DagModel, dag_id)
    return bool(dag is not None and dag.is_paused)


def build_app() -> Any:  # noqa: C901  (its routes are closures, counted here; each is short)
    """The FastAPI app under ``/ct``: the Models page, its JSON, and the rollback."""
    from typing import Annotated

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.common.dagbag import create_dag_bag
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from airflow.models.dag import DagModel
    from fastapi import Depends, FastAPI, Form, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.templating import Jinja2Templates
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from pipelines.release import overview
    from pipelines.release.tracking import airflow_run_url
    from pipelines.settings import Settings, check_dataset_name, get_settings

    app = FastAPI(title="Continuous training: Models", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.globals["fmt"] = overview.format_metric
    dag_bag = create_dag_bag()
    # Every route needs a signed-in user who may read the retrain DAG's runs; the rollback also needs the
    # right to trigger the rollback DAG (Airflow's own dependencies, as its API routes use them).
    may_read = Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=RETRAIN))
    may_trigger = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=ROLLBACK))
    base = _base_path()
    airflow_url = conf.get("api", "base_url", fallback="") or None
    hrefs = {
        "models_href": f"{base}{URL_PREFIX}/models",
        "rollback_href": f"{base}{URL_PREFIX}/models/rollback",
        "required_actions_href": f"{base}/required_actions",
    }

    def settings_for(dataset: str | None) -> Settings:
        settings = get_settings()
        if dataset is None or dataset == settings.dataset:
            return settings
        try:
            check_dataset_name(dataset)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        if dataset not in overview.known_datasets(settings):
            raise HTTPException(404, f"no dataset {dataset!r}: it has no contract in include/contracts")
        return get_settings(dataset=dataset)

    def page(request: Request, name: str, status_code: int = 200, **values: Any) -> Response:
        return templates.TemplateResponse(request, name, hrefs | values, status_code=status_code)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        """A person's browser gets a page that says what to do; an API client gets Airflow's JSON."""
        if "text/html" not in request.headers.get("accept", ""):
            return await http_exception_handler(request, exc)
        sign_in = get_auth_manager().get_url_login() if exc.status_code == 401 else None
        title = {401: "Sign in first", 403: "Not allowed"}.get(exc.status_code, "Cannot do that")
        return page(
            request, "ct_message.html", exc.status_code, title=title, error=exc.detail, sign_in=sign_in
        )

    @app.get("/models", response_class=HTMLResponse, dependencies=[may_read])
    def models(
        request: Request, user: GetUserDep, session: SessionDep, dataset: str | None = None
    ) -> Response:
        settings = settings_for(dataset)
        found = overview.read(settings, airflow_url)
        may_see_approvals = _may(user, "GET", RETRAIN, DagAccessEntity.HITL_DETAIL)
        return page(
            request,
            "ct_models.html",
            title=f"Models: {found.model}",
            o=found,
            user=user.get_name(),
            datasets=overview.known_datasets(settings),
            mlflow_model_url=overview.mlflow_model_url(settings.mlflow_ui_url, found.model),
            json_href=f"{hrefs['models_href']}/overview.json?dataset={found.dataset}",
            can_roll_back=_may(user, "POST", ROLLBACK, DagAccessEntity.RUN),
            rollback_paused=_is_paused(session, ROLLBACK),
            approvals=_approvals(session, airflow_url or base) if may_see_approvals else None,
            checked_minutes=int(overview.VERIFIED.ttl_s // 60),
        )

    @app.get("/models/overview.json", dependencies=[may_read])
    def models_json(dataset: str | None = None) -> JSONResponse:
        return JSONResponse(overview.read(settings_for(dataset), airflow_url).as_dict())

    @app.post("/models/rollback", response_class=HTMLResponse, status_code=201, dependencies=[may_trigger])
    def rollback(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        dataset: Annotated[str, Form()],
        to_version: Annotated[int, Form()],
        reason: Annotated[str, Form()],
        unpause: Annotated[bool, Form()] = False,
        # The champion the form was made under: a version, or "none" (no champion on the record then).
        from_version: Annotated[str | None, Form(pattern=r"^([1-9][0-9]{0,8}|none)$")] = None,
    ) -> Response:
        if (elsewhere := _cross_site(request)) is not None:
            raise HTTPException(403, f"a rollback is posted from Airflow's own pages, not from {elsewhere}")
        settings = settings_for(dataset)
        reason = reason.strip()
        if len(reason) < 3:
            raise HTTPException(
                400, "a rollback needs a reason (3 characters or more); it is kept in the history"
            )
        found = overview.read(settings, airflow_url)
        # The champion the form was made under: a form posted again (a refreshed 201 page, a double click) or
        # one left open while a promotion ran rolled back the newer champion, under the old reason.
        # A form made when no version was champion says "none": left out, a promotion since was rolled back.
        made_under = None if from_version in (None, "none") else int(from_version)
        if from_version is not None and made_under != found.recorded_champion:
            now = f"v{found.recorded_champion}" if found.recorded_champion is not None else "no version"
            then = f"v{made_under}" if made_under is not None else "no version"
            raise HTTPException(
                409,
                f"{now} is champion now; the form was made when {then} was: nothing was triggered, reload the page",
            )
        if to_version not in {candidate.version for candidate in found.candidates}:
            offered = ", ".join(f"v{c.version}" for c in found.candidates) or "none"
            raise HTTPException(400, f"v{to_version} is not a version to roll back to (offered: {offered})")
        paused = was_paused = _is_paused(session, ROLLBACK)
        if unpause and paused:
            if not _may(user, "PUT", ROLLBACK, None):
                raise HTTPException(403, "you may trigger the rollback DAG but not unpause it")
            dag = session.get(DagModel, ROLLBACK)
            dag.is_paused = paused = False
            # recorded as Airflow records its own unpause (PATCH /api/v2/dags/rollback, the UI's toggle)
            _audit(session, user.get_name(), "patch_dag", {"is_paused": False, "via": "Models view"})
        conf = {"dataset": settings.dataset, "to_version": to_version, "reason": reason}
        if made_under is not None:
            conf["from_version"] = made_under
        body = TriggerDAGRunPostBody(logical_date=None, conf=conf)
        # Airflow's own trigger endpoint, in-process: its checks (stale DAG, import errors, the params'
        # schema) and the run recorded as triggered by this user.
        run = trigger_dag_run(
            dag_id=ROLLBACK, body=body, dag_bag=dag_bag, user=user, session=session, request=request
        )
        extra = {
            "via": "Models view",
            "conf": run.conf,
            "method": request.method,
            "unpaused": was_paused and not paused,
        }
        _audit(session, user.get_name(), "trigger_dag_run", extra, run.run_id)
        shown = {
            "run_id": run.run_id,
            "state": str(run.state),
            "conf": run.conf,
            "url": airflow_run_url(airflow_url or base, ROLLBACK, run.run_id),
        }
        return page(
            request,
            "ct_message.html",
            201,
            title=f"Rollback of {settings.model_name} triggered",
            run=shown,
            user=user.get_name(),
            model=settings.model_name,
            paused=paused,
        )

    return app


def _audit(session: Any, who: str, event: str, extra: dict[str, Any], run_id: str | None = None) -> None:
    """A row of Airflow's audit log about the rollback DAG, as Airflow's own endpoints write theirs."""
    from airflow.models.log import Log

    session.add(
        Log(
            event=event,
            owner=who,
            owner_display_name=who,
            dag_id=ROLLBACK,
            run_id=run_id,
            extra=json.dumps(extra),
        )
    )


class ModelsApp:
    """The Models view's ASGI app, built on its first request (in the API server only, see the module doc)."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)


def _mlflow_ui_url() -> str:
    from pipelines.settings import get_settings

    return get_settings().mlflow_ui_url


class ContinuousTrainingPlugin(AirflowPlugin):
    name = "continuous_training"
    operator_extra_links = [MlflowRunLink(), ModelVersionLink(), DriftReportLink(), DecisionRecordLink()]
    fastapi_apps = [{"app": ModelsApp(), "url_prefix": URL_PREFIX, "name": "Continuous training: Models"}]
    # Two entries, so Airflow 3.3 lists them as links in its "Plugins" menu (each opens a tab). A single
    # entry, or one with nav_top_level, is drawn as a navigation button that a click does not follow.
    external_views = [
        {"name": "Models", "href": f"{_base_path()}{URL_PREFIX}/models", "destination": "nav"},
        {"name": "MLflow", "href": _mlflow_ui_url(), "destination": "nav"},
    ]
