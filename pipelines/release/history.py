"""Promotion history and the promotion lock: every attempt to move ``champion``, and who may move it.

The history is an append-only table (rows are inserted, never updated or deleted) in a database beside
the registry: ``promotions.db`` next to the embedded SQLite store, or the registry's own PostgreSQL
database (``CT_PROMOTION_DB`` names another). Each row says when, what triggered it, the action
(promote, rollback or repair), the champion found under the lock, the version asked for, the outcome, the
reason, the Airflow run and the decision record.

The history is the source of truth of which version is champion: the alias only mirrors it. A move is
written ahead: a ``pending`` row before the alias moves, and a completion (its ``ref`` the pending row's id)
once it has: ``promoted``, ``rolled_back`` or ``repaired``, by the move's action. A crash in between leaves a
pending row with no completion, which the next move or ``pipelines history --check`` resolves
(:mod:`pipelines.release.audit`): completed if the alias did move, ``abandoned`` if it did not. Other outcomes (``unchanged``, ``conflict``, ``dry_run``, ``refused``,
``rejected``) are one row each.

The lock makes compare-and-set safe across processes and hosts: a file lock beside the embedded store,
a transaction-scoped advisory lock on PostgreSQL. :func:`exclusive` keeps one holder of a longer piece of work
(a training of one run key) the same way, failing the second at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from filelock import FileLock, Timeout

from pipelines.settings import Settings

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120

_metadata = sa.MetaData()
TRIGGER_CHARS = 64  # the trigger column's width: a longer trigger is cut, and kept whole in the reason
promotions = sa.Table(
    "ct_promotion_history",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("expected_version", sa.Integer),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(TRIGGER_CHARS), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("dag_id", sa.String(256)),
    sa.Column("run_id", sa.String(256)),
    sa.Column("decision", sa.Text),
    sa.Column("ref", sa.Integer),  # a completion row: the id of the pending row it completes
)
COLUMNS = [c.name for c in promotions.columns]
PENDING, PROMOTED, ROLLED_BACK, REPAIRED, ABANDONED = (
    "pending",
    "promoted",
    "rolled_back",
    "repaired",
    "abandoned",
)
# The completion of a move, by its action. Before 2026-11-30 every completion was written ``promoted``.
_COMPLETIONS = {"promote": PROMOTED, "rollback": ROLLED_BACK, "repair": REPAIRED}
MOVED = frozenset(_COMPLETIONS.values())


def completion(action: str) -> str:
    """The outcome that completes a move of ``action`` (promote, rollback or repair)."""
    try:
        return _COMPLETIONS[action]
    except KeyError:
        raise ValueError(f"{action!r} does not move the champion; moves are {sorted(_COMPLETIONS)}") from None


class NoHistoryDatabaseError(ValueError):
    """The registry is an MLflow server and no ``CT_PROMOTION_DB`` names the promotion history's database."""


def database_url(settings: Settings) -> str:
    """Where the history lives: CT_PROMOTION_DB, the registry's PostgreSQL, or a file beside SQLite."""
    if settings.promotion_db:
        return settings.promotion_db
    tracking = settings.tracking_uri
    if tracking.startswith("postgresql"):
        return tracking
    if tracking.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking[len('sqlite:///') :]).parent / 'promotions.db'}"
    raise NoHistoryDatabaseError(
        f"the tracking URI {tracking} is not a database: set CT_PROMOTION_DB to the database that keeps "
        "the promotion history (PostgreSQL for a team)"
    )


def _engine(settings: Settings) -> sa.Engine:
    return _engine_for(database_url(settings))


