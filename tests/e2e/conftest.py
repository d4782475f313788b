"""Shared end-to-end fixtures: the simulators plus the real service, and helpers to act on
each system the way people do."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlmodel import select

from connectors.http import reset_buckets
from service.harness import Service, settings_for, sqlite_url, wait_for
from simulators.runner import SimulatorCluster
from sync import store

T = TypeVar("T")
ALICE_SN = "a11ce000000000000000000000000001"
CHECKOUT_SN = "5e000000000000000000000000000001"
TOKENS = {"viewer": "tok-viewer", "change-manager": "tok-cm", "admin": "tok-admin"}


class World:
    """The simulators and the service, with a client for each, as people use them."""

    def __init__(self, sims: SimulatorCluster, service: Service) -> None:
        self.sims = sims
        self.service = service
        self.sn = httpx.Client(
            base_url=sims.urls["servicenow"], auth=("admin", "admin"), timeout=10
        )
        self.jira = httpx.Client(
            base_url=sims.urls["jira"], auth=("admin@example.com", "sim-token"), timeout=10
        )
        self.sp = httpx.Client(
            base_url=f"{sims.urls['statuspage']}/v1/pages/simpage0001",
            headers={"Authorization": "OAuth sim-key"},
            timeout=10,
        )
        self.api = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=10
        )

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

    def jira_issue_for(self, title: str) -> dict[str, Any] | None:
        issues = self.jira.get(
            "/rest/api/2/search/jql",
            params={"jql": f'project = OPS AND summary ~ "{title}"', "fields": "*all"},
        ).json()["issues"]
        return issues[0] if issues else None

    def jira_issues(self) -> list[dict[str, Any]]:
        return list(
            self.jira.get(
                "/rest/api/2/search/jql",
                params={"jql": "project = OPS", "fields": "*all", "maxResults": 100},
            ).json()["issues"]
        )

    def transition(self, key: str, status: str, **fields: Any) -> None:
        options = self.jira.get(f"/rest/api/2/issue/{key}/transitions").json()["transitions"]
        [move] = [t for t in options if t["to"]["name"] == status]
        r = self.jira.post(
            f"/rest/api/2/issue/{key}/transitions",
            json={"transition": {"id": move["id"]}, "fields": fields},
        )
        assert r.status_code == 204, r.text

    def jira_comments(self, key: str) -> list[dict[str, Any]]:
        return list(self.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"])

    def sp_incidents(self) -> list[dict[str, Any]]:
        return [
            i for i in self.sp.get("/incidents").json() if i["name"] != "Search results delayed"
        ]

    def writes(self) -> dict[str, int]:
        out = {}
        for name, url in self.sims.urls.items():
            stats = httpx.get(f"{url}/_sim/stats").json()
            out[name] = sum(
                n for k, n in stats.items() if k.split(" ")[0] in ("POST", "PUT", "PATCH", "DELETE")
            )
        return out

    def reset_stats(self) -> None:
        for url in self.sims.urls.values():
            httpx.delete(f"{url}/_sim/stats").raise_for_status()

    def quiet(self, timeout: float = 15.0) -> None:
        """Wait until the queue is empty and the simulators sent every webhook."""

        def idle() -> bool:
            hooks = all(
                httpx.get(f"{u}/_sim/webhooks/log").json()["idle"] for u in self.sims.urls.values()
            )
            with store.session_scope(self.service.runtime.db) as s:
                return hooks and s.exec(select(store.Dirty)).first() is None

        wait_for(lambda: idle() and (time.sleep(0.3) or idle()), "the service to go quiet", timeout)


@pytest.fixture
def world(sims: SimulatorCluster, tmp_path: Path) -> Iterator[World]:
    reset_buckets()
    for url in sims.urls.values():  # start from empty systems: only the fixtures' people
        httpx.post(f"{url}/_sim/reset").raise_for_status()
    for name, url in sims.urls.items():
        httpx.post(f"{url}/_sim/seed", json=_people_only(name)).raise_for_status()
    settings = settings_for(
        sims,
        sqlite_url(tmp_path),
        statuspage={"requests_per_second": 50, "burst": 10},
        sync={"poll_interval_seconds": 30, "workers": 2, "coalesce_seconds": 0.3},
        api_tokens=[{"name": role, "token": token, "role": role} for role, token in TOKENS.items()],
    )
    httpx.post(f"{sims.urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 6000})
    with Service(settings) as service:
        service.register_webhooks(sims)
        yield World(sims, service)


def _people_only(system: str) -> Any:
    """The default fixtures without their sample incidents (each test makes its own)."""
    path = Path(__file__).resolve().parents[2] / "simulators" / "fixtures" / f"{system}.json"
    data = json.loads(path.read_text())
    for key in ("incident", "issues", "incidents"):
        if isinstance(data, dict) and key in data:
            data[key] = []
    return data
