"""Request validation against an MLflow signature: both body forms, and every error names its field."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from pipelines.data.contract import ColumnSpec
from pipelines.data.features import FeatureEncoder, feature_matrix
from pipelines.model.signature import Field, InputSchema, OutOfDomainError, RequestError

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("double", "amount"),
            ColSpec("long", "age"),
            ColSpec("double", "avg_basket", required=False),
            ColSpec("string", "plan"),
        ]
    )
)
ROW = {"amount": 10.5, "age": 40, "avg_basket": None, "plan": "pro"}


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return InputSchema.from_signature(SIGNATURE)


def test_rows_and_columns_give_the_same_arrays(schema):
    by_rows, n = schema.parse({"rows": [ROW, {**ROW, "avg_basket": 3, "age": 41.0}]}, 10)
    by_columns, m = schema.parse(
        {
            "columns": {
                "amount": [10.5, 10.5],
                "age": [40, 41],
                "avg_basket": [None, 3],
                "plan": ["pro", "pro"],
            }
        },
        10,
    )
    assert n == m == 2
    for name in by_rows:
        np.testing.assert_array_equal(by_rows[name], by_columns[name])
    assert by_rows["age"].dtype == np.int64 and by_rows["amount"].dtype == np.float64
    assert np.isnan(by_rows["avg_basket"][0]) and by_rows["avg_basket"][1] == 3.0
    left_out, _ = schema.parse({"columns": {"amount": [1.0], "age": [1], "plan": ["x"]}}, 10)
    assert np.isnan(left_out["avg_basket"][0])  # an optional column may be left out


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ([ROW], 422, 'body must be a JSON object with "rows" or "columns"'),
        ({"rows": []}, 422, "rows: expected a non-empty array of objects"),
        ({"rows": [ROW] * 11}, 422, "rows: 11 rows, at most 10 per request"),
        ({"rows": [ROW, 5]}, 422, "rows[1]: expected an object"),
        ({"rows": [{**ROW, "amount": "1"}]}, 422, "rows[0].amount: expected number, got string"),
        ({"rows": [{**ROW, "amount": True}]}, 422, "rows[0].amount: expected number, got bool"),
        # Infinite in float32, where models compute: flag mode answered 200 with a null probability.
        (
            {"rows": [{**ROW, "amount": 1e39}]},
            422,
            "rows[0].amount: expected number, got 1e+39, beyond the largest a model computes with "
            "(float32: 3.403e+38)",
        ),
        (
            {"columns": {"amount": [-(10**40)], "age": [1], "plan": ["a"]}},
            422,
            "columns.amount[0]: expected number, got -1e+40, beyond the largest a model computes with "
            "(float32: 3.403e+38)",
        ),
        (
            {"rows": [{**ROW, "age": 2**64}]},
            422,
            "rows[0].age: expected integer, got an integer outside int64",
        ),
        ({"rows": [{**ROW, "age": 1.5}]}, 422, "rows[0].age: expected integer, got number"),
        ({"rows": [{**ROW, "plan": ["pro"]}]}, 422, "rows[0].plan: expected string, got array"),
        ({"rows": [{**ROW, "plan": None}]}, 422, "rows[0].plan: required field is null"),
        ({"rows": [{"amount": 1.0, "age": 1}]}, 422, "rows[0].plan: required field is missing"),
        ({"rows": [{**ROW, "zip": "x"}]}, 422, "rows[0].zip: unexpected field"),
        ({"columns": {"amount": [1.0], "age": [1]}}, 422, "columns.plan: required field is missing"),
        (
            {"columns": {"amount": [1.0], "age": [1, 2], "plan": ["a"]}},
            422,
            "columns.age: 2 values, the other columns have 1",
        ),
        (
            {"columns": {"amount": [1.0], "age": [1], "plan": [{}]}},
            422,
            "columns.plan[0]: expected string, got object",
        ),
        (
            {"columns": {"amount": 1.0, "age": [1], "plan": ["a"]}},
            422,
            "columns.amount: expected a non-empty array",
        ),
        ({"rows": [ROW], "columns": {}}, 422, 'send exactly one of "rows" or "columns"'),
        ({"inputs": [ROW]}, 422, 'unexpected field \'inputs\': send "rows" or "columns"'),
    ],
)
def test_each_problem_is_named(schema, payload, status, detail):
    with pytest.raises(RequestError) as caught:
        schema.parse(payload, 10)
    assert (caught.value.status, caught.value.message) == (status, detail)


def test_a_model_without_a_usable_signature_is_refused():
    with pytest.raises(ValueError, match="no input signature"):
        InputSchema.from_signature(None)
    with pytest.raises(ValueError, match="no column names"):
        InputSchema.from_signature(ModelSignature(inputs=Schema([ColSpec("double")])))


def test_the_encoder_on_request_arrays_equals_the_training_features(contract, clean_frame):
    frame = clean_frame.head(300).copy()
    frame.loc[frame.index[:5], "channel"] = "fax"  # unknown category: all indicators 0
    frame.loc[frame.index[5:9], "avg_basket"] = None
    expected = feature_matrix(frame, contract).to_numpy()
    encoder = FeatureEncoder(contract)
    columns = {name: frame[name].to_numpy() for name in contract.feature_columns}
    np.testing.assert_array_equal(encoder.matrix(columns, "float64"), expected)  # the pandas hash path
    small = np.vstack(
        [encoder.matrix({k: v[i : i + 7] for k, v in columns.items()}, "float64") for i in range(0, 300, 7)]
    )
    np.testing.assert_array_equal(small, expected)  # the per-request dictionary path


# --- the model's data contract: domains and nullability on top of the signature's names and types ---------


def test_the_contract_gives_domains_and_nullability_to_the_signatures_columns(contract):
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "age"),
                ColSpec("double", "avg_basket"),  # required in the signature, nullable in the contract
                ColSpec("string", "channel", required=False),  # the other way round
                ColSpec("double", "extra"),  # not in the contract: the signature alone
            ]
        )
    )
    schema = InputSchema.from_signature(signature, contract)
    by_name = schema.by_name
    assert (by_name["age"].minimum, by_name["age"].maximum, by_name["age"].required) == (18, 100, True)
    assert by_name["avg_basket"].required is False and by_name["channel"].required is True
    assert by_name["channel"].allowed == ("web", "app", "store")
    assert by_name["extra"] == Field("extra", "number", True)
    assert InputSchema.from_signature(signature).domains == {}  # no contract: no domain
    row = {"age": 40, "avg_basket": None, "channel": "web", "extra": 1.0}
    assert schema.parse({"rows": [row]}, 1)[1] == 1
    with pytest.raises(OutOfDomainError, match=r"rows\[0\]\.age: 0 is below the minimum 18"):
        schema.parse({"rows": [{**row, "age": 0}]}, 1)  # parse refuses what the contract does not allow


def _with_category(contract, allowed: list) -> object:
    columns = {**contract.columns, "tier": ColumnSpec(type="category", allowed=allowed, role="feature")}
    return contract.model_copy(update={"columns": columns})


def test_an_int_category_is_compared_as_ints(contract):
    """An int-valued category is int64 in the data, so ``long`` in the signature: "1" and true are not 1."""
    schema = InputSchema.from_signature(
        ModelSignature(inputs=Schema([ColSpec("long", "tier")])), _with_category(contract, [1, 2, 3])
    )
    assert schema.parse({"columns": {"tier": [1, 3, 2.0]}}, 3)[0]["tier"].tolist() == [1, 3, 2]
    for value, detail in [
        (4, "rows[0].tier: 4 is not one of 1, 2, 3"),
        ("1", "rows[0].tier: expected integer, got string"),
        (True, "rows[0].tier: expected integer, got bool"),
    ]:
        with pytest.raises(RequestError) as caught:
            schema.parse({"rows": [{"tier": value}]}, 1)
        assert caught.value.message == detail


def test_a_string_category_of_digits_takes_strings_only(contract):
    schema = InputSchema.from_signature(
        ModelSignature(inputs=Schema([ColSpec("string", "tier")])), _with_category(contract, ["1", "2"])
    )
    assert schema.parse({"rows": [{"tier": "2"}]}, 1)[1] == 1
    with pytest.raises(OutOfDomainError, match=r"rows\[0\]\.tier: '3' is not one of '1', '2'"):
        schema.parse({"rows": [{"tier": "3"}]}, 1)


def test_a_contract_whose_values_no_request_can_match_refuses_the_model(contract):
    """Int allowed values for a column the signature types as string: no request could pass."""
    signature = ModelSignature(inputs=Schema([ColSpec("string", "tier")]))
    with pytest.raises(ValueError, match="'tier' is string in the signature, but the contract allows only"):
        InputSchema.from_signature(signature, _with_category(contract, [1, 2]))
