"""``pipelines``: every stage as a command, so a run can be replayed and debugged without Airflow.

Each command takes the logical date; inputs that an earlier stage produced default to that stage's record
for the same date, so ``pipelines prepare -d 2026-11-20`` then ``pipelines train -d 2026-11-20`` just works.
"""

from __future__ import annotations

import typer

from pipelines.cli import data, evaluation, monitoring, release, serving, summary, training
from pipelines.cli.common import setup_logging

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
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
    ("summary", summary.summary),
    ("serve", serving.serve),
):
    app.command(name)(command)
app.add_typer(evaluation.drift_app, name="drift")
app.add_typer(monitoring.monitor_app, name="monitor")
