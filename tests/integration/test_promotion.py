"""Promotion under contention: a cross-process compare-and-set, an append-only history, rollback."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.release import audit, history, integrity, tracking
from pipelines.release.promote import ChampionChangedError, PromotionRefusedError, move_champion, rollback
from pipelines.settings import get_settings

pytestmark = pytest.mark.slow


def _registry(state: Path, versions: int, tracking_uri: str | None = None, **changes):
    """A registry with ``versions`` versions: one small file each, with its manifest (promotion never loads them)."""
    settings = get_settings(state_dir=state, mlflow_tracking_uri=tracking_uri, **changes)
    client = tracking.configure(settings)
    client.create_registered_model(settings.model_name)
    for number in range(1, versions + 1):
        source = state / "models" / f"v{number}"
        source.mkdir(parents=True)
        (source / "MLmodel").write_text(f"version: {number}\n")
        tags = integrity.tags_for(integrity.build_manifest(source))
        run = client.create_run(tracking.experiment_id(client, settings))  # the gate logs to a version's run
        client.set_terminated(run.info.run_id)
        client.create_model_version(
            settings.model_name, source.resolve().as_uri(), run_id=run.info.run_id, tags=tags
        )
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

    everything = history.read(settings, settings.model_name)
    assert not history.unresolved(everything)  # every move written ahead was completed
    rows = [r for r in everything if r["outcome"] != history.PENDING]
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
    assert [r["outcome"] for r in everything if r["to_version"] == winner] == ["pending", "promoted"]


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
        "rolled_back",
    )
    assert last["reason"] == "v3 doubles false alarms"

    explicit = runner.invoke(app, ["rollback", "--to", "2", "--reason", "try v2"], env=env)
    assert explicit.exit_code == 0
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == 2
    table = runner.invoke(app, ["history"], env=env)
    assert table.exit_code == 0 and "v3 doubles false alarms" in table.output and "rollback" in table.output

    unknown = runner.invoke(app, ["rollback", "--to", "7", "--reason", "a typo"], env=env)
    assert unknown.exit_code == 1 and "ct-transactions has no version 7" in unknown.output
    assert unknown.exception is None or isinstance(unknown.exception, SystemExit)

    with pytest.raises(ValueError, match="no champion"):
        rollback(get_settings(state_dir=tmp_path / "empty"), reason="nothing")


def test_promoting_a_day_whose_challenger_was_deleted_since_its_gate_fails_by_name(tmp_path):
    """`pipelines promote -d D` replays D's gate record; with its challenger deleted from the registry since (a
    person tidying it), the version check's bare ValueError ended the command as a bug: exit 1, a traceback."""
    from pipelines.cli import app
    from pipelines.data import storage

    settings, client = _registry(tmp_path, 2)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    day = dt.date(2026, 11, 21)
    gate = {
        "stage": "gate",
        "result": {"decision": "promote", "challenger_version": 2, "champion_version": 1},
    }
    storage.write_json_atomic(
        storage.run_record_uri(settings.resolved_data_root, settings.dataset, day, "gate"), gate
    )
    client.delete_model_version(settings.model_name, "2")
    result = CliRunner().invoke(app, ["promote", "-d", str(day)], env={"CT_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "ct-transactions has no version 2" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert _alias(client, settings) == 1


def test_the_same_rollback_run_again_does_not_undo_its_rollback(tmp_path):
    """A cleared or re-run rollback DAG run: "the previous champion" is by then the version it rolled back
    from, so rolling back again would bring the bad model back."""
    settings, client = _registry(tmp_path, 3)
    for version, expected in ((1, None), (2, 1), (3, 2)):
        move_champion(settings, version, expected, trigger="test", reason=f"v{version}")
    first = rollback(settings, reason="v3 is bad", trigger="dag", dag_id="rollback", run_id="manual__1")
    assert first["changed"] and _alias(client, settings) == 2
    again = rollback(settings, reason="v3 is bad", trigger="dag", dag_id="rollback", run_id="manual__1")
    assert not again["changed"] and again["champion"] == 2 and "rolled back by this run" in again["already"]
    assert _alias(client, settings) == 2
    assert [row["outcome"] for row in history.read(settings, settings.model_name)].count("rolled_back") == 1
    other = rollback(settings, reason="v2 is bad too", trigger="dag", dag_id="rollback", run_id="manual__2")
    # A new run is a new rollback: to the champion before v2, never forward to v3, just rolled back from.
    assert other["changed"] and other["previous"] == 2 and _alias(client, settings) == 1
    with pytest.raises(ValueError, match="v1 of ct-transactions has no previous champion"):
        rollback(settings, reason="and v1?", trigger="dag", dag_id="rollback", run_id="manual__3")


def test_a_days_promote_run_again_after_a_rollback_does_not_undo_it(tmp_path):
    """v1 -> v2 by day D's run, rolled back to v1: the champion is again the one D's gate compared with, so
    a cleared promote of D would pass the compare-and-set and bring v2 back."""
    import datetime as dt

    from pipelines.release.promote import promote

    settings, client = _registry(tmp_path, 2)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    day, decision = dt.date(2026, 11, 20), {"decision": "promote"}
    first = promote(settings, day, 2, 1, decision=decision, dag_id="retrain", run_id="scheduled__D")
    assert first["changed"] and _alias(client, settings) == 2
    rollback(settings, reason="v2 is bad", trigger="dag", dag_id="rollback", run_id="manual__R")
    assert _alias(client, settings) == 1
    again = promote(settings, day, 2, 1, decision=decision, dag_id="retrain", run_id="scheduled__D")
    assert (
        not again["changed"] and "promoted by this run" in again["already"] and _alias(client, settings) == 1
    )
    # A new run of the day (or `pipelines promote -d D`, which has no run id) passes the gate on the same
    # figures: it must not undo a person's rollback either. Only a person's rollback --to brings v2 back.
    for run_id in ("manual__new", None):
        with pytest.raises(PromotionRefusedError, match="v2 was rolled back from at .* \\(v2 is bad\\)"):
            promote(settings, day, 2, 1, decision=decision, dag_id="retrain", run_id=run_id)
        assert _alias(client, settings) == 1
    refused = history.read(settings, settings.model_name)[-1]
    assert refused["outcome"] == "refused" and "rolled back from" in refused["reason"]
    assert (refused["from_version"], refused["to_version"]) == (1, 2)
    rollback(settings, to_version=2, reason="v2 was fine after all")
    assert _alias(client, settings) == 2
    # Set back by a person, v2 is champion: its day run again moves nothing, and is not refused either.
    later = promote(settings, day, 2, 1, decision=decision, dag_id="retrain", run_id="manual__later")
    assert not later["changed"] and later["champion"] == 2 and _alias(client, settings) == 2


def test_a_days_gate_run_again_does_not_bring_back_a_champion_that_a_rollback_skipped(tmp_path):
    """v1..v4 promoted by the gate, then a person's rollback --to 2 skips v3. v3's day run again (or `pipelines
    promote -d D3`) judges v3 against v2, as its gate once did, and passes: it brought v3 back without anyone
    asking. A champion the gate replaced comes back only by a person's rollback --to."""
    from pipelines.release.promote import promote

    settings, client = _registry(tmp_path, 4)
    decision = {"decision": "promote"}
    days = {version: dt.date(2026, 11, 20 + version) for version in range(1, 5)}
    for version in range(1, 5):
        promote(
            settings, days[version], version, version - 1 or None, decision=decision, run_id=f"s__{version}"
        )
    rollback(settings, to_version=2, reason="v3 and v4 mis-score the new region")
    assert _alias(client, settings) == 2
    for run_id in ("manual__again", None):
        with pytest.raises(
            PromotionRefusedError, match=r"v3 was champion until .*, when v4 was promoted over it"
        ):
            promote(settings, days[3], 3, 2, decision=decision, dag_id="retrain", run_id=run_id)
        assert _alias(client, settings) == 2
    refused = history.read(settings, settings.model_name)[-1]
    assert refused["outcome"] == "refused" and (refused["from_version"], refused["to_version"]) == (2, 3)
    rollback(settings, to_version=3, reason="v3 was fine for the new region after all")  # a person's choice
    assert _alias(client, settings) == 3


def test_a_cleared_run_whose_gate_picks_another_version_promotes_it(tmp_path):
    """A retrain run cleared whole keeps its run id; trained again on a corrected day (or other settings), its gate
    judges a new version. Its promote task found the run's earlier promotion and said "already": the gate's
    decision was dropped, with no row in the history. Only the same version's promotion is the run's own again."""
    from pipelines.release.promote import promote

    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    day, decision = dt.date(2026, 11, 21), {"decision": "promote"}
    first = promote(settings, day, 2, 1, decision=decision, dag_id="retrain", run_id="scheduled__D")
    assert first["changed"] and _alias(client, settings) == 2
    cleared = promote(settings, day, 3, 2, decision=decision, dag_id="retrain", run_id="scheduled__D")
    assert cleared["changed"] and (cleared["champion"], cleared["previous"]) == (3, 2)
    assert _alias(client, settings) == 3
    again = promote(settings, day, 3, 2, decision=decision, dag_id="retrain", run_id="scheduled__D")
    assert not again["changed"] and "promoted by this run" in again["already"]
    moves = [(r["to_version"], r["outcome"]) for r in history.read(settings, settings.model_name)]
    assert moves.count((3, "promoted")) == 1


def test_a_promotion_a_person_must_approve_or_rejected_is_refused(tmp_path):
    import datetime as dt

    from pipelines.release.promote import promote, record_rejection

    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    day, decision = dt.date(2026, 11, 20), {"decision": "promote", "approval": "required"}
    with pytest.raises(PromotionRefusedError, match="asks a person to approve .* nobody did"):
        promote(settings, day, 2, 1, decision=decision)
    assert _alias(client, settings) == 1
    first = record_rejection(
        settings, 2, 1, "ana", decision=decision, dag_id="retrain", run_id="scheduled__D"
    )
    # the task cleared and run again: its row, not a second one
    again = record_rejection(
        settings, 2, 1, "ana", decision=decision, dag_id="retrain", run_id="scheduled__D"
    )
    assert again["id"] == first["id"]
    with pytest.raises(PromotionRefusedError, match="was rejected by ana in the Airflow UI at"):
        promote(settings, day, 2, 1, decision=decision, approved_by="bob")
    assert _alias(client, settings) == 1
    assert [r["outcome"] for r in history.read(settings, settings.model_name)][-3:] == [
        "refused",
        "rejected",
        "refused",
    ]
    approved = promote(settings, day, 3, 1, decision=decision, approved_by="bob")  # another version, approved
    assert approved["changed"] and _alias(client, settings) == 3
    assert history.read(settings, settings.model_name)[-1]["trigger"] == "gate, approved by bob"


def _alias(client, settings):
    return int(tracking.version_by_alias(client, settings.model_name, "champion").version)


def test_an_alias_moved_outside_the_gate_is_found_refused_and_repaired(tmp_path):
    from rich.console import Console

    from pipelines.cli import app
    from pipelines.cli.summary import print_champion
    from pipelines.serving.holder import RegistryChampion

    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    # The side door: MLflow's alias editor (and "Promote model") call this same registry API.
    client.set_registered_model_alias(settings.model_name, "champion", "3")
    runner, env = CliRunner(), {"CT_STATE_DIR": str(tmp_path)}

    checked = runner.invoke(app, ["history", "--check"], env=env)
    assert checked.exit_code == 1 and "moved outside the gate" in checked.output
    with pytest.raises(audit.AliasMovedError, match="points at v3, but the promotion history"):
        move_champion(settings, 2, 1, trigger="test", reason="the gate said so")
    assert history.read(settings, settings.model_name)[-1]["outcome"] == "refused"
    with pytest.raises(audit.AliasMovedError):
        audit.champion(settings, client)  # what evaluate and drift compare against
    source = RegistryChampion(settings)  # serving: the history's champion, and the alias it refuses
    assert source.champion()[0] == 1 and source.alias() == 3
    console = Console(record=True, width=400)  # `pipelines summary`: the history's champion, and the problem
    shown = print_champion(console, settings, client)
    assert shown["champion"] == 1 and "points at v3" in shown["alias_problem"]
    assert f"Champion: {settings.model_name} v1" in console.export_text()

    repaired = runner.invoke(app, ["history", "--check", "--repair"], env=env)
    assert repaired.exit_code == 0, repaired.output
    assert _alias(client, settings) == 1
    assert runner.invoke(app, ["history", "--check"], env=env).exit_code == 0
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["from_version"], last["to_version"], last["outcome"]) == (
        "repair",
        3,
        1,
        "repaired",
    )
    # Adopting a version on the record instead: a rollback is the sanctioned way.
    client.set_registered_model_alias(settings.model_name, "champion", "3")
    rollback(settings, to_version=3, reason="adopt the manual move")
    assert audit.audit(settings, client).problem() is None and _alias(client, settings) == 3


def test_a_move_interrupted_either_side_of_the_alias_is_resolved(tmp_path, monkeypatch):
    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")

    def crash_on(outcome):
        real = history.append

        def append(settings, **row):
            if row.get("outcome") == outcome:
                raise KeyboardInterrupt("the worker was killed")
            return real(settings, **row)

        return append

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("the worker was killed")

    with monkeypatch.context() as patched:  # killed after the pending row, before the alias moved
        patched.setattr(type(client), "set_registered_model_alias", killed)
        with pytest.raises(KeyboardInterrupt):
            move_champion(settings, 2, 1, trigger="test", reason="killed before the alias")
    assert _alias(client, settings) == 1
    found = audit.audit(settings, client)
    assert [r["to_version"] for r in found.unresolved] == [2] and "not completed" in found.problem()
    checked = audit.check(settings)
    assert checked["consistent"] and len(checked["resolved"]) == 1
    assert history.read(settings, settings.model_name)[-1]["outcome"] == "abandoned"

    with monkeypatch.context() as patched:  # killed after the alias moved, before the completion
        patched.setattr(history, "append", crash_on(history.PROMOTED))
        with pytest.raises(KeyboardInterrupt):
            move_champion(settings, 3, 1, trigger="test", reason="killed after the alias")
    assert _alias(client, settings) == 3 and audit.audit(settings, client).unresolved
    # The alias is ahead of the record until the move is resolved: a move in progress, not a side door.
    assert audit.champion(settings, client) == 1 and audit.mirrored_alias(settings, client) == 1
    move_champion(settings, 3, 3, trigger="test", reason="the next promotion resolves it")  # resolves first
    rows = history.read(settings, settings.model_name)
    recovered = [r for r in rows if r["trigger"] == "recovery"]
    assert [r["outcome"] for r in recovered] == ["abandoned", "promoted"]
    assert history.champion(rows) == 3 and not history.unresolved(rows)

    # A rollback killed after the alias moved is completed as what it was: rolled back.
    with monkeypatch.context() as patched:
        patched.setattr(history, "append", crash_on(history.ROLLED_BACK))
        with pytest.raises(KeyboardInterrupt):
            rollback(settings, to_version=1, reason="killed after the alias")
    assert _alias(client, settings) == 1
    assert audit.check(settings)["consistent"]
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["outcome"], last["trigger"]) == ("rollback", "rolled_back", "recovery")
    assert history.champion(history.read(settings, settings.model_name)) == 1


