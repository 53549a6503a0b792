"""The retrain requests: one Airflow Asset per dataset, which the monitor emits on evidence and the retrain
DAG is scheduled on (beside its daily time).

The monitor's task emits through the alias only (:data:`RETRAIN_REQUESTS`), so an interval that asks for
nothing emits no event: a task's plain Asset outlets would get one on every success.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, AssetAny

log = logging.getLogger(__name__)

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


# Keys an event's extra gets that are not the request's: Airflow marks an event posted through its REST API.
_NOT_THE_REQUEST = ("from_rest_api",)


@dataclass(frozen=True)
class Request:
    """A retrain request, read from an event of a dataset's asset.

    ``asked_at``: when it was asked for (the event's time; an ask again keeps the first one's, in its extra).
    ``waiting_since``: since when its dataset has waited for a retrain (its oldest request not yet retrained).
    ``timestamp``: the event's own time, which orders the events Airflow holds.
    """

    dataset: str
    extra: dict[str, Any]
    asked_at: dt.datetime
    waiting_since: dt.datetime
    timestamp: dt.datetime


def run_day(logical: dt.datetime | None, run_after: dt.datetime) -> dt.date:
    """The data day of a retrain run that no request started: its logical date's UTC day, the start of its daily
    data interval, once that day has ended when the run was asked for (``run_after``); else the latest whole day
    before it. The trigger form fills the logical date with the moment it opens (and an API post without one
    runs at its ``run_after``): such a run trained on a day not over, a partial partition that could pass the
    gate, where the schedule and a request posted by hand take the day before."""
    day = (logical or run_after).astimezone(dt.UTC).date()
    asked_on = run_after.astimezone(dt.UTC).date()
    return day if day < asked_on else asked_on - dt.timedelta(days=1)


def request_day(request: Request) -> str:
    """The day a request retrains: its extra's ``day``, else the UTC day before it was asked, the latest whole
    day, as the daily schedule takes (an event posted at 00:30+02:00 was asked on the UTC day before its own)."""
    asked_on = request.asked_at.astimezone(dt.UTC).date()
    return request.extra.get("day") or (asked_on - dt.timedelta(days=1)).isoformat()


class RetrainRequestError(ValueError):
    """An event of a retrain request's asset whose extra is not a request (posted by hand with a typo)."""


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _moment(uri: str, extra: dict[str, Any], key: str) -> dt.datetime | None:
    """``extra[key]``, an ISO 8601 time with its zone, or None when the extra has none."""
    value = extra.get(key)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise RetrainRequestError(
            f"retrain request on {uri}: extra {key!r} is {value!r}, not an ISO 8601 time with its zone "
            "(2026-12-06T10:30:00+00:00)"
        )
    return moment


def request_of(event: Any) -> Request:
    """The request an asset event (with ``asset.uri``, ``extra`` and ``timestamp``) carries. Its dataset is the
    asset's (``ct-retrain://<dataset>``), whatever its extra says: an event posted by hand may say nothing.

    An extra whose ``day`` is not YYYY-MM-DD, or whose ``requested_at`` or ``waiting_since`` is not a time with
    its zone, is a :class:`RetrainRequestError` naming the asset, the key and the value: it failed each retried
    task with a bare ValueError or TypeError, after the champion's audit had run."""
    uri = str(event.asset.uri)
    dataset = uri.removeprefix("ct-retrain://").strip("/")
    extra = {k: v for k, v in (event.extra or {}).items() if k not in _NOT_THE_REQUEST}
    day = extra.get("day")
    if day is not None:
        try:
            valid = isinstance(day, str) and bool(_DAY.fullmatch(day)) and bool(dt.date.fromisoformat(day))
        except ValueError:  # 2026-02-30
            valid = False
        if not valid:
            raise RetrainRequestError(
                f"retrain request on {uri}: extra 'day' is {day!r}, not a date YYYY-MM-DD"
            )
    asked = _moment(uri, extra, "requested_at") or event.timestamp
    since = _moment(uri, extra, "waiting_since") or asked
    return Request(dataset, extra | {"dataset": dataset}, asked, since, event.timestamp)


def requests_of(events: Iterable[Any]) -> tuple[list[Request], list[str]]:
    """The requests of ``events``, and why each event that is not one was left out (logged as an error: it
    asks for nothing a run can do, and must not keep the others' requests from being served)."""
    requests, refused = [], []
    for event in events:
        try:
            requests.append(request_of(event))
        except RetrainRequestError as exc:
            log.error("%s; the event is left out", exc)
            refused.append(str(exc))
    return requests, refused


