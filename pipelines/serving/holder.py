"""The model in service and how it is replaced: load beside, verify, warm, then one atomic swap.

A new champion is loaded on a worker thread while the current one keeps answering. Its files are
checked against the manifest stored at registration (:mod:`pipelines.release.integrity`), its signature
must be usable (and agree with the data contract a project model carries: requests are checked against
that contract's domains), and it must score warm-up batches; only then does ``current`` point at it, in one
reference assignment. A request reads ``current`` once, at its start, and is scored on that model to the
end. A version that fails is counted, logged with the reason, and left alone by the poller for
``RETRY_FAILED_SECONDS`` (a failed fetch for 10 s, then twice as long each time; an admin reload retries it
at once); the previous model keeps serving.

Where the champion comes from is a :class:`ChampionSource`: in service (:class:`RegistryChampion`) the
promotion history names it and the MLflow registry holds its files. The champion alias only mirrors the
history: an alias moved outside the gate (MLflow's alias editor, "Promote model") is refused: the
history's champion keeps serving, and the refusal is counted, logged and shown in ``/health``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from pipelines.model.classifier import project_model
from pipelines.model.runtime import ModelLoadError, ServedModel, set_threads
from pipelines.model.signature import InputSchema
from pipelines.release import audit, history, integrity, tracking
from pipelines.serving.metrics import ServingMetrics
from pipelines.settings import Settings

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 300.0
# A fetch that failed (the registry or artifact store unreachable, a connection reset) may succeed a moment
# later: retried after 10 s, then twice as long each time, up to RETRY_FAILED_SECONDS. A rollback whose one
# reload met a glitch was otherwise not served for 5 minutes.
RETRY_FETCH_SECONDS = 10.0
# A registry or history that cannot be read (a tracking server down, a database locked): keep serving, say so.
REGISTRY_ERRORS: tuple[type[BaseException], ...] = (MlflowException, OSError, SQLAlchemyError)


class ChampionSource(Protocol):
    """Names the champion's version and loads a version for service."""

    def champion(self) -> tuple[int, str | None] | None:
        """(version, run id) of the champion, or None when there is none; REGISTRY_ERRORS when unreadable."""
        ...

    def alias(self) -> int | None:
        """Where the champion alias points, which must agree with :meth:`champion`."""
        ...

    def load(self, version: int, run_id: str | None) -> ServedModel:
        """The version verified, with a usable signature, on its runtime and warmed; else a load error."""
        ...


