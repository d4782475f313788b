"""Named transforms: remote value <-> canonical value, round-tripping where two-way."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping.transforms import (
    TRANSFORMS,
    PeopleLookup,
    Transform,
    TransformContext,
    TransformError,
    get_transform,
)

FUZZ = settings(
    max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow], database=None
)


class UnknownPerson(Exception):
    """What the fake system raises for someone it does not know (not a LookupError)."""


class DictPeople:
    """An in-memory stand-in for a remote system's user directory."""

    def __init__(self, people: dict[str, str], *, missing: type[Exception] = KeyError) -> None:
        self.by_id = dict(people)
        self.by_email = {email: person_id for person_id, email in people.items()}
        self.missing = missing

    def email_for(self, person_id: str) -> str:
        if person_id not in self.by_id:
            raise self.missing(person_id)
        return self.by_id[person_id]

    def id_for(self, email: str) -> str:
        if email not in self.by_email:
            raise self.missing(email)
        return self.by_email[email]


PEOPLE = DictPeople({"u-1": "alice@example.com", "u-2": "bob@example.com"})
CTX = TransformContext(system="jira", people=PEOPLE)
NO_PEOPLE = TransformContext(system="servicenow")


def t(name: str) -> Transform:
    return get_transform(name)


def test_registry() -> None:
    expected = {
        "identity",
        "person",
        "servicenow_datetime",
        "jira_datetime",
        "iso_datetime",
        "date",
        "adf_text",
        "jira_wiki",
        "name_object",
        "value_object",
        "names_list",
        "csv_list",
        "bool_string",
        "single",
        "component_statuses",
        "lower",
        "strip",
    }
    assert set(TRANSFORMS) == expected
    for name, transform in TRANSFORMS.items():
        assert transform.name == name
        assert transform.description and "\n" not in transform.description
        assert len(transform.description) <= 100
    one_way = {"lower", "strip", "component_statuses"}
    assert not any(TRANSFORMS[n].two_way for n in one_way)
    assert all(TRANSFORMS[n].two_way for n in expected - one_way)
    with pytest.raises(TypeError):
        TRANSFORMS["x"] = TRANSFORMS["identity"]  # type: ignore[index]


def test_unknown_transform_lists_names() -> None:
    with pytest.raises(TransformError, match=r"unknown transform 'persn'; transforms: identity, "):
        get_transform("persn")


def test_people_lookup_protocol_is_satisfied_by_the_fake() -> None:
    lookup: PeopleLookup = PEOPLE
    assert lookup.email_for("u-1") == "alice@example.com"


# --- people ---------------------------------------------------------------------------------


def test_person() -> None:
    person = t("person")
    assert person.to_canonical("u-1", CTX) == "alice@example.com"
    assert person.to_remote("Bob@Example.com ", CTX) == "u-2"
    assert person.to_canonical("", CTX) == "" and person.to_canonical(None, CTX) == ""
    assert person.to_remote("", CTX) == ""


def test_person_unknown_is_a_transform_error_naming_the_email() -> None:
    person = t("person")
    with pytest.raises(TransformError, match=r"no jira person with email 'carol@example\.com'"):
        person.to_remote("carol@example.com", CTX)
    with pytest.raises(TransformError, match="no jira person with id 'u-9'"):
        person.to_canonical("u-9", CTX)
    with pytest.raises(TransformError, match="'carol' is not an email address"):
        person.to_remote("carol", CTX)


def test_person_lookup_errors_of_other_types_pass_through_with_a_note() -> None:
    ctx = TransformContext(system="jira", people=DictPeople({}, missing=UnknownPerson))
    with pytest.raises(UnknownPerson) as info:
        t("person").to_remote("carol@example.com", ctx)
    assert any("carol@example.com" in note for note in info.value.__notes__)


def test_person_without_lookup() -> None:
    with pytest.raises(TransformError, match="no people lookup is configured for servicenow"):
        t("person").to_canonical("u-1", NO_PEOPLE)


@FUZZ
@given(st.sampled_from(sorted(PEOPLE.by_email)))
def test_person_round_trip(email: str) -> None:
    person = t("person")
    assert person.to_canonical(person.to_remote(email, CTX), CTX) == email


# --- dates and times ------------------------------------------------------------------------

