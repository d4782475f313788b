"""Shared end-to-end fixtures: the simulators plus the real service, and helpers to act on
each system the way people do."""

from __future__ import annotations

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
from tests.systems import Systems, people_only

T = TypeVar("T")
TOKENS = {"viewer": "tok-viewer", "change-manager": "tok-cm", "admin": "tok-admin"}


class World(Systems):
    """The simulators and the service, with a client for each, as people use them."""

    def __init__(self, sims: SimulatorCluster, service: Service) -> None:
        super().__init__(sims, timeout=10)
        self.service = service
        self.api = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=10
        )

    def jira_issue_for(self, title: str) -> dict[str, Any] | None:
        issues = self.jira.get(
            "/rest/api/2/search/jql",
            params={"jql": f'project = OPS AND summary ~ "{title}"', "fields": "*all"},
        ).json()["issues"]
        return issues[0] if issues else None

    def jira_comments(self, key: str) -> list[dict[str, Any]]:
        return list(self.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"])

    def sp_incidents(self) -> list[dict[str, Any]]:
        return [
            i for i in self.sp.get("/incidents").json() if i["name"] != "Search results delayed"
        ]

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


_people_only = people_only
