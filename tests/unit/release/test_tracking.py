"""The MLflow adapter's pure parts: run keys that cannot break a registry filter."""

import pytest


def test_run_keys_cannot_break_a_registry_filter():
    from pipelines.release.tracking import RunContext

    assert RunContext("retrain/2026-11-20/torch/abc123").run_key
    with pytest.raises(ValueError, match="run key"):
        RunContext("x' or '1'='1")
