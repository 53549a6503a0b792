"""A registry or artifact store out of reach is not a verdict on the model: fetching a version then fails as
unavailable (the task fails, its retry fetches again), where a store that answers without the files refuses it.

The stores here are real HTTP peers: a closed port, and a server that answers every request with one status.
"""

from __future__ import annotations

import errno
import http.server
import json
import threading
from collections.abc import Iterator

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.data.contract import dataset_contract
from pipelines.evaluation.evaluate import score_version
from pipelines.release import integrity
from pipelines.settings import get_settings
from tests.net import free_port


@pytest.fixture(autouse=True)
def no_retries(monkeypatch):
    """MLflow retries a refused connection or a 5xx with backoff for minutes; once is enough to see it fail.
    The process's MLflow URIs (a ``models:/`` download reads them) are put back after each test."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)


def _answering(status: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store_503():
    yield from _answering(503)


@pytest.fixture
def store_404():
    yield from _answering(404)


def _registry_with_files_at(tmp_path, source: str) -> MlflowClient:
    """A real registry (SQLite) holding version 1 of ``m``, its manifest tags set, its files at ``source``."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    manifest: dict = {"files": {}}
    tags = {integrity.MANIFEST_TAG: json.dumps(manifest), integrity.DIGEST_TAG: integrity.digest(manifest)}
    client.create_model_version("m", source, tags=tags)
    return client


def test_a_registry_out_of_reach_is_unavailable_and_evaluate_fails_rather_than_record_a_reject(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    client = MlflowClient(tracking_uri=closed, registry_uri=closed)
    with pytest.raises(integrity.StoreUnavailableError, match="could not be reached"):
        integrity.fetch_verified(client, "m", 1, tmp_path)
    contract = dataset_contract(get_settings(state_dir=tmp_path / "state"))
    holdout = pd.DataFrame({name: [] for name in contract.feature_columns})
    with pytest.raises(integrity.StoreUnavailableError):  # not an EvaluationError the gate would reject on
        score_version(client, "m", 1, holdout, contract)


def test_an_artifact_store_failing_for_now_is_unavailable(tmp_path, store_503):
    client = _registry_with_files_at(tmp_path, f"{store_503}/api/2.0/mlflow-artifacts/artifacts/m1")
    with pytest.raises(integrity.StoreUnavailableError, match="could not be reached"):
        integrity.fetch_verified(client, "m", 1, tmp_path / "copy")


def test_a_store_that_answers_without_the_files_refuses_the_version(tmp_path, store_404):
    client = _registry_with_files_at(tmp_path, f"{store_404}/api/2.0/mlflow-artifacts/artifacts/m1")
    with pytest.raises(integrity.IntegrityError, match="could not be downloaded"):
        integrity.fetch_verified(client, "m", 1, tmp_path / "copy")


def test_a_download_that_fails_on_this_machine_raises_its_own_error_not_a_refusal(tmp_path):
    """A full disk (or a destination that cannot be written) while a version downloaded was recorded as the
    version's fault: promote wrote a refused row and failed for good, evaluate had the gate reject it. It is this
    machine's state (LocalResourceError, an OSError: no verdict), and the task's retry downloads again."""
    files = tmp_path / "model"
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    client = _registry_with_files_at(tmp_path, str(files))
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a destination below a file: it cannot be made
    with pytest.raises(integrity.LocalResourceError, match="its download folder"):
        integrity.fetch_verified(client, "m", 1, blocked / "copy")
    # more bytes than the destination's disk has room for, by the manifest: refused before a byte is fetched
    huge: dict = {"files": {"MLmodel": {"sha256": "0" * 64, "bytes": 2**62}}, "total_bytes": 2**62}
    client.set_model_version_tag("m", "1", integrity.MANIFEST_TAG, json.dumps(huge))
    client.set_model_version_tag("m", "1", integrity.DIGEST_TAG, integrity.digest(huge))
    with pytest.raises(integrity.LocalResourceError, match=r"needs 4,611,686,018,427,387,904 bytes") as full:
        integrity.fetch_verified(client, "m", 1, tmp_path / "copy")
    assert full.value.errno == errno.ENOSPC and not (tmp_path / "copy" / "MLmodel").exists()
    # evaluate fails, with no EvaluationError the gate would reject on
    with pytest.raises(integrity.LocalResourceError):
        score_version(
            client, "m", 1, pd.DataFrame(), dataset_contract(get_settings(state_dir=tmp_path / "s"))
        )
    # a disk that fills during the download: MLflow downloads on threads and raises one MlflowException of the
    # files' errors as text, chained to nothing (as mlflow's artifact_repo does)
    with open("/dev/full", "wb", buffering=0) as device, pytest.raises(OSError) as kernel:
        device.write(b"x")  # the kernel's own full disk, for its message
    copy = tmp_path / "copy"
    written = MlflowException(
        f"failures while downloading: {{'MLmodel': \"{kernel.value}: '{copy}/MLmodel'\"}}"
    )
    assert integrity._local_failure(written, copy)
    assert not integrity._local_failure(MlflowException("404: artifacts/m1/MLmodel not found"), copy)
