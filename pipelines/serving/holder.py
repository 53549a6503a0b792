"""The model in service and how it is replaced: load beside, verify, warm, then one atomic swap.

A new champion is loaded on a worker thread while the current one keeps answering. Its files are
checked against the manifest stored at registration (:mod:`pipelines.integrity`), its signature must be
usable, and it must score warm-up batches; only then does ``current`` point at it, in one reference
assignment. A request reads ``current`` once, at its start, and is scored on that model to the end.
A version that fails is counted, logged with the reason, and left alone by the poller for
``RETRY_FAILED_SECONDS`` (an admin reload retries it at once); the previous model keeps serving.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipelines import integrity, tracking
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.runtime import ModelLoadError, ServedModel, set_threads
from pipelines.serving.schema import InputSchema
from pipelines.settings import Settings

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 300.0


@dataclass(frozen=True)
class ReloadResult:
    status: str  # swapped | unchanged | failed | no_champion
    version: int | None
    serving: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "version": self.version, "serving": self.serving, "error": self.error}


class ModelHolder:
    def __init__(self, settings: Settings, metrics: ServingMetrics):
        self.settings = settings
        self.metrics = metrics
        self.current: ServedModel | None = None
        self.loading: int | None = None
        self.last_error: str | None = None
        self.failed: dict[int, tuple[str, float]] = {}  # version -> (why it was refused, when)
        self._lock = threading.Lock()  # one load at a time (poller and admin reload)

    def refresh(self, force: bool = False) -> ReloadResult:
        """Serve the version the ``champion`` alias points at, if it is not already served."""
        name = self.settings.model_name
        serving = self.current.version if self.current else None
        with self._lock:
            try:
                client = tracking.configure(self.settings)
                champion = tracking.version_by_alias(client, name, tracking.CHAMPION)
            except Exception as exc:  # the registry is down: keep serving, say so
                self.last_error = f"reading the champion alias of {name} failed: {exc}"
                log.warning(self.last_error)
                return ReloadResult("failed", None, serving, self.last_error)
            if champion is None:
                self.last_error = f"model {name} has no champion yet"
                return ReloadResult("no_champion", None, serving, self.last_error)
            version = int(champion.version)
            if self.current and self.current.version == version:
                return ReloadResult("unchanged", version, version)
            refused = self.failed.get(version)
            if refused and not force and time.monotonic() - refused[1] < RETRY_FAILED_SECONDS:
                return ReloadResult("failed", version, serving, refused[0])
            return self._load(client, champion, version)

    def _load(self, client: Any, champion: Any, version: int) -> ReloadResult:
        name = self.settings.model_name
        self.loading = version
        started = time.perf_counter()
        try:
            served = self._build(client, champion, version)
        except ModelLoadError as exc:
            return self._refuse(version, exc.reason, str(exc))
        except integrity.IntegrityError as exc:
            return self._refuse(version, "integrity", str(exc))
        except Exception as exc:
            return self._refuse(version, "load", f"{type(exc).__name__}: {exc}")
        finally:
            self.loading = None
        served.load_seconds = time.perf_counter() - started
        previous = self.current
        self.current = served  # the swap: requests that already read `previous` finish on it
        self.failed.pop(version, None)
        self.last_error = None
        self.metrics.model_swapped(served, previous)
        log.info(
            "serving %s v%s (sha256 %s…), loaded and warmed in %.2f s; was v%s",
            name,
            version,
            served.sha256[:12],
            served.load_seconds,
            previous.version if previous else None,
        )
        return ReloadResult("swapped", version, version)

    def _build(self, client: Any, champion: Any, version: int) -> ServedModel:
        name = self.settings.model_name
        with tempfile.TemporaryDirectory(prefix="ct-serve-") as tmp:
            # Only files that match the manifest stored at registration are loaded.
            model, manifest = integrity.load_verified(client, name, version, tmp)
        try:
            schema = InputSchema.from_signature(model.metadata.signature)
        except ValueError as exc:
            raise ModelLoadError("signature", str(exc)) from exc
        set_threads(self.settings.serve_threads)  # the model's own loader may have changed them
        served = ServedModel(
            name=name,
            version=version,
            sha256=integrity.digest(manifest),
            run_id=getattr(champion, "run_id", None),
            schema=schema,
            pyfunc=model,
        )
        served.use_runtime(self.settings.serve_runtime, self.settings.serve_threads)
        served.warm_up(self.settings.serve_max_batch_rows)
        return served

    def _refuse(self, version: int, reason: str, message: str) -> ReloadResult:
        name = self.settings.model_name
        self.failed[version] = (message, time.monotonic())
        self.last_error = f"loading {name} v{version} failed ({reason}): {message}"
        self.metrics.load_failures.labels(reason=reason).inc()
        serving = self.current.version if self.current else None
        log.error("%s; still serving v%s", self.last_error, serving)
        return ReloadResult("failed", version, serving, message)
