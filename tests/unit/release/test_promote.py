"""Promotion's pure decisions: the compare-and-set outcome, the previous champion, the history's trigger."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.release.history import completion
from pipelines.release.promote import approval_trigger, compare_and_set, previous_in_history, promote


@pytest.mark.parametrize(
    ("current", "target", "expected", "dry_run", "outcome"),
    [
        (1, 2, 1, False, "promoted"),
        (None, 1, None, False, "promoted"),  # the first champion
        (1, 2, 1, True, "dry_run"),
        (2, 2, 1, False, "unchanged"),  # already there: nothing to move, whatever was expected
        (3, 2, 1, False, "conflict"),  # the champion moved since the gate judged
        (None, 2, 1, False, "conflict"),
        (1, 2, None, False, "conflict"),
        (3, 2, 1, True, "conflict"),  # a dry run reports a conflict too
    ],
)
def test_compare_and_set(current, target, expected, dry_run, outcome):
    assert compare_and_set(current, target, expected, dry_run) == outcome


def test_the_previous_champion_is_the_one_the_newest_promotion_replaced():
    rows = [
        {"outcome": "promoted", "from_version": None, "to_version": 1},
        {"outcome": "promoted", "from_version": 1, "to_version": 2},
        {"outcome": "conflict", "from_version": 2, "to_version": 3},
        {"outcome": "promoted", "from_version": 2, "to_version": 3},
        {"outcome": "rolled_back", "from_version": 3, "to_version": 1},  # a rollback to v1
        {"outcome": "promoted", "from_version": 1, "to_version": 3},
    ]
    assert previous_in_history(rows, 3) == (True, 1)
    assert previous_in_history(rows[:2], 2) == (True, 1)
    assert previous_in_history(rows[:5], 1) == (True, None)  # not v3, rolled back from, nor v2, below it
    assert previous_in_history(rows[:1], 1) == (True, None)  # the first champion replaced nobody
    assert previous_in_history(rows, 7) == (False, None)  # not champion on the record: its tag will say


def test_the_previous_champion_skips_versions_rolled_back_from():
    def move(action, left, target):
        return {
            "action": action,
            "from_version": left,
            "to_version": target,
            "outcome": completion(action),
        }

    promotions = [move("promote", None, 1), move("promote", 1, 2), move("promote", 2, 3)]
    assert previous_in_history(promotions, 3) == (True, 2)
    back = [*promotions, move("rollback", 3, 2)]
    assert previous_in_history(back, 2) == (True, 1)
    assert previous_in_history([*back, move("rollback", 2, 1)], 1) == (True, None)  # none: not v2, not v3
    assert previous_in_history(back, 7) == (False, None)  # never champion on the record: the tag will say
    # rollback --to a version never champion: the one before it is the one before the version left
    assert previous_in_history([*promotions, move("rollback", 3, 5)], 5) == (True, 2)
    # a promotion after a rollback stacks on the version rolled back to
    assert previous_in_history([*back, move("promote", 2, 4)], 4) == (True, 2)


def test_the_trigger_names_the_approver_and_fits_the_history():
    assert approval_trigger("gate", None) == "gate"
    assert approval_trigger("gate", "ana") == "gate, approved by ana"
    assert approval_trigger("gate", "x" * 100) == "gate, approved by " + "x" * 100  # the history cuts it


def test_a_rejected_decision_cannot_be_promoted(settings):
    with pytest.raises(ValueError, match="the gate rejected v2"):
        promote(settings, dt.date(2026, 11, 20), 2, 1, decision={"decision": "reject"})


def test_a_move_that_set_the_alias_right_is_not_a_previous_champion():
    from pipelines.release.promote import previous_in_history

    rows = [
        {"outcome": "promoted", "action": "promote", "from_version": 1, "to_version": 2},
        {"outcome": "promoted", "action": "rollback", "from_version": 2, "to_version": 2},  # alias set right
    ]
    assert previous_in_history(rows, 2) == (True, 1)


def test_an_alias_ahead_of_the_record_by_a_move_in_progress_is_not_a_side_door():
    from pipelines.release.audit import Audit

    pending = {"id": 7, "to_version": 3}
    in_progress = Audit("m", alias=3, recorded=2, unresolved=[pending])
    assert not in_progress.alias_moved and "not completed" in in_progress.problem()
    side_door = Audit("m", alias=5, recorded=2, unresolved=[pending])
    assert side_door.alias_moved and "moved outside the gate" in side_door.problem()
    assert Audit("m", alias=2, recorded=2).problem() is None