AWARE = st.datetimes(
    min_value=dt.datetime(1971, 1, 1),
    max_value=dt.datetime(2200, 12, 31),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
)


def _truncate(value: dt.datetime, unit: str) -> dt.datetime:
    if unit == "s":
        return value.replace(microsecond=0)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    ("name", "precision"),
    [("servicenow_datetime", "s"), ("jira_datetime", "ms"), ("iso_datetime", "ms")],
)
@FUZZ
@given(value=AWARE)
def test_datetime_round_trips(name: str, precision: str, value: dt.datetime) -> None:
    transform = t(name)
    value = _truncate(value, precision)
    back = transform.to_canonical(transform.to_remote(value, CTX), CTX)
    assert back == value
    assert back.tzinfo is dt.UTC


@pytest.mark.parametrize("name", ["servicenow_datetime", "jira_datetime", "iso_datetime"])
def test_datetime_empty(name: str) -> None:
    transform = t(name)
    assert transform.to_canonical(None, CTX) is None
    assert transform.to_canonical("", CTX) is None
    assert transform.to_canonical(transform.to_remote(None, CTX), CTX) is None


def test_servicenow_datetime() -> None:
    sn = t("servicenow_datetime")
    value = dt.datetime(2024, 1, 31, 13, 45, tzinfo=dt.UTC)
    assert sn.to_canonical("2024-01-31 13:45:00", CTX) == value
    assert sn.to_remote(value, CTX) == "2024-01-31 13:45:00"
    paris = dt.timezone(dt.timedelta(hours=1))
    assert (
        sn.to_remote(dt.datetime(2024, 1, 31, 14, 45, tzinfo=paris), CTX) == "2024-01-31 13:45:00"
    )
    assert sn.to_remote(None, CTX) == ""


def test_servicenow_datetime_in_an_instance_time_zone() -> None:
    sn = t("servicenow_datetime")
    ctx = TransformContext(system="servicenow", time_zone="Europe/Paris")
    value = dt.datetime(2024, 7, 1, 10, 0, tzinfo=dt.UTC)
    assert sn.to_remote(value, ctx) == "2024-07-01 12:00:00"
    assert sn.to_canonical("2024-07-01 12:00:00", ctx) == value
    with pytest.raises(TransformError, match="unknown time zone 'Mars/Olympus'"):
        sn.to_canonical(
            "2024-07-01 12:00:00", TransformContext("servicenow", time_zone="Mars/Olympus")
        )


def test_jira_datetime() -> None:
    jira = t("jira_datetime")
    value = dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.UTC)
    assert jira.to_remote(value, CTX) == "2024-01-01T10:00:00.000+0000"
    assert jira.to_canonical("2024-01-01T10:00:00.000+0000", CTX) == value
    assert jira.to_canonical("2024-01-01T12:00:00.000+0200", CTX) == value
    assert jira.to_canonical("2024-01-01T05:30:00.5-04:30", CTX) == value.replace(
        microsecond=500000
    )
    assert jira.to_canonical("2024-01-01T10:00:00Z", CTX) == value