def _hold(state: str, tracking_uri: str | None, held) -> None:
    import time

    from pipelines.release.history import exclusive

    settings = get_settings(state_dir=Path(state), mlflow_tracking_uri=tracking_uri)
    with exclusive(settings, "ct-train:transactions:retrain/2026-11-20/abc", "the training"):
        held.set()
        time.sleep(300)  # until killed


def test_exclusive_work_fails_a_second_holder_at_once_and_a_killed_holder_lets_go(tmp_path, registry_uri):
    """One training of a run key at a time, across processes (and hosts, on PostgreSQL); a holder killed with
    SIGKILL (an OOM, a lost worker) holds nothing: the database or the kernel releases it."""
    import signal
    import time

    from pipelines.release.history import LockHeldError, exclusive

    settings, _ = _registry(tmp_path, 0, registry_uri)
    name = "ct-train:transactions:retrain/2026-11-20/abc"
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path), registry_uri, held))
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(LockHeldError, match="the training is held by another process"):
            with exclusive(settings, name, "the training"):
                pass
        with exclusive(settings, name.replace("abc", "other"), "another run key"):  # per name
            pass
    finally:
        holder.kill()  # SIGKILL: no finally runs
        holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while True:  # PostgreSQL ends the killed client's backend once it sees the connection closed
        try:
            with exclusive(settings, name, "the training"):
                break
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# The holder's session ended by the server, waited for (up to 30 s) so that the unlock meets a closed connection
# however busy the cores: without the wait, the unlock could reach the session before it had ended.
_END_THE_HOLDERS_SESSION = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 30000)) FROM pg_locks "
    "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
)


