"""Tell the running serving replicas that the champion moved (``POST /admin/reload``); each also polls."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.settings import Settings

log = logging.getLogger(__name__)


def notify_serving(settings: Settings, timeout_s: float = 120.0) -> list[dict[str, Any]] | None:
    """Ask every replica at ``CT_SERVE_URLS`` to load the champion now, all at once; what each one did.

    Returns None when no replica is configured, else one answer per replica in the order of the setting.
    Never raises: the alias has moved whatever a replica answers, and one that missed the call finds the new
    champion at its next poll.
    """
    if not settings.serve_urls:
        return None
    headers = {}
    if settings.serve_admin_token:
        headers["Authorization"] = f"Bearer {settings.serve_admin_token.get_secret_value()}"
    with ThreadPoolExecutor(max_workers=len(settings.serve_urls)) as pool:
        return list(pool.map(lambda url: _reload(url, headers, timeout_s), settings.serve_urls))


def _reload(base_url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    import httpx

    url = f"{base_url}/admin/reload"
    try:
        response = httpx.post(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("serving at %s was not told (%s); it picks the champion up at its next poll", url, exc)
        return {"url": url, "status": "unreachable", "error": str(exc)}
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    if not isinstance(body, dict):  # a proxy's or an older replica's answer: a list, a string, null
        body = {"detail": body}
    result = {"url": url, "http_status": response.status_code, **body}
    if response.status_code == 200:
        log.info("serving at %s: %s, serving v%s", url, body.get("status"), body.get("serving"))
    else:
        log.warning("serving at %s answered %s: %s", url, response.status_code, body)
    return result
