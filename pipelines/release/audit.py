"""The champion alias against the promotion history: side doors found, half-done moves resolved.

The promotion history (:mod:`pipelines.release.history`) says which version is champion; the MLflow alias
mirrors it for people and tools. MLflow's UI lets anyone move an alias (its alias editor, "Promote
model"), and such a move writes no history row. So every reader that acts on the champion compares the
two: promote and rollback refuse to build on a moved alias, serving keeps serving the history's champion
(and reports the alias it refused), evaluate and drift refuse to compare against it, the retrain DAG checks
at its start, and ``pipelines history --check`` reports it (``--repair`` moves the alias back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipelines.release import history, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class AliasMovedError(RuntimeError):
    """The champion alias does not point where the promotion history says: it was moved outside the gate."""


@dataclass(frozen=True)
class Audit:
    model: str
    alias: int | None  # where the champion alias points
    recorded: int | None  # the champion by the promotion history
    unresolved: list[dict[str, Any]] = field(default_factory=list)

    @property
    def alias_moved(self) -> bool:
        """The alias disagrees with the record, and no move in progress (or interrupted) explains it."""
        in_progress = any(row["to_version"] == self.alias for row in self.unresolved)
        return self.alias != self.recorded and not in_progress

    def problem(self) -> str | None:
        """What is wrong, in words a person can act on; None when alias and history agree."""
        if self.alias_moved:
            return (
                f"the champion alias of {self.model} points at {_v(self.alias)}, but the promotion history's "
                f"last completed promotion is {_v(self.recorded)}: the alias was moved outside the gate. "
                "Run `pipelines history --check --repair` to move it back, or `pipelines rollback --to N "
                "--reason ...` to make a version champion on the record"
            )
        if self.unresolved:
            ids = ", ".join(f"#{row['id']}" for row in self.unresolved)
            return (
                f"promotion(s) {ids} of {self.model} were started and not completed (in progress, or "
                "interrupted: `pipelines history --check` resolves them)"
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "history": self.recorded,
            "unresolved": [row["id"] for row in self.unresolved],
            "consistent": self.problem() is None,
            "problem": self.problem(),
        }


def _v(version: int | None) -> str:
    return "no version" if version is None else f"v{version}"


def alias_version(client: Any, name: str) -> int | None:
    found = tracking.version_by_alias(client, name, tracking.CHAMPION)
    return None if found is None else int(found.version)


def audit(settings: Settings, client: Any) -> Audit:
    """Where the alias points, where the history says it should, and the moves left half-done."""
    name = settings.model_name
    rows = history.read(settings, name)
    return Audit(name, alias_version(client, name), history.champion(rows), history.unresolved(rows))


def champion(settings: Settings, client: Any) -> int | None:
    """The champion to compare against: the history's, refused when the alias was moved outside the gate."""
    found = audit(settings, client)
    if found.alias_moved:
        raise AliasMovedError(found.problem())
    return found.recorded


def mirrored_alias(settings: Settings, client: Any) -> int | None:
    """Where the alias points; the record's champion while a move to the alias's version is in progress."""
    found = audit(settings, client)
    return found.recorded if found.alias != found.recorded and not found.alias_moved else found.alias


def resolve(settings: Settings, client: Any) -> list[dict[str, Any]]:
    """Complete each half-done move from where the alias is; call under the promotion lock.

    A pending row whose target the alias points at did move: its action's completion (``promoted``,
    ``rolled_back`` or ``repaired``) completes it. Otherwise
    the alias never moved (or moved elsewhere, which :func:`audit` reports): ``abandoned``.
    """
    name = settings.model_name
    rows = history.read(settings, name)
    current = alias_version(client, name)
    written = []
    for row in history.unresolved(rows):
        moved = current == row["to_version"]
        outcome = history.completion(row["action"]) if moved else history.ABANDONED
        completion = {
            k: row[k] for k in ("model", "action", "from_version", "to_version", "expected_version")
        }
        written.append(
            history.append(
                settings,
                **completion,
                outcome=outcome,
                trigger="recovery",
                reason=f"resolved #{row['id']}, interrupted before it was completed: the alias "
                + ("had moved" if moved else f"had not moved (it points at {_v(current)})"),
                dag_id=row["dag_id"],
                run_id=row["run_id"],
                ref=row["id"],
            )
        )
        log.warning("promotion #%s of %s was interrupted; recorded as %s", row["id"], name, outcome)
    return written


def check(settings: Settings, repair: bool = False) -> dict[str, Any]:
    """Resolve half-done moves, compare alias and history; with ``repair``, move the alias back.

    The repair is recorded like any move (written ahead); a history with no champion cannot be repaired
    to one: make a version champion on the record with a rollback instead.
    """
    client = tracking.configure(settings)
    name = settings.model_name
    with history.promotion_lock(settings, name):
        resolved = resolve(settings, client)
        found = audit(settings, client)
        result = found.as_dict() | {"resolved": [row["ref"] for row in resolved], "repaired": False}
        if not (repair and found.alias_moved):
            return result
        if found.recorded is None:
            raise AliasMovedError(
                f"the promotion history of {name} has no champion, so there is nothing to move the alias back "
                "to; make a version champion on the record with `pipelines rollback --to N --reason ...`"
            )
        if not tracking.version_exists(client, name, found.recorded):
            raise AliasMovedError(
                f"v{found.recorded}, the champion on the promotion history of {name}, is no longer in the "
                "registry (deleted), so the alias cannot be moved back to it; make a version champion on the "
                "record with `pipelines rollback --to N --reason ...`"
            )
        row = {
            "model": name,
            "action": "repair",
            "from_version": found.alias,
            "to_version": found.recorded,
            "expected_version": found.recorded,
            "trigger": "history --check --repair",
            "reason": f"the alias was moved outside the gate to {_v(found.alias)}; moved back",
        }
        pending = history.append(settings, **row, outcome=history.PENDING)
        client.set_registered_model_alias(name, tracking.CHAMPION, str(found.recorded))
        history.append(settings, **row, outcome=history.REPAIRED, ref=pending["id"])
    log.warning(
        "moved the champion alias of %s back to v%s (it pointed at %s)", name, found.recorded, found.alias
    )
    return audit(settings, client).as_dict() | {"resolved": result["resolved"], "repaired": True}
