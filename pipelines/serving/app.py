"""The serving app: ``models:/<name>@champion``, followed as the alias moves, behind a small strict API.

Routes: ``POST /v1/predict``, ``GET /health``, ``GET /ready``, ``GET /metrics``, ``GET /v1/model``,
``POST /admin/reload`` (bearer token), and the OpenAPI document at ``/openapi.json`` (``/docs``), whose
request schema is the signature of the model in service. Every response carries ``X-Model-Version``.
Errors are JSON ``{"detail": ...}``; no stack trace reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from pipelines.serving.batcher import MicroBatcher
from pipelines.serving.holder import ModelHolder
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.predlog import PredictionLog
from pipelines.serving.runtime import ServedModel
from pipelines.serving.schema import RequestError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

VERSION_HEADER = "x-model-version"
ROUTES = frozenset(
    {"/v1/predict", "/health", "/ready", "/metrics", "/v1/model", "/admin/reload", "/openapi.json", "/docs"}
)


class Prediction(BaseModel):
    probability: float = Field(ge=0, le=1)
    label: int


class PredictResponse(BaseModel):
    model_name: str
    model_version: int
    predictions: list[Prediction] = Field(description="One per input row, in input order.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, naming the field and row where there is one.")


class ModelInput(BaseModel):
    name: str
    type: str
    required: bool


class ModelDescription(BaseModel):
    name: str
    version: int
    sha256: str = Field(description="Digest of the version's sha256 file manifest, stored at registration.")
    run_id: str | None
    loaded_at: str
    load_seconds: float
    runtime: str
    inputs: list[ModelInput]


class ReloadResponse(BaseModel):
    status: str = Field(description="swapped, unchanged, failed or no_champion")
    version: int | None = Field(description="The champion alias's version.")
    serving: int | None = Field(description="The version in service after the reload.")
    error: str | None


def _json(payload: Any, status: int = 200, version: int | None = None, **headers: str) -> Response:
    response = Response(orjson.dumps(payload), status_code=status, media_type="application/json")
    if version is not None:
        response.headers[VERSION_HEADER] = str(version)
    for key, value in headers.items():
        response.headers[key.replace("_", "-")] = value
    return response


def _answer(model: ServedModel, probability: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version,
        "predictions": [
            {"probability": p, "label": lbl}
            for p, lbl in zip(probability.tolist(), label.tolist(), strict=True)
        ],
    }


async def _read_body(receive: Any, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes even when no Content-Length was sent."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Predictor:
    """``POST /v1/predict`` at the ASGI level: no routing, no Request object, no DataFrame.

    Content type, size, JSON and the signature are checked in that order; the rows are then scored on
    the model in service at the moment the request arrived, in a micro-batch.
    """

    def __init__(self, settings: Settings, holder: ModelHolder):
        self.settings, self.holder = settings, holder
        self.batcher: MicroBatcher | None = None

    async def __call__(self, headers: dict[bytes, bytes], receive: Any) -> tuple[int, bytes, int | None]:
        """Status, JSON body and the version that answered (None for an error before a model was read)."""
        batcher = self.batcher
        assert batcher is not None, "the app's lifespan has not started"
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            detail = f"Content-Type must be application/json, got {content_type or 'none'}"
            return 415, orjson.dumps({"detail": detail}), None
        batcher.arriving += 1
        queued = False
        model = None
        try:
            body = await _read_body(receive, self.settings.serve_max_body_bytes)
            if not body:
                raise RequestError(400, "empty body: send a JSON object")
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise RequestError(400, f"body is not valid JSON: {exc}") from None
            model = self.holder.current  # this request is scored on this model, whatever swaps meanwhile
            if model is None:
                raise RequestError(503, self.holder.last_error or "no model loaded yet")
            columns, rows = model.schema.parse(payload, self.settings.serve_max_rows)
            batcher.arriving -= 1
            queued = True
            probability, label = await batcher.predict(model, columns, rows)
        except RequestError as exc:
            return exc.status, orjson.dumps({"detail": exc.message}), model.version if model else None
        finally:
            if not queued:
                batcher.arriving -= 1
        return 200, orjson.dumps(_answer(model, probability, label)), model.version


class _Guard:
    """Outermost ASGI layer: size limit from Content-Length, metrics, the version header, no tracebacks."""

    def __init__(
        self, app: Any, holder: ModelHolder, metrics: ServingMetrics, max_body: int, predictor: Predictor
    ):
        self.app, self.holder, self.metrics, self.max_body = app, holder, metrics, max_body
        self.predictor = predictor

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = 500
        sent = False

        async def send_wrapper(message: dict) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
                headers = message.setdefault("headers", [])
                if not any(k == b"x-model-version" for k, _ in headers):
                    current = self.holder.current
                    headers.append((b"x-model-version", str(current.version if current else "").encode()))
            await send(message)

        try:
            headers = dict(scope.get("headers", ()))
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                bad = not length.isdigit()
                detail = (
                    "Content-Length is not a number" if bad else f"request body over {self.max_body} bytes"
                )
                await _json({"detail": detail}, 400 if bad else 413)(scope, receive, send_wrapper)
            elif route == "/v1/predict" and scope["method"] == "POST":
                code, body, version = await self.predictor(headers, receive)
                response_headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                if version is not None:
                    response_headers.append((b"x-model-version", str(version).encode()))
                await send_wrapper(
                    {"type": "http.response.start", "status": code, "headers": response_headers}
                )
                await send_wrapper({"type": "http.response.body", "body": body})
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if not sent:
                await _json({"detail": "internal error; the server log has the details"}, 500)(
                    scope, receive, send_wrapper
                )
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_app(settings: Settings) -> FastAPI:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in server logs
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics)
    sink = (
        PredictionLog(
            settings.prediction_log_uri,
            settings.model_name,
            metrics,
            settings.prediction_log_flush_rows,
            settings.prediction_log_flush_seconds,
            settings.prediction_log_max_buffer_rows,
        )
        if settings.prediction_log
        else None
    )
    token = settings.serve_admin_token.get_secret_value() if settings.serve_admin_token else None
    predictor = Predictor(settings, holder)
    state: dict[str, Any] = {}

    async def follow_champion() -> None:
        """Load at start, then poll the alias; an admin reload does the same at once."""
        while True:
            try:
                await asyncio.to_thread(holder.refresh)
            except Exception:  # the poller must outlive any one failure
                log.exception("checking the champion failed")
            if not settings.serve_poll_seconds:
                return
            await asyncio.sleep(settings.serve_poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = MicroBatcher(
            settings.serve_max_batch_rows, settings.serve_batch_wait_ms / 1000, metrics, sink
        )
        batcher.start()
        predictor.batcher = batcher
        if sink:
            sink.start()
        poller = asyncio.get_running_loop().create_task(follow_champion(), name="ct-follow-champion")
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
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.prediction_log = sink

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"detail": str(exc.detail)}, exc.status_code, **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _json({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return _json({"detail": exc.message}, exc.status)

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Body is not valid JSON (or not UTF-8)."},
            413: {"model": ErrorResponse, "description": "Body over the size limit."},
            415: {"model": ErrorResponse, "description": "Content-Type is not application/json."},
            422: {"model": ErrorResponse, "description": "A field is missing, extra or of the wrong type."},
            503: {"model": ErrorResponse, "description": "No model loaded yet."},
        },
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}},
    )
    async def predict(request: Request) -> Response:
        """Score rows (`{"rows": [{...}]}`) or columns (`{"columns": {"field": [...]}}`).

        The app's outer layer answers this route itself (the fast path); this handler serves the same
        function when the app is mounted under another ASGI app.
        """
        code, body, version = await predictor(dict(request.headers.raw), request.receive)
        response = Response(body, status_code=code, media_type="application/json")
        if version is not None:
            response.headers[VERSION_HEADER] = str(version)
        return response

    @app.get("/health", responses={200: {"description": "The process is up."}})
    async def health() -> Response:
        """Liveness: the process answers. Says which version serves and the last load error, if any."""
        current = holder.current
        return _json(
            {
                "status": "ok",
                "model_name": settings.model_name,
                "model_version": current.version if current else None,
                "loading_version": holder.loading,
                "last_error": holder.last_error,
            }
        )

    @app.get("/ready", responses={503: {"model": ErrorResponse, "description": "No model in service yet."}})
    async def ready() -> Response:
        """Readiness: 200 once a model is loaded, verified and warmed; 503 before."""
        current = holder.current
        if current is None:
            detail = f"loading v{holder.loading}" if holder.loading else holder.last_error or "not loaded yet"
            return _json({"detail": detail}, 503)
        return _json({"status": "ready", "model_version": current.version})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/model",
        response_model=ModelDescription,
        responses={503: {"model": ErrorResponse, "description": "No model in service yet."}},
    )
    async def model_info() -> Response:
        """The model in service: name, version, manifest digest, when it was loaded, its inputs."""
        current = holder.current
        if current is None:
            raise RequestError(503, holder.last_error or "no model loaded yet")
        return _json(current.describe())

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
        if token is None:
            raise RequestError(403, "admin endpoints are disabled: set CT_SERVE_ADMIN_TOKEN")
        given = request.headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), token.encode()):
            return _json({"detail": "missing or wrong bearer token"}, 401, www_authenticate="Bearer")
        result = await asyncio.to_thread(holder.refresh, True)
        return _json(result.as_dict(), 500 if result.status == "failed" else 200)

    def openapi() -> dict[str, Any]:
        current = holder.current
        key = current.version if current else None
        if state.get("openapi_for") == key and "openapi" in state:
            return state["openapi"]
        document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        body = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
        body["schema"] = (
            current.schema.json_schema(settings.serve_max_rows)
            if current
            else {"type": "object", "description": "The model's signature, once one is loaded."}
        )
        header = {
            "description": "Version of the model that answered (empty before one is loaded).",
            "schema": {"type": "string"},
        }
        for path in document["paths"].values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {})["X-Model-Version"] = header
        state["openapi"], state["openapi_for"] = jsonable_encoder(document), key
        return state["openapi"]

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        _Guard, holder=holder, metrics=metrics, max_body=settings.serve_max_body_bytes, predictor=predictor
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
