"""The store's base: types, the engine and session factory, migrations and prepared statements.

SQLite is the default (one process, WAL mode); PostgreSQL lets several ``itsm-sync run``
instances share the work. Everything here runs on both.

Transactions: every store function takes a :class:`~sqlmodel.Session` and **never commits**;
the caller's :func:`session_scope` commits once at the end, so a group of calls is atomic.
Keep scopes short and never hold one across a remote call: on SQLite a writing scope holds the
database's single write lock (``BEGIN IMMEDIATE``) until it ends.

Times are timezone-aware UTC going in (naive datetimes are refused as ambiguous) and coming
out, on both dialects.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import registry
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, Session, SQLModel

if TYPE_CHECKING:  # alembic loads only when a schema must change (see migrate)
    from alembic.config import Config

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


def scrub(value: Any) -> Any:
    """``value`` with NUL characters taken out of every string (keys too): PostgreSQL keeps no
    NUL in text or JSONB, and one remote record carrying one must not stop the store."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


# A NUL in JSON text: \u0000 not itself escaped (an even run of backslashes before it).
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")

# orjson's way with what json.dumps refuses: a datetime or a dataclass is an error here too
# (the store is given JSON-ready values), not quietly turned into text.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON for the database, with every NUL taken out (checked on the text:
    cheap when, as almost always, there is none).

    Made by orjson, ~6x faster than ``json.dumps``: serialising what a pass stores was ~5 % of
    a worker process's CPU under load (docs/performance.md). What orjson refuses and
    ``json.dumps`` takes (an integer beyond 64 bits, a lone surrogate: a remote record may hold
    either) is made by ``json.dumps`` in the same compact form; what both refuse raises
    ``TypeError`` as before."""
    try:
        raw = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        raw = json.dumps(value, separators=(",", ":")).encode("ascii")
    return _JSON_NUL.sub(rb"\1", raw) if b"\\u0000" in raw else raw


def json_dumps(value: Any) -> str:
    """:func:`json_bytes` as text (the engines' ``json_serializer``)."""
    return json_bytes(value).decode("utf-8")


class JSONValue(TypeDecorator[Any]):
    """JSON everywhere, JSONB on PostgreSQL (smaller, indexable); never a NUL in it (the
    engines serialize with :func:`json_dumps`)."""

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


# Pooled connections kept open: each worker thread, the poller and the web app's threads hold
# one at a time. Beyond this many a connection is opened for the call and closed after it
# (SQLite: its PRAGMAs again; PostgreSQL: a new server process), and beyond
# POOL_OVERFLOW more a thread waits for one.
POOL_SIZE = 8
POOL_OVERFLOW = 32


def make_engine(url: str, *, echo: bool = False, pool_size: int = POOL_SIZE) -> Engine:
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
            json_serializer=json_dumps,
            **(
                {"poolclass": StaticPool}
                if memory
                else {"pool_size": pool_size, "max_overflow": POOL_OVERFLOW}
            ),
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        engine_hooks(engine).write_lock = threading.RLock()
        return engine
    if backend in ("postgresql", "postgres"):
        if "+" not in parsed.drivername:  # the default driver would be psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed,
            echo=echo,
            json_serializer=json_dumps,
            pool_size=pool_size,
            max_overflow=POOL_OVERFLOW,
        )
        dialect = engine.dialect

        def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            _pg_checkout(dialect, dbapi_connection, record)

        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", _pg_checkin)
        engine_hooks(engine).readonly = {"isolation_level": "AUTOCOMMIT"}
        engine_hooks(engine).single = {"isolation_level": "AUTOCOMMIT"}
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
    - ``single``: the execution options of ``single`` scopes, whose one write statement is a
      transaction by itself: PostgreSQL autocommit (set by :func:`make_engine`; the BEGIN and
      COMMIT round trips saved, the statement as atomic as before); none on SQLite, where such
      a scope is a write transaction like any other (``BEGIN IMMEDIATE``, the write lock).
    """

    def __init__(self) -> None:
        self.write_lock: threading.RLock | None = None
        self.on_queued: list[Callable[[], None]] = []
        self.readonly: dict[str, Any] = {"sqlite_begin": "DEFERRED"}
        self.single: dict[str, Any] = {}
        # Write transactions begun (docs/performance.md: each one waits its turn on SQLite).
        self.writes = 0
        self._count = threading.Lock()

    def wrote(self) -> None:
        with self._count:
            self.writes += 1


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
def session_scope(
    engine: Engine, *, readonly: bool = False, single: bool = False
) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    Objects stay usable after the scope (``expire_on_commit=False``). On SQLite a scope takes
    the write lock when it begins (others wait up to 30 s; this process's other writers wait
    on a Python lock first, see :class:`EngineHooks`); pass ``readonly=True`` for pure reads
    (the web page, the CLI) so they never wait for, or delay, a writer, and ``single=True``
    for a scope that runs exactly one write statement (a claim of the queue): on PostgreSQL
    it runs in autocommit, a transaction by itself. A scope that marked the queue runs the
    engine's ``on_queued`` hooks after its commit.
    """
    hooks = _HOOKS.get(engine)
    lock = hooks.write_lock if hooks is not None and not readonly else None
    # Bounded like the busy timeout: a writer stuck behind a thread that waits for *it* fails
    # as before (SQLITE_BUSY after 30 s) instead of hanging for good.
    locked = lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) if lock is not None else False
    if hooks is not None and not readonly:
        hooks.wrote()
    bind = engine
    if readonly:
        options = hooks.readonly if hooks is not None else {"sqlite_begin": "DEFERRED"}
        bind = engine.execution_options(**options)
    elif single and hooks is not None and hooks.single:
        bind = engine.execution_options(**hooks.single)
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


MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


# Indexes on an expression, made by a migration with each dialect's own SQL (the ORM cannot
# declare one portably): autogenerate and the metadata check leave them alone.
# (None since 0012: ix_incident_state, 0007's index on the state inside the JSON, is now on
# the incident's state column.)
EXPRESSION_INDEXES: frozenset[str] = frozenset()


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: everything but :data:`EXPRESSION_INDEXES`."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def alembic_config() -> Config:
    """The alembic configuration for the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``); idempotent.

    Safe when several processes start at once: the whole upgrade, including alembic's check of
    the current revision, runs in one transaction behind a lock (an advisory lock on
    PostgreSQL, the write lock on SQLite), so the second one finds the work done.

    A database already at :data:`SCHEMA_HEAD` is left as it is without loading alembic and its
    scripts: every command opens the database, and that was ~0.3 s of each one's start-up.
    """
    if _at_head(engine):
        return
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        lock_for_migration(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# The newest shipped migration's revision (tests/store/test_store.py checks it against alembic's
# own head, so a new migration cannot be forgotten here).
SCHEMA_HEAD = "0013"


def _at_head(engine: Engine) -> bool:
    """Whether the database's schema is the newest one (read only; False if it has none)."""
    try:
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no alembic_version table: a new database
        return False
    return [row[0] for row in found] == [SCHEMA_HEAD]


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's current revision or None, the newest shipped one); writes nothing."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head() or ""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


def lock_for_migration(connection: Connection) -> None:
    """Serialise migrators until the transaction ends (SQLite: BEGIN IMMEDIATE already did)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})


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


def _cap(body: str) -> str:
    encoded = body.encode("utf-8")
    if len(encoded) <= MAX_BODY_BYTES:
        return body
    return encoded[:MAX_BODY_BYTES].decode("utf-8", errors="ignore")
