"""The serve command."""

from __future__ import annotations

import errno
import socket

import typer

from pipelines.cli.common import load_settings

#: uvicorn's exit status when its server did not start (``uvicorn.main.STARTUP_FAILURE``): it logs the error,
#: then exits 3, which this CLI's callers read as "the gate rejects"; it is made 1, an operation that failed.
UVICORN_STARTUP_FAILURE = 3
# How long a stop waits for open requests before the app's shutdown (which writes the prediction log's buffer).
GRACEFUL_SHUTDOWN_S = 30


def _check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (every address the host resolves to, as asyncio's ``create_server``
    does, skipping one of a family this machine has not enabled), and let it go: an address it cannot serve on
    is one line naming it, exit 2 (an address it does not have, a host that does not resolve) or 4 (a port in
    use: run it again once it is free)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        typer.echo(
            f"error: cannot serve on {host}:{port}: the host does not resolve ({exc.strerror})", err=True
        )
        raise typer.Exit(2) from None
    bound, problem = 0, "no address to bind"
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    typer.echo(f"error: cannot serve on {host}:{port}: the port is in use", err=True)
                    raise typer.Exit(4) from None
                problem = exc.strerror or str(exc)
                if exc.errno == errno.EADDRNOTAVAIL:  # asyncio skips such an address too
                    continue
                typer.echo(f"error: cannot serve on {host}:{port}: {problem}", err=True)
                raise typer.Exit(2) from None
            bound += 1
    if not bound:
        typer.echo(f"error: cannot serve on {host}:{port}: {problem}", err=True)
        raise typer.Exit(2)


def serve(
    host: str = typer.Option(None, help="Bind address (default: CT_SERVE_HOST)."),
    port: int = typer.Option(None, min=0, max=65535, help="Port (default: CT_SERVE_PORT; 0: any free port)."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
) -> None:
    """Serve the champion (one process); it follows the alias and hot-swaps. /docs has the API."""
    import uvicorn

    from pipelines.serving.app import create_app

    settings = load_settings()
    # --port 0: any free port (uvicorn's), not the setting's
    host = settings.serve_host if host is None else host
    port = settings.serve_port if port is None else port
    _check_bindable(host, port)
    where = (
        f"http://{host}:{port}" if port else f"a free port of {host} (uvicorn's 'running on' line names it)"
    )
    typer.echo(f"Serving the champion of {settings.model_name} on {where} (API: /docs)")
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            access_log=access_log,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    except SystemExit as exc:
        if exc.code != UVICORN_STARTUP_FAILURE:
            raise
        # The app's start failed (or the port was taken since the check): uvicorn logged why, with its trace.
        typer.echo(f"error: the server did not start on {host}:{port} (uvicorn's error is above)", err=True)
        raise typer.Exit(1) from None
