"""The chaos run's counts (``tests/chaos/run.py``) on made-up end states: each count sees what
it is defined to count, and a converged pair scores 0 everywhere."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chaos.run import COUNTS, Comment, Incident, Seen, Write, check

SYS_ID = "0" * 31 + "1"
KEY = "itsm-0001"


def _incident() -> Incident:
    p = Incident(0, "chaos000x", sys_id=SYS_ID, number="INC0010001", jira_key="OPS-1")
    p.writes["title"] += [
        Write(100.0, "servicenow", "chaos000x v0"),
        Write(200.0, "jira", "chaos000x v1"),
    ]
    p.writes["description"].append(Write(100.0, "servicenow", "chaos000x d"))
    p.writes["severity"].append(Write(100.0, "servicenow", "SEV1"))
    p.writes["state"] += [Write(100.0, "servicenow", "new"), Write(300.0, "jira", "resolved")]
    p.comments += [
        Comment("WN000q1z", "servicenow", True, "work_note"),
        Comment("JC000q2z", "jira", True, "jsm_internal"),
        Comment("SC000q3z", "servicenow", False, "comment"),
    ]
    p.public = True
    return p


def _seen() -> Seen:
    """Everything as it must end up for :func:`_incident`."""
    sn = {
        "sys_id": SYS_ID,
        "number": "INC0010001",
        "short_description": "chaos000x v1",
        "description": "chaos000x d",
        "priority": "1",
        "state": "6",
    }
    issue = {
        "key": "OPS-1",
        "fields": {
            "summary": "chaos000x v1",
            "description": "chaos000x d",
            "priority": {"name": "Highest"},
            "status": {"name": "Resolved"},
            "labels": [KEY],
        },
    }
    journal = [
        {"element": "work_notes", "value": "WN000q1z"},
        {"element": "work_notes", "value": "[Jira OPS-1] JC000q2z"},
        {"element": "comments", "value": "SC000q3z"},
    ]
    comments = [
        {"body": "[ServiceNow] WN000q1z", "visibility": {"type": "role", "value": "Developers"}},
        {"body": "JC000q2z", "jsdPublic": False},
        {"body": "[ServiceNow] SC000q3z"},
    ]
    page = {"id": "p1", "status": "resolved", "metadata": {"itsm_sync": {"correlation_key": KEY}}}
    return Seen(
        sn={SYS_ID: sn},
        journal={SYS_ID: journal},
        issues=[issue],
        comments={"OPS-1": comments},
        pages=[page],
        parks=[],
        queued=0,
        keys={SYS_ID: KEY},
    )


def _counts(seen: Seen) -> dict[str, int]:
    counts, _ = check([_incident()], seen)
    return counts


def test_a_converged_pair_counts_nothing() -> None:
    assert _counts(_seen()) == dict.fromkeys(COUNTS, 0)


def _changed(change: Any) -> Seen:
    seen = copy.deepcopy(_seen())
    change(seen)
    return seen


@pytest.mark.parametrize(
    ("what", "change", "expected"),
    [
        ("no Jira issue", lambda s: s.issues.clear(), {"lost creates": 1}),
        ("no status page incident", lambda s: s.pages.clear(), {"lost creates": 1}),
        (
            "a second issue",
            lambda s: s.issues.append({**s.issues[0], "key": "OPS-2"}),
            {"duplicates": 1},
        ),
        (
            "a comment twice",
            lambda s: s.comments["OPS-1"].append({"body": "[ServiceNow] SC000q3z"}),
            {"duplicates": 1},
        ),
        (
            "the older title won on both sides",
            lambda s: (
                s.sn[SYS_ID].update(short_description="chaos000x v0"),
                s.issues[0]["fields"].update(summary="chaos000x v0"),
            ),
            {"lost updates": 1},
        ),
        (
            "the older title on ServiceNow only",
            lambda s: s.sn[SYS_ID].update(short_description="chaos000x v0"),
            {"lost updates": 1, "stale fields": 1},
        ),
        (
            "a comment that never crossed",
            lambda s: s.journal[SYS_ID].pop(1),
            {"lost updates": 1},
        ),
        (
            "a parked incident",
            lambda s: s.parks.append(("i1", "jira:default", "no such transition")),
            {"false parks": 1},
        ),
        (
            "a work note made a public Jira comment",
            lambda s: s.comments["OPS-1"][0].pop("visibility"),
            {"leaked internal comments": 1},
        ),
        (
            "a JSM internal comment made a ServiceNow comment",
            lambda s: s.journal[SYS_ID][1].update(element="comments"),
            {"leaked internal comments": 1},
        ),
        (
            "a work note on the status page",
            lambda s: s.pages[0].update(body="WN000q1z"),
            {"leaked internal comments": 1},
        ),
        (
            "the page still open",
            lambda s: s.pages[0].update(status="investigating"),
            {"stale fields": 1},
        ),
    ],
)
def test_each_count_sees_its_thing(what: str, change: Any, expected: dict[str, int]) -> None:
    assert _counts(_changed(change)) == {**dict.fromkeys(COUNTS, 0), **expected}, what


def test_writes_on_both_sides_within_a_second_are_a_tie() -> None:
    """ServiceNow keeps time to the second: either of two writes 0.4 s apart may win."""
    p = _incident()
    p.writes["title"].append(Write(200.4, "servicenow", "chaos000x v2"))
    counts, _ = check([p], _seen())  # v1 (Jira, 0.4 s earlier) won: a tie, not a lost update
    assert counts["lost updates"] == 0
    p.writes["title"][-1].at = 201.5
    counts, why = check([p], _seen())
    assert counts["lost updates"] == 1, why
