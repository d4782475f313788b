"""The engine's persistence: tables, the engine/session factory and small store functions.

SQLite is the default (one process, WAL mode); PostgreSQL lets several ``itsm-sync run``
instances share the work (DESIGN.md §5). Everything here runs on both.

Transactions: every store function takes a :class:`~sqlmodel.Session` and **never commits**;
the caller's :func:`session_scope` commits once at the end, so a group of calls is atomic.
Keep scopes short and never hold one across a remote call: on SQLite a writing scope holds the
database's single write lock (``BEGIN IMMEDIATE``) until it ends.

Writes are Core statements (upserts, conditional updates) so that concurrent workers are
decided by the database, not by whoever read first; reads refresh ORM objects from the
database (``populate_existing``) so a row returned here is never a stale cached copy.

Times are timezone-aware UTC going in (naive datetimes are refused as ambiguous) and coming
out, on both dialects.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    MetaData,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    case,
    create_engine,
    event,
    text,
)
from sqlalchemy import select as sa_select  # Core: takes any columns (sqlmodel's is typed)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import registry
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, Session, SQLModel, col, select, update

from connectors.base import COMMENT_EVENT_KEY, JOURNAL_KEY

__all__ = [
    "AuditAction",
    "AuditEntry",
    "CommentLink",
    "DeliveryStatus",
    "Dirty",
    "EngineHooks",
    "IncidentRow",
    "JSONValue",
    "Link",
    "LinkConflict",
    "MappingVersion",
    "Observation",
    "Parked",
    "Shadow",
    "StaleIncident",
    "StoreModel",
    "TargetBackoff",
    "UTCDateTime",
    "Watermark",
    "WebhookDelivery",
    "add_link",
    "add_mapping_version",
    "alembic_config",
    "audit",
    "comment_links",
    "create_incident",
    "engine_hooks",
    "find_comment_link",
    "find_link",
    "get_incident",
    "get_parked",
    "get_shadow",
    "get_watermark",
    "history",
    "latest_observation",
    "link_comment",
    "linked_incident",
    "links_of",
    "lock_for_migration",
    "make_engine",
    "mapping_versions",
    "metadata",
    "migrate",
    "open_parked",
    "park",
    "record_delivery",
    "record_observation",
    "resolve_parked",
    "save_incident",
    "session_scope",
    "set_shadow",
    "set_watermark",
    "utcnow",
]

UTC = dt.UTC
MAX_BODY_BYTES = 1024 * 1024  # webhook bodies kept for inspection are capped at 1 MiB
_MIGRATION_LOCK_ID = 0x175C_5EED  # pg_advisory_xact_lock key: one migrator at a time
_MAPPING_LOCK_ID = 0x175C_3A9  # with a system instance's hash: one mapping version at a time

DeliveryStatus = Literal["accepted", "rejected", "malformed", "duplicate"]
AuditAction = Literal[
    "create", "update", "transition", "comment", "conflict", "park", "replay", "override", "skip"
]
ObservationSource = Literal["webhook", "poll"]
CommentDirection = Literal["in", "out"]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the only kind of time the store accepts)."""
    return dt.datetime.now(UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every dialect.

    PostgreSQL stores ``timestamptz`` and returns it in the session's zone; SQLite has no zone
    at all, so we store naive UTC there (keeping string order = time order for comparisons in
    SQL) and attach UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = _aware(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONValue(TypeDecorator[Any]):
    """JSON everywhere, JSONB on PostgreSQL (smaller, indexable)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


# Named constraints: stable across dialects, and required for SQLite batch migrations later.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class StoreModel(SQLModel, registry=registry(metadata=metadata)):
    """Base of the engine's tables; its own metadata, so other packages' tables never leak
    into (or break) this package's migrations."""


def _now_field() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


class IncidentRow(StoreModel, table=True):
    """The canonical incident (``mapping.model.Incident`` dumped with ``mode="json"``)."""

    __tablename__ = "incident"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)
    created_at: dt.datetime = _now_field()
    updated_at: dt.datetime = _now_field()
    version: int = 1


class Link(StoreModel, table=True):
    """One remote record that represents an incident; the local link store is the truth."""

    __tablename__ = "link"
    __table_args__ = (
        UniqueConstraint("system", "instance", "object_type", "remote_id", name="uq_link_remote"),
        UniqueConstraint("incident_id", "system", "instance", "object_type", name="uq_link_target"),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", ondelete="CASCADE", index=True)
    system: str
    instance: str
    object_type: str
    remote_id: str
    remote_key: str = ""
    url: str = ""
    created_at: dt.datetime = _now_field()


class Shadow(StoreModel, table=True):
    """What each mapped field of a linked record held when we last saw or wrote it."""

    __tablename__ = "shadow"

    link_id: int = Field(
        sa_column=Column(ForeignKey("link.id", ondelete="CASCADE"), primary_key=True)
    )
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)
    version: list[int] = Field(default_factory=list, sa_type=JSONValue)
    updated_at: dt.datetime = _now_field()


class Observation(StoreModel, table=True):
    """The newest known state of a remote record, from a webhook or a poll."""

    __tablename__ = "observation"

    system: str = Field(primary_key=True)
    instance: str = Field(primary_key=True)
    object_type: str = Field(primary_key=True)
    remote_id: str = Field(primary_key=True)
    version: list[int] = Field(default_factory=list, sa_type=JSONValue)
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)
    source: str = "poll"
    observed_at: dt.datetime = _now_field()
    # The remote's own modification time, for the ``latest`` conflict policy (webhooks can
    # arrive late, so observed_at says nothing about which edit was newer).
    remote_updated_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class Dirty(StoreModel, table=True):
    """One queue entry: "look at this incident (or unlinked remote record)". See sync.queue."""

    __tablename__ = "dirty"

    key: str = Field(primary_key=True)
    due_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    generation: int = 1
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When the waiting burst began: a debounced key is due at most max_wait after it.
    first_marked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    last_error: str = Field(default="", sa_type=Text)
    reason: str = Field(default="", sa_type=Text)


