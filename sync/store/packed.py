"""Compact columns: what the store keeps per record and per edit, stored small on SQLite
(``python -m bench.storage``, issue 14: bytes per edit after pruning, ≤ 600).

Every type here is transparent: Python code reads and writes the same values on both dialects,
and the store's queries (``==``, ``IN``, ``ORDER BY``, retention's ``<``) hold in SQL.
PostgreSQL keeps its native types (``JSONB``, ``timestamptz``, text): only SQLite, which
stores each value as it is given, gets the compact forms.

- :class:`PackedJSON` (the newest observation of each record, each link's shadow, the
  canonical incident): on SQLite a zlib-compressed BLOB, packed with a *preset dictionary*
  (``sync/store/dictionaries``: vendor-recorded Jira and ServiceNow payloads and a canonical
  incident, so their keys and repeated shapes cost nothing); a Jira issue of ~6 KB is ~1 KB.
  A stream names its dictionary by Adler-32 in its zlib header (FDICT, RFC 1950), so values
  packed before (plain zlib, no dictionary), values packed with a later dictionary and JSON
  stored before packing (text) all read. On PostgreSQL ``JSONB``, which TOAST compresses.
- :class:`IncidentJSON`: a :class:`PackedJSON` whose ``state`` and ``parent`` are also columns
  of their own (a packed BLOB cannot be read in SQL): ``data["parent"].as_string()`` in a
  query means the ``parent`` column.
- :class:`UTCMicros` (the audit's time): an integer of microseconds since 1970 on SQLite (8
  bytes, where the text ``2026-12-07 01:59:12.180952`` took 26); ``timestamptz`` on PostgreSQL.
- :class:`HexId` (the audit's incident id and remote id): a 32-digit lower-case hex id (our
  uuid4 hex ids, ServiceNow sys_ids) as its 16 bytes on SQLite, in the row and in the index;
  anything else as text.
- :class:`Coded` (the audit's system, instance, action, field, actor and reason): the short
  strings that repeat on every row (``"itsm-sync"``, ``"jira"``, ``"update"``, ``"brought in
  line with the incident"``...) as their position in :data:`CODEBOOK` (1 byte, 0 for the
  commonest), anything else as text.

SQLite columns of :class:`HexId` and :class:`Coded` are declared ``BLOB`` (no type affinity):
SQLite keeps an integer, a blob and a text as given, and compares them as given.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, LargeBinary, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from sync.store.db import _aware, json_bytes, json_dumps

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)

# zlib's default level: about 1 KB for a 6 KB Jira issue in ~0.1 ms; level 9 saves ~1 %.
LEVEL = 6

# Preset dictionaries, ``v<N>.zdict``: append-only (a stream names its dictionary by Adler-32,
# so a shipped file never changes and is never removed); new values use the highest N.
DICTIONARY_DIR = Path(__file__).parent / "dictionaries"

_ZLIB = 0x78  # CMF of a deflate stream with a 32 KB window: the first byte of all we write
_FDICT = 0x20  # FLG bit: a DICTID (the dictionary's Adler-32) follows the two header bytes


@cache
def dictionaries() -> dict[int, bytes]:
    """Every shipped preset dictionary, by its Adler-32 (the DICTID of what it packed)."""
    found = {}
    for path in DICTIONARY_DIR.glob("v*.zdict"):
        data = path.read_bytes()
        found[zlib.adler32(data)] = data
    return found


@cache
def current_dictionary() -> bytes:
    """What new values are packed with: the newest shipped dictionary."""
    newest = max(DICTIONARY_DIR.glob("v*.zdict"), key=lambda p: int(p.stem[1:]))
    return newest.read_bytes()


def pack(value: Any, dictionary: bytes | None = None) -> bytes:
    """``value`` as JSON, compressed with ``dictionary`` (default: the current one; ``b""``:
    none, plain zlib as before the dictionaries)."""
    zdict = current_dictionary() if dictionary is None else dictionary
    packer = _primed(zdict).copy() if zdict else zlib.compressobj(LEVEL)
    return packer.compress(json_bytes(value)) + packer.flush()


@cache
def _primed(zdict: bytes) -> Any:
    """A compressor that has read ``zdict``: a copy of it packs (priming one anew for each
    value took longer than packing a 1.4 KB incident; ``copy`` holds the object's lock)."""
    return zlib.compressobj(LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, zdict)


def inflate(raw: bytes) -> bytes:
    """A zlib stream's data, with the preset dictionary its header names, if any."""
    if not raw[1] & _FDICT:
        return zlib.decompress(raw)
    dict_id = int.from_bytes(raw[2:6], "big")
    zdict = dictionaries().get(dict_id)
    if zdict is None:
        raise ValueError(
            f"a value packed with preset dictionary {dict_id:#010x}, which this release does"
            " not have (written by a newer one?)"
        )
    unpacker = zlib.decompressobj(zdict=zdict)
    return unpacker.decompress(raw) + unpacker.flush()


def unpack(stored: bytes | str) -> Any:
    """A packed value (with or without a preset dictionary), or one stored before packing
    (JSON text, or its bytes): JSON never starts with ``x`` (0x78), the first byte of every
    zlib stream we write."""
    if isinstance(stored, (bytes, bytearray, memoryview)):
        raw = bytes(stored)
        return json.loads(inflate(raw) if raw[:1] == bytes([_ZLIB]) else raw)
    return json.loads(stored)


class PackedJSON(TypeDecorator[Any]):
    """JSON stored as a zlib-compressed BLOB on SQLite (with the current preset dictionary),
    as ``JSONB`` on PostgreSQL."""

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


# The canonical incident's keys that are also columns of the incident table (IncidentRow).
INCIDENT_COLUMNS = ("state", "parent")


class _Column:
    """``data[key]`` of an :class:`IncidentJSON` column in a query: its column of its own."""

    def __init__(self, column: Any) -> None:
        self.column = column

    def as_string(self) -> Any:
        return self.column


class IncidentJSON(PackedJSON):
    """The canonical incident: :class:`PackedJSON`, and its :data:`INCIDENT_COLUMNS` are
    columns kept in step with it (``sync.store.incidents``); in a query ``data["parent"]
    .as_string()`` means the ``parent`` column (the packed BLOB cannot be read in SQL)."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return UntypedJSON()  # the column stays as it was declared (0012 adds no table copy)

    class comparator_factory(TypeDecorator.Comparator[Any]):
        def __getitem__(self, key: Any) -> Any:
            if key not in INCIDENT_COLUMNS:
                raise NotImplementedError(
                    f"the incident's {key!r} is not a column: only {INCIDENT_COLUMNS} can be"
                    " queried in SQL (its data is packed on SQLite)"
                )
            return _Column(self.expr.table.c[key])


def incident_columns(data: Any) -> dict[str, str | None]:
    """The :data:`INCIDENT_COLUMNS` of an incident's data, as the columns hold them (what
    ``data ->> key`` gives: text, or NULL)."""
    out: dict[str, str | None] = {}
    for key in INCIDENT_COLUMNS:
        value = data.get(key)
        out[key] = value if value is None or isinstance(value, str) else json_dumps(value)
    return out


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


class Untyped(LargeBinary):
    """SQLite's ``BLOB`` column (no affinity) whose values go in and come out as they are:
    an integer, bytes or text (LargeBinary's own processing would make every value bytes)."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class UntypedJSON(Untyped):
    """:class:`Untyped`, declared ``JSON`` (NUMERIC affinity, which leaves a blob or JSON text
    as it is): ``incident.data``, declared so before it was packed."""

    __visit_name__ = "JSON"


_HEX_ID = re.compile(r"[0-9a-f]{32}")


class HexId(TypeDecorator[str]):
    """Text that is mostly a 32-digit lower-case hex id: as its 16 bytes on SQLite (other text,
    upper-case hex included, as it is), ``VARCHAR`` on PostgreSQL."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Untyped())

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None or not _HEX_ID.fullmatch(value):
            return value
        return bytes.fromhex(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return value.hex() if isinstance(value, bytes) else value


# What the audit's short columns repeat, stored on SQLite as the position here. Append only:
# a code never changes meaning. A value added later is text in the rows written before, so
# an addition needs a migration that codes them (a query for it binds the code).
CODEBOOK: tuple[str, ...] = (
    # 0 and 1 take no bytes at all in an SQLite record: the commonest two.
    "itsm-sync", "default",
    # systems
    "servicenow", "jira", "statuspage",
    # actions (sync.store.db.AuditAction)
    "update", "create", "transition", "comment", "conflict", "park", "replay", "override",
    "skip",
    # reasons the engine writes on every edit or record
    "brought in line with the incident", "about to create its record", "postmortem required",
    "postmortem problem record",
    # canonical fields (mapping.model.Incident)
    "title", "description", "severity", "state", "assignee", "team", "services",
    "customer_impact", "public", "public_message", "labels", "started_at", "resolved_at",
    "closed_at", "resolution", "comments", "parent", "postmortem", "resolution.code",
    "resolution.notes", "change_request",
    # remote fields the default mappings write (mapping/defaults)
    "summary", "short_description", "status", "priority", "impact", "urgency", "components",
    "assigned_to", "assignment_group", "close_code", "close_notes", "work_notes",
    "priority.name", "status.name", "resolution.name", "assignee.accountId", "business_service",
    "parent_incident", "opened_at", "resolutiondate", "customfield_10012", "impact_override",
    # the postmortem tracker's
    "gate", "problem", "action_item",
)  # fmt: skip

CODES = {value: code for code, value in enumerate(CODEBOOK)}


class Coded(TypeDecorator[str]):
    """A short, repetitive string: its :data:`CODEBOOK` position (an integer) on SQLite, other
    text as it is; ``VARCHAR`` on PostgreSQL."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return self.impl_instance  # (type_descriptor would make Text a VARCHAR)
        return dialect.type_descriptor(Untyped())

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None:
            return value
        return CODES.get(value, value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return CODEBOOK[value] if isinstance(value, int) else value


class CodedText(Coded):
    """:class:`Coded`, ``TEXT`` on PostgreSQL (the audit's reason)."""

    impl = Text
    cache_ok = True