def test_iso_datetime() -> None:
    iso = t("iso_datetime")
    value = dt.datetime(2024, 1, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert iso.to_remote(value, CTX) == "2024-01-01T10:00:00.123Z"
    assert iso.to_canonical("2024-01-01T10:00:00.123Z", CTX) == value
    assert iso.to_canonical("2024-01-01T11:00:00.123+01:00", CTX) == value
    assert iso.to_remote(dt.datetime(2024, 1, 1, 10, 0, 0, 999999, tzinfo=dt.UTC), CTX) == (
        "2024-01-01T10:00:00.999Z"
    )


def test_naive_datetimes_are_in_the_context_time_zone() -> None:
    naive = dt.datetime(2024, 1, 1, 10, 0)
    assert t("iso_datetime").to_remote(naive, CTX) == "2024-01-01T10:00:00.000Z"
    tokyo = TransformContext("jira", time_zone="Asia/Tokyo")
    assert t("jira_datetime").to_remote(naive, tokyo) == "2024-01-01T01:00:00.000+0000"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("servicenow_datetime", "2024-01-31T13:45:00", "YYYY-MM-DD HH:MM:SS"),
        ("servicenow_datetime", "2024-13-01 00:00:00", "YYYY-MM-DD HH:MM:SS"),
        ("servicenow_datetime", "31/01/2024 13:45", "YYYY-MM-DD HH:MM:SS"),
        ("servicenow_datetime", "2024-1-1 1:1:1", "YYYY-MM-DD HH:MM:SS"),
        ("jira_datetime", "2024-01-01 10:00:00", "2024-01-31T13:45:00.000+0000"),
        ("jira_datetime", "2024-01-01T10:00:00.000", "2024-01-31T13:45:00.000+0000"),
        ("jira_datetime", "2024-01-01T10:00:00.000+9900", "2024-01-31T13:45:00.000+0000"),
        ("iso_datetime", "2024-01-01T10:00:00", "has no time zone"),
        ("iso_datetime", "yesterday", "ISO 8601"),
        ("iso_datetime", "2024-02-30T10:00:00Z", "ISO 8601"),
        ("date", "2024-02-30", "YYYY-MM-DD"),
        ("date", "01/02/2024", "YYYY-MM-DD"),
        ("date", "20240102", "YYYY-MM-DD"),
    ],
)
def test_malformed_dates_name_the_value_and_format(name: str, value: str, expected: str) -> None:
    with pytest.raises(TransformError) as info:
        t(name).to_canonical(value, CTX)
    assert repr(value) in str(info.value)
    assert expected in str(info.value)
    assert str(info.value).startswith(name)


@pytest.mark.parametrize("name", ["servicenow_datetime", "jira_datetime", "iso_datetime", "date"])
def test_wrong_types_are_transform_errors(name: str) -> None:
    with pytest.raises(TransformError, match=name):
        t(name).to_canonical(12, CTX)
    with pytest.raises(TransformError, match=name):
        t(name).to_remote("2024-01-01", CTX)


def test_date() -> None:
    date = t("date")
    assert date.to_canonical("2024-01-31", CTX) == dt.date(2024, 1, 31)
    assert date.to_remote(dt.date(2024, 1, 31), CTX) == "2024-01-31"
    assert date.to_canonical("", CTX) is None and date.to_canonical(None, CTX) is None
    assert date.to_remote(None, CTX) is None
    late = dt.datetime(2024, 1, 31, 23, 30, tzinfo=dt.UTC)
    assert date.to_remote(late, TransformContext("jira", time_zone="Europe/Paris")) == "2024-02-01"


@FUZZ
@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_date_round_trip(value: dt.date) -> None:
    date = t("date")
    assert date.to_canonical(date.to_remote(value, CTX), CTX) == value


# --- rich text ------------------------------------------------------------------------------

PLAIN_CHARS = st.characters(
    categories=("L", "N", "Zs"),
    exclude_characters="\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u202f\u205f\u3000",
) | st.sampled_from(list(".,:;'\"()/?!@&$=%"))
RISKY_LINE = re.compile(r"\s*(\d+[.)]|h[1-6]\.|bq\.)\s")


def _line() -> st.SearchStrategy[str]:
    return (
        st.text(PLAIN_CHARS, min_size=1, max_size=30)
        .filter(lambda line: line.strip() != "")
        .filter(lambda line: RISKY_LINE.match(line) is None)
    )


PLAIN_TEXT = st.lists(st.lists(_line(), min_size=1, max_size=4).map("\n".join), max_size=4).map(
    "\n\n".join
)


@FUZZ
@given(PLAIN_TEXT)
def test_adf_round_trip(text: str) -> None:
    adf = t("adf_text")
    doc = adf.to_remote(text, CTX)
    assert adf.to_canonical(doc, CTX) == text
    if text:
        assert doc["type"] == "doc" and doc["version"] == 1
        for paragraph in doc["content"]:
            assert paragraph["type"] == "paragraph"
            for node in paragraph["content"]:
                assert node["type"] == "hardBreak" or node["text"] != ""


@FUZZ
@given(PLAIN_TEXT)
def test_jira_wiki_round_trip(text: str) -> None:
    wiki = t("jira_wiki")
    assert wiki.to_canonical(wiki.to_remote(text, CTX), CTX) == text


