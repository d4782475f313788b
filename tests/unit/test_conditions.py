"""The `when:` condition language: parsed, never executed."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping.conditions import (
    MAX_DEPTH,
    MAX_SOURCE,
    Condition,
    ConditionError,
    parse_condition,
)
from mapping.model import CANONICAL_FIELDS, Impact, Incident, Resolution, Severity, State

FIELDS = CANONICAL_FIELDS
FUZZ = settings(
    max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow], database=None
)


def values_of(incident: Incident) -> dict[str, Any]:
    """The values the engine hands a condition: every canonical field, dotted ones flattened."""
    values: dict[str, Any] = {}
    for name in FIELDS:
        head, _, rest = name.partition(".")
        value = getattr(incident, head)
        values[name] = getattr(value, rest) if rest else value
    return values


MAJOR = values_of(
    Incident(
        title="Checkout database down",
        severity=Severity.SEV1,
        state=State.INVESTIGATING,
        assignee="alice@example.com",
        team="payments",
        services=("db", "checkout"),
        customer_impact=Impact.MAJOR,
        public=True,
        public_message="We are investigating.",
        labels=("p1",),
        started_at=dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC),
    )
)
MINOR = values_of(
    Incident(
        title="Slow reports",
        severity=Severity.SEV3,
        state=State.RESOLVED,
        services=("reports",),
        resolution=Resolution(code="fixed", notes="restarted"),
        started_at=dt.datetime(2024, 5, 2, 8, 0, tzinfo=dt.UTC),
        resolved_at=dt.datetime(2024, 5, 2, 9, 0, tzinfo=dt.UTC),
    )
)
EMPTY: dict[str, Any] = {}


def cond(text: str) -> Condition:
    return parse_condition(text, fields=FIELDS)


# --- evaluation -----------------------------------------------------------------------------

CASES: list[tuple[str, bool, bool, bool]] = [
    # (condition, on MAJOR, on MINOR, on no values at all)
    ("severity == 'SEV1'", True, False, False),
    ('severity == "SEV1"', True, False, False),
    ("'SEV1' == severity", True, False, False),
    ("severity != 'SEV1'", False, True, True),
    ("severity in ['SEV1', 'SEV2']", True, False, False),
    ("severity not in ['SEV1', 'SEV2']", False, True, True),
    ("severity in ['SEV1', 'SEV2'] and public", True, False, False),
    ("severity in ['SEV1', 'SEV2'] and public == true", True, False, False),
    ("public == True", True, False, False),
    ("public == 'true'", True, False, False),
    ("public == false", False, True, False),
    ("not public", False, True, True),
    ("not not public", True, False, False),
    ("severity <= 'SEV2'", True, False, False),
    ("severity > 'SEV2'", False, True, False),
    ("state == 'resolved' or state == 'closed'", False, True, False),
    ("state in ['resolved', 'closed'] and resolution.code != ''", False, True, False),
    ("resolution.code == 'fixed'", False, True, False),
    ("'db' in services", True, False, False),
    ("'db' not in services", False, True, True),
    ("'database' in title", True, False, False),
    ("'Database' in title", False, False, False),
    ("title == null", False, False, True),
    ("title != None", True, True, False),
    ("resolved_at == null", True, False, True),
    ("resolved_at", False, True, False),
    ("services", True, True, False),
    ("labels == []", False, True, False),
    ("started_at >= '2024-05-02T00:00:00Z'", False, True, False),
    ("started_at < '2024-05-02T00:00:00+00:00'", True, False, False),
    ("started_at < 'tomorrow'", False, False, False),  # incomparable: false, not an error
    ("severity < 3", False, False, False),  # incomparable types
    ("title > 1", False, False, False),
    ("public == 1", False, False, False),  # a bool is not a number here
    ("customer_impact in ['major', 'critical'] or severity == 'SEV1'", True, False, False),
    ("(severity == 'SEV1' or severity == 'SEV3') and not (state == 'closed')", True, True, False),
    ("severity == 'SEV1' or severity == 'SEV3' and state == 'closed'", True, False, False),
    ("true", True, True, True),
    ("false or null", False, False, False),
    ("1 < 2.5", True, True, True),
    ("-3 < 0", True, True, True),
    ("'a' < 'b'", True, True, True),
    ("[1, 2, 3] == [1, 2, 3]", True, True, True),
    ("2 in [1, 2, 3,]", True, True, True),
    ("team == 'payments' and assignee == 'alice@example.com'", True, False, False),
    ("'it\\'s' == \"it's\"", True, True, True),
]


@pytest.mark.parametrize(("text", "on_major", "on_minor", "on_empty"), CASES)
def test_evaluates_on_sample_incidents(
    text: str, on_major: bool, on_minor: bool, on_empty: bool
) -> None:
    condition = cond(text)
    assert condition.evaluate(MAJOR) is on_major
    assert condition.evaluate(MINOR) is on_minor
    assert condition.evaluate(EMPTY) is on_empty


def test_enum_values_compare_as_their_string_and_lists_as_tuples() -> None:
    condition = cond("severity == 'SEV2' and 'x' in labels and state in ['new']")
    assert condition.evaluate({"severity": Severity.SEV2, "labels": ["x"], "state": State.NEW})
    assert condition.evaluate({"severity": "SEV2", "labels": ("x",), "state": "new"})


def test_naive_and_aware_datetimes_do_not_raise() -> None:
    condition = cond("started_at < resolved_at")
    naive, aware = dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert condition.evaluate({"started_at": naive, "resolved_at": aware}) is False
    assert condition.evaluate({"started_at": aware, "resolved_at": aware}) is False
    assert cond("started_at <= resolved_at").evaluate({"started_at": aware, "resolved_at": aware})


def test_condition_records_source_and_names() -> None:
    condition = cond("severity in ['SEV1'] and (public or resolution.code == 'x')")
    assert condition.source == "severity in ['SEV1'] and (public or resolution.code == 'x')"
    assert condition.names == frozenset({"severity", "public", "resolution.code"})
    assert str(condition) == condition.source
    assert cond("true").names == frozenset()


def test_custom_field_sets() -> None:
    fields = {"priority": ("1", "2"), "summary": None}
    condition = parse_condition("priority == '1' and 'x' in summary", fields=fields)
    assert condition.evaluate({"priority": "1", "summary": "xyz"})
    with pytest.raises(
        ConditionError, match=r"unknown field 'severity'.*fields: priority, summary"
    ):
        parse_condition("severity == 'SEV1'", fields=fields)


# --- errors ---------------------------------------------------------------------------------


def error(text: str) -> ConditionError:
    with pytest.raises(ConditionError) as info:
        cond(text)
    assert info.value.source == text
    assert 0 <= info.value.position <= len(text)
    return info.value


def test_unknown_field_names_position_and_allowed_fields() -> None:
    exc = error(" sevrity == 'SEV1'")
    assert exc.position == 1
    assert str(exc).startswith("unknown field 'sevrity' at 1")
    assert "did you mean 'severity'" in str(exc)
    assert "fields: title, description, severity, state" in str(exc)


def test_value_not_allowed_for_field() -> None:
    exc = error("severity == 'SEV5'")
    assert "'SEV5' is not a value of severity (SEV1, SEV2, SEV3, SEV4) at 12" in str(exc)
    assert exc.position == 12
    exc = error("state in ['new', 'open']")
    assert exc.position == 17 and "'open' is not a value of state (new, investigating" in str(exc)
    assert "is not a value of public" in str(error("public == 'yes'"))
    assert "customer_impact" in str(error("'huge' == customer_impact"))


def test_expected_value_after_in() -> None:
    exc = error("severity in ")
    assert str(exc).startswith("expected a value after 'in' at 12")
    assert exc.position == 12


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 0, "empty condition"),
        ("   ", 0, "empty condition"),
        ("severity == 'SEV1' and", 22, "expected a value after 'and'"),
        ("(severity == 'SEV1'", 19, "expected ')' at 19 to close '(' at 0"),
        ("severity == 'SEV1')", 18, "unexpected ')'"),
        ("title == 'abc", 9, "unterminated string starting at 9"),
        ("title == 'a\\qb'", 11, "unknown escape"),
        ("severity = 'SEV1'", 9, "use == to compare"),
        ("1 < 2 < 3", 6, "chained comparisons are not allowed"),
        ("title[0] == 'x'", 5, "indexing is not allowed"),
        ("title.upper", 0, "attribute access is not allowed"),
        ("title.__class__", 0, "attribute access is not allowed"),
        ("resolution.cod == 'x'", 0, "did you mean 'resolution.code'"),
        ("resolution.code.__len__", 0, "unknown field"),
        ("len(title) > 3", 0, "unknown field 'len'"),
        ("title(1)", 5, "function calls are not allowed"),
        ("1e5 > 3", 0, "no exponents"),
        ("1.5.2 == 1", 0, "invalid number"),
        ("10000000000000000 > 1", 0, "too large"),
        ("-1000000000000001 < 1", 0, "too large"),
        ("99999999999999999999999999999999 > 1", 0, "too large"),
        ("severity in [title]", 13, "lists hold strings, numbers"),
        ("severity in ['SEV1' 'SEV2']", 20, "expected ',' or ']'"),
        ("title == 'x' && public", 13, "use 'and'"),
        ("title == 1 + 1", 11, "arithmetic is not allowed"),
        ("title is null", 6, "use == or != instead of 'is'"),
        ("not", 3, "expected a value after 'not'"),
        ("in title", 0, "found keyword 'in'"),
        ("title == {'a': 1}", 9, "only [lists]"),
        ("title == 'x' ; import os", 13, "unexpected character ';'"),
        ("title\u00a0== 'x'", 5, "unexpected character '\\xa0'"),
    ],
)
def test_errors_name_position_and_what_is_wrong(text: str, position: int, fragment: str) -> None:
    exc = error(text)
    assert fragment in str(exc)
    assert exc.position == position


HOSTILE = [
    "__import__('os')",
    "__import__('os').system('true')",
    "title.__class__",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "[].__class__",
    "''.__class__.__mro__",
    "x.__dict__",
    "title.upper()",
    "9**9**9**9",
    "9 ** 9",
    "lambda: 1",
    "import os",
    "exec('1')",
    "eval('1')",
    "open('/etc/passwd')",
    "__builtins__",
    "globals()",
    "severity if true else title",
    "[x for x in title]",
    "{'a': 1}",
    "f'{title}'",
    "b'abc' == title",
    "title @ title",
    "title := 1",
    "(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1),
    "not " * (MAX_DEPTH + 1) + "true",
    "(" * 400 + "true" + ")" * 400,
    "[" * 50,
    "[" * 50 + "]" * 50,
    "title == '" + "x" * 10_000 + "'",
    "true and " * 2000 + "true",
    "severity in [" + ", ".join(["'SEV1'"] * 101) + "]",
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: t[:40])
def test_hostile_inputs_are_refused_quickly(text: str) -> None:
    # CPU time, not wall time: a loaded machine must not fail it, a slow parse must.
    start = time.process_time()
    with pytest.raises(ConditionError):
        cond(text)
    assert time.process_time() - start < 0.5


def test_limits_are_exact() -> None:
    ok = "(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH
    assert cond(ok).evaluate({})
    padded = "true" + " " * (MAX_SOURCE - 4)
    assert cond(padded).evaluate({})
    exc = error(padded + " ")
    assert exc.position == MAX_SOURCE and "too long" in str(exc)
    assert cond("severity in [" + ", ".join(["'SEV1'"] * 100) + "]").evaluate(MAJOR)
    assert cond("1000000000000000 > 999999999999999.5").evaluate({})


def test_long_conditions_evaluate_in_linear_time() -> None:
    chain = " and ".join(["'db' in services"] * 20)
    alternatives = " or ".join(["title == 'nope'"] * 20)
    condition = cond(f"({chain}) and ({alternatives} or true)")
    start = time.monotonic()
    for _ in range(100):
        assert condition.evaluate(MAJOR)
    assert time.monotonic() - start < 0.5


# --- fuzzing --------------------------------------------------------------------------------

TOKENS = [
    "severity",
    "state",
    "public",
    "title",
    "services",
    "resolution.code",
    "__class__",
    "x.__dict__",
    ".",
    "(",
    ")",
    "[",
    "]",
    ",",
    "import",
    "lambda",
    "**",
    "*",
    "9**9**9",
    "[" * 50,
    "(" * 40,
    "and",
    "or",
    "not",
    "in",
    "not in",
    "==",
    "!=",
    "<",
    ">=",
    "=",
    "true",
    "False",
    "null",
    "'SEV1'",
    "'SEV5'",
    '"new"',
    "'unterminated",
    "'\\",
    "0",
    "-1",
    "2.5",
    "1e9",
    "99999999999999999",
    " ",
    "\n",
    "\u00a0",
    "é",
]


@FUZZ
@given(st.text(max_size=300))
def test_fuzzed_text_only_raises_condition_error(text: str) -> None:
    _parse_and_evaluate(text)


@FUZZ
@given(st.text(alphabet="()[]'\"=!<>., _-\\0123456789abdeilnorstuvySEV", max_size=200))
def test_fuzzed_condition_characters_only_raise_condition_error(text: str) -> None:
    _parse_and_evaluate(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_fuzzed_token_soup_only_raises_condition_error(text: str) -> None:
    _parse_and_evaluate(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_fuzzed_glued_tokens_only_raise_condition_error(text: str) -> None:
    _parse_and_evaluate(text)


def _parse_and_evaluate(text: str) -> None:
    try:
        condition = cond(text)
    except ConditionError as exc:
        assert exc.source == text or len(text) > MAX_SOURCE
        assert 0 <= exc.position <= max(len(text), MAX_SOURCE)
        return
    for values in (MAJOR, MINOR, EMPTY):
        assert isinstance(condition.evaluate(values), bool)


LITERALS = st.one_of(
    st.sampled_from(["'SEV1'", "'SEV2'", "'new'", "'closed'", "'db'", "true", "false", "null"]),
    st.integers(-1000, 1000).map(str),
)
FIELD_NAMES = st.sampled_from(["severity", "state", "public", "title", "services", "started_at"])
OPERATORS = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])


def _expressions() -> st.SearchStrategy[str]:
    atom = st.one_of(
        FIELD_NAMES,
        st.builds(lambda f, o, v: f"{f} {o} {v}", FIELD_NAMES, OPERATORS, LITERALS),
        st.builds(lambda f, vs: f"{f} in [{', '.join(vs)}]", FIELD_NAMES, st.lists(LITERALS)),
    )
    return st.recursive(
        atom,
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"{a} and {b}", inner, inner),
            st.builds(lambda a, b: f"{a} or {b}", inner, inner),
            inner.map(lambda a: f"not {a}"),
            inner.map(lambda a: f"({a})"),
        ),
        max_leaves=12,
    )


@FUZZ
@given(_expressions())
def test_generated_expressions_parse_or_fail_cleanly_and_evaluate_to_bools(text: str) -> None:
    _parse_and_evaluate(text)
