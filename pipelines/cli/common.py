"""What every command shares: the date option, settings with a readable error, JSON output, earlier results."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import typer
from pydantic import ValidationError

from pipelines.data import runlog
from pipelines.settings import Settings, get_settings

DateOption = typer.Option(
    ..., "--date", "-d", help="Logical date (YYYY-MM-DD) of the run.", formats=["%Y-%m-%d"]
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
