"""ServiceNow encoded query (sysparm_query) parsing and evaluation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
Pred = Callable[[Record], bool]

OPS = [
    "NOT IN", "NOT LIKE", "ISNOTEMPTY", "ISEMPTY", "STARTSWITH", "ENDSWITH", "BETWEEN",
    "LIKE", "IN", "!=", "<=", ">=", "=", "<", ">",
]  # fmt: skip
_DATE_JS = re.compile(r"javascript:gs\.dateGenerate\('([^']*)','([^']*)'\)")


def _value(v: str) -> str:
    m = _DATE_JS.fullmatch(v.strip())
    return f"{m.group(1)} {m.group(2)}" if m else v


def _cmp(a: str, b: str) -> int:
    try:
        fa, fb = float(a), float(b)
        return (fa > fb) - (fa < fb)
    except ValueError:
        return (a > b) - (a < b)


def _term(term: str, fields: set[str]) -> Pred | None:
    for op in OPS:
        if op in ("ISEMPTY", "ISNOTEMPTY") and term.endswith(op):
            field = term[: -len(op)]
            if field not in fields:
                return None
            empty = op == "ISEMPTY"

            def is_empty(r: Record, f: str = field, e: bool = empty) -> bool:
                return (str(r.get(f, "")) == "") == e

            return is_empty
        idx = term.find(op)
        if idx <= 0 or op in ("ISEMPTY", "ISNOTEMPTY"):
            continue
        field, raw = term[:idx], term[idx + len(op) :]
        if not re.fullmatch(r"[A-Za-z0-9_.]+", field):
            continue
        if field not in fields:
            return None  # unknown fields are ignored, like the real API
        val = _value(raw)
        return _make(field, op, val)
    return None


def _make(field: str, op: str, val: str) -> Pred:
    def get(r: Record) -> str:
        return str(r.get(field, ""))

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
    if op in ("LIKE", "NOT LIKE"):
        neg = op == "NOT LIKE"
        return lambda r: (val.lower() in get(r).lower()) != neg
    if op == "STARTSWITH":
        return lambda r: get(r).lower().startswith(val.lower())
    if op == "ENDSWITH":
        return lambda r: get(r).lower().endswith(val.lower())
    lo, _, hi = val.partition("@")
    lo, hi = _value(lo), _value(hi)
    return lambda r: get(r) != "" and _cmp(get(r), lo) >= 0 and _cmp(get(r), hi) <= 0


def compile_query(query: str, fields: set[str]) -> tuple[Pred, list[tuple[str, bool]]]:
    """Return (predicate, order-by list of (field, descending))."""
    order: list[tuple[str, bool]] = []
    groups: list[list[list[Pred]]] = []  # ^NQ groups -> AND terms -> OR alternatives
    for nq in query.split("^NQ"):
        ands: list[list[Pred]] = []
        for i, part in enumerate(nq.split("^")):
            part = part.strip()
            if not part or part == "EQ":
                continue
            is_or = part.startswith("OR") and i > 0 and not part.startswith("ORDERBY")
            if part.startswith("ORDERBYDESC"):
                order.append((part[11:], True))
                continue
            if part.startswith("ORDERBY"):
                order.append((part[7:], False))
                continue
            if is_or:
                part = part[2:]
            pred = _term(part, fields)
            if pred is None:
                continue
            if is_or and ands:
                ands[-1].append(pred)
            else:
                ands.append([pred])
        groups.append(ands)

    def match(r: Record) -> bool:
        return any(all(any(p(r) for p in alts) for alts in ands) for ands in groups)

    return match, [(f, d) for f, d in order if f in fields]
