"""A container stop gives the server time to finish its open requests and then write its prediction log."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.cli.serving import GRACEFUL_SHUTDOWN_S
from pipelines.serving.predlog import STOP_TRIES

COMPOSE = Path(__file__).resolve().parents[3] / "docker-compose.yaml"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a compose duration: {duration!r}")


def test_the_serving_replicas_stop_grace_outlasts_uvicorns_wait_and_the_logs_last_flushes():
    """compose's default is 10 s, then SIGKILL: a request open longer than that lost the buffered rows."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    serving = [
        name
        for name, service in services.items()
        if service.get("command", [None])[:2] == ["pipelines", "serve"]
    ]
    assert sorted(serving) == ["serving-a", "serving-b"]
    flush_waits = sum(2.0**attempt for attempt in range(STOP_TRIES - 1))  # 1 s and 2 s between the tries
    for name in serving:
        grace = _seconds(services[name].get("stop_grace_period", "10s"))
        assert grace >= GRACEFUL_SHUTDOWN_S + flush_waits + 10, (
            name,
            grace,
        )  # 10 s for the writes themselves
