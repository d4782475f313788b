"""Mapping files: every problem at once, with file, line and path; two-way value maps."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping.engine import from_canonical, to_canonical
from mapping.model import Incident
from mapping.spec import MappingError, MappingFileError, parse_mapping
from mapping.transforms import TransformContext

BAD = """\
system: servicenow
object_type: incident
fields:
  severity:
    path: priority
    values: {SEV1: "1", P5: "5"}
  stat:
    path: state
  title:
    path: short_description
    policy: owner:nobody
  state:
    path: state
    values: {new: "1", investigating: "2", identified: "2"}
  description:
    path: description
    template: "{{ title.__class__ }}"
    direction: out
  assignee:
    path: assigned_to
    transform: persn
  team:
    path: assignment_group
    bogus: 1
"""


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    with pytest.raises(MappingFileError) as failure:
        parse_mapping(BAD, name="servicenow.yaml")
    lines = str(failure.value).splitlines()
    expected = [
        "servicenow.yaml:6 fields.severity.values: 'P5' is not a canonical severity (SEV1, SEV2, SEV3, SEV4)",
        "servicenow.yaml:7 fields.stat: not a canonical field",
        "servicenow.yaml:11 fields.title.policy: 'owner:nobody': use `latest` or `owner:<system>`",
        "servicenow.yaml:14 fields.state.values: remote value '2' is shared by investigating, identified",
        "servicenow.yaml:17 fields.description.template: template line 1",
        "servicenow.yaml:21 fields.assignee.transform: unknown transform 'persn'",
        "servicenow.yaml:24 fields.team.bogus: unknown key",
    ]
    assert len(lines) == len(expected), lines
    for want, got in zip(expected, lines, strict=True):
        assert got.startswith(want), (want, got)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "system: servicenow\nobject_type: incident\nfields: [",
            "servicenow.yaml:3: not valid YAML",
        ),
        ("- a\n- b\n", "expected a mapping"),
        (
            "system: zendesk\nobject_type: ticket\nfields: {}\n",
            "servicenow.yaml:1 system: 'zendesk' is not allowed",
        ),
        (
            "system: jira\nobject_type: incident\nfields: {}\n",
            "servicenow.yaml:2 object_type: jira maps issue",
        ),
        (
            "system: jira\nobject_type: issue\nwhen: severity = 'SEV1'\nfields: {}\n",
            "servicenow.yaml:3 when:",
        ),
        ("system: jira\nobject_type: issue\n", "fields: required"),
    ],
)
def test_structural_problems(text: str, message: str) -> None:
    with pytest.raises(MappingFileError, match=None) as failure:
        parse_mapping(text, name="servicenow.yaml")
    assert message in str(failure.value)


def test_keep_is_refused_for_enumerated_fields() -> None:
    text = (
        "system: jira\nobject_type: issue\nfields:\n  severity:\n    path: priority.name\n"
        "    values: {SEV1: Highest}\n    unknown: keep\n"
    )
    with pytest.raises(MappingFileError, match=r":7 fields\.severity\.unknown: `keep` would put"):
        parse_mapping(text, name="jira.yaml")


CTX = TransformContext(system="servicenow")
SEVERITIES = ["SEV1", "SEV2", "SEV3", "SEV4"]
remote_values = st.text(
    alphabet=string.ascii_letters + string.digits + " -", min_size=1, max_size=8
)


@st.composite
def value_maps(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, str], bool]:
    """A severity value map with many-to-one in both directions, a reverse for every shared
    remote value, and whether that reverse is valid (the value it reads as writes it back)."""
    pool = draw(st.lists(remote_values, min_size=1, max_size=6, unique=True))
    values = {
        sev: draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        for sev in SEVERITIES
    }
    owners: dict[str, list[str]] = {}
    for sev, remotes in values.items():
        for remote in remotes:
            owners.setdefault(remote, []).append(sev)
    reverse = {r: draw(st.sampled_from(sevs)) for r, sevs in owners.items() if len(sevs) > 1}
    valid = all(values[sev][0] == r for r, sev in reverse.items())
    return values, reverse, valid


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value_maps())
def test_value_maps_round_trip(case: tuple[dict[str, list[str]], dict[str, str], bool]) -> None:
    values, reverse, valid = case
    text = yaml.safe_dump(
        {
            "system": "servicenow",
            "object_type": "incident",
            "fields": {"severity": {"path": "priority", "values": values, "reverse": reverse}},
        }
    )
    if not valid:
        with pytest.raises(MappingFileError, match="writes"):
            parse_mapping(text)
        return
    mapping = parse_mapping(text)
    for sev in SEVERITIES:
        written = from_canonical(mapping, Incident(severity=sev), CTX)["priority"]
        assert written == values[sev][0]  # the first remote value is the one written
        read = to_canonical(mapping, {"priority": written}, CTX)["severity"]
        if reverse.get(written, sev) == sev:
            assert read == sev  # out-then-in returns the original
        else:
            assert read == reverse[written]  # a shared value reads as the named reverse
        # stable: writing what was read writes the same value again, so nothing flip-flops
        assert from_canonical(mapping, Incident(severity=read), CTX)["priority"] == written
    for remotes in values.values():
        for remote in remotes:
            read = to_canonical(mapping, {"priority": remote}, CTX)["severity"]
            assert remote in values[read]  # every remote value reads as a value it belongs to


def test_unknown_rules() -> None:
    def load(rule: str) -> object:
        return parse_mapping(
            "system: servicenow\nobject_type: incident\nfields:\n  team:\n    path: assignment_group\n"
            f"    values: {{sre: g1, network: g2}}\n    unknown: {rule}\n"
        )

    with pytest.raises(MappingError, match="remote value 'g9' has no canonical value"):
        to_canonical(load("error"), {"assignment_group": "g9"}, CTX)  # type: ignore[arg-type]
    assert to_canonical(load("keep"), {"assignment_group": "g9"}, CTX) == {"team": "g9"}  # type: ignore[arg-type]
    assert to_canonical(load("{default: sre}"), {"assignment_group": "g9"}, CTX) == {"team": "sre"}  # type: ignore[arg-type]


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["path", "values", "reverse", "unknown", "transform", "template", "direction",
                 "policy", "when", "args", "default", "severity", "state", "title", "x"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "system": st.sampled_from(["servicenow", "jira", "statuspage", "x"]),
            "object_type": st.sampled_from(["incident", "issue", "y"]),
            "when": yaml_scalars,
            "fields": st.dictionaries(
                st.sampled_from(["title", "severity", "state", "services", "public", "nope"]),
                yaml_values,
                max_size=4,
            ),
        },
    )
)
def test_fuzzed_files_load_or_explain(document: dict[str, object]) -> None:
    text = yaml.safe_dump(document)
    try:
        parse_mapping(text, name="fuzz.yaml")
    except MappingFileError as exc:
        assert exc.problems and all(str(p).startswith("fuzz.yaml") for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_text_loads_or_explains(text: str) -> None:
    try:
        parse_mapping(text, name="fuzz.yaml")
    except MappingFileError as exc:
        assert exc.problems


TERMINAL = """\
system: jira
object_type: issue
fields:
  state:
    - path: status.name
      values: {new: Open, investigating: "In Progress", resolved: Resolved, closed: Closed}
      terminal: [closed, canceled]
    - path: resolution.name
      direction: in
      values: {canceled: ["Won't Do", Duplicate]}
      unknown: ignore
