"""``pipelines``: every stage as a command, so a run can be replayed and debugged without Airflow.

Each command takes the logical date; inputs that an earlier stage produced default to that stage's record
for the same date, so ``pipelines prepare -d 2026-11-20`` then ``pipelines train -d 2026-11-20`` just works.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from pipelines.cli import data, evaluation, monitoring, release, serving, summary, training
from pipelines.cli.common import request_errors, setup_logging


class _Commands(TyperGroup):
    """Every command: a named error about the request exits 2 with its message (see :func:`request_errors`); a
    champion alias moved outside the gate, a training loss gone NaN or infinite, a dataset prepared again under
    a running training, or a rank running other code than its driver, exits 1 with its message; a service out of
    reach (the registry, its artifact store, a lock another process holds past its wait), or this machine short of
    what a version's download needs (disk, quota, memory, file handles, a writable folder), exits 4 with one line
    naming it, for a retry; anything else, a bug, exits 1 with its traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click.Context of Typer's own copy of click
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # its own exit code, or a usage error
            raise
        except Exception as exc:
            if isinstance(exc, request_errors()):
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            from pipelines.release.audit import AliasMovedError
            from pipelines.release.integrity import LocalResourceError
            from pipelines.release.tracking import unavailable
            from pipelines.training.job import FatalTrainingError

            # The operation failed, and says why: a champion alias moved outside the gate, a loss gone NaN, a
            # dataset prepared again under a running training, a rank of other code than its driver.
            if isinstance(exc, (AliasMovedError, FatalTrainingError)):
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            if isinstance(exc, LocalResourceError):  # nothing was decided about the version
                typer.echo(
                    f"error: this machine could not hold it, run the command again once it can: {exc}",
                    err=True,
                )
                raise typer.Exit(4) from None
            if not unavailable(exc):
                raise
            typer.echo(
                f"error: a service was out of reach, run the command again once it answers: {_first_line(exc)}",
                err=True,
            )
            raise typer.Exit(4) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


app = typer.Typer(cls=_Commands, help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.callback()(setup_logging)
for name, command in (
    ("generate", data.generate),
    ("validate", data.validate),
    ("sample-data", data.sample_data),
    ("prepare", data.prepare),
    ("train", training.train),
    ("register", release.register),
    ("evaluate", evaluation.evaluate),
    ("gate", evaluation.gate),
    ("promote", release.promote),
    ("policy", evaluation.policy),
    ("rollback", release.rollback),
    ("history", release.history),
    ("prune", training.prune),
    ("summary", summary.summary),
    ("serve", serving.serve),
):
    app.command(name)(command)
app.add_typer(evaluation.drift_app, name="drift")
app.add_typer(monitoring.monitor_app, name="monitor")
