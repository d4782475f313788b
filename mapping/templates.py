"""Sandboxed text templates for public messages and descriptions.

Admins write Jinja templates such as ``{{ title }} is {{ state|upper }} since
{{ started_at|datetime('%H:%M %Z', tz='Europe/Paris') }}``. Templates see only the canonical
fields they are given, as plain data, and can neither run code nor reach anything else:

- the environment is :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with no globals,
  a whitelist of filters and tests, and :class:`jinja2.StrictUndefined`;
- calls, macros, blocks, includes/imports, ``{% set %}``/``{% filter %}`` blocks, ``self``
  and attributes starting with ``_`` are refused when the template is compiled, as are
  unknown variables, filters and tests;
- attribute access only looks up keys of mappings (``resolution.code``) and a few ``loop``
  attributes; indexing works on mappings, lists, tuples and strings only;
- ``+ - * / // % **``, ``~`` and every conversion to text refuse results larger than
  :data:`MAX_VALUE` characters/items or :data:`MAX_INT_BITS` bits, and exponents above
  :data:`MAX_EXPONENT`; ``%`` does not format strings; chained ``**`` is refused;
- loops share a budget of :data:`MAX_ITERATIONS` iterations and a render has
  :data:`MAX_RENDER_SECONDS`; the output is capped at :data:`MAX_OUTPUT` characters
  (Statuspage's body limit).

Block tags on a line of their own leave no blank line (``trim_blocks``, ``lstrip_blocks``), and
``None`` renders as an empty string. Every failure, at compile or render time, is a
:class:`TemplateError` naming the line.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import functools
import re
import time
import types
import zoneinfo
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import jinja2
from jinja2 import filters as jinja_filters
from jinja2 import meta, nodes
from jinja2 import tests as jinja_tests
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

__all__ = [
    "FILTER_NAMES",
    "MAX_OUTPUT",
    "MAX_SOURCE",
    "Template",
    "TemplateError",
    "compile_template",
]

MAX_SOURCE: Final = 10_000
MAX_OUTPUT: Final = 25_000
MAX_VALUE: Final = 100_000  # characters / items of any intermediate string or list
MAX_INT_BITS: Final = 4096
MAX_EXPONENT: Final = 100
MAX_ITERATIONS: Final = 10_000  # loop iterations per render, all loops together
MAX_RENDER_SECONDS: Final = 2.0
MAX_DATA_DEPTH: Final = 16

_LOOP_GUARD: Final = "itsm:loop"  # internal filters: the lexer cannot produce these names
_CONCAT: Final = "itsm:concat"
_LOOP_ATTRIBUTES: Final = frozenset(
    {
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
    }
)
_FORBIDDEN: Final[tuple[tuple[type[nodes.Node], str], ...]] = (
    (nodes.Call, "function and method calls are not allowed"),
    (nodes.Macro, "macros are not allowed"),
    (nodes.CallBlock, "call blocks are not allowed"),
    (nodes.Extends, "templates cannot extend other templates"),
    (nodes.Include, "templates cannot include other templates"),
    (nodes.Import, "templates cannot import other templates"),
    (nodes.FromImport, "templates cannot import other templates"),
    (nodes.Block, "blocks are not allowed"),
    (nodes.AssignBlock, "{% set %}...{% endset %} blocks are not allowed; use {% set x = ... %}"),
    (nodes.FilterBlock, "{% filter %} blocks are not allowed; apply the filter to a value"),
    (nodes.NSRef, "namespaces are not allowed"),
    (nodes.ExprStmt, "expression statements are not allowed"),
)
_STRFTIME_DIRECTIVES: Final = frozenset("aAbBdHIjmMpSyYzZ%")
_TZ_NAME: Final = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; ``line`` is where (if known)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"template line {line}: {message}" if line else message)
        self.line = line
        self.reason = message


class _Refused(SecurityError):
    """Raised inside a render when a limit is hit."""


# --- per-render budget --------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float
    iterations: int = 0

    def tick(self, count: int = 0) -> None:
        self.iterations += count
        if self.iterations > MAX_ITERATIONS:
            raise _Refused(f"loops ran more than {MAX_ITERATIONS} iterations in total")
        if time.monotonic() > self.deadline:
            raise _Refused(f"rendering took longer than {MAX_RENDER_SECONDS} seconds")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "itsm_sync_template_budget", default=None
)


def _tick(count: int = 0) -> None:
    budget = _BUDGET.get()
    if budget is None:
        raise _Refused("templates can only be evaluated while rendering")
    budget.tick(count)


def _check_size(value: Any, what: str = "value") -> Any:
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_VALUE:
        raise _Refused(f"{what} would be longer than {MAX_VALUE}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _Refused(f"{what} would be a number larger than {MAX_INT_BITS} bits")
    return value


class _Guarded:
    """A loop's iterable: counts every iteration against the render's budget."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            _tick(1)
            yield item


