import numpy as np
import pytest

from pipelines.validate import DataContractError, validate, validate_frame
from tests.conftest import DAY


def _violations(frame, contract):
    with pytest.raises(DataContractError) as caught:
        validate_frame(frame, contract, "test-partition")
    return {(v.column, v.rule): v for v in caught.value.violations}, str(caught.value)


def test_clean_data_holds_its_contract(clean_frame, contract):
    out = validate_frame(clean_frame, contract)
    assert len(out) == len(clean_frame)


def test_missing_column(clean_frame, contract):
    found, message = _violations(clean_frame.drop(columns=["region"]), contract)
    assert ("region", "missing column") in found
    assert "column 'region'" in message and "test-partition" in message


def test_unexpected_column(clean_frame, contract):
    found, _ = _violations(clean_frame.assign(surprise=1), contract)
    assert ("surprise", "unexpected column") in found


def test_wrong_type_names_column_and_examples(clean_frame, contract):
    frame = clean_frame.assign(amount=clean_frame["amount"].map(lambda v: f"{v} EUR"))
    found, message = _violations(frame, contract)
    rules = [rule for column, rule in found if column == "amount"]
    assert rules and all("dtype" in rule for rule in rules)
    assert "EUR" in message


def test_null_in_non_nullable_column(clean_frame, contract):
    frame = clean_frame.copy()
    frame.loc[:4, "age"] = None
    found, _ = _violations(frame, contract)
    assert any(column == "age" for column, _ in found)


def test_null_share_over_the_limit(clean_frame, contract):
    frame = clean_frame.copy()
    frame.loc[: len(frame) // 2, "avg_basket"] = np.nan
    found, _ = _violations(frame, contract)
    assert ("avg_basket", "max_null_share(0.1)") in found


def test_out_of_range_value(clean_frame, contract):
    frame = clean_frame.copy()
    frame.loc[0, "age"] = 7
    found, message = _violations(frame, contract)
    violation = found[("age", "greater_than_or_equal_to(18.0)")]
    assert violation.failing == 1 and violation.examples == [7]


def test_infinite_value(clean_frame, contract):
    frame = clean_frame.copy()
    frame.loc[0, "amount"] = np.inf
    found, _ = _violations(frame, contract)
    assert any(column == "amount" for column, _ in found)


def test_unknown_category_and_label(clean_frame, contract):
    frame = clean_frame.copy()
    frame.loc[0, "channel"] = "fax"
    frame.loc[1, "churned"] = 2
    found, message = _violations(frame, contract)
    assert found[("channel", "isin(['web', 'app', 'store'])")].examples == ["fax"]
    assert any(column == "churned" for column, _ in found)


def test_too_few_rows(clean_frame, contract):
    found, _ = _violations(clean_frame.head(10), contract)
    assert ("<table>", "min_rows(1000)") in found


def test_validate_stage_reads_the_window(settings):
    from pipelines.generate import generate

    generate(settings, DAY, "schema_break")
    with pytest.raises(DataContractError, match="column 'plan'"):
        validate(settings, DAY)
    generate(settings, DAY, "none")
    assert validate(settings, DAY)["partitions"][0]["rows"] == settings.rows_per_day
