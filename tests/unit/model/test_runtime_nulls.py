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


def test_a_model_whose_signature_takes_32_bit_columns_is_served(tmp_path):
    """MLflow's schema check refuses a 64-bit column for an ``integer`` (int32) or ``float`` (float32) input:
    such a model failed its warm-up and was refused, every version of it."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            assert model_input["n"].dtype == np.int32 and model_input["v"].dtype == np.float32
            return pd.DataFrame({"probability": np.full(len(model_input), 0.3)})

    signature = ModelSignature(inputs=Schema([ColSpec("integer", "n"), ColSpec("float", "v")]))
    mlflow.pyfunc.save_model(str(tmp_path / "m"), python_model=Constant(), signature=signature)
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    schema = InputSchema.from_signature(pyfunc.metadata.signature)
    served = ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=schema, pyfunc=pyfunc)
    served.warm_up(8)
    parsed = schema.parse_request({"rows": [{"n": 3, "v": 1.5}, {"n": -4, "v": 2}]}, 10)
    assert served.predict(parsed.columns)[0].tolist() == pytest.approx([0.3, 0.3])
    too_big = schema.parse_request({"columns": {"n": [1, 2**31], "v": [0.0, 0.0]}}, 10)
    with pytest.raises(RequestError) as refused:
        served.predict(too_big.columns)
    assert (refused.value.status, str(refused.value)) == (
        422,
        "n: 2147483648 is outside int32, the type this model's signature gives the field",
    )


def test_a_row_the_model_gives_no_probability_is_the_requests_422():
    """A value within float32 but far outside the training data overflowed in the model (1e38 scaled by a
    spread of 0.2): flag mode answered 200 with a null probability."""

    class Overflows:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"probability": np.where(frame["x"] > 1e30, np.nan, 0.5)})

    schema = InputSchema([Field("x", "number", True)])
    model = ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=schema, pyfunc=Overflows())
    parsed = schema.parse_request({"columns": {"x": [1.0, 1e38, 2.0, 3e38]}}, 10)
    with pytest.raises(RequestError) as refused:
        model.predict(parsed.columns)
    assert refused.value.status == 422 and str(refused.value).startswith(
        "row(s) 1, 3: the model gave no probability"
    )
    assert model.predict(schema.parse_request({"columns": {"x": [1.0]}}, 10).columns)[0].tolist() == [0.5]
