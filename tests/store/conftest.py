"""Store fixtures: every test runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL: each test session (each xdist worker) creates its own database
``itsm_test_<uuid8>`` next to the ``test`` database, migrates it once, empties it before every
test and drops it at the end. If PostgreSQL is down, the PostgreSQL tests fail (CI starts
it); set ``ITSM_SYNC_TEST_PG_URL`` to point them elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

import postmortem_tracker.models  # noqa: F401 - its tables join the store metadata
from sync.store import make_engine, metadata, migrate

PG_MAINTENANCE_URL = os.environ.get(
    "ITSM_SYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class PostgresServer:
    """Creates and drops uniquely named databases through a maintenance connection."""

    def __init__(self, maintenance_url: str) -> None:
        self.url = make_url(maintenance_url)
        self.admin = create_engine(
            self.url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        self.created: list[str] = []

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"itsm_test_{uuid.uuid4().hex[:8]}"
        problem = None
        try:
            with self.admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except OperationalError as exc:
            problem = str(exc.orig or exc).strip()
        if problem is not None:  # fail (not skip): CI starts PostgreSQL, so this is a real fault
            pytest.fail(
                f"PostgreSQL is not reachable at {self.url.render_as_string()}: {problem}\n"
                "The store tests run on PostgreSQL too; start it (CI does) or point "
                "ITSM_SYNC_TEST_PG_URL at one.",
                pytrace=False,
            )
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.created:
            with self.admin.connect() as connection:
                for name in self.created:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_MAINTENANCE_URL)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session")
def pg_engine(postgres: PostgresServer) -> Iterator[Engine]:
    """This session's migrated PostgreSQL database."""
    engine = make_engine(postgres.create_database())
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _empty(engine: Engine) -> None:
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A migrated, empty database of each dialect."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "store.db"
        sqlite_engine = make_engine(f"sqlite:///{path}")
        migrate(sqlite_engine)
        request.addfinalizer(sqlite_engine.dispose)
        return sqlite_engine
    pg: Engine = request.getfixturevalue("pg_engine")
    _empty(pg)
    return pg


@pytest.fixture
def fresh_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Make a new, empty (unmigrated) database of a dialect; returns its URL."""

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'fresh.db'}"
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.create_database()

    return make