def test_work_whose_lock_connection_dropped_while_it_ran_ends_as_it_ended_and_says_so(
    tmp_path, postgres, caplog
):
    """The training lock's connection is held for hours: a server restart or a proxy's idle timeout drops it,
    and the server releases the lock. The unlock's error then failed the training that had finished."""
    import logging

    import sqlalchemy as sa

    from pipelines.release.history import LockHeldError, database_url, exclusive

    settings, _ = _registry(tmp_path, 0, postgres.database(f"ct_{tmp_path.name[-20:].lower()}"))
    name = "ct-train:transactions:retrain/2026-11-20/abc"
    other = sa.create_engine(database_url(settings))
    with caplog.at_level(logging.ERROR, logger="pipelines.release.history"):
        with exclusive(settings, name, "the training"):
            with other.connect() as connection:  # the server ends the holder's session
                ended = connection.execute(sa.text(_END_THE_HOLDERS_SESSION)).scalar()
            assert ended == 1
    assert "the training: the connection holding its PostgreSQL advisory lock on" in caplog.text
    assert "dropped while it ran" in caplog.text
    with exclusive(settings, name, "the training"):  # released by the server: free again
        with pytest.raises(LockHeldError):
            with exclusive(settings, name, "the training"):
                pass
    with pytest.raises(RuntimeError, match="the work failed"):  # the work's own error is the one raised
        with exclusive(settings, name, "the training"):
            with other.connect() as connection:
                assert connection.execute(sa.text(_END_THE_HOLDERS_SESSION)).scalar() == 1
            raise RuntimeError("the work failed")
    other.dispose()


