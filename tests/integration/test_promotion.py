"""Promotion under contention: a cross-process compare-and-set, an append-only history, rollback."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.release import history, integrity, tracking
from pipelines.release.promote import ChampionChangedError, move_champion, rollback
from pipelines.settings import get_settings

pytestmark = pytest.mark.slow


def _registry(state: Path, versions: int, tracking_uri: str | None = None):
    """A registry with ``versions`` versions: one small file each, with its manifest (promotion never loads them)."""
    settings = get_settings(state_dir=state, mlflow_tracking_uri=tracking_uri)
    client = tracking.configure(settings)
    client.create_registered_model(settings.model_name)
    for number in range(1, versions + 1):
        source = state / "models" / f"v{number}"
        source.mkdir(parents=True)
        (source / "MLmodel").write_text(f"version: {number}\n")
        tags = integrity.tags_for(integrity.build_manifest(source))
        client.create_model_version(settings.model_name, source.resolve().as_uri(), tags=tags)
    return settings, client


def _contender(state: str, tracking_uri: str | None, version: int, start) -> str:
    settings = get_settings(state_dir=Path(state), mlflow_tracking_uri=tracking_uri)
    start.wait()  # all eight reach the compare-and-set together
    try:
        move_champion(settings, version, 1, trigger="test", reason=f"contender v{version}")
        return "promoted"
    except ChampionChangedError:
        return "conflict"


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_uri(request, tmp_path):
    """The embedded SQLite store (file lock), or a real PostgreSQL (advisory lock, history in the same DB)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").database(f"ct_{tmp_path.name[-20:].lower()}")


def test_eight_concurrent_promotions_leave_one_champion_and_a_consistent_history(tmp_path, registry_uri):
    settings, client = _registry(tmp_path, 9, registry_uri)
    assert history.database_url(settings).startswith("postgresql" if registry_uri else "sqlite")
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(8)
        with context.Pool(8) as pool:
            outcomes = pool.starmap(
                _contender, [(str(tmp_path), registry_uri, v, start) for v in range(2, 10)]
            )
    assert sorted(outcomes) == ["conflict"] * 7 + ["promoted"]
    winner = 2 + outcomes.index("promoted")
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == winner

    rows = history.read(settings, settings.model_name)
    assert len(rows) == 9  # the bootstrap and every one of the eight attempts
    contest = rows[1:]
    assert sorted(r["to_version"] for r in contest) == list(range(2, 10))
    promoted = [r for r in contest if r["outcome"] == "promoted"]
    assert len(promoted) == 1 and promoted[0]["to_version"] == winner and promoted[0]["from_version"] == 1
    # Serialised by the lock: every attempt after the winner's saw the winner as champion.
    after = contest[contest.index(promoted[0]) + 1 :]
    assert all(r["outcome"] == "conflict" and r["from_version"] == winner for r in after)
    before = contest[: contest.index(promoted[0])]
    assert before == []  # the first to take the lock wins: nobody before it could fail
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_rollback_from_the_cli_goes_through_the_same_compare_and_set(tmp_path):
    from pipelines.cli import app

    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    move_champion(settings, 3, 1, trigger="test", reason="a bad model")
    runner, env = CliRunner(), {"CT_STATE_DIR": str(tmp_path)}

    refused = runner.invoke(app, ["rollback", "--reason", " "], env=env)
    assert refused.exit_code == 1 and "needs a reason" in refused.output
    result = runner.invoke(app, ["rollback", "--reason", "v3 doubles false alarms"], env=env)
    assert result.exit_code == 0, result.output
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == 1
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["from_version"], last["to_version"], last["outcome"]) == (
        "rollback",
        3,
        1,
        "promoted",
    )
    assert last["reason"] == "v3 doubles false alarms"

    explicit = runner.invoke(app, ["rollback", "--to", "2", "--reason", "try v2"], env=env)
    assert explicit.exit_code == 0
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == 2
    table = runner.invoke(app, ["history"], env=env)
    assert table.exit_code == 0 and "v3 doubles false alarms" in table.output and "rollback" in table.output

    with pytest.raises(ValueError, match="no champion"):
        rollback(get_settings(state_dir=tmp_path / "empty"), reason="nothing")
