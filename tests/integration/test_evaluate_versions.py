"""evaluate's first question to the registry: a version that does not exist is the caller's mistake, named; a
registry that fails is not taken for one (the task fails and its retry asks again)."""

from __future__ import annotations

import datetime as dt

import pytest
from mlflow.exceptions import MlflowException

from pipelines.evaluation.evaluate import EvaluationError, evaluate
from pipelines.release import tracking
from pipelines.settings import get_settings

DAY = dt.date(2026, 11, 20)


@pytest.fixture
def settings(tmp_path):
    settings = get_settings(state_dir=tmp_path)
    tracking.configure(settings).create_registered_model(settings.model_name)
    return settings


def test_a_version_that_does_not_exist_is_named(settings):
    with pytest.raises(EvaluationError, match=f"{settings.model_name} version 999 does not exist"):
        evaluate(settings, DAY, str(settings.resolved_data_root), 999)


def test_a_failing_registry_is_not_taken_for_a_missing_version(settings, monkeypatch):
    def unreachable(self, name, version):
        raise MlflowException(
            "API request to http://mlflow:5000 failed: 503", error_code="TEMPORARILY_UNAVAILABLE"
        )

    monkeypatch.setattr(tracking.MlflowClient, "get_model_version", unreachable)
    with pytest.raises(MlflowException, match="503"):
        evaluate(settings, DAY, str(settings.resolved_data_root), 1)