def _crash_after_the_alias(settings, monkeypatch, version: int, expected: int | None) -> None:
    """A promotion killed after its alias moved, before its completion was written."""
    real = history.append

    def append(settings, **row):
        if row.get("outcome") == history.PROMOTED:
            raise KeyboardInterrupt("the worker was killed")
        return real(settings, **row)

    with monkeypatch.context() as patched:
        patched.setattr(history, "append", append)
        with pytest.raises(KeyboardInterrupt):
            move_champion(settings, version, expected, trigger="test", reason="killed after the alias")


def test_a_rollback_after_a_promotion_killed_after_its_alias_moved_rolls_back_from_it(tmp_path, monkeypatch):
    """The rollback read the champion before the interrupted move was resolved: it aimed from the champion
    before it and always conflicted, telling a person to re-run the gate."""
    from pipelines.cli import app

    settings, client = _registry(tmp_path, 3)
    move_champion(settings, 1, None, trigger="test", reason="v1")
    move_champion(settings, 2, 1, trigger="test", reason="v2")
    _crash_after_the_alias(settings, monkeypatch, 3, 2)
    assert _alias(client, settings) == 3
    result = CliRunner().invoke(
        app, ["rollback", "--reason", "v3 is bad"], env={"CT_STATE_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert _alias(client, settings) == 2
    rows = history.read(settings, settings.model_name)
    assert (rows[-1]["from_version"], rows[-1]["to_version"], rows[-1]["outcome"]) == (3, 2, "rolled_back")
    assert not history.unresolved(rows)


def test_histories_written_before_rollbacks_had_their_own_outcome_still_guard_them(tmp_path):
    """Before 2026-11-30 a rollback was recorded as action rollback, outcome promoted: a re-run of the day of the
    version rolled back from brought it back, and a plain rollback went forward to it."""
    from pipelines.release.promote import promote

    settings, client = _registry(tmp_path, 3)
    for version, expected in ((1, None), (2, 1), (3, 2)):
        move_champion(settings, version, expected, trigger="test", reason=f"v{version}")
    row = {
        "model": settings.model_name,
        "action": "rollback",
        "from_version": 3,
        "to_version": 2,
        "expected_version": 3,
        "trigger": "cli",
        "reason": "v3 doubles false alarms",
    }
    pending = history.append(settings, **row, outcome="pending")
    client.set_registered_model_alias(settings.model_name, "champion", "2")
    history.append(settings, **row, outcome="promoted", ref=pending["id"])  # as the old writer did
    with pytest.raises(PromotionRefusedError, match="v3 was rolled back from"):
        promote(settings, dt.date(2026, 11, 20), 3, 2, decision={"decision": "promote"}, run_id="again")
    assert _alias(client, settings) == 2
    assert rollback(settings, reason="v2 is bad too")["champion"] == 1  # back, not forward to v3


def test_a_days_gate_run_again_keeps_the_record_of_a_version_a_rollback_made_champion(tmp_path):
    """Judged against itself on a re-run of its day, a champion made by ``rollback --to`` had its gate record
    overwritten with that reject."""
    from pipelines.evaluation.gate import gate
    from pipelines.evaluation.policy import policy_sha256
    from pipelines.release.promote import record_rejection

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nprimary_metric: roc_auc\nhigher_is_better: true\nmin_improvement: 0.005\n"
        "min_holdout_rows: 10\ntime_order: false\nno_champion: {action: promote}\napproval: required\n"
    )
    settings, client = _registry(tmp_path, 2, policy_path=policy)
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")

    def judged(champion: int, chal_auc: float, champ_auc: float) -> tuple[dict, dict]:
        evaluation = {
            "challenger": {"version": 2, "metrics": {"roc_auc": chal_auc}},
            "champion": {"version": champion, "metrics": {"roc_auc": champ_auc}},
            "holdout_rows": 1000,
            "comparison": {
                "ci_low": 0.001,
                "ci_high": 0.03,
                "confidence": 0.95,
                "resamples": 1000,
                "rows_resampled": 1000,
            },
            "policy_sha256": policy_sha256(policy),
        }
        return evaluation, {"drift_share": 0.0, "columns": {}, "reference_version": champion}

    def tag() -> str | None:
        return client.get_model_version(settings.model_name, "2").tags.get("gate.decision")

    day = dt.date(2026, 11, 20)
    first = gate(settings, day, *judged(1, 0.80, 0.75))
    assert first["decision"] == "promote" and tag() == "promote"
    record_rejection(settings, 2, 1, "ana", decision=first, dag_id="retrain", run_id="scheduled")
    rollback(settings, to_version=2, reason="v2 is known good after all")
    again = gate(settings, day, *judged(2, 0.80, 0.80))  # the day again: v2 is challenger and champion
    assert again["decision"] == "reject"
    assert tag() == "promote"  # the record of its own day stays on the champion


def test_a_long_trigger_is_cut_in_its_column_and_kept_whole_in_the_reason(tmp_path, registry_uri):
    """The rollback DAG's trigger names the user: an e-mail or an OIDC subject ran past the column's 64
    characters, and PostgreSQL refused the whole rollback."""
    settings, client = _registry(tmp_path, 2, registry_uri)
    move_champion(settings, 1, None, trigger="test", reason="v1")
    move_champion(settings, 2, 1, trigger="test", reason="v2")
    trigger = "rollback DAG (firstname.lastname@platform-team.example.com-oidc-subject)"
    rollback(settings, reason="v2 is bad", trigger=trigger, dag_id="rollback", run_id="manual__1")
    assert _alias(client, settings) == 1
    last = history.read(settings, settings.model_name)[-1]
    assert len(last["trigger"]) == 64 and last["trigger"].endswith("…")
    assert last["reason"] == f"v2 is bad [trigger: {trigger}]"


def test_a_repair_to_a_champion_deleted_from_the_registry_is_refused_by_name(tmp_path):
    """--check advised --repair, which wrote its pending row and failed on the missing version: a traceback, and
    a pending row left behind."""
    from pipelines.cli import app

    settings, client = _registry(tmp_path, 2)
    move_champion(settings, 1, None, trigger="test", reason="v1")
    move_champion(settings, 2, 1, trigger="test", reason="v2")
    client.delete_model_version(settings.model_name, "2")  # its alias goes with it
    env = {"CT_STATE_DIR": str(tmp_path)}
    repaired = CliRunner().invoke(app, ["history", "--check", "--repair"], env=env)
    assert repaired.exit_code == 1, repaired.output
    assert (
        "v2, the champion on the promotion history" in repaired.output
        and "rollback --to N" in repaired.output
    )
    assert not history.unresolved(history.read(settings, settings.model_name))
    rollback(settings, to_version=1, reason="v2 was deleted")
    assert audit.check(settings)["consistent"] and _alias(client, settings) == 1


def test_a_promotion_lock_held_past_the_wait_is_a_named_timeout_on_both_databases(
    tmp_path, registry_uri, monkeypatch
):
    """PostgreSQL's advisory lock waited for ever (the README said 120 s, which only SQLite's file lock kept):
    a promotion stuck behind a hung holder hung its task with it."""
    import threading

    settings, _ = _registry(tmp_path, 1, registry_uri)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with history.promotion_lock(settings, settings.model_name):
            held.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=30)
        monkeypatch.setattr(history, "LOCK_TIMEOUT_S", 1)
        with (
            pytest.raises(history.PromotionLockTimeoutError, match="held its lock .* for more than 1 s"),
            history.promotion_lock(settings, settings.model_name),
        ):
            pass
    finally:
        release.set()
        thread.join(timeout=30)
    with history.promotion_lock(settings, settings.model_name):  # free again once the holder lets go
        pass


