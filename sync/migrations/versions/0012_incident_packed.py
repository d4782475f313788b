"""The incident's state and parent as columns; its data, observations and shadows packed with
a preset dictionary on SQLite.

- ``incident.state`` and ``incident.parent`` (indexed): what the store looks for inside an
  incident's JSON (the open incidents; an incident's duplicates), so the JSON itself need not
  be read in SQL. ``ix_incident_state`` (0007's index on ``data``'s state) is now on the column.
  On both dialects; the app keeps them equal to ``data``'s on every write.
- On SQLite, ``incident.data`` (~1.4 KB of JSON) becomes a zlib-compressed BLOB as observations
  (0008) and shadows (0009) are, and all three are packed with the preset dictionary
  ``sync/store/dictionaries/v1.zdict`` (keys and shapes of vendor-recorded Jira and ServiceNow
  payloads and of a canonical incident): a Jira issue ~40 % smaller than plain zlib made it.
  The column keeps its declared type (SQLite leaves a blob in it as it is), so no table is
  copied. PostgreSQL keeps ``JSONB``.

The downgrade gives back plain zlib (0011's code reads no dictionary) and the incident's JSON
text. Written without the app's code, as a migration must be (the dictionaries are data).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500
DICTIONARIES = Path(__file__).parents[2] / "store" / "dictionaries"
V1_ADLER32 = 0x816B8DE8
LEVEL = 6
COLUMNS = ("state", "parent")


def _dictionaries() -> dict[int, bytes]:
    found = {}
    for path in DICTIONARIES.glob("v*.zdict"):
        data = path.read_bytes()
        found[zlib.adler32(data)] = data
    return found


def _v1() -> bytes:
    v1 = (DICTIONARIES / "v1.zdict").read_bytes()
    assert zlib.adler32(v1) == V1_ADLER32, "sync/store/dictionaries/v1.zdict was changed"
    return v1


def _plain(stored: object, known: dict[int, bytes]) -> bytes:
    """The JSON text (bytes) of a stored value: JSON text, or zlib with or without a dictionary."""
    raw = stored.encode("utf-8") if isinstance(stored, str) else bytes(stored)  # type: ignore[call-overload]
    if raw[:1] != b"\x78":
        return raw
    if not raw[1] & 0x20:
        return zlib.decompress(raw)
    unpacker = zlib.decompressobj(zdict=known[int.from_bytes(raw[2:6], "big")])
    return unpacker.decompress(raw) + unpacker.flush()


def _packer(zdict: bytes) -> Callable[[bytes], bytes]:
    def pack(data: bytes) -> bytes:
        if not zdict:
            return zlib.compress(data, LEVEL)
        packer = zlib.compressobj(LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, 0, zdict)
        return packer.compress(data) + packer.flush()

    return pack


def _rewrite(table: str, column: str, convert: Callable[[object], dict[str, object]]) -> None:
    """Every row's ``column`` through ``convert`` (the new values by column), a batch at a time."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                f"SELECT rowid, {column} FROM {table} WHERE rowid > :last ORDER BY rowid LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        updates = [
            {"rowid_": rowid, **convert(value)} for rowid, value in rows if value is not None
        ]
        if updates:
            names = [k for k in updates[0] if k != "rowid_"]
            bind.execute(
                sa.text(
                    f"UPDATE {table} SET {', '.join(f'{k} = :{k}' for k in names)}"
                    " WHERE rowid = :rowid_"
                ),
                updates,
            )
        last = rows[-1][0]


def _columns(data: bytes) -> dict[str, object]:
    """The incident's state and parent as the app keeps them (text, or NULL)."""
    value = json.loads(data)
    out: dict[str, object] = {}
    for key in COLUMNS:
        got = value.get(key)
        out[key] = got if got is None or isinstance(got, str) else json.dumps(got)
    return out


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for key in COLUMNS:
        op.add_column("incident", sa.Column(key, sa.String(), nullable=True))
    op.execute("DROP INDEX ix_incident_state")
    if dialect == "postgresql":
        op.execute("UPDATE incident SET state = data ->> 'state', parent = data ->> 'parent'")
    else:
        known, pack = _dictionaries(), _packer(_v1())

        def incident(stored: object) -> dict[str, object]:
            data = _plain(stored, known)
            return {"data": pack(data), **_columns(data)}

        _rewrite("incident", "data", incident)
        for table in ("observation", "shadow"):
            _rewrite(table, "fields", lambda stored: {"fields": pack(_plain(stored, known))})
    op.create_index(op.f("ix_incident_state"), "incident", ["state"])
    op.create_index(op.f("ix_incident_parent"), "incident", ["parent"])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index(op.f("ix_incident_parent"), table_name="incident")
    op.drop_index(op.f("ix_incident_state"), table_name="incident")
    if dialect == "postgresql":
        for key in COLUMNS:
            op.drop_column("incident", key)
        op.execute("CREATE INDEX ix_incident_state ON incident ((data ->> 'state'))")
        return
    known, pack = _dictionaries(), _packer(b"")
    for table in ("observation", "shadow"):
        _rewrite(table, "fields", lambda stored: {"fields": pack(_plain(stored, known))})
    _rewrite("incident", "data", lambda stored: {"data": _plain(stored, known).decode("utf-8")})
    for key in COLUMNS:  # (SQLite >= 3.35; their indexes are gone)
        op.execute(f"ALTER TABLE incident DROP COLUMN {key}")
    op.execute("CREATE INDEX ix_incident_state ON incident (json_extract(data, '$.state'))")
