"""The three simulators as people use them (straight on each API), for the end-to-end, CLI and
crash tests: one set of clients and the actions every scenario needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from config.settings import JiraSettings, ServiceNowSettings, StatuspageSettings
from simulators.runner import Credentials, SimulatorCluster

ALICE_SN = "a11ce000000000000000000000000001"  # alice@example.com in the ServiceNow fixtures
CHECKOUT_SN = "5e000000000000000000000000000001"  # the Checkout business service
FIXTURES = Path(__file__).resolve().parents[1] / "simulators" / "fixtures"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
TEST_AGENT = "itsm-sync-tests"  # the tests' own requests, told apart from the service's


def sn_settings(url: str, **more: Any) -> ServiceNowSettings:
    """A ServiceNow connector's settings for a simulator started with default credentials."""
    creds = Credentials()
    return ServiceNowSettings.model_validate(
        {"url": url, "username": creds.servicenow_username,
         "password": creds.servicenow_password, **more}
    )  # fmt: skip


def jira_settings(url: str, **more: Any) -> JiraSettings:
    """A Jira connector's settings for a simulator started with default credentials."""
    creds = Credentials()
    return JiraSettings.model_validate(
        {"url": url, "email": creds.jira_email, "api_token": creds.jira_api_token, **more}
    )


def statuspage_settings(url: str, **more: Any) -> StatuspageSettings:
    """A Statuspage connector's settings (``url`` with ``/v1``) for a default simulator."""
    creds = Credentials()
    return StatuspageSettings.model_validate(
        {"url": url, "api_key": creds.statuspage_api_key,
         "page_id": creds.statuspage_page_id, **more}
    )  # fmt: skip


def people_only(system: str) -> Any:
    """The default fixtures without their sample incidents (each test makes its own)."""
    data = json.loads((FIXTURES / f"{system}.json").read_text())
    for key in ("incident", "issues", "incidents"):
        if isinstance(data, dict) and key in data:
            data[key] = []
    return data


class Systems:
    def __init__(self, sims: SimulatorCluster, timeout: float = 30) -> None:
        self.sims = sims
        agent = {"User-Agent": TEST_AGENT}
        self.sn = httpx.Client(
            base_url=sims.urls["servicenow"], auth=("admin", "admin"), timeout=timeout,
            headers=agent,
        )  # fmt: skip
        self.jira = httpx.Client(
            base_url=sims.urls["jira"], auth=("admin@example.com", "sim-token"), timeout=timeout,
            headers=agent,
        )  # fmt: skip
        self.sp = httpx.Client(
            base_url=f"{sims.urls['statuspage']}/v1/pages/simpage0001",
            headers={"Authorization": "OAuth sim-key", **agent},
            timeout=timeout,
        )

    def close(self) -> None:
        for client in (self.sn, self.jira, self.sp):
            client.close()

    def open_p1(
        self, title: str = "Checkout fails for all customers", **fields: Any
    ) -> dict[str, Any]:
        body = {
            "short_description": title, "impact": "1", "urgency": "1",
            "assigned_to": ALICE_SN, "business_service": CHECKOUT_SN, **fields,
        }  # fmt: skip
        r = self.sn.post("/api/now/table/incident", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json()["result"])

    def sn_record(self, sys_id: str) -> dict[str, Any]:
        return dict(self.sn.get(f"/api/now/table/incident/{sys_id}").json()["result"])

    def jira_issues(
        self, jql: str = "project = OPS ORDER BY created ASC", fields: str = "*all"
    ) -> list[dict[str, Any]]:
        """Every issue the JQL finds, page by page."""
        issues: list[dict[str, Any]] = []
        params: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": 100}
        while True:
            page = self.jira.get("/rest/api/2/search/jql", params=params).json()
            issues.extend(page["issues"])
            if page.get("isLast", True) or not page.get("nextPageToken"):
                return issues
            params["nextPageToken"] = page["nextPageToken"]

    def transition(self, key: str, status: str, **fields: Any) -> None:
        options = self.jira.get(f"/rest/api/2/issue/{key}/transitions").json()["transitions"]
        moves = [t for t in options if t["to"]["name"] == status]
        assert moves, f"{key}: no transition to {status} from here: {options}"
        r = self.jira.post(
            f"/rest/api/2/issue/{key}/transitions",
            json={"transition": {"id": moves[0]["id"]}, "fields": fields},
        )
        assert r.status_code == 204, r.text

    def writes(self) -> dict[str, int]:
        """Write calls per simulator since the last reset_stats."""
        out = {}
        for name, url in self.sims.urls.items():
            stats = httpx.get(f"{url}/_sim/stats").json()
            out[name] = sum(n for k, n in stats.items() if k.split(" ")[0] in WRITES)
        return out

    def service_calls(self) -> dict[str, list[str]]:
        """``METHOD path`` of every API call the service made per simulator, in order, since
        the last ``clear_requests`` (the tests' own calls and /_sim controls left out)."""
        out: dict[str, list[str]] = {}
        for name, url in self.sims.urls.items():
            log = httpx.get(f"{url}/_sim/requests").json()["requests"]
            out[name] = [
                f"{r['method']} {r['path']}"
                for r in log
                if r["headers"].get("user-agent") != TEST_AGENT
                and not r["path"].startswith("/_sim")
            ]
        return out

    def clear_requests(self) -> None:
        for url in self.sims.urls.values():
            httpx.delete(f"{url}/_sim/requests").raise_for_status()

    def reset_stats(self) -> None:
        for url in self.sims.urls.values():
            httpx.delete(f"{url}/_sim/stats").raise_for_status()
