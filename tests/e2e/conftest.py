"""Shared end-to-end fixtures: the simulators plus the real service, and helpers to act on
each system the way people do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlmodel import select

from connectors.http import reset_buckets
from service.harness import Service, settings_for, sqlite_url, wait_for
from service.runtime import Runtime
from simulators.runner import SimulatorCluster
from sync import store
from sync.poller import poll_all
from sync.worker import drain
from tests.systems import Systems, people_only

T = TypeVar("T")
TOKENS = {
    "viewer": "tok-viewer", "comms": "tok-comms", "change-manager": "tok-cm", "admin": "tok-admin",
}  # fmt: skip


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
                httpx.get(f"{u}/_sim/webhooks/log?limit=0").json()["idle"]
                for u in self.sims.urls.values()
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


SN_TABLE = "/api/now/table/incident"


class Desk(Systems):
    """People on both sides, and the engine run in-process one round at a time (poll, then
    drain the queue), so the order of events is the test's own."""

    def __init__(self, sims: SimulatorCluster, rt: Runtime) -> None:
        super().__init__(sims, timeout=10)
        self.rt = rt

    def linked_p1(self, title: str = "Checkout down") -> tuple[dict[str, Any], str]:
        """A ServiceNow P1 synced once: (the incident record, its Jira issue's key)."""
        inc = self.open_p1(title)
        self.sync()
        return inc, str(self.incident_issue()["key"])

    def sync(self, rounds: int = 2) -> None:
        for _ in range(rounds):
            poll_all(self.rt.db, self.rt.connectors)
            drain(self.rt.reconciler, threads=1, timeout=60)

    def patch(self, sys_id: str, **fields: Any) -> dict[str, Any]:
        r = self.sn.patch(f"{SN_TABLE}/{sys_id}", json=fields)
        assert r.status_code == 200, r.text
        return dict(r.json()["result"])

    def issue(self, key: str) -> dict[str, Any]:
        return dict(self.jira.get(f"/rest/api/2/issue/{key}").json())

    def edit(self, key: str, **fields: Any) -> None:
        r = self.jira.put(f"/rest/api/2/issue/{key}", json={"fields": fields})
        assert r.status_code == 204, r.text

    def incident_issue(self) -> dict[str, Any]:
        [issue] = self.jira_issues("project = OPS AND issuetype = Incident", "*all")
        return issue

    def journal(self, sys_id: str) -> list[dict[str, Any]]:
        return list(
            self.sn.get(
                "/api/now/table/sys_journal_field",
                params={"sysparm_query": f"element_id={sys_id}^ORDERBYsys_created_on"},
            ).json()["result"]
        )

    def comments(self, key: str) -> list[dict[str, Any]]:
        return list(self.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"])

    def parked(self) -> list[store.Parked]:
        with store.session_scope(self.rt.db, readonly=True) as s:
            return store.open_parked(s)

    def fault(self, system: str, **rule: Any) -> None:
        httpx.post(
            f"{self.sims.urls[system]}/_sim/faults", json={"rules": [rule]}
        ).raise_for_status()

    def during_next_write(self, system: str, route: str, edit: Callable[[], None]) -> None:
        """One round in which the engine's next ``route`` call on ``system`` takes 1.5 s to be
        applied, and ``edit`` (a person's) lands in the middle of it."""
        self.fault(system, route=route, latency_ms=1500, count=1)
        worker = threading.Thread(target=drain, args=(self.rt.reconciler,), kwargs={"threads": 1})
        worker.start()
        time.sleep(0.7)
        edit()
        worker.join(timeout=60)


@pytest.fixture
def desk(empty_sims: SimulatorCluster, tmp_path: Path) -> Iterator[Desk]:
    reset_buckets()
    settings = settings_for(
        empty_sims, f"sqlite:///{tmp_path / 'itsm-sync.db'}", statuspage={"requests_per_second": 50}
    )
    rt = Runtime(settings)
    d = Desk(empty_sims, rt)
    try:
        yield d
    finally:
        rt.stop()
        d.close()
