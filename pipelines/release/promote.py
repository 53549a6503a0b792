"""Promote: move the ``champion`` alias to the challenger, if the champion is still the one we judged.

The promotion history is the record of which version is champion (:mod:`pipelines.release.audit`): a
move is written ahead (a pending row, the alias, the completion), and a champion alias moved outside the
gate is refused until it is set right. Before anything moves, the target version's files are checked
against the sha256 manifest stored at registration; a version that fails is refused and the refusal is recorded. In a dry run the attempt is
recorded as ``dry_run`` ("would promote") and the alias stays where it is. After the alias moves, the
serving replicas at ``CT_SERVE_URLS`` (when set) are asked to reload at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable
from typing import Any

from pipelines.data import runlog
from pipelines.release import audit, history, integrity, tracking
from pipelines.release.notify import notify_serving
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class ChampionChangedError(RuntimeError):
    """The champion moved since the gate compared against it; the decision no longer holds."""


class NoSuchVersionError(ValueError):
    """The registry has no such version of the model (never registered, or deleted since)."""


class RollbackRequestError(ValueError):
    """A rollback that cannot be done as asked: no reason given, no champion, or no previous champion."""


class PromotionRefusedError(ValueError):
    """A gate's promotion that a person's word stands against: a rollback from the version, a rejection, or an
    approval the policy asks for and nobody gave. Recorded in the history as ``refused``."""


def compare_and_set(current: int | None, target: int, expected: int | None, dry_run: bool = False) -> str:
    """The outcome of moving the champion from ``current`` to ``target`` when ``expected`` was judged.

    ``unchanged`` (already there), ``conflict`` (the champion moved since), ``dry_run`` (would move) or
    ``promoted``. Pure: :func:`move_champion` calls it under the promotion lock with the champion it read.
    """
    if current == target:
        return "unchanged"
    if current != expected:
        return "conflict"
    return "dry_run" if dry_run else "promoted"


def is_rollback(row: dict[str, Any]) -> bool:
    """Whether a history row is a completed rollback: ``rolled_back``, or ``promoted`` with the action
    ``rollback`` as histories written before 2026-11-30 recorded one."""
    return row["outcome"] == history.ROLLED_BACK or (
        row.get("action") == "rollback" and row["outcome"] in history.MOVED
    )


def previous_in_history(rows: list[dict[str, Any]], current: int) -> tuple[bool, int | None]:
    """(found, version): the champion before ``current``, versions rolled back from skipped.

    The history's moves replayed as a stack of champions: a promotion pushes its version, a rollback pops the
    version it left (down to its target when that was champion before, else it pushes the target). After
    v1, v2, v3 and a rollback to v2, the champion before v2 is v1, not v3, the version just rolled back from.
    """
    stack: list[int] = []
    for row in rows:
        moved = row["outcome"] in history.MOVED and row["from_version"] != row["to_version"]
        if not moved or row.get("action") == "repair":
            continue
        left, target = row["from_version"], row["to_version"]
        if is_rollback(row):
            if stack and stack[-1] == left:
                stack.pop()
            if target in stack:
                del stack[stack.index(target) + 1 :]
                continue
        elif left is not None and (not stack or stack[-1] != left):
            stack.append(left)
        stack.append(target)
    if stack and stack[-1] == current:
        return True, stack[-2] if len(stack) >= 2 else None
    return False, None


def promotion_refusal(
    rows: list[dict[str, Any]],
    version: int,
    expected: int | None,
    approval_required: bool,
    approved_by: str | None,
) -> str | None:
    """Why a gate's promotion of ``version`` (judged against ``expected``) must not happen, or None.

    A version that was champion and was moved away from (rolled back from, or replaced by a later promotion)
    comes back only by a person's ``rollback --to``: a re-run of its day, or a replay of its decision, passes
    the gate on the same figures, and would undo the rollback, or bring back a version a person's rollback
    skipped (v1..v4, ``rollback --to 2``: a re-run of v3's day judges v3 against v2 again). A promotion a
    person rejected, or one the policy asks a person to approve and nobody did, does not happen either.
    """
    for row in reversed(rows):
        if row["from_version"] != version or row["outcome"] not in history.MOVED:
            continue
        if is_rollback(row):
            return (
                f"v{version} was rolled back from at {row['at']} ({row['reason']}): the gate does not bring "
                f"back a version a person rolled back; `pipelines rollback --to {version} --reason ...` does"
            )
        if row["action"] == "promote":
            return (
                f"v{version} was champion until {row['at']}, when v{row['to_version']} was promoted over it "
                f"({row['reason']}): the gate does not bring back a champion it replaced (a re-run of its day "
                f"would undo a later rollback that skipped it); `pipelines rollback --to {version} --reason ...` "
                "does"
            )
    for row in reversed(rows):
        if (
            row["outcome"] == "rejected"
            and row["to_version"] == version
            and row["expected_version"] == expected
        ):
            return f"the promotion of v{version} over v{expected} was {row['reason']} at {row['at']}"
    if approval_required and not approved_by:
        return (
            "the policy asks a person to approve this promotion (approval: required) and nobody did: approve "
            "it in the Airflow UI, or name the approver (pipelines promote --approved-by NAME)"
        )
    return None


def approval_trigger(reason: str, approved_by: str | None) -> str:
    """The history's trigger of a promotion: what asked for it, and who approved it (a long one is cut in the
    trigger column and kept whole in the reason, :func:`history.append`)."""
    return f"{reason}, approved by {approved_by}" if approved_by else reason


def move_champion(
    settings: Settings,
    version: int,
    expected_champion: int | None,
    *,
    action: str = "promote",
    trigger: str = "gate",
    reason: str | None = None,
    decision: dict[str, Any] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
    refusal: Callable[[list[dict[str, Any]]], str | None] | None = None,
) -> dict[str, Any]:
    """Compare-and-set the champion alias under the promotion lock, and record the attempt.

    The target's files are verified first; then the champion is read again under the lock, and the alias
    moves only if it still points at ``expected_champion`` and ``refusal`` (given the history, under the lock)
    finds no reason against it. Every attempt, including a refused one, is appended to the history.
    """
    client = tracking.configure(settings)
    name = settings.model_name
    _check_known(client, name, version)  # an unknown version fails here, before anything moves
    attempt = {
        "model": name,
        "action": action,
        "to_version": version,
        "expected_version": expected_champion,
        "trigger": trigger,
        "reason": reason,
        "decision": decision,
        "dag_id": dag_id,
        "run_id": run_id,
    }
    with tempfile.TemporaryDirectory(prefix="ct-promote-") as tmp:
        try:
            integrity.fetch_verified(client, name, version, tmp)
        except integrity.IntegrityError as exc:
            # The champion it stays, read under the lock: not while another move is half done.
            with history.promotion_lock(settings, name):
                refused = attempt | {
                    "from_version": history.champion(history.read(settings, name)),
                    "reason": f"{reason or ''} [refused: {exc}]".strip(),
                    "outcome": "refused",
                }
                history.append(settings, **refused)
            raise
    with history.promotion_lock(settings, name):
        audit.resolve(settings, client)  # a move interrupted before its completion was written
        found = audit.audit(settings, client)
        if found.alias_moved and action != "rollback":  # a rollback is how a person sets it right
            refused = attempt | {"from_version": found.recorded, "outcome": "refused"}
            history.append(settings, **refused | {"reason": f"{reason or ''} [refused: alias moved]".strip()})
            raise audit.AliasMovedError(found.problem())
        current_version = found.recorded
        attempt["from_version"] = current_version
        outcome = compare_and_set(current_version, version, expected_champion, dry_run)
        if outcome in ("promoted", "dry_run"):  # only a move: a version already champion stays "unchanged"
            _check_refusal(settings, attempt, refusal)
        if outcome == "unchanged" and found.alias != version:
            outcome = "promoted"  # the record is right, the alias is not: move it back on the record
        if outcome == "promoted":  # written ahead: pending, then the alias moves, then the completion
            pending = history.append(settings, **attempt, outcome=history.PENDING)
            _move_alias(client, name, version, current_version, f"{action}:{trigger}")
            history.append(settings, **attempt, outcome=history.completion(action), ref=pending["id"])
        else:
            history.append(settings, **attempt, outcome=outcome)
        if outcome in ("promoted", "unchanged"):
            _retire_challenger(client, name, version)
        if outcome == "unchanged":
            log.info("version %s is already champion of %s", version, name)
            return {"name": name, "champion": version, "previous": current_version, "changed": False}
        if outcome == "conflict":
            again = "run the rollback again" if action == "rollback" else "re-run evaluate and gate"
            raise ChampionChangedError(
                f"champion of {name} is v{current_version}, but v{expected_champion} was expected "
                f"({action} to v{version} refused); {again}"
            )
        if outcome == "dry_run":
            log.info("dry run: would %s %s v%s (champion stays v%s)", action, name, version, current_version)
            return {
                "name": name,
                "champion": current_version,
                "previous": current_version,
                "changed": False,
                "would_promote": version,
                "dry_run": True,
            }
    log.info("%s: %s v%s is champion (was v%s)", action, name, version, current_version)
    result = {"name": name, "champion": version, "previous": current_version, "changed": True}
    serving = notify_serving(settings)
    return result if serving is None else result | {"serving": serving}


def _check_refusal(
    settings: Settings,
    attempt: dict[str, Any],
    refusal: Callable[[list[dict[str, Any]]], str | None] | None,
) -> None:
    """Under the promotion lock: a move ``refusal`` finds a reason against is recorded as refused, and raised."""
    if refusal is None or (why := refusal(history.read(settings, attempt["model"]))) is None:
        return
    reason = f"{attempt['reason'] or ''} [refused: {why}]".strip()
    history.append(settings, **attempt | {"reason": reason}, outcome="refused")
    raise PromotionRefusedError(
        f"{attempt['action']} of {attempt['model']} v{attempt['to_version']} refused: {why}"
    )


def _check_known(client: Any, name: str, version: int) -> None:
    """:class:`NoSuchVersionError` naming the version when the registry has no such version of the model."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise NoSuchVersionError(f"{name} has no version {version}") from None


