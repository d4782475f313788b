"""A JQL subset: tokenizer, parser and evaluator, with Jira's own error messages.

Grammar (keywords are case-insensitive; ``&&``/``&``, ``||``/``|`` and ``!`` are aliases)::

    query   := [or] [ORDER BY field [ASC|DESC] {, field [ASC|DESC]}]
    or      := and {OR and}
    and     := not {AND not}
    not     := NOT not | ( or ) | clause
    clause  := field op operand
    op      := = | != | ~ | !~ | < | <= | > | >= | IN | NOT IN | IS | IS NOT
    operand := value | "quoted value" | function(args) | ( operand {, operand} ) | EMPTY | NULL

Fields are resolved through a :class:`Schema` supplied by the simulator, which knows what
each field holds; this module knows the operators, list/EMPTY semantics, dates and sorting.
``WAS``/``CHANGED`` (history searches) are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Protocol

OPERATORS_TEXT = (
    "The valid operators are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', "
    "'IS' and 'IS NOT'."
)
KEYWORDS = {
    "and",
    "or",
    "not",
    "in",
    "is",
    "empty",
    "null",
    "order",
    "by",
    "asc",
    "desc",
    "was",
    "changed",
}
RESERVED = set("+;?*/%^$#@[]")
DATE_FORMATS_TEXT = (
    "Valid formats include: 'YYYY/MM/DD', 'YYYY-MM-DD', 'YYYY/MM/DD HH:MM', 'YYYY-MM-DD HH:MM', "
    "or a period format e.g. '-5d', '4w 2d'."
)

# Which operators each kind of field supports (Jira: "The operator 'x' is not supported...").
EQUALITY = {"=", "!=", "in", "not in", "is", "is not"}
ORDERED = EQUALITY | {"<", "<=", ">", ">="}
OPS_BY_KIND: dict[str, set[str]] = {
    "text": {"~", "!~", "is", "is not"},
    "constant": EQUALITY,
    "ordinal": ORDERED,
    "multi": EQUALITY,
    "key": {"=", "!=", "in", "not in", "<", "<=", ">", ">="},
    "date": ORDERED,
    "number": ORDERED,
    "property": ORDERED | {"~", "!~"},
}


class JqlError(Exception):
    """Invalid JQL; ``messages`` are what Jira puts in ``errorMessages``."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass
class Token:
    kind: str  # word | string | field | op | lparen | rparen | comma | eof
    text: str
    pos: int  # 1-based character position
    quoted: bool = False


_SPECIAL_FIELD = re.compile(
    r"issue\.property\[[^\]\s]+\](?:\.[A-Za-z0-9_.\-]+)?|cf\[\d+\]", re.IGNORECASE
)
_WORD_CHARS = re.compile(r"[^\s\"'(),=!<>~&|+;?*/%^$#@\[\]]+")
_BRACKET_SUFFIX = re.compile(r"\[[^\]\s]*\]")