def test_adf_to_text() -> None:
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "heading",
                "attrs": {"level": 2},
                "content": [{"type": "text", "text": "Impact"}],
            },
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "Checkout is "},
                    {"type": "text", "text": "down", "marks": [{"type": "strong"}]},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "for "},
                    {"type": "mention", "attrs": {"id": "u-1", "text": "@Alice"}},
                ],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "EU"}]},
                            {
                                "type": "orderedList",
                                "content": [
                                    {
                                        "type": "listItem",
                                        "content": [
                                            {
                                                "type": "paragraph",
                                                "content": [{"type": "text", "text": "Paris"}],
                                            }
                                        ],
                                    }
                                ],
                            },
                        ],
                    },
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "US"}]}
                        ],
                    },
                ],
            },
            {
                "type": "orderedList",
                "attrs": {"order": 3},
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "c"}]}
                        ],
                    },
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "d"}]}
                        ],
                    },
                ],
            },
            {
                "type": "codeBlock",
                "attrs": {"language": "sql"},
                "content": [{"type": "text", "text": "select 1;\nselect 2;"}],
            },
            {"type": "mediaSingle", "content": [{"type": "media", "attrs": {"id": "x"}}]},
            {
                "type": "panel",
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Note"}]}],
            },
        ],
    }
    assert t("adf_text").to_canonical(doc, CTX) == (
        "Impact\n\n"
        "Checkout is down\nfor @Alice\n\n"
        "- EU\n  1. Paris\n- US\n\n"
        "3. c\n4. d\n\n"
        "select 1;\nselect 2;\n\n"
        "Note"
    )


def test_adf_from_text() -> None:
    adf = t("adf_text")
    assert adf.to_remote("One\ntwo\n\n\nThree", CTX) == {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "One"},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "two"},
                ],
            },
            {"type": "paragraph", "content": [{"type": "text", "text": "Three"}]},
        ],
    }
    assert adf.to_remote("", CTX) is None and adf.to_remote(None, CTX) is None
    assert adf.to_canonical(None, CTX) == "" and adf.to_canonical("", CTX) == ""
    assert adf.to_canonical("already text", CTX) == "already text"
    assert adf.to_canonical("a\r\nb", CTX) == "a\r\nb"
    assert adf.to_canonical(adf.to_remote("a\r\nb", CTX), CTX) == "a\nb"


def test_adf_malformed() -> None:
    adf = t("adf_text")
    with pytest.raises(TransformError, match="expected an Atlassian document"):
        adf.to_canonical({"type": "paragraph"}, CTX)
    with pytest.raises(TransformError, match="expected a list of nodes"):
        adf.to_canonical({"type": "doc", "content": "text"}, CTX)
    with pytest.raises(TransformError, match="expected a node object"):
        adf.to_canonical({"type": "doc", "content": ["text"]}, CTX)
    deep: dict[str, Any] = {"type": "paragraph", "content": []}
    for _ in range(200):
        deep = {"type": "blockquote", "content": [deep]}
    with pytest.raises(TransformError, match="nested more than"):
        adf.to_canonical({"type": "doc", "content": [deep]}, CTX)


WIKI_CASES = [
    ("*bold* and _italic_", "**bold** and _italic_"),
    ("use {{kubectl get *pods*}} now", "use `kubectl get *pods*` now"),
    (
        "see [the runbook|https://wiki/x] or [https://status.example.com]",
        "see [the runbook](https://wiki/x) or <https://status.example.com>",
    ),
    ("h1. Impact\nh3. *Root* cause", "# Impact\n### **Root** cause"),
    ("* one\n** nested\n# first\n## sub", "- one\n  - nested\n1. first\n  1. sub"),
    ("bq. quoted", "> quoted"),
    ("{code:sql}\nselect *a* from b;\n{code}\nafter", "```sql\nselect *a* from b;\n```\nafter"),
    ("{noformat}\n*raw*\n{noformat}", "```\n*raw*\n```"),
    ("{code}\nx {code:java} y\n{code}", "```\nx {code:java} y\n```"),
    ("2*3*4 and a*b", "2*3*4 and a*b"),
    ("{code}never closed *b*", "{code}never closed **b**"),
]


@pytest.mark.parametrize(("wiki", "text"), WIKI_CASES)
def test_jira_wiki_to_text(wiki: str, text: str) -> None:
    assert t("jira_wiki").to_canonical(wiki, CTX) == text