class Watermark(StoreModel, table=True):
    """How far polling of one (system, instance, object type) has safely read."""

    __tablename__ = "watermark"

    system: str = Field(primary_key=True)
    instance: str = Field(primary_key=True)
    object_type: str = Field(primary_key=True)
    value: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: dt.datetime = _now_field()


class WebhookDelivery(StoreModel, table=True):
    """Every delivery id seen, so a redelivered webhook is recognised (and bad ones kept)."""

    __tablename__ = "webhook_delivery"

    system: str = Field(primary_key=True)
    delivery_id: str = Field(primary_key=True)
    received_at: dt.datetime = _now_field()
    status: str
    reason: str = Field(default="", sa_type=Text)
    body: str | None = Field(default=None, sa_type=Text)
    headers: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)


class AuditEntry(StoreModel, table=True):
    """One thing the engine did (or refused to do), with before/after values."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _now_field()
    incident_id: str | None = Field(default=None, index=True)
    system: str = ""
    instance: str = ""
    remote_id: str = ""
    action: str
    field: str | None = None
    before: Any | None = Field(default=None, sa_type=JSONValue)
    after: Any | None = Field(default=None, sa_type=JSONValue)
    actor: str = "itsm-sync"
    reason: str = Field(default="", sa_type=Text)


class Parked(StoreModel, table=True):
    """An (incident, target) pair that failed fatally; waits for an admin, then a replay."""

    __tablename__ = "parked"
    __table_args__ = (
        # At most one *open* item per pair; resolved ones stay as history.
        Index(
            "uq_parked_open",
            "incident_id",
            "target",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    target: str
    error: str = Field(default="", sa_type=Text)
    remote_message: str = Field(default="", sa_type=Text)
    status: int | None = None
    parked_at: dt.datetime = _now_field()
    attempts: int = 1
    resolved_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class TargetBackoff(StoreModel, table=True):
    """Retriable failures of one (incident, target): the target waits, the incident goes on."""

    __tablename__ = "target_backoff"

    incident_id: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    attempts: int = 0
    next_attempt_at: dt.datetime = _now_field()
    last_error: str = Field(default="", sa_type=Text)


class CommentLink(StoreModel, table=True):
    """A comment copied between systems: a remote comment is synced exactly once."""

    __tablename__ = "comment_link"
    __table_args__ = (
        UniqueConstraint("system", "instance", "remote_id", name="uq_comment_link_remote"),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    canonical_id: str
    system: str
    instance: str
    remote_id: str
    direction: str


class MappingVersion(StoreModel, table=True):
    """An accepted mapping file, kept with its diff so changes are reviewable."""

    __tablename__ = "mapping_version"

    id: int | None = Field(default=None, primary_key=True)
    system: str
    instance: str
    digest: str
    source: str = Field(default="", sa_type=Text)
    diff: str = Field(default="", sa_type=Text)
    accepted_at: dt.datetime = _now_field()
    accepted_by: str = ""


# --------------------------------------------------------------------------------------------
# Engine, sessions, migrations
# --------------------------------------------------------------------------------------------

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it gets savepoints and DDL wrong); we emit it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        # In WAL mode NORMAL never corrupts and a commit survives a crash of the process (it
        # is in the WAL before COMMIT returns); only an OS crash or power loss can lose the
        # last commits. FULL would fsync every commit (~10x slower webhook acks).
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front: a writer that began as a reader could
    # otherwise fail with SQLITE_BUSY (snapshot too old) instead of waiting its turn.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode not in ("IMMEDIATE", "DEFERRED"):
        raise ValueError(f"sqlite_begin must be IMMEDIATE or DEFERRED, not {mode!r}")
    if mode == "DEFERRED":
        connection.exec_driver_sql("BEGIN DEFERRED")
        return
    _sqlite_begin_immediate(connection.connection.dbapi_connection)


# Waiting for the write lock held by another process: tries this far apart (seconds), then
# SQLITE_BUSY_POLL_LATER_SECONDS apart after the first SQLITE_BUSY_POLL_FAST_FOR seconds.
SQLITE_BUSY_POLL_SECONDS = 0.0002
SQLITE_BUSY_POLL_FAST_FOR = 0.25
SQLITE_BUSY_POLL_LATER_SECONDS = 0.002


def _sqlite_begin_immediate(raw: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's writer by trying again every 0.2 ms
    (every 2 ms after the first 0.25 s; up to the 30 s busy timeout).

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between
    tries, so a webhook whose BEGIN met a worker's short write transaction in the worker
    process waited up to 180 ms for a lock that was free again within a few: measured, that
    was most of the HTTP process's ack tail. (Writers of the same process queue on
    :class:`EngineHooks`' Python lock first and never get here while another holds it.)
    """
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        started = time.monotonic()
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                waited = time.monotonic() - started
                if waited > SQLITE_BUSY_TIMEOUT_MS / 1000:
                    raise
                time.sleep(
                    SQLITE_BUSY_POLL_SECONDS
                    if waited < SQLITE_BUSY_POLL_FAST_FOR
                    else SQLITE_BUSY_POLL_LATER_SECONDS
                )
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (``Settings.database_url``), set up for this store.

    SQLite: WAL, foreign keys, 30 s busy timeout, connections usable from any thread, and every
    transaction begins ``IMMEDIATE`` (see :func:`session_scope`); ``sqlite://`` (in-memory) is
    one shared connection, for single-threaded tests only. PostgreSQL: ``postgresql://`` means
    psycopg 3; a connection idle for a few seconds is pinged before use, so a restarted server
    costs no failed call.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **({"poolclass": StaticPool} if memory else {}),
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        engine_hooks(engine).write_lock = threading.RLock()
        return engine
    if backend in ("postgresql", "postgres"):
        if "+" not in parsed.drivername:  # the default driver would be psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, echo=echo)
        dialect = engine.dialect

        def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            _pg_checkout(dialect, dbapi_connection, record)

        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", _pg_checkin)
        engine_hooks(engine).readonly = {"isolation_level": "AUTOCOMMIT"}
        return engine
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


