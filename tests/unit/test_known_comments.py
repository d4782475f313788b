"""Which comments an observation already tells about, so the engine need not read them."""

from __future__ import annotations

from typing import Any

from config.settings import JiraSettings, ServiceNowSettings
from connectors.base import COMMENT_EVENT_KEY, JOURNAL_KEY, Visibility
from connectors.jira.connector import JiraConnector
from connectors.servicenow.connector import ServiceNowConnector

JIRA = JiraConnector(JiraSettings.model_validate({"url": "http://jira.invalid"}))
SN = ServiceNowConnector(ServiceNowSettings.model_validate({"url": "http://sn.invalid"}))


def jira_comment(cid: str, body: str, internal: bool = False) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": cid, "body": body, "created": "2026-11-25T10:00:00.000+0000",
        "author": {"emailAddress": "bob@example.com"},
    }  # fmt: skip
    if internal:
        raw["visibility"] = {"type": "role", "value": "Developers"}
    return raw


def test_a_jira_issue_carries_its_comments_when_they_all_fit() -> None:
    page = {"comments": [jira_comment("1", "a"), jira_comment("2", "b", True)], "total": 2}
    known = JIRA.known_comments({"comment": {**page, "startAt": 0, "maxResults": 2}}, None)
    assert known is not None
    assert [(c.id, c.visibility) for c in known] == [
        ("1", Visibility.PUBLIC),
        ("2", Visibility.INTERNAL),
    ]
    # Only a page of them: they have to be read.
    assert JIRA.known_comments({"comment": {**page, "total": 3}}, None) is None
    assert JIRA.known_comments({"summary": "no comment field"}, None) is None


def test_a_jira_comment_delivered_alone_joins_the_issues_comments() -> None:
    fields = {
        "comment": {"comments": [jira_comment("1", "a")], "total": 1, "startAt": 0},
        COMMENT_EVENT_KEY: [jira_comment("2", "new"), jira_comment("1", "a")],
    }
    known = JIRA.known_comments(fields, None)
    assert known is not None and sorted(c.id for c in known) == ["1", "2"]


def sn_fields(mod_count: int, after: int | None, *entries: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"sys_mod_count": str(mod_count)}
    if after is not None:
        fields[JOURNAL_KEY] = {"after": [after], "entries": list(entries)}
    return fields


NOTE = {
    "sys_id": "j1", "element": "work_notes", "value": "db01 is full",
    "sys_created_on": "2026-11-25 10:00:00", "sys_created_by": "alice",
}  # fmt: skip


def test_servicenow_journal_is_known_only_without_a_gap() -> None:
    # Every update since the last one seen was delivered: its entries are all there is.
    known = SN.known_comments(sn_fields(5, 4, NOTE), (4,))
    assert known is not None and [(c.id, c.visibility) for c in known] == [
        ("j1", Visibility.INTERNAL)
    ]
    # Joined deliveries that start before what was seen still cover it.
    assert SN.known_comments(sn_fields(6, 3, NOTE), (4,)) is not None
    # An update in between was not delivered: only a read can tell what it wrote.
    assert SN.known_comments(sn_fields(6, 5, NOTE), (4,)) is None
    # Nothing seen yet, or a delivery that says nothing of the journal: read.
    assert SN.known_comments(sn_fields(5, 4, NOTE), None) is None
    assert SN.known_comments(sn_fields(5, None), (4,)) is None
    # The record is where it was when last seen: nothing new.
    assert SN.known_comments(sn_fields(4, None), (4,)) == []