def tokenize(jql: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(jql)
    while i < n:
        c = jql[i]
        pos = i + 1
        if c.isspace():
            i += 1
            continue
        if c in "\"'":
            j, buf = i + 1, []
            while j < n and jql[j] != c:
                if jql[j] == "\\" and j + 1 < n:
                    esc = jql[j + 1]
                    if (
                        esc == "u"
                        and j + 5 < n + 1
                        and re.fullmatch(r"[0-9a-fA-F]{4}", jql[j + 2 : j + 6])
                    ):
                        buf.append(chr(int(jql[j + 2 : j + 6], 16)))
                        j += 6
                        continue
                    buf.append({"n": "\n", "t": "\t", "r": "\r"}.get(esc, esc))
                    j += 2
                    continue
                buf.append(jql[j])
                j += 1
            if j >= n:
                raise JqlError(
                    [
                        f"Error in the JQL Query: The quoted string '{''.join(buf)}' has not been "
                        f"completed. (line 1, character {pos})"
                    ]
                )
            tokens.append(Token("string", "".join(buf), pos, quoted=True))
            i = j + 1
            continue
        if c == "(":
            tokens.append(Token("lparen", c, pos))
            i += 1
            continue
        if c == ")":
            tokens.append(Token("rparen", c, pos))
            i += 1
            continue
        if c == ",":
            tokens.append(Token("comma", c, pos))
            i += 1
            continue
        two = jql[i : i + 2]
        if two in ("!=", "<=", ">=", "!~"):
            tokens.append(Token("op", two, pos))
            i += 2
            continue
        if c in "=<>~":
            tokens.append(Token("op", c, pos))
            i += 1
            continue
        if two in ("&&", "||"):
            tokens.append(Token("word", "and" if two == "&&" else "or", pos))
            i += 2
            continue
        if c in "&|!":
            tokens.append(Token("word", {"&": "and", "|": "or", "!": "not"}[c], pos))
            i += 1
            continue
        m = _SPECIAL_FIELD.match(jql, i)
        if m:
            tokens.append(Token("field", m.group(0), pos))
            i = m.end()
            continue
        m = _WORD_CHARS.match(jql, i)
        if m:
            end = m.end()
            suffix = _BRACKET_SUFFIX.match(jql, end)
            if suffix:  # a custom field clause name like Severity[Dropdown]
                end = suffix.end()
            tokens.append(Token("word", jql[i:end], pos))
            i = end
            continue
        if c in RESERVED:
            raise JqlError(
                [
                    f"Error in the JQL Query: The character '{c}' is a reserved JQL character. "
                    f"You must enclose it in a string or use the escape '\\u{ord(c):04x}' instead. "
                    f"(line 1, character {pos})"
                ]
            )
        raise JqlError(
            [f"Error in the JQL Query: Unexpected character '{c}'. (line 1, character {pos})"]
        )
    tokens.append(Token("eof", "", n + 1))
    return tokens


# ---------------------------------------------------------------------------------------------
# Syntax tree


@dataclass
class Operand:
    kind: str  # value | list | function | empty
    text: str = ""  # the literal value or the function name
    quoted: bool = False
    items: list[Operand] = field(default_factory=list)
    args: list[str] = field(default_factory=list)

    def show(self) -> str:
        if self.kind == "list":
            return "(" + ", ".join(i.show() for i in self.items) + ")"
        if self.kind == "function":
            return f"{self.text}({', '.join(self.args)})"
        if self.kind == "empty":
            return "EMPTY"
        return f'"{self.text}"' if self.quoted else self.text


@dataclass
class Clause:
    field: str
    op: str  # lower case: =, !=, ~, !~, <, <=, >, >=, in, not in, is, is not
    operand: Operand


@dataclass
class BoolNode:
    op: str  # and | or
    children: list[Node]


@dataclass
class NotNode:
    child: Node


Node = Clause | BoolNode | NotNode


@dataclass
class SortKey:
    field: str
    desc: bool


@dataclass
class Query:
    where: Node | None
    order: list[SortKey]


class _Parser:
    def __init__(self, jql: str) -> None:
        self.tokens = tokenize(jql)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def is_kw(self, *words: str) -> bool:
        t = self.tok
        return t.kind == "word" and t.text.lower() in words

    @staticmethod
    def where(t: Token) -> str:
        return f"(line 1, character {t.pos})"

    def fail(self, expecting: str, hint: str = "") -> JqlError:
        t = self.tok
        if t.kind == "eof":
            return JqlError(
                [
                    f"Error in the JQL Query: Expecting {expecting} before the end of "
                    f"the query.{hint}"
                ]
            )
        shown = t.text
        return JqlError(
            [
                f"Error in the JQL Query: Expecting {expecting} but got '{shown}'."
                f"{hint} {self.where(t)}"
            ]
        )

    def parse(self) -> Query:
        where: Node | None = None
        if not self.is_kw("order") and self.tok.kind != "eof":
            where = self.parse_or()
        order: list[SortKey] = []
        if self.is_kw("order"):
            self.next()
            if not self.is_kw("by"):
                raise self.fail("'BY'")
            self.next()
            while True:
                t = self.tok
                if t.kind not in ("word", "string", "field") or (
                    t.kind == "word" and t.text.lower() in KEYWORDS
                ):
                    raise self.fail("a field name")
                self.next()
                desc = False
                if self.is_kw("asc", "desc"):
                    desc = self.next().text.lower() == "desc"
                order.append(SortKey(t.text, desc))
                if self.tok.kind == "comma":
                    self.next()
                    continue
                break
        if self.tok.kind != "eof":
            if where is not None and not order:
                raise self.fail("either 'OR' or 'AND'")
            raise self.fail("either ',', 'ASC' or 'DESC'")
        return Query(where, order)

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while self.is_kw("or"):
            self.next()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else BoolNode("or", children)

    def parse_and(self) -> Node:
        children = [self.parse_not()]
        while self.is_kw("and"):
            self.next()
            children.append(self.parse_not())
        return children[0] if len(children) == 1 else BoolNode("and", children)

    def parse_not(self) -> Node:
        if self.is_kw("not"):
            self.next()
            return NotNode(self.parse_not())
        if self.tok.kind == "lparen":
            self.next()
            node = self.parse_or()
            if self.tok.kind != "rparen":
                raise self.fail("')'")
            self.next()
            return node
        return self.parse_clause()

    def parse_clause(self) -> Clause:
        t = self.tok
        if t.kind not in ("word", "string", "field") or (
            t.kind == "word" and t.text.lower() in KEYWORDS
        ):
            raise self.fail("a field name")
        self.next()
        op = self.parse_op()
        operand = self.parse_operand(op)
        return Clause(t.text, op, operand)

    def parse_op(self) -> str:
        t = self.tok
        if t.kind == "op":
            self.next()
            return t.text
        if self.is_kw("in"):
            self.next()
            return "in"
        if self.is_kw("is"):
            self.next()
            if self.is_kw("not"):
                self.next()
                return "is not"
            return "is"
        if self.is_kw("not"):
            self.next()
            if self.is_kw("in"):
                self.next()
                return "not in"
            raise self.fail("'IN'")
        if self.is_kw("was", "changed"):
            raise JqlError(
                [
                    f"Error in the JQL Query: History searches ('{t.text.upper()}') are not "
                    f"supported by this Jira simulator. {self.where(t)}"
                ]
            )
        raise self.fail("operator", " " + OPERATORS_TEXT)

    def parse_operand(self, op: str) -> Operand:
        t = self.tok
        if t.kind == "lparen":
            self.next()
            items = [self.parse_single()]
            while self.tok.kind == "comma":
                self.next()
                items.append(self.parse_single())
            if self.tok.kind != "rparen":
                raise self.fail("')'")
            self.next()
            return Operand("list", items=items)
        return self.parse_single()

    def parse_single(self) -> Operand:
        t = self.tok
        if t.kind == "string":
            self.next()
            return Operand("value", t.text, quoted=True)
        if t.kind in ("word", "field"):
            low = t.text.lower()
            if low in ("empty", "null"):
                self.next()
                return Operand("empty", t.text)
            if low in KEYWORDS:
                raise self.fail(
                    "either a value, list or function",
                    f" You must surround '{t.text}' in quotation marks to use it as a value.",
                )
            self.next()
            if self.tok.kind == "lparen":
                self.next()
                args: list[str] = []
                while self.tok.kind not in ("rparen", "eof"):
                    if self.tok.kind == "comma":
                        self.next()
                        continue
                    args.append(self.next().text)
                if self.tok.kind != "rparen":
                    raise self.fail("')'")
                self.next()
                return Operand("function", t.text, args=args)
            return Operand("value", t.text)
        raise self.fail("either a value, list or function")


def parse(jql: str) -> Query:
    """Parse JQL; raises :class:`JqlError` with Jira's wording on syntax errors."""
    return _Parser(jql).parse()


# ---------------------------------------------------------------------------------------------
# Evaluation


EMPTY = object()  # a target standing for EMPTY inside IN lists


@dataclass
class FieldDef:
    """How the simulator exposes one JQL field.

    ``values(issue)`` returns the issue's comparable values ([] when empty);
    ``resolve(operand, clause_name)`` turns a literal or function into comparable targets (or
    raises JqlError with Jira's message); ``sort(issue)`` gives the ORDER BY key (None: empty).
    """

    name: str
    kind: str
    values: Callable[[Any], list[Any]]
    resolve: Callable[[Operand, str], list[Any]] | None = None
    sort: Callable[[Any], Any] | None = None


class Schema(Protocol):
    def field(self, name: str) -> FieldDef | None: ...


Predicate = Callable[[Any], bool]


def compile_query(
    query: Query, schema: Schema
) -> tuple[Predicate, list[tuple[Callable[[Any], Any], bool]]]:
    """Validate every clause (collecting all semantic errors, like Jira) and return the
    predicate and the sort keys ``(key_fn, descending)``."""
    errors: list[str] = []
    pred = _compile(query.where, schema, errors) if query.where is not None else _true
    order: list[tuple[Callable[[Any], Any], bool]] = []
    for key in query.order:
        fd = schema.field(key.field)
        if fd is None:
            errors.append(
                f"Field '{key.field}' does not exist or you do not have permission to view it."
            )
        elif fd.sort is None:
            errors.append(f"Not able to sort using field '{key.field}'.")
        else:
            order.append((fd.sort, key.desc))
    if errors:
        raise JqlError(list(dict.fromkeys(errors)))
    return pred, order


def _true(issue: Any) -> bool:
    return True


def _compile(node: Node, schema: Schema, errors: list[str]) -> Predicate:
    if isinstance(node, BoolNode):
        parts = [_compile(c, schema, errors) for c in node.children]
        if node.op == "and":
            return lambda issue: all(p(issue) for p in parts)
        return lambda issue: any(p(issue) for p in parts)
    if isinstance(node, NotNode):
        inner = _compile(node.child, schema, errors)
        return lambda issue: not inner(issue)
    return _compile_clause(node, schema, errors)


def _compile_clause(clause: Clause, schema: Schema, errors: list[str]) -> Predicate:
    fd = schema.field(clause.field)
    if fd is None:
        errors.append(
            f"Field '{clause.field}' does not exist or you do not have permission to view it."
        )
        return _true
    op, operand = clause.op, clause.operand
    if op not in OPS_BY_KIND.get(fd.kind, ORDERED):
        errors.append(f"The operator '{op}' is not supported by the '{clause.field}' field.")
        return _true
    if op in ("is", "is not"):
        if operand.kind != "empty":
            errors.append(
                f"The operator '{op}' only supports 'EMPTY' or 'NULL' as a value for field "
                f"'{clause.field}'."
            )
            return _true
        want_empty = op == "is"
        return lambda issue: (not fd.values(issue)) == want_empty
    # IN takes a list or a list function (membersOf() ...).
    if op in ("in", "not in") and operand.kind not in ("list", "function"):
        errors.append(
            f"Operator '{op}' does not support the non-list value '{operand.show()}' for "
            f"field '{clause.field}'."
        )
        return _true
    if op not in ("in", "not in") and operand.kind == "list":
        errors.append(
            f"Operator '{op}' does not support the list value '{operand.show()}' for field "
            f"'{clause.field}'."
        )
        return _true
    if operand.kind == "empty" and op not in ("=", "!=", "in", "not in"):
        errors.append(f"The operator '{op}' does not support searching for EMPTY values.")
        return _true
    targets = _targets(fd, operand, clause.field, errors)
    if targets is None:
        return _true
    return _matcher(fd, op, targets)


def _targets(fd: FieldDef, operand: Operand, name: str, errors: list[str]) -> list[Any] | None:
    items = operand.items if operand.kind == "list" else [operand]
    out: list[Any] = []
    failed = False
    for item in items:
        if item.kind == "empty":
            out.append(EMPTY)
            continue
        if fd.kind in ("text",) or fd.resolve is None:
            out.append(item.text)
            continue
        try:
            out.extend(fd.resolve(item, name))
        except JqlError as exc:
            errors.extend(exc.messages)
            failed = True
    return None if failed else out


def _matcher(fd: FieldDef, op: str, targets: list[Any]) -> Predicate:
    has_empty = any(t is EMPTY for t in targets)
    real = [t for t in targets if t is not EMPTY]

    if op in ("~", "!~"):
        words = [w for t in real for w in _words(str(t))]
        negate = op == "!~"

        def text_match(issue: Any) -> bool:
            texts = [str(v).lower() for v in fd.values(issue)]
            hit = bool(words) and any(all(_contains(t, w) for w in words) for t in texts)
            return not hit if negate else hit

        return text_match

    def pred(issue: Any) -> bool:
        values = fd.values(issue)
        if op in ("=", "in"):
            return (has_empty and not values) or any(_eq(v, t) for v in values for t in real)
        if op in ("!=", "not in"):
            if not values:
                return False
            return not any(_eq(v, t) for v in values for t in real)
        cmp = _CMP[op]
        return any(_comparable(v, t) and cmp(v, t) for v in values for t in real)

    return pred


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


def _comparable(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num):
        return not isinstance(a, bool) and not isinstance(b, bool)
    return type(a) is type(b)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s\"']+", text.lower()) if w]


