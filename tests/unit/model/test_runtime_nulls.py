"""A model of MLflow's own kind (scored through pyfunc): nulls in an optional integer field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.model.runtime import ServedModel
from pipelines.model.signature import Field, InputSchema, RequestError


class Seen:
    """Records the frame MLflow's pyfunc would be given."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.frames.append(frame)
        return pd.DataFrame({"probability": np.full(len(frame), 0.5)})


@pytest.fixture
def model() -> ServedModel:
    schema = InputSchema([Field("x", "number", True), Field("n", "integer", False)])
    return ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=schema, pyfunc=Seen())


def test_an_optional_integer_null_in_every_row_is_left_out(model):
    schema = model.schema
    parsed = schema.parse_request({"rows": [{"x": 1.0, "n": None}, {"x": 2.0}]}, 10)
    probability, _ = model.predict(parsed.columns)
    assert probability.tolist() == [0.5, 0.5] and list(model.pyfunc.frames[-1].columns) == ["x"]


def test_an_optional_integer_null_in_some_rows_is_the_requests_422_naming_the_field(model):
    parsed = model.schema.parse_request({"rows": [{"x": 1.0, "n": 3}, {"x": 2.0, "n": None}]}, 10)
    with pytest.raises(RequestError) as refused:
        model.predict(parsed.columns)
    assert refused.value.status == 422 and str(refused.value).startswith("n: null in 1 of 2 rows")
    assert model.pyfunc.frames == []


def test_integers_sent_whole_reach_the_model_as_integers(model):
    parsed = model.schema.parse_request({"rows": [{"x": 1.0, "n": 3}]}, 10)
    model.predict(parsed.columns)
    assert model.pyfunc.frames[-1]["n"].dtype == np.int64
