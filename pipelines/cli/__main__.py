"""``python -m pipelines.cli``: the same as the ``pipelines`` command."""

from pipelines.cli import app

app()
