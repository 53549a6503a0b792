"""Loopback helpers the suite's real services share: a free port, and whether a URL answers."""

from __future__ import annotations

import socket

import httpx


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str, timeout: float = 30) -> bool:
    """Whether ``url`` answers 200 (a server still starting refuses the connection or answers otherwise)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False
