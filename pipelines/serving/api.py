"""The HTTP API's shapes: response models, JSON responses, and the OpenAPI document of the model in service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

VERSION_HEADER = "x-model-version"
PREDICT_PATH = "/v1/predict"
DOCS_PATH, REDOC_PATH, DOCS_ASSETS_PATH = "/docs", "/redoc", "/docs/assets"
ROUTES = frozenset(
    {
        PREDICT_PATH,
        "/health",
        "/ready",
        "/metrics",
        "/v1/model",
        "/admin/reload",
        "/openapi.json",
        DOCS_PATH,
        REDOC_PATH,
    }
)


class Prediction(BaseModel):
    probability: float = Field(ge=0, le=1)
    label: int
    out_of_domain: list[str] | None = Field(
        default=None,
        description="Only with CT_SERVE_OUT_OF_DOMAIN=flag, and only on a row that has them: the fields whose "
        "value is outside the data contract (not an allowed value, or beyond its min or max). The row "
        "is scored all the same; the model never saw such values in training.",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str
    model_version: int
    request_id: str = Field(
        description="The X-Request-Id header's value when the request sent one, else a new one (32 hex "
        "digits); also in the response's X-Request-Id header and in each of the request's rows of the "
        "prediction log."
    )
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


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response (orjson) with some more headers."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _predict() -> None:
    """Score rows (`{"rows": [{...}]}`) or columns (`{"columns": {"field": [...]}}`).

    Each row gets its `probability` and `label`, in input order, from the model in service when the
    request arrived. Every value must also be inside the model's data contract (an allowed value, within
    min and max): one outside is a 422, or with `CT_SERVE_OUT_OF_DOMAIN=flag` its row is scored and says
    which fields were outside (`out_of_domain`).
    """


# How POST /v1/predict is documented. It is answered by the app's outer ASGI layer
# (:class:`pipelines.serving.guard.Guard`), so this route is described, never mounted.
PREDICT_ROUTE = APIRoute(
    PREDICT_PATH,
    _predict,
    methods=["POST"],
    response_model=PredictResponse,
    responses={
        400: {"model": ErrorResponse, "description": "Body is not valid JSON (or not UTF-8)."},
        413: {"model": ErrorResponse, "description": "Body over the size limit."},
        415: {"model": ErrorResponse, "description": "Content-Type is not application/json."},
        422: {
            "model": ErrorResponse,
            "description": "A field is missing, extra or of the wrong type, or (CT_SERVE_OUT_OF_DOMAIN=reject, "
            "the default) a value is outside the data contract: the detail names the field, the row, the "
            "value and what is allowed, e.g. `rows[0].channel: 'abc' is not one of 'web', 'app', 'store'`.",
        },
        503: {"model": ErrorResponse, "description": "No model loaded yet."},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}},
    name="predict",
)

_VERSION_HEADER_DOC = {
    "description": "Version of the model that answered (empty before one is loaded).",
    "schema": {"type": "string"},
}


def openapi_document(
    title: str,
    version: str,
    summary: str | None,
    routes: list[Any],
    request_schema: dict[str, Any] | None,
    request_example: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI document: the app's routes, /v1/predict with ``request_schema`` (the model's signature
    and contract) and ``request_example`` (a body that passes: what "Try it out" sends)."""
    document = get_openapi(title=title, version=version, summary=summary, routes=[PREDICT_ROUTE, *routes])
    body = document["paths"][PREDICT_PATH]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = request_schema or {
        "type": "object",
        "description": "The model's signature, once one is loaded.",
    }
    if request_example is not None:
        body["example"] = request_example
    for path in document["paths"].values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Model-Version"] = _VERSION_HEADER_DOC
    return jsonable_encoder(document)
