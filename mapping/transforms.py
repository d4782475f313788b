"""Named, pure value transforms that field mappings refer to by name (``transform: person``).

Each :class:`Transform` turns a remote value into a canonical one (``to_canonical``) and,
when ``two_way``, back (``to_remote``) so that ``to_canonical(to_remote(x)) == x`` (datetimes
at the remote's precision). One-way transforms convert in one direction only: ``lower`` and
``strip`` clean incoming values, ``component_statuses`` builds outgoing ones. Transforms do no
I/O except through ``ctx.people``; a lookup's :class:`LookupError` becomes a
:class:`TransformError` naming the person, other lookup errors (e.g. a connector's retriable
errors) pass through unchanged with a note naming the person.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "TRANSFORMS",
    "PeopleLookup",
    "Transform",
    "TransformContext",
    "TransformError",
    "get_transform",
]


class TransformError(ValueError):
    """A value a transform cannot convert; the message names the value and what was expected."""


class PeopleLookup(Protocol):
    """Resolves people on one remote system (backed by the connector's cached lookups)."""

    def email_for(self, person_id: str) -> str: ...

    def id_for(self, email: str) -> str: ...


@dataclass(frozen=True)
class TransformContext:
    """What a transform may know besides the value: the system, its people, its time zone."""

    system: str
    people: PeopleLookup | None = None
    time_zone: str = "UTC"  # the zone of naive remote datetimes / of dates derived from times
    # The field mapping's ``args`` and the incident's canonical values (for transforms such
    # as component_statuses whose result depends on other fields).
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    values: Mapping[str, Any] = field(default_factory=dict, hash=False)


Func = Callable[[Any, TransformContext], Any]


@dataclass(frozen=True)
class Transform:
    """A named conversion between a remote value and a canonical one."""

    name: str
    description: str  # one line, shown to admins
    to_canonical: Func
    to_remote: Func
    two_way: bool = True


def _identity(value: Any, ctx: TransformContext) -> Any:
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expect_str(value: Any, transform: str, expected: str) -> str:
    if not isinstance(value, str):
        raise TransformError(
            f"{transform}: expected {expected}, got {type(value).__name__} {_short(value)}"
        )
    return value


# --- people -------------------------------------------------------------------------------


def _people(ctx: TransformContext) -> PeopleLookup:
    if ctx.people is None:
        raise TransformError(f"person: no people lookup is configured for {ctx.system}")
    return ctx.people


def _person_to_canonical(value: Any, ctx: TransformContext) -> str:
    if value is None or value == "":
        return ""
    person_id = _expect_str(value, "person", "a person id")
    try:
        email = _people(ctx).email_for(person_id)
    except LookupError as exc:
        raise TransformError(f"person: no {ctx.system} person with id {person_id!r}") from exc
    except TransformError:
        raise
    except Exception as exc:
        exc.add_note(f"while looking up the {ctx.system} person with id {person_id!r}")
        raise
    return email.strip().lower()


def _person_to_remote(value: Any, ctx: TransformContext) -> str:
    if value is None or value == "":
        return ""
    email = _expect_str(value, "person", "an email address").strip().lower()
    if "@" not in email:
        raise TransformError(f"person: {value!r} is not an email address")
    try:
        return _people(ctx).id_for(email)
    except LookupError as exc:
        raise TransformError(f"person: no {ctx.system} person with email {email!r}") from exc
    except TransformError:
        raise
    except Exception as exc:
        exc.add_note(f"while looking up the {ctx.system} person with email {email!r}")
        raise


# --- dates and times ----------------------------------------------------------------------


def _zone(ctx: TransformContext) -> dt.tzinfo:
    if ctx.time_zone in ("UTC", "Etc/UTC", "Z"):
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(ctx.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise TransformError(f"unknown time zone {ctx.time_zone!r} for {ctx.system}") from exc


def _aware(value: Any, transform: str, ctx: TransformContext) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TransformError(
            f"{transform}: expected a datetime, got {type(value).__name__} {_short(value)}"
        )
    return value if value.tzinfo else value.replace(tzinfo=_zone(ctx))


_SN_DATETIME: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)


def _sn_to_canonical(value: Any, ctx: TransformContext) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return _aware(value, "servicenow_datetime", ctx).astimezone(dt.UTC)
    text = _expect_str(value, "servicenow_datetime", "'YYYY-MM-DD HH:MM:SS'")
    match = _SN_DATETIME.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        naive = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise TransformError(
            f"servicenow_datetime: {_short(value)} is not a date and time like "
            "'2024-01-31 13:45:00' (YYYY-MM-DD HH:MM:SS)"
        ) from None
    return naive.replace(tzinfo=_zone(ctx)).astimezone(dt.UTC)


def _sn_to_remote(value: Any, ctx: TransformContext) -> str:
    if value is None:
        return ""
    local = _aware(value, "servicenow_datetime", ctx).astimezone(_zone(ctx))
    return local.strftime("%Y-%m-%d %H:%M:%S")


_JIRA_DATETIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})",
    re.ASCII,
)


