"""Sandboxed templates for public messages: they render data and nothing else."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping.model import CANONICAL_FIELDS, Impact, Incident, Resolution, Severity, State
from mapping.templates import (
    FILTER_NAMES,
    MAX_ITERATIONS,
    MAX_OUTPUT,
    MAX_SOURCE,
    Template,
    TemplateError,
    compile_template,
)

FIELDS = tuple(CANONICAL_FIELDS)
FUZZ = settings(
    max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow], database=None
)


def values_of(incident: Incident) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in FIELDS:
        head, _, rest = name.partition(".")
        value = getattr(incident, head)
        values[name] = getattr(value, rest) if rest else value
    return values


INCIDENT = values_of(
    Incident(
        title="Checkout database down",
        description="Primary DB failed over.\n" + "x" * 9_000,
        severity=Severity.SEV1,
        state=State.INVESTIGATING,
        assignee="alice@example.com",
        team="payments",
        services=("db", "checkout", "api"),
        customer_impact=Impact.MAJOR,
        public=True,
        labels=("p1", "db", "p1"),
        started_at=dt.datetime(2024, 5, 1, 10, 5, 30, tzinfo=dt.UTC),
        resolution=Resolution(code="fixed", notes="failed back"),
    )
)


def template(source: str) -> Template:
    return compile_template(source, fields=FIELDS)


def render(source: str, values: dict[str, Any] | None = None) -> str:
    return template(source).render(INCIDENT if values is None else values)


# --- normal templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ title }}", "Checkout database down"),
        ("[{{ severity }}] {{ state|upper }}", "[SEV1] INVESTIGATING"),
        ("{{ customer_impact|capitalize }} impact", "Major impact"),
        ("Affected: {{ services|join(', ') }}", "Affected: db, checkout, api"),
        ("{{ services|length }} / {{ services|count }}", "3 / 3"),
        ("{{ services|first }}..{{ services|last }}", "db..api"),
        ("{{ labels|unique|join(',') }}", "p1,db"),
        ("{{ services|sort|join(' ') }}", "api checkout db"),
        ("{{ resolution.code }}: {{ resolution.notes|title }}", "fixed: Failed Back"),
        ("{{ resolution['code'] }}", "fixed"),
        ("{{ team|default('n/a') }} {{ parent|default('none', true) }}", "payments none"),
        ("{{ resolved_at }}|{{ public }}", "|True"),
        ("{% if public and severity in ['SEV1', 'SEV2'] %}public{% endif %}", "public"),
        ("{% if resolved_at is none %}ongoing{% else %}done{% endif %}", "ongoing"),
        (
            "{% for s in services %}{{ loop.index }}.{{ s }}{% if not loop.last %} {% endif %}"
            "{% endfor %}",
            "1.db 2.checkout 3.api",
        ),
        ("{% for s in [] %}x{% else %}none{% endfor %}", "none"),
        (
            "{% set n = services|length %}{{ n * 2 }} {{ n ** 3 }} {{ 7 // 2 }} {{ 7 % 4 }}",
            "6 27 3 3",
        ),
        ("{{ title ~ '!' }} {{ title[0] }}{{ title[-4:] }}", "Checkout database down! Cdown"),
        ("{{ title|replace('down', 'degraded') }}", "Checkout database degraded"),
        ("{{ title|truncate(12, true, '...', 0) }}", "Checkout ..."),
        ("{{ title|wordcount }} {{ '42'|int + 1 }} {{ '2.5'|float }}", "3 43 2.5"),
        (
            "{{ -3|abs }} {{ 2.567|round(1) }} {{ title|lower|trim }}",
            "3 2.6 checkout database down",
        ),
        ("{{ (title|list)[:3]|join }} {{ services|string }}", "Che ('db', 'checkout', 'api')"),
        ("{{ started_at|datetime }}", "2024-05-01 10:05 UTC"),
        ("{{ started_at|datetime('%H:%M %Z', tz='Europe/Paris') }}", "12:05 CEST"),
        (
            "{{ started_at|datetime('%d %b %Y, %I:%M %p', 'America/New_York') }}",
            "01 May 2024, 06:05 AM",
        ),
        ("{{ started_at|datetime('%Y-%m-%dT%H:%M:%S%z') }}", "2024-05-01T10:05:30+0000"),
        ("{{ resolved_at|datetime }}", ""),
        ("{{ '2024-05-01T10:00:00+02:00'|datetime('%H:%M') }}", "08:00"),
        ("{# a comment #}{% raw %}{{ title }}{% endraw %}", "{{ title }}"),
        ("line 1\n{{ title }}\n", "line 1\nCheckout database down"),
        (
            "Affected:\n  {% for s in services %}\n- {{ s }}\n  {% endfor %}\nThanks",
            "Affected:\n- db\n- checkout\n- api\nThanks",
        ),
    ],
)
def test_renders_canonical_fields(source: str, expected: str) -> None:
    assert render(source) == expected


def test_strenum_values_render_as_their_value() -> None:
    assert render("{{ severity }}/{{ state }}/{{ customer_impact }}") == "SEV1/investigating/major"
    assert render("{{ severity == 'SEV1' }}") == "True"


def test_naive_datetimes_are_utc_and_dates_format() -> None:
    values = {"started_at": dt.datetime(2024, 1, 1, 12, 0), "closed_at": dt.date(2024, 1, 2)}
    assert render("{{ started_at|datetime('%H:%M', tz='Asia/Tokyo') }}", values) == "21:00"
    assert render("{{ closed_at|datetime('%d/%m/%Y') }}", values) == "02/01/2024"


def test_values_given_nested_or_dotted() -> None:
    t = template("{{ resolution.code }}-{{ resolution.notes }}")
    assert t.render({"resolution": {"code": "a", "notes": "b"}}) == "a-b"
    assert t.render({"resolution.code": "a", "resolution.notes": "b"}) == "a-b"


def test_names_are_the_fields_read() -> None:
    t = template("{{ title }} {% for s in services %}{{ s }}{% endfor %} {{ resolution.code }}")
    assert t.names == frozenset({"title", "services", "resolution.code"})
    assert template("{{ resolution|length }}").names == frozenset(
        {"resolution.code", "resolution.notes"}
    )
    assert template("{% set x = 1 %}{{ x }}").names == frozenset()


def test_templates_are_reusable_and_independent() -> None:
    t = template("{% for c in title %}{{ c }}{% endfor %}")
    for _ in range(3):  # each render has its own loop budget
        assert t.render({"title": "a" * (MAX_ITERATIONS - 1)}) == "a" * (MAX_ITERATIONS - 1)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_variable_lists_allowed_fields_with_line() -> None:
    with pytest.raises(TemplateError) as info:
        template("Hello\n{{ sevrity }}")
    message = str(info.value)
    assert info.value.line == 2
    assert message.startswith("template line 2: unknown name 'sevrity'; fields: title, description")
    assert "resolution.code" in message


def test_unknown_subfield_is_reported() -> None:
    with pytest.raises(TemplateError, match=r"unknown field 'resolution\.cause'.*resolution\.code"):
        template("{{ resolution.cause }}")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(TemplateError) as info:
        template("ok\nok\n{% if title %}unclosed")
    assert info.value.line == 3
    assert "syntax error" in str(info.value) and str(info.value).startswith("template line 3:")
    with pytest.raises(TemplateError, match="line 1: syntax error"):
        template("{{ title ")


def test_render_errors_name_the_line() -> None:
    with pytest.raises(TemplateError) as info:
        template("a\nb\n{{ team }}").render({})
    assert info.value.line == 3 and "'team' is undefined" in str(info.value)
    with pytest.raises(TemplateError, match="line 2: ZeroDivisionError"):
        template("x\n{{ 1 // 0 }}").render({})


def test_unknown_filter_lists_filters() -> None:
    with pytest.raises(TemplateError) as info:
        template("{{ title|center(9) }}")
    assert "unknown filter 'center'; filters: " + ", ".join(FILTER_NAMES) in str(info.value)
    with pytest.raises(TemplateError, match="unknown filter 'center'"):
        template("{% if public %}{{ title|center(9) }}{% endif %}")  # checked at compile time too


def test_datetime_filter_refuses_unsafe_input() -> None:
    with pytest.raises(TemplateError, match="directive %c is not allowed"):
        render("{{ started_at|datetime('%c') }}")
    with pytest.raises(TemplateError, match="unknown time zone"):
        render("{{ started_at|datetime(tz='../../etc/passwd') }}")
    with pytest.raises(TemplateError, match="expects a datetime"):
        render("{{ services|datetime }}")
    with pytest.raises(TemplateError, match="not an ISO 8601"):
        render("{{ title|datetime }}")


def test_output_cap() -> None:
    assert len(render("{{ description }}{{ description }}")) < MAX_OUTPUT
    with pytest.raises(TemplateError, match=f"longer than {MAX_OUTPUT} characters"):
        render("{{ description }}{{ description }}{{ description }}")
    with pytest.raises(TemplateError, match="longer than"):
        nested = "{% for t in services %}{{ description }}{% endfor %}"
        render("{% for s in services %}" + nested + "{% endfor %}")
    exact = template("{{ title }}").render({"title": "y" * MAX_OUTPUT})
    assert len(exact) == MAX_OUTPUT


def test_source_limit() -> None:
    with pytest.raises(TemplateError, match=f"at most {MAX_SOURCE}"):
        template("x" * (MAX_SOURCE + 1))
    assert template("x" * MAX_SOURCE).render({}) == "x" * MAX_SOURCE


def test_values_must_be_plain_data() -> None:
    with pytest.raises(TemplateError, match="plain data"):
        template("{{ title }}").render({"title": object()})


# --- hostile templates --------------------------------------------------------------------

HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ title.__class__ }}",
    "{{ title['__class__'] }}",
    "{{ title.upper }}",
    "{{ title.upper() }}",
    "{{ '{0.__class__}'.format(title) }}",
    "{{ title.format }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{{ [0] * 10**9 }}",
    "{{ 9**9**9 }}",
    "{{ (9**9)**(9**9) }}",
    "{{ 2 ** 1000 }}",
    "{{ (10**100)**50 }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum }}",
    "{{ lipsum() }}",
    "{{ range(3) }}",
    "{{ dict(a=1) }}",
    "{% set x = namespace() %}",
    "{% set ns.x = 1 %}",
    "{{ joiner() }}",
    "{{ config }}",
    "{{ request }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ title|attr('__class__') }}",
    "{{ title|format('%s') }}",
    "{{ '%s' % title }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ 'x'|center(10**8) }}",
    "{{ title|map('upper')|list }}",
    "{{ title|pprint }}",
    "{{ title|xmlattr }}",
    "{% include 'other' %}",
    "{% import 'other' as o %}",
    "{% extends 'base' %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% call title %}{% endcall %}",
    "{% filter upper %}{{ title }}{% endfilter %}",
    "{% set x %}{{ title }}{% endset %}",
    "{% block b %}{% endblock %}",
    "{% for x in services recursive %}{{ loop(x) }}{% endfor %}",
    "{% for x in services %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    "{% for x in services %}{{ loop.__class__ }}{% endfor %}",
    "{% for x in services %}{{ loop.changed }}{% endfor %}",
    "{% for a in description %}{% for b in description %}{% endfor %}{% endfor %}",
    "{% for a in description %}{% for b in description %}{{ b }}{% endfor %}{% endfor %}",
    "{{ description|replace('', description) }}",
    "{{ description|list|join(description) }}",
    "{{ description ~ description ~ description ~ description ~ description ~ description"
    " ~ description ~ description ~ description ~ description ~ description ~ description }}",
    "{{ (description|list) + (description|list) * 10 }}",
    "{{ [description] * 100000 }}",
    "{{ ([description] * 100000)|string }}",
    "{{ ([description] * 100000)|string(10**9) }}",
    "{{ ([description] * 100000)|upper }}",
    "{{ ([description] * 100000)|wordcount }}",
    "{{ [[description] * 1000] * 1000 }}",
    "{{ ([[description] * 1000] * 100)|join }}",
    "{{ ([description] * 100000) ~ '' }}",
    "{% for c in [description] * 100000 ~ '' %}{% endfor %}",
    "{{ ([description] * 100000)|replace('a', 'b') }}",
    "{{ 1.5|round(10**9, 'ceil') }}",
    "{{ started_at.year }}",
    "{{ started_at.tzinfo }}",
    "{{ services.index }}",
    "{{ resolution.items }}",
    "{{ resolution.__class__ }}",
    "{{ services[0].__class__ }}",
    "{{ undefined_name }}",
    "{{ _ }}",
    "{{ __builtins__ }}",
    "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "{% if 1 %}" * 200 + "{% endif %}" * 200,
    "{% for a in title %}" * 25 + "{% endfor %}" * 25,
    "{{ " + "9" * 5000 + " }}",
    "{{ 1 / 0 }}",
    "{{ title - 1 }}",
]


@pytest.mark.parametrize("source", HOSTILE, ids=lambda s: s[:50])
def test_hostile_templates_are_refused_quickly(source: str) -> None:
    # CPU time, not wall time: a loaded machine must not fail it, a slow render must.
    start = time.process_time()
    with pytest.raises(TemplateError):
        render(source)
    assert time.process_time() - start < 1.0


def test_hostile_values_are_data_not_code() -> None:
    t = template("{{ title }} {{ resolution.code }}")
    out = t.render({"title": "{{ 7 * 7 }}", "resolution.code": "{% for x in y %}"})
    assert out == "{{ 7 * 7 }} {% for x in y %}"


# --- fuzzing --------------------------------------------------------------------------------

LEAKS = ("<class", "<built-in", "<function", "<bound method", "<module", "__", "<generator")

TEMPLATE_TOKENS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " ",
    "\n",
    "title",
    "services",
    "description",
    "resolution",
    ".",
    "code",
    "__class__",
    "__globals__",
    "|",
    "upper",
    "join",
    "replace",
    "attr",
    "format",
    "datetime",
    "(",
    ")",
    "[",
    "]",
    ",",
    "~",
    "*",
    "**",
    "+",
    "%",
    "9",
    "10**9",
    "'a'",
    "''",
    "range",
    "lipsum",
    "cycler",
    "self",
    "loop",
    "for",
    "x",
    "in",
    "if",
    "else",
    "endif",
    "endfor",
    "set",
    "=",
    "macro",
    "endmacro",
    "not",
    "and",
]

TEMPLATE_VALUES = {
    "title": "Disk full",
    "description": "d" * 3000,
    "services": ("db", "api"),
    "resolution.code": "fixed",
    "started_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
}


def _compile_and_render(source: str) -> None:
    start = time.monotonic()
    try:
        output = template(source).render(TEMPLATE_VALUES)
    except TemplateError:
        return
    finally:
        assert time.monotonic() - start < 3.0
    assert len(output) <= MAX_OUTPUT
    for leak in LEAKS:
        assert leak not in output or leak in source


@FUZZ
@given(st.text(max_size=200))
def test_fuzzed_text_compiles_and_renders_or_raises_template_error(source: str) -> None:
    _compile_and_render(source)


@FUZZ
@given(st.lists(st.sampled_from(TEMPLATE_TOKENS), max_size=40).map(" ".join))
def test_fuzzed_token_soup_compiles_and_renders_or_raises_template_error(source: str) -> None:
    _compile_and_render(source)


@FUZZ
@given(
    st.lists(st.sampled_from(TEMPLATE_TOKENS), max_size=30).map(
        lambda tokens: "{{ " + " ".join(tokens) + " }}"
    )
)
def test_fuzzed_expressions_compile_and_render_or_raise_template_error(source: str) -> None:
    _compile_and_render(source)


@FUZZ
@given(
    st.lists(st.sampled_from(TEMPLATE_TOKENS), max_size=30).map(
        lambda tokens: "{% for x in services %}{{ " + " ".join(tokens) + " }}{% endfor %}"
    )
)
def test_fuzzed_loop_bodies_compile_and_render_or_raise_template_error(source: str) -> None:
    _compile_and_render(source)
