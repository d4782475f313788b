"""ServiceNow encoded query (sysparm_query) parsing and evaluation.

Terms are ``<field><OPERATOR><value>`` joined by ``^`` (AND), ``^OR`` and ``^NQ`` (a new OR'd
query). Field names are lower case and may dot-walk through reference fields
(``caller_id.email=...``); operators are the upper-case words and symbols of the platform's
"Operators available for filters and queries" page. What a term cannot mean on a real instance
(an unknown field, an unknown operator, a bad date macro) is reported back as *invalid*: the
caller applies ``glide.invalid_query.returns_no_rows``. ``RLQUERY`` (related-list) and ``JOIN``
queries are evaluated; what the simulator cannot evaluate at all (``SUBQUERY``, condition-only
operators such as ``VALCHANGES``) raises :class:`QueryError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

Record = dict[str, Any]
Pred = Callable[[Record], bool]

# Longest first: a regex alternation takes the first alternative that matches.
OPERATORS = [
    "GT_OR_EQUALS_FIELD", "LT_OR_EQUALS_FIELD", "GT_FIELD", "LT_FIELD", "ISNOTEMPTY",
    "ISEMPTY", "EMPTYSTRING", "ANYTHING", "STARTSWITH", "ENDSWITH", "BETWEEN", "NOT LIKE",
    "NOT IN", "NSAMEAS", "SAMEAS", "NOTON", "DATEPART", "RELATIVEGT", "RELATIVELT",
    "RELATIVEGE", "RELATIVELE", "RELATIVEEE", "VALCHANGES", "CHANGESFROM", "CHANGESTO",
    "CHANGES", "MORETHAN", "LESSTHAN", "IN_HIERARCHY", "DYNAMIC", "LIKE", "IN", "ON", "!=",
    "<=", ">=", "!*", "=", "<", ">", "*", "%",
]  # fmt: skip
# Condition-builder operators that only mean something in a business rule's condition.
CONDITION_ONLY = {"VALCHANGES", "CHANGES", "CHANGESFROM", "CHANGESTO"}
# Real operators the simulator does not evaluate (refused rather than guessed).
NOT_SIMULATED = {"MORETHAN", "LESSTHAN", "IN_HIERARCHY", "DYNAMIC"}
_TERM = re.compile(
    r"(?P<field>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)"
    r"(?P<op>" + "|".join(re.escape(o) for o in OPERATORS) + r")(?P<value>.*)",
    re.DOTALL,
)
# Operators comparing two fields of the same record (SAMEAS/NSAMEAS compare for equality).
FIELD_OPS: dict[str, tuple[int, ...]] = {
    "SAMEAS": (0,),
    "NSAMEAS": (-1, 1),
    "GT_FIELD": (1,),
    "LT_FIELD": (-1,),
    "GT_OR_EQUALS_FIELD": (1, 0),
    "LT_OR_EQUALS_FIELD": (-1, 0),
}
_JS = re.compile(r"javascript:\s*gs\.(?P<fn>\w+)\((?P<args>[^)]*)\)\s*;?")
UNITS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
FMT = "%Y-%m-%d %H:%M:%S"


class QueryError(Exception):
    """A query the simulator refuses (HTTP 400), with the reason."""


class Schema(Protocol):
    def known(self, path: str) -> bool: ...

    def get(self, rec: Record, path: str) -> str: ...

    def is_date(self, path: str) -> bool: ...

    def rows(self, table: str) -> list[Record]: ...

    def on(self, table: str) -> Schema | None: ...


@dataclass
class Compiled:
    match: Pred
    order: list[tuple[str, bool]]
    invalid: list[str] = field(default_factory=list)


class _Invalid(Exception):
    pass


def _day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(t: datetime) -> datetime:
    return _day_start(t).replace(day=1)


def _gs(fn: str, args: list[str], now: datetime) -> datetime:
    """Evaluate the GlideSystem date macros the condition builder writes (in UTC)."""
    n = int(args[0]) if args and args[0].lstrip("-").isdigit() else 0
    today = _day_start(now)
    m = re.fullmatch(r"(days|hours|minutes)Ago(Start|End)?", fn)
    if m:
        unit = {"days": "day", "hours": "hour", "minutes": "minute"}[m.group(1)]
        t = now - timedelta(seconds=UNITS[unit] * n)
        if m.group(2) is None:
            return t
        grain = {"day": _day_start(t), "hour": t.replace(minute=0, second=0, microsecond=0)}.get(
            unit, t.replace(second=0, microsecond=0)
        )
        end = grain + timedelta(seconds=UNITS[unit] - 1)
        return grain if m.group(2) == "Start" else end
    m = re.fullmatch(
        r"(beginning|end)Of(Today|Yesterday|Tomorrow|ThisWeek|ThisMonth|ThisYear|LastWeek|"
        r"LastMonth|Last(\d+)(Days|Minutes|Hours)|LastHour|LastMinute)",
        fn,
    )
    if not m:
        raise _Invalid(f"unknown date function gs.{fn}")
    begin = m.group(1) == "beginning"
    what = m.group(2)
    if m.group(3):
        seconds = UNITS[m.group(4).lower().rstrip("s")] * int(m.group(3))
        return now - timedelta(seconds=seconds) if begin else now
    if what in ("LastHour", "LastMinute"):
        return now - timedelta(seconds=UNITS[what[4:].lower()]) if begin else now
    spans: dict[str, tuple[datetime, datetime]] = {
        "Today": (today, today + timedelta(days=1)),
        "Yesterday": (today - timedelta(days=1), today),
        "Tomorrow": (today + timedelta(days=1), today + timedelta(days=2)),
        "ThisWeek": (
            today - timedelta(days=today.weekday()),
            today + timedelta(days=7 - today.weekday()),
        ),
        "LastWeek": (
            today - timedelta(days=today.weekday() + 7),
            today - timedelta(days=today.weekday()),
        ),
        "ThisMonth": (_month_start(now), _month_start(_month_start(now) + timedelta(days=32))),
        "LastMonth": (_month_start(_month_start(now) - timedelta(days=1)), _month_start(now)),
        "ThisYear": (
            today.replace(month=1, day=1),
            today.replace(year=today.year + 1, month=1, day=1),
        ),
    }
    lo, hi = spans[what]
    return lo if begin else hi - timedelta(seconds=1)


def _value(v: str, now: datetime) -> str:
    """A literal, or a ``javascript:gs.*`` date macro evaluated to ``YYYY-MM-DD HH:MM:SS``."""
    v = v.strip() if v.strip().startswith("javascript:") else v
    if not v.startswith("javascript:"):
        return v
    m = _JS.fullmatch(v)
    if not m:
        raise _Invalid(f"unsupported script value {v!r}")
    args = [a.strip().strip("'\"") for a in m.group("args").split(",") if a.strip()]
    if m.group("fn") == "dateGenerate":
        if len(args) != 2:
            raise _Invalid("gs.dateGenerate takes a date and a time")
        t = {"start": "00:00:00", "end": "23:59:59"}.get(args[1], args[1])
        return f"{args[0]} {t}"
    return _gs(m.group("fn"), args, now).strftime(FMT)


def _parse_dt(s: str) -> datetime | None:
    for fmt in (FMT, "%Y-%m-%d"):
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _cmp(a: str, b: str) -> int:
    try:
        fa, fb = float(a), float(b)
        return (fa > fb) - (fa < fb)
    except ValueError:
        return (a > b) - (a < b)


_DATEPART = {
    "dayofweek": lambda t: t.isoweekday(),  # Monday = 1 ... Sunday = 7
    "month": lambda t: t.month,
    "year": lambda t: t.year,
    "hour": lambda t: t.hour,
    "dayofmonth": lambda t: t.day,
    "quarter": lambda t: (t.month - 1) // 3 + 1,
    "week": lambda t: t.isocalendar()[1],
}
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = "january february march april may june july august september october november december"
_MONTH_NAMES = _MONTHS.split()
_CMP = {"EE": (0,), "GE": (0, 1), "GT": (1,), "LE": (-1, 0), "LT": (-1,)}


def _datepart(raw: str) -> Callable[[datetime], bool]:
    m = re.search(r"gs\.datePart\('(\w+)',\s*'([\w ]+)',\s*'(EE|GE|GT|LE|LT)'\)", raw)
    if not m:
        raise _Invalid(f"bad DATEPART value {raw!r}")
    part, want, how = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if part not in _DATEPART:
        raise _Invalid(f"unknown date part {part!r}")
    if part == "dayofweek" and want in _DAYS:
        target = _DAYS.index(want) + 1
    elif part == "month" and want in _MONTH_NAMES:
        target = _MONTH_NAMES.index(want) + 1
    elif want.isdigit():
        target = int(want)
    else:
        raise _Invalid(f"bad DATEPART value {want!r}")
    get = _DATEPART[part]
    ok = _CMP[how]

    def test(t: datetime) -> bool:
        v = int(get(t))
        return ((v > target) - (v < target)) in ok

    return test


def _term(term: str, schema: Schema, now: datetime) -> Pred:
    m = _TERM.fullmatch(term)
    if not m:
        raise _Invalid(f"cannot parse {term!r}")
    path, op, raw = m.group("field"), m.group("op"), m.group("value")
    if op in CONDITION_ONLY:
        raise QueryError(f"{op} only applies to business-rule conditions, not to queries")
    if op in NOT_SIMULATED:
        raise QueryError(f"operator {op} is not supported by the simulator")
    if not schema.known(path):
        raise _Invalid(f"unknown field {path!r}")

    def get(r: Record) -> str:
        return schema.get(r, path)

    if op in ("ISEMPTY", "ISNOTEMPTY", "EMPTYSTRING", "ANYTHING"):
        if raw:
            raise _Invalid(f"{op} takes no value")
        if op == "ANYTHING":
            return lambda r: True
        empty = op != "ISNOTEMPTY"
        return lambda r: (get(r) == "") == empty
    if op in FIELD_OPS:
        other, _, grain = raw.partition("@")
        if not schema.known(other):
            raise _Invalid(f"unknown field {other!r}")
        n = 10 if grain == "day" else None

        def other_get(r: Record) -> str:
            return schema.get(r, other)

        if op in ("SAMEAS", "NSAMEAS"):
            same = op == "SAMEAS"
            return lambda r: (get(r)[:n] == other_get(r)[:n]) == same
        want = FIELD_OPS[op]
        return lambda r: get(r) != "" and other_get(r) != "" and _cmp(get(r), other_get(r)) in want
    if op in ("ON", "NOTON", "DATEPART") or op.startswith("RELATIVE"):
        if not schema.is_date(path):
            raise _Invalid(f"{op} needs a date field, {path!r} is not one")
        test = _date_test(op, raw, now)
        neg = op == "NOTON"

        def date_pred(r: Record) -> bool:
            t = _parse_dt(get(r))
            if t is None:
                return False
            return test(t) != neg

        return date_pred
    val = _value(raw, now)
    if op == "=":
        return lambda r: get(r) == val
    if op == "!=":
        return lambda r: get(r) != val
    if op in ("<", "<=", ">", ">="):
        want = {"<": (-1,), "<=": (-1, 0), ">": (1,), ">=": (1, 0)}[op]
        return lambda r: get(r) != "" and _cmp(get(r), val) in want
    if op in ("IN", "NOT IN"):
        items = set(val.split(","))
        neg = op == "NOT IN"
        return lambda r: (get(r) in items) != neg
    if op in ("LIKE", "NOT LIKE", "*", "!*"):
        neg = op in ("NOT LIKE", "!*")
        return lambda r: (val.lower() in get(r).lower()) != neg
    if op == "STARTSWITH":
        return lambda r: get(r).lower().startswith(val.lower())
    if op in ("ENDSWITH", "%"):
        return lambda r: get(r).lower().endswith(val.lower())
    # BETWEEN lo@hi (dates may be date macros on either side)
    lo_raw, sep, hi_raw = raw.partition("@")
    if not sep:
        raise _Invalid("BETWEEN needs two values separated by @")
    lo, hi = _value(lo_raw, now), _value(hi_raw, now)
    return lambda r: get(r) != "" and _cmp(get(r), lo) >= 0 and _cmp(get(r), hi) <= 0


def _date_test(op: str, raw: str, now: datetime) -> Callable[[datetime], bool]:
    if op in ("ON", "NOTON"):
        parts = raw.split("@")
        if len(parts) != 3:
            raise _Invalid(f"{op} needs label@start@end, got {raw!r}")
        lo, hi = _parse_dt(_value(parts[1], now)), _parse_dt(_value(parts[2], now))
        if lo is None or hi is None:
            raise _Invalid(f"bad {op} range {raw!r}")
        return lambda t: lo <= t <= hi
    if op == "DATEPART":
        return _datepart(raw)
    parts = raw.split("@")  # RELATIVEGT@hour@ago@1 (the value starts with '@')
    if len(parts) != 4 or parts[0] or parts[2] not in ("ago", "ahead"):
        raise _Invalid(f"bad {op} value {raw!r}")
    unit, direction, count = parts[1], parts[2], parts[3]
    secs = {**UNITS, "month": 30 * 86400, "quarter": 91 * 86400, "year": 365 * 86400}.get(unit)
    if secs is None or not count.isdigit():
        raise _Invalid(f"bad {op} value {raw!r}")
    delta = timedelta(seconds=secs * int(count))
    pivot = now - delta if direction == "ago" else now + delta
    ok = {"GT": (1,), "LT": (-1,), "GE": (1, 0), "LE": (-1, 0), "EE": (0,)}[op[-2:]]
    if op.endswith("EE"):  # "on" that relative unit: same minute/hour/day as the pivot
        grain = {"minute": 16, "hour": 13}.get(unit, 10)
        return lambda t: t.strftime(FMT)[:grain] == pivot.strftime(FMT)[:grain]
    return lambda t: ((t > pivot) - (t < pivot)) in ok


_JOIN = re.compile(
    r"JOIN(?P<table>[a-z0-9_]+)\.(?P<field>[a-z0-9_.]+)=(?P<jtable>[a-z0-9_]+)\."
    r"(?P<jfield>[a-z0-9_]+)(?:!(?P<sub>.*))?",
    re.DOTALL,
)
_RL_HEAD = re.compile(
    r"RLQUERY(?P<table>[a-z0-9_]+)\.(?P<field>[a-z0-9_]+),(?P<op>=|!=|>=|<=|>|<)(?P<n>\d+)"
    r"(?:,m2m)?"
)
_COUNT = {"=": (0,), "!=": (-1, 1), ">": (1,), "<": (-1,), ">=": (0, 1), "<=": (-1, 0)}


def _join(term: str, schema: Schema, now: datetime) -> Pred:
    """``JOIN<table>.<field>=<other>.<other_field>!<query>``: records whose ``field`` equals
    ``other_field`` of at least one ``other`` row matching ``query``."""
    m = _JOIN.fullmatch(term)
    if not m or not schema.known(m.group("field")):
        raise _Invalid(f"bad JOIN {term!r}")
    other = schema.on(m.group("jtable"))
    if other is None or not other.known(m.group("jfield")):
        raise _Invalid(f"bad JOIN table or field in {term!r}")
    sub = compile_query(m.group("sub") or "", other, now)
    if sub.invalid:
        raise _Invalid(f"bad JOIN query: {sub.invalid[0]}")
    field, jtable, jfield = m.group("field"), m.group("jtable"), m.group("jfield")

    def pred(r: Record) -> bool:
        keys = {other.get(j, jfield) for j in schema.rows(jtable) if sub.match(j)}
        return schema.get(r, field) in keys

    return pred


def _rlquery(head: str, body: str, schema: Schema, now: datetime) -> Pred:
    """``RLQUERY<table>.<field>,<op><n>[,m2m]^<query>^ENDRLQUERY``: records referenced by
    ``field`` of a number of ``table`` rows matching ``query`` that satisfies ``<op><n>``."""
    m = _RL_HEAD.fullmatch(head)
    if not m:
        raise _Invalid(f"bad RLQUERY {head!r}")
    other = schema.on(m.group("table"))
    if other is None or not other.known(m.group("field")):
        raise _Invalid(f"bad RLQUERY table or field in {head!r}")
    sub = compile_query(body, other, now)
    if sub.invalid:
        raise _Invalid(f"bad RLQUERY query: {sub.invalid[0]}")
    table, field, want, n = (
        m.group("table"),
        m.group("field"),
        _COUNT[m.group("op")],
        int(m.group("n")),
    )

    def pred(r: Record) -> bool:
        count = sum(
            1 for x in schema.rows(table) if x.get(field) == r.get("sys_id") and sub.match(x)
        )
        return ((count > n) - (count < n)) in want

    return pred


def _split_rlqueries(query: str) -> tuple[str, list[tuple[str, str]]]:
    """Take each RLQUERY…^ENDRLQUERY block out of ``query``, leaving a placeholder term."""
    blocks: list[tuple[str, str]] = []
    while (start := query.find("RLQUERY")) >= 0:
        end = query.find("^ENDRLQUERY", start)
        if end < 0:
            raise QueryError("RLQUERY without ^ENDRLQUERY")
        head, _, body = query[start:end].partition("^")
        blocks.append((head, body))
        query = f"{query[:start]}\x00{len(blocks) - 1}{query[end + len('^ENDRLQUERY') :]}"
    return query, blocks


def compile_query(query: str, schema: Schema, now: datetime | None = None) -> Compiled:
    """Compile an encoded query; invalid terms are left out and listed in ``invalid``."""
    now = now or datetime.now(UTC)
    if re.search(r"(^|\^)SUBQUERY", query):
        raise QueryError("SUBQUERY queries are not supported by the simulator")
    query, rl_blocks = _split_rlqueries(query)
    order: list[tuple[str, bool]] = []
    invalid: list[str] = []
    groups: list[list[list[Pred]]] = []  # ^NQ groups -> AND terms -> OR alternatives
    for nq in query.split("^NQ"):
        ands: list[list[Pred]] = []
        for i, part in enumerate(nq.split("^")):
            if not part.strip() or part == "EQ":
                continue
            if part.startswith("ORDERBYDESC"):
                order.append((part[11:], True))
                continue
            if part.startswith("ORDERBY"):
                order.append((part[7:], False))
                continue
            if part.startswith("GROUPBY"):
                continue  # grouping does not change which rows a list returns
            is_or = part.startswith("OR") and i > 0
            if is_or:
                part = part[2:]
            try:
                if part.startswith("\x00"):
                    head, body = rl_blocks[int(part[1:])]
                    pred = _rlquery(head, body, schema, now)
                elif part.startswith("JOIN"):
                    pred = _join(part, schema, now)
                else:
                    pred = _term(part, schema, now)
            except _Invalid as exc:
                invalid.append(str(exc))
                continue
            if is_or and ands:
                ands[-1].append(pred)
            else:
                ands.append([pred])
        groups.append(ands)

    def match(r: Record) -> bool:
        return any(all(any(p(r) for p in alts) for alts in ands) for ands in groups)

    return Compiled(match, [(f, d) for f, d in order if schema.known(f)], invalid)
