"""The serving app: ``models:/<name>@champion``, followed as the alias moves, behind a small strict API.

Routes: ``POST /v1/predict``, ``GET /health``, ``GET /ready``, ``GET /metrics``, ``GET /v1/model``,
``POST /admin/reload`` (bearer token), and the OpenAPI document at ``/openapi.json``, whose request schema
is the signature and data contract of the model in service, shown by ``/docs`` (Swagger UI) and ``/redoc``
from files installed with the project, so they work with no network. Every response carries
``X-Model-Version``. Errors are JSON ``{"detail": ...}``; no stack trace reaches a client. :func:`create_app` wires the parts
that live beside it: the model holder, the micro-batcher, the prediction log, the metrics and the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from pipelines.model.signature import RequestError
from pipelines.serving.admin import admin_refusal
from pipelines.serving.api import (
    DOCS_ASSETS_PATH,
    DOCS_PATH,
    REDOC_PATH,
    VERSION_HEADER,
    ErrorResponse,
    ModelDescription,
    ReloadResponse,
    json_response,
    openapi_document,
)
from pipelines.serving.batcher import MicroBatcher
from pipelines.serving.guard import Guard
from pipelines.serving.holder import ModelHolder
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.predict import Predictor
from pipelines.serving.predlog import PredictionLog
from pipelines.settings import Settings

log = logging.getLogger(__name__)

NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model in service yet."}
}


def _prediction_log(settings: Settings, metrics: ServingMetrics) -> PredictionLog | None:
    if not settings.prediction_log:
        return None
    return PredictionLog(
        settings.prediction_log_uri,
        settings.model_name,
        metrics,
        settings.prediction_log_flush_rows,
        settings.prediction_log_flush_seconds,
        settings.prediction_log_max_buffer_rows,
        settings.prediction_log_max_buffer_bytes,
    )


async def follow_champion(holder: ModelHolder, poll_seconds: float) -> None:
    """Load the champion at start, then poll the alias every ``poll_seconds`` (0: load once)."""
    while True:
        try:
            await asyncio.to_thread(holder.refresh)
        except Exception:  # noqa: BLE001 - the poller outlives any one failure; it is logged with its trace
            log.exception("checking the champion failed")
        if not poll_seconds:
            return
        await asyncio.sleep(poll_seconds)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"detail": str(exc.detail)}, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return json_response({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return json_response({"detail": exc.message}, exc.status)


def _add_status_routes(
    app: FastAPI, settings: Settings, holder: ModelHolder, metrics: ServingMetrics
) -> None:
    @app.get("/health", responses={200: {"description": "The process is up."}})
    async def health() -> Response:
        """Liveness: the process answers. Says which version serves and the last load error, if any."""
        current = holder.current
        return json_response(
            {
                "status": "ok",
                "model_name": settings.model_name,
                "model_version": current.version if current else None,
                "loading_version": holder.loading,
                "last_error": holder.last_error,
                "alias_refused": holder.alias_refused,
            }
        )

    @app.get("/ready", responses=NO_MODEL)
    async def ready() -> Response:
        """Readiness: 200 once a model is loaded, verified and warmed; 503 before."""
        current = holder.current
        if current is None:
            detail = f"loading v{holder.loading}" if holder.loading else holder.last_error or "not loaded yet"
            return json_response({"detail": detail}, 503)
        # The header from the model this body names (the guard would read the holder again, after a swap).
        return json_response(
            {"status": "ready", "model_version": current.version},
            headers={VERSION_HEADER: str(current.version)},
        )

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", response_model=ModelDescription, responses=NO_MODEL)
    async def model_info() -> Response:
        """The model in service: name, version, manifest digest, when it was loaded, its inputs."""
        current = holder.current
        if current is None:
            raise RequestError(503, holder.last_error or "no model loaded yet")
        return json_response(current.describe(), headers={VERSION_HEADER: str(current.version)})


def _add_admin_routes(app: FastAPI, holder: ModelHolder, token: str | None) -> None:
    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses={
            401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
            403: {"model": ErrorResponse, "description": "Admin endpoints are off: no token is configured."},
            500: {
                "model": ReloadResponse,
                "description": "The champion could not be loaded; the old model serves.",
            },
        },
    )
    async def reload(request: Request) -> Response:
        """Load the champion alias's version now (verify, warm, swap); answers when done.

        Needs `Authorization: Bearer <CT_SERVE_ADMIN_TOKEN>`.
        """
        refused = admin_refusal(token, request.headers.get("authorization", ""))
        if refused is not None:
            status, detail = refused
            challenge = {"www-authenticate": "Bearer"} if status == 401 else None
            return json_response({"detail": detail}, status, challenge)
        result = await asyncio.to_thread(holder.refresh, True)
        return json_response(result.as_dict(), 500 if result.status == "failed" else 200)


def _serve_openapi(app: FastAPI, holder: ModelHolder, max_rows: int) -> None:
    """The OpenAPI document, rebuilt when the model in service (whose signature it shows) changes."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        current = holder.current
        key = current.version if current else None
        if cache.get("for") != key or "document" not in cache:
            schema = current.schema.json_schema(max_rows) if current else None
            example = current.schema.example_body() if current else None
            cache["document"] = openapi_document(
                app.title, app.version, app.summary, app.routes, schema, example
            )
            cache["for"] = key
        return cache["document"]

    app.openapi = openapi  # type: ignore[method-assign]


