"""A small, safe condition language for the ``when:`` clauses of mapping files.

Conditions are parsed, never executed: a hand-written tokenizer and recursive-descent parser
build a tiny tree that :meth:`Condition.evaluate` walks once. There is no ``eval``, no Python
``ast``, no attribute access, no indexing, no calls and no arithmetic.

Grammar (keywords are lower case; ``True``/``False``/``None`` are accepted too)::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand]
    operand    := field | string | number | "true" | "false" | "null" | list | "(" or ")"
    list       := "[" [literal ("," literal)* [","]] "]"

Example: ``severity in ['SEV1', 'SEV2'] and public and state != 'closed'``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["Condition", "ConditionError", "parse_condition"]

MAX_SOURCE: Final = 1000
MAX_DEPTH: Final = 32
MAX_LIST_ITEMS: Final = 100
MAX_NUMBER: Final = 10**15

_COMPARISONS: Final = ("==", "!=", "<=", ">=", "<", ">")
_KEYWORDS: Final = frozenset({"and", "or", "not", "in"})
_CONSTANTS: Final[Mapping[str, bool | None]] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}
_WHITESPACE: Final = frozenset(" \t\r\n")
_SYNTAX_HELP: Final = (
    "conditions use field names, 'quoted strings', numbers, true/false/null, [lists], "
    "( ), and/or/not, in/not in, == != < <= > >="
)
_HINTS: Final = {
    "*": "arithmetic is not allowed",
    "+": "arithmetic is not allowed",
    "/": "arithmetic is not allowed",
    "%": "arithmetic is not allowed",
    "-": "arithmetic is not allowed",
    "=": "use == to compare",
    "!": "use 'not' or !=",
    "&": "use 'and'",
    "|": "use 'or'",
    ".": "attribute access is not allowed",
    "{": "only [lists] are allowed",
}


class ConditionError(ValueError):
    """A condition that cannot be parsed or is not allowed.

    ``position`` is the 0-based character offset in ``source`` where the problem is.
    """

    def __init__(self, message: str, *, source: str, position: int) -> None:
        super().__init__(message)
        self.source = source
        self.position = position


# --- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "keyword", "const", "string", "number", "op", "end"
    text: str  # the source text (for messages)
    value: Any  # the literal value / keyword / operator
    pos: int


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


def _is_digit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"


def _is_name_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _is_name_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in "\"'":
            i = _read_string(src, i, tokens)
        elif _is_digit(ch) or (ch == "-" and _is_digit(src[i + 1 : i + 2])):
            i = _read_number(src, i, tokens)
        elif _is_name_start(ch):
            start = i
            while i < n and (_is_name_char(src[i]) or src[i] == "."):
                i += 1
            text = src[start:i]
            if text in _KEYWORDS:
                tokens.append(_Token("keyword", text, text, start))
            elif text in _CONSTANTS:
                tokens.append(_Token("const", text, _CONSTANTS[text], start))
            else:
                tokens.append(_Token("name", text, text, start))
        elif src.startswith(_COMPARISONS, i):
            op = next(op for op in _COMPARISONS if src.startswith(op, i))
            tokens.append(_Token("op", op, op, i))
            i += len(op)
        elif ch in "()[],":
            tokens.append(_Token("op", ch, ch, i))
            i += 1
        else:
            hint = _HINTS.get(ch, _SYNTAX_HELP)
            message = f"unexpected character {ch!r} at {i}; {hint}"
            raise ConditionError(message, source=src, position=i)
    tokens.append(_Token("end", "", None, n))
    return tokens


def _read_string(src: str, start: int, tokens: list[_Token]) -> int:
    quote = src[start]
    chars: list[str] = []
    i = start + 1
    while i < len(src):
        ch = src[i]
        if ch == quote:
            tokens.append(_Token("string", src[start : i + 1], "".join(chars), start))
            return i + 1
        if ch == "\\":
            nxt = src[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise ConditionError(
                    f"unknown escape '\\{nxt}' at {i}; allowed: \\\\ \\\" \\' \\n \\t",
                    source=src,
                    position=i,
                )
            chars.append(_ESCAPES[nxt])
            i += 2
            continue
        chars.append(ch)
        i += 1
    raise ConditionError(
        f"unterminated string starting at {start}; close it with {quote}",
        source=src,
        position=start,
    )


def _read_number(src: str, start: int, tokens: list[_Token]) -> int:
    i = start + 1 if src[start] == "-" else start
    n = len(src)
    while i < n and _is_digit(src[i]):
        i += 1
    is_float = False
    if i < n and src[i] == "." and _is_digit(src[i + 1 : i + 2]):
        is_float = True
        i += 1
        while i < n and _is_digit(src[i]):
            i += 1
    if i < n and (_is_name_char(src[i]) or src[i] == "."):
        raise ConditionError(
            f"invalid number {src[start : i + 1]!r} at {start}; numbers are like 42, -3 or 2.5 "
            "(no exponents, no attribute access)",
            source=src,
            position=start,
        )
    text = src[start:i]
    digits = text.lstrip("-").split(".")[0].lstrip("0")
    if len(digits) > 16:
        value: float = float("inf")
    else:
        value = float(text) if is_float else int(text)
    if abs(value) > MAX_NUMBER:
        raise ConditionError(
            f"number {text[:20]}{'...' if len(text) > 20 else ''} at {start} is too large "
            f"(at most {MAX_NUMBER:.0e} in magnitude)",
            source=src,
            position=start,
        )
    tokens.append(_Token("number", text, value, start))
    return i


# --- the tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any
    pos: int = 0
    item_pos: tuple[int, ...] = ()  # for lists: where each item is


@dataclass(frozen=True, slots=True)
class _Name:
    name: str


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _BoolOp:
    op: str  # "and" | "or"
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str  # one of _COMPARISONS, "in", "not in"
    left: _Node
    right: _Node


_Node = _Literal | _Name | _Not | _BoolOp | _Compare


# --- the parser ---------------------------------------------------------------------------


class _Parser:
    def __init__(self, src: str, tokens: list[_Token], fields: Mapping[str, Any]) -> None:
        self.src = src
        self.tokens = tokens
        self.fields = fields
        self.i = 0
        self.depth = 0
        self.names: set[str] = set()

    def error(self, message: str, pos: int) -> ConditionError:
        return ConditionError(message, source=self.src, position=pos)

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.tok
        return token.kind == kind and (value is None or token.value == value)

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"condition nested too deeply at {pos} (at most {MAX_DEPTH})", pos)

    def parse(self) -> _Node:
        if self.at("end"):
            raise self.error(f"empty condition; {_SYNTAX_HELP}", 0)
        node = self.parse_or()
        if not self.at("end"):
            token = self.tok
            if token.kind == "op" and token.value in _COMPARISONS:
                hint = "chained comparisons are not allowed; combine them with 'and'"
            elif token.kind == "op" and token.value == "[":
                hint = "indexing is not allowed"
            elif token.kind == "op" and token.value == "(":
                hint = "function calls are not allowed"
            elif token.kind == "name" and token.text == "is":
                hint = "use == or != instead of 'is'"
            else:
                hint = "expected 'and', 'or' or the end"
            raise self.error(f"unexpected {_describe(token)} at {token.pos}; {hint}", token.pos)
        return node

    def parse_or(self) -> _Node:
        operands = [self.parse_and()]
        while self.at("keyword", "or"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else _BoolOp("or", tuple(operands))

    def parse_and(self) -> _Node:
        operands = [self.parse_not()]
        while self.at("keyword", "and"):
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else _BoolOp("and", tuple(operands))

    def parse_not(self) -> _Node:
        if self.at("keyword", "not"):
            token = self.advance()
            self.enter(token.pos)
            node = _Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_comparison()

    def parse_comparison(self) -> _Node:
        left = self.parse_operand()
        token = self.tok
        if token.kind == "op" and token.value in _COMPARISONS:
            op = token.value
        elif token.kind == "keyword" and token.value == "in":
            op = "in"
        elif (
            token.kind == "keyword"
            and token.value == "not"
            and self.tokens[self.i + 1].kind == "keyword"
            and self.tokens[self.i + 1].value == "in"
        ):
            self.advance()
            op = "not in"
        else:
            return left
        self.advance()
        right = self.parse_operand(after=op)
        self.check_values(op, left, right)
        return _Compare(op, left, right)

    def parse_operand(self, after: str | None = None) -> _Node:
        token = self.tok
        if token.kind in ("string", "number", "const"):
            self.advance()
            return _Literal(token.value, token.pos)
        if token.kind == "name":
            self.advance()
            return self.field(token)
        if token.kind == "op" and token.value == "(":
            self.advance()
            self.enter(token.pos)
            node = self.parse_or()
            self.depth -= 1
            if not self.at("op", ")"):
                raise self.error(
                    f"expected ')' at {self.tok.pos} to close '(' at {token.pos}, "
                    f"found {_describe(self.tok)}",
                    self.tok.pos,
                )
            self.advance()
            return node
        if token.kind == "op" and token.value == "[":
            return self.parse_list()
        where = f"after '{after}'" if after else "here"
        if self.i > 0 and after is None:
            where = f"after {_describe(self.tokens[self.i - 1])}"
        if token.kind == "keyword":
            found = f"; found keyword {token.text!r}"
        elif token.kind == "end":
            found = ""
        else:
            found = f"; found {_describe(token)}"
        raise self.error(
            f"expected a value {where} at {token.pos}{found} "
            "(a field, a 'string', a number, true/false/null, a [list] or '(')",
            token.pos,
        )

    def parse_list(self) -> _Node:
        start = self.advance()
        self.enter(start.pos)
        items: list[Any] = []
        positions: list[int] = []
        while not self.at("op", "]"):
            token = self.tok
            if token.kind not in ("string", "number", "const"):
                raise self.error(
                    f"expected a literal or ']' at {token.pos} in the list opened at "
                    f"{start.pos}, found {_describe(token)} (lists hold strings, numbers, "
                    "true/false/null)",
                    token.pos,
                )
            self.advance()
            items.append(token.value)
            positions.append(token.pos)
            if len(items) > MAX_LIST_ITEMS:
                raise self.error(
                    f"list opened at {start.pos} has more than {MAX_LIST_ITEMS} items",
                    token.pos,
                )
            if self.at("op", ","):
                self.advance()
            elif not self.at("op", "]"):
                raise self.error(
                    f"expected ',' or ']' at {self.tok.pos} in the list opened at {start.pos}, "
                    f"found {_describe(self.tok)}",
                    self.tok.pos,
                )
        self.advance()
        self.depth -= 1
        return _Literal(tuple(items), start.pos, tuple(positions))

    def field(self, token: _Token) -> _Name:
        name = token.text
        if name not in self.fields:
            allowed = ", ".join(self.fields) or "(none)"
            namespace = name.split(".")[0] + "."
            if "." in name and not any(f.startswith(namespace) for f in self.fields):
                hint = " (attribute access is not allowed)"
            else:
                guess = difflib.get_close_matches(name, list(self.fields), n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise self.error(
                f"unknown field {name!r} at {token.pos}{hint}; fields: {allowed}", token.pos
            )
        self.names.add(name)
        return _Name(name)

    def check_values(self, op: str, left: _Node, right: _Node) -> None:
        """Refuse string literals that a field with a fixed set of values can never have."""
        pairs: list[tuple[_Node, _Node]] = [(left, right)]
        if op not in ("in", "not in"):
            pairs.append((right, left))
        for name_node, literal in pairs:
            if not isinstance(name_node, _Name) or not isinstance(literal, _Literal):
                continue
            allowed = self.fields.get(name_node.name)
            if not allowed:
                continue
            if isinstance(literal.value, tuple):
                candidates = list(zip(literal.value, literal.item_pos, strict=True))
            else:
                candidates = [(literal.value, literal.pos)]
            for value, at in candidates:
                if isinstance(value, str) and value not in allowed:
                    raise self.error(
                        f"{value!r} is not a value of {name_node.name} ({', '.join(allowed)}) "
                        f"at {at}",
                        at,
                    )


# --- evaluation ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Enums become their value, lists tuples; everything else is left alone."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return tuple(value)
    return value


def _as_datetime(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _align(a: Any, b: Any) -> tuple[Any, Any]:
    """Make ``true`` == 'true' and ISO strings comparable with datetimes."""
    if isinstance(a, bool) and isinstance(b, str) and b in ("true", "false"):
        return a, b == "true"
    if isinstance(b, bool) and isinstance(a, str) and a in ("true", "false"):
        return a == "true", b
    if isinstance(a, dt.datetime) and isinstance(b, str):
        parsed = _as_datetime(b)
        if parsed is not None:
            return (a if a.tzinfo else a.replace(tzinfo=dt.UTC)), parsed
    if isinstance(b, dt.datetime) and isinstance(a, str):
        parsed = _as_datetime(a)
        if parsed is not None:
            return parsed, (b if b.tzinfo else b.replace(tzinfo=dt.UTC))
    return a, b


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, tuple):
        return "tuple"
    return type(value).__name__


def _equal(a: Any, b: Any) -> bool:
    a, b = _align(_plain(a), _plain(b))
    if _kind(a) != _kind(b):
        return False
    try:
        return bool(a == b)
    except TypeError:
        return False


def _order(op: str, a: Any, b: Any) -> bool:
    a, b = _align(_plain(a), _plain(b))
    kind = _kind(a)
    if kind != _kind(b) or kind not in ("number", "str", "datetime", "date"):
        return False
    try:
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:  # e.g. naive vs aware datetimes
        return False


def _contains(item: Any, container: Any) -> bool:
    item, container = _plain(item), _plain(container)
    if isinstance(container, tuple | frozenset | set):
        return any(_equal(item, member) for member in container)
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    return False


def _evaluate(node: _Node, values: Mapping[str, Any]) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Name):
        return values.get(node.name)
    if isinstance(node, _Not):
        return not _truthy(_evaluate(node.operand, values))
    if isinstance(node, _BoolOp):
        if node.op == "and":
            return all(_truthy(_evaluate(operand, values)) for operand in node.operands)
        return any(_truthy(_evaluate(operand, values)) for operand in node.operands)
    left = _evaluate(node.left, values)
    right = _evaluate(node.right, values)
    if node.op == "==":
        return _equal(left, right)
    if node.op == "!=":
        return not _equal(left, right)
    if node.op == "in":
        return _contains(left, right)
    if node.op == "not in":
        return not _contains(left, right)
    return _order(node.op, left, right)


def _truthy(value: Any) -> bool:
    value = _plain(value)
    if isinstance(value, str | tuple | int | float | bool) or value is None:
        return bool(value)
    return True  # datetimes, dates and other objects are present, hence true


# --- the public API -----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A parsed condition. ``names`` are the fields it reads."""

    source: str
    names: frozenset[str]
    _tree: _Node = field(repr=False, compare=False)

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """True when the condition holds for ``values`` (field name -> value; missing: None).

        Comparisons between values of different types are false rather than errors.
        """
        return _truthy(_evaluate(self._tree, values))

    def __str__(self) -> str:
        return self.source


def parse_condition(text: str, *, fields: Mapping[str, tuple[str, ...] | None]) -> Condition:
    """Parse ``text``; ``fields`` maps the allowed names to their allowed values (or None).

    Raises :class:`ConditionError` with the position and what is allowed.
    """
    if not isinstance(text, str):
        raise ConditionError(
            f"a condition must be a string, got {type(text).__name__}", source="", position=0
        )
    if len(text) > MAX_SOURCE:
        raise ConditionError(
            f"condition is too long at {MAX_SOURCE} ({len(text)} characters, at most {MAX_SOURCE})",
            source=text,
            position=MAX_SOURCE,
        )
    parser = _Parser(text, _tokenize(text), fields)
    tree = parser.parse()
    return Condition(source=text, names=frozenset(parser.names), _tree=tree)
