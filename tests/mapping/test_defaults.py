"""The shipped default mappings, applied to the real payloads recorded in api-contracts."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import httpx
import pytest

from connectors.servicenow.connector import plain
from mapping.engine import applies, build_incident, from_canonical, to_canonical
from mapping.model import Comment, Impact, Incident, Severity, State
from mapping.registry import load_mappings
from mapping.transforms import TransformContext
from simulators.runner import SimulatorCluster
from tests.contracts import CONTRACTS

MAPPINGS = load_mappings()


class Directory:
    """Stands in for a remote system's user directory (not for our code)."""

    def __init__(self, people: dict[str, str]) -> None:
        self.by_id = people
        self.by_email = {email: pid for pid, email in people.items()}

    def email_for(self, person_id: str) -> str:
        return self.by_id[person_id]

    def id_for(self, email: str) -> str:
        return self.by_email[email]


SN = TransformContext(system="servicenow", people=Directory({"a" * 32: "alice@example.com"}))
JIRA = TransformContext(
    system="jira", people=Directory({"5b10ac8d82e05b22cc7d4ef5": "alice@example.com"})
)
SP = TransformContext(system="statuspage")


def recorded_servicenow_incident() -> dict[str, Any]:
    text = (CONTRACTS / "servicenow" / "docs" / "c_TableAPI.md").read_text()
    for block in re.findall(r"```(?:json)?\n(.*?)```", text, re.S):
        if "INC0000046" in block:
            result = json.loads(block)["result"]
            return plain(result[0] if isinstance(result, list) else result)
    raise AssertionError("the documented INC0000046 example is gone")


def test_servicenow_default_on_the_documented_incident() -> None:
    values = to_canonical(MAPPINGS.get("servicenow"), recorded_servicenow_incident(), SN)
    incident = build_incident(values)
    assert incident.title == "Can't access SFA software"
    assert incident.severity is Severity.SEV3  # priority 3
    assert incident.state is State.NEW  # state 1
    assert incident.assignee == ""
    assert incident.team == "8a4dde73c6112278017a6a4baf547aa7"  # an unmapped group is kept
    assert incident.started_at == dt.datetime(2015, 11, 2, 22, 4, 15, tzinfo=dt.UTC)
    assert incident.resolved_at is None and incident.resolution.code == ""


def jira_issue(name: str) -> dict[str, Any]:
    if name == "FOO-123":
        path = (
            CONTRACTS
            / "jira"
            / "recorded"
            / "atlassian-python-api"
            / "rest_api_2_issue_FOO-123_GET.json"
        )
        return dict(json.loads(path.read_text())["fields=*all"]["fields"])
    return dict(json.loads((CONTRACTS / "jira" / "webhooks" / name).read_text())["issue"]["fields"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("FOO-123", {"title": "Sample", "severity": "SEV3", "state": "new", "labels": ("sample",)}),
        (
            "issue_created.json",
            {
                "title": "New bug with hook",
                "severity": "SEV2",
                "state": "new",
                "description": "Fix me please",
            },
        ),
        (
            "issue_updated__status.json",
            {"title": "Fix That", "severity": "SEV3", "state": "investigating"},
        ),
    ],
)
def test_jira_default_on_recorded_issues(name: str, expected: dict[str, Any]) -> None:
    incident = build_incident(to_canonical(MAPPINGS.get("jira"), jira_issue(name), JIRA))
    got = incident.model_dump(mode="json")
    for field, value in expected.items():
        want = list(value) if isinstance(value, tuple) else value
        assert got[field] == want, (field, got[field])
    assert incident.assignee == "" and incident.services == ()


