"""The retrain requests: one Airflow Asset per dataset, which the monitor emits on evidence and the retrain
DAG is scheduled on (beside its daily time).

The monitor's task emits through the alias only (:data:`RETRAIN_REQUESTS`), so an interval that asks for
nothing emits no event: a task's plain Asset outlets would get one on every success.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, AssetAny

GROUP = "ct-retrain-request"
RETRAIN_REQUESTS = AssetAlias(name="ct-retrain-requests", group=GROUP)
CONTRACTS = Path(__file__).resolve().parents[2] / "include" / "contracts"


def retrain_request(dataset: str) -> Asset:
    """The asset whose events ask for a retrain of ``dataset``."""
    return Asset(name=f"retrain-request-{dataset}", uri=f"ct-retrain://{dataset}", group=GROUP)


def datasets() -> list[str]:
    """The datasets with a contract in include/contracts/: the retrain DAG listens for each one's requests."""
    return sorted(path.stem for path in CONTRACTS.glob("*.yaml"))


def any_retrain_request() -> AssetAny:
    """A condition met by any one dataset's request (a plain list of assets would wait for all of them)."""
    return AssetAny(*(retrain_request(name) for name in datasets()))


def split_requests(events: Sequence[Any]) -> tuple[Any | None, list[Any]]:
    """The request a run retrains, and the other datasets' requests that came with it.

    ``events`` are the asset events that started the run (each with ``extra`` and ``timestamp``): requests
    queued while a retrain ran are consumed by the one run that follows. It retrains the newest; each other
    dataset's newest request is returned, oldest first, for the run to ask again, so that it starts a run of
    its own. A dataset's older requests are covered by its newest (a retrain trains on the latest window).
    """
    if not events:
        return None, []
    newest: dict[str, Any] = {}
    for event in sorted(events, key=lambda event: event.timestamp):
        newest[str((event.extra or {}).get("dataset"))] = event
    chosen = max(events, key=lambda event: event.timestamp)
    chosen_dataset = str((chosen.extra or {}).get("dataset"))
    others = sorted((e for d, e in newest.items() if d != chosen_dataset), key=lambda event: event.timestamp)
    return chosen, others
