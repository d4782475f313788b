"""Compact columns: what the store keeps per record and per edit, stored small on SQLite
(``python -m bench.storage``, issue 14: bytes per edit after pruning).

The newest observation of each remote record is the whole record as its system sent it: a
Jira issue is about 9 KB of JSON (avatar URLs, ``self`` links, nulls), more than everything
else the store keeps about an incident. On SQLite :class:`PackedJSON` keeps it as a
zlib-compressed BLOB (about a fifth of the size); on PostgreSQL it stays ``JSONB``, which
TOAST already compresses above 2 KB. Either way the Python side sees the same dict.

The audit log's time (:class:`UTCMicros`) is an integer of microseconds since 1970 on SQLite
(8 bytes, where the text ``2026-12-07 01:59:12.180952`` took 26; two rows per edit) and
``timestamptz`` on PostgreSQL (8 bytes already). Either way an aware UTC datetime comes back.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, LargeBinary, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from sync.store.db import _aware, json_dumps

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)

# zlib's default level: about 1.5 KB for a 9 KB Jira issue in ~0.1 ms; level 9 saves ~1 %.
LEVEL = 6


def pack(value: Any) -> bytes:
    return zlib.compress(json_dumps(value).encode("utf-8"), LEVEL)


def unpack(stored: bytes | str) -> Any:
    """A packed value, or one stored before packing (JSON text, or its bytes): JSON never
    starts with ``x`` (0x78), the first byte of every zlib stream at our levels."""
    if isinstance(stored, (bytes, bytearray, memoryview)):
        raw = bytes(stored)
        return json.loads(zlib.decompress(raw) if raw[:1] == b"\x78" else raw)
    return json.loads(stored)


class PackedJSON(TypeDecorator[Any]):
    """JSON stored as a zlib-compressed BLOB on SQLite, as ``JSONB`` on PostgreSQL."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return pack(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return unpack(value)


class UTCMicros(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes: microseconds since 1970 (an integer) on SQLite, ``timestamptz`` on
    PostgreSQL. Integer order is time order, so comparisons and ``ORDER BY`` in SQL hold."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = _aware(value)
        return value if dialect.name == "postgresql" else (value - EPOCH) // MICROSECOND

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):  # PostgreSQL: in the session's zone
            return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, str):  # SQLite text, as written before 0010 (naive UTC)
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        return EPOCH + int(value) * MICROSECOND
