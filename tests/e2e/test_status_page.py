"""The public status page when outages overlap: a component's status is page-wide."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import World, wait_for


def _checkout(world: World) -> str:
    return next(c["status"] for c in world.sp.get("/components").json() if c["name"] == "Checkout")


def _go_public(world: World, inc: dict[str, Any], message: str) -> None:
    path = f"/api/incidents/{inc['number']}"
    wait_for(lambda: world.api.get(path).status_code == 200, f"{inc['number']} in the service")
    r = world.api.post(f"/api/incidents/{inc['number']}/public", json={"message": message})
    assert r.status_code == 200, r.text


def _resolve(world: World, inc: dict[str, Any]) -> None:
    r = world.sn.patch(
        f"/api/now/table/incident/{inc['sys_id']}",
        json={"state": "6", "close_code": "Solution provided", "close_notes": "fixed"},
    )
    assert r.status_code == 200, r.text


def test_a_component_shared_by_two_outages_stays_down_until_both_end(world: World) -> None:
    eu = world.open_p1(title="Checkout fails in the EU")  # SEV1: major outage
    us = world.open_p1(title="Checkout slow in the US", urgency="2")  # SEV2: partial outage
    _go_public(world, eu, "EU customers cannot check out.")
    wait_for(lambda: _checkout(world) == "major_outage", "Checkout down")
    _go_public(world, us, "US customers see slow checkouts.")
    wait_for(lambda: len(world.sp_incidents()) == 2, "two incidents on the page")
    world.quiet()
    # The later, milder incident does not make the component look better than it is.
    assert _checkout(world) == "major_outage"

    _resolve(world, eu)
    wait_for(
        lambda: sorted(i["status"] for i in world.sp_incidents()) == ["investigating", "resolved"],
        "the EU incident resolved on the page",
    )
    world.quiet()
    # The US outage still goes on: Checkout shows it, not "operational".
    assert _checkout(world) == "partial_outage"

    _resolve(world, us)
    wait_for(lambda: _checkout(world) == "operational", "Checkout operational once both end")
    world.quiet()
    assert [i["status"] for i in world.sp_incidents()] == ["resolved", "resolved"]
