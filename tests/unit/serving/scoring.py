"""Small real models for the serving unit tests: a pyfunc-shaped scorer and a ServedModel around it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.model.runtime import ServedModel
from pipelines.model.signature import Field, InputSchema

SCHEMA = InputSchema([Field("x", "number", True)])


class Logistic:
    """A model as a pyfunc presents itself: ``predict`` on a DataFrame gives a ``probability`` column."""

    def __init__(self, weight: float = 1.0, fail: Exception | None = None):
        self.weight, self.fail, self.calls = weight, fail, 0

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return pd.DataFrame({"probability": 1 / (1 + np.exp(-self.weight * frame["x"].to_numpy()))})


def served(version: int, weight: float = 1.0) -> ServedModel:
    return ServedModel(
        name="m", version=version, sha256="0" * 64, run_id=None, schema=SCHEMA, pyfunc=Logistic(weight)
    )


def columns(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype="float64")}
