"""Files and folders on any fsspec file system: the data root's layout, and writes that are atomic.

Folders are built under a temporary name and renamed into place, files are written under a temporary name
and renamed, so a reader sees the old version or the new one, never half of either. Parquet datasets and
their manifests are in :mod:`pipelines.data.datasets`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)


def join(*parts: str) -> str:
    """Join URI parts with '/', whatever the file system."""
    head, *rest = parts
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest)])


def ds_str(day: dt.date) -> str:
    return day.isoformat()


def raw_uri(data_root: str, dataset: str, day: dt.date) -> str:
    return join(data_root, "raw", dataset, f"ds={ds_str(day)}")


def features_uri(data_root: str, dataset: str, day: dt.date) -> str:
    return join(data_root, "features", dataset, f"ds={ds_str(day)}")


def split_folder(split: str) -> str:
    """The folder of one split in a prepared dataset, as the engines name a partition (``column=value``)."""
    return f"split={split}"


def split_uri(features: str, split: str) -> str:
    return join(features, split_folder(split))


def reports_uri(data_root: str, dataset: str, day: dt.date) -> str:
    return join(data_root, "reports", dataset, f"ds={ds_str(day)}")


def run_record_uri(data_root: str, dataset: str, day: dt.date, stage: str) -> str:
    return join(data_root, "runs", dataset, f"ds={ds_str(day)}", f"{stage}.json")


def window_days(end: dt.date, days: int) -> list[dt.date]:
    """The ``days`` calendar days that end on ``end``, oldest first."""
    return [end - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]


class FutureDayError(ValueError):
    """Retention asked to count back from a day after today: a typo of a year would remove everything."""


def check_not_future(day: dt.date, what: str) -> None:
    """Refuse ``day`` when it is after today (UTC), naming ``what`` counts back from it."""
    today = dt.datetime.now(dt.UTC).date()
    if day > today:
        raise FutureDayError(f"{what} counts back from {day}, which is after today ({today}, UTC)")


def day_folders_before(root: str, before: dt.date) -> list[str]:
    """The ``ds=<day>`` folders right under ``root`` of the days before ``before``, as URIs, oldest first (a
    folder of another name is not a day's: left out)."""
    fs, path = url_to_fs(root)
    if not fs.exists(path):
        return []
    found = []
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("ds="):
            continue
        try:
            day = dt.date.fromisoformat(name[3:])
        except ValueError:
            continue
        if day < before:
            found.append(fs.unstrip_protocol(entry))
    return sorted(found)


#: A folder or file that a write left under its temporary name (its process was killed, by the kernel's
#: out-of-memory killer or a lost node, before it renamed or removed it) is removed by a later folder write beside
#: it once nothing in it has changed for this long; a write still under way touches its files far more often.
STALE_WRITE = dt.timedelta(hours=24)
_TMP, _OLD = ".__tmp-", ".__old-"
#: A committed folder's last file (the datasets' manifest, :mod:`pipelines.data.datasets`): readers take a folder
#: without one for no folder at all.
COMMIT_FILE = "_manifest.json"
_WRITE_MARKS = (_TMP, _OLD)


_SWAP_STARTED = re.compile(r"\.__old-(\d{10,})-[0-9a-f]{8}$")


def modified(fs: Any, path: str) -> dt.datetime:
    when = fs.modified(path)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def changed_since(fs: Any, path: str, since: dt.datetime) -> bool:
    """Whether anything under ``path`` (a file or a folder) changed after ``since``; stops at the first. What
    cannot be told (a folder without a time of its own, as on an object store) counts as changed: kept."""
    files = fs.find(path)
    if not files:
        try:
            return modified(fs, path) > since
        except NotImplementedError:
            return True
    return any(modified(fs, file) > since for file in files)


def _stale(fs: Any, entry: str, since: dt.datetime) -> bool:
    name = entry.rstrip("/").rsplit("/", 1)[-1]
    if not any(mark in name for mark in _WRITE_MARKS):
        return False
    # An old version moved aside keeps its files' times: the swap's start is in its name, so one that a write
    # beside this one is swapping now (its next step removes it) is not taken for a leftover.
    if started := _SWAP_STARTED.search(name):
        return dt.datetime.fromtimestamp(int(started.group(1)), dt.UTC) <= since
    return not changed_since(fs, entry, since)


def _sweep_stale_writes(fs: Any, folder: str) -> None:
    """Tidy what writes in ``folder`` left under their temporary names when their process was killed, once
    nothing in it changed for :data:`STALE_WRITE` (a write still under way is left alone):

    * an old version moved aside (``<name>.__old-<time>-<token>``) beside no ``<name>``: the swap was cut
      between its two renames and readers lost the last committed version; it is renamed back;
    * any other ``<name>.__tmp-*`` or ``<name>.__old-*``: removed.

    A name with a write under way beside it (a fresh temporary folder or moved-aside version of it) is left
    alone: on an object store a move copies file by file, and a restore or a removal then would mix two
    versions in one folder, or remove the one being copied.

    Each is logged. Another sweep or write beside this one may take an entry first: housekeeping never fails
    the write that committed before it, so a storage error on an entry is logged and the entry left."""
    since = dt.datetime.now(dt.UTC) - STALE_WRITE
    stale, busy = [], set()
    for entry in sorted(fs.ls(folder, detail=False), reverse=True):  # a name's newest old version first
        try:
            if _stale(fs, entry, since):
                stale.append(entry)
            elif any(mark in entry.rstrip("/").rsplit("/", 1)[-1] for mark in _WRITE_MARKS):
                busy.add(_written_name(entry))
        except OSError as exc:
            log.warning("left %s: %s: %s", entry, type(exc).__name__, exc)
    for entry in stale:
        if _written_name(entry) in busy:
            continue
        try:
            _tidy(fs, entry, since)
        except OSError as exc:  # taken by a sweep or a write beside this one, or the storage failed
            log.warning("left %s: %s: %s", entry, type(exc).__name__, exc)


def _tidy(fs: Any, entry: str, since: dt.datetime) -> None:
    """One stale entry of :func:`_sweep_stale_writes`: restored, removed, or (a committed old version beside a
    name not committed yet: a restore under way) left."""
    target = entry.rstrip("/").rsplit(_OLD, 1)[0] if _OLD in entry else None
    if target is not None:
        if _cut_short(fs, target, entry, since):
            log.warning(
                "removing %s: the publishing of its new version was cut short (no %s)", target, COMMIT_FILE
            )
            fs.rm(target, recursive=True)
        if not fs.exists(target):
            log.warning("restoring %s from %s: a swap killed between its two renames left it", target, entry)
            _move_folder(fs, entry, target)
            return
        if fs.exists(f"{entry.rstrip('/')}/{COMMIT_FILE}") and not fs.exists(f"{target}/{COMMIT_FILE}"):
            return
    log.warning(
        "removing %s: a write's temporary copy, unchanged for over %s (its writer died)", entry, STALE_WRITE
    )
    fs.rm(entry, recursive=True)


def _written_name(entry: str) -> str:
    """The name a write's temporary folder or moved-aside version is of (``<name>.__tmp-*``: ``<name>``)."""
    name = entry.rstrip("/")
    for mark in _WRITE_MARKS:
        name = name.split(mark, 1)[0]
    return name


def _cut_short(fs: Any, target: str, old: str, since: dt.datetime) -> bool:
    """Whether ``target`` is a version whose publishing by copies (:func:`_move_folder`) was killed part way,
    beside the committed old version ``old``: it has no commit file, and nothing in it changed since ``since``
    (a publishing under way writes to it)."""
    return (
        fs.exists(target)
        and not fs.exists(f"{target}/{COMMIT_FILE}")
        and fs.exists(f"{old.rstrip('/')}/{COMMIT_FILE}")
        and not changed_since(fs, target, since)
    )


def _move_folder(fs: Any, source: str, target: str) -> None:
    """Move the folder ``source`` to ``target`` (which does not exist).

    On a local disk, one rename: a reader sees the folder whole or not at all. An object store has no rename
    (fsspec copies each object, in name order, then removes them): the commit file, ``_manifest.json``, would
    be the first copied, and a reader (or a move killed half way) would take a folder of some of its files for
    a committed one. So there the commit file is copied last and removed first: ``target`` reads as committed
    only once every file is in, and ``source`` stops reading as committed before any of its files goes."""
    if isinstance(fs, LocalFileSystem):
        # os.rename, not fs.mv (shutil.move): onto a folder that exists it fails (ENOTEMPTY), where shutil.move
        # put ``source`` inside it, nesting one version in another (two writers of one folder; atomic_dir).
        os.rename(fs._strip_protocol(source), fs._strip_protocol(target))
        return
    source = source.rstrip("/")
    files = sorted(fs.find(source))
    commit = [f for f in files if f == f"{source}/{COMMIT_FILE}"]
    rest = [f for f in files if f not in commit]
    for file in [*rest, *commit]:
        fs.copy(file, f"{target.rstrip('/')}{file[len(source) :]}")
    for file in [*commit, *rest]:
        fs.rm_file(file)
    if fs.exists(source) and not fs.find(source):  # a folder marker, where the store keeps them
        fs.rm(source, recursive=True)


@contextlib.contextmanager
def atomic_dir(uri: str) -> Iterator[str]:
    """Yield a temporary folder URI; on success it replaces ``uri`` whole, on error it is removed. Then what
    killed writes left beside it is swept (:data:`STALE_WRITE`)."""
    fs, path = url_to_fs(uri)
    tmp_path = f"{path.rstrip('/')}{_TMP}{uuid.uuid4().hex[:8]}"
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    tmp_uri = tmp_path if protocol in ("file", "local") else f"{protocol}://{tmp_path}"
    fs.makedirs(tmp_path, exist_ok=True)
    try:
        yield tmp_uri
    except BaseException:
        fs.rm(tmp_path, recursive=True)
        raise
    _publish(fs, tmp_path, path)
    _sweep_stale_writes(fs, path.rstrip("/").rsplit("/", 1)[0])


#: How often a write swaps its folder in when another writer of the same folder keeps committing in between.
PUBLISH_TRIES = 20


def _taken(exc: OSError) -> bool:
    """Whether a rename failed because its target folder exists (another writer committed it)."""
    return exc.errno in (errno.ENOTEMPTY, errno.EEXIST)


def _publish(fs: Any, tmp_path: str, path: str) -> None:
    """Swap the written folder ``tmp_path`` in at ``path``: the committed version moved aside, then the rename.

    Two writers of one folder at once (two runs of one day: a backfill beside the schedule) can interleave: the
    other commits between this one's two renames, or moves the committed version aside first. On a local disk
    the rename then fails rather than nesting one version inside the other (readers took both versions' files,
    the rows twice, under one manifest), and the swap goes again: the last writer's version is the one left,
    whole. An object store has no rename (:func:`_move_folder` copies file by file, onto whatever is there): two
    writers of one folder at once can still mix their files there."""
    for _ in range(PUBLISH_TRIES):
        old_path = None
        if fs.exists(path):
            old_path = f"{path.rstrip('/')}{_OLD}{int(time.time())}-{uuid.uuid4().hex[:8]}"
            try:
                _move_folder(fs, path, old_path)
            except FileNotFoundError:  # the other writer moved it aside first: look again
                continue
        try:
            _move_folder(fs, tmp_path, path)
        except OSError as exc:
            if not _taken(exc):
                raise
            log.warning("%s was committed by another writer during this one's swap: swapping again", path)
            if old_path:  # a version older than the one just committed
                fs.rm(old_path, recursive=True)
            continue
        if old_path:
            fs.rm(old_path, recursive=True)
        return
    raise RuntimeError(
        f"{path} was committed by other writers {PUBLISH_TRIES} times during this write's swap"
    )


def on_disk(fs: Any, handle: Any) -> None:
    """A local file's bytes flushed to the disk before its rename publishes it: after a power loss, a renamed
    file whose bytes were still only in the page cache reads as empty or cut short. An object store makes a
    file whole when it is closed; nothing to do there."""
    if isinstance(fs, LocalFileSystem):
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(uri: str) -> Iterator[Any]:
    """A binary handle on a temporary name: on success the file is renamed to ``uri`` (a reader sees the old
    file or the new one), on error it is removed."""
    fs, path = url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.__tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, "wb") as fh:
            yield fh
            on_disk(fs, fh)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    fs.mv(tmp, path)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a file through a temporary name and a rename: a reader sees the old file or the new one."""
    with atomic_file(uri) as fh:
        fh.write(data)


def write_text_atomic(uri: str, text: str) -> None:
    """Write a small text file through a temporary name and a rename."""
    write_bytes_atomic(uri, text.encode())


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as fh:
        return bytes(fh.read())


def open_read(uri: str) -> Any:
    """Open a file for binary reading."""
    return fsspec.open(uri, "rb").open()


def remove(uri: str) -> None:
    """Remove a file or a folder and everything under it; nothing there is not an error."""
    fs, path = url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def move(uri: str, target: str) -> None:
    """Move a file within its filesystem (a rename; on an object store a copy, then a removal), creating the
    target's folder."""
    fs, path = url_to_fs(uri)
    target_fs, target_path = url_to_fs(target)
    if target_fs != fs:
        raise ValueError(f"{uri} and {target} lie on different filesystems")
    fs.makedirs(target_path.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(path, target_path)


def open_write(uri: str) -> Any:
    """Open a file for binary writing, creating its folder (the caller makes the write atomic)."""
    fs, path = url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return fs.open(path, "wb")


def write_json_atomic(uri: str, payload: Any) -> None:
    write_text_atomic(uri, json.dumps(payload, indent=2, sort_keys=True, default=str))


def read_json(uri: str) -> Any:
    with fsspec.open(uri, "r") as fh:
        return json.load(fh)


def exists(uri: str) -> bool:
    fs, path = url_to_fs(uri)
    return fs.exists(path)


def total_bytes(uris: list[str]) -> int:
    """The summed size of some files."""
    total = 0
    for uri in uris:
        fs, path = url_to_fs(uri)
        total += int(fs.size(path) or 0)
    return total
