"""Alembic environment for the engine's tables (``sync.store.metadata``).

Two ways in:

- :func:`sync.store.migrate` (the service at startup, the tests) hands us its connection, already
  in a transaction and holding the migration lock, in ``config.attributes["connection"]``.
- The ``alembic`` command (``alembic upgrade head`` next to ``alembic.ini``): the database is
  ``-x url=...``, else ``sqlalchemy.url`` from the ini file, else ``ITSM_SYNC_DATABASE_URL`` /
  the settings' ``database_url``; we open it the same way ``migrate`` does.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlmodel.sql.sqltypes import AutoString

from sync.store import (
    JSONValue,
    UTCDateTime,
    include_object,
    lock_for_migration,
    make_engine,
    metadata,
)
from sync.store.packed import PackedJSON, UTCMicros

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if url:
        return url
    from config.settings import get_settings

    return get_settings().database_url


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones: a migration must not import app code,
    which keeps changing after the migration is written."""
    if type_ == "type" and isinstance(obj, AutoString):
        return "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, JSONValue):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    if type_ == "type" and isinstance(obj, PackedJSON):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.LargeBinary().with_variant(postgresql.JSONB(), "postgresql")'
    if type_ == "type" and isinstance(obj, UTCMicros):
        return 'sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")'
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        render_item=_render_item,
        include_object=include_object,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    # SQLite can't ALTER most things: later migrations use batch mode (copy and move).
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = make_engine(_url())
    try:
        with engine.begin() as connection:
            lock_for_migration(connection)
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
