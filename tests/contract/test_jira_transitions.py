"""Jira transitions cost one read of the workflow per issue type and status, not one per move;
a workflow that changed under us is read again."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from connectors.jira.connector import JiraConnector
from simulators.runner import SimulatorCluster
from tests.systems import FIXTURES, jira_settings

FIXTURES_JIRA = FIXTURES / "jira.json"


def _calls(url: str) -> list[str]:
    log = httpx.get(f"{url}/_sim/requests").json()["requests"]
    return [f"{r['method']} {r['route']}" for r in log if not r["path"].startswith("/_sim")]


def _issue(connector: JiraConnector) -> Any:
    fields = {"summary": "moves", "issuetype": {"name": "Incident"}}
    return connector.create("issue", fields, correlation_key=f"itsm-{uuid.uuid4().hex[:12]}")


def test_the_workflow_is_read_once_per_status(sims: SimulatorCluster) -> None:
    url = sims.urls["jira"]
    connector = JiraConnector(jira_settings(url))
    first, second = _issue(connector), _issue(connector)
    assert connector.transition(first.ref, "In Progress").fields["status"]["name"] == "In Progress"
    httpx.delete(f"{url}/_sim/requests").raise_for_status()
    moved = connector.transition(second.ref, "In Progress")
    assert moved.fields["status"]["name"] == "In Progress"
    assert _calls(url) == [
        "GET /rest/api/{version}/issue/{issueIdOrKey}",
        "POST /rest/api/{version}/issue/{issueIdOrKey}/transitions",
        "GET /rest/api/{version}/issue/{issueIdOrKey}",
    ]


def test_a_changed_workflow_is_learned_again(sims: SimulatorCluster) -> None:
    url = sims.urls["jira"]
    connector = JiraConnector(jira_settings(url))
    first, second = _issue(connector), _issue(connector)
    connector.transition(first.ref, "In Progress")  # learns "Start Progress" is id 11
    workflow = json.loads(FIXTURES_JIRA.read_text())["workflow"]
    for t in workflow["transitions"]:
        t["id"] = str(int(t["id"]) + 100)  # an admin rebuilt the workflow: new ids
    httpx.post(f"{url}/_sim/seed", json={"workflow": workflow}).raise_for_status()
    try:
        moved = connector.transition(second.ref, "In Progress")
        assert moved.fields["status"]["name"] == "In Progress"
    finally:
        original = json.loads(FIXTURES_JIRA.read_text())["workflow"]
        httpx.post(f"{url}/_sim/seed", json={"workflow": original}).raise_for_status()
