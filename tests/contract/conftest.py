"""One harness per connector, on the session's simulators (reset and seeded per test)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import httpx
import pytest

from config.settings import JiraSettings, ServiceNowSettings, StatuspageSettings
from connectors.base import RemoteRecord
from connectors.http import reset_buckets
from connectors.jira import JiraConnector
from connectors.servicenow import ServiceNowConnector
from connectors.statuspage import StatuspageConnector
from simulators.runner import SimulatorCluster
from tests.contract.harness import FAST_RETRY, Forged, Forgery, Harness, Move

SN_SECRET = "sn-hook-secret-value"
SN_PASSWORD = "admin"


def servicenow_harness(sims: SimulatorCluster) -> Harness:
    url = sims.urls["servicenow"]

    def settings(password: str = SN_PASSWORD, timeout: float = 10.0) -> ServiceNowSettings:
        return ServiceNowSettings.model_validate(
            {
                "url": url,
                "password": password,
                "webhook_secret": SN_SECRET,
                "timeout_seconds": timeout,
            }
        )

    def raw_edit(record: RemoteRecord, title: str) -> None:
        r = httpx.patch(
            f"{url}/api/now/table/{record.ref.object_type}/{record.ref.id}",
            json={"short_description": title},
            auth=("admin", SN_PASSWORD),
        )
        r.raise_for_status()

    def wrong_secret(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
        return {**headers, "X-ServiceNow-Secret": "not-the-secret"}, body, query

    def no_secret(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
        return {k: v for k, v in headers.items() if k.lower() != "x-servicenow-secret"}, body, query

    def resolved(state: str) -> Move:
        return Move(
            state,
            {"close_code": "Solution provided", "close_notes": "disk cleaned"},
            lambda r: r.fields["state"] == state and r.fields["close_code"] == "Solution provided",
        )

    return Harness(
        name="servicenow",
        connector=ServiceNowConnector(settings(), retry=FAST_RETRY),
        object_type="incident",
        sims=sims,
        new_fields=lambda title: {"short_description": title, "impact": "2", "urgency": "2"},
        edit=lambda title: {"short_description": title},
        title_of=lambda r: str(r.fields["short_description"]),
        raw_edit=raw_edit,
        moves=[
            Move("2", {}, lambda r: r.fields["state"] == "2"),
            Move("3", {"hold_reason": "1"}, lambda r: r.fields["state"] == "3"),
            resolved("6"),
            resolved("7"),
        ],
        create_route="POST /api/now/table/{table}",
        get_route="GET /api/now/table/{table}",
        webhook_secret=SN_SECRET,
        forgeries=[wrong_secret, no_secret],
        secrets=[SN_SECRET],
        bad_credentials=lambda: ServiceNowConnector(
            settings("wrong-secret-value"), retry=FAST_RETRY
        ),
        with_timeout=lambda t: ServiceNowConnector(settings(timeout=t), retry=FAST_RETRY),
    )


SP_KEY = "sim-key"
SP_SECRET = "sp-hook-token-value"


def statuspage_harness(sims: SimulatorCluster) -> Harness:
    url = sims.urls["statuspage"]
    # The documented budget is 1 request/s; tests scale it up on both sides alike (the
    # simulator's window and the connector's bucket), so the behaviour is the same, faster.
    httpx.post(f"{url}/_sim/ratelimit", json={"requests_per_minute": 6000}).raise_for_status()

    def settings(key: str = SP_KEY, timeout: float = 10.0) -> StatuspageSettings:
        return StatuspageSettings.model_validate(
            {
                "url": f"{url}/v1",
                "api_key": key,
                "page_id": "simpage0001",
                "webhook_secret": SP_SECRET,
                "timeout_seconds": timeout,
                "requests_per_second": 100,
                "burst": 20,
            }
        )

    def raw_edit(record: RemoteRecord, title: str) -> None:
        r = httpx.patch(
            f"{url}/v1/pages/simpage0001/incidents/{record.ref.id}",
            json={"incident": {"name": title}},
            headers={"Authorization": f"OAuth {SP_KEY}"},
        )
        r.raise_for_status()

    def token(value: str | None) -> Forgery:
        def forge(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
            rest = {k: v for k, v in query.items() if k != "token"}
            return headers, body, ({**rest, "token": value} if value is not None else rest)

        return forge

    def component_status(status: str) -> Callable[[RemoteRecord], bool]:
        def check(r: RemoteRecord) -> bool:
            comps = {c["id"]: c["status"] for c in r.fields.get("components", [])}
            return r.fields["status"] != "" and comps.get("cmpcheckout1") == status

        return check

    return Harness(
        name="statuspage",
        connector=StatuspageConnector(settings(), retry=FAST_RETRY),
        object_type="incident",
        sims=sims,
        new_fields=lambda title: {
            "name": title,
            "status": "investigating",
            "body": "We are looking into it.",
            "component_ids": ["cmpcheckout1"],
            "components": {"cmpcheckout1": "degraded_performance"},
        },
        edit=lambda title: {"name": title},
        title_of=lambda r: str(r.fields["name"]),
        raw_edit=raw_edit,
        moves=[
            Move(
                "identified",
                {"components": {"cmpcheckout1": "major_outage"}, "body": "Found it."},
                component_status("major_outage"),
            ),
            Move(
                "monitoring",
                {"body": "A fix is out."},
                lambda r: r.fields["status"] == "monitoring",
            ),
            Move(
                "resolved",
                {"components": {"cmpcheckout1": "operational"}, "body": "All good."},
                lambda r: r.fields["status"] == "resolved" and bool(r.fields["resolved_at"]),
            ),
        ],
        internal_comments=False,
        people=False,
        create_route="POST /v1/pages/{page_id}/incidents",
        get_route="GET /v1/pages/{page_id}/incidents/{incident_id}",
        webhook_secret="",
        webhook_query={"token": SP_SECRET},
        forgeries=[token("wrong-token"), token(None)],
        secrets=[SP_KEY, SP_SECRET],
        bad_credentials=lambda: StatuspageConnector(
            settings("wrong-secret-value"), retry=FAST_RETRY
        ),
        with_timeout=lambda t: StatuspageConnector(settings(timeout=t), retry=FAST_RETRY),
    )


JIRA_SECRET = "jira-hook-secret-value"
JIRA_TOKEN = "sim-token"


def jira_harness(sims: SimulatorCluster) -> Harness:
    url = sims.urls["jira"]

    def settings(token: str = JIRA_TOKEN, timeout: float = 10.0) -> JiraSettings:
        return JiraSettings.model_validate(
            {
                "url": url,
                "api_token": token,
                "webhook_secret": JIRA_SECRET,
                "timeout_seconds": timeout,
            }
        )

    def raw_edit(record: RemoteRecord, title: str) -> None:
        r = httpx.put(
            f"{url}/rest/api/2/issue/{record.ref.id}",
            json={"fields": {"summary": title}},
            auth=("admin@example.com", JIRA_TOKEN),
        )
        r.raise_for_status()

    def tampered(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
        return headers, body.replace(b"}", b', "x": 1}', 1), query

    def unsigned(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
        return {k: v for k, v in headers.items() if k.lower() != "x-hub-signature"}, body, query

    def other_key(headers: dict[str, str], body: bytes, query: dict[str, str]) -> Forged:
        digest = hmac.new(b"not-our-secret", body, hashlib.sha256).hexdigest()
        return {**headers, "X-Hub-Signature": f"sha256={digest}"}, body, query

    def status(name: str) -> Callable[[RemoteRecord], bool]:
        return lambda r: r.fields["status"]["name"] == name

    return Harness(
        name="jira",
        connector=JiraConnector(settings(), retry=FAST_RETRY),
        object_type="issue",
        sims=sims,
        new_fields=lambda title: {
            "summary": title,
            "issuetype": {"name": "Incident"},
            "priority": {"name": "High"},
        },
        edit=lambda title: {"summary": title},
        title_of=lambda r: str(r.fields["summary"]),
        raw_edit=raw_edit,
        moves=[
            Move("In Progress", {}, status("In Progress")),
            # No direct transition: In Progress -> Resolved (needs a resolution) -> Closed.
            Move(
                "Closed",
                {"resolution": {"name": "Won't Do"}},
                lambda r: status("Closed")(r) and r.fields["resolution"]["name"] == "Won't Do",
            ),
            # Back through Reopened and In Progress, clearing the resolution.
            Move("Open", {}, lambda r: status("Open")(r) and r.fields["resolution"] is None),
        ],
        create_route="POST /rest/api/{version}/issue",
        get_route="GET /rest/api/{version}/issue/{issueIdOrKey}",
        webhook_secret=JIRA_SECRET,
        forgeries=[tampered, unsigned, other_key],
        secrets=[JIRA_TOKEN, JIRA_SECRET],
        bad_credentials=lambda: JiraConnector(settings("wrong-secret-value"), retry=FAST_RETRY),
        with_timeout=lambda t: JiraConnector(settings(timeout=t), retry=FAST_RETRY),
    )


BUILDERS = {
    "servicenow": servicenow_harness,
    "jira": jira_harness,
    "statuspage": statuspage_harness,
}


@pytest.fixture(autouse=True)
def fresh_budgets() -> None:
    """A test that was told "Retry-After: 120" must not hold the next test's requests."""
    reset_buckets()


@pytest.fixture(params=sorted(BUILDERS))
def harness(request: pytest.FixtureRequest, sims: SimulatorCluster) -> Harness:
    return BUILDERS[request.param](sims)