def _parse_offset(text: str) -> dt.tzinfo:
    if text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _jira_to_canonical(value: Any, ctx: TransformContext) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return _aware(value, "jira_datetime", ctx).astimezone(dt.UTC)
    text = _expect_str(value, "jira_datetime", "'YYYY-MM-DDTHH:MM:SS.mmm+0000'")
    match = _JIRA_DATETIME.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        micro = int((fraction or "0").ljust(6, "0"))
        parts = (int(year), int(month), int(day), int(hour), int(minute), int(second), micro)
        parsed = dt.datetime(*parts, tzinfo=_parse_offset(offset))
    except ValueError:
        raise TransformError(
            f"jira_datetime: {_short(value)} is not a date and time like "
            "'2024-01-31T13:45:00.000+0000'"
        ) from None
    return parsed.astimezone(dt.UTC)


def _millis(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}"


def _jira_to_remote(value: Any, ctx: TransformContext) -> str | None:
    if value is None:
        return None
    return _millis(_aware(value, "jira_datetime", ctx).astimezone(dt.UTC)) + "+0000"


def _iso_to_canonical(value: Any, ctx: TransformContext) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return _aware(value, "iso_datetime", ctx).astimezone(dt.UTC)
    text = _expect_str(value, "iso_datetime", "an ISO 8601 date and time")
    try:
        if len(text) > 64 or not text.isascii():
            raise ValueError
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise TransformError(
            f"iso_datetime: {_short(value)} is not an ISO 8601 date and time like "
            "'2024-01-31T13:45:00.000Z'"
        ) from None
    if parsed.tzinfo is None:
        raise TransformError(
            f"iso_datetime: {_short(value)} has no time zone; add 'Z' or an offset like +01:00"
        )
    return parsed.astimezone(dt.UTC)


def _iso_to_remote(value: Any, ctx: TransformContext) -> str | None:
    if value is None:
        return None
    return _millis(_aware(value, "iso_datetime", ctx).astimezone(dt.UTC)) + "Z"


_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _date_to_canonical(value: Any, ctx: TransformContext) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return _aware(value, "date", ctx).astimezone(_zone(ctx)).date()
    if isinstance(value, dt.date):
        return value
    text = _expect_str(value, "date", "'YYYY-MM-DD'").strip()
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise TransformError(
            f"date: {_short(value)} is not a date like '2024-01-31' (YYYY-MM-DD)"
        ) from None


def _date_to_remote(value: Any, ctx: TransformContext) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = _aware(value, "date", ctx).astimezone(_zone(ctx)).date()
    if not isinstance(value, dt.date):
        raise TransformError(f"date: expected a date, got {type(value).__name__} {_short(value)}")
    return value.isoformat()


# --- Atlassian Document Format --------------------------------------------------------------

_MAX_ADF_DEPTH: Final = 64


def _adf_inline(nodes: Any, depth: int) -> str:
    parts: list[str] = []
    for node in _adf_children(nodes, depth):
        kind = node.get("type")
        attrs = node.get("attrs") or {}
        if kind == "text":
            parts.append(str(node.get("text", "")))
        elif kind == "hardBreak":
            parts.append("\n")
        elif kind == "mention":
            parts.append(str(attrs.get("text") or "@" + str(attrs.get("id", ""))))
        elif kind == "emoji":
            parts.append(str(attrs.get("text") or attrs.get("shortName", "")))
        elif kind in ("inlineCard", "blockCard"):
            parts.append(str(attrs.get("url", "")))
        elif kind == "date":
            try:
                stamp = int(str(attrs.get("timestamp")))
                day = dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).date()
                parts.append(day.isoformat())
            except (TypeError, ValueError, OverflowError):
                pass
        elif kind == "status":
            parts.append(str(attrs.get("text", "")))
        elif "content" in node:
            parts.append(_adf_inline(node["content"], depth + 1))
    return "".join(parts)


