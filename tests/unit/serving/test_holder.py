"""The model holder: load beside, swap, refuse a bad version and keep serving, retry only when it is time."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from pipelines.model.runtime import ModelLoadError
from pipelines.release.integrity import IntegrityError
from pipelines.serving.holder import RETRY_FAILED_SECONDS, ModelHolder
from pipelines.serving.metrics import ServingMetrics
from pipelines.settings import get_settings
from tests.unit.serving.scoring import served


class Registry:
    """A champion source that names whichever version the test sets, and loads or refuses it."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.moved_alias: int | None = None  # where someone moved the alias outside the gate
        self.broken: dict[int, Exception] = {}
        self.down: Exception | None = None
        self.loads: list[int] = []

    def champion(self):
        if self.down is not None:
            raise self.down
        return None if self.version is None else (self.version, f"run-{self.version}")

    def alias(self):
        return self.moved_alias if self.moved_alias is not None else self.version

    def load(self, version, run_id):
        self.loads.append(version)
        if version in self.broken:
            raise self.broken[version]
        return served(version)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def holder_parts():
    registry, clock, metrics = Registry(), Clock(), ServingMetrics()
    holder = ModelHolder(get_settings(model_name="m"), metrics, source=registry, clock=clock)
    return holder, registry, clock, metrics


def test_no_champion_then_a_swap_then_nothing_to_do(holder_parts):
    holder, registry, _, metrics = holder_parts
    assert holder.refresh().status == "no_champion" and "no champion" in holder.last_error
    registry.version = 1
    result = holder.refresh()
    assert (result.status, result.serving, holder.current.version) == ("swapped", 1, 1)
    assert holder.refresh().status == "unchanged" and registry.loads == [1]
    assert metrics.swaps._value.get() == 1 and holder.last_error is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ModelLoadError("signature", "the model has no input signature"), "signature"),
        (IntegrityError("m v2 does not match its sha256 manifest: altered: MLmodel"), "integrity"),
    ],
)
def test_a_refused_version_leaves_the_old_one_serving_and_is_counted(holder_parts, error, reason):
    holder, registry, _, metrics = holder_parts
    registry.version = 1
    holder.refresh()
    registry.version, registry.broken[2] = 2, error
    result = holder.refresh()
    assert (result.status, result.version, result.serving) == ("failed", 2, 1)
    assert holder.current.version == 1 and f"({reason})" in holder.last_error
    assert metrics.load_failures.labels(reason=reason)._value.get() == 1


def test_a_refused_version_is_retried_only_when_it_is_time_or_forced(holder_parts):
    holder, registry, clock, _ = holder_parts
    registry.version, registry.broken[3] = 3, ModelLoadError("warmup", "probabilities out of range")
    holder.refresh()
    clock.now += RETRY_FAILED_SECONDS - 1
    assert holder.refresh().status == "failed" and registry.loads == [3]  # the poller leaves it alone
    holder.refresh(force=True)  # an admin reload tries at once
    assert registry.loads == [3, 3]
    clock.now += RETRY_FAILED_SECONDS
    del registry.broken[3]
    assert holder.refresh().status == "swapped" and holder.failed == {}


def test_an_unreadable_registry_keeps_the_model_serving(holder_parts):
    holder, registry, _, _ = holder_parts
    registry.version = 1
    holder.refresh()
    registry.down = MlflowException("API request to http://mlflow:5000 failed")
    result = holder.refresh()
    assert (result.status, result.serving, holder.current.version) == ("failed", 1, 1)
    assert "reading the champion alias of m failed" in holder.last_error


def test_a_bug_while_loading_is_not_taken_for_a_bad_model(holder_parts):
    """Not refused for 5 minutes as a bad model, nor loaded again at every poll (a download, a check and a
    warm-up each 10 s, with its trace): tried again after 10 s, then twice as long each time."""
    holder, registry, clock, metrics = holder_parts
    registry.version, registry.broken[1] = 1, TypeError("a bug in the loader")
    with pytest.raises(TypeError, match="a bug in the loader"):
        holder.refresh()
    assert holder.current is None and holder.loading is None
    assert "(bug): TypeError: a bug in the loader" in holder.last_error  # what /health shows
    assert metrics.load_failures.labels(reason="bug")._value.get() == 1
    assert holder.refresh().status == "failed"  # the next poll, within 10 s: not loaded again
    assert metrics.load_failures.labels(reason="bug")._value.get() == 1
    clock.now += 10
    with pytest.raises(TypeError):
        holder.refresh()
    assert holder.failed[1][2] == 20 and metrics.load_failures.labels(reason="bug")._value.get() == 2
    del registry.broken[1]  # the bug mended: an admin reload loads it at once
    assert holder.refresh(force=True).status == "swapped" and holder.failed == {}


def test_a_registry_failure_while_loading_or_unloadable_files_refuse_the_version(holder_parts):
    from pipelines.release.integrity import UnloadableModelError

    holder, registry, _, metrics = holder_parts
    registry.version, registry.broken[1] = 1, MlflowException("artifact store unreachable")
    assert (
        holder.refresh().status == "failed" and "(load): MlflowException: artifact store" in holder.last_error
    )
    try:
        raise UnloadableModelError("could not load m v2: IndexError: pop from empty list") from IndexError(
            "pop from empty list"
        )
    except UnloadableModelError as exc:
        registry.version, registry.broken[2] = 2, exc
    holder.refresh()
    assert holder.last_error == "loading m v2 failed (load): IndexError: pop from empty list"
    assert metrics.load_failures.labels(reason="load")._value.get() == 2 and holder.current is None


