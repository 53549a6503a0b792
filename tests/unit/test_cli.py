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
