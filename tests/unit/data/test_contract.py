"""The data contract: errors that name the key, the rules later stages rely on, the dataset name."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.data.contract import Contract, ContractError, dataset_contract, load_contract


def test_contract_roles(contract):
    assert contract.entity_id == "customer_id" and contract.label == "churned"
    assert "amount" in contract.numeric_features and "channel" in contract.categorical_features


def test_contract_errors_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: d\nentity_id: id\nevent_time: ts\nlabel: y\nsplits: {train: 70, validation: 15, holdout: 15}\n"
        "columns:\n  id: {type: string}\n  ts: {type: timestamp}\n  y: {type: int}\n  x: {type: floaty, role: feature}\n"
    )
    with pytest.raises(ContractError, match=r"columns\.x\.type"):
        load_contract(path)


def test_contract_needs_its_roles_and_splits(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: d\nentity_id: nope\nevent_time: ts\nlabel: y\nsplits: {train: 70, validation: 15, holdout: 15}\n"
        "source: {uri: '/data/{ds}'}\n"
        "columns:\n  ts: {type: timestamp}\n  y: {type: int, allowed: [0, 1]}\n  x: {type: float, role: feature}\n"
    )
    with pytest.raises(ContractError, match="entity_id names column 'nope'"):
        load_contract(path)
    with pytest.raises(ContractError, match="not found"):
        load_contract(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("  y: {type: int, allowed: [0, 1, 2]}", "label 'y' must be type int with allowed \\[0, 1\\]"),
        ("  n: {type: int, nullable: true}", "column 'n': an int column cannot be nullable"),
        ("unique: [zz]", "unique names column 'zz'"),
        ("  c: {type: category, allowed: [1, a]}", "column 'c': allowed mixes int and string values"),
        ("  c: {type: category, allowed: [1, 2], nullable: true}", "a category of int values cannot be null"),
        (
            "  c: {type: category, allowed: [true, false], nullable: true}",
            "of bool values cannot be nullable",
        ),
        ("  c: {type: category, allowed: [a, b, a]}", "column 'c': allowed lists a value twice"),
        # A row with no event time passed validation and trained past a holdout of the latest days.
        ("  ts: {type: timestamp, nullable: true}", "column 'ts' is the event_time and cannot be nullable"),
        ("  id: {type: string, nullable: true}", "column 'id' is the entity_id and cannot be nullable"),
        # The label as a feature: f_y equalled the label (target leakage), and prepare wrote y twice.
        (
            "  y: {type: int, allowed: [0, 1], role: feature}",
            "column 'y' is the label and cannot be a feature",
        ),
        # A key as a feature: raw_columns held it twice, and Dask's prepare failed on "Duplicate column names".
        ("  id: {type: int, role: feature}", "column 'id' is the entity_id and cannot be a feature"),
        ("  id: {type: string, role: feature}", "column 'id' is the entity_id and cannot be a feature"),
        ("  ts: {type: timestamp, role: feature}", "column 'ts' is the event_time and cannot be a feature"),
        # Two columns making one engineered name: the second overwrote the first's feature, and prepare failed.
        (
            "  a: {type: float, nullable: true, role: feature}\n  a__missing: {type: float, role: feature}",
            "columns 'a' and 'a__missing' would both make the prepared column 'f_a__missing'",
        ),
        (
            "  a: {type: category, allowed: [b], role: feature}\n  a__b: {type: float, role: feature}",
            "columns 'a' and 'a__b' would both make the prepared column 'f_a__b'",
        ),
        (
            "  f_x: {type: float, role: feature}",
            "columns 'f_x' and 'x' would both make the prepared column 'f_x'",
        ),
        ("  split: {type: float, role: feature}", "column 'split' has the name of the column prepare adds"),
        # A feature engineering cannot read: accepted, then left out of every model without a word.
        ("  s: {type: string, role: feature}", r"column 's' \(string\) cannot be a feature: only numbers"),
        ("  t: {type: timestamp, role: feature}", r"column 't' \(timestamp\) cannot be a feature"),
    ],
)
def test_contract_rules_that_would_break_later_stages(tmp_path, change, message):
    lines = [
        "dataset: d",
        "entity_id: id",
        "event_time: ts",
        "label: y",
        "source: {uri: '/data/{ds}'}",
        "splits: {train: 70, validation: 15, holdout: 15}",
        "columns:",
        "  id: {type: string}",
        "  ts: {type: timestamp}",
        "  x: {type: float, role: feature}",
    ]
    if change.startswith(("  id:", "  ts:")):  # in place of the column's own line
        lines = [change if line.startswith(change[:5]) else line for line in lines]
        change = "  y: {type: int, allowed: [0, 1]}"
    if change.startswith("  y:"):
        lines.append(change)
    else:
        lines.append("  y: {type: int, allowed: [0, 1]}")
        lines.insert(0, change) if not change.startswith("  ") else lines.append(change)
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match=message):
        load_contract(path)


def test_source_uri_template(settings, contract):
    from pipelines.data import sources
    from tests.days import DAY

    uri = sources.resolve(settings, contract, DAY)
    assert uri == f"{settings.resolved_data_root}/source/transactions/ds=2026-11-20"
    custom = settings.model_copy(update={"source_uri": "s3://lake/${CT_TEST_BUCKET}/{ds}.csv"})
    import os

    os.environ["CT_TEST_BUCKET"] = "tx"
    try:
        assert sources.resolve(custom, contract, DAY) == "s3://lake/tx/2026-11-20.csv"
    finally:
        del os.environ["CT_TEST_BUCKET"]
    with pytest.raises(ValueError, match="unknown placeholder"):
        sources.resolve(settings.model_copy(update={"source_uri": "/x/{day}"}), contract, DAY)
    with pytest.raises(sources.SourceUriError, match=r"variable\(s\) CT_TEST_BUCKET, which are not set"):
        sources.resolve(custom, contract, DAY)
    web = settings.model_copy(update={"source_uri": "abfs://$web@acct/tx/{ds}"})  # a bare $ is the path's own
    assert sources.resolve(web, contract, DAY) == "abfs://$web@acct/tx/2026-11-20"


def test_a_contract_for_another_dataset_is_refused_naming_both(tmp_path, settings):
    path = tmp_path / "orders.yaml"
    path.write_text((Path(__file__).parents[3] / "include" / "contracts" / "transactions.yaml").read_text())
    mismatched = settings.replace(dataset="orders", contract_path=path)
    with pytest.raises(
        ContractError, match="declares dataset 'transactions', but the settings name dataset 'orders'"
    ):
        dataset_contract(mismatched)
    assert dataset_contract(settings).dataset == "transactions"


def test_a_contract_dataset_name_must_be_safe_for_paths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: ../etc\nentity_id: id\nevent_time: ts\nlabel: y\nsource: {uri: '/data/{ds}'}\n"
        "splits: {train: 70, validation: 15, holdout: 15}\n"
        "columns:\n  id: {type: string}\n  ts: {type: timestamp}\n  y: {type: int, allowed: [0, 1]}\n"
        "  x: {type: float, role: feature}\n"
    )
    with pytest.raises(ContractError, match=r"dataset: .*may hold only letters, digits"):
        load_contract(path)


def test_a_category_holds_the_type_of_its_allowed_values(tmp_path):
    import pyarrow as pa

    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: d\nentity_id: id\nevent_time: ts\nlabel: y\nsource: {uri: '/data/{ds}'}\n"
        "splits: {train: 70, validation: 15, holdout: 15}\n"
        "columns:\n  id: {type: int}\n  ts: {type: timestamp}\n  y: {type: int, allowed: [0, 1]}\n"
        "  season: {type: category, allowed: [1, 2, 3, 4], role: feature}\n"
        "  holiday: {type: category, allowed: [true, false], role: feature}\n"
        "  month: {type: category, allowed: [Jan, Feb], nullable: true, role: feature}\n"
        "  code: {type: category, allowed: ['1', '2'], role: feature}\n"
    )
    contract = load_contract(path)
    types = {name: contract.columns[name].value_type for name in ("season", "holiday", "month", "code")}
    assert types == {"season": "int", "holiday": "bool", "month": "string", "code": "string"}
    schema = contract.arrow_schema()
    assert schema.field("season").type == pa.int64() and schema.field("holiday").type == pa.bool_()
    assert schema.field("id").type == pa.int64() and schema.field("code").type == pa.string()


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (
            "{train: 85, validation: 15, holdout: 0}",
            r"splits\.holdout is 0: each of train, validation and holdout",
        ),
        ("{train: 120, validation: -20, holdout: 0}", r"splits\.validation is -20: .* needs a positive"),
        ("{train: 0, validation: 50, holdout: 50}", r"splits\.train is 0"),
    ],
)
def test_every_split_needs_a_positive_share(tmp_path, splits, message):
    path = tmp_path / "c.yaml"
    path.write_text(
        f"dataset: d\nentity_id: id\nevent_time: ts\nlabel: y\nsource: {{uri: '/data/{{ds}}'}}\nsplits: {splits}\n"
        "columns:\n  id: {type: string}\n  ts: {type: timestamp}\n  y: {type: int, allowed: [0, 1]}\n"
        "  x: {type: float, role: feature}\n"
    )
    with pytest.raises(ContractError, match=message):
        load_contract(path)


def test_the_shipped_contracts_hold_positive_splits():
    for path in sorted((Path(__file__).parents[3] / "include" / "contracts").glob("*.yaml")):
        assert min(load_contract(path).splits.values()) > 0, path


def test_a_logged_contract_with_a_nullable_event_time_still_loads_where_a_file_is_refused(tmp_path, contract):
    """A model logged under a contract that allowed it (before 2026-12-05) reads its contract back with the
    model: refusing it there would leave serving, evaluate and rollback unable to load the model."""
    columns = {**contract.columns}
    columns[contract.event_time] = columns[contract.event_time].model_copy(update={"nullable": True})
    logged = contract.model_copy(update={"columns": columns}).model_dump_json()
    assert Contract.model_validate_json(logged).columns[contract.event_time].nullable
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(json.loads(logged)))
    with pytest.raises(ContractError, match="is the event_time and cannot be nullable"):
        load_contract(path)


def test_a_logged_contract_with_a_string_feature_still_loads_where_a_file_is_refused(tmp_path, contract):
    """A model logged under a contract with a text column marked feature trained without it (no feature was
    built from it), so its contract must read back with the model; the file is refused, naming the column."""
    columns = {
        **contract.columns,
        "note": contract.columns[contract.entity_id].model_copy(update={"role": "feature"}),
    }
    logged = contract.model_copy(update={"columns": columns}).model_dump_json()
    assert "note" in Contract.model_validate_json(logged).feature_columns
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(json.loads(logged)))
    with pytest.raises(ContractError, match=r"column 'note' \(string\) cannot be a feature"):
        load_contract(path)


def test_each_role_needs_its_own_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: d\nentity_id: ts\nevent_time: ts\nlabel: y\nsource: {uri: '/data/{ds}'}\n"
        "splits: {train: 70, validation: 15, holdout: 15}\n"
        "columns:\n  ts: {type: timestamp}\n  y: {type: int, allowed: [0, 1]}\n  x: {type: float, role: feature}\n"
    )
    with pytest.raises(ContractError, match="column 'ts' is both the entity_id and the event_time"):
        load_contract(path)


def test_the_shipped_contracts_make_each_prepared_column_once():
    from pipelines.data.features import SPLIT_COLUMN, output_columns

    for path in sorted((Path(__file__).parents[3] / "include" / "contracts").glob("*.yaml")):
        columns = [*output_columns(load_contract(path)), SPLIT_COLUMN]
        assert len(columns) == len(set(columns)), path


def test_what_is_no_rule_about_the_rows_leaves_the_fingerprint_and_the_dataset_version_alone(contract):
    """A drift threshold tuned, or the source moved through the contract, made every raw day 'validated under
    another contract' (prepare refused; validate re-read the whole window's source, whose old days upstream had
    dropped) and gave the same rows a new dataset version, so a new model was trained and registered."""
    import hashlib

    from pipelines.data.prepare import dataset_version

    def column(name, **change):
        return contract.model_copy(
            update={"columns": {**contract.columns, name: contract.columns[name].model_copy(update=change)}}
        )

    def source(**change):
        return contract.model_copy(update={"source": contract.source.model_copy(update=change)})

    same = [
        column("amount", drift_threshold=0.3),
        column("amount", drift="jensenshannon"),
        source(uri="s3://elsewhere/transactions"),
        source(generator=None),
        contract.model_copy(update={"label_delay_hours": 1.0}),
    ]
    raw = {"2026-11-20": "abc"}
    for other in same:
        assert other.fingerprint() == contract.fingerprint()
        assert dataset_version(raw, other, None) == dataset_version(raw, contract, None)
    for other in (
        column("amount", min=-5.0),
        source(format="csv"),
        contract.model_copy(update={"min_rows": 7}),
    ):
        assert other.fingerprint() != contract.fingerprint()  # a rule about the rows: validated again
        assert dataset_version(raw, other, None) != dataset_version(raw, contract, None)
    # Raw days validated before, under the same rules fingerprinted with their drift tests, are not validated again.
    legacy = hashlib.sha256(contract.model_dump_json(exclude={"label_delay_hours"}).encode()).hexdigest()[:16]
    assert contract.validated_under(legacy) and contract.validated_under(contract.fingerprint())
    assert not column("amount", drift_threshold=0.3).validated_under(
        legacy
    )  # other rules then: validated again
    assert not contract.validated_under(None) and not column("amount", min=-5.0).validated_under(legacy)