def test_a_rollback_asked_from_a_champion_replaced_since_moves_nothing_and_is_a_conflict(tmp_path):
    """The Models view's form posted again (a refreshed page, a double click) after its rollback ran and a
    promotion followed: it rolled the newer champion back, under the first request's reason."""
    from pipelines.release.promote import ChampionChangedError

    settings, client = _registry(tmp_path, 3)
    for version, expected in ((1, None), (3, 1)):
        move_champion(settings, version, expected, trigger="test", reason=f"v{version}")
    asked = {"reason": "v3 doubles false alarms", "trigger": "dag", "dag_id": "rollback", "from_version": 3}
    first = rollback(settings, 1, run_id="manual__1", **asked)
    assert first["changed"] and _alias(client, settings) == 1
    move_champion(settings, 2, 1, trigger="gate", reason="v2 beats v1")
    with pytest.raises(ChampionChangedError):
        rollback(settings, 1, run_id="manual__2", **asked)
    assert _alias(client, settings) == 2
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["outcome"], last["expected_version"]) == ("rollback", "conflict", 3)


def test_a_days_drift_report_that_made_a_champion_stays_when_the_day_registers_another_version(tmp_path):
    """v1 made champion by its day; the day run again on corrected data registers v2 (never champion): its drift
    report went over the day's, and the evidence that made v1 champion was gone. It goes on v2's run only."""
    import json

    import mlflow

    from pipelines.data import storage
    from pipelines.evaluation.drift import write_reports

    settings, client = _registry(tmp_path, 2)
    day = storage.reports_uri(settings.resolved_data_root, settings.dataset, dt.date(2026, 11, 20))

    def report(version: int) -> bool:
        run_id = client.get_model_version(settings.model_name, str(version)).run_id
        summary = {"drift_share": 0.1 * version, "drifted_columns": version, "challenger_version": version}
        return write_reports(settings, client, run_id, day, version, f"<p>v{version}</p>", summary)

    assert report(1)  # the day's first run: its report is the day's
    move_champion(settings, 1, None, trigger="test", reason="the gate promoted the day's v1")
    assert not report(2)  # the day again: v2's report goes on its run only
    assert json.loads(Path(day, "drift.json").read_text())["challenger_version"] == 1
    assert Path(day, "drift.html").read_text() == "<p>v1</p>"
    run_2 = client.get_model_version(settings.model_name, "2").run_id
    on_run = mlflow.artifacts.download_artifacts(
        run_id=run_2, artifact_path="drift", dst_path=str(tmp_path / "r2")
    )
    assert Path(on_run, "drift.html").read_text() == "<p>v2</p>"
    assert client.get_run(run_2).data.metrics["drifted_columns"] == 2
    assert report(1)  # the champion's own re-run: the day's report is its own, and nothing is written over it
    assert Path(day, "drift.html").read_text() == "<p>v1</p>"