def test_jira_default_writes_what_jira_accepts() -> None:
    incident = Incident(
        title="Checkout down",
        description="**Checkout** fails, see [runbook](https://runbooks/checkout)",
        severity=Severity.SEV1,
        state=State.IDENTIFIED,
        assignee="alice@example.com",
        services=("checkout", "payments"),
        customer_impact=Impact.MAJOR,
    )
    patch = from_canonical(MAPPINGS.get("jira"), incident, JIRA)
    assert patch["summary"] == "Checkout down"
    assert patch["description"] == "*Checkout* fails, see [runbook|https://runbooks/checkout]"
    assert patch["priority"] == {"name": "Highest"}
    assert patch["status"] == {"name": "In Progress"}
    assert patch["assignee"] == {"accountId": "5b10ac8d82e05b22cc7d4ef5"}
    assert patch["components"] == [{"name": "Checkout"}, {"name": "Payments"}]
    assert patch["customfield_10012"] == {"value": "Major"}
    assert "resolution" not in patch  # read only: set by a transition


def test_servicenow_default_writes_impact_and_urgency_not_priority() -> None:
    incident = Incident(
        title="x",
        severity=Severity.SEV2,
        state=State.RESOLVED,
        assignee="alice@example.com",
        services=("search",),
    )
    patch = from_canonical(MAPPINGS.get("servicenow"), incident, SN)
    assert "priority" not in patch
    assert (patch["impact"], patch["urgency"], patch["state"]) == ("1", "2", "6")
    assert patch["assigned_to"] == "a" * 32
    assert patch["business_service"] == "5e000000000000000000000000000003"


SP_INCIDENT_KEYS = set(
    json.loads((CONTRACTS / "statuspage" / "webhooks" / "incident_created.json").read_text())[
        "incident"
    ]
)
SP_STATUSES = {"investigating", "identified", "monitoring", "resolved"}
SP_COMPONENT = {
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
}


def test_statuspage_default_is_public_only() -> None:
    secret = Incident(
        title="db01 disk full on payments-prod",
        description="root password rotated",
        severity=Severity.SEV1,
        state=State.IDENTIFIED,
        public=True,
        public_message="Payments are failing for some customers.",
        services=("payments",),
        customer_impact=Impact.CRITICAL,
        comments=(Comment(body="internal: restart db01"),),
    )
    mapping = MAPPINGS.get("statuspage")
    assert applies(mapping, secret)
    patch = from_canonical(mapping, secret, SP)
    text = json.dumps(patch)
    for leak in ("db01", "root password", "restart", "payments-prod"):
        assert leak not in text, leak
    assert patch["body"] == "Payments are failing for some customers."
    assert patch["name"] == "Payments: service disruption"
    assert set(patch) - {"body", "components", "impact_override"} <= SP_INCIDENT_KEYS
    assert patch["status"] in SP_STATUSES
    assert patch["components"] == {"cmppayments1": "major_outage"}
    assert set(patch["components"].values()) <= SP_COMPONENT
    resolved = from_canonical(mapping, secret.model_copy(update={"state": State.RESOLVED}), SP)
    assert resolved["status"] == "resolved" and resolved["components"] == {
        "cmppayments1": "operational"
    }


@pytest.mark.parametrize(
    "incident",
    [
        Incident(title="x", severity=Severity.SEV1, public=False),
        Incident(title="x", severity=Severity.SEV3, public=True),
        Incident(title="x", public=True),
    ],
)
def test_statuspage_default_skips_what_does_not_warrant_it(incident: Incident) -> None:
    assert not applies(MAPPINGS.get("statuspage"), incident)


@pytest.mark.parametrize("severity", ["SEV1", "SEV2", "SEV3", "SEV4"])
def test_severity_maps_to_the_priority_of_the_same_number_and_back(
    severity: str, sims: SimulatorCluster
) -> None:
    """SEV1..SEV4 are P1..P4 in ServiceNow (the standard impact x urgency matrix, which the
    instance derives the priority from), and P1..P4 read back as the same severity."""
    mapping = load_mappings().get("servicenow")
    ctx = TransformContext(system="servicenow")
    patch = from_canonical(mapping, Incident(title="x", severity=Severity(severity)), ctx)
    r = httpx.post(
        f"{sims.urls['servicenow']}/api/now/table/incident", auth=("admin", "admin"),
        json={"short_description": "matrix", "impact": patch["impact"], "urgency": patch["urgency"]},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    priority = r.json()["result"]["priority"]
    assert priority == severity[-1]
    assert to_canonical(mapping, {"priority": priority}, ctx)["severity"] == severity