@pytest.mark.parametrize(
    "text",
    [
        "**bold** and _italic_ and `co*d*e`",
        "[the runbook](https://wiki/x) and <https://status.example.com>",
        "# Impact\n\n- one\n  - nested\n1. first\n\n> quoted",
        "```python\nprint('*x*')\n```\nafter",
        "plain, text: with (punctuation)!",
    ],
)
def test_jira_wiki_round_trips_markdown(text: str) -> None:
    wiki = t("jira_wiki")
    assert wiki.to_canonical(wiki.to_remote(text, CTX), CTX) == text


def test_jira_wiki_from_markdown() -> None:
    wiki = t("jira_wiki")
    assert wiki.to_remote("**b** *i* `m` [t](http://u)\n## H\n- a\n3. n", CTX) == (
        "*b* _i_ {{m}} [t|http://u]\nh2. H\n* a\n# n"
    )
    assert wiki.to_remote(None, CTX) == "" and wiki.to_canonical(None, CTX) == ""


def test_jira_wiki_is_linear_on_hostile_input() -> None:
    wiki = t("jira_wiki")
    # CPU time of this process, not wall time: other work on the machine does not count. A
    # quadratic pattern takes minutes on these inputs, a linear one a fraction of a second.
    start = time.process_time()
    for hostile in ("{{" * 20_000, "[" * 20_000 + "|", "*a" * 20_000, "{code}" * 5_000):
        assert isinstance(wiki.to_canonical(hostile, CTX), str)
        assert isinstance(wiki.to_remote(hostile, CTX), str)
    assert time.process_time() - start < 3.0


# --- small shapes ---------------------------------------------------------------------------


def test_name_and_value_objects() -> None:
    name, value = t("name_object"), t("value_object")
    assert name.to_canonical({"name": "High", "id": "2"}, CTX) == "High"
    assert name.to_remote("High", CTX) == {"name": "High"}
    assert name.to_canonical(None, CTX) == "" and name.to_remote("", CTX) is None
    assert value.to_canonical({"value": "EU", "id": "10"}, CTX) == "EU"
    assert value.to_remote("EU", CTX) == {"value": "EU"}
    with pytest.raises(TransformError, match=r"name_object: expected \{'name': \.\.\.\}"):
        name.to_canonical({"value": "x"}, CTX)
    with pytest.raises(TransformError, match="value_object"):
        value.to_canonical(["EU"], CTX)


@pytest.mark.parametrize("name", ["name_object", "value_object"])
@FUZZ
@given(text=st.text(max_size=40))
def test_key_object_round_trip(name: str, text: str) -> None:
    transform = t(name)
    assert transform.to_canonical(transform.to_remote(text, CTX), CTX) == text


def test_names_list() -> None:
    names = t("names_list")
    assert names.to_canonical([{"name": "db", "id": "1"}, {"name": "api"}], CTX) == ("db", "api")
    assert names.to_remote(("db", "api"), CTX) == [{"name": "db"}, {"name": "api"}]
    assert names.to_canonical(None, CTX) == () and names.to_remote((), CTX) == []
    with pytest.raises(TransformError, match="names_list"):
        names.to_canonical([{"id": "1"}], CTX)
    with pytest.raises(TransformError, match="names_list"):
        names.to_remote("db", CTX)


@FUZZ
@given(st.lists(st.text(max_size=20), max_size=8).map(tuple))
def test_names_list_round_trip(value: tuple[str, ...]) -> None:
    names = t("names_list")
    assert names.to_canonical(names.to_remote(value, CTX), CTX) == value


def test_csv_list() -> None:
    csv = t("csv_list")
    assert csv.to_canonical(" a, b ,,c ", CTX) == ("a", "b", "c")
    assert csv.to_canonical("", CTX) == () and csv.to_canonical(None, CTX) == ()
    assert csv.to_remote(("a", "b"), CTX) == "a,b" and csv.to_remote((), CTX) == ""
    with pytest.raises(TransformError, match="'a,b' contains a comma"):
        csv.to_remote(("a,b",), CTX)


CSV_ITEM = st.text(
    st.characters(categories=("L", "N", "P", "S"), exclude_characters=","), min_size=1, max_size=12
)


