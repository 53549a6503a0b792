"""The serve command."""

from __future__ import annotations

import typer

from pipelines.cli.common import load_settings


def serve(
    host: str = typer.Option(None, help="Bind address (default: CT_SERVE_HOST)."),
    port: int = typer.Option(None, help="Port (default: CT_SERVE_PORT)."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
) -> None:
    """Serve the champion (one process); it follows the alias and hot-swaps. /docs has the API."""
    import uvicorn

    from pipelines.serving.app import create_app

    settings = load_settings()
    # --port 0: any free port (uvicorn's), not the setting's
    host = settings.serve_host if host is None else host
    port = settings.serve_port if port is None else port
    where = (
        f"http://{host}:{port}" if port else f"a free port of {host} (uvicorn's 'running on' line names it)"
    )
    typer.echo(f"Serving the champion of {settings.model_name} on {where} (API: /docs)")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=access_log,
        timeout_graceful_shutdown=30,
    )
