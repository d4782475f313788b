"""Shadows compressed on SQLite: ``shadow.fields`` becomes a zlib-compressed BLOB, as
``observation.fields`` did in 0008.

A shadow holds every read field of a linked record as we last saw or wrote it (~1 KB of JSON
per link, 75 of 968 bytes per edit in ``python -m bench.storage``); compressed, under half.
PostgreSQL keeps ``JSONB``: nothing changes there.

Existing rows are compressed here (the reader also takes uncompressed JSON, see
``sync.store.packed``). Written without the app's code, as a migration must be.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import contextlib
import json
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500


def _rewrite(convert: Callable[[object], object]) -> None:
    """Every shadow's fields through ``convert``, a batch at a time (by rowid)."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text("SELECT rowid, fields FROM shadow WHERE rowid > :last ORDER BY rowid LIMIT :n"),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        bind.execute(
            sa.text("UPDATE shadow SET fields = :fields WHERE rowid = :id"),
            [{"id": rowid, "fields": convert(fields)} for rowid, fields in rows],
        )
        last = rows[-1][0]


def _pack(stored: object) -> object:
    if isinstance(stored, str):
        return zlib.compress(stored.encode("utf-8"), 6)
    return stored  # NULL, or already a BLOB


def _unpack(stored: object) -> object:
    if isinstance(stored, bytes):
        raw = zlib.decompress(stored) if stored[:1] == b"\x78" else stored
        return json.dumps(json.loads(raw))
    return stored


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Batch mode reflects shadow's foreign key to link, and link's to incident, whose
    expression index (0007) SQLAlchemy cannot reflect: it warns, and leaves it alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        yield


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rewrite(_pack)
    with _quiet(), op.batch_alter_table("shadow") as batch:
        batch.alter_column("fields", existing_type=sa.JSON(), type_=sa.LargeBinary())


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with _quiet(), op.batch_alter_table("shadow") as batch:
        batch.alter_column("fields", existing_type=sa.LargeBinary(), type_=sa.JSON())
    _rewrite(_unpack)