@FUZZ
@given(st.lists(CSV_ITEM, max_size=8).map(tuple))
def test_csv_list_round_trip(value: tuple[str, ...]) -> None:
    csv = t("csv_list")
    assert csv.to_canonical(csv.to_remote(value, CTX), CTX) == value


def test_bool_string() -> None:
    flag = t("bool_string")
    assert flag.to_canonical("true", CTX) is True and flag.to_canonical("FALSE", CTX) is False
    assert flag.to_canonical(True, CTX) is True and flag.to_canonical("", CTX) is False
    assert flag.to_remote(True, CTX) == "true" and flag.to_remote(False, CTX) == "false"
    with pytest.raises(TransformError, match="'maybe' is not 'true' or 'false'"):
        flag.to_canonical("maybe", CTX)
    with pytest.raises(TransformError, match="bool_string"):
        flag.to_remote("true", CTX)
    for value in (True, False):
        assert flag.to_canonical(flag.to_remote(value, CTX), CTX) is value


def test_single() -> None:
    single = t("single")
    assert single.to_canonical("5e01", CTX) == ("5e01",)
    assert single.to_canonical("", CTX) == () and single.to_canonical(None, CTX) == ()
    assert single.to_remote(("5e01", "5e02"), CTX) == "5e01"  # one value only: the first
    assert single.to_remote((), CTX) == ""


@FUZZ
@given(st.one_of(st.just(()), st.text(min_size=1, max_size=20).map(lambda x: (x,))))
def test_single_round_trip(value: tuple[str, ...]) -> None:
    single = t("single")
    assert single.to_canonical(single.to_remote(value, CTX), CTX) == value


def test_component_statuses_follow_customer_impact_and_state() -> None:
    components = t("component_statuses")
    ctx = TransformContext(
        "statuspage",
        args={"major": "partial_outage"},
        values={"customer_impact": "major", "state": "investigating"},
    )
    assert components.to_remote(("c1", "c2"), ctx) == {
        "c1": "partial_outage",
        "c2": "partial_outage",
    }
    minor = TransformContext("statuspage", values={"customer_impact": "minor", "state": "new"})
    assert components.to_remote(("c1",), minor) == {"c1": "degraded_performance"}
    ended = TransformContext(
        "statuspage", values={"customer_impact": "critical", "state": "closed"}
    )
    assert components.to_remote(("c1",), ended) == {"c1": "operational"}
    assert components.to_remote((), ctx) == {}
    assert components.to_canonical({"c1": "operational"}, ctx) == ("c1",)
    assert components.to_canonical([{"id": "c1", "status": "operational"}], ctx) == ("c1",)
    bad = TransformContext("statuspage", args={"major": "on_fire"}, values=ctx.values)
    with pytest.raises(TransformError, match="'on_fire' is not a component status"):
        components.to_remote(("c1",), bad)


def test_context_is_hashable_and_frozen() -> None:
    ctx = TransformContext("jira", args={"a": 1}, values={"title": "x"})
    assert hash(ctx) == hash(TransformContext("jira", args={"b": 2}))
    with pytest.raises(AttributeError):
        ctx.system = "servicenow"  # type: ignore[misc]


def test_one_way_text_transforms() -> None:
    lower, strip = t("lower"), t("strip")
    assert lower.to_canonical("Payments", CTX) == "payments"
    assert lower.to_remote("Payments", CTX) == "Payments"
    assert strip.to_canonical("  x \n", CTX) == "x" and strip.to_remote(" x ", CTX) == " x "
    assert lower.to_canonical(None, CTX) == "" and strip.to_canonical(None, CTX) == ""
    with pytest.raises(TransformError, match="lower: expected text"):
        lower.to_canonical(3, CTX)


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=20), st.integers(), st.lists(st.integers())))
def test_identity(value: Any) -> None:
    identity = t("identity")
    assert identity.to_canonical(value, CTX) == value and identity.to_remote(value, CTX) == value


FUZZ_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["type", "content", "text", "name", "value", "attrs"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(sorted(TRANSFORMS)), FUZZ_VALUES)
def test_garbage_in_gives_transform_error_or_a_value(name: str, value: Any) -> None:
    transform = t(name)
    for direction in (transform.to_canonical, transform.to_remote):
        with contextlib.suppress(TransformError):
            direction(value, CTX)
