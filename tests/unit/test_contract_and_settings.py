import pytest

from pipelines.contract import ContractError, load_contract
from pipelines.settings import get_settings


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
        "columns:\n  ts: {type: timestamp}\n  y: {type: int}\n  x: {type: float, role: feature}\n"
    )
    with pytest.raises(ContractError, match="entity_id names column 'nope'"):
        load_contract(path)
    with pytest.raises(ContractError, match="not found"):
        load_contract(tmp_path / "missing.yaml")


def test_settings_read_the_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CT_ENGINE", "spark")
    monkeypatch.setenv("CT_STATE_DIR", str(tmp_path))
    settings = get_settings()
    assert settings.engine == "spark"
    assert settings.resolved_data_root == str(tmp_path / "data")
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def test_settings_refuse_a_bad_engine(monkeypatch):
    monkeypatch.setenv("CT_ENGINE", "hadoop")
    with pytest.raises(ValueError, match="engine"):
        get_settings()


def test_run_keys_cannot_break_a_registry_filter():
    from pipelines.tracking import RunContext

    assert RunContext("retrain/2026-11-20/torch/abc123").run_key
    with pytest.raises(ValueError, match="run key"):
        RunContext("x' or '1'='1")