def _adf_children(nodes: Any, depth: int) -> Iterator[dict[str, Any]]:
    if depth > _MAX_ADF_DEPTH:
        raise TransformError(f"adf_text: the document is nested more than {_MAX_ADF_DEPTH} deep")
    if nodes is None:
        return
    if not isinstance(nodes, list):
        raise TransformError(f"adf_text: expected a list of nodes, got {_short(nodes)}")
    for node in nodes:
        if not isinstance(node, dict):
            raise TransformError(f"adf_text: expected a node object, got {_short(node)}")
        yield node


def _adf_blocks(nodes: Any, depth: int) -> list[str]:
    blocks: list[str] = []
    for node in _adf_children(nodes, depth):
        kind = node.get("type")
        content = node.get("content")
        if kind in ("paragraph", "heading", "codeBlock"):  # headings and code: their text
            blocks.append(_adf_inline(content, depth + 1))
        elif kind in ("bulletList", "orderedList"):
            blocks.append(_adf_list(node, depth + 1))
        elif kind == "blockquote":
            inner = "\n\n".join(_adf_blocks(content, depth + 1))
            blocks.append("\n".join("> " + line if line else ">" for line in inner.split("\n")))
        elif kind == "rule":
            blocks.append("---")
        elif kind == "table":
            rows = []
            for row in _adf_children(content, depth + 1):
                cells = [
                    " ".join(_adf_blocks(cell.get("content"), depth + 3))
                    for cell in _adf_children(row.get("content"), depth + 2)
                ]
                rows.append(" | ".join(cells))
            blocks.append("\n".join(rows))
        elif kind in ("mediaSingle", "mediaGroup", "media"):
            continue
        elif kind == "text" or kind == "hardBreak":
            blocks.append(_adf_inline([node], depth + 1))
        elif content is not None:  # panel, expand, layouts, ...: their text
            blocks.extend(_adf_blocks(content, depth + 1))
    return blocks


def _adf_list(node: dict[str, Any], depth: int) -> str:
    ordered = node.get("type") == "orderedList"
    start = (node.get("attrs") or {}).get("order", 1)
    number = start if isinstance(start, int) and not isinstance(start, bool) else 1
    lines: list[str] = []
    for item in _adf_children(node.get("content"), depth):
        marker = f"{number}. " if ordered else "- "
        number += 1
        item_lines: list[str] = []
        for child in _adf_children(item.get("content"), depth + 1):
            if child.get("type") in ("bulletList", "orderedList"):
                nested = _adf_list(child, depth + 2)
                item_lines.extend("  " + line for line in nested.split("\n"))
            else:
                item_lines.extend("\n".join(_adf_blocks([child], depth + 2)).split("\n"))
        first, *rest = item_lines or [""]
        lines.append(marker + first)
        lines.extend(line if line.startswith("  ") else "  " + line for line in rest)
    return "\n".join(lines)


def _adf_to_canonical(value: Any, ctx: TransformContext) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):  # Jira API v2 hands out plain strings
        return value
    if not isinstance(value, dict) or value.get("type") != "doc":
        raise TransformError(
            f"adf_text: expected an Atlassian document {{'type': 'doc', ...}}, got {_short(value)}"
        )
    return "\n\n".join(block for block in _adf_blocks(value.get("content"), 0) if block)


def _adf_to_remote(value: Any, ctx: TransformContext) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    text = _expect_str(value, "adf_text", "text").replace("\r\n", "\n").replace("\r", "\n")
    paragraphs: list[dict[str, Any]] = []
    for block in re.split(r"\n[ \t]*\n", text):
        content: list[dict[str, Any]] = []
        for line in block.split("\n"):
            if content:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        while content and content[-1]["type"] == "hardBreak":
            content.pop()
        while content and content[0]["type"] == "hardBreak":
            content.pop(0)
        if content:
            paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs}


# --- Jira wiki markup ---------------------------------------------------------------------