@functools.cache
def _engine_for(url: str) -> sa.Engine:
    """One engine (and connection pool) per database and process; the table is created on first use."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    _metadata.create_all(engine, checkfirst=True)
    columns = {c["name"] for c in sa.inspect(engine).get_columns(promotions.name)}
    if "ref" not in columns:  # a history written before moves were written ahead
        try:
            with engine.begin() as connection:
                connection.execute(sa.text(f"ALTER TABLE {promotions.name} ADD COLUMN ref INTEGER"))
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # another process added it first
            if "ref" not in {c["name"] for c in sa.inspect(engine).get_columns(promotions.name)}:
                raise
    return engine


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def promotion_lock(settings: Settings, model: str) -> Iterator[None]:
    """Held while the champion is read, compared and moved; one holder per model across processes."""
    url = database_url(settings)
    if url.startswith("postgresql"):
        with _engine(settings).begin() as connection:
            key = _advisory_key(f"ct-promote:{model}")
            # Wait as on SQLite, not for ever: PostgreSQL's lock_timeout bounds an advisory lock's wait too.
            connection.execute(sa.text(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'"))
            try:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                raise PromotionLockTimeoutError(
                    f"another promotion, rollback or check of {model} held its lock (a PostgreSQL advisory "
                    f"lock) for more than {LOCK_TIMEOUT_S} s: nothing was read or moved"
                ) from None
            connection.execute(sa.text("SET LOCAL lock_timeout = 0"))  # the work under it waits as it did
            yield
        return
    path = Path(url[len("sqlite:///") :]).parent / f"{model}.promote.lock"
    lock = FileLock(str(path), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise PromotionLockTimeoutError(
            f"another promotion, rollback or check of {model} held its lock ({path}) for more than "
            f"{LOCK_TIMEOUT_S} s: nothing was read or moved"
        ) from None
    try:
        yield
    finally:
        lock.release()


class PromotionLockTimeoutError(TimeoutError):
    """The promotion lock was held by another process past :data:`LOCK_TIMEOUT_S` (the CLI exits 4)."""


class LockHeldError(RuntimeError):
    """Another process holds the lock of this work (:func:`exclusive`)."""


@contextlib.contextmanager
def exclusive(settings: Settings, name: str, what: str) -> Iterator[None]:
    """Held for the length of one piece of work (a training of one run key), in the database beside the
    registry, so across hosts on PostgreSQL: a second holder fails at once with :class:`LockHeldError`, naming
    ``what``. It does not wait: the work can take hours, and its retry finds what the first holder left.

    PostgreSQL: a session advisory lock on a connection of its own, released at the end (and by the server if
    the process dies and its connection drops). SQLite: a file lock beside the database (released by the
    operating system if the process dies)."""
    url = database_url(settings)
    if url.startswith("postgresql"):
        key = _advisory_key(name)
        with _engine(settings).connect() as connection:
            held = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            connection.commit()
            if not held:
                raise LockHeldError(
                    f"{what} is held by another process (a PostgreSQL advisory lock on {name})"
                )
            try:
                yield
            finally:
                _unlock(connection, key, name, what)
        return
    folder = Path(url[len("sqlite:///") :]).parent / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeldError(f"{what} is held by another process (the file lock {path}, for {name})") from None
    try:
        yield
    finally:
        lock.release()


def _unlock(connection: sa.Connection, key: int, name: str, what: str) -> None:
    """Release :func:`exclusive`'s advisory lock. Its connection can drop while the work runs (hours: a server
    restart, a proxy's idle timeout): the server released the lock then, and the unlock's error failed the work
    that had finished. That is logged, naming it, and the work's own outcome stands."""
    try:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        connection.commit()
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.error(
            "%s: the connection holding its PostgreSQL advisory lock on %s dropped while it ran, and the server "
            "released the lock then: another process could have started the same work meanwhile (%s)",
            what,
            name,
            str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__,
        )


def append(settings: Settings, **row: Any) -> dict[str, Any]:
    """Insert one attempt; returns the row as written."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown history fields: {sorted(unknown)}")
    record = {name: row.get(name) for name in COLUMNS if name != "id"}
    record["at"] = record["at"] or dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    trigger = str(record["trigger"])
    if len(trigger) > TRIGGER_CHARS:  # a long user or approver name: PostgreSQL refuses it whole, so cut
        record["trigger"] = trigger[: TRIGGER_CHARS - 1] + "…"  # it here, and keep it whole in the reason
        record["reason"] = f"{record['reason'] or ''} [trigger: {trigger}]".lstrip()
    if isinstance(record["decision"], dict):
        record["decision"] = json.dumps(record["decision"], sort_keys=True, default=str)
    with _engine(settings).begin() as connection:
        result = connection.execute(promotions.insert().values(**record))
        key = result.inserted_primary_key
        assert key is not None, "an INSERT returns its primary key"
        record["id"] = key[0]
    return record


def read(settings: Settings, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Attempts, oldest first (the newest ``limit`` of them when given)."""
    query = sa.select(promotions).order_by(promotions.c.id.desc())
    if model:
        query = query.where(promotions.c.model == model)
    if limit:
        query = query.limit(limit)
    with _engine(settings).connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    return list(reversed(rows))


def champion(rows: list[dict[str, Any]]) -> int | None:
    """The champion according to the history: the version of the last completed move, or None."""
    found = None
    for row in rows:
        if row["outcome"] in MOVED:
            found = row["to_version"]
    return found


def as_of(rows: list[dict[str, Any]], moment: dt.datetime) -> list[dict[str, Any]]:
    """The rows written up to ``moment``: the history as it stood then (its champion, its last move)."""
    return [row for row in rows if dt.datetime.fromisoformat(row["at"]) <= moment]


def was_champion(settings: Settings, name: str, version: int) -> bool:
    """Whether a move of the champion to ``version`` completed: by the gate, a person's ``rollback --to``, or a
    repair. The evidence that made it champion (its day's gate record, evaluation and drift report) then stays
    on it: a re-run of its day judges it against another champion, or itself."""
    return any(row["to_version"] == version and row["outcome"] in MOVED for row in read(settings, name))


def unresolved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending rows no later row completes: moves that may or may not have happened."""
    completed = {row["ref"] for row in rows if row.get("ref") is not None}
    return [row for row in rows if row["outcome"] == PENDING and row["id"] not in completed]
