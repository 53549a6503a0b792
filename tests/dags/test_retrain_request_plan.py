"""Which request a retrain run serves, and which it asks for again (dags/common/assets.py): pure logic, on
events shaped as Airflow hands them to a task (``asset.uri``, ``extra``, ``timestamp``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
RUN = "asset_triggered__2026-12-06T10:30:00+00:00"
STARTED = dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.UTC)


@pytest.fixture
def assets(monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS_DIR))  # as the DAG processor puts the DAG folder on the path
    import common.assets

    return common.assets


def _at(minute: int) -> dt.datetime:
    return dt.datetime(2026, 12, 6, 10, minute, tzinfo=dt.UTC)


def _event(dataset: str, minute: int, interval: str = "i", **extra):
    return SimpleNamespace(
        asset=SimpleNamespace(uri=f"ct-retrain://{dataset}/"),
        extra={"dataset": dataset, "interval": interval, **extra},
        timestamp=_at(minute),
    )


def test_a_request_is_read_from_its_asset_and_keeps_the_time_it_was_first_asked(assets):
    # Posted by hand from the UI: no dataset in its extra, and Airflow's REST mark, which is not the request's.
    by_hand = SimpleNamespace(
        asset=SimpleNamespace(uri="ct-retrain://bikeshare/"), extra={"from_rest_api": True}, timestamp=_at(5)
    )
    request = assets.request_of(by_hand)
    assert request.dataset == "bikeshare" and request.extra == {"dataset": "bikeshare"}
    assert request.asked_at == request.waiting_since == request.timestamp == _at(5)
    # Asked for again: the event is new, the ask and the wait are the first one's.
    again = _event("bikeshare", 20, requested_at=_at(3).isoformat(), waiting_since=_at(1).isoformat())
    request = assets.request_of(again)
    assert (request.asked_at, request.waiting_since, request.timestamp) == (_at(3), _at(1), _at(20))


def test_the_dataset_that_waited_longest_is_retrained_on_its_newest_request(assets):
    plan, request_of = assets.plan, assets.request_of
    assert plan([]) == (None, [])
    one = request_of(_event("transactions", 1))
    assert plan([one]) == (one, [])
    # The same dataset twice: its newest request is served, waiting since its first.
    chosen, others = plan([request_of(_event("transactions", 5, "b")), request_of(_event("transactions", 1))])
    assert (chosen.extra["interval"], chosen.waiting_since, others) == ("b", _at(1), [])
    # Three datasets: the one waiting longest goes first, though another asked since; the others' newest, longest
    # waiting first.
    events = [
        _event("bikeshare", 4, "b2"),
        _event("transactions", 9),
        _event("breast_cancer", 3),
        _event("bikeshare", 2, "b1"),
        _event("transactions", 1, "t0"),
    ]
    chosen, others = plan([request_of(e) for e in events])
    assert (chosen.dataset, chosen.timestamp, chosen.waiting_since) == ("transactions", _at(9), _at(1))
    assert [(r.dataset, r.extra["interval"], r.waiting_since) for r in others] == [
        ("bikeshare", "b2", _at(2)),
        ("breast_cancer", "i", _at(3)),
    ]
    # A request asked for again keeps its place: its event is the newest, its wait the oldest.
    again = _event("bikeshare", 30, requested_at=_at(2).isoformat(), waiting_since=_at(0).isoformat())
    chosen, others = plan([request_of(again), request_of(_event("transactions", 29))])
    assert chosen.dataset == "bikeshare" and [r.dataset for r in others] == ["transactions"]


def test_a_consumed_request_the_run_does_not_retrain_is_asked_for_again_once(assets):
    request_of, ask_again = assets.request_of, assets.ask_again
    pending = assets.plan([request_of(_event("bikeshare", 2)), request_of(_event("transactions", 1))])[1][0]
    extra = ask_again([], pending, None, RUN, STARTED)
    assert extra == {
        "dataset": "bikeshare",
        "interval": "i",
        "requested_at": _at(2).isoformat(),
        "waiting_since": _at(2).isoformat(),
        "requeued_by": RUN,
    }
    # The task run again (cleared): its own ask is there, and it does not ask twice.
    mine = request_of(
        SimpleNamespace(asset=SimpleNamespace(uri="ct-retrain://bikeshare/"), extra=extra, timestamp=_at(31))
    )
    assert ask_again([mine], pending, None, RUN, STARTED) is None
    # The dataset asked again after the run started: that ask starts a run of its own.
    assert ask_again([request_of(_event("bikeshare", 40))], pending, None, RUN, STARTED) is None


def test_a_request_left_behind_by_airflows_queue_is_asked_for_again(assets):
    """Airflow queues a dataset's first waiting event only, and a run consumes the events up to the newest
    queued one: transactions at :01, bikeshare at :02, transactions again at :03 give a run that consumes the
    first two, and the third starts nothing."""
    request_of, ask_again = assets.request_of, assets.ask_again
    chosen, others = assets.plan([request_of(_event("transactions", 1)), request_of(_event("bikeshare", 2))])
    assert chosen.dataset == "transactions"
    left = request_of(_event("transactions", 3, "t3"))
    extra = ask_again([left], None, chosen, RUN, STARTED)
    assert extra is not None and extra["interval"] == "t3" and extra["waiting_since"] == _at(3).isoformat()
    # Nothing newer than what the run retrains: nothing to ask.
    assert ask_again([], None, chosen, RUN, STARTED) is None
    # An ask again of an older request of its (a run before asked for it again) is covered by this retrain.
    older = _event("transactions", 20, requested_at=_at(0).isoformat())
    assert ask_again([request_of(older)], None, chosen, RUN, STARTED) is None
    # For a dataset the run does not retrain, its newest: the one left behind, waiting since the consumed one.
    pending = others[0]
    bike = request_of(_event("bikeshare", 4, "b4"))
    extra = ask_again([bike], pending, None, RUN, STARTED)
    assert extra["interval"] == "b4" and extra["waiting_since"] == _at(2).isoformat()


def test_the_requeue_plan_asks_again_for_the_others_and_for_what_was_left_behind(assets):
    """The requeue task's loop, over the events Airflow would hand it: the run retrains transactions (waiting
    longest), asks again for bikeshare, and for transactions' second ask, which Airflow's queue left behind."""
    consumed = [assets.request_of(_event("transactions", 1, "t1")), assets.request_of(_event("bikeshare", 2))]
    held = {"transactions": [_event("transactions", 3, "t3")], "bikeshare": []}
    asked_for = []

    def newer(dataset, after):
        asked_for.append((dataset, after))
        return [event for event in held[dataset] if event.timestamp >= after]

    chosen, asks, already = assets.requeue_plan(consumed, newer, RUN, STARTED)
    assert chosen.dataset == "transactions" and chosen.extra["interval"] == "t1"
    assert [(dataset, extra["interval"]) for dataset, extra in asks] == [
        ("bikeshare", "i"),
        ("transactions", "t3"),
    ]
    assert already == [] and asked_for == [("bikeshare", _at(2)), ("transactions", _at(1))]
    # Run again once its asks are held: nothing twice; bikeshare's request already asked for.
    for dataset, extra in asks:
        held[dataset].append(
            SimpleNamespace(
                asset=SimpleNamespace(uri=f"ct-retrain://{dataset}/"), extra=extra, timestamp=_at(31)
            )
        )
    assert assets.requeue_plan(consumed, newer, RUN, STARTED)[1:] == ([], ["bikeshare"])


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"day": "20/11/2026"}, "extra 'day' is '20/11/2026', not a date YYYY-MM-DD"),
        ({"day": "2026-11-20T00:00:00"}, "extra 'day' is '2026-11-20T00:00:00'"),
        ({"day": "20261120"}, "extra 'day' is '20261120'"),  # Python 3.11's fromisoformat reads it
        ({"day": 20261120}, "extra 'day' is 20261120"),
        ({"day": "2026-02-30"}, "extra 'day' is '2026-02-30'"),
        (
            {"requested_at": "yesterday"},
            "extra 'requested_at' is 'yesterday', not an ISO 8601 time with its zone",
        ),
        # no zone: compared with the events' aware times, plan() raised a TypeError
        ({"waiting_since": "2026-12-06T10:00:00"}, "extra 'waiting_since' is '2026-12-06T10:00:00'"),
    ],
)
def test_an_event_posted_by_hand_whose_extra_is_no_request_is_named_and_left_out(assets, extra, named):
    """Each failed every retried task with a bare ValueError or TypeError naming neither the event nor the key,
    and a bad requested_at failed requeue too, losing the other datasets' requests of the run."""
    typo = SimpleNamespace(
        asset=SimpleNamespace(uri="ct-retrain://bikeshare/"), extra=extra, timestamp=_at(5)
    )
    with pytest.raises(
        assets.RetrainRequestError, match=f"retrain request on ct-retrain://bikeshare/: {named}"
    ):
        assets.request_of(typo)
    good = _event("transactions", 3)
    requests, refused = assets.requests_of([typo, good])
    assert [request.dataset for request in requests] == ["transactions"] and len(refused) == 1
    assert assets.plan(requests)[0].dataset == "transactions"
    assert assets.request_of(_event("bikeshare", 1, day="2026-11-20")).extra["day"] == "2026-11-20"