class RegistryChampion:
    """The champion alias of ``settings.model_name`` in the MLflow registry, loaded from verified files."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Any = None
        # Serving follows the promotion history: a deployment that has not said where it lives fails here,
        # at start, naming the setting (CT_PROMOTION_DB), not at every poll.
        history.database_url(settings)

    def client(self) -> Any:
        """The MLflow client, configured on first use (a registry that is down is tried again next time)."""
        if self._client is None:
            self._client = tracking.configure(self.settings, experiment=False)  # serving only reads
        return self._client

    def champion(self) -> tuple[int, str | None] | None:
        name = self.settings.model_name
        version = history.champion(history.read(self.settings, name))
        if version is None:
            return None
        return version, getattr(self.client().get_model_version(name, str(version)), "run_id", None)

    def alias(self) -> int | None:
        return audit.mirrored_alias(self.settings, self.client())

    def load(self, version: int, run_id: str | None) -> ServedModel:
        settings, name = self.settings, self.settings.model_name
        client = self.client()
        # The verified copy lives as long as the model does: a pyfunc may read its artifacts when it predicts
        # (MLflow's own serving keeps them too). It goes when the served model is dropped, after a swap once
        # the requests scored on it have ended, or at once when the load fails.
        tmp = tempfile.mkdtemp(prefix=f"ct-serve-v{version}-")
        try:
            # Only files that match the manifest stored at registration are loaded.
            model, manifest = integrity.load_verified(client, name, version, tmp)
            example = input_example(model, Path(tmp))
            project = project_model(model)
            try:
                schema = InputSchema.from_signature(
                    model.metadata.signature, project.contract if project else None, example
                )
            except ValueError as exc:
                raise ModelLoadError("signature", str(exc)) from exc
            set_threads(settings.serve_threads)  # the model's own loader may have changed them
            served = ServedModel(
                name=name,
                version=version,
                sha256=integrity.digest(manifest),
                run_id=run_id,
                schema=schema,
                pyfunc=model,
            )
            weakref.finalize(served, shutil.rmtree, tmp, ignore_errors=True)
            served.use_runtime(settings.serve_runtime, settings.serve_threads)
            served.warm_up(settings.serve_max_batch_rows)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return served


def input_example(model: Any, folder: Path) -> list[dict[str, Any]] | None:
    """The rows of the input example logged with the model (in ``folder``, its copy); None without one.

    It is documentation (the API's example request), so one that cannot be read is logged, not fatal.
    """
    found = sorted(folder.rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        return None
    try:
        example = model.metadata.load_input_example(str(found[0].parent))
    except (OSError, ValueError, MlflowException) as exc:
        log.warning("the model's input example cannot be read: %s", exc)
        return None
    if not hasattr(example, "to_json"):  # not a DataFrame: a tensor or a dict example says no rows
        return None
    return json.loads(example.to_json(orient="records"))  # NaN -> null, numpy scalars -> JSON


@dataclass(frozen=True)
class ReloadResult:
    status: str  # swapped | unchanged | superseded | failed | no_champion
    version: int | None
    serving: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "version": self.version, "serving": self.serving, "error": self.error}


#: Loads in one refresh while the champion keeps moving under them (promotions back to back).
SUPERSEDED_LOADS = 3


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        metrics: ServingMetrics,
        source: ChampionSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = settings.model_name
        self.metrics = metrics
        self.source: ChampionSource = source or RegistryChampion(settings)
        self.clock = clock
        self.current: ServedModel | None = None
        self.loading: int | None = None
        self.last_error: str | None = None
        # version -> (why it was refused, when, how long the poller leaves it alone)
        self.failed: dict[int, tuple[str, float, float]] = {}
        self.alias_refused: str | None = None  # the champion alias, moved outside the gate: why it is ignored
        self._lock = threading.Lock()  # one load at a time (poller and admin reload)

    def refresh(self, force: bool = False) -> ReloadResult:
        """Serve the version the champion points at, if it is not already served.

        ``force``: retry a version refused less than ``RETRY_FAILED_SECONDS`` ago (an admin reload). A load
        the champion moved away from meanwhile is followed by a load of the new champion (a few at most): a
        replica that does not poll (``CT_SERVE_POLL_SECONDS=0``) would otherwise wait for the next reload,
        with no model at all when it was its first.
        """
        result = self._refresh(force)
        for _ in range(SUPERSEDED_LOADS - 1):
            if result.status != "superseded":
                break
            result = self._refresh(force)
        return result

    def _refresh(self, force: bool) -> ReloadResult:
        serving = self.current.version if self.current else None
        with self._lock:
            try:
                champion, alias = self.source.champion(), self.source.alias()
                if alias != (champion[0] if champion else None):
                    # A promotion that completed between the two reads moved both: read them again before
                    # calling the alias moved outside the gate (a false alarm on every such promotion).
                    champion, alias = self.source.champion(), self.source.alias()
                self._check_alias(alias, champion[0] if champion else None)
            except REGISTRY_ERRORS as exc:
                self.last_error = f"reading the champion alias of {self.name} failed: {exc}"
                log.warning(self.last_error)
                return ReloadResult("failed", None, serving, self.last_error)
            if champion is None:
                self.last_error = f"model {self.name} has no champion yet"
                return ReloadResult("no_champion", None, serving, self.last_error)
            version, run_id = champion
            if self.current and self.current.version == version:
                self.last_error = None  # a registry that failed before answers again
                return ReloadResult("unchanged", version, version)
            refused = self.failed.get(version)
            if refused and not force and self.clock() - refused[1] < refused[2]:
                # The registry answers again: the error to show is the refusal's, not the outage's.
                self.last_error = f"loading {self.name} v{version} failed: {refused[0]}"
                return ReloadResult("failed", version, serving, refused[0])
            return self._load(version, run_id)

    def _check_alias(self, alias: int | None, recorded: int | None) -> None:
        if alias == recorded:
            self.alias_refused = None
            return
        problem = (
            f"the champion alias points at v{alias}, but the promotion history's champion is v{recorded}: "
            "the alias was moved outside the gate and is ignored"
        )
        if problem != self.alias_refused:  # counted and logged once per move, not once per poll
            self.metrics.alias_refused.inc()
            log.error("%s; serving v%s", problem, self.current.version if self.current else None)
        self.alias_refused = problem

    def _load(self, version: int, run_id: str | None) -> ReloadResult:
        self.loading = version
        started = time.perf_counter()
        try:
            served = self.source.load(version, run_id)
        except ModelLoadError as exc:
            return self._refuse(version, exc.reason, str(exc))
        except integrity.IntegrityError as exc:
            return self._refuse(version, "integrity", str(exc))
        except integrity.UnloadableModelError as exc:
            cause = exc.__cause__ or exc
            return self._refuse(version, "load", f"{type(cause).__name__}: {cause}")
        except REGISTRY_ERRORS as exc:  # the registry or the artifact store failed while fetching it
            return self._refuse(version, "load", f"{type(exc).__name__}: {exc}", fetch=True)
        except Exception as exc:
            # A bug, not a bad model: the version is not refused for good, but /health and the failures metric
            # say so before it propagates to the poller's or the reload's boundary (which logs its trace). The
            # poller tries it again as it does a failed fetch: after 10 s, then twice as long each time, up to
            # RETRY_FAILED_SECONDS; not every poll (a download, a check and a warm-up each), not for good.
            self.last_error = f"loading {self.name} v{version} failed (bug): {type(exc).__name__}: {exc}"
            self.metrics.load_failures.labels(reason="bug").inc()
            earlier = self.failed.get(version)
            wait = min(RETRY_FAILED_SECONDS, 2 * earlier[2] if earlier else RETRY_FETCH_SECONDS)
            self.failed[version] = (f"(bug) {type(exc).__name__}: {exc}", self.clock(), wait)
            raise
        finally:
            self.loading = None
        served.load_seconds = time.perf_counter() - started
        if (moved := self._champion_moved(version)) is not None:
            # A rollback (or a newer promotion) while it loaded: swapping it in now would serve the version the
            # rollback took away until the next load ended. The caller's next refresh follows the champion.
            log.warning(
                "not serving %s v%s: the champion moved to v%s while it loaded", self.name, version, moved
            )
            serving = self.current.version if self.current else None
            return ReloadResult(
                "superseded", version, serving, f"the champion moved to v{moved} while it loaded"
            )
        previous = self.current
        self.current = served  # the swap: requests that already read `previous` finish on it
        self.failed.pop(version, None)
        self.last_error = None
        self.metrics.model_swapped(served, previous)
        log.info(
            "serving %s v%s (sha256 %s…), loaded and warmed in %.2f s; was v%s",
            self.name,
            version,
            served.sha256[:12],
            served.load_seconds,
            previous.version if previous else None,
        )
        return ReloadResult("swapped", version, version)

    def _champion_moved(self, version: int) -> int | None:
        """The champion now, when it is no longer ``version``. A registry that cannot be read now is not taken
        for a move: the version loaded was the champion a moment ago."""
        try:
            now = self.source.champion()
        except REGISTRY_ERRORS as exc:
            log.warning("reading the champion of %s again after a load failed: %s", self.name, exc)
            return None
        return None if now is None or now[0] == version else now[0]

    def _refuse(self, version: int, reason: str, message: str, fetch: bool = False) -> ReloadResult:
        """``fetch``: fetching the version failed, which a moment may mend: retried sooner, backing off."""
        wait = RETRY_FAILED_SECONDS
        if fetch:
            earlier = self.failed.get(version)
            wait = min(RETRY_FAILED_SECONDS, 2 * earlier[2] if earlier else RETRY_FETCH_SECONDS)
        self.failed[version] = (message, self.clock(), wait)
        self.last_error = f"loading {self.name} v{version} failed ({reason}): {message}"
        self.metrics.load_failures.labels(reason=reason).inc()
        serving = self.current.version if self.current else None
        log.error("%s; still serving v%s", self.last_error, serving)
        return ReloadResult("failed", version, serving, message)
