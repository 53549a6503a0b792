"""Model integrity: a sha256 manifest of a model version's files, stored with the version, checked on use.

At registration :func:`build_manifest` hashes every file of the logged model; the manifest is stored on the
model version as the tag ``ct.artifact_manifest`` (JSON) with its own digest in ``ct.artifact_sha256``. The
registry database, not the artifact store, holds it, so whoever can rewrite artifacts cannot rewrite the
manifest with them. Evaluation, promotion, rollback and serving call :func:`fetch_verified`: the version's
files are downloaded to a local folder, checked against the manifest, and only that checked copy is loaded,
so what was verified is exactly what runs. A missing, altered or unexpected file refuses the version.

``registered_model_meta`` is left out of the manifest: MLflow writes it itself when a ``models:/`` URI is
downloaded (the registered name and version), and the pyfunc loader never reads it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.release import tracking

MANIFEST_TAG = "ct.artifact_manifest"
DIGEST_TAG = "ct.artifact_sha256"
MLFLOW_OWN_FILES = frozenset({"registered_model_meta"})
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """A model version's files do not match the manifest stored at registration (or it has none)."""


class UnloadableModelError(RuntimeError):
    """A version's verified files do not load as a model (its code no longer imports, a file is unreadable)."""


class LocalResourceError(OSError):
    """This machine could not hold or load a version: its disk or quota full, no memory or file handles, the
    download's destination not writable. Nothing was decided about the version: the task fails and its retry
    tries again (serving keeps its model and tries again later, as for a store out of reach)."""


class StoreUnavailableError(ConnectionError):
    """The registry or the artifact store was out of reach while a version was fetched: nothing is known about
    its files. Not a refusal: the task fails, and its retry fetches again (serving keeps its model and tries
    again later, as for any store failure)."""


# What loading a version's verified files raises when the files, not this project, are at fault: the
# registry (MlflowException, OSError); the pickled class or its module gone or changed (ImportError,
# AttributeError, TypeError); bytes that do not unpickle (pickle.UnpicklingError, EOFError, IndexError,
# ValueError); an artifact it expects missing (KeyError); weights torch cannot read (RuntimeError).
MODEL_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    MlflowException,
    OSError,
    ImportError,
    AttributeError,
    TypeError,
    pickle.UnpicklingError,
    EOFError,
    IndexError,
    ValueError,
    KeyError,
    RuntimeError,
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> dict[str, Path]:
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in MLFLOW_OWN_FILES
    }


def build_manifest(root: str | Path) -> dict[str, Any]:
    """sha256 and size of every file under ``root``, by relative path."""
    files = {
        rel: {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for rel, path in _files(Path(root)).items()
    }
    if not files:
        raise IntegrityError(f"no model files under {root}: nothing to register")
    return {"algorithm": "sha256", "files": files, "total_bytes": sum(f["bytes"] for f in files.values())}


def digest(manifest: dict[str, Any]) -> str:
    """One sha256 over the manifest's canonical JSON: the version's identity in logs, headers and /v1/model."""
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def tags_for(manifest: dict[str, Any]) -> dict[str, str]:
    return {MANIFEST_TAG: json.dumps(manifest, sort_keys=True), DIGEST_TAG: digest(manifest)}


def verify(root: str | Path, manifest: dict[str, Any], label: str = "model") -> None:
    """Raise :class:`IntegrityError` naming every missing, altered and unexpected file under ``root``."""
    found = _files(Path(root))
    expected = manifest["files"]
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    altered = sorted(
        rel
        for rel in set(expected) & set(found)
        if found[rel].stat().st_size != expected[rel]["bytes"]
        or _sha256(found[rel]) != expected[rel]["sha256"]
    )
    problems = [
        f"{kind}: {', '.join(names)}"
        for kind, names in (("missing", missing), ("altered", altered), ("unexpected", unexpected))
        if names
    ]
    if problems:
        raise IntegrityError(f"{label} does not match its sha256 manifest: {'; '.join(problems)}")


def stored_manifest(client: MlflowClient, name: str, version: int | str) -> dict[str, Any]:
    """The manifest stored with a version; a version without one (or with a damaged one) is refused."""
    tags = client.get_model_version(name, str(version)).tags
    raw = tags.get(MANIFEST_TAG)
    if not raw:
        raise IntegrityError(
            f"{name} v{version} has no {MANIFEST_TAG} tag: it was registered without an integrity manifest, "
            "so its files cannot be trusted; register the model again"
        )
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{name} v{version}: the {MANIFEST_TAG} tag is not valid JSON") from exc
    if tags.get(DIGEST_TAG) != digest(manifest):
        raise IntegrityError(
            f"{name} v{version}: {MANIFEST_TAG} does not match {DIGEST_TAG}; the tag was edited"
        )
    return manifest


def download(model_uri: str, dst: str | Path | None = None) -> Path:
    """Download a model's files into ``dst`` (a new temporary folder by default) and return the folder."""
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="ct-model-"))
    target.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(target)))