def _loop_guard(value: Any) -> _Guarded:
    _tick()
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, LoopContext):
        raise _Refused("cannot loop over a loop")
    if isinstance(value, Mapping):
        items = list(value.keys())
    elif isinstance(value, str | list | tuple):
        items = list(value)
    elif isinstance(value, _Guarded):
        items = list(value._items)
    else:
        raise _Refused(f"cannot loop over {type(value).__name__}")
    return _Guarded(_check_size(items, "the loop"))


def _concat(parts: list[Any]) -> str:
    """``a ~ b ~ c``: joins the parts as text, refusing results over :data:`MAX_VALUE`."""
    _tick()
    texts: list[str] = []
    size = 0
    for part in parts:
        text = _text(part, MAX_VALUE - size)
        size += len(text)
        texts.append(text)
    return "".join(texts)


# --- filters ------------------------------------------------------------------------------

_CONTAINERS: Final = (list, tuple, dict, set, frozenset)


def _text(value: Any, limit: int = MAX_VALUE) -> str:
    """``str(value)``, refusing (before converting) anything longer than ``limit``."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        text = value
    else:
        if isinstance(value, _CONTAINERS):
            _estimate(value, limit)
        text = str(value)
    if len(text) > limit:
        raise _Refused(f"the text would be longer than {limit} characters")
    return text


def _string(value: Any) -> str:
    return _text(value)


def _estimate(value: Any, limit: int) -> None:
    """Refuse containers whose text would clearly exceed ``limit``; O(limit) at worst."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            for key, inner in item.items():
                stack.append(key)
                stack.append(inner)
        elif isinstance(item, _CONTAINERS):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, int | float):
            total += 1 if isinstance(item, bool) else len(str(item))
        else:
            total += 16
        if total > limit:
            raise _Refused(f"the text would be longer than {limit} characters")


def _text_filter(function: Callable[[str], Any]) -> Callable[..., Any]:
    """A jinja text filter that first converts its value with :func:`_text`."""

    @functools.wraps(function)
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
        return function(_text(value), *args, **kwargs)

    return wrapper


def _item(value: Any, attribute: str | int | None) -> Any:
    if attribute is None:
        return value
    for part in str(attribute).split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            raise _Refused(f"item has no key {part!r}")
    return value


def _join(value: Any, d: str = "", attribute: str | int | None = None) -> str:
    _tick()
    sep = _text(d)
    items: list[str] = []
    size = 0
    for item in _sequence(value):
        size += len(sep) if items else 0
        if size > MAX_VALUE:
            raise _Refused(f"join would produce more than {MAX_VALUE} characters")
        text = _text(_item(item, attribute), MAX_VALUE - size)
        size += len(text)
        items.append(text)
    return sep.join(items)


def _sequence(value: Any) -> list[Any]:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Mapping):
        return list(value.keys())
    if isinstance(value, str | list | tuple | _Guarded):
        return list(value)
    raise _Refused(f"expected a list, got {type(value).__name__}")


