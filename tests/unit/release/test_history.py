"""The promotion history (append-only, newest last) and the promotion lock, on a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from pipelines.release import history
from pipelines.settings import get_settings


@pytest.fixture
def settings(tmp_path):
    return get_settings(state_dir=tmp_path / "state")


def _row(to_version: int, outcome: str = "promoted", **more):
    return {
        "model": "m",
        "action": "promote",
        "to_version": to_version,
        "outcome": outcome,
        "trigger": "test",
    } | more


def test_rows_are_appended_and_read_back_oldest_first(settings):
    written = [history.append(settings, **_row(v, from_version=v - 1)) for v in (2, 3, 4)]
    history.append(settings, **_row(9, model="other"))
    rows = history.read(settings, "m")
    assert [r["to_version"] for r in rows] == [2, 3, 4] and [r["id"] for r in rows] == [
        w["id"] for w in written
    ]
    assert [r["to_version"] for r in history.read(settings, "m", limit=2)] == [3, 4]  # the newest two
    assert len(history.read(settings)) == 4
    assert rows[0]["at"].endswith("+00:00") and rows[0]["from_version"] == 1


def test_the_champion_as_of_a_moment_is_the_last_move_written_up_to_it(settings):
    history.append(settings, **_row(1, at="2026-11-30T10:00:00.000+00:00"))
    history.append(settings, **_row(2, at="2026-11-30T12:00:00.000+00:00"))
    history.append(settings, **_row(1, at="2026-11-30T14:00:00.000+00:00", action="rollback"))
    rows = history.read(settings, "m")
    at = dt.datetime.fromisoformat
    assert history.champion(history.as_of(rows, at("2026-11-30T09:59:59+00:00"))) is None
    assert history.champion(history.as_of(rows, at("2026-11-30T12:00:00+00:00"))) == 2
    assert history.champion(history.as_of(rows, at("2026-11-30T13:00:00+01:00"))) == 2  # any zone
    assert history.champion(history.as_of(rows, at("2026-11-30T15:00:00+00:00"))) == 1


def test_a_decision_is_kept_as_json_and_unknown_fields_are_refused(settings):
    history.append(
        settings, **_row(2, decision={"decision": "promote", "rules": [{"rule": "min_holdout_rows"}]})
    )
    (row,) = history.read(settings, "m")
    assert json.loads(row["decision"])["rules"][0]["rule"] == "min_holdout_rows"
    with pytest.raises(ValueError, match=r"unknown history fields: \['approved'\]"):
        history.append(settings, **_row(3, approved=True))


def test_the_history_lives_beside_the_registry_or_where_it_is_told(tmp_path):
    embedded = get_settings(state_dir=tmp_path)
    assert history.database_url(embedded) == f"sqlite:///{tmp_path / 'mlflow' / 'promotions.db'}"
    team = get_settings(mlflow_tracking_uri="postgresql://ct@db/mlflow")
    assert history.database_url(team) == "postgresql://ct@db/mlflow"
    told = get_settings(mlflow_tracking_uri="http://mlflow:5000", promotion_db="postgresql://ct@db/history")
    assert history.database_url(told) == "postgresql://ct@db/history"
    with pytest.raises(ValueError, match="set CT_PROMOTION_DB"):
        history.database_url(get_settings(mlflow_tracking_uri="http://mlflow:5000"))


def test_the_promotion_lock_admits_one_holder_at_a_time(settings, monkeypatch):
    entered, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with history.promotion_lock(settings, "m"):
            entered.set()
            release.wait(timeout=60)

    def second() -> None:
        with history.promotion_lock(settings, "m"):
            second_in.set()

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(timeout=30)
    with monkeypatch.context() as patched:  # one try, no waiting: refused while the first holds the lock
        patched.setattr(history, "LOCK_TIMEOUT_S", 0)
        with (
            pytest.raises(
                history.PromotionLockTimeoutError, match="held its lock .* nothing was read or moved"
            ),
            history.promotion_lock(settings, "m"),
        ):
            pass
    waiter = threading.Thread(target=second)
    waiter.start()
    release.set()
    assert second_in.wait(timeout=30)  # and a waiter is admitted once it lets go
    holder.join(timeout=30)
    waiter.join(timeout=30)
    with history.promotion_lock(settings, "another-model"):  # locks are per model
        pass


def test_each_move_is_completed_by_its_own_outcome_and_all_of_them_say_who_is_champion():
    assert [history.completion(a) for a in ("promote", "rollback", "repair")] == [
        "promoted",
        "rolled_back",
        "repaired",
    ]
    with pytest.raises(ValueError, match="'approval' does not move the champion"):
        history.completion("approval")
    rows = [
        _row(1),
        _row(2),
        _row(1, "rolled_back", action="rollback"),
        _row(3, "pending"),
        _row(3, "abandoned"),
    ]
    assert history.champion(rows) == 1
    assert history.champion([*rows, _row(2, "repaired", action="repair")]) == 2
    assert history.champion([_row(4, "conflict"), _row(5, "refused")]) is None