_WIKI_CODE_TAG: Final = re.compile(r"\{(code|noformat)(?::([^}|\n]{0,100}))?(?:\|[^}\n]{0,200})?\}")
_WIKI_INLINE: Final = re.compile(
    r"\{\{(?P<mono>[^\n]{1,1000}?)\}\}"
    r"|\[(?P<text>[^\]|\n]{0,1000})\|(?P<url>[^\]\n]{1,2000})\]"
    r"|\[(?P<bare>(?:https?|mailto|ftp):[^\]\s|]{1,2000})\]"
    r"|(?<![\w*])\*(?P<bold>[^*\s](?:[^*\n]{0,1000}[^*\s])?)\*(?![\w*])"
)
_MD_FENCE: Final = re.compile(r"^```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(?:^```[ \t]*$|\Z)", re.M | re.S)
_MD_INLINE: Final = re.compile(
    r"`(?P<mono>[^`\n]{1,1000})`"
    r"|\[(?P<text>[^\]\n]{0,1000})\]\((?P<url>[^)\s]{1,2000})\)"
    r"|<(?P<bare>(?:https?|mailto|ftp):[^>\s]{1,2000})>"
    r"|(?<![\w*])\*\*(?P<bold>[^*\s](?:[^*\n]{0,1000}[^*\s])?)\*\*(?![\w*])"
    r"|(?<![\w*])\*(?P<italic>[^*\s](?:[^*\n]{0,1000}[^*\s])?)\*(?![\w*])"
)


def _wiki_inline(line: str) -> str:
    def convert(match: re.Match[str]) -> str:
        if match["mono"] is not None:
            return f"`{match['mono']}`"
        if match["url"] is not None:
            return f"[{_wiki_inline(match['text'])}]({match['url']})"
        if match["bare"] is not None:
            return f"<{match['bare']}>"
        return f"**{_wiki_inline(match['bold'])}**"

    return _WIKI_INLINE.sub(convert, line)


def _md_inline(line: str) -> str:
    def convert(match: re.Match[str]) -> str:
        if match["mono"] is not None:
            return "{{" + match["mono"] + "}}"
        if match["url"] is not None:
            return f"[{_md_inline(match['text'])}|{match['url']}]"
        if match["bare"] is not None:
            return f"[{match['bare']}]"
        if match["bold"] is not None:
            return f"*{_md_inline(match['bold'])}*"
        return f"_{_md_inline(match['italic'])}_"

    return _MD_INLINE.sub(convert, line)


_WIKI_HEADING: Final = re.compile(r"h([1-6])\.\s+(.*)")
_WIKI_LIST: Final = re.compile(r"([*#]+)\s+(.*)")
_MD_HEADING: Final = re.compile(r"(#{1,6})\s+(.*)")
_MD_LIST: Final = re.compile(r"( *)(?:([-*+])|(\d+)[.)])\s+(.*)")


