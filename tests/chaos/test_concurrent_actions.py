"""Fifty action items added at once through two ``itsm-sync run`` processes sharing one
PostgreSQL database: each arrives twice (once at each process), and exactly fifty items and
fifty change requests come out, no duplicates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.harness import wait_for
from simulators.runner import SimulatorCluster
from tests.chaos.conftest import ADMIN_TOKEN, ServiceProcess, service_env
from tests.systems import Systems

N = 50


@pytest.mark.slow  # about a minute: `make chaos`
@pytest.mark.timeout(300)
def test_fifty_adds_from_two_processes_on_postgresql_make_fifty_changes(
    empty_sims: SimulatorCluster,
    services: list[ServiceProcess],
    pg_database_url: str,
    tmp_path: Path,
) -> None:
    env = service_env(
        empty_sims, pg_database_url, ITSM_SYNC_POSTMORTEM__REVIEW_ISSUE_TYPE="",
        ITSM_SYNC_SYNC__POLL_INTERVAL_SECONDS="1",
    )  # fmt: skip
    one = ServiceProcess("one", env, tmp_path)
    services.append(one)
    one.start(wait=False)  # migrates the database first
    one.wait_ready(90)  # a shared machine can be slow to start two processes each
    two = ServiceProcess("two", env, tmp_path)
    services.append(two)
    two.start(wait=False)
    two.wait_ready(90)
    one.register_webhooks(empty_sims)
    people = Systems(empty_sims)
    inc = people.open_p1()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = [httpx.Client(base_url=s.url, headers=auth, timeout=30) for s in (one, two)]
    wait_for(
        lambda: api[1].get(f"/api/incidents/{inc['number']}").status_code == 200,
        "the incident to be known",
        30,
    )
    r = people.sn.patch(
        f"/api/now/table/incident/{inc['sys_id']}",
        json={"state": "6", "close_code": "Solution provided", "close_notes": "ok"},
    )
    assert r.status_code == 200, r.text

    def add(n: int) -> dict[str, Any]:
        i, process = divmod(n, 2)
        body: dict[str, Any] = {"title": f"Fix {i:02d}", "owner": "bob@example.com"}
        body["due"] = "2099-06-01"
        if i % 2:  # half by the client's key, half by the natural key (the title)
            body["key"] = f"client-{i}"
        r = api[process].post(f"/api/incidents/{inc['number']}/actions", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(add, range(2 * N)))
    assert sum(a["created"] for a in answers) == N
    assert len({a["key"] for a in answers}) == N
    items = api[0].get(f"/api/incidents/{inc['number']}/postmortem").json()["action_items"]
    assert sorted(i["title"] for i in items) == [f"Fix {i:02d}" for i in range(N)]

    def changes() -> list[dict[str, Any]]:
        return list(people.sn.get("/api/now/table/change_request").json()["result"])

    wait_for(lambda: len(changes()) >= N, f"{N} change requests", 120)
    wait_for(
        lambda: all(
            i["change_request"]
            for i in api[1].get(f"/api/incidents/{inc['number']}/postmortem").json()["action_items"]
        ),
        "every item to record its change request",
        60,
    )
    crs = changes()
    assert len(crs) == N, sorted(c["short_description"] for c in crs)
    assert len({c["correlation_id"] for c in crs}) == N
    assert sorted(c["short_description"] for c in crs) == [f"Fix {i:02d}" for i in range(N)]
    for client in api:
        client.close()
