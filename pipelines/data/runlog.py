"""Per-run stage records: each stage's result and duration, saved beside the data for its logical date.

The summary and a person debugging a run read them; a re-run of a stage overwrites its own record.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pipelines.data import storage
from pipelines.settings import Settings

F = TypeVar("F", bound=Callable[..., dict[str, Any]])

STAGES = ("generate", "validate", "prepare", "train", "register", "evaluate", "drift", "gate", "promote")


def stage(name: str) -> Callable[[F], F]:
    """Record the wrapped stage's result and wall time under ``runs/<dataset>/ds=<date>/<name>.json``."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            settings: Settings = bound.arguments["settings"]
            logical_date: dt.date = bound.arguments["logical_date"]
            started = time.perf_counter()
            result = func(*args, **kwargs)
            record = {
                "stage": name,
                "seconds": round(time.perf_counter() - started, 3),
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "result": result,
            }
            storage.write_json_atomic(
                storage.run_record_uri(settings.resolved_data_root, settings.dataset, logical_date, name),
                record,
            )
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def read_records(settings: Settings, logical_date: dt.date) -> dict[str, dict[str, Any]]:
    """Every stage record of a logical date that exists, by stage name, in pipeline order."""
    records = {}
    for name in STAGES:
        uri = storage.run_record_uri(settings.resolved_data_root, settings.dataset, logical_date, name)
        if storage.exists(uri):
            records[name] = storage.read_json(uri)
    return records
