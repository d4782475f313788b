"""The audit log's time as an integer on SQLite: ``audit.at`` in microseconds since 1970.

Two audit rows are written per edit (the change, then each write that carries it out); their
time as text (``2026-12-07 01:59:12.180952``, naive UTC) took 26 bytes, the integer takes 8:
48 bytes per edit of the 968 in ``python -m bench.storage``. Integer order is time order, so
``ORDER BY at`` and retention's ``at < cutoff`` hold. PostgreSQL keeps ``timestamptz`` (8 bytes
already): nothing changes there.

Written without the app's code, as a migration must be.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
EPOCH = dt.datetime(1970, 1, 1)  # naive UTC, as SQLite stored it
MICROSECOND = dt.timedelta(microseconds=1)


def _rewrite(convert: Callable[[object], object]) -> None:
    """Every audit row's time through ``convert``, a batch at a time (by id)."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text("SELECT id, at FROM audit WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        bind.execute(
            sa.text("UPDATE audit SET at = :at WHERE id = :id"),
            [{"id": id_, "at": convert(at)} for id_, at in rows],
        )
        last = rows[-1][0]


def _micros(stored: object) -> object:
    if isinstance(stored, str):
        return (dt.datetime.fromisoformat(stored).replace(tzinfo=None) - EPOCH) // MICROSECOND
    return stored


def _text(stored: object) -> object:
    if isinstance(stored, int):
        return (EPOCH + stored * MICROSECOND).strftime("%Y-%m-%d %H:%M:%S.%f")
    return stored


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rewrite(_micros)
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("at", existing_type=sa.DateTime(timezone=True), type_=sa.BigInteger())


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("at", existing_type=sa.BigInteger(), type_=sa.DateTime(timezone=True))
    _rewrite(_text)
