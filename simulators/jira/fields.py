"""Jira's system fields as ``GET /field`` lists them, and which screens they are on.

One table drives ``/field``, ``names``/``schema`` expansion, create/edit metadata, the
"cannot be set" checks and the order of ``fields`` in an issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CANNOT_SET = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."


@dataclass(frozen=True)
class SystemField:
    id: str
    name: str
    schema: dict[str, Any] | None
    clauses: tuple[str, ...] = ()
    navigable: bool = True
    orderable: bool = False
    searchable: bool = True
    create: bool = False  # on the create screen
    edit: bool = False  # on the edit screen
    ops: tuple[str, ...] = ("set",)
    changelog_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _s(type_: str, system: str, items: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if items:
        out["items"] = items
    out["system"] = system
    return out


SYSTEM_FIELDS: tuple[SystemField, ...] = (
    SystemField(
        "statuscategorychangedate",
        "Status Category Changed",
        _s("datetime", "statuscategorychangedate"),
        ("statusCategoryChangedDate",),
    ),
    SystemField(
        "issuetype",
        "Issue Type",
        _s("issuetype", "issuetype"),
        ("issuetype", "type"),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField("timespent", "Time Spent", _s("number", "timespent"), ("timespent",)),
    SystemField(
        "project", "Project", _s("project", "project"), ("project",), orderable=True, create=True
    ),
    SystemField(
        "fixVersions",
        "Fix versions",
        _s("array", "fixVersions", "version"),
        ("fixVersion",),
        orderable=True,
    ),
    SystemField("aggregatetimespent", "Σ Time Spent", _s("number", "aggregatetimespent")),
    SystemField(
        "resolution", "Resolution", _s("resolution", "resolution"), ("resolution",), orderable=True
    ),
    SystemField(
        "resolutiondate",
        "Resolved",
        _s("datetime", "resolutiondate"),
        ("resolutiondate", "resolved"),
    ),
    SystemField("workratio", "Work Ratio", _s("number", "workratio"), ("workratio",)),
    SystemField("watches", "Watchers", _s("watches", "watches"), ("watchers",)),
    SystemField("lastViewed", "Last Viewed", _s("datetime", "lastViewed"), ("lastViewed",)),
    SystemField("created", "Created", _s("datetime", "created"), ("created", "createdDate")),
    SystemField(
        "priority",
        "Priority",
        _s("priority", "priority"),
        ("priority",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField(
        "labels",
        "Labels",
        _s("array", "labels", "string"),
        ("labels",),
        orderable=True,
        create=True,
        edit=True,
        ops=("add", "set", "remove"),
    ),
    SystemField(
        "timeestimate",
        "Remaining Estimate",
        _s("number", "timeestimate"),
        ("remainingEstimate", "timeestimate"),
    ),
    SystemField(
        "aggregatetimeoriginalestimate",
        "Σ Original Estimate",
        _s("number", "aggregatetimeoriginalestimate"),
    ),
    SystemField(
        "versions",
        "Affects versions",
        _s("array", "versions", "version"),
        ("affectedVersion",),
        orderable=True,
    ),
    SystemField(
        "issuelinks",
        "Linked Issues",
        _s("array", "issuelinks", "issuelinks"),
        ("issueLink",),
        ops=("add",),
    ),
    SystemField(
        "assignee",
        "Assignee",
        _s("user", "assignee"),
        ("assignee",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField("updated", "Updated", _s("datetime", "updated"), ("updated", "updatedDate")),
    SystemField("status", "Status", _s("status", "status"), ("status",)),
    SystemField(
        "components",
        "Components",
        _s("array", "components", "component"),
        ("component",),
        orderable=True,
        create=True,
        edit=True,
        ops=("add", "set", "remove"),
        changelog_name="Component",
    ),
    SystemField(
        "timeoriginalestimate",
        "Original estimate",
        _s("number", "timeoriginalestimate"),
        ("originalEstimate", "timeoriginalestimate"),
    ),
    SystemField(
        "description",
        "Description",
        _s("string", "description"),
        ("description",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField(
        "timetracking", "Time tracking", _s("timetracking", "timetracking"), orderable=True
    ),
    SystemField(
        "security", "Security Level", _s("securitylevel", "security"), ("level",), orderable=True
    ),
    SystemField(
        "attachment",
        "Attachment",
        _s("array", "attachment", "attachment"),
        ("attachments",),
        orderable=True,
    ),
    SystemField(
        "aggregatetimeestimate", "Σ Remaining Estimate", _s("number", "aggregatetimeestimate")
    ),
    SystemField(
        "summary",
        "Summary",
        _s("string", "summary"),
        ("summary",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField("creator", "Creator", _s("user", "creator"), ("creator",)),
    SystemField("subtasks", "Sub-tasks", _s("array", "subtasks", "issuelinks"), ("subtasks",)),
    SystemField(
        "reporter",
        "Reporter",
        _s("user", "reporter"),
        ("reporter",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField("aggregateprogress", "Σ Progress", _s("progress", "aggregateprogress")),
    SystemField(
        "environment",
        "Environment",
        _s("string", "environment"),
        ("environment",),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField(
        "duedate",
        "Due date",
        _s("date", "duedate"),
        ("due", "duedate"),
        orderable=True,
        create=True,
        edit=True,
    ),
    SystemField("progress", "Progress", _s("progress", "progress"), ("progress",)),
    SystemField("votes", "Votes", _s("votes", "votes"), ("votes",)),
    SystemField(
        "comment",
        "Comment",
        _s("comments-page", "comment"),
        ("comment",),
        navigable=False,
        orderable=True,
        ops=("add", "edit", "remove"),
    ),
    SystemField(
        "worklog", "Log Work", _s("array", "worklog", "worklog"), navigable=False, orderable=True
    ),
    SystemField(
        "issuerestriction",
        "Restrict to",
        _s("issuerestriction", "issuerestriction"),
        navigable=False,
        orderable=True,
    ),
)

# Fields in /field that are not issue fields (no schema).
PSEUDO_FIELDS: tuple[dict[str, Any], ...] = (
    {
        "id": "issuekey",
        "key": "issuekey",
        "name": "Key",
        "custom": False,
        "orderable": False,
        "navigable": True,
        "searchable": False,
        "clauseNames": ["id", "issue", "issuekey", "key"],
    },
    {
        "id": "thumbnail",
        "key": "thumbnail",
        "name": "Images",
        "custom": False,
        "orderable": False,
        "navigable": True,
        "searchable": False,
        "clauseNames": [],
    },
    {
        "id": "statusCategory",
        "key": "statusCategory",
        "name": "Status Category",
        "custom": False,
        "orderable": False,
        "navigable": True,
        "searchable": True,
        "clauseNames": ["statusCategory"],
        "schema": {"type": "statusCategory", "system": "statusCategory"},
    },
)

BY_ID: dict[str, SystemField] = {f.id: f for f in SYSTEM_FIELDS}
RICH_TEXT = ("description", "environment")
DATE_TIME_FIELDS = (
    "created",
    "updated",
    "resolutiondate",
    "statuscategorychangedate",
    "lastViewed",
)