def _replace(s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _tick()
    s, old, new = _text(s), _text(old), _text(new)
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    size = len(s) + hits * (len(new) - len(old))
    if size > MAX_VALUE:
        raise _Refused(f"replace would produce {size} characters (at most {MAX_VALUE})")
    return s.replace(old, new, -1 if count is None else count)


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    if not isinstance(precision, int) or abs(precision) > 20:
        raise _Refused("round precision must be an integer between -20 and 20")
    if method not in ("common", "ceil", "floor"):
        raise _Refused("round method must be 'common', 'ceil' or 'floor'")
    result: float = jinja_filters.do_round(value, precision, method)  # type: ignore[arg-type]
    return result


def _int(value: Any, default: int = 0, base: int = 10) -> int:
    if isinstance(value, str) and len(value) > 1000:
        return default
    return jinja_filters.do_int(value, default, base)


def _truncate(
    s: Any, length: int = 255, killwords: bool = False, end: str = "...", leeway: int | None = None
) -> str:
    return jinja_filters.do_truncate(_ENV, _text(s), length, killwords, end, leeway)


def _unique(
    value: Any, case_sensitive: bool = False, attribute: str | int | None = None
) -> list[Any]:
    return list(jinja_filters.sync_do_unique(_ENV, _sequence(value), case_sensitive, attribute))


def _sort(
    value: Any, reverse: bool = False, case_sensitive: bool = False, attribute: Any = None
) -> list[Any]:
    _tick()
    return jinja_filters.do_sort(_ENV, _sequence(value), reverse, case_sensitive, attribute)


def _list(value: Any) -> list[Any]:
    return _sequence(value)


def _first(value: Any) -> Any:
    items = _sequence(value)
    return items[0] if items else _ENV.undefined("the list is empty")


def _last(value: Any) -> Any:
    items = _sequence(value)
    return items[-1] if items else _ENV.undefined("the list is empty")


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> dt.tzinfo:
    if name == "UTC":
        return dt.UTC
    if not _TZ_NAME.fullmatch(name) or name not in _time_zones():
        raise _Refused(f"unknown time zone {name!r} (use an IANA name like 'Europe/Paris')")
    return zoneinfo.ZoneInfo(name)


def _datetime(value: Any, format: str = "%Y-%m-%d %H:%M %Z", tz: str = "UTC") -> str:
    """Format a datetime (or ISO string) in ``tz`` with whitelisted strftime directives."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if value is None or value == "":
        return ""
    if not isinstance(format, str) or len(format) > 200:
        raise _Refused("datetime format must be a string of at most 200 characters")
    for match in re.finditer(r"%(.?)", format):
        if match[1] not in _STRFTIME_DIRECTIVES:
            allowed = " ".join(f"%{d}" for d in sorted(_STRFTIME_DIRECTIVES))
            raise _Refused(f"datetime format directive %{match[1]} is not allowed; use {allowed}")
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Refused(f"{value[:40]!r} is not an ISO 8601 datetime") from None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(_zone(str(tz))).strftime(format)
    if isinstance(value, dt.date):
        return value.strftime(format)
    raise _Refused(f"datetime filter expects a datetime, got {type(value).__name__}")


_FILTERS: Final[Mapping[str, Callable[..., Any]]] = types.MappingProxyType(
    {
        "default": jinja_filters.do_default,
        "d": jinja_filters.do_default,
        "upper": _text_filter(jinja_filters.do_upper),
        "lower": _text_filter(jinja_filters.do_lower),
        "title": _text_filter(jinja_filters.do_title),
        "capitalize": _text_filter(jinja_filters.do_capitalize),
        "trim": _text_filter(jinja_filters.do_trim),
        "join": _join,
        "length": len,
        "count": len,
        "first": _first,
        "last": _last,
        "truncate": _truncate,
        "sort": _sort,
        "unique": _unique,
        "replace": _replace,
        "wordcount": _text_filter(jinja_filters.do_wordcount),
        "string": _string,
        "int": _int,
        "float": jinja_filters.do_float,
        "abs": abs,
        "round": _round,
        "list": _list,
        "datetime": _datetime,
    }
)
FILTER_NAMES: Final = tuple(sorted(_FILTERS))
"""The filters a template may use."""

_TESTS: Final[Mapping[str, Callable[..., Any]]] = types.MappingProxyType(
    {
        name: cast(Callable[..., Any], jinja_tests.TESTS[name])
        for name in (
            "defined",
            "undefined",
            "none",
            "boolean",
            "false",
            "true",
            "integer",
            "float",
            "number",
            "string",
            "sequence",
            "mapping",
            "odd",
            "even",
            "divisibleby",
            "in",
            "eq",
            "equalto",
            "==",
            "ne",
            "!=",
            "lt",
            "<",
            "le",
            "<=",
            "gt",
            ">",
            "ge",
            ">=",
        )
    }
)


# --- the environment ----------------------------------------------------------------------


@jinja2.pass_context
def _finalize(context: Any, value: Any) -> Any:
    _tick()
    return "" if value is None else _text(value)


class _Environment(ImmutableSandboxedEnvironment):
    """Attribute access = mapping lookup; operators are bounded."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined):
            return obj._fail_with_undefined_error()
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, LoopContext) and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        raise _Refused(
            f"{type(obj).__name__} has no field {attribute!r} "
            "(only mappings have fields; attribute access is not allowed)"
        )

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Undefined):
            return obj._fail_with_undefined_error()
        if isinstance(obj, Mapping):
            if isinstance(argument, str | int) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=str(argument))
        if isinstance(obj, str | list | tuple) and (
            (isinstance(argument, int) and not isinstance(argument, bool))
            or isinstance(argument, slice)
        ):
            try:
                return obj[argument]
            except (IndexError, TypeError, ValueError):
                return self.undefined(obj=obj, name=str(argument))
        raise _Refused(f"cannot index {type(obj).__name__} with {type(argument).__name__}")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if isinstance(left, Undefined):
            left._fail_with_undefined_error()
        if isinstance(right, Undefined):
            right._fail_with_undefined_error()
        numbers = all(isinstance(x, int | float) for x in (left, right))
        if operator == "%" and not numbers:
            raise _Refused("'%' only works on numbers; string formatting is not allowed")
        if operator == "**":
            if not numbers:
                raise _Refused("'**' only works on numbers")
            if abs(right) > MAX_EXPONENT:
                raise _Refused(f"exponent {right} is larger than {MAX_EXPONENT}")
            if isinstance(left, int) and left.bit_length() * abs(right) > MAX_INT_BITS:
                raise _Refused(f"the power would be larger than {MAX_INT_BITS} bits")
        if operator == "*":
            _check_product(left, right)
        if operator == "+" and not numbers:
            size = _length(left) + _length(right)
            if size > MAX_VALUE:
                raise _Refused(f"'+' would produce {size} items (at most {MAX_VALUE})")
        return _check_size(_BINOPS[operator](left, right), f"the result of '{operator}'")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _check_product(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            size = len(seq) * times
            if size > MAX_VALUE:
                raise _Refused(f"'*' would produce {size} items (at most {MAX_VALUE})")
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > MAX_INT_BITS
    ):
        raise _Refused(f"'*' would produce a number larger than {MAX_INT_BITS} bits")


