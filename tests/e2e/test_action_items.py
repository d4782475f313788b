"""Action items: adding one is idempotent and safe when many arrive at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.e2e.conftest import World, wait_for
from tests.e2e.test_postmortem import change_requests, resolve_in_servicenow

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
