"""Tell a running serving app that the champion moved (``POST /admin/reload``); the app also polls."""

from __future__ import annotations

import logging
from typing import Any

from pipelines.settings import Settings

log = logging.getLogger(__name__)


def notify_serving(settings: Settings, timeout_s: float = 120.0) -> dict[str, Any] | None:
    """Ask the app at ``CT_SERVE_URL`` to load the champion now and say what it did.

    Returns None when no serving URL is configured. Never raises: the alias has moved whatever the app
    answers, and an app that missed the call finds the new champion at its next poll.
    """
    if not settings.serve_url:
        return None
    import httpx

    url = f"{settings.serve_url.rstrip('/')}/admin/reload"
    headers = {}
    if settings.serve_admin_token:
        headers["Authorization"] = f"Bearer {settings.serve_admin_token.get_secret_value()}"
    try:
        response = httpx.post(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("serving at %s was not told (%s); it picks the champion up at its next poll", url, exc)
        return {"url": url, "status": "unreachable", "error": str(exc)}
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    result = {"url": url, "http_status": response.status_code, **body}
    if response.status_code == 200:
        log.info("serving at %s: %s, serving v%s", url, body.get("status"), body.get("serving"))
    else:
        log.warning("serving at %s answered %s: %s", url, response.status_code, body)
    return result
