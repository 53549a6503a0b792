"""The sha256 manifest: built once, and every missing, altered or unexpected file is named."""

from __future__ import annotations

import json

import pytest

from pipelines.release import integrity


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "artifacts").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "artifacts" / "weights.pt").write_bytes(b"\x00" * 1000)
    return root


def test_manifest_lists_every_file_with_its_hash_and_size(model_dir):
    manifest = integrity.build_manifest(model_dir)
    assert set(manifest["files"]) == {"MLmodel", "artifacts/weights.pt"}
    assert manifest["total_bytes"] == 1000 + len("flavors: {}\n")
    assert len(manifest["files"]["MLmodel"]["sha256"]) == 64
    integrity.verify(model_dir, manifest)  # an untouched copy passes


def test_mlflow_own_registration_file_is_not_part_of_the_manifest(model_dir):
    manifest = integrity.build_manifest(model_dir)
    (model_dir / "registered_model_meta").write_text("model_name: x\nmodel_version: '1'\n")
    integrity.verify(model_dir, manifest)
    assert integrity.build_manifest(model_dir) == manifest


def test_altered_missing_and_unexpected_files_are_named(model_dir):
    manifest = integrity.build_manifest(model_dir)
    (model_dir / "artifacts" / "weights.pt").write_bytes(b"\x01" + b"\x00" * 999)  # same size, one byte off
    (model_dir / "MLmodel").unlink()
    (model_dir / "artifacts" / "extra.py").write_text("import os\n")
    with pytest.raises(integrity.IntegrityError) as caught:
        integrity.verify(model_dir, manifest, "ct-x v3")
    message = str(caught.value)
    assert message.startswith("ct-x v3 does not match its sha256 manifest")
    assert "missing: MLmodel" in message and "altered: artifacts/weights.pt" in message
    assert "unexpected: artifacts/extra.py" in message


def test_digest_is_stable_and_tags_round_trip(model_dir):
    manifest = integrity.build_manifest(model_dir)
    tags = integrity.tags_for(manifest)
    assert json.loads(tags[integrity.MANIFEST_TAG]) == manifest
    assert tags[integrity.DIGEST_TAG] == integrity.digest(json.loads(tags[integrity.MANIFEST_TAG]))
    (model_dir / "artifacts" / "weights.pt").write_bytes(b"\x02" * 1000)
    assert integrity.digest(integrity.build_manifest(model_dir)) != tags[integrity.DIGEST_TAG]


def test_an_empty_folder_has_no_manifest(tmp_path):
    with pytest.raises(integrity.IntegrityError, match="no model files"):
        integrity.build_manifest(tmp_path)