#: What this machine running short says (a full disk or quota, no memory, no file handles): no fault of a version.
LOCAL_SHORTAGE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (not a context its raiser suppressed)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _local_failure(exc: BaseException, folder: Path | None = None) -> bool:
    """Whether ``exc`` is this machine's failure, not the store's or the files': an OSError of
    :data:`LOCAL_SHORTAGE`, or about a path inside ``folder`` (the download's destination). MLflow downloads
    files on threads and raises one MlflowException of their errors' text, no longer chained: the text is read
    too (an ``[Errno N]`` of the shortage, or the destination's path)."""
    places = {os.path.realpath(folder), str(folder)} if folder is not None else set()
    for error in _causes(exc):
        if isinstance(error, OSError):
            if error.errno in LOCAL_SHORTAGE:
                return True
            paths = [
                os.path.realpath(os.fsdecode(p)) for p in (error.filename, error.filename2) if p is not None
            ]
            if any(
                path == place or path.startswith(place.rstrip("/") + "/")
                for path in paths
                for place in places
            ):
                return True
        text = str(error)
        if any(int(found) in LOCAL_SHORTAGE for found in _ERRNO_IN_TEXT.findall(text)):
            return True
        if any(place.rstrip("/") + "/" in text for place in places):
            return True
    return False


def _room_for(manifest: dict[str, Any], target: Path, label: str) -> None:
    """Raise :class:`LocalResourceError` when ``target``'s file system has less room than the version's files."""
    need = int(manifest.get("total_bytes") or sum(f["bytes"] for f in manifest["files"].values()))
    free = shutil.disk_usage(target).free
    if free < need:
        raise LocalResourceError(
            errno.ENOSPC,
            f"{label} needs {need:,} bytes and {target} has {free:,} free: nothing was decided about the version, "
            "free space (or point TMPDIR elsewhere) and try again",
        )


def fetch_verified(
    client: MlflowClient, name: str, version: int | str, dst: str | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Download ``models:/name/version`` and check it against its manifest; return the checked folder.

    A download this machine cannot hold (less room than the manifest's bytes, checked first) or that fails on it
    (:func:`_local_failure`) raises :class:`LocalResourceError`, like a store out of reach: nothing is known about
    the version's files."""
    try:
        manifest = stored_manifest(client, name, version)
    except MlflowException as exc:
        _raise_if_unavailable(exc, name, version)
        raise
    label = f"{name} v{version}"
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="ct-model-"))
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalResourceError(exc.errno, f"{label}: its download folder {target}: {exc}") from exc
    _room_for(manifest, target, label)
    try:
        local = download(f"models:/{name}/{version}", target)
    except tracking.artifact_store_errors() as exc:
        _raise_if_unavailable(exc, name, version)
        if _local_failure(exc, target):
            raise LocalResourceError(
                errno.EIO, f"{label}: its download failed on this machine, nothing was decided: {exc}"
            ) from exc
        # A store that answered without the files: the version is refused.
        raise IntegrityError(f"{label}: its files could not be downloaded: {exc}") from exc
    verify(local, manifest, label)
    return local, manifest


def _raise_if_unavailable(exc: BaseException, name: str, version: int | str) -> None:
    if tracking.unavailable(exc):
        raise StoreUnavailableError(
            f"{name} v{version}: the registry or its artifact store could not be reached "
            f"({type(exc).__name__}: {exc}); nothing was decided about the version, try again"
        ) from exc


def load_verified(
    client: MlflowClient, name: str, version: int | str, dst: str | Path | None = None
) -> tuple[Any, dict[str, Any]]:
    """The pyfunc model of a version, loaded from the copy that passed :func:`fetch_verified`, and its manifest.

    Raises :class:`IntegrityError` for files that do not match, :class:`UnloadableModelError` for files
    that match but do not load.
    """
    local, manifest = fetch_verified(client, name, version, dst)
    try:
        return mlflow.pyfunc.load_model(str(local)), manifest
    except MODEL_LOAD_ERRORS as exc:
        if _local_failure(exc):  # the machine short of memory, disk or handles: not the version's verdict
            raise LocalResourceError(
                errno.EIO, f"could not load {name} v{version} on this machine, nothing was decided: {exc}"
            ) from exc
        raise UnloadableModelError(f"could not load {name} v{version}: {type(exc).__name__}: {exc}") from exc
