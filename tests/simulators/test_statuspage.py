"""Statuspage v1 simulator, over real HTTP with atlassian-python-api and httpx.

Every test ends by validating the logged responses against Statuspage's own OpenAPI document.
The spec documents only 200 for ``/incidents/{incident_id}`` and no 420/429 anywhere, so those
answers are checked by hand and their routes skipped (each skip says so where it happens).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from atlassian.statuspage import StatusPage

from simulators.runner import ClusterConfig, SimulatorCluster
from simulators.statuspage import StatuspageSimulator
from tests.conftest import WebhookReceiver
from tests.contracts import CONTRACTS
from tests.simulators.openapi_check import assert_logged_responses_valid

# Only the Statuspage simulator is started here (overriding the session-wide cluster fixture),
# so this file runs on its own and does not depend on the other simulators.


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimulatorCluster]:
    cfg = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=True)
    with SimulatorCluster(cfg, simulators={"statuspage": StatuspageSimulator()}) as c:
        yield c


PAGE = "simpage0001"
KEY = "sim-key"
OAUTH = {"Authorization": f"OAuth {KEY}"}
CHECKOUT, PAYMENTS, SEARCH, LOGIN = "cmpcheckout1", "cmppayments1", "cmpsearch001", "cmplogin0001"
WEBHOOKS = CONTRACTS / "statuspage" / "webhooks"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ITEM = "/v1/pages/{page_id}/incidents/{incident_id}"  # the spec documents only 200 here


def sp(sims: SimulatorCluster) -> StatusPage:
    """atlassian-python-api as documented by Statuspage: ``Authorization: OAuth <key>``."""
    return StatusPage(url=sims.urls["statuspage"], header=OAUTH)


def client(sims: SimulatorCluster) -> httpx.Client:
    return httpx.Client(base_url=sims.urls["statuspage"] + "/v1", headers=OAUTH, timeout=10)


def sim_of(sims: SimulatorCluster) -> StatuspageSimulator:
    sim = sims.statuspage
    assert isinstance(sim, StatuspageSimulator)
    return sim


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((WEBHOOKS / f"{name}.json").read_text()))


def create(c: httpx.Client, **incident: Any) -> dict[str, Any]:
    r = c.post(f"/pages/{PAGE}/incidents", json={"incident": {"name": "x", **incident}})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_components_with_the_library(sims: SimulatorCluster) -> None:
    api = sp(sims)
    pages = api.page_list_pages()
    assert [p["id"] for p in pages] == [PAGE] and pages[0]["name"] == "Example Status"
    # The library's own token= mode sends "Bearer <key>"; the simulator accepts it too.
    bearer = StatusPage(url=sims.urls["statuspage"], token=KEY)
    assert bearer.get_page(PAGE)["time_zone"] == "Etc/UTC"

    comps = api.page_get_components(PAGE)
    assert [c["name"] for c in comps] == ["Checkout", "Payments", "Search", "Login"]
    assert {c["status"] for c in comps} == {"operational"}
    assert comps[0]["automation_email"] == f"component+{CHECKOUT}@notifications.statuspage.io"
    second = api.page_get_components(PAGE, per_page=2, page=2)
    assert [c["id"] for c in second] == [SEARCH, LOGIN]

    updated = api.page_update_component(PAGE, PAYMENTS, {"status": "degraded_performance"})
    assert updated["status"] == "degraded_performance"
    assert updated["updated_at"] > comps[1]["updated_at"] and TIME.match(updated["updated_at"])
    assert api.page_get_component(PAGE, PAYMENTS)["status"] == "degraded_performance"
    renamed = api.page_update_component(PAGE, PAYMENTS, {"name": "Payments API", "status": ""})
    assert renamed["name"] == "Payments API" and renamed["status"] == "degraded_performance"

    new = api.page_create_component(PAGE, {"name": "Mobile app", "description": "iOS/Android"})
    assert new["status"] == "operational" and new["position"] == 5 and len(new["id"]) == 12
    assert api.page_delete_component(PAGE, new["id"]) is None  # 204, no body
    assert [c["id"] for c in api.page_get_components(PAGE)][-1] == LOGIN

    page = api.page_update(PAGE, {"name": "Example Shop Status", "hidden_from_search": True})
    assert page["name"] == "Example Shop Status" and page["hidden_from_search"] is True
    assert assert_logged_responses_valid(sim_of(sims), "statuspage") >= 11


def test_incident_lifecycle_with_the_library(sims: SimulatorCluster) -> None:
    api = sp(sims)
    created = api.page_create_incident(
        PAGE,
        {
            "name": "Checkout fails",
            "status": "investigating",
            "body": "We are investigating failed orders.",
            "component_ids": [CHECKOUT],
            "components": {CHECKOUT: "major_outage", PAYMENTS: "partial_outage"},
            "metadata": {"itsm_sync": {"incident": "INC0010001"}},
        },
    )
    iid = created["id"]
    assert re.fullmatch(r"[a-z0-9]{12}", iid) and created["page_id"] == PAGE
    assert created["shortlink"].startswith("http://stspg.io/")
    assert created["impact"] == "critical" and created["impact_override"] is None
    assert created["metadata"] == {"itsm_sync": {"incident": "INC0010001"}}
    assert [c["id"] for c in created["components"]] == [CHECKOUT, PAYMENTS]
    first = created["incident_updates"]
    assert len(first) == 1 and first[0]["body"] == "We are investigating failed orders."
    assert first[0]["incident_id"] == iid and first[0]["deliver_notifications"] is True
    assert first[0]["affected_components"][0] == {
        "code": CHECKOUT, "name": "Checkout", "old_status": "operational",
        "new_status": "major_outage",
    }  # fmt: skip
    assert api.page_get_component(PAGE, CHECKOUT)["status"] == "major_outage"
    assert [i["id"] for i in api.page_list_unresolved_incidents(PAGE)] == [iid]

    inc = api.page_update_incident(PAGE, iid, {"status": "identified", "body": "Bad deploy."})
    assert inc["status"] == "identified" and inc["monitoring_at"] is None
    inc = api.page_update_incident(PAGE, iid, {"status": "monitoring", "body": "Rolled back."})
    assert inc["monitoring_at"] == inc["incident_updates"][0]["created_at"]
    inc = api.page_update_incident(
        PAGE,
        iid,
        {
            "status": "resolved",
            "body": "Orders go through again.",
            "components": {CHECKOUT: "operational", PAYMENTS: "operational"},
        },
    )
    assert inc["status"] == "resolved" and TIME.match(inc["resolved_at"])
    assert inc["resolved_at"] == inc["incident_updates"][0]["created_at"]
    assert [u["status"] for u in inc["incident_updates"]] == [
        "resolved", "monitoring", "identified", "investigating",
    ]  # fmt: skip
    assert inc["impact"] == "critical"  # the peak impact stays after recovery
    assert {c["status"] for c in inc["components"]} == {"operational"}
    assert api.page_list_unresolved_incidents(PAGE) == []

    got = api.page_get_incident(PAGE, iid)
    assert got == inc
    renamed = api.page_update_incident(PAGE, iid, {"name": "Checkout failed"})
    assert len(renamed["incident_updates"]) == 4  # no status/body: no new update
    deleted = api.page_delete_incident(PAGE, iid)
    assert deleted["id"] == iid and deleted["name"] == "Checkout failed"
    assert_logged_responses_valid(sim_of(sims), "statuspage")

    # Checked after validation: the spec documents no 404 on the incident item route.
    with pytest.raises(requests.HTTPError) as err:
        api.page_get_incident(PAGE, iid)
    assert err.value.response.status_code == 404


def test_incident_lists_search_and_paging(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        a = create(c, name="Login slow", body="Sign-in takes long", component_ids=[LOGIN])
        b = create(c, name="Search errors", status="identified", impact_override="minor")
        soon = create(
            c, name="DB upgrade", scheduled_for="2099-01-01T02:00:00Z",
            scheduled_until="2099-01-01T04:00:00+00:00", components={SEARCH: ""},
        )  # fmt: skip
        assert soon["status"] == "scheduled" and soon["impact"] == "maintenance"
        assert soon["scheduled_for"] == "2099-01-01T02:00:00.000Z"
        now_maint = create(
            c, name="Cache flush", scheduled_for="2020-01-01T00:00:00Z", status="in_progress"
        )
        assert b["impact"] == "minor" and a["impact"] == "none"

        def ids(path: str, **params: Any) -> list[str]:
            r = c.get(f"/pages/{PAGE}/incidents{path}", params=params)
            assert r.status_code == 200, r.text
            return [i["id"] for i in r.json()]

        assert ids("/unresolved") == [b["id"], a["id"]]  # newest first
        assert ids("/unresolved.json", per_page=1, page=2) == [a["id"]]
        assert ids("/scheduled") == [soon["id"]] == ids("/upcoming")
        assert ids("/active_maintenance") == [now_maint["id"]]
        everything = ids("")
        assert everything[:4] == [now_maint["id"], soon["id"], b["id"], a["id"]]
        assert everything[4] == "inc0search01"  # the seeded, resolved incident
        assert ids("", q="SIGN-IN") == [a["id"]]  # searches update bodies, case-insensitive
        assert ids("", q="identified") == [b["id"]]  # and the status
        assert ids(".json", limit=2, page=2) == [b["id"], a["id"]]
        assert ids("", limit=0) == everything  # 0: the default (100)

        empty = c.patch(f"/pages/{PAGE}/incidents/{soon['id']}", json={"incident": {}})
        assert empty.status_code == 200 and len(empty.json()["incident_updates"]) == 1
    assert_logged_responses_valid(sim_of(sims), "statuspage")


def test_validation_errors_change_nothing(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        before = c.get(f"/pages/{PAGE}/incidents").json()

        def post(incident: Any) -> httpx.Response:
            return c.post(f"/pages/{PAGE}/incidents", json={"incident": incident})

        cases = {
            "Status 'broken' is not included": {"name": "x", "status": "broken"},
            "Impact override 'huge'": {"name": "x", "impact_override": "huge"},
            "Component(s) not found on this page: nope00000000": {
                "name": "x", "component_ids": [CHECKOUT, "nope00000000"],
            },
            "Component status 'down'": {"name": "x", "components": {CHECKOUT: "down"}},
            "Name can't be blank": {"status": "investigating"},
            "is not valid for a realtime incident": {"name": "x", "status": "completed"},
            "Metadata must be an object": {"name": "x", "metadata": {"jira": "FOO-1"}},
            "Name is too long": {"name": "n" * 256},
            "Body is too long": {"name": "x", "body": "b" * 25001},
            "deliver_notifications must be true or false": {
                "name": "x", "deliver_notifications": "yes",
            },
        }  # fmt: skip
        for message, incident in cases.items():
            r = post(incident)
            assert r.status_code == 422, (incident, r.text)
            assert message in r.json()["error"], r.json()
        # Components named in a failing request keep their status.
        assert c.get(f"/pages/{PAGE}/components/{CHECKOUT}").json()["status"] == "operational"
        assert c.get(f"/pages/{PAGE}/incidents").json() == before

        for body in (b"{nope", b"[1, 2]", b'"incident"', b'{"incident": "x"}', b"{}"):
            r = c.post(
                f"/pages/{PAGE}/incidents", content=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert r.status_code == 400 and "error" in r.json(), (body, r.text)
        assert "malformed JSON" in c.post(
            f"/pages/{PAGE}/incidents", content=b"{nope",
            headers={"Content-Type": "application/json"},
        ).json()["error"]  # fmt: skip

        comp = c.patch(f"/pages/{PAGE}/components/{CHECKOUT}", json={"component": {"status": "x"}})
        assert comp.status_code == 422 and "Status 'x'" in comp.json()["error"]
        blank = c.post(f"/pages/{PAGE}/components", json={"component": {"description": "d"}})
        assert blank.status_code == 422 and blank.json() == {"error": "Name can't be blank"}
        missing = c.get(f"/pages/{PAGE}/components/nope00000000")
        assert missing.status_code == 404
        assert missing.json() == {"error": "The requested resource could not be found."}
        assert c.get("/pages/nopage000000").status_code == 404
        assert c.post("/pages/nopage000000/incidents", json={"incident": {"name": "x"}}).json() == {
            "error": "The requested resource could not be found."
        }

        inc = create(c, name="valid")
        path = f"/pages/{PAGE}/incidents/{inc['id']}"
        r = c.patch(path, json={"incident": {"status": "scheduled"}})
        assert r.status_code == 422 and "realtime" in r.json()["error"]
        assert c.get(path).json()["status"] == "investigating"
        assert c.get(f"/pages/{PAGE}/incidents/nope00000000").status_code == 404
        assert c.delete(f"/pages/{PAGE}/incidents/nope00000000").status_code == 404
        assert c.get(f"/pages/{PAGE}/nothing-here").status_code == 404
    # The incident item route answers 404/422 above; the spec documents only its 200.
    assert_logged_responses_valid(sim_of(sims), "statuspage", skip_routes=(ITEM,))


def test_auth(sims: SimulatorCluster) -> None:
    base = sims.urls["statuspage"] + "/v1/pages"
    denied = {"error": "Could not authenticate"}
    for headers in ({}, {"Authorization": "OAuth wrong"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": "OAuth"}):  # fmt: skip
        r = httpx.get(base, headers=headers)
        assert r.status_code == 401 and r.json() == denied, headers
    assert httpx.get(base, params={"api_key": "wrong"}).status_code == 401
    assert httpx.get(base, params={"api_key": KEY}).status_code == 200
    assert httpx.get(base, headers={"Authorization": f"OAuth {KEY}"}).status_code == 200
    assert httpx.get(base, headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    with pytest.raises(requests.HTTPError) as err:
        StatusPage(url=sims.urls["statuspage"], token="wrong").page_get_components(PAGE)
    assert err.value.response.status_code == 401
    # The /_sim/ controls need no credentials.
    assert httpx.get(sims.urls["statuspage"] + "/_sim/ratelimit").status_code == 200
    assert assert_logged_responses_valid(sim_of(sims), "statuspage") == 9


def test_rate_limit_420_and_429(sims: SimulatorCluster) -> None:
    url = sims.urls["statuspage"]
    pages = f"{url}/v1/pages"
    try:
        with httpx.Client(headers=OAUTH, timeout=10) as c:
            # Default: 60 requests in any 60 s window (1 request/s on average), then 420.
            assert c.get(f"{url}/_sim/ratelimit").json() == {
                "requests_per_minute": 60, "status": 420, "window_seconds": 60,
            }  # fmt: skip
            assert {c.get(pages).status_code for _ in range(60)} == {200}
            over = c.get(pages)
            assert over.status_code == 420 and over.json() == {"error": "Rate limit exceeded"}
            assert 1 <= int(over.headers["Retry-After"]) <= 60
            # The query-parameter key is the same token: it shares the window.
            assert httpx.get(pages, params={"api_key": KEY}).status_code == 420

            # A small limit keeps the rest fast; setting it empties the window.
            c.post(f"{url}/_sim/ratelimit", json={"requests_per_minute": 3})
            codes = [c.get(pages).status_code for _ in range(5)]
            assert codes == [200, 200, 200, 420, 420]
            with pytest.raises(requests.HTTPError) as err:  # the library does not retry 420
                sp(sims).page_list_pages()
            assert err.value.response.status_code == 420

            c.post(f"{url}/_sim/reset")  # reset empties the window, keeps the setting
            assert [c.get(pages).status_code for _ in range(4)] == [200, 200, 200, 420]

            mode = c.post(f"{url}/_sim/ratelimit", json={"status": 429}).json()
            assert mode == {"requests_per_minute": 3, "status": 429, "window_seconds": 60}
            codes = [c.get(pages).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.get(pages)
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            bad = c.post(f"{url}/_sim/ratelimit", json={"status": 500})
            assert bad.status_code == 400
            off = c.post(f"{url}/_sim/ratelimit", json={"requests_per_minute": None}).json()
            assert off["requests_per_minute"] is None
            assert {c.get(pages).status_code for _ in range(5)} == {200}
    finally:
        httpx.delete(f"{url}/_sim/ratelimit").raise_for_status()
    assert httpx.get(f"{url}/_sim/ratelimit").json()["requests_per_minute"] == 60
    # /v1/pages answered 420/429 on purpose above; the spec documents neither.
    assert_logged_responses_valid(sim_of(sims), "statuspage", skip_routes=("/v1/pages",))


def test_fault_rate_limit_uses_the_statuspage_shape(sims: SimulatorCluster) -> None:
    url = sims.urls["statuspage"]
    route = "/v1/pages/{page_id}/components"
    with client(sims) as c:
        c.post(url + "/_sim/faults", json={"route": f"GET {route}", "rate_limit_rate": 1.0,
                                           "retry_after": 7, "count": 1})  # fmt: skip
        r = c.get(f"/pages/{PAGE}/components")
        assert r.status_code == 420 and r.headers["Retry-After"] == "7"
        assert r.json() == {"error": "Rate limit exceeded"}
        assert c.get(f"/pages/{PAGE}/components").status_code == 200
        c.post(url + "/_sim/ratelimit", json={"status": 429})
        c.post(url + "/_sim/faults", json={"route": f"GET {route}", "rate_limit_rate": 1.0,
                                           "error_rate": 0.0, "count": 1})  # fmt: skip
        assert c.get(f"/pages/{PAGE}/components").status_code == 429
        c.delete(url + "/_sim/faults")
        c.post(url + "/_sim/faults", json={"route": f"GET {route}", "error_rate": 1.0,
                                           "error_status": 503, "count": 1})  # fmt: skip
        err = c.get(f"/pages/{PAGE}/components")
        assert err.status_code == 503 and err.json() == {"error": "Simulated server error"}
    httpx.delete(url + "/_sim/ratelimit").raise_for_status()
    # The faulted answers (420/429/503) are not in the spec; the route's 200s are checked above.
    assert_logged_responses_valid(sim_of(sims), "statuspage", skip_routes=(route,))


def test_webhooks_have_the_recorded_shape(
    sims: SimulatorCluster, webhook_receiver: WebhookReceiver
) -> None:
    url = sims.urls["statuspage"]
    rec_incident, rec_update = recorded("incident_created"), recorded("incident_update")
    rec_component = recorded("component_status_update")
    with client(sims) as c:
        c.post(url + "/_sim/webhooks", json={"url": webhook_receiver.url}).raise_for_status()
        inc = create(c, name="Payments down", body="Card payments fail.",
                     components={PAYMENTS: "major_outage"})  # fmt: skip
        got = webhook_receiver.wait_for(2)
        bodies = [g.json() for g in got]
        component_hook = next(b for b in bodies if "component_update" in b)
        incident_hook = next(b for b in bodies if "incident" in b)

        assert set(component_hook) == set(rec_component)
        assert set(component_hook["component_update"]) == set(rec_component["component_update"])
        assert set(rec_component["component"]) <= set(component_hook["component"])
        assert set(component_hook["meta"]) == set(rec_component["meta"])
        update = component_hook["component_update"]
        assert (update["old_status"], update["new_status"]) == ("operational", "major_outage")
        assert update["component_id"] == PAYMENTS and update["component_type"] == "Component"
        assert TIME.match(update["created_at"]) and TIME.match(
            component_hook["meta"]["generated_at"]
        )
        assert component_hook["page"] == {
            "id": PAGE,
            "status_indicator": "critical",
            "status_description": "Major Service Outage",
        }

        assert set(incident_hook) == set(rec_incident)
        assert set(rec_incident["incident"]) <= set(incident_hook["incident"])
        hooked = incident_hook["incident"]
        assert hooked["id"] == inc["id"] and hooked["status"] == "investigating"
        assert set(rec_incident["incident"]["incident_updates"][0]) <= set(
            hooked["incident_updates"][0]
        )
        assert set(rec_incident["incident"]["components"][0]) <= set(hooked["components"][0])

        path = f"/pages/{PAGE}/incidents/{inc['id']}"
        c.patch(path, json={"incident": {"status": "identified", "body": "Quiet update",
                                         "deliver_notifications": False}})  # fmt: skip
        c.patch(path, json={"incident": {"status": "resolved", "body": "Fixed.",
                                         "components": {PAYMENTS: "operational"}}})  # fmt: skip
        got = webhook_receiver.wait_for(4)
        later = [g.json() for g in got[2:]]
        resolved = next(b for b in later if "incident" in b)
        assert set(resolved) == set(rec_update)
        assert resolved["incident"]["status"] == "resolved"
        assert [u["body"] for u in resolved["incident"]["incident_updates"]] == [
            "Fixed.", "Quiet update", "Card payments fail.",
        ]  # fmt: skip
        assert resolved["page"]["status_indicator"] == "none"
        back = next(b for b in later if "component_update" in b)
        assert back["component_update"]["new_status"] == "operational"

        c.patch(f"/pages/{PAGE}/components/{LOGIN}",
                json={"component": {"status": "under_maintenance"}})  # fmt: skip
        got = webhook_receiver.wait_for(5)
        maint = got[4].json()
        assert maint["component"]["id"] == LOGIN
        assert maint["page"]["status_description"] == "Service Under Maintenance"
        # Nothing was sent for the update with deliver_notifications=false.
        assert all(g.json().get("incident", {}).get("status") != "identified" for g in got), (
            "an update without deliver_notifications was delivered"
        )
        # The dispatcher logs an attempt just after the receiver has answered it.
        deadline = time.monotonic() + 5
        while len(log := c.get(url + "/_sim/webhooks/log").json()["deliveries"]) < 5:
            assert time.monotonic() < deadline, log
            time.sleep(0.02)
        assert len(log) == 5 and {d["status"] for d in log} == {204}
    assert_logged_responses_valid(sim_of(sims), "statuspage")


def test_seed_recorded_payloads_round_trip(sims: SimulatorCluster) -> None:
    url = sims.urls["statuspage"]
    update_payload = recorded("incident_update")
    component_payload = recorded("component_status_update")
    with client(sims) as c:
        for payload in (update_payload, component_payload):
            r = c.post(url + "/_sim/seed", json=payload)
            assert r.status_code == 200, r.text
        want = update_payload["incident"]
        got = c.get(f"/pages/{want['page_id']}/incidents/{want['id']}.json").json()
        for key, value in want.items():
            if key in ("incident_updates", "components"):
                continue
            assert got[key] == value, key
        for mine, theirs in zip(got["incident_updates"], want["incident_updates"], strict=True):
            assert {k: mine[k] for k in theirs} == theirs
        assert {k: got["components"][0][k] for k in want["components"][0]} == want["components"][0]

        comp = component_payload["component"]
        got_comp = c.get(f"/pages/{comp['page_id']}/components/{comp['id']}").json()
        assert {k: got_comp[k] for k in comp} == comp
        assert c.get(f"/pages/{comp['page_id']}").json()["id"] == "jb7j80lkgqvb"
        listed = c.get(f"/pages/{want['page_id']}/incidents", params={"q": "database"}).json()
        assert [i["id"] for i in listed] == [want["id"]]

        bad = c.post(url + "/_sim/seed", json={"incidents": [{"name": "x", "status": "bogus"}]})
        assert bad.status_code == 400
    assert_logged_responses_valid(sim_of(sims), "statuspage")


def test_state_snapshot_and_fixture_page_id(sims: SimulatorCluster) -> None:
    sim = sim_of(sims)
    with client(sims) as c:
        inc = create(c, name="Snapshot me", components={SEARCH: "partial_outage"})
    with sim.lock:
        state = json.loads(json.dumps(sim.dump_state()))  # JSON-able
    other = StatuspageSimulator()
    other.load_state(state)
    assert other.dump_state() == state
    assert other.incidents[inc["id"]]["component_ids"] == [SEARCH]
    assert other.components[SEARCH]["status"] == "partial_outage"

    renamed = StatuspageSimulator(page_id="otherpage001")
    renamed.seed(renamed.default_seed())
    assert list(renamed.pages) == ["otherpage001"]
    assert {c["page_id"] for c in renamed.components.values()} == {"otherpage001"}
    assert len(renamed.components) == 4 and len(renamed.incidents) == 1
    assert_logged_responses_valid(sim, "statuspage")


def test_form_bodies_json_suffix_and_update_edits(sims: SimulatorCluster) -> None:
    url = sims.urls["statuspage"]
    form = {
        "incident[name]": "Login errors",
        "incident[status]": "identified",
        "incident[body]": "Some users cannot sign in.",
        "incident[component_ids][]": LOGIN,
        "incident[components][cmplogin0001]": "partial_outage",
        "incident[deliver_notifications]": "false",
        "incident[metadata][itsm_sync][key]": "INC0010002",
    }
    r = httpx.post(f"{url}/v1/pages/{PAGE}/incidents.json", data=form, params={"api_key": KEY})
    assert r.status_code == 201, r.text
    inc = r.json()
    assert inc["impact"] == "major" and inc["metadata"] == {"itsm_sync": {"key": "INC0010002"}}
    assert inc["incident_updates"][0]["deliver_notifications"] is False
    assert [c["status"] for c in inc["components"]] == ["partial_outage"]

    with client(sims) as c:
        upd = inc["incident_updates"][0]
        path = f"/pages/{PAGE}/incidents/{inc['id']}/incident_updates/{upd['id']}"
        edited = c.patch(path, json={"incident_update": {
            "body": "Some users could not sign in.", "display_at": "2024-05-01T12:00:00+02:00",
        }})  # fmt: skip
        assert edited.status_code == 200
        assert edited.json()["body"] == "Some users could not sign in."
        assert edited.json()["display_at"] == "2024-05-01T10:00:00.000Z"
        again = c.get(f"/pages/{PAGE}/incidents/{inc['id']}.json").json()
        assert again["incident_updates"][0]["body"] == "Some users could not sign in."
        put = c.put(f"/pages/{PAGE}/components/{LOGIN}.json",
                    json={"component": {"status": "operational"}})  # fmt: skip
        assert put.status_code == 200 and put.json()["status"] == "operational"
    assert_logged_responses_valid(sim_of(sims), "statuspage")

    # atlassian-python-api 4.0.7 builds this call's path as ".../incidents_update/..." (sic),
    # which the real API does not serve either: 404 (not in the spec, so checked after).
    with pytest.raises(requests.HTTPError) as err:
        sp(sims).page_update_incident_updates(PAGE, inc["id"], upd["id"], {"body": "x"})
    assert err.value.response.status_code == 404