def _wiki_lines(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if heading := _WIKI_HEADING.fullmatch(line):
            line = "#" * int(heading[1]) + " " + _wiki_inline(heading[2])
        elif item := _WIKI_LIST.fullmatch(line):
            markers = item[1]
            bullet = "- " if markers[-1] == "*" else "1. "
            line = "  " * (len(markers) - 1) + bullet + _wiki_inline(item[2])
        elif line.startswith("bq. "):
            line = "> " + _wiki_inline(line[4:])
        else:
            line = _wiki_inline(line)
        lines.append(line)
    return "\n".join(lines)


def _md_lines(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if heading := _MD_HEADING.fullmatch(line):
            line = f"h{len(heading[1])}. " + _md_inline(heading[2])
        elif item := _MD_LIST.fullmatch(line):
            level = len(item[1]) // 2 + 1
            line = ("*" if item[2] else "#") * level + " " + _md_inline(item[4])
        elif line.startswith("> "):
            line = "bq. " + _md_inline(line[2:])
        else:
            line = _md_inline(line)
        lines.append(line)
    return "\n".join(lines)


def _wiki_to_canonical(value: Any, ctx: TransformContext) -> str:
    if value is None:
        return ""
    text = _expect_str(value, "jira_wiki", "wiki markup text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    position = 0
    opening: re.Match[str] | None = None
    for tag in _WIKI_CODE_TAG.finditer(text):  # pair {code...} with the next plain {code}
        if opening is None:
            opening = tag
        elif tag[0] == "{" + opening[1] + "}":
            out.append(_wiki_lines(text[position : opening.start()]))
            language = (opening[2] or "").strip() if opening[1] == "code" else ""
            code = text[opening.end() : tag.start()].strip("\n")
            out.append(f"```{language}\n{code}\n```")
            position = tag.end()
            opening = None
    out.append(_wiki_lines(text[position:]))
    return "".join(out)


def _wiki_to_remote(value: Any, ctx: TransformContext) -> str:
    if value is None:
        return ""
    text = _expect_str(value, "jira_wiki", "text").replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    position = 0
    for match in _MD_FENCE.finditer(text):
        out.append(_md_lines(text[position : match.start()]))
        language = match[1]
        opening = "{code:" + language + "}" if language else "{code}"
        out.append(f"{opening}\n{match[2].rstrip(chr(10))}\n{{code}}")
        position = match.end()
    out.append(_md_lines(text[position:]))
    return "".join(out)


# --- small shapes -------------------------------------------------------------------------


def _key_object(key: str, transform: str) -> tuple[Func, Func]:
    def to_canonical(value: Any, ctx: TransformContext) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and key in value:
            inner = value[key]
            return "" if inner is None else inner
        raise TransformError(f"{transform}: expected {{'{key}': ...}}, got {_short(value)}")

    def to_remote(value: Any, ctx: TransformContext) -> Any:
        if value is None or value == "":
            return None
        return {key: value}

    return to_canonical, to_remote


def _names_to_canonical(value: Any, ctx: TransformContext) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TransformError(
            f"names_list: expected a list like [{{'name': 'a'}}], got {_short(value)}"
        )
    names = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TransformError(f"names_list: expected {{'name': ...}}, got {_short(item)}")
    return tuple(names)


def _names_to_remote(value: Any, ctx: TransformContext) -> list[dict[str, str]]:
    if value is None or value == "":
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TransformError(f"names_list: expected a list of names, got {_short(value)}")
    return [{"name": str(name)} for name in value]


def _csv_to_canonical(value: Any, ctx: TransformContext) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(item).strip() for item in value if str(item).strip())
    text = _expect_str(value, "csv_list", "comma-separated text like 'a,b'")
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _csv_to_remote(value: Any, ctx: TransformContext) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TransformError(f"csv_list: expected a list of values, got {_short(value)}")
    items = [str(item).strip() for item in value]
    for item in items:
        if "," in item:
            raise TransformError(f"csv_list: {item!r} contains a comma and cannot be listed")
    return ",".join(item for item in items if item)


_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no", ""})


def _bool_to_canonical(value: Any, ctx: TransformContext) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = _expect_str(value, "bool_string", "'true' or 'false'").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TransformError(f"bool_string: {_short(value)} is not 'true' or 'false'")


def _bool_to_remote(value: Any, ctx: TransformContext) -> str:
    if not isinstance(value, bool):
        raise TransformError(f"bool_string: expected true or false, got {_short(value)}")
    return "true" if value else "false"


def _lower(value: Any, ctx: TransformContext) -> str:
    return "" if value is None else _expect_str(value, "lower", "text").lower()


def _strip(value: Any, ctx: TransformContext) -> str:
    return "" if value is None else _expect_str(value, "strip", "text").strip()


def _single_to_canonical(value: Any, ctx: TransformContext) -> tuple[Any, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _single_to_remote(value: Any, ctx: TransformContext) -> Any:
    if value is None or value == "":
        return ""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return value
    return value[0] if value else ""


COMPONENT_STATUSES: Final = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
_DEFAULT_COMPONENT_STATUS: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "none": "operational",
        "minor": "degraded_performance",
        "major": "partial_outage",
        "critical": "major_outage",
        "resolved": "operational",
    }
)
_ENDED: Final = frozenset({"resolved", "closed", "canceled"})


def _components_to_canonical(value: Any, ctx: TransformContext) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, dict):
        return tuple(str(key) for key in value)
    if isinstance(value, list | tuple):
        ids = []
        for item in value:
            if isinstance(item, dict) and "id" in item:
                ids.append(str(item["id"]))
            elif isinstance(item, str):
                ids.append(item)
            else:
                raise TransformError(
                    f"component_statuses: expected components like {{'id': ...}}, got "
                    f"{_short(item)}"
                )
        return tuple(ids)
    raise TransformError(f"component_statuses: expected components, got {_short(value)}")


