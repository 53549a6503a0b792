"""Which Spark sessions one process may hold at once: pyspark's Spark Connect mark is process-wide."""

import os

import pytest

from pipelines.engines.spark_engine import CONNECT_MARK, _open_kind


@pytest.fixture(autouse=True)
def _no_mark():
    """No mark before each test, and none left after it: monkeypatch restores only a variable it saw set, and
    a mark a test leaves made every later classic session in the process try to connect."""
    before = os.environ.pop(CONNECT_MARK, None)
    yield
    os.environ.pop(CONNECT_MARK, None)
    if before is not None:
        os.environ[CONNECT_MARK] = before


def _connect() -> None:
    os.environ[CONNECT_MARK] = "1"  # what pyspark does when a Connect session starts


def test_the_mark_goes_with_the_last_connect_session():
    with _open_kind("connect"):
        _connect()
        with _open_kind("connect"):  # another thread's session
            _connect()
        assert CONNECT_MARK in os.environ  # the first is still open
    assert CONNECT_MARK not in os.environ


def test_a_failed_connect_leaves_no_mark():
    with pytest.raises(ConnectionError), _open_kind("connect"):
        _connect()  # pyspark marks the process before it builds the client
        raise ConnectionError("the server is down")
    assert CONNECT_MARK not in os.environ
    with _open_kind("classic"):  # so a driver of its own can start afterwards
        pass


def test_a_mark_set_before_stays():
    os.environ[CONNECT_MARK] = "1"
    with _open_kind("connect"):
        pass
    assert os.environ[CONNECT_MARK] == "1"


@pytest.mark.parametrize(("first", "second"), [("connect", "classic"), ("classic", "connect")])
def test_connect_and_classic_sessions_do_not_mix_in_one_process(first, second):
    with _open_kind(first):
        with pytest.raises(
            RuntimeError, match=f"a {second} Spark session cannot open while a {first} one is open"
        ):
            with _open_kind(second):
                pass
    with _open_kind(second):  # once the first has closed
        pass