def _contains(text: str, word: str) -> bool:
    if word.endswith("*"):
        return re.search(r"\b" + re.escape(word[:-1]), text) is not None
    return word in text


def run(
    issues: list[Any],
    pred: Predicate,
    order: list[tuple[Callable[[Any], Any], bool]],
    default: Callable[[Any], Any],
) -> list[Any]:
    """Filter and sort. ``default`` is the tie-breaker (ascending) applied before ORDER BY."""
    rows = sorted((i for i in issues if pred(i)), key=default)
    for key_fn, desc in reversed(order):
        rows.sort(key=_sort_wrapper(key_fn), reverse=desc)
    return rows


def _sort_wrapper(key_fn: Callable[[Any], Any]) -> Callable[[Any], tuple[bool, Any]]:
    def key(issue: Any) -> tuple[bool, Any]:
        v = key_fn(issue)
        return (v is None, v if v is not None else 0)

    return key


# ---------------------------------------------------------------------------------------------
# Date literals


_PERIOD = re.compile(r"^([+-])?\s*((?:\d+\s*[wdhm]\s*)+)$", re.IGNORECASE)
_PERIOD_PART = re.compile(r"(\d+)\s*([wdhm])", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:\s+(\d{1,2}):(\d{2}))?$")
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}


def parse_date_literal(text: str, tz: tzinfo, now_ms: int, field_name: str) -> int:
    """A JQL date literal in the user's zone -> epoch ms; Jira's error message if invalid."""
    value = text.strip()
    m = _DATE.match(value)
    if m:
        y, mo, d, h, mi = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), tzinfo=tz)
        except ValueError:
            pass
        else:
            return int(dt.timestamp() * 1000)
    m = _PERIOD.match(value)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _PERIOD_PART.findall(m.group(2)))
        return now_ms + sign * seconds * 1000
    raise JqlError(
        [f"Date value '{text}' for field '{field_name}' is invalid. {DATE_FORMATS_TEXT}"]
    )