def _components_to_remote(value: Any, ctx: TransformContext) -> dict[str, str]:
    """{component id: status}: from ``customer_impact`` (or, while that is ``none``, from the
    severity when args name it, e.g. ``SEV1: major_outage``), or ``resolved`` once it ended."""
    if value is None or value == "":
        return {}
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TransformError(f"component_statuses: expected component ids, got {_short(value)}")
    statuses = {**_DEFAULT_COMPONENT_STATUS, **{str(k): v for k, v in ctx.args.items()}}
    for key, status in statuses.items():
        if status not in COMPONENT_STATUSES:
            raise TransformError(
                f"component_statuses: {key}: {status!r} is not a component status "
                f"({', '.join(COMPONENT_STATUSES)})"
            )
    state = str(getattr(ctx.values.get("state"), "value", ctx.values.get("state")) or "")
    impact = ctx.values.get("customer_impact")
    impact = str(getattr(impact, "value", impact) or "none")
    key = "resolved" if state in _ENDED else impact
    if key == "none":  # impact not assessed yet: the severity decides, if args say how
        severity = ctx.values.get("severity")
        severity = str(getattr(severity, "value", severity) or "")
        if severity in statuses:
            key = severity
    if key not in statuses:
        raise TransformError(
            f"component_statuses: no status for {key!r}; add it to args "
            f"(keys: none, minor, major, critical, resolved)"
        )
    return {str(component): statuses[key] for component in value}


# --- the registry -------------------------------------------------------------------------


def _build() -> dict[str, Transform]:
    name_in, name_out = _key_object("name", "name_object")
    value_in, value_out = _key_object("value", "value_object")
    transforms = [
        Transform("identity", "the value unchanged", _identity, _identity),
        Transform(
            "person",
            "a person: remote user id <-> email address",
            _person_to_canonical,
            _person_to_remote,
        ),
        Transform(
            "servicenow_datetime",
            "ServiceNow 'YYYY-MM-DD HH:MM:SS' (UTC) <-> date and time",
            _sn_to_canonical,
            _sn_to_remote,
        ),
        Transform(
            "jira_datetime",
            "Jira '2024-01-31T13:45:00.000+0000' <-> date and time",
            _jira_to_canonical,
            _jira_to_remote,
        ),
        Transform(
            "iso_datetime",
            "ISO 8601 with Z or offset <-> date and time (written as '...T13:45:00.000Z')",
            _iso_to_canonical,
            _iso_to_remote,
        ),
        Transform("date", "'YYYY-MM-DD' <-> date", _date_to_canonical, _date_to_remote),
        Transform(
            "adf_text",
            "Atlassian Document Format (Jira Cloud rich text) <-> plain text",
            _adf_to_canonical,
            _adf_to_remote,
        ),
        Transform(
            "jira_wiki",
            "Jira wiki markup <-> Markdown-style text (**bold**, `code`, [text](url), - lists)",
            _wiki_to_canonical,
            _wiki_to_remote,
        ),
        Transform("name_object", "{'name': x} <-> x", name_in, name_out),
        Transform("value_object", "{'value': x} <-> x", value_in, value_out),
        Transform(
            "names_list",
            "[{'name': a}, {'name': b}] <-> list of names",
            _names_to_canonical,
            _names_to_remote,
        ),
        Transform(
            "csv_list", "'a,b' <-> list of values (trimmed)", _csv_to_canonical, _csv_to_remote
        ),
        Transform(
            "bool_string", "'true'/'false' <-> true/false", _bool_to_canonical, _bool_to_remote
        ),
        Transform(
            "single",
            "one remote value <-> a list of at most one (only the first is written)",
            _single_to_canonical,
            _single_to_remote,
        ),
        Transform(
            "component_statuses",
            "Statuspage component ids -> {id: status} by customer impact (args: impact -> status)",
            _components_to_canonical,
            _components_to_remote,
            False,
        ),
        Transform("lower", "lower-cases incoming text (sent unchanged)", _lower, _identity, False),
        Transform(
            "strip",
            "trims spaces around incoming text (sent unchanged)",
            _strip,
            _identity,
            False,
        ),
    ]
    return {transform.name: transform for transform in transforms}


TRANSFORMS: Final[Mapping[str, Transform]] = types.MappingProxyType(_build())
"""Every transform, by name."""


def get_transform(name: str) -> Transform:
    """The transform called ``name``; raises :class:`TransformError` listing the names."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise TransformError(
            f"unknown transform {name!r}; transforms: {', '.join(TRANSFORMS)}"
        ) from None
