"""Jira's time formats: ``2024-01-01T10:00:00.000+0000`` in the user's zone, epoch ms inside."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, date, datetime, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("simulators")

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


# 1900-01-02 .. 9999-12-30 UTC: renderable in every time zone.
_MIN_MS = int(datetime(1900, 1, 2, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp() * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


@cache
def zone(name: str) -> tzinfo:
    """The named IANA zone; UTC (with a warning) if this machine has no such zone."""
    if name in ("UTC", "Etc/UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r, using UTC", name)
        return UTC


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return name in ("UTC", "Etc/UTC", "GMT")
    return True


def fmt(ms: int | None, tz: tzinfo) -> str | None:
    """``2024-01-01T10:00:00.000+0000`` (offset without a colon, as Jira sends it)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + dt.strftime("%z")


def fmt_rendered(ms: int | None, tz: tzinfo) -> str | None:
    """The human form ``renderedFields`` uses, e.g. ``01/Jan/24 10:00 AM``."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz)
    return dt.strftime("%d/%b/%y %I:%M %p")


def parse(value: str, tz: tzinfo = UTC) -> int:
    """A Jira/ISO 8601 timestamp to epoch ms; a missing offset means ``tz``. ValueError if bad."""
    m = _ISO.match(value.strip())
    if not m:
        raise ValueError(f"not a timestamp: {value!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    if not 1900 <= int(y) <= 9999:
        raise ValueError(f"year out of range: {value!r}")
    micro = int((frac or "0").ljust(6, "0"))
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), micro)
    if off is None:
        dt = dt.replace(tzinfo=tz)
    elif off == "Z":
        dt = dt.replace(tzinfo=UTC)
    else:
        dt = datetime.fromisoformat(dt.isoformat() + off[:3] + ":" + off[-2:])
    ms = int(dt.timestamp() * 1000)
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValueError(f"timestamp out of range: {value!r}")
    return ms


def parse_date(value: str) -> str:
    """A ``yyyy-MM-dd`` date (validated); ValueError if bad."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise ValueError(f"not a date: {value!r}")
    return date.fromisoformat(value.strip()).isoformat()