# A pooled PostgreSQL connection idle for longer than this is pinged before use (a restarted
# server then costs no failed call). Not every checkout, as pool_pre_ping would: that is one
# more round trip for every transaction (~0.3 ms; a webhook is one transaction).
PG_PING_AFTER_IDLE_SECONDS = 5.0
_IDLE_SINCE = "itsm_sync.idle_since"


def _pg_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info[_IDLE_SINCE] = time.monotonic()


def _pg_checkout(dialect: Dialect, dbapi_connection: Any, connection_record: Any) -> None:
    since = connection_record.info.get(_IDLE_SINCE)
    if since is None or time.monotonic() - since < PG_PING_AFTER_IDLE_SECONDS:
        return  # fresh from connect, or used a moment ago
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as exc:  # the pool drops this one and checks out (or makes) another
        raise DisconnectionError(f"stale connection: {exc}") from exc


QUEUE_CHANNEL = "itsm_sync_queue"  # PostgreSQL LISTEN/NOTIFY channel: "work was queued"
QUEUED = "itsm_sync.queued"  # session.info flag set by sync.queue.mark_dirty


class EngineHooks:
    """What :func:`session_scope` does around one engine's transactions besides BEGIN/COMMIT.

    - ``write_lock`` (SQLite, made by :func:`make_engine`): this process's writers take turns
      on a Python lock before ``BEGIN IMMEDIATE``, so a writer waiting for another thread is
      woken the moment it commits, instead of sleeping in SQLite's busy handler (1, 2, 5, 10,
      15, 20, 25... ms between tries). Other processes still meet the busy handler.
    - ``on_queued``: called after the commit of every scope that marked the queue
      (:func:`sync.queue.mark_dirty`), e.g. to wake idle workers (also those of other
      processes and machines: ``sync.worker.QueueNotifier``).
    - ``readonly``: the execution options of ``readonly`` scopes: SQLite ``BEGIN DEFERRED`` (no
      write lock); PostgreSQL autocommit (set by :func:`make_engine`), which saves the BEGIN
      and COMMIT round trips and changes nothing for reads (under READ COMMITTED each
      statement sees its own snapshot, in a transaction or not).
    """

    def __init__(self) -> None:
        self.write_lock: threading.RLock | None = None
        self.on_queued: list[Callable[[], None]] = []
        self.readonly: dict[str, Any] = {"sqlite_begin": "DEFERRED"}


_HOOKS: weakref.WeakKeyDictionary[Engine, EngineHooks] = weakref.WeakKeyDictionary()
_HOOKS_LOCK = threading.Lock()


def engine_hooks(engine: Engine) -> EngineHooks:
    """The :class:`EngineHooks` of ``engine`` (made on first use)."""
    hooks = _HOOKS.get(engine)
    if hooks is None:
        with _HOOKS_LOCK:
            hooks = _HOOKS.setdefault(engine, EngineHooks())
    return hooks


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    Objects stay usable after the scope (``expire_on_commit=False``). On SQLite a scope takes
    the write lock when it begins (others wait up to 30 s; this process's other writers wait
    on a Python lock first, see :class:`EngineHooks`); pass ``readonly=True`` for pure reads
    (the web page, the CLI) so they never wait for, or delay, a writer. A scope that marked
    the queue runs the engine's ``on_queued`` hooks after its commit.
    """
    hooks = _HOOKS.get(engine)
    lock = hooks.write_lock if hooks is not None and not readonly else None
    # Bounded like the busy timeout: a writer stuck behind a thread that waits for *it* fails
    # as before (SQLITE_BUSY after 30 s) instead of hanging for good.
    locked = lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) if lock is not None else False
    bind = engine
    if readonly:
        options = hooks.readonly if hooks is not None else {"sqlite_begin": "DEFERRED"}
        bind = engine.execution_options(**options)
    session = Session(bind=bind, expire_on_commit=False)
    queued = False
    try:
        yield session
        queued = bool(session.info.pop(QUEUED, False))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        if locked:
            assert lock is not None
            lock.release()
    if queued and hooks is not None:
        for callback in hooks.on_queued:
            try:
                callback()
            except Exception:  # a wake-up is a hint: never fail the caller's committed work
                logging.getLogger("itsm_sync.store").exception("on_queued hook failed")


MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """The alembic configuration for the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``); idempotent.

    Safe when several processes start at once: the whole upgrade, including alembic's check of
    the current revision, runs in one transaction behind a lock (an advisory lock on
    PostgreSQL, the write lock on SQLite), so the second one finds the work done.
    """
    config = alembic_config()
    with engine.begin() as connection:
        lock_for_migration(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def lock_for_migration(connection: Connection) -> None:
    """Serialise migrators until the transaction ends (SQLite: BEGIN IMMEDIATE already did)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=SQLModel)


