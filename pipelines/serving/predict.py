"""``POST /v1/predict`` at the ASGI level: no routing, no Request object, no DataFrame.

Content type, size, JSON, the model's signature and its data contract's domains are checked in that order;
the rows are then scored on the model in service at the moment the request arrived, in a micro-batch
(:mod:`pipelines.serving.batcher`). A value outside the contract is refused (422), or with
``CT_SERVE_OUT_OF_DOMAIN=flag`` scored and its row marked ``out_of_domain``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from pipelines.model.runtime import ServedModel
from pipelines.model.signature import OutOfDomain, OutOfDomainError, RequestError
from pipelines.serving.batcher import MicroBatcher
from pipelines.serving.holder import ModelHolder

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(headers: dict[bytes, bytes]) -> str:
    """The client's ``X-Request-Id`` when it is 1-128 of ``A-Za-z0-9._:-``, else a new random one."""
    sent = headers.get(REQUEST_ID_HEADER)
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent.decode()
    return uuid.uuid4().hex


def answer(
    model: ServedModel,
    probability: np.ndarray,
    label: np.ndarray,
    out_of_domain: dict[int, list[str]] | None = None,
    request: str | None = None,
) -> dict[str, Any]:
    """The response body: who answered, the request's id, and one prediction per row in input order.

    ``out_of_domain`` (flag mode): row index -> the fields outside the contract, carried by that row.
    """
    predictions = [
        {"probability": p, "label": lbl} for p, lbl in zip(probability.tolist(), label.tolist(), strict=True)
    ]
    for index, fields in (out_of_domain or {}).items():
        predictions[index]["out_of_domain"] = fields
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request is not None:
        body["request_id"] = request
    return body | {"predictions": predictions}


async def read_body(receive: Any, limit: int) -> bytes:
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


def parse_json(body: bytes) -> Any:
    """The JSON payload of a body, or a 400 naming what is wrong with it."""
    if not body:
        raise RequestError(400, "empty body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None


def content_type_error(headers: dict[bytes, bytes]) -> RequestError | None:
    """A 415 unless the request says its body is JSON."""
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        return None
    return RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'}")


class Predictor:
    """Answers ``POST /v1/predict``: (status, JSON body, the version that answered, the request's id)."""

    def __init__(
        self, holder: ModelHolder, max_body_bytes: int, max_rows: int, out_of_domain: OutOfDomain = "reject"
    ):
        self.holder, self.max_body_bytes, self.max_rows = holder, max_body_bytes, max_rows
        self.out_of_domain = out_of_domain
        self.batcher: MicroBatcher | None = None

    async def __call__(self, headers: dict[bytes, bytes], receive: Any) -> tuple[int, bytes, int | None, str]:
        """The version is None for an error before a model was read."""
        batcher = self.batcher
        rid = request_id(headers)
        if batcher is None:  # before the app's lifespan started, or after it began to stop
            return (
                503,
                orjson.dumps({"detail": "the server is not serving: starting or shutting down"}),
                None,
                rid,
            )
        if (refused := content_type_error(headers)) is not None:
            return refused.status, orjson.dumps({"detail": refused.message}), None, rid
        model = None
        with batcher.arrival() as arrival:
            try:
                payload = parse_json(await read_body(receive, self.max_body_bytes))
                model = self.holder.current  # this request is scored on this model, whatever swaps meanwhile
                if model is None:
                    raise RequestError(503, self.holder.last_error or "no model loaded yet")
                parsed = model.schema.parse_request(payload, self.max_rows, self.out_of_domain)
                arrival.queued()
                probability, label = await batcher.predict(
                    model, parsed.columns, parsed.rows, rid, parsed.keys
                )
            except RequestError as exc:
                if isinstance(exc, OutOfDomainError):
                    self._count_out_of_domain(exc.rows_by_field, "refused")
                version = model.version if model else None
                return exc.status, orjson.dumps({"detail": exc.message}), version, rid
            except Exception:  # noqa: BLE001 - the request's boundary: logged with its id and trace, a 500
                version = model.version if model else None
                log.exception("request %s failed on model version %s", rid, version)
                detail = f"internal error (request {rid}); the server log has the details"
                return 500, orjson.dumps({"detail": detail}), version, rid
        if parsed.out_of_domain:  # counted once scored: a request that failed after parsing served nothing
            flagged = Counter(field for fields in parsed.out_of_domain.values() for field in fields)
            self._count_out_of_domain(flagged, "flagged")
        body = answer(model, probability, label, parsed.out_of_domain, rid)
        return 200, orjson.dumps(body), model.version, rid

    def _count_out_of_domain(self, rows_by_field: Mapping[str, int], action: str) -> None:
        for field, rows in rows_by_field.items():
            self.holder.metrics.out_of_domain_rows.labels(field, action).inc(rows)
