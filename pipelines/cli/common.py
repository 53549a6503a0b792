"""What every command shares: the date option, settings with a readable error, JSON output, earlier results."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import typer
from pydantic import ValidationError

from pipelines.data import runlog
from pipelines.settings import ENGINE_NAMES, Settings, get_settings

DateOption = typer.Option(
    ..., "--date", "-d", help="Logical date (YYYY-MM-DD) of the run.", formats=["%Y-%m-%d"]
)


def one_of(choices: Sequence[str]) -> Callable[[str | None], str | None]:
    """An option's check: a value outside ``choices`` is a usage error naming them (exit 2)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"'{value}' is not one of {', '.join(choices)}")
        return value

    return check


#: The --engine option of the data commands.
EngineOption = typer.Option(None, help="dask or spark (default: CT_ENGINE).", callback=one_of(ENGINE_NAMES))


def request_errors() -> tuple[type[Exception], ...]:
    """The project's named errors that say what to change in the request: a file of settings that is missing or
    wrong (contract, policies, model settings), a day's data or an earlier stage's output not there, a day
    validated under another contract; or work another process is doing or did meanwhile (a training of the same
    run key, a raw day committed again while prepare read it: run it again). A command that raises one exits 2
    with its message, no traceback."""
    from pipelines.data.contract import ContractError
    from pipelines.data.datasets import DatasetNotFoundError, EmptySplitError
    from pipelines.data.features import HoldoutWindowError
    from pipelines.data.generate import NoGeneratorError
    from pipelines.data.prepare import RawChangedError, UnvalidatedDayError
    from pipelines.data.sources import SourceMissingError, SourceUriError
    from pipelines.data.storage import FutureDayError
    from pipelines.evaluation.drift import ProfileVersionError
    from pipelines.evaluation.evaluate import HoldoutError, UnknownVersionError
    from pipelines.evaluation.policy import PolicyError
    from pipelines.monitoring.policy import MonitoringPolicyError
    from pipelines.release.history import LockHeldError, NoHistoryDatabaseError
    from pipelines.release.register import NoModelLoggedError
    from pipelines.training.model_settings import ModelSettingsError, TrainingConfigError

    return (
        ContractError,
        DatasetNotFoundError,
        EmptySplitError,
        NoGeneratorError,
        UnvalidatedDayError,
        RawChangedError,
        SourceMissingError,
        SourceUriError,
        HoldoutWindowError,
        FutureDayError,
        PolicyError,
        ProfileVersionError,
        HoldoutError,
        UnknownVersionError,
        MonitoringPolicyError,
        ModelSettingsError,
        TrainingConfigError,
        LockHeldError,
        NoHistoryDatabaseError,
        NoModelLoggedError,
    )


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "py4j", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # every shuffle logs a WARNING


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment (and ``overrides``); a bad value exits 2 naming the variable."""
    try:
        return get_settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            typer.echo(f"setting {field} (CT_{field.upper()}): {error['msg']}", err=True)
        raise typer.Exit(2) from None


def emit(result: Any) -> None:
    """A command's result on standard output, as JSON."""
    typer.echo(json.dumps(result, indent=2, default=str))


def previous(settings: Settings, day: dt.date, stage: str) -> dict[str, Any]:
    """The result an earlier stage recorded for ``day``; exit 2 saying which command to run when there is none."""
    records = runlog.read_records(settings, day)
    if stage not in records:
        typer.echo(f"no '{stage}' record for {day}: run `pipelines {stage} -d {day}` first", err=True)
        raise typer.Exit(2)
    return records[stage]["result"]
