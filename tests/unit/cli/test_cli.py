"""The `pipelines` CLI: exit codes and messages a person or a script can act on."""

from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _env(tmp_path):
    return {"CT_STATE_DIR": str(tmp_path), "CT_ROWS_PER_DAY": "1500"}


def test_validate_exits_0_on_good_data_and_1_with_the_violations(tmp_path):
    env = _env(tmp_path)
    assert runner.invoke(app, ["generate", "-d", "2026-11-20"], env=env).exit_code == 0
    good = runner.invoke(app, ["validate", "-d", "2026-11-20"], env=env)
    assert good.exit_code == 0
    assert (
        good.output.strip() == "OK transactions v1 2026-11-20: 1500 rows in 1 day(s) hold the contract (dask)"
    )
    assert (
        runner.invoke(
            app, ["generate", "-d", "2026-11-20", "--scenario", "missing_values"], env=env
        ).exit_code
        == 0
    )
    bad = runner.invoke(app, ["validate", "-d", "2026-11-20"], env=env)
    assert bad.exit_code == 1
    assert "| amount | not_nullable |" in bad.output  # the report, as a table
    assert "quarantined:" in bad.output


def test_a_stage_without_its_input_says_which_command_to_run(tmp_path):
    result = runner.invoke(app, ["train", "-d", "2026-11-20"], env=_env(tmp_path))
    assert result.exit_code != 0
    assert "pipelines prepare -d 2026-11-20" in result.output


def test_a_bad_date_is_refused(tmp_path):
    result = runner.invoke(app, ["generate", "-d", "20/11/2026"], env=_env(tmp_path))
    assert result.exit_code == 2


def test_policy_command_checks_the_file_and_prints_the_schema(tmp_path):
    import json

    ok = runner.invoke(app, ["policy"], env=_env(tmp_path))
    assert ok.exit_code == 0 and ok.output.startswith("OK ") and "slice:channel" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nprimary_metric: roc_auc\nhigher_is_better: true\nslices: [{column: amount, max_regression: 0.1}]\n"
    )
    refused = runner.invoke(app, ["policy", str(bad)], env=_env(tmp_path))
    assert (
        refused.exit_code == 1 and "slices.0.column: 'amount' is not a categorical feature" in refused.output
    )
    schema = json.loads(runner.invoke(app, ["policy", "--schema"], env=_env(tmp_path)).output)
    assert {"bootstrap", "slices", "latency", "approval", "dry_run"} <= set(schema["properties"])