def _move_alias(client: Any, name: str, version: int, previous: int | None, promoted_by: str) -> None:
    """The version's promotion tags, then the alias: the alias move is the last step that can fail."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(version), "promoted_at", now)
    client.set_model_version_tag(name, str(version), "promoted_by", promoted_by)
    client.set_model_version_tag(name, str(version), "previous_champion", str(previous))
    client.set_registered_model_alias(name, tracking.CHAMPION, str(version))


def _retire_challenger(client: Any, name: str, version: int) -> None:
    """A version that is champion is no longer the challenger: its ``challenger`` alias goes (if it has it)."""
    if tracking.CHALLENGER in client.get_model_version(name, str(version)).aliases:
        client.delete_registered_model_alias(name, tracking.CHALLENGER)
        log.info("%s v%s is champion: its challenger alias is removed", name, version)


@runlog.stage("promote")
def promote(
    settings: Settings,
    logical_date: dt.date,
    version: int,
    expected_champion: int | None,
    reason: str = "gate",
    decision: dict[str, Any] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    approved_by: str | None = None,
) -> dict[str, Any]:
    """The gate's promotion: compare-and-set ``champion`` from ``expected_champion`` to ``version``.

    A decision taken in a dry run (the policy's ``dry_run`` or ``CT_PROMOTION_DRY_RUN``) is recorded and
    moves nothing. ``approved_by`` names the person who approved it, when the policy asked for one.
    """
    dry_run = settings.promotion_dry_run or bool((decision or {}).get("dry_run"))
    if decision is not None and decision.get("decision") != "promote":
        raise ValueError(f"the gate rejected v{version}; a rejected decision cannot be promoted")
    # The same run again (a cleared task or run): its promotion is done. Moving again, after a rollback set the
    # champion back to the version this run's gate compared with, would undo the rollback.
    # Only its promotion of this version: a run cleared whole retrains, and its gate may pick another version
    # (a corrected day, other settings), which is a decision of its own.
    if (done := _done_by_this_run(settings, history.PROMOTED, dag_id, run_id, version)) is not None:
        return done
    approval_required = (decision or {}).get("approval") == "required" and not dry_run
    return move_champion(
        settings,
        version,
        expected_champion,
        action="promote",
        trigger=approval_trigger(reason, approved_by),
        reason=f"gate decision for {logical_date}",
        decision=decision,
        dag_id=dag_id,
        run_id=run_id,
        dry_run=dry_run,
        refusal=lambda rows: promotion_refusal(
            rows, version, expected_champion, approval_required, approved_by
        ),
    )


def record_rejection(
    settings: Settings,
    version: int,
    champion: int | None,
    rejected_by: str,
    decision: dict[str, Any] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """A person rejected a promotion the gate allowed: the champion stays, and the history says who said no.

    Once per DAG run: the same run again (a cleared task) returns the row it wrote, where each clear appended
    another "rejected" to the history."""
    if run_id is not None:
        for row in reversed(history.read(settings, settings.model_name)):
            if (row["outcome"], row["dag_id"], row["run_id"], row["to_version"]) == (
                "rejected",
                dag_id,
                run_id,
                version,
            ):
                return row
    return history.append(
        settings,
        model=settings.model_name,
        action="approval",
        from_version=champion,
        to_version=version,
        expected_version=champion,
        outcome="rejected",
        trigger="approval",
        reason=f"rejected by {rejected_by} in the Airflow UI",
        decision=decision,
        dag_id=dag_id,
        run_id=run_id,
    )


def previous_champion(settings: Settings, current: int) -> int | None:
    """The champion before ``current``: from the history, else from the version's tag."""
    found, previous = previous_in_history(history.read(settings, settings.model_name), current)
    if found:
        return previous
    client = tracking.configure(settings)
    tag = client.get_model_version(settings.model_name, str(current)).tags.get("previous_champion")
    return int(tag) if tag and tag != "None" else None


def _done_by_this_run(
    settings: Settings, outcome: str, dag_id: str | None, run_id: str | None, to_version: int | None = None
) -> dict[str, Any] | None:
    """What this DAG run's completed move (``outcome``: promoted, rolled_back; to ``to_version`` when given) left,
    as a result that changed nothing now; None when the run has none in the history (or is no DAG run)."""
    if run_id is None:
        return None
    for row in reversed(history.read(settings, settings.model_name)):
        if (
            row["outcome"] == outcome
            and row["run_id"] == run_id
            and row["dag_id"] == dag_id
            and to_version in (None, row["to_version"])
        ):
            log.info(
                "%s: run %s moved %s from v%s to v%s already, at %s; nothing to do",
                row["action"],
                run_id,
                settings.model_name,
                row["from_version"],
                row["to_version"],
                row["at"],
            )
            return {
                "name": settings.model_name,
                "champion": row["to_version"],
                "previous": row["from_version"],
                "changed": False,
                "already": f"{outcome.replace('_', ' ')} by this run at {row['at']}",
            }
    return None


def rollback(
    settings: Settings,
    to_version: int | None = None,
    reason: str = "",
    trigger: str = "cli",
    dag_id: str | None = None,
    run_id: str | None = None,
    from_version: int | None = None,
) -> dict[str, Any]:
    """Make ``to_version`` (default: the previous champion) the champion, through the same compare-and-set.

    ``from_version``: the champion the person asking saw (the Models view sends it). The move then happens only
    while that version is champion; another one is a recorded ``conflict`` and nothing moves. Without it, a form
    posted again (a refreshed page, a double click, a run queued behind another) rolled back whichever version
    had become champion since, under the first request's reason."""
    if not reason.strip():
        raise RollbackRequestError("a rollback needs a reason; it is kept in the promotion history")
    # The same run again (a cleared task, a re-run): its rollback is done. Rolling back "to the previous
    # champion" a second time would undo it (the previous champion is then the version rolled back from).
    if (done := _done_by_this_run(settings, history.ROLLED_BACK, dag_id, run_id)) is not None:
        return done
    client = tracking.configure(settings)
    # A move interrupted after its alias moved is completed on the record first: the version to roll back from is
    # the one it made champion (read before it, the rollback aimed from the one before and always conflicted).
    with history.promotion_lock(settings, settings.model_name):
        audit.resolve(settings, client)
    current_version = audit.audit(settings, client).recorded  # the champion on the record, not the alias
    if current_version is None and to_version is None:
        raise RollbackRequestError(
            f"{settings.model_name} has no champion on the record: there is nothing to roll back; name a "
            "version with --to"
        )
    target = to_version
    if target is None:
        assert current_version is not None
        target = previous_champion(settings, current_version)
    if target is None:
        raise RollbackRequestError(
            f"v{current_version} of {settings.model_name} has no previous champion; name one with --to"
        )
    return move_champion(
        settings,
        target,
        current_version if from_version is None else from_version,
        action="rollback",
        trigger=trigger,
        reason=reason,
        dag_id=dag_id,
        run_id=run_id,
    )