_BINOPS: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "**": lambda a, b: a**b,
}


def _ticking(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, checking the render's deadline first (no filter is called unchecked)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return function(*args, **kwargs)

    return wrapper


def _make_env() -> _Environment:
    env = _Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        optimized=False,
        finalize=_finalize,
        trim_blocks=True,  # a line holding only {% if %} / {% for %} leaves no blank line
        lstrip_blocks=True,
        cache_size=0,
    )
    env.globals.clear()
    env.filters = {name: _ticking(function) for name, function in _FILTERS.items()}
    env.filters[_LOOP_GUARD] = _loop_guard
    env.filters[_CONCAT] = _concat
    env.tests = dict(_TESTS)
    return env


_ENV: Final = _make_env()


# --- compile ------------------------------------------------------------------------------


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.iter_child_nodes())


def _check(tree: nodes.Template) -> None:
    for node in _walk(tree):
        line = getattr(node, "lineno", None)
        for kind, message in _FORBIDDEN:
            if isinstance(node, kind):
                raise TemplateError(message, line=line)
        if isinstance(node, nodes.Pow) and (
            isinstance(node.left, nodes.Pow) or isinstance(node.right, nodes.Pow)
        ):
            raise TemplateError(
                "chained '**' is not allowed (add parentheses: Jinja and Python group it "
                "differently)",
                line=line,
            )
        if isinstance(node, nodes.For) and node.recursive:
            raise TemplateError("recursive loops are not allowed", line=line)
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateError(
                f"{node.attr!r}: names starting with '_' are not allowed", line=line
            )
        if isinstance(node, nodes.Name) and node.name == "self":
            raise TemplateError("'self' is not allowed", line=line)
        if isinstance(node, nodes.Filter) and node.name not in _FILTERS:
            raise TemplateError(
                f"unknown filter {node.name!r}; filters: {', '.join(FILTER_NAMES)}", line=line
            )
        if isinstance(node, nodes.Test) and node.name not in _TESTS:
            raise TemplateError(
                f"unknown test {node.name!r}; tests: {', '.join(sorted(_TESTS))}", line=line
            )


