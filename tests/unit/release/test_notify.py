"""Telling the serving replicas: whatever one answers, promote's report says it and never raises."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from pipelines.release.notify import notify_serving
from pipelines.settings import get_settings

ANSWERS = {"/list": b'["reloaded"]', "/null": b"null", "/text": b'"reloaded"', "/object": b'{"serving": 3}'}


@pytest.fixture
def replica() -> Iterator[str]:
    """A real HTTP server on loopback that answers POST <prefix>/admin/reload with the prefix's JSON body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = ANSWERS[self.path.removesuffix("/admin/reload")]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_replica_answering_json_that_is_not_an_object_is_reported_not_raised(replica, tmp_path):
    """A body that is a list, a string or null raised TypeError after the alias had moved: the task failed, and a
    person who ran the rollback again rolled back twice."""
    urls = [f"{replica}{prefix}" for prefix in ANSWERS]
    told = notify_serving(get_settings(state_dir=tmp_path, serve_urls=",".join(urls)), timeout_s=10)
    assert told is not None
    assert [(t["http_status"], t.get("detail"), t.get("serving")) for t in told] == [
        (200, ["reloaded"], None),
        (200, None, None),
        (200, "reloaded", None),
        (200, None, 3),
    ]


def test_a_replica_url_promote_could_not_call_is_refused_when_the_settings_are_read(tmp_path):
    with pytest.raises(ValueError, match="'http://serving-a:80x' is not a valid URL"):
        get_settings(state_dir=tmp_path, serve_urls="http://serving-a:8000,http://serving-a:80x")
    with pytest.raises(ValueError, match="'http://serving-a:80000' has port 80000, not 1 to 65535"):
        get_settings(state_dir=tmp_path, serve_urls="http://serving-a:80000")