def docs_assets() -> Path:
    """The folder of Swagger UI's and ReDoc's files, installed with the project (fastapi-offline)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed: it ships the files /docs and /redoc serve")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _add_docs_routes(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from files served by the app itself: they work offline."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=docs_assets()), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{DOCS_ASSETS_PATH}"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> Response:
        openapi, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> Response:
        openapi, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )


def create_app(settings: Settings) -> FastAPI:
    """The serving app for ``settings.model_name``; its lifespan loads the champion and starts the workers."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in server logs
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics)
    sink = _prediction_log(settings, metrics)
    predictor = Predictor(
        holder, settings.serve_max_body_bytes, settings.serve_max_rows, settings.serve_out_of_domain
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = MicroBatcher(
            settings.serve_max_batch_rows, settings.serve_batch_wait_ms / 1000, metrics, sink
        )
        batcher.start()
        predictor.batcher = batcher
        if sink:
            sink.start()
        poller = asyncio.get_running_loop().create_task(
            follow_champion(holder, settings.serve_poll_seconds), name="ct-follow-champion"
        )
        try:
            yield
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            predictor.batcher = None
            await batcher.stop()
            if sink:
                await asyncio.to_thread(sink.stop)

    app = FastAPI(
        title="continuous-training serving",
        version="1",
        summary=f"Predictions from the champion of {settings.model_name}; hot-swaps when the alias moves.",
        lifespan=lifespan,
        docs_url=None,  # served by _add_docs_routes from local files, not from a CDN
        redoc_url=None,
    )
    app.state.holder, app.state.metrics, app.state.prediction_log = holder, metrics, sink
    _add_error_handlers(app)
    _add_status_routes(app, settings, holder, metrics)
    token = settings.serve_admin_token.get_secret_value() if settings.serve_admin_token else None
    _add_admin_routes(app, holder, token)
    _serve_openapi(app, holder, settings.serve_max_rows)
    _add_docs_routes(app)
    app.add_middleware(
        Guard, holder=holder, metrics=metrics, max_body=settings.serve_max_body_bytes, predictor=predictor
    )
    return app


def wait_until_ready(client: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll ``GET /ready`` through an HTTP client until it answers 200; raise with the reason otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/ready")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise TimeoutError(f"serving not ready after {timeout_s:.0f} s: {response.json().get('detail')}")
        time.sleep(0.05)