"""


def test_terminal_states_come_from_the_mapping_and_a_refining_reader_can_cancel() -> None:
    mapping = parse_mapping(TERMINAL, name="jira.yaml")
    assert mapping.terminal_states == {"closed", "canceled"}
    ctx = TransformContext(system="jira")
    read = lambda status, resolution: to_canonical(  # noqa: E731
        mapping, {"status": {"name": status}, "resolution": {"name": resolution}}, ctx
    )["state"]
    assert read("Resolved", "Won't Do") == "canceled"
    assert read("Closed", "Duplicate") == "canceled"
    assert read("Resolved", "Done") == "resolved"  # not one it speaks for: the status stands
    assert read("In Progress", None) == "investigating"


def test_terminal_and_ignore_are_checked_where_they_are_written() -> None:
    text = """\
system: servicenow
object_type: incident
fields:
  state:
    path: state
    values: {new: "1", closed: "7"}
    terminal: [closed, gone]
  title:
    path: short_description
    terminal: [closed]
  severity:
    path: priority
    values: {SEV1: "1"}
    unknown: ignore
"""
    with pytest.raises(MappingFileError) as failure:
        parse_mapping(text, name="servicenow.yaml")
    message = str(failure.value)
    assert "servicenow.yaml:7 fields.state.terminal: 'gone' is not a canonical state" in message
    assert "servicenow.yaml:10 fields.title.terminal: only the state field" in message
    assert "servicenow.yaml:14 fields.severity.unknown: `ignore` is for a second reader" in message


def test_the_shipped_mappings_name_their_terminal_states() -> None:
    from mapping.registry import load_mappings

    mappings = load_mappings()
    assert mappings.get("servicenow").terminal_states == {"closed", "canceled"}
    assert mappings.get("jira").terminal_states == {"closed", "canceled"}
    assert mappings.terminal_states() == {"closed", "canceled"}
