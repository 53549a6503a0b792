"""Who may call the admin routes: a bearer token compared in constant time; none configured, none may."""

from __future__ import annotations

import hmac


def admin_refusal(token: str | None, authorization: str) -> tuple[int, str] | None:
    """None when ``authorization`` carries the token; else the status and reason to refuse with.

    403 when no token is configured (the admin routes are off), 401 when the header is missing, not a
    bearer credential, or the wrong token.
    """
    if token is None:
        return 403, "admin endpoints are disabled: set CT_SERVE_ADMIN_TOKEN"
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), token.encode()):
        return 401, "missing or wrong bearer token"
    return None