def dialect_insert(session: Session, model: type[SQLModel]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing/_update`` on both we support."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(model)
    if name == "sqlite":
        return sqlite_insert(model)
    raise ValueError(f"unsupported dialect {name!r}")


def _fresh(session: Session, model: type[_M], *pk: Any) -> _M | None:
    """Load by primary key, overwriting any copy this session already holds."""
    key = pk[0] if len(pk) == 1 else tuple(pk)
    return session.get(model, key, populate_existing=True)


def _check(value: str, allowed: Any, what: str) -> None:
    if value not in get_args(allowed):
        raise ValueError(f"{what} must be one of {get_args(allowed)}, not {value!r}")


# --------------------------------------------------------------------------------------------
# Incidents
# --------------------------------------------------------------------------------------------


class StaleIncident(Exception):
    """The incident changed in the database since this row was read; re-read and redo."""


def create_incident(
    session: Session, data: Mapping[str, Any], *, incident_id: str | None = None
) -> IncidentRow:
    """Store a new canonical incident (JSON-ready dict); the id is a new uuid4 hex unless given."""
    now = utcnow()
    row = IncidentRow(
        id=incident_id or uuid.uuid4().hex, data=dict(data), created_at=now, updated_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_incident(session: Session, incident_id: str) -> IncidentRow | None:
    return _fresh(session, IncidentRow, incident_id)


def find_incident(session: Session, ident: str) -> IncidentRow | None:
    """An incident by canonical id, or by the key of any linked record (INC0010001, OPS-12)."""
    row = get_incident(session, ident)
    if row is None:
        link = session.exec(select(Link).where(col(Link.remote_key) == ident)).first()
        if link is not None:
            row = get_incident(session, link.incident_id)
    return row


def save_incident(session: Session, row: IncidentRow, data: Mapping[str, Any]) -> IncidentRow:
    """Replace the incident's data and bump its version.

    Optimistic: raises :class:`StaleIncident` when someone saved it since ``row`` was read
    (its version no longer matches), instead of silently losing their change.
    """
    new_data = dict(data)
    now = replace_incident_data(session, row.id, row.version, new_data)
    set_committed_value(row, "data", new_data)
    set_committed_value(row, "version", row.version + 1)
    set_committed_value(row, "updated_at", now)
    return row


def replace_incident_data(
    session: Session, incident_id: str, version: int, data: Mapping[str, Any]
) -> dt.datetime:
    """:func:`save_incident` by id and the version that was read (no row object needed): the
    new data, version + 1; :class:`StaleIncident` if it is no longer at ``version``. Returns
    the ``updated_at`` it stamped."""
    now = utcnow()
    c = IncidentRow.__table__.c  # type: ignore[attr-defined]
    statement = prepared(
        session,
        "incident.replace",
        lambda d: (
            update(IncidentRow.__table__)  # type: ignore[attr-defined]
            .where((c.id == bindparam("k_id")) & (c.version == bindparam("k_version")))
            .values(version=c.version + 1)
        ),
    )
    result = session.connection().execute(
        statement,
        {"k_id": incident_id, "k_version": version, "data": dict(data), "updated_at": now},
    )
    if result.rowcount != 1:
        raise StaleIncident(f"incident {incident_id} changed since version {version}")
    return now


# --------------------------------------------------------------------------------------------
# Links and shadows
# --------------------------------------------------------------------------------------------


class LinkConflict(Exception):
    """The remote record is linked to another incident, or the incident already has a record
    of that type on that instance. ``existing`` is the link that is in the way."""

    def __init__(self, existing: Link) -> None:
        super().__init__(
            f"{existing.system}:{existing.instance}/{existing.object_type}/{existing.remote_id}"
            f" is already linked to incident {existing.incident_id} (link {existing.id})"
        )
        self.existing = existing


def add_link(
    session: Session,
    *,
    incident_id: str,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    remote_key: str = "",
    url: str = "",
) -> Link:
    """Link a remote record to an incident.

    Adding the very same link again returns it (a re-run after a crash is harmless); any other
    clash raises :class:`LinkConflict`. Decided by the unique constraints, so two workers racing
    to link can't both win; the loser's transaction stays usable (ON CONFLICT DO NOTHING).
    """
    for _ in range(3):  # the row in the way may vanish between our insert and our look-up
        inserted = session.exec(
            dialect_insert(session, Link)
            .values(
                incident_id=incident_id,
                system=system,
                instance=instance,
                object_type=object_type,
                remote_id=remote_id,
                remote_key=remote_key,
                url=url,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(col(Link.id))
        ).scalar_one_or_none()
        if inserted is not None:
            link = _fresh(session, Link, inserted)
            assert link is not None
            return link
        existing = find_link(
            session, system=system, instance=instance, object_type=object_type, remote_id=remote_id
        )
        if existing is None:
            existing = session.exec(
                select(Link)
                .where(
                    col(Link.incident_id) == incident_id,
                    col(Link.system) == system,
                    col(Link.instance) == instance,
                    col(Link.object_type) == object_type,
                )
                .execution_options(populate_existing=True)
            ).one_or_none()
        if existing is None:
            continue
        if existing.incident_id == incident_id and existing.remote_id == remote_id:
            return existing
        raise LinkConflict(existing)
    raise RuntimeError("add_link: conflicting link kept appearing and disappearing")


def find_link(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> Link | None:
    """The link of a remote record, if it is linked."""
    return session.exec(
        select(Link)
        .where(
            col(Link.system) == system,
            col(Link.instance) == instance,
            col(Link.object_type) == object_type,
            col(Link.remote_id) == remote_id,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def linked_incident(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> str | None:
    """The incident a remote record is linked to, if any (:func:`find_link`, the id only: the
    webhook path asks this for every delivery)."""
    c = Link.__table__.c  # type: ignore[attr-defined]
    query = prepared(
        session,
        "link.incident",
        lambda d: select(c.incident_id).where(
            (c.system == bindparam("k_system"))
            & (c.instance == bindparam("k_instance"))
            & (c.object_type == bindparam("k_object_type"))
            & (c.remote_id == bindparam("k_remote_id"))
        ),
    )
    found = (
        session.connection()
        .execute(
            query,
            {
                "k_system": system,
                "k_instance": instance,
                "k_object_type": object_type,
                "k_remote_id": remote_id,
            },
        )
        .scalar_one_or_none()
    )
    return str(found) if found is not None else None


@dataclass
class IncidentState:
    """What a reconcile reads of one incident (:func:`incident_state`)."""

    version: int
    data: dict[str, Any]
    links: list[Link]  # oldest first
    observations: dict[int, Observation | None]  # by link id: the record's newest observation
    shadows: dict[int, Shadow | None]  # by link id
    parked: set[str]  # targets ("system:instance") with an open parked item
    backoffs: dict[str, dt.datetime]  # target -> when it may be tried again
    comments: list[tuple[str, str, str, str]]  # (canonical id, system, instance, remote id)


_LINK_COLUMNS = ("id", "incident_id", "system", "instance", "object_type", "remote_id",
                 "remote_key", "url", "created_at")  # fmt: skip
_OBSERVATION_COLUMNS = ("version", "fields", "source", "observed_at", "remote_updated_at")


def _state_statements(dialect: str) -> tuple[Any, ...]:
    incident = IncidentRow.__table__  # type: ignore[attr-defined]
    link = Link.__table__  # type: ignore[attr-defined]
    obs = Observation.__table__  # type: ignore[attr-defined]
    shadow = Shadow.__table__  # type: ignore[attr-defined]
    parked = Parked.__table__  # type: ignore[attr-defined]
    backoff = TargetBackoff.__table__  # type: ignore[attr-defined]
    comment = CommentLink.__table__  # type: ignore[attr-defined]
    wanted: Any = bindparam("incident_id")
    records = (
        sa_select(
            *(link.c[n] for n in _LINK_COLUMNS),
            obs.c.system.label("o_system"),
            *(obs.c[n].label(f"o_{n}") for n in _OBSERVATION_COLUMNS),
            shadow.c.link_id.label("s_link_id"),
            shadow.c.fields.label("s_fields"),
            shadow.c.version.label("s_version"),
            shadow.c.updated_at.label("s_updated_at"),
        )
        .select_from(
            link.outerjoin(
                obs,
                (obs.c.system == link.c.system)
                & (obs.c.instance == link.c.instance)
                & (obs.c.object_type == link.c.object_type)
                & (obs.c.remote_id == link.c.remote_id),
            ).outerjoin(shadow, shadow.c.link_id == link.c.id)
        )
        .where(link.c.incident_id == wanted)
        .order_by(link.c.id)
    )
    return (
        select(incident.c.version, incident.c.data).where(incident.c.id == wanted),
        records,
        select(parked.c.target).where(
            (parked.c.incident_id == wanted) & parked.c.resolved_at.is_(None)
        ),
        select(backoff.c.target, backoff.c.next_attempt_at).where(backoff.c.incident_id == wanted),
        select(comment.c.canonical_id, comment.c.system, comment.c.instance, comment.c.remote_id)
        .where(comment.c.incident_id == wanted)
        .order_by(comment.c.id),
    )


def incident_state(session: Session, incident_id: str) -> IncidentState | None:
    """The incident, its links with each record's newest observation and shadow, its open
    parked targets, backoffs and synced comments: five prebuilt statements (this runs for every
    reconcile, before its first write; one query per link and per table cost ~2x more)."""
    row_q, records_q, parked_q, backoff_q, comments_q = prepared(
        session, "incident.state", _state_statements
    )
    connection = session.connection()
    wanted = {"incident_id": incident_id}
    row = connection.execute(row_q, wanted).one_or_none()
    if row is None:
        return None
    links: list[Link] = []
    observations: dict[int, Observation | None] = {}
    shadows: dict[int, Shadow | None] = {}
    for r in connection.execute(records_q, wanted).mappings():
        link = Link(**{n: r[n] for n in _LINK_COLUMNS})
        links.append(link)
        observations[r["id"]] = (
            None
            if r["o_system"] is None
            else Observation(
                system=r["system"], instance=r["instance"], object_type=r["object_type"],
                remote_id=r["remote_id"], **{n: r[f"o_{n}"] for n in _OBSERVATION_COLUMNS},
            )
        )  # fmt: skip
        shadows[r["id"]] = (
            None
            if r["s_link_id"] is None
            else Shadow(
                link_id=r["id"], fields=r["s_fields"], version=r["s_version"],
                updated_at=r["s_updated_at"],
            )
        )  # fmt: skip
    return IncidentState(
        version=row.version,
        data=dict(row.data),
        links=links,
        observations=observations,
        shadows=shadows,
        parked={t for (t,) in connection.execute(parked_q, wanted)},
        backoffs={t: at for t, at in connection.execute(backoff_q, wanted)},
        comments=[(a, b, c, d) for a, b, c, d in connection.execute(comments_q, wanted)],
    )


def links_of(session: Session, incident_id: str) -> list[Link]:
    """All records linked to an incident, oldest link first."""
    return list(
        session.exec(
            select(Link)
            .where(col(Link.incident_id) == incident_id)
            .order_by(col(Link.id))
            .execution_options(populate_existing=True)
        )
    )


def get_shadow(session: Session, link_id: int) -> Shadow | None:
    return _fresh(session, Shadow, link_id)


def set_shadow(
    session: Session, link_id: int, fields: Mapping[str, Any], version: Sequence[int]
) -> Shadow:
    """Replace the shadow of a link (all fields: merge first if you wrote only some)."""
    shadow = Shadow(
        link_id=link_id, fields=dict(fields), version=list(version), updated_at=utcnow()
    )
    table = Shadow.__table__  # type: ignore[attr-defined]

    def build(dialect: str) -> Any:
        insert = insert_for(dialect, table)
        return insert.on_conflict_do_update(
            index_elements=[table.c.link_id],
            set_={k: insert.excluded[k] for k in ("fields", "version", "updated_at")},
        )

    session.connection().execute(
        prepared(session, "shadow.upsert", build),
        {"link_id": link_id, "fields": shadow.fields, "version": shadow.version,
         "updated_at": shadow.updated_at},
    )  # fmt: skip
    return shadow


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------


_PREPARED: dict[tuple[str, str], Any] = {}


def prepared(session: Session, name: str, build: Callable[[str], Any]) -> Any:
    """A Core statement (or a tuple of them) built once per dialect, with bind parameters.

    For the hot paths: the webhook path and every reconcile run these, and building ORM
    statements on every call (and loading ORM objects) was most of their cost."""
    dialect = session.get_bind().dialect.name
    statement = _PREPARED.get((dialect, name))
    if statement is None:
        statement = _PREPARED[(dialect, name)] = build(dialect)
    return statement


def insert_for(dialect: str, table: Any) -> Any:
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


def _observation_key() -> Any:
    c = Observation.__table__.c  # type: ignore[attr-defined]
    return (
        (c.system == bindparam("k_system"))
        & (c.instance == bindparam("k_instance"))
        & (c.object_type == bindparam("k_object_type"))
        & (c.remote_id == bindparam("k_remote_id"))
    )


def record_observation(
    session: Session,
    *,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    version: Sequence[int],
    fields: Mapping[str, Any],
    source: ObservationSource,
    remote_updated_at: dt.datetime | None = None,
    observed_at: dt.datetime | None = None,
) -> bool:
    """Store the newest known state of a remote record; True when this one is newer.

    An observation whose version is older than or equal to the stored one changes nothing
    (late or duplicated webhooks, overlapping polls). Concurrent writers of one record are
    serialised by a row lock (PostgreSQL) or the write lock (SQLite).
    """
    _check(source, ObservationSource, "source")
    values: dict[str, Any] = {
        "version": list(version),
        "fields": dict(fields),
        "source": source,
        "observed_at": observed_at or utcnow(),
        "remote_updated_at": remote_updated_at,
    }
    key = {"system": system, "instance": instance, "object_type": object_type}
    table = Observation.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    insert = prepared(
        session,
        "observation.insert",
        lambda d: insert_for(d, table).on_conflict_do_nothing().returning(table.c.system),
    )
    inserted = connection.execute(
        insert, {**key, "remote_id": remote_id, **values}
    ).scalar_one_or_none()
    if inserted is None:
        where = {f"k_{k}": v for k, v in {**key, "remote_id": remote_id}.items()}
        read = prepared(
            session,
            "observation.read",
            lambda d: (
                select(table.c.version, table.c.fields).where(_observation_key()).with_for_update()
            ),
        )
        stored, stored_fields = connection.execute(read, where).one()
        if tuple(version) <= tuple(stored):
            return False
        values["fields"] = _carry_comment_events(
            stored_fields, _join_journal(stored, stored_fields, values["fields"])
        )
        write = prepared(
            session,
            "observation.update",
            lambda d: update(table).where(_observation_key()),
        )
        connection.execute(write, {**where, **values})
    return True


def _join_journal(
    stored_version: Sequence[int], stored: Mapping[str, Any], new: dict[str, Any]
) -> dict[str, Any]:
    """A delivery that says which comments its update added (``JOURNAL_KEY``, ServiceNow) and
    follows right on the stored one, which said so too, says it for both: otherwise the
    entries of the first would be lost when the second replaces it before a reconcile."""
    later, earlier = new.get(JOURNAL_KEY), stored.get(JOURNAL_KEY)
    if not isinstance(later, Mapping) or not isinstance(earlier, Mapping):
        return new
    if list(later.get("after") or []) != list(stored_version):
        return new  # not consecutive: the reader sees the gap and reads the comments
    entries = [*(earlier.get("entries") or []), *(later.get("entries") or [])]
    return {**new, JOURNAL_KEY: {"after": list(earlier.get("after") or []), "entries": entries}}


MAX_COMMENT_EVENTS = 50


def _comment_events(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    events = fields.get(COMMENT_EVENT_KEY)
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def _carry_comment_events(stored: Mapping[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Comments delivered on their own (``COMMENT_EVENT_KEY``, Jira) stay with the record's
    newest observation until a reconcile has seen them: a newer delivery of the record may have
    been sent before the comment was made."""
    events = _comment_events(stored) + _comment_events(new)
    if not events:
        return new
    unique = list({str(e.get("id")): e for e in events}.values())[-MAX_COMMENT_EVENTS:]
    return {**new, COMMENT_EVENT_KEY: unique}


def add_comment_events(
    session: Session,
    *,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    events: Sequence[Mapping[str, Any]],
) -> bool:
    """Add comments delivered on their own to the record's newest observation (its version
    unchanged); False if there is none (then the record has to be read)."""
    table = Observation.__table__  # type: ignore[attr-defined]
    where = {
        "k_system": system, "k_instance": instance, "k_object_type": object_type,
        "k_remote_id": remote_id,
    }  # fmt: skip
    connection = session.connection()
    read = prepared(
        session,
        "observation.fields",
        lambda d: select(table.c.fields).where(_observation_key()).with_for_update(),
    )
    stored = connection.execute(read, where).scalar_one_or_none()
    if stored is None:
        return False
    carried = _carry_comment_events(stored, {COMMENT_EVENT_KEY: [dict(e) for e in events]})
    write = prepared(
        session, "observation.update", lambda d: update(table).where(_observation_key())
    )
    connection.execute(write, {**where, "fields": {**stored, **carried}})
    return True


def latest_observation(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> Observation | None:
    return _fresh(session, Observation, system, instance, object_type, remote_id)


# --------------------------------------------------------------------------------------------
# Watermarks
# --------------------------------------------------------------------------------------------


def get_watermark(
    session: Session, *, system: str, instance: str, object_type: str
) -> dt.datetime | None:
    row = _fresh(session, Watermark, system, instance, object_type)
    return row.value if row else None


def set_watermark(
    session: Session, *, system: str, instance: str, object_type: str, value: dt.datetime
) -> dt.datetime:
    """Advance the watermark to ``value``; never moves it backwards. Returns the stored value."""
    now = utcnow()
    statement = dialect_insert(session, Watermark).values(
        system=system, instance=instance, object_type=object_type, value=value, updated_at=now
    )
    current = col(Watermark.value)
    newest = case(
        (current.is_(None), statement.excluded.value),
        (statement.excluded.value > current, statement.excluded.value),
        else_=current,
    )
    stored = session.exec(
        statement.on_conflict_do_update(
            index_elements=[
                col(Watermark.system),
                col(Watermark.instance),
                col(Watermark.object_type),
            ],
            set_={"value": newest, "updated_at": now},
        ).returning(col(Watermark.value))
    ).scalar_one()
    return cast(dt.datetime, stored)


# --------------------------------------------------------------------------------------------
# Webhook deliveries
# --------------------------------------------------------------------------------------------


def _cap(body: str) -> str:
    encoded = body.encode("utf-8")
    if len(encoded) <= MAX_BODY_BYTES:
        return body
    return encoded[:MAX_BODY_BYTES].decode("utf-8", errors="ignore")


def record_delivery(
    session: Session,
    *,
    system: str,
    delivery_id: str,
    status: DeliveryStatus,
    reason: str = "",
    body: str | None = None,
    headers: Mapping[str, Any] | None = None,
    received_at: dt.datetime | None = None,
) -> bool:
    """Remember a webhook delivery; False when that delivery id was already seen (a duplicate).

    Decided by INSERT .. ON CONFLICT DO NOTHING, so two receivers of one redelivery can't both
    get True. The body is kept only for rejected/malformed deliveries (for inspection), capped
    at 1 MiB; headers must already be stripped of secrets.
    """
    _check(status, DeliveryStatus, "status")
    kept = _cap(body) if body is not None and status in ("rejected", "malformed") else None
    table = WebhookDelivery.__table__  # type: ignore[attr-defined]
    insert = prepared(
        session,
        "delivery.insert",
        lambda d: insert_for(d, table).on_conflict_do_nothing().returning(table.c.delivery_id),
    )
    inserted = (
        session.connection()
        .execute(
            insert,
            {
                "system": system,
                "delivery_id": delivery_id,
                "received_at": received_at or utcnow(),
                "status": status,
                "reason": reason,
                "body": kept,
                "headers": dict(headers or {}),
            },
        )
        .scalar_one_or_none()
    )
    return inserted is not None


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------


def audit(
    session: Session,
    *,
    action: AuditAction,
    incident_id: str | None = None,
    system: str = "",
    instance: str = "",
    remote_id: str = "",
    field: str | None = None,
    before: Any = None,
    after: Any = None,
    actor: str = "itsm-sync",
    reason: str = "",
    at: dt.datetime | None = None,
) -> None:
    """Append one audit row (before/after must be JSON-ready)."""
    _check(action, AuditAction, "action")
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        prepared(session, "audit.insert", lambda d: table.insert()),
        {
            "at": at or utcnow(),
            "incident_id": incident_id,
            "system": system,
            "instance": instance,
            "remote_id": remote_id,
            "action": action,
            "field": field,
            "before": before,
            "after": after,
            "actor": actor,
            "reason": reason,
        },
    )


def history(session: Session, incident_id: str) -> list[AuditEntry]:
    """The incident's audit trail, oldest first."""
    return list(
        session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.incident_id) == incident_id)
            .order_by(col(AuditEntry.at), col(AuditEntry.id))
            .execution_options(populate_existing=True)
        )
    )


# --------------------------------------------------------------------------------------------
# Parked (incident, target) pairs
# --------------------------------------------------------------------------------------------


def park(
    session: Session,
    *,
    incident_id: str,
    target: str,
    error: str,
    remote_message: str = "",
    status: int | None = None,
    now: dt.datetime | None = None,
) -> Parked:
    """Park (incident, target) after a fatal error, or update its open item (attempts += 1)."""
    now = now or utcnow()
    values = {
        "error": error,
        "remote_message": remote_message,
        "status": status,
        "parked_at": now,
    }
    statement = dialect_insert(session, Parked).values(
        incident_id=incident_id, target=target, attempts=1, resolved_at=None, **values
    )
    parked_id = session.exec(
        statement.on_conflict_do_update(
            index_elements=[col(Parked.incident_id), col(Parked.target)],
            index_where=col(Parked.resolved_at).is_(None),
            set_={**values, "attempts": col(Parked.attempts) + 1},
        ).returning(col(Parked.id))
    ).scalar_one()
    row = _fresh(session, Parked, parked_id)
    assert row is not None
    return row


def get_parked(session: Session, parked_id: int) -> Parked | None:
    return _fresh(session, Parked, parked_id)


def open_parked(session: Session, *, incident_id: str | None = None) -> list[Parked]:
    """Open parked items (all, or one incident's), oldest first."""
    statement = select(Parked).where(col(Parked.resolved_at).is_(None))
    if incident_id is not None:
        statement = statement.where(col(Parked.incident_id) == incident_id)
    return list(
        session.exec(
            statement.order_by(col(Parked.parked_at), col(Parked.id)).execution_options(
                populate_existing=True
            )
        )
    )


def resolve_parked(session: Session, parked_id: int, *, now: dt.datetime | None = None) -> bool:
    """Close an open parked item (after a successful replay); False if it was not open."""
    result = session.exec(
        update(Parked)
        .where(col(Parked.id) == parked_id, col(Parked.resolved_at).is_(None))
        .values(resolved_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# --------------------------------------------------------------------------------------------
# Comment links
# --------------------------------------------------------------------------------------------


def link_comment(
    session: Session,
    *,
    incident_id: str,
    canonical_id: str,
    system: str,
    instance: str,
    remote_id: str,
    direction: CommentDirection,
) -> bool:
    """Record that a remote comment is synced; False if it already was (sync it only once)."""
    _check(direction, CommentDirection, "direction")
    inserted = session.exec(
        dialect_insert(session, CommentLink)
        .values(
            incident_id=incident_id,
            canonical_id=canonical_id,
            system=system,
            instance=instance,
            remote_id=remote_id,
            direction=direction,
        )
        .on_conflict_do_nothing()
        .returning(col(CommentLink.id))
    ).scalar_one_or_none()
    return inserted is not None


def find_comment_link(
    session: Session, *, system: str, instance: str, remote_id: str
) -> CommentLink | None:
    return session.exec(
        select(CommentLink)
        .where(
            col(CommentLink.system) == system,
            col(CommentLink.instance) == instance,
            col(CommentLink.remote_id) == remote_id,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


PENDING_COMMENT = "pending:"


def pending_comment_id(canonical_id: str) -> str:
    """The remote id a comment link holds while its comment is being posted (the intent)."""
    return f"{PENDING_COMMENT}{canonical_id}"


def confirm_comment(
    session: Session, *, system: str, instance: str, canonical_id: str, remote_id: str
) -> None:
    """The comment an intent row stood for is posted: the row gets its real remote id."""
    session.exec(
        update(CommentLink)
        .where(
            col(CommentLink.system) == system,
            col(CommentLink.instance) == instance,
            col(CommentLink.remote_id) == pending_comment_id(canonical_id),
        )
        .values(remote_id=remote_id)
        .execution_options(synchronize_session=False)
    )


def comment_links(session: Session, incident_id: str) -> list[CommentLink]:
    return list(
        session.exec(
            select(CommentLink)
            .where(col(CommentLink.incident_id) == incident_id)
            .order_by(col(CommentLink.id))
            .execution_options(populate_existing=True)
        )
    )


# --------------------------------------------------------------------------------------------
# Mapping versions
# --------------------------------------------------------------------------------------------


def add_mapping_version(
    session: Session,
    *,
    system: str,
    instance: str,
    digest: str,
    source: str,
    diff: str = "",
    accepted_by: str = "",
    accepted_at: dt.datetime | None = None,
) -> MappingVersion:
    row = MappingVersion(
        system=system,
        instance=instance,
        digest=digest,
        source=source,
        diff=diff,
        accepted_by=accepted_by,
        accepted_at=accepted_at or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def record_mapping_version(
    session: Session,
    *,
    system: str,
    instance: str,
    digest: str,
    source: str,
    diff: str = "",
    accepted_by: str = "",
) -> bool:
    """Store a mapping as the current version of its system instance unless it already is;
    True if stored. Processes that load the same mapping at once (run's two, several instances)
    take turns (a lock per system instance on PostgreSQL; SQLite's write lock), so it is
    stored once."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            text("SELECT pg_advisory_xact_lock(:a, hashtext(:b))"),
            {"a": _MAPPING_LOCK_ID, "b": f"{system}:{instance}"},
        )
    versions = mapping_versions(session, system=system, instance=instance)
    if versions and versions[-1].digest == digest:
        return False
    add_mapping_version(
        session, system=system, instance=instance, digest=digest, source=source, diff=diff,
        accepted_by=accepted_by,
    )  # fmt: skip
    return True


def mapping_versions(session: Session, *, system: str, instance: str) -> list[MappingVersion]:
    """Accepted mappings of one system instance, oldest first (the last one is current)."""
    return list(
        session.exec(
            select(MappingVersion)
            .where(col(MappingVersion.system) == system, col(MappingVersion.instance) == instance)
            .order_by(col(MappingVersion.accepted_at), col(MappingVersion.id))
            .execution_options(populate_existing=True)
        )
    )