DATE_FUNCTIONS = {
    "now",
    "startofday",
    "endofday",
    "startofweek",
    "endofweek",
    "startofmonth",
    "endofmonth",
    "startofyear",
    "endofyear",
}


def date_function(name: str, args: list[str], tz: tzinfo, now_ms: int) -> int:
    """``now()``, ``startOfDay([inc])``, ``endOfDay``, ``startOfWeek`` ... in the user's zone."""
    low = name.lower()
    now = datetime.fromtimestamp(now_ms / 1000, tz)
    if low == "now":
        return now_ms
    unit = low.removeprefix("start").removeprefix("end").removeprefix("of")
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    offset = timedelta(0)
    if args:
        m = _PERIOD.match(args[0].strip())
        if m:
            sign = -1 if m.group(1) == "-" else 1
            secs = sum(int(n) * _UNITS[u.lower()] for n, u in _PERIOD_PART.findall(m.group(2)))
            offset = timedelta(seconds=sign * secs)
    if unit == "week":
        start -= timedelta(days=(start.weekday() + 1) % 7)  # Jira weeks start on Sunday
        length = timedelta(days=7)
    elif unit == "month":
        start = start.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
        length = nxt - start
    elif unit == "year":
        start = start.replace(month=1, day=1)
        length = start.replace(year=start.year + 1) - start
    else:
        length = timedelta(days=1)
    point = start if low.startswith("start") else start + length - timedelta(milliseconds=1)
    return int((point + offset).timestamp() * 1000)