def _first_line(tree: nodes.Template, name: str) -> int | None:
    for node in _walk(tree):
        if isinstance(node, nodes.Name) and node.name == name:
            return node.lineno
    return None


def _guard(tree: nodes.Template) -> None:
    """Route every loop's iterable and every ``~`` through the budget and size guards."""
    for node in list(_walk(tree)):
        for name, child in node.iter_fields():
            if isinstance(child, nodes.Concat):
                setattr(node, name, _concat_filter(child))
            elif isinstance(child, list):
                setattr(
                    node,
                    name,
                    [_concat_filter(c) if isinstance(c, nodes.Concat) else c for c in child],
                )
        if isinstance(node, nodes.For):
            node.iter = nodes.Filter(node.iter, _LOOP_GUARD, [], [], None, None, lineno=node.lineno)


def _concat_filter(node: nodes.Concat) -> nodes.Filter:
    parts = nodes.List(node.nodes, lineno=node.lineno)
    return nodes.Filter(parts, _CONCAT, [], [], None, None, lineno=node.lineno)


def _referenced(tree: nodes.Template, roots: set[str], fields: set[str]) -> frozenset[str]:
    """The canonical fields a template reads (all subfields when a namespace is used whole)."""
    names: set[str] = set()
    attributed: set[int] = set()
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            dotted = f"{node.node.name}.{node.attr}"
            if node.node.name in roots and node.node.name not in fields:
                attributed.add(id(node.node))
                if dotted in fields:
                    names.add(dotted)
    for node in _walk(tree):
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in roots:
            if node.name in fields:
                names.add(node.name)
            elif id(node) not in attributed:
                names.update(f for f in fields if f.startswith(node.name + "."))
    return frozenset(names)


@dataclass(frozen=True)
class Template:
    """A compiled, sandboxed template. ``names`` are the canonical fields it reads."""

    source: str
    names: frozenset[str]
    _template: jinja2.Template = field(repr=False, compare=False)

    def render(self, values: Mapping[str, Any]) -> str:
        """Render with ``values`` (canonical field name -> plain data; dotted names nest).

        Raises :class:`TemplateError` for anything that goes wrong, including output longer
        than :data:`MAX_OUTPUT` characters.
        """
        data = _context_data(values)
        token = _BUDGET.set(_Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS))
        chunks: list[str] = []
        size = 0
        stream = cast(Generator[str, None, None], self._template.generate(data))
        try:
            for chunk in stream:
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateError(
                        f"the output is longer than {MAX_OUTPUT} characters",
                        line=None,
                    )
                chunks.append(chunk)
        except TemplateError:
            raise
        except Exception as exc:  # every render failure is the template's fault
            raise _render_error(exc) from None
        finally:
            stream.close()
            _BUDGET.reset(token)
        return "".join(chunks)


