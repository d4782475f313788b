"""Proactive budgets: we stay under each system's limit instead of waiting for its 429."""

from __future__ import annotations

import itertools

import httpx
import pytest

from connectors.jira import JiraConnector
from connectors.statuspage import StatuspageConnector
from simulators.runner import SimulatorCluster
from tests.systems import jira_settings, statuspage_settings


def statuspage(sims: SimulatorCluster) -> tuple[str, StatuspageConnector]:
    url = sims.urls["statuspage"]
    # The documented limit (60 requests in any 60 s, answered with 420) and the shipped
    # budget (1 request/s, burst 1).
    httpx.delete(f"{url}/_sim/ratelimit").raise_for_status()
    httpx.delete(f"{url}/_sim/requests").raise_for_status()
    settings = statuspage_settings(f"{url}/v1")
    assert settings.requests_per_second == 1.0 and settings.burst == 1.0
    return url, StatuspageConnector(settings)


def request_times(url: str) -> list[float]:
    log = httpx.get(f"{url}/_sim/requests").json()["requests"]
    return [r["time"] for r in log if r["path"].startswith("/v1/")]


def test_statuspage_requests_are_paced_at_one_per_second(sims: SimulatorCluster) -> None:
    url, connector = statuspage(sims)
    for _ in range(4):
        connector.get("component", "cmpcheckout1")
    times = request_times(url)
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, f"requests closer than 1 s apart: {gaps}"


@pytest.mark.slow
def test_statuspage_never_sees_a_420_over_a_full_window(sims: SimulatorCluster) -> None:
    url, connector = statuspage(sims)
    for _ in range(70):  # more than the 60 the window allows, so a burst would be refused
        connector.get("component", "cmpcheckout1")
    log = httpx.get(f"{url}/_sim/requests").json()["requests"]
    statuses = [r["status"] for r in log if r["path"].startswith("/v1/")]
    assert len(statuses) == 70 and set(statuses) == {200}


def test_jira_per_issue_write_limit_is_never_hit(empty_sims: SimulatorCluster) -> None:
    url = empty_sims.urls["jira"]
    connector = JiraConnector(jira_settings(url))
    issue = connector.create(
        "issue", {"summary": "busy", "issuetype": {"name": "Incident"}}, correlation_key="budget-1"
    )
    httpx.delete(f"{url}/_sim/requests").raise_for_status()
    for i in range(30):  # 30 writes as fast as we may: Jira allows 20 per issue in 2 s
        connector.update(issue.ref, {"summary": f"busy {i}"})
    log = httpx.get(f"{url}/_sim/requests").json()["requests"]
    writes = [r for r in log if r["method"] == "PUT"]
    assert len(writes) == 30
    # 200: the edit asks for the issue back (returnIssue=true), so no GET follows each PUT
    assert {r["status"] for r in writes} == {200}, "a write hit Jira's per-issue limit"
    assert not [r for r in log if r["method"] == "GET"]
    assert connector.get("issue", issue.ref.id).fields["summary"] == "busy 29"