def test_a_request_without_a_day_retrains_the_utc_day_before_it_was_asked(assets):
    """Its own zone's date was taken: asked at 00:30+02:00 on 12-06 (22:30 UTC on 12-05), it retrained 12-05,
    a day not over in UTC, where the daily schedule would take 12-04."""
    east = dt.datetime(2026, 12, 6, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    request = assets.request_of(_event("transactions", 5, requested_at=east.isoformat()))
    assert assets.request_day(request) == "2026-12-04"
    assert assets.request_day(assets.request_of(_event("transactions", 5))) == "2026-12-05"  # 10:05 UTC
    assert assets.request_day(assets.request_of(_event("transactions", 5, day="2026-11-20"))) == "2026-11-20"


def test_a_run_triggered_with_a_day_not_over_retrains_the_latest_whole_day(assets):
    """The trigger form fills the logical date with the moment it opens: the run trained today's partial data."""
    now = dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.UTC)
    assert assets.run_day(now, now) == dt.date(2026, 12, 5)  # the form's default
    assert assets.run_day(None, now) == dt.date(2026, 12, 5)  # an API post without a logical date
    # the schedule: the day before, asked for at 01:00; a day named by hand that has ended: that day
    assert assets.run_day(dt.datetime(2026, 12, 5, tzinfo=dt.UTC), now.replace(hour=1)) == dt.date(
        2026, 12, 5
    )
    assert assets.run_day(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), now) == dt.date(2026, 11, 20)
    east = dt.timezone(dt.timedelta(hours=2))  # 00:30 on 12-07 there is 22:30 UTC on 12-06: not over
    assert assets.run_day(dt.datetime(2026, 12, 7, 0, 30, tzinfo=east), now.replace(hour=22)) == dt.date(
        2026, 12, 5
    )
