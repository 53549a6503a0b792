"""Admin auth and the outer ASGI layer's pure decisions: who may reload, which route, which body size."""

from __future__ import annotations

import pytest

from pipelines.serving.admin import admin_refusal
from pipelines.serving.guard import length_refusal, route_of


def test_admin_routes_are_off_without_a_token():
    assert admin_refusal(None, "Bearer anything") == (
        403,
        "admin endpoints are disabled: set CT_SERVE_ADMIN_TOKEN",
    )


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer wrong", "Basic s3cret", "bearer s3cre", "s3cret"])
def test_a_missing_or_wrong_credential_is_refused(header):
    assert admin_refusal("s3cret", header) == (401, "missing or wrong bearer token")


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"])
def test_the_token_is_accepted_with_any_case_of_the_scheme(header):
    assert admin_refusal("s3cret", header) is None


@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/v1/predict", "", "/v1/predict"),
        ("/ml/v1/predict", "/ml", "/v1/predict"),  # mounted under a prefix
        ("/health", "", "/health"),
        ("/v1/predict/", "", "/v1/predict"),
        ("/secret", "", "other"),
        ("/ml", "/ml", "other"),
    ],
)
def test_routes_are_named_wherever_the_app_is_mounted(path, root, route):
    assert route_of({"path": path, "root_path": root}) == route


@pytest.mark.parametrize(
    ("length", "refusal"),
    [
        (None, None),
        (b"100", None),
        (b"4096", None),
        (b"4097", (413, "request body over 4096 bytes")),
        (b"-1", (400, "Content-Length is not a number")),
        (b"1e3", (400, "Content-Length is not a number")),
    ],
)
def test_the_declared_length_is_checked_before_the_body_is_read(length, refusal):
    headers = {} if length is None else {b"content-length": length}
    assert length_refusal(headers, 4096) == refusal
