"""Action items: adding one is idempotent and safe when many arrive at once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.http import reset_buckets
from service.harness import Service, settings_for, sqlite_url
from simulators.runner import SimulatorCluster
from tests.e2e.conftest import TOKENS, World, wait_for
from tests.e2e.test_postmortem import (
    CAROL_SN,
    change_requests,
    jira_user,
    journal,
    new_task,
    resolve_in_servicenow,
    review_issue,
)
from tests.systems import people_only

BOB = "bob@example.com"


def _resolved_p1(world: World) -> dict[str, Any]:
    inc = world.open_p1()
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    world.quiet()
    return inc


def _items(world: World, number: str) -> list[dict[str, Any]]:
    r = world.api.get(f"/api/incidents/{number}/postmortem")
    assert r.status_code == 200, r.text
    return list(r.json()["action_items"])


def test_ten_concurrent_adds_keep_all_ten(world: World) -> None:
    """On the old code one of ten was lost: each add numbered its item by counting the ones
    already there, so two at once got the same key and the second became the first."""
    inc = _resolved_p1(world)
    url = f"/api/incidents/{inc['number']}/actions"

    def add(i: int) -> dict[str, Any]:
        r = world.api.post(
            url, json={"title": f"Fix number {i}", "owner": BOB, "due": "2099-01-01"}
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(add, range(10)))
    assert all(a["created"] for a in answers)
    assert len({a["key"] for a in answers}) == 10
    items = _items(world, inc["number"])
    assert sorted(i["title"] for i in items) == sorted(f"Fix number {i}" for i in range(10))
    crs = wait_for(lambda: len(c := change_requests(world)) >= 10 and c, "ten change requests")
    world.quiet()
    assert len(change_requests(world)) == 10 == len({c["correlation_id"] for c in crs})


def test_adding_again_returns_the_first_item(world: World) -> None:
    inc = _resolved_p1(world)
    url = f"/api/incidents/{inc['number']}/actions"
    first = world.api.post(url, json={"title": "Add a  disk alert", "owner": BOB}).json()
    # The natural key folds case and spaces; the owner given the second time changes nothing.
    again = world.api.post(url, json={"title": "add a disk ALERT", "owner": ""}).json()
    assert first["created"] and not again["created"] and again["key"] == first["key"]
    # A client key names an item whatever its title; the same key again is the same item.
    keyed = world.api.post(
        url, json={"title": "Add a disk alert"}, headers={"Idempotency-Key": "pm-42-1"}
    ).json()
    retry = world.api.post(url, json={"title": "Retitled", "key": "pm-42-1"}).json()
    assert keyed["created"] and keyed["key"] != first["key"]
    assert not retry["created"] and retry["key"] == keyed["key"]
    assert [i["owner"] for i in _items(world, inc["number"])] == [BOB, ""]


def _close_change(world: World, sys_id: str, **fields: str) -> None:
    r = world.sn.patch(f"/api/now/table/change_request/{sys_id}", json=fields)
    assert r.status_code == 200, r.text


def test_a_successful_change_makes_the_item_done_and_its_jira_issue_too(world: World) -> None:
    inc = world.open_p1()
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    review = wait_for(lambda: review_issue(world), "the review issue")
    task = new_task(
        world, "Add a disk alert on db01", review["key"],
        assignee={"accountId": jira_user(world, BOB)}, duedate="2099-12-01",
    )  # fmt: skip
    [cr] = wait_for(lambda: change_requests(world), "the change request")
    world.quiet()
    _close_change(
        world, cr["sys_id"], state="3", close_code="successful", close_notes="alert deployed"
    )
    issue = wait_for(
        lambda: (
            (i := world.jira.get(f"/rest/api/2/issue/{task}").json())["fields"]["status"]["name"]
            == "Resolved"
            and i
        ),
        "the action item's issue to be done",
    )
    assert issue["fields"]["resolution"]["name"] == "Done"
    [comment] = wait_for(
        lambda: [c for c in world.jira_comments(task) if cr["number"] in c["body"]],
        "the comment linking the change",
    )
    assert "closed successful" in comment["body"] and cr["sys_id"] in comment["body"]
    [item] = wait_for(
        lambda: [i for i in _items(world, inc["number"]) if i["status"] == "done"], "done"
    )
    assert item["status_reason"] == f"{cr['number']} successful"


def test_an_unsuccessful_or_canceled_change_reopens_the_item_and_says_so(world: World) -> None:
    inc = _resolved_p1(world)
    url = f"/api/incidents/{inc['number']}/actions"
    world.api.post(url, json={"title": "Automate the failover", "owner": BOB, "due": "2099-01-01"})
    [first] = wait_for(lambda: change_requests(world), "the change request")
    world.quiet()
    _close_change(
        world, first["sys_id"], state="3", close_code="unsuccessful", close_notes="rolled back"
    )
    notes = wait_for(
        lambda: [
            n for n in journal(world, inc["sys_id"])
            if f"change request {first['number']} was closed unsuccessful" in n["value"]
        ],
        "the note on the incident",
    )  # fmt: skip
    assert notes[0]["element"] == "work_notes"  # internal
    second = wait_for(
        lambda: [c for c in change_requests(world) if c["sys_id"] != first["sys_id"]],
        "a new change request",
    )[0]
    assert second["short_description"] == "Automate the failover"
    assert second["correlation_id"] == f"{first['correlation_id']}-2"
    [item] = _items(world, inc["number"])
    assert item["status"] == "open" and item["change_request"] == second["number"]
    assert item["status_reason"] == f"{first['number']} unsuccessful"
    world.quiet()
    _close_change(world, second["sys_id"], state="4")  # canceled
    wait_for(
        lambda: [
            n for n in journal(world, inc["sys_id"])
            if f"change request {second['number']} was closed canceled" in n["value"]
        ],
        "the note on the incident",
    )  # fmt: skip
    wait_for(lambda: len(change_requests(world)) == 3, "a third change request")
    [jira] = world.jira_issues("project = OPS AND issuetype = Incident")
    comments = world.jira_comments(jira["key"])
    assert any(
        f"{first['number']} was closed unsuccessful" in c["body"]
        and c.get("visibility", {}).get("value") == "Developers"
        for c in comments
    ), comments


def test_an_edit_flows_to_the_change_request(world: World) -> None:
    inc = _resolved_p1(world)
    url = f"/api/incidents/{inc['number']}/actions"
    item = world.api.post(url, json={"title": "Automate it", "owner": BOB, "due": "2099-01-01"})
    key = item.json()["key"]
    [cr] = wait_for(lambda: change_requests(world), "the change request")
    world.quiet()
    r = world.api.patch(
        f"{url}/{key}",
        json={"title": "Automate the failover", "owner": "carol@example.com", "due": "2099-02-01"},
    )
    assert r.status_code == 200, r.text
    bad = world.api.patch(f"{url}/{key}", json={"due": "2020-01-01"})
    assert bad.status_code == 422 and bad.json()["field"] == "due"
    assert world.api.patch(f"{url}/nope", json={"title": "x"}).status_code == 404
    wait_for(
        lambda: (
            (c := world.sn.get(f"/api/now/table/change_request/{cr['sys_id']}").json()["result"])[
                "short_description"
            ]
            == "Automate the failover"
            and c["due_date"] == "2099-02-01 00:00:00"
            and c["assigned_to"]["value"] == CAROL_SN
        ),
        "the change request to follow the edit",
    )
    w = world.api.post(f"{url}/{key}/withdraw", json={"reason": "the vendor does it"})
    assert w.status_code == 200 and w.json()["status"] == "withdrawn", w.text


@pytest.fixture
def problem_world(sims: SimulatorCluster, tmp_path: Path) -> Iterator[World]:
    """As ``world``, with ``postmortem.problem_record: true``."""
    reset_buckets()
    for name, url in sims.urls.items():
        httpx.post(f"{url}/_sim/reset").raise_for_status()
        httpx.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
    settings = settings_for(
        sims, sqlite_url(tmp_path), statuspage={"requests_per_second": 50, "burst": 10},
        sync={"poll_interval_seconds": 30, "workers": 2, "coalesce_seconds": 0.3},
        api_tokens=[{"name": r, "token": t, "role": r} for r, t in TOKENS.items()],
        postmortem={"problem_record": True, "review_issue_type": ""},
    )  # fmt: skip
    httpx.post(f"{sims.urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 6000})
    with Service(settings) as service:
        service.register_webhooks(sims)
        yield World(sims, service)


def test_a_problem_record_is_linked_and_parents_the_change_requests(
    problem_world: World,
) -> None:
    world = problem_world
    inc = world.open_p1()
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    [problem] = wait_for(
        lambda: world.sn.get(
            "/api/now/table/problem", params={"sysparm_exclude_reference_link": "true"}
        ).json()["result"],
        "the problem record",
    )
    assert problem["first_reported_by_task"] == inc["sys_id"]
    assert problem["correlation_id"].startswith("itsm-pb-")

    def named() -> bool:
        value = world.sn_record(inc["sys_id"])["problem_id"]
        return (value.get("value") if isinstance(value, dict) else value) == problem["sys_id"]

    wait_for(named, "the incident to name its problem")
    url = f"/api/incidents/{inc['number']}/actions"
    world.api.post(url, json={"title": "Add replicas", "owner": BOB, "due": "2099-01-01"})
    [cr] = wait_for(lambda: change_requests(world), "the change request")
    assert cr["parent"] == problem["sys_id"]
    assert inc["number"] in cr["description"]
    world.quiet()
    shown = world.api.get(f"/api/incidents/{inc['number']}/postmortem").json()
    assert shown["postmortem"]["problem"] == problem["number"]
    # One problem, however many reconciles.
    assert len(world.sn.get("/api/now/table/problem").json()["result"]) == 1
