"""The app's outermost ASGI layer: size limit, ``POST /v1/predict``, metrics, the version header, no tracebacks.

Every request passes here. ``POST /v1/predict`` is answered here directly (the fast path: no routing, no
Request object); everything else goes on to the FastAPI app. Each response gets ``X-Model-Version``, each
request is counted and timed by route, and an unexpected error is logged with its trace and answered
with a 500 that carries none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pipelines.serving.api import PREDICT_PATH, ROUTES, VERSION_HEADER, json_response
from pipelines.serving.holder import ModelHolder
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.predict import REQUEST_ID_HEADER, Predictor

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_HEADER = VERSION_HEADER.encode()


def route_of(scope: Scope) -> str:
    """The app's route a request is for ("other" for none), wherever the app is mounted."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    path = path.rstrip("/") or "/"  # /v1/predict/ is /v1/predict
    return path if path in ROUTES else "other"


def length_refusal(headers: dict[bytes, bytes], max_body: int) -> tuple[int, str] | None:
    """A 400 for a Content-Length that is not a number, a 413 for one over ``max_body``; else None."""
    length = headers.get(b"content-length")
    if length is None:
        return None
    if not length.isdigit():
        return 400, "Content-Length is not a number"
    if int(length) > max_body:
        return 413, f"request body over {max_body} bytes"
    return None


class Guard:
    def __init__(
        self, app: Any, holder: ModelHolder, metrics: ServingMetrics, max_body: int, predictor: Predictor
    ):
        self.app, self.holder, self.metrics, self.max_body = app, holder, metrics, max_body
        self.predictor = predictor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_of(scope)
        status, sent = 500, False

        async def send_with_version(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = message["status"], True
                headers = message.setdefault("headers", [])
                if not any(key == _HEADER for key, _ in headers):
                    current = self.holder.current
                    headers.append((_HEADER, str(current.version if current else "").encode()))
            await send(message)

        try:
            await self._dispatch(scope, receive, send_with_version, route)
        except Exception:  # noqa: BLE001 - the server's boundary: logged with its trace, answered with a 500
            log.exception("unhandled error on %s %s", scope.get("method"), scope["path"])
            if not sent:
                detail = {"detail": "internal error; the server log has the details"}
                await json_response(detail, 500)(scope, receive, send_with_version)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        headers = dict(scope.get("headers", ()))
        if (refused := length_refusal(headers, self.max_body)) is not None:
            await json_response({"detail": refused[1]}, refused[0])(scope, receive, send)
        elif route == PREDICT_PATH and scope["method"] != "POST":
            await json_response({"detail": "Method Not Allowed"}, 405, {"allow": "POST"})(
                scope, receive, send
            )
        elif route == PREDICT_PATH:
            code, body, version, request = await self.predictor(headers, receive)
            response_headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER, request.encode()),
            ]
            if version is not None:
                response_headers.append((_HEADER, str(version).encode()))
            await send({"type": "http.response.start", "status": code, "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await self.app(scope, receive, send)
