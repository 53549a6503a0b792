"""Promote: move the ``champion`` alias to the challenger, if the champion is still the one we judged."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pipelines import runlog, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class ChampionChangedError(RuntimeError):
    """The champion moved since the gate compared against it; the decision no longer holds."""


@runlog.stage("promote")
def promote(
    settings: Settings,
    logical_date: dt.date,
    version: int,
    expected_champion: int | None,
    reason: str = "gate",
) -> dict[str, Any]:
    """Compare-and-set the champion alias: only if it still points at ``expected_champion``."""
    client = tracking.configure(settings)
    name = settings.model_name
    current = tracking.version_by_alias(client, name, tracking.CHAMPION)
    current_version = int(current.version) if current else None
    if current_version == version:
        log.info("version %s is already champion of %s", version, name)
        return {"name": name, "champion": version, "previous": current_version, "changed": False}
    if current_version != expected_champion:
        raise ChampionChangedError(
            f"champion of {name} is v{current_version}, but the gate judged against v{expected_champion}; "
            "re-run evaluate and gate"
        )
    client.set_registered_model_alias(name, tracking.CHAMPION, str(version))
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(version), "promoted_at", now)
    client.set_model_version_tag(name, str(version), "promoted_by", reason)
    client.set_model_version_tag(name, str(version), "previous_champion", str(current_version))
    log.info("promoted %s v%s to champion (was v%s)", name, version, current_version)
    return {"name": name, "champion": version, "previous": current_version, "changed": True}
