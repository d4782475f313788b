"""Compressed JSON columns: the large documents the store keeps per record, stored small.

The newest observation of each remote record is the whole record as its system sent it: a
Jira issue is about 9 KB of JSON (avatar URLs, ``self`` links, nulls), more than everything
else the store keeps about an incident. On SQLite :class:`PackedJSON` keeps it as a
zlib-compressed BLOB (about a fifth of the size); on PostgreSQL it stays ``JSONB``, which
TOAST already compresses above 2 KB. Either way the Python side sees the same dict.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from sqlalchemy import Dialect, LargeBinary, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from sync.store.db import json_dumps

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