def plan(consumed: Sequence[Request]) -> tuple[Request | None, list[Request]]:
    """The request a run retrains, and each other dataset's request for the run to ask again.

    Requests queued while a retrain ran are consumed by the one run that follows. It retrains the dataset that
    has waited longest (its oldest request: first asked, first served, so no dataset waits behind others that
    keep asking), on that dataset's newest request (a retrain trains on the latest window, which covers the
    older ones). Each other dataset's newest request is returned, longest waiting first, with the time its
    dataset has waited since.
    """
    by_dataset: dict[str, list[Request]] = {}
    for request in consumed:
        by_dataset.setdefault(request.dataset, []).append(request)
    pending = [_newest(requests) for requests in by_dataset.values()]
    pending.sort(key=lambda request: (request.waiting_since, request.dataset))
    return (pending[0], pending[1:]) if pending else (None, [])


def _newest(requests: Iterable[Request]) -> Request:
    """A dataset's newest request, waiting since the oldest of them."""
    requests = list(requests)
    newest = max(requests, key=lambda request: (request.asked_at, request.timestamp))
    since = min(request.waiting_since for request in requests)
    return Request(newest.dataset, newest.extra, newest.asked_at, since, newest.timestamp)


def ask_again(
    known: Sequence[Request],
    pending: Request | None,
    retrained: Request | None,
    run_id: str,
    started: dt.datetime,
) -> dict[str, Any] | None:
    """The extra of the event that asks again for a retrain of a dataset, or None when none is needed.

    ``known``: the dataset's events Airflow holds that are newer than those the run ``run_id`` (started at
    ``started``) consumed; ``pending``: the dataset's request the run consumed and does not retrain (from
    :func:`plan`), else None; ``retrained``: the request the run retrains when it is the dataset's, else None.

    A newer event that came after the run started starts a run of its own. One that came before it and was not
    consumed was left behind: Airflow's queue keeps a dataset's first waiting event, and a run consumes the
    events up to the newest queued one, so a dataset's second ask while a retrain runs starts no run (the next
    run's window takes it, whenever another request starts one). It is asked for again here, as is a request
    the run consumed and does not retrain. An ask this run made before (the task cleared and run again) is not
    made twice.
    """
    if any(request.extra.get("requeued_by") == run_id for request in known):
        return None  # asked for again already, by this run
    if any(request.timestamp > started for request in known):
        return None  # a run of its own will consume it
    waiting = [*known, *([pending] if pending is not None else [])]
    if retrained is not None:
        waiting = [request for request in waiting if request.asked_at > retrained.asked_at]
    if not waiting:
        return None
    newest = _newest(waiting)
    return newest.extra | {
        "requested_at": newest.asked_at.isoformat(),
        "waiting_since": newest.waiting_since.isoformat(),
        "requeued_by": run_id,
    }


def requeue_plan(
    consumed: Sequence[Request],
    newer: Callable[[str, dt.datetime], Iterable[Any]],
    run_id: str,
    started: dt.datetime,
) -> tuple[Request | None, list[tuple[str, dict[str, Any]]], list[str]]:
    """What a run's requeue task does with the requests it consumed: the request it retrains, the events to
    emit (dataset, extra), longest waiting first, and the datasets it consumed a request of that need none.

    ``newer(dataset, after)``: the dataset's events Airflow holds from ``after`` on (the task's inlet events).
    """
    chosen, others = plan(consumed)
    asks: list[tuple[str, dict[str, Any]]] = []
    already: list[str] = []
    # Each other dataset's pending request, then the retrained dataset (for a request left behind).
    turns: list[tuple[str, Request | None]] = [(request.dataset, request) for request in others]
    if chosen is not None:
        turns.append((chosen.dataset, None))
    for dataset, pending in turns:
        last = max(request.timestamp for request in consumed if request.dataset == dataset)
        known, _ = requests_of(event for event in newer(dataset, last) if event.timestamp > last)
        retrained = chosen if pending is None else None
        extra = ask_again(known, pending, retrained, run_id, started)
        if extra is not None:
            asks.append((dataset, extra))
        elif pending is not None:
            already.append(dataset)
    return chosen, asks, already
