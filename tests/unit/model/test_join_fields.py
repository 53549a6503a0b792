"""A request may send the contract's entity id and event time with each row: checked, never given to the model."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.model.signature import Field, InputSchema, JoinFields, RequestError

FIELDS = [Field("age", "integer", True, None, 18, 100), Field("plan", "string", True, ("basic", "pro"))]
JOIN = JoinFields("customer_id", "string", "event_ts")
ROW = {"age": 40, "plan": "basic"}


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return InputSchema(FIELDS, join=JOIN)


def _error(schema: InputSchema, payload: dict) -> str:
    with pytest.raises(RequestError) as caught:
        schema.parse_request(payload, 100)
    assert caught.value.status == 422
    return caught.value.message


def test_rows_without_join_fields_parse_as_before_with_no_keys(schema):
    parsed = schema.parse_request({"rows": [ROW, ROW]}, 100)
    assert parsed.keys is None and set(parsed.columns) == {"age", "plan"}


def test_rows_carry_entity_and_event_time_as_utc_apart_from_the_model_inputs(schema):
    rows = [
        {**ROW, "customer_id": "c1", "event_ts": "2026-11-30T10:00:00Z"},
        ROW,  # this one is unjoinable
        {**ROW, "customer_id": "c3", "event_ts": "2026-11-30T12:30:00+02:00"},
        {**ROW, "customer_id": "c4", "event_ts": "2026-11-30t10:00:00.5z"},  # RFC 3339 allows lower case
    ]
    parsed = schema.parse_request({"rows": rows}, 100)
    assert set(parsed.columns) == {"age", "plan"}  # never given to the model
    assert parsed.keys.entity_id.tolist() == ["c1", None, "c3", "c4"]
    assert parsed.keys.event_time.tolist()[0] == np.datetime64("2026-11-30T10:00:00", "us").item()
    assert np.isnat(parsed.keys.event_time[1])
    assert parsed.keys.event_time[2] == np.datetime64("2026-11-30T10:30:00", "us")  # +02:00 read as UTC
    assert parsed.keys.event_time[3] == np.datetime64("2026-11-30T10:00:00.5", "us")


def test_the_columns_form_takes_them_too(schema):
    columns = {"age": [40, 41], "plan": ["basic", "pro"], "customer_id": ["a", None]}
    parsed = schema.parse_request({"columns": columns}, 100)
    assert parsed.keys.entity_id.tolist() == ["a", None] and np.isnat(parsed.keys.event_time).all()
    # A join column sent as null is none sent, as an optional feature column sent as null is (it was a 422).
    parsed = schema.parse_request({"columns": {"age": [40], "plan": ["basic"], "customer_id": None}}, 100)
    assert parsed.keys is None and parsed.rows == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"rows": [{**ROW, "event_ts": "2026-11-30T10:00:00"}]},
            "rows[0].event_ts: '2026-11-30T10:00:00' has no UTC offset",
        ),
        (
            {"rows": [{**ROW, "event_ts": "0001-01-01T00:00:00+01:00"}]},
            "rows[0].event_ts: '0001-01-01T00:00:00+01:00' is out of range in UTC",
        ),
        (
            {"rows": [{**ROW, "event_ts": "9999-12-31T23:30:00-01:00"}]},
            "rows[0].event_ts: '9999-12-31T23:30:00-01:00' is out of range in UTC",
        ),
        (
            {"rows": [{**ROW, "event_ts": "yesterday"}]},
            "rows[0].event_ts: 'yesterday' is not an RFC 3339 date-time",
        ),
        *(  # ISO 8601 forms that are not RFC 3339 (Python's fromisoformat reads them all)
            (
                {"rows": [{**ROW, "event_ts": text}]},
                f"rows[0].event_ts: '{text}' is not an RFC 3339 date-time",
            )
            for text in ("2026-W48-1T00:00:00Z", "20261130T100000Z", "2026-11-30T10Z", "2026-11-30T10:00Z")
        ),
        (
            {"rows": [{**ROW, "event_ts": "2026-13-30T10:00:00Z"}]},
            "rows[0].event_ts: '2026-13-30T10:00:00Z' is not an RFC 3339 date-time",
        ),
        (
            {"rows": [{**ROW, "event_ts": 1764496800}]},
            "rows[0].event_ts: expected an RFC 3339 date-time string, got int",
        ),
        (
            {"rows": [{**ROW, "customer_id": 7}]},
            "rows[0].customer_id: expected string (the entity id), got integer",
        ),
        (
            {"columns": {"age": [40], "plan": ["pro"], "customer_id": ["a", "b"]}},
            "columns.customer_id: 2 values, the other columns have 1",
        ),
        (
            {"columns": {"age": [40], "plan": ["pro"], "event_ts": ["x"]}},
            "columns.event_ts[0]: 'x' is not an RFC 3339",
        ),
        ({"rows": [{**ROW, "customer": "c1"}]}, "rows[0].customer: unexpected field"),
    ],
)
def test_a_bad_join_field_is_a_422_naming_it(schema, payload, message):
    assert _error(schema, payload).startswith(message)


def test_an_integer_entity_id_is_logged_as_text():
    schema = InputSchema(FIELDS, join=JoinFields("hour_id", "integer", "event_ts"))
    parsed = schema.parse_request({"rows": [{**ROW, "hour_id": 17}]}, 100)
    assert parsed.keys.entity_id.tolist() == ["17"]
    assert "rows[0].hour_id: expected integer" in _error(schema, {"rows": [{**ROW, "hour_id": "17"}]})


def test_without_a_contract_the_fields_are_unexpected_and_a_feature_of_the_same_name_stays_a_feature():
    assert "unexpected field" in _error(InputSchema(FIELDS), {"rows": [{**ROW, "customer_id": "c"}]})
    schema = InputSchema([*FIELDS, Field("customer_id", "string", True)], join=JOIN)
    assert schema.join is None
    assert schema.parse_request({"rows": [{**ROW, "customer_id": "c"}]}, 10).columns[
        "customer_id"
    ].tolist() == ["c"]


def test_the_openapi_schema_documents_them_as_optional(schema):
    document = schema.json_schema(100)
    row = document["oneOf"][0]["properties"]["rows"]["items"]
    assert row["properties"]["customer_id"]["type"] == ["string", "null"]
    assert row["properties"]["event_ts"]["format"] == "date-time"
    assert "live quality" in row["properties"]["event_ts"]["description"]
    assert "customer_id" not in row["required"]