def _render_error(exc: BaseException) -> TemplateError:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(exc, jinja2.UndefinedError):
        message = f"{exc.message or exc} (is the field available here?)"
    elif isinstance(exc, RecursionError):
        message = "the template is nested too deeply"
    elif isinstance(exc, SecurityError | jinja2.TemplateError):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    return TemplateError(message, line=line)


def compile_template(source: str, *, fields: Iterable[str]) -> Template:
    """Compile ``source``; it may read only ``fields`` (canonical names, dotted ones nest).

    Raises :class:`TemplateError` naming the line and what is wrong or allowed.
    """
    if not isinstance(source, str):
        raise TemplateError(f"a template must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"the template is {len(source)} characters long (at most {MAX_SOURCE})")
    allowed = list(dict.fromkeys(fields))
    plain = {f for f in allowed if "." not in f}
    namespaces: dict[str, set[str]] = {}
    for name in allowed:
        if "." in name:
            root, _, rest = name.partition(".")
            namespaces.setdefault(root, set()).add(rest)
    roots = plain | set(namespaces)
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error: {exc.message}", line=exc.lineno) from None
    except RecursionError:
        raise TemplateError("the template is nested too deeply") from None
    except Exception as exc:  # e.g. an integer literal too long to convert
        raise TemplateError(f"cannot parse the template: {exc}") from None
    _check(tree)
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except jinja2.TemplateError as exc:
        raise TemplateError(str(exc.message or exc)) from None
    except RecursionError:
        raise TemplateError("the template is nested too deeply") from None
    unknown = sorted(undeclared - roots)
    if unknown:
        raise TemplateError(
            f"unknown name {unknown[0]!r}; fields: {', '.join(allowed) or '(none)'}",
            line=_first_line(tree, unknown[0]),
        )
    for node in _walk(tree):
        if (
            isinstance(node, nodes.Getattr)
            and isinstance(node.node, nodes.Name)
            and node.node.name in namespaces
            and node.node.name not in plain
            and node.attr not in namespaces[node.node.name]
        ):
            raise TemplateError(
                f"unknown field '{node.node.name}.{node.attr}'; fields: {', '.join(allowed)}",
                line=node.lineno,
            )
    names = _referenced(tree, roots, set(allowed))
    _guard(tree)
    try:
        compiled = _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error: {exc.message}", line=exc.lineno) from None
    except (RecursionError, SyntaxError, MemoryError):
        raise TemplateError("the template is nested too deeply") from None
    except Exception as exc:
        raise TemplateError(f"cannot compile the template: {exc}") from None
    return Template(source=source, names=names, _template=compiled)


# --- values -------------------------------------------------------------------------------


def _plain(value: Any, depth: int = 0) -> Any:
    """Plain template data: enums become their values, sequences tuples, mappings dicts."""
    if depth > MAX_DATA_DEPTH:
        raise TemplateError(f"values are nested more than {MAX_DATA_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth + 1)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.date | dt.time):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, set | frozenset):
        items = [_plain(v, depth + 1) for v in value]
        try:
            return tuple(sorted(items))
        except TypeError:
            return tuple(items)
    raise TemplateError(f"template values must be plain data, not {type(value).__name__}")


def _context_data(values: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in values:
        if not isinstance(key, str):
            raise TemplateError(f"template value names must be strings, not {key!r}")
    for key, value in values.items():
        if "." not in key:
            data[key] = _plain(value)
    for key, value in values.items():
        if "." in key:
            root, _, rest = key.partition(".")
            target = data.get(root)
            if not isinstance(target, dict):
                target = data[root] = {}
            target[rest] = _plain(value)
    return data
