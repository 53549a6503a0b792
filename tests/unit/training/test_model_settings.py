"""Model settings: the shipped files, errors that name the file and the key, which family and epochs win."""

from pathlib import Path

import pytest

from pipelines.settings import INCLUDE_DIR, get_settings
from pipelines.training.model_settings import (
    ModelSettings,
    ModelSettingsError,
    choose_family,
    load_model_settings,
    resolved_hyperparameters,
)


def test_shipped_files_load_and_the_default_file_states_the_defaults():
    files = sorted((INCLUDE_DIR / "models").glob("*.yaml"))
    assert INCLUDE_DIR / "models" / "default.yaml" in files
    for path in files:
        load_model_settings(path)
    assert load_model_settings(INCLUDE_DIR / "models" / "default.yaml") == ModelSettings()


def test_defaults_stop_early_so_epochs_are_a_ceiling():
    torch = ModelSettings().torch
    assert torch.max_epochs >= 100 and torch.early_stopping is not None and torch.early_stopping.restore_best
    assert ModelSettings().sklearn.early_stopping


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("torch: {hidden_size: [8]}", "torch.hidden_size"),
        ("torch: {dropout: 1.5}", "torch.dropout"),
        ("torch: {early_stopping: {patience: 0}}", "torch.early_stopping.patience"),
        ("torch: {hidden_sizes: []}", "torch.hidden_sizes"),
        ("torch: {hidden_sizes: [0]}", "torch.hidden_sizes.0"),  # trained a constant model, no error
        ("torch: {hidden_sizes: [8, -4]}", "torch.hidden_sizes.1"),  # failed deep in torch, unnamed
        ("torch: {learning_rate: .inf}", "torch.learning_rate"),  # NaN weights
        ("torch: {weight_decay: .nan}", "torch.weight_decay"),
        ("sklearn: {learning_rate: .inf}", "sklearn.learning_rate"),
        ("sklearn: {max_leaf_nodes: 1}", "sklearn.max_leaf_nodes"),
        ("sklearn: {learning_rate: 1.7e+308}", "sklearn.learning_rate"),  # logged a model of NaN losses
        # YAML's yes/no/on/off/true/false are booleans, which were taken as 1: batches of one row.
        ("torch: {batch_size: yes}", "torch.batch_size"),
        ("torch: {max_epochs: on}", "torch.max_epochs"),
        ("torch: {learning_rate: true}", "torch.learning_rate"),
        ("torch: {hidden_sizes: [true, 8]}", "torch.hidden_sizes"),
        ("torch: {early_stopping: {patience: true}}", "torch.early_stopping.patience"),
        ("sklearn: {min_samples_leaf: yes}", "sklearn.min_samples_leaf"),
        ("family: xgboost", "family"),
        ("version: 2", "version"),
        ("epochs: 3", "epochs"),
    ],
)
def test_a_bad_key_is_named_with_the_file(tmp_path: Path, text: str, key: str):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(ModelSettingsError, match=rf"model settings file {path} is invalid: {key}"):
        load_model_settings(path)


def test_a_missing_or_unparsable_file_is_named(tmp_path: Path):
    with pytest.raises(ModelSettingsError, match="model settings file not found"):
        load_model_settings(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("torch: {dropout: [")
    with pytest.raises(ModelSettingsError, match="is not valid YAML"):
        load_model_settings(broken)


def test_an_empty_section_takes_every_default(tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text("family: sklearn\ntorch: {hidden_sizes: [16]}\n")
    loaded = load_model_settings(path)
    assert loaded.family == "sklearn" and loaded.torch.hidden_sizes == (16,)
    assert (
        loaded.torch.batch_size == ModelSettings().torch.batch_size
        and loaded.sklearn == ModelSettings().sklearn
    )


def test_the_run_picks_the_family_then_the_environment_then_the_file(monkeypatch):
    from_file = ModelSettings(family="sklearn")
    monkeypatch.delenv("CT_MODEL_FAMILY", raising=False)
    assert choose_family(get_settings(), from_file, None) == "sklearn"
    assert choose_family(get_settings(), from_file, "torch") == "torch"
    monkeypatch.setenv("CT_MODEL_FAMILY", "torch")
    assert choose_family(get_settings(), from_file, None) == "torch"
    assert choose_family(get_settings(), ModelSettings(), "sklearn") == "sklearn"


def test_ct_train_epochs_overrides_the_files_max_epochs(monkeypatch):
    monkeypatch.delenv("CT_TRAIN_EPOCHS", raising=False)
    model_settings = ModelSettings()
    assert resolved_hyperparameters(get_settings(), model_settings, "torch")["max_epochs"] == 200
    resolved = resolved_hyperparameters(get_settings(train_epochs=7), model_settings, "torch")
    assert resolved["max_epochs"] == 7 and resolved["hidden_sizes"] == [64, 32]
    assert resolved["early_stopping"] == {"patience": 10, "min_delta": 0.0001, "restore_best": True}
    sklearn = resolved_hyperparameters(get_settings(train_epochs=7), model_settings, "sklearn")
    assert sklearn == model_settings.sklearn.model_dump()
    with pytest.raises(ValueError, match="unknown model family 'xgboost'"):
        resolved_hyperparameters(get_settings(), model_settings, "xgboost")


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path: Path):
    """YAML keeps the last of two equal keys and drops the first silently: a section written twice lost its
    first half to the defaults. Every file read into a model (contracts, policies, model settings) refuses it."""
    path = tmp_path / "model.yaml"
    path.write_text("torch:\n  dropout: 0.3\n  batch_size: 64\nsklearn: {}\ntorch:\n  dropout: 0.1\n")
    with pytest.raises(ModelSettingsError, match=r"found the key 'torch' a second time \(first on line 1\)"):
        load_model_settings(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("torch: {dropout: 0.3, dropout: 0.1}\n")
    with pytest.raises(ModelSettingsError, match=rf"(?s){nested} is not valid YAML.*'dropout' a second time"):
        load_model_settings(nested)
    nested = tmp_path / "nested-merge.yaml"  # a merged mapping that overrides its own merge, merged first
    nested.write_text("b: &b {dropout: 1}\nx:\n  y: &s\n    <<: *b\n    dropout: 2\nz:\n  <<: *s\n")
    with pytest.raises(ModelSettingsError, match="is invalid: b: Extra inputs"):  # no key written twice
        load_model_settings(nested)
    merged = tmp_path / "merged.yaml"  # a merge gives way to the keys beside it: not a key written twice
    merged.write_text("base: &base {dropout: 0.3, batch_size: 64}\ntorch:\n  <<: *base\n  dropout: 0.1\n")
    with pytest.raises(ModelSettingsError, match="base"):  # the file's own extra key, not a duplicate
        load_model_settings(merged)
