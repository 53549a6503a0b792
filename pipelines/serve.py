"""Serve: a FastAPI app that answers predictions from ``models:/<name>@champion``.

``GET /health`` says whether a model is loaded and which version; ``POST /predict`` takes JSON rows of the
contract's raw feature columns. Input that breaks the model's signature gets a 422 naming the problem.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

from pipelines import integrity, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)

MAX_ROWS = 10_000


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    model: Any
    loaded_at: str


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_ROWS, description="Rows of raw feature values."
    )


class Prediction(BaseModel):
    probability: float
    label: int


class PredictResponse(BaseModel):
    model_name: str
    model_version: int
    predictions: list[Prediction]


class ModelHolder:
    """The model in service; a failed load leaves the previous one in place."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: str | None = None

    def load_champion(self) -> LoadedModel | None:
        client = tracking.configure(self.settings)
        name = self.settings.model_name
        champion = tracking.version_by_alias(client, name, tracking.CHAMPION)
        if champion is None:
            self.last_error = f"model {name} has no champion yet"
            log.warning(self.last_error)
            return self.current
        if self.current and self.current.version == int(champion.version):
            return self.current
        try:
            with tempfile.TemporaryDirectory(prefix="ct-serve-") as tmp:
                # Only files that match the manifest stored at registration are loaded.
                model, _ = integrity.load_verified(client, name, champion.version, tmp)
        except Exception as exc:  # keep serving the old model; say why the new one failed
            self.last_error = f"loading {name} v{champion.version} failed: {exc}"
            log.error(self.last_error)
            return self.current
        loaded = LoadedModel(
            name, int(champion.version), model, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )
        self.current = loaded  # one reference swap: a request holds whichever model it read
        self.last_error = None
        log.info("serving %s v%s", name, loaded.version)
        return loaded


def create_app(settings: Settings) -> FastAPI:
    holder = ModelHolder(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.load_champion()
        yield

    app = FastAPI(title="continuous-training serving", version="1", lifespan=lifespan)
    app.state.holder = holder

    @app.get("/health")
    def health() -> dict[str, Any]:
        current = holder.current
        return {
            "status": "ok" if current else "no_model",
            "model_name": settings.model_name,
            "model_version": current.version if current else None,
            "loaded_at": current.loaded_at if current else None,
            "last_error": holder.last_error,
        }

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest, response: Response) -> PredictResponse:
        from mlflow.exceptions import MlflowException

        current = holder.current
        if current is None:
            raise HTTPException(status_code=503, detail=holder.last_error or "no model loaded")
        try:
            output = current.model.predict(pd.DataFrame.from_records(request.rows))
        except MlflowException as exc:
            raise HTTPException(
                status_code=422, detail=f"input does not match the model signature: {exc.message}"
            ) from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise HTTPException(status_code=422, detail=f"input cannot be scored: {exc}") from exc
        response.headers["X-Model-Version"] = str(current.version)
        return PredictResponse(
            model_name=current.name,
            model_version=current.version,
            predictions=[
                Prediction(probability=p, label=lbl)
                for p, lbl in zip(output["probability"], output["label"], strict=True)
            ],
        )

    return app
