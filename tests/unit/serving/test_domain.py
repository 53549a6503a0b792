"""Serving speaks the data contract: a value outside a field's domain is refused (422) or flagged on its row."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import orjson
import pandas as pd
import pytest

from pipelines.model.runtime import ModelLoadError, ModelOutputError, ServedModel
from pipelines.model.signature import Field, InputSchema, OutOfDomainError, RequestError
from pipelines.serving.batcher import MicroBatcher
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.predict import Predictor

FIELDS = [
    Field("channel", "string", True, ("web", "store", "app")),
    Field("age", "integer", True, None, 18, 100),
    Field("code", "integer", True, (1, 2, 3)),  # an int category: "1" and true are not 1
    Field("vip", "boolean", False, (True,)),  # a bool category, nullable
    Field("score", "number", False, None, 0.0, 1.5),
    Field("note", "string", False),  # no domain
]
ROW = {"channel": "web", "age": 40, "code": 2, "vip": True, "score": 0.5, "note": "anything"}


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return InputSchema(FIELDS)


def _columns(rows: list[dict]) -> dict:
    return {"columns": {name: [row[name] for row in rows] for name in ROW}}


def _refusal(schema: InputSchema, payload: dict) -> str:
    with pytest.raises(OutOfDomainError) as caught:
        schema.parse_request(payload, 100)
    assert caught.value.status == 422
    return caught.value.message


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("channel", "abc", "'abc' is not one of 'web', 'store', 'app'"),
        ("channel", "web\x00", "'web\\x00' is not one of 'web', 'store', 'app'"),  # a NUL is shown
        ("channel", "Web", "'Web' is not one of 'web', 'store', 'app'"),  # case matters
        ("channel", " web", "' web' is not one of 'web', 'store', 'app'"),
        ("channel", "", "'' is not one of 'web', 'store', 'app'"),
        ("age", 0, "0 is below the minimum 18"),
        ("age", 17.0, "17 is below the minimum 18"),  # 17.0 is the integer 17
        ("age", 101, "101 is above the maximum 100"),
        ("age", 2**62, f"{2**62} is above the maximum 100"),
        ("code", 4, "4 is not one of 1, 2, 3"),
        ("code", 0, "0 is not one of 1, 2, 3"),
        ("vip", False, "false is not one of true"),
        ("score", -0.001, "-0.001 is below the minimum 0"),
        ("score", 1.75, "1.75 is above the maximum 1.5"),
    ],
)
def test_a_value_outside_the_domain_is_refused_naming_field_row_value_and_what_is_allowed(
    schema, field, value, problem
):
    rows = [ROW, ROW, {**ROW, field: value}]
    assert _refusal(schema, {"rows": rows}) == f"rows[2].{field}: {problem}"
    assert _refusal(schema, _columns(rows)) == f"columns.{field}[2]: {problem}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("age", 18),  # the bounds are inclusive
        ("age", 100),
        ("age", 100.0),
        ("score", 0),
        ("score", 1.5),
        ("score", None),  # a null is no value: nullable fields take it
        ("vip", None),
        ("code", 1),
        ("code", 3.0),  # 3.0 is the integer 3
        ("channel", "app"),
        ("note", "\x00 anything at all"),  # a field without a domain
    ],
)
def test_values_inside_the_domain_pass_in_both_forms(schema, field, value):
    rows = [ROW, {**ROW, field: value}]
    for payload in ({"rows": rows}, _columns(rows)):
        parsed = schema.parse_request(payload, 100)
        assert parsed.rows == 2 and parsed.out_of_domain == {}


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("code", "1", "rows[0].code: expected integer, got string"),  # "1" is not the int 1
        ("code", True, "rows[0].code: expected integer, got bool"),  # true is not 1
        ("vip", 1, "rows[0].vip: expected boolean, got integer"),  # 1 is not true
        ("channel", 1, "rows[0].channel: expected string, got integer"),
    ],
)
def test_values_of_another_json_type_never_match_an_allowed_value(schema, field, value, detail):
    with pytest.raises(RequestError) as caught:
        schema.parse_request({"rows": [{**ROW, field: value}]}, 100)
    assert (caught.value.status, caught.value.message) == (422, detail)


def test_the_first_problem_is_named_as_the_type_checks_go(schema):
    rows = [ROW, {**ROW, "code": 9}, {**ROW, "channel": "x", "age": 5}]
    # rows: the first row with a problem, then its first field
    assert _refusal(schema, {"rows": rows}) == "rows[1].code: 9 is not one of 1, 2, 3"
    # columns: the first field with a problem, then its first value
    assert _refusal(schema, _columns(rows)) == "columns.channel[2]: 'x' is not one of 'web', 'store', 'app'"


def test_a_refusal_counts_the_rows_outside_by_field(schema):
    rows = [{**ROW, "channel": "x"}, {**ROW, "channel": "y", "age": 5}, ROW]
    with pytest.raises(OutOfDomainError) as caught:
        schema.parse_request({"rows": rows}, 100)
    assert caught.value.rows_by_field == {"channel": 2, "age": 1}


def test_a_long_value_is_cut_in_the_message(schema):
    message = _refusal(schema, {"rows": [{**ROW, "channel": "x" * 10_000}]})
    assert len(message) < 200 and message.startswith("rows[0].channel: 'xxx") and "…" in message


def test_flag_mode_scores_the_rows_and_marks_the_fields_outside(schema):
    rows = [ROW, {**ROW, "channel": "abc", "age": 0}, ROW, {**ROW, "vip": False}]
    for payload in ({"rows": rows}, _columns(rows)):
        parsed = schema.parse_request(payload, 100, "flag")
        assert parsed.rows == 4
        assert parsed.out_of_domain == {1: ["channel", "age"], 3: ["vip"]}  # in field order
        assert parsed.columns["age"].tolist() == [40, 0, 40, 40]  # the values are kept as sent


@pytest.mark.parametrize("rows", [1, 31, 32, 33, 500])
def test_few_rows_value_by_value_and_many_rows_with_numpy_agree(schema, rows):
    rng = np.random.default_rng(rows)
    choices = {
        "channel": ["web", "store", "app", "abc", "WEB"],
        "age": [17, 18, 50, 100, 101],
        "code": [0, 1, 2, 3, 4],
        "vip": [True, False, None],
        "score": [-1.0, 0.0, 0.7, 1.5, 2.0, None],
        "note": ["a"],
    }
    sent = [
        {name: values[rng.integers(len(values))] for name, values in choices.items()} for _ in range(rows)
    ]
    expected = {}
    for index, row in enumerate(sent):
        outside = [
            name
            for name, bad in (
                ("channel", row["channel"] not in ("web", "store", "app")),
                ("age", not 18 <= row["age"] <= 100),
                ("code", row["code"] not in (1, 2, 3)),
                ("vip", row["vip"] is False),
                ("score", row["score"] is not None and not 0 <= row["score"] <= 1.5),
            )
            if bad
        ]
        if outside:
            expected[index] = outside
    assert schema.parse_request({"rows": sent}, 1000, "flag").out_of_domain == expected
    assert schema.parse_request(_columns(sent), 1000, "flag").out_of_domain == expected


@pytest.mark.parametrize(
    ("scores", "outside"),
    [
        ([None, 2.0], [1]),  # a null first: its NaN must not hide the value beyond the maximum
        ([2.0, None], [0]),
        ([None, -1.0, 0.5], [1]),
        ([None, None], []),
        ([0.5, None, 1.5], []),
    ],
)
def test_nulls_never_hide_a_value_outside_nor_count_as_one(schema, scores, outside):
    rows = [{**ROW, "score": score, "vip": None} for score in scores]
    flagged = schema.parse_request({"rows": rows}, 100, "flag").out_of_domain
    assert flagged == {index: ["score"] for index in outside}


def test_nulls_in_an_int_category_with_many_rows_are_not_outside():
    schema = InputSchema([Field("code", "integer", False, (1, 2))])
    codes = [1, None, 2, 3] * 20  # float64 with NaN once parsed; more rows than the scalar path takes
    flagged = schema.parse_request({"columns": {"code": codes}}, 100, "flag").out_of_domain
    assert sorted(flagged) == [i for i, c in enumerate(codes) if c == 3]


def test_the_json_schema_carries_enums_bounds_nullability_and_a_valid_example(schema):
    document = schema.json_schema(50)
    rows_form, columns_form = document["oneOf"]
    properties = rows_form["properties"]["rows"]["items"]["properties"]
    assert properties["channel"] == {"type": ["string"], "enum": ["web", "store", "app"]}
    assert properties["age"] == {"type": ["integer"], "minimum": 18, "maximum": 100}
    assert properties["code"] == {"type": ["integer"], "enum": [1, 2, 3]}
    assert properties["vip"] == {"type": ["boolean", "null"], "enum": [True, None]}
    assert properties["score"] == {"type": ["number", "null"], "minimum": 0.0, "maximum": 1.5}
    assert properties["note"] == {"type": ["string", "null"]}
    assert columns_form["properties"]["columns"]["properties"]["age"]["items"]["minimum"] == 18
    assert rows_form["properties"]["rows"]["maxItems"] == 50  # as the request's limit refuses more
    assert columns_form["properties"]["columns"]["properties"]["age"]["maxItems"] == 50
    for form in (rows_form, columns_form):
        (example,) = form["examples"]
        assert schema.parse_request(example, 50).out_of_domain == {}  # "Try it out" sends a valid body


def test_the_example_is_the_models_own_when_it_is_valid_else_a_row_inside_every_domain():
    given = [ROW, {**ROW, "age": 77}]
    assert InputSchema(FIELDS, given).example_body() == {"rows": given}
    fallback = InputSchema(FIELDS, [{**ROW, "channel": "abc"}]).example_body()
    assert fallback == {
        "rows": [{"channel": "web", "age": 18, "code": 1, "vip": True, "score": 0.0, "note": ""}]
    }
    assert InputSchema(FIELDS).example_body() == fallback
    warm = InputSchema(FIELDS).example_columns(3)  # the warm-up scores rows the model knows
    assert warm["channel"].tolist() == ["web"] * 3 and warm["age"].tolist() == [18] * 3


# --- the endpoint's core: the answer carries the flags, the metrics count them --------------------------------


class _Constant:
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"probability": np.full(len(frame), 0.25)})


class _Holder:
    def __init__(self, schema: InputSchema):
        self.metrics = ServingMetrics()
        self.last_error = None
        self.current = ServedModel(
            name="m", version=7, sha256="0" * 64, run_id=None, schema=schema, pyfunc=_Constant()
        )


def _post(mode: str, payload: dict, holder: _Holder | None = None) -> tuple[int, dict, ServingMetrics]:
    holder = holder or _Holder(InputSchema(FIELDS))
    predictor = Predictor(holder, 1 << 20, 100, mode)

    async def call() -> tuple[int, bytes, int | None, str]:
        batcher = MicroBatcher(256, 0.0, holder.metrics)
        batcher.start()
        predictor.batcher = batcher
        body = orjson.dumps(payload)

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            return await predictor({b"content-type": b"application/json"}, receive)
        finally:
            await batcher.stop()

    status, body, _, request = asyncio.run(asyncio.wait_for(call(), timeout=30))
    answered = orjson.loads(body)
    if status == 200:
        assert answered.pop("request_id") == request and len(request) == 32
    return status, answered, holder.metrics


def _count(metrics: ServingMetrics, field: str, action: str) -> float:
    return metrics.out_of_domain_rows.labels(field, action)._value.get()


def test_reject_mode_answers_422_and_counts_the_refused_rows():
    rows = [ROW, {**ROW, "channel": "abc"}, {**ROW, "channel": "abd"}]
    status, body, metrics = _post("reject", {"rows": rows})
    assert (status, body) == (422, {"detail": "rows[1].channel: 'abc' is not one of 'web', 'store', 'app'"})
    assert _count(metrics, "channel", "refused") == 2 and _count(metrics, "channel", "flagged") == 0


def test_flag_mode_scores_every_row_and_marks_only_those_outside():
    rows = [ROW, {**ROW, "channel": "abc", "age": 0}, {**ROW, "age": 101}]
    status, body, metrics = _post("flag", {"rows": rows})
    assert status == 200 and body["model_version"] == 7
    assert body["predictions"] == [
        {"probability": 0.25, "label": 0},
        {"probability": 0.25, "label": 0, "out_of_domain": ["channel", "age"]},
        {"probability": 0.25, "label": 0, "out_of_domain": ["age"]},
    ]
    assert (_count(metrics, "channel", "flagged"), _count(metrics, "age", "flagged")) == (1, 2)
    assert _count(metrics, "age", "refused") == 0
    status, body, _ = _post("flag", {"rows": [{**ROW, "code": "1"}]})  # a wrong type is never flagged
    assert (status, body["detail"]) == (422, "rows[0].code: expected integer, got string")


def test_a_flagged_row_whose_request_fails_is_not_counted_as_flagged():
    """Counted before scoring, a request that then failed (a model error, a shutdown) counted rows that were
    never served."""

    class Broken:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise ValueError("the model broke")

    holder = _Holder(InputSchema(FIELDS))
    holder.current.pyfunc = Broken()
    status, body, _ = _post("flag", {"rows": [{**ROW, "channel": "abc"}]}, holder)
    assert status == 500
    assert _count(holder.metrics, "channel", "flagged") == 0


def test_a_model_failing_on_a_request_answers_500_naming_the_request_in_the_body_and_the_log(caplog):
    """The 500 said "the server log has the details", and neither it nor the log line named the request."""

    class Picky:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise TypeError("unsupported operand type(s) for +: 'float' and 'NoneType'")

    holder = _Holder(InputSchema(FIELDS))
    holder.current.pyfunc = Picky()
    status, body, _ = _post("flag", {"rows": [ROW]}, holder)
    found = re.fullmatch(
        r"internal error \(request ([0-9a-f]{32})\); the server log has the details", body["detail"]
    )
    assert status == 500 and found, body
    failed = [r for r in caplog.records if r.levelname == "ERROR" and found.group(1) in r.getMessage()]
    assert failed and "model version 7" in failed[0].getMessage() and failed[0].exc_info


def test_probabilities_outside_0_and_1_are_the_models_fault_not_an_answer():
    class Overconfident:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"probability": np.full(len(frame), 2.5)})

    holder = _Holder(InputSchema(FIELDS))
    holder.current.pyfunc = Overconfident()
    status, body, _ = _post("flag", {"rows": [ROW]}, holder)
    assert status == 500 and "internal error (request" in body["detail"]  # never a 200 with 2.5
    with pytest.raises(ModelOutputError, match=r"m v7 gave probabilities outside \[0, 1\] \(2.5 to 2.5\)"):
        holder.current.predict(InputSchema(FIELDS).example_columns(1))


def test_a_model_whose_own_code_fails_at_warm_up_is_refused_as_a_load_failure():
    """Any exception of the model's code (a TypeError, not only the listed scoring errors) refuses the version
    with reason warmup: else the holder took it for its own bug, loaded it again every poll, and answered an
    admin reload with a bare 500."""

    class Broken:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise TypeError("unsupported operand type(s) for +: 'float' and 'NoneType'")

    model = ServedModel(
        name="m", version=2, sha256="0" * 64, run_id=None, schema=InputSchema(FIELDS), pyfunc=Broken()
    )
    with pytest.raises(ModelLoadError, match="scoring a warm-up batch failed: TypeError") as refused:
        model.warm_up(8)
    assert refused.value.reason == "warmup"