def test_an_alias_moved_outside_the_gate_is_refused_and_the_champion_keeps_serving(holder_parts):
    holder, registry, _, metrics = holder_parts
    registry.version = 1
    holder.refresh()
    registry.moved_alias = 3  # someone used MLflow's alias editor
    for _ in range(3):  # polls
        assert holder.refresh().status == "unchanged"
    assert holder.current.version == 1 and registry.loads == [1]
    assert "moved outside the gate" in holder.alias_refused and "v3" in holder.alias_refused
    assert metrics.alias_refused._value.get() == 1  # counted once per move, not per poll
    registry.moved_alias = None  # set right (history --check --repair)
    holder.refresh()
    assert holder.alias_refused is None


def test_serving_without_a_promotion_history_to_read_fails_at_start_naming_the_setting():
    from pipelines.serving.holder import RegistryChampion

    with pytest.raises(ValueError, match="set CT_PROMOTION_DB"):
        RegistryChampion(get_settings(mlflow_tracking_uri="http://mlflow:5000"))
    RegistryChampion(
        get_settings(mlflow_tracking_uri="http://mlflow:5000", promotion_db="sqlite:////tmp/x.db")
    )


def test_a_rollback_while_a_version_loads_keeps_the_rolled_back_to_version_serving(holder_parts):
    """v3 was loading when a rollback moved the champion back to v2: swapping v3 in once loaded served the
    version the rollback took away, until the rollback's own reload had downloaded and warmed v2 again."""
    holder, registry, _, metrics = holder_parts
    registry.version = 2
    holder.refresh()
    loading = registry.load

    def rolled_back_meanwhile(version, run_id):
        found = loading(version, run_id)
        registry.version = 2  # the rollback, while v3 loaded
        return found

    registry.load, registry.version = rolled_back_meanwhile, 3
    result = holder.refresh()  # v3 is not swapped in; the champion, v2, is served already
    assert (result.status, result.version, result.serving) == ("unchanged", 2, 2)
    assert holder.current.version == 2 and registry.loads == [2, 3]  # v2 not loaded again
    assert metrics.swaps._value.get() == 1


def test_a_first_load_the_champion_moved_away_from_is_followed_by_the_new_champions(holder_parts):
    """A replica that does not poll, starting while v3 was promoted then v4: it loaded v3, refused to swap it
    in, and served nothing until the next reload."""
    holder, registry, _, _ = holder_parts
    loading = registry.load

    def promoted_meanwhile(version, run_id):
        found = loading(version, run_id)
        if version == 3:
            registry.version = 4
        return found

    registry.load, registry.version = promoted_meanwhile, 3
    result = holder.refresh()
    assert (result.status, result.serving, holder.current.version) == ("swapped", 4, 4)
    assert registry.loads == [3, 4]


def test_a_registry_that_answers_again_clears_its_error(holder_parts):
    holder, registry, _, _ = holder_parts
    registry.version = 1
    holder.refresh()
    registry.down = MlflowException("tracking server unreachable")
    assert holder.refresh().status == "failed" and "unreachable" in holder.last_error
    registry.down = None
    assert holder.refresh().status == "unchanged" and holder.last_error is None


def test_a_failed_fetch_is_retried_soon_backing_off_and_a_bad_model_waits_five_minutes(holder_parts):
    """A connection reset while fetching a version (a rollback's one reload, a promotion) left the version
    unserved for 5 minutes; a glitch deserves a retry at the next polls."""
    holder, registry, clock, _ = holder_parts
    registry.version = 1
    holder.refresh()
    registry.version, registry.broken[2] = 2, ConnectionResetError("connection reset by peer")
    assert holder.refresh().status == "failed" and registry.loads == [1, 2]
    clock.now += 9
    assert holder.refresh().status == "failed" and registry.loads == [1, 2]  # left alone for 10 s
    clock.now += 1
    holder.refresh()
    assert registry.loads == [1, 2, 2]  # retried; failed again: left alone for 20 s
    clock.now += 19
    holder.refresh()
    assert registry.loads == [1, 2, 2]
    del registry.broken[2]  # the store answers again
    clock.now += 1
    assert holder.refresh().status == "swapped" and holder.current.version == 2

    registry.version, registry.broken[3] = 3, ModelLoadError("warmup", "probabilities are not within [0, 1]")
    holder.refresh()
    clock.now += 299
    holder.refresh()
    assert registry.loads.count(3) == 1  # a bad model is not fetched again for 5 minutes
    clock.now += 1
    holder.refresh()
    assert registry.loads.count(3) == 2


def test_a_promotion_completing_between_the_two_reads_is_not_taken_for_a_moved_alias(holder_parts):
    holder, registry, _, metrics = holder_parts
    registry.version = 1
    holder.refresh()

    class PromotedMeanwhile(Registry):
        def alias(self):
            self.version = 2  # the gate's promotion completes after the history was read
            return 2

    racing = PromotedMeanwhile()
    racing.version, holder.source = 1, racing
    result = holder.refresh()
    assert holder.alias_refused is None and metrics.alias_refused._value.get() == 0
    assert result.status == "swapped" and holder.current.version == 2
