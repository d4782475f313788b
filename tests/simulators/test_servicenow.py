"""ServiceNow Table API simulator, over real HTTP with pysnow, PySNC and httpx."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pysnc
import pysnow
import pytest

from simulators.runner import ClusterConfig, SimulatorCluster
from simulators.servicenow import ServiceNowSimulator
from tests.conftest import WebhookReceiver
from tests.contracts import CONTRACTS

# Only the ServiceNow simulator is started here (overriding the session-wide cluster fixtures),
# so this file runs on its own and does not depend on the other simulators.


def _sn_cluster(tls: bool) -> SimulatorCluster:
    cfg = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, tls=tls, seed=True)
    return SimulatorCluster(cfg, simulators={"servicenow": ServiceNowSimulator()})


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimulatorCluster]:
    with _sn_cluster(False) as c:
        yield c


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[SimulatorCluster]:
    with _sn_cluster(True) as c:
        yield c


AUTH = ("admin", "admin")
RECORDED = CONTRACTS / "servicenow" / "recorded"


def client(sims: SimulatorCluster) -> httpx.Client:
    return httpx.Client(base_url=sims.urls["servicenow"], auth=AUTH, timeout=10)


def make_incident(c: httpx.Client, **fields: Any) -> dict[str, Any]:
    r = c.post("/api/now/table/incident", json={"short_description": "x", **fields})
    assert r.status_code == 201, r.text
    return dict(r.json()["result"])


def test_pysnow_crud(sims: SimulatorCluster) -> None:
    host = sims.urls["servicenow"].split("://")[1]
    snow = pysnow.Client(host=host, user="admin", password="admin", use_ssl=False)
    inc = snow.resource(api_path="/table/incident")
    created = inc.create(payload={"short_description": "disk full", "impact": "1", "urgency": "2"})
    rec = created.one()
    assert rec["number"].startswith("INC") and rec["priority"] == "2"
    got = inc.get(query={"number": rec["number"]}).one()
    assert got["sys_id"] == rec["sys_id"]
    upd = inc.update(query={"sys_id": rec["sys_id"]}, payload={"urgency": "1"})
    assert upd["priority"] == "1" and upd["sys_mod_count"] == "1"
    assert inc.delete(query={"sys_id": rec["sys_id"]})["status"] == "record deleted"
    assert list(inc.get(query={"sys_id": rec["sys_id"]}).all()) == []


def test_pysnc_paging_and_writes(
    tls_sims: SimulatorCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's verify= setting.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = tls_sims.urls["servicenow"]
    with httpx.Client(base_url=url, auth=AUTH, verify=str(tls_sims.cert.cert)) as c:  # type: ignore[union-attr]
        for i in range(120):
            c.post("/api/now/table/incident", json={"short_description": f"bulk {i}"})
    snc = pysnc.ServiceNowClient(url, AUTH, verify=str(tls_sims.cert.cert))  # type: ignore[union-attr]
    gr = snc.GlideRecord("incident")
    gr.add_query("short_description", "STARTSWITH", "bulk")
    gr.query()
    assert len(gr) == 120
    seen = 0
    while gr.next():
        seen += 1
    assert seen == 120
    new = snc.GlideRecord("incident")
    new.initialize()
    new.short_description = "from pysnc"
    sys_id = new.insert()
    assert sys_id
    one = snc.GlideRecord("incident")
    assert one.get(sys_id)
    one.short_description = "changed"
    one.update()
    again = snc.GlideRecord("incident")
    assert again.get(sys_id) and again.short_description == "changed"
    assert again.delete()
    assert not snc.GlideRecord("incident").get(sys_id)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("short_description=alpha", {"alpha"}),
        ("short_description!=alpha^short_descriptionSTARTSWITHq", {"query beta", "query gamma"}),
        ("impact<2", {"alpha"}),
        ("impact<=2^short_descriptionNOT LIKECheck", {"alpha", "query beta"}),
        ("impact>2", {"query gamma"}),
        ("impact>=2^short_descriptionLIKEquery", {"query beta", "query gamma"}),
        ("short_descriptionINalpha,query gamma", {"alpha", "query gamma"}),
        (
            "short_descriptionNOT INalpha,query gamma^numberSTARTSWITHINC",
            {"query beta", "Checkout latency elevated"},
        ),
        ("short_descriptionLIKEuery", {"query beta", "query gamma"}),
        ("short_descriptionNOT LIKEuery^short_descriptionNOT LIKECheck", {"alpha"}),
        ("short_descriptionENDSWITHgamma", {"query gamma"}),
        ("correlation_idISNOTEMPTY", {"alpha"}),
        ("correlation_idISEMPTY^impact=3", {"query gamma"}),
        ("short_description=alpha^ORshort_description=query beta", {"alpha", "query beta"}),
        ("short_description=alpha^NQshort_description=query gamma", {"alpha", "query gamma"}),
        ("sys_created_on>javascript:gs.dateGenerate('2000-01-01','00:00:00')^impact=1", {"alpha"}),
        (
            "sys_created_onBETWEENjavascript:gs.dateGenerate('2000-01-01','00:00:00')"
            "@javascript:gs.dateGenerate('2001-01-01','00:00:00')",
            set(),
        ),
        # An unknown field makes the whole query invalid: no rows (the hardened default).
        ("bogus_field=1^short_description=alpha", set()),
        ("short_descriptionBOGUSalpha", set()),
        ("impactBETWEEN1@2", {"alpha", "query beta", "Checkout latency elevated"}),
        ("short_description*uery^impact!=3", {"query beta"}),
        ("short_description!*uery^short_description%ha", {"alpha"}),
        ("short_descriptionANYTHING^impact=3", {"query gamma"}),
        ("correlation_idEMPTYSTRING^impact=1", set()),
        ("urgencySAMEASimpact", {"query gamma", "Checkout latency elevated"}),
        ("urgencyNSAMEASimpact", {"alpha", "query beta"}),
        ("urgencyGT_FIELDimpact", {"alpha", "query beta"}),
        ("caller_id.email=alice@example.com", {"Checkout latency elevated"}),
        ("caller_id.emailSTARTSWITHbob", set()),
        (
            "assignment_group.name=SRE^ORshort_description=alpha",
            {"alpha", "Checkout latency elevated"},
        ),
        ("caller_id.bogus=x", set()),
        ("short_description.name=x", set()),
        (
            "sys_created_onONToday@javascript:gs.daysAgoStart(0)@javascript:gs.daysAgoEnd(0)"
            "^short_descriptionSTARTSWITHquery",
            {"query beta", "query gamma"},
        ),
        (
            "sys_created_onONLast 7 days@javascript:gs.beginningOfLast7Days()"
            "@javascript:gs.endOfLast7Days()^impact=1",
            {"alpha"},
        ),
        (
            "sys_created_onNOTONToday@javascript:gs.daysAgoStart(0)@javascript:gs.daysAgoEnd(0)",
            set(),
        ),
        (
            "sys_created_onRELATIVEGT@hour@ago@1^impact=2",
            {"query beta", "Checkout latency elevated"},
        ),
        ("sys_created_onRELATIVELT@hour@ago@1", set()),
        ("sys_created_onRELATIVEGT@minute@ahead@5", set()),
        ("short_descriptionRELATIVEGT@hour@ago@1", set()),  # not a date field: invalid
        ("sys_created_on>=javascript:gs.beginningOfToday()^impact=3", {"query gamma"}),
        ("sys_created_on<javascript:gs.minutesAgoStart(10)", set()),
        ("sys_created_on>javascript:gs.noSuchMacro()", set()),
    ],
)
def test_encoded_query_operators(sims: SimulatorCluster, query: str, expected: set[str]) -> None:
    with client(sims) as c:
        make_incident(c, short_description="alpha", impact="1", correlation_id="c1")
        make_incident(c, short_description="query beta", impact="2")
        make_incident(c, short_description="query gamma", impact="3")
        r = c.get("/api/now/table/incident", params={"sysparm_query": query})
        assert r.status_code == 200
        assert {x["short_description"] for x in r.json()["result"]} == expected


def test_encoded_query_datepart(sims: SimulatorCluster) -> None:
    today = datetime.now(UTC)
    day = today.strftime("%A").lower()
    month = today.strftime("%B").lower()
    with client(sims) as c:
        make_incident(c, short_description="today")
        for query, expected in [
            (f"sys_created_onDATEPART{day}@javascript:gs.datePart('dayofweek','{day}','EE')", 2),
            (f"sys_created_onDATEPART{month}@javascript:gs.datePart('month','{month}','EE')", 2),
            (f"sys_created_onDATEPART1@javascript:gs.datePart('year','{today.year}','GT')", 0),
            (f"sys_created_onDATEPART1@javascript:gs.datePart('year','{today.year}','LE')", 2),
        ]:
            r = c.get("/api/now/table/incident", params={"sysparm_query": query})
            assert len(r.json()["result"]) == expected, query


def test_invalid_query_property(sims: SimulatorCluster) -> None:
    """A real instance ignores an invalid term unless glide.invalid_query.returns_no_rows is
    true; the simulator defaults to true and lets a test switch it off."""
    url = sims.urls["servicenow"]
    with client(sims) as c:
        make_incident(c, short_description="alpha")
        q = {"sysparm_query": "bogus_field=1^short_description=alpha"}
        assert c.get("/api/now/table/incident", params=q).json()["result"] == []
        assert httpx.get(f"{url}/_sim/properties").json() == {
            "glide.invalid_query.returns_no_rows": True
        }
        off = httpx.post(
            f"{url}/_sim/properties", json={"glide.invalid_query.returns_no_rows": False}
        )
        assert off.json()["glide.invalid_query.returns_no_rows"] is False
        rows = c.get("/api/now/table/incident", params=q).json()["result"]
        assert [r["short_description"] for r in rows] == ["alpha"]
        everything = c.get("/api/now/table/incident", params={"sysparm_query": "bogus=1"})
        assert len(everything.json()["result"]) == 2  # the seeded incident and alpha
        bad = httpx.post(f"{url}/_sim/properties", json={"glide.nope": True})
        assert bad.status_code == 400 and "glide.nope" in bad.json()["error"]["detail"]
        bad = httpx.post(f"{url}/_sim/properties", json={"glide.invalid_query.returns_no_rows": 1})
        assert bad.status_code == 400
        # Constructs the simulator cannot evaluate are refused, never answered with all rows.
        for query in (
            "short_descriptionVALCHANGES",
            "caller_idDYNAMIC90d1921e5f510100a9ad2572f2b477fe",
            "RLQUERYsys_journal_field.element_id,>=1^valueLIKEx",
        ):
            r = c.get("/api/now/table/incident", params={"sysparm_query": query})
            assert r.status_code == 400, query
            assert r.json()["error"]["message"] == "Invalid query"


def test_orderby_and_pagination_headers(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        for i in (3, 1, 2):
            make_incident(c, short_description=f"p{i}", impact=str(i))
        q = {"sysparm_query": "short_descriptionSTARTSWITHp^ORDERBYDESCimpact", "sysparm_limit": 2}
        r = c.get("/api/now/table/incident", params=q)
        assert [x["impact"] for x in r.json()["result"]] == ["3", "2"]
        assert r.headers["X-Total-Count"] == "3"
        link = r.headers["Link"]
        assert 'rel="next"' in link and 'rel="first"' in link and 'rel="last"' in link
        nxt = c.get(link.split(",")[1].split(";")[0].strip("<>"))
        assert [x["impact"] for x in nxt.json()["result"]] == ["1"]
        assert 'rel="prev"' in nxt.headers["Link"] and 'rel="next"' not in nxt.headers["Link"]
        s = c.get(
            "/api/now/table/incident", params={**q, "sysparm_suppress_pagination_header": "true"}
        )
        assert "Link" not in s.headers and s.headers["X-Total-Count"] == "3"
        f = c.get("/api/now/table/incident", params={"sysparm_fields": "number,nope", **q})
        assert set(f.json()["result"][0]) == {"number"}
        v1 = c.get("/api/now/v1/table/incident", params={"sysparm_query": "number=NONE"})
        v2 = c.get("/api/now/v2/table/incident", params={"sysparm_query": "number=NONE"})
        assert v1.status_code == 404 and v2.json() == {"result": []}
        bare = c.get(
            "/api/now/table/incident",
            params={"impact": "2", "sysparm_query": "short_descriptionSTARTSWITHp"},
        )
        assert [x["short_description"] for x in bare.json()["result"]] == ["p2"]


def test_display_value_modes(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        inc = c.get("/api/now/table/incident", params={"sysparm_query": "impact=2"}).json()
        rec = inc["result"][0]
        assert rec["business_service"]["value"] == "5e000000000000000000000000000001"
        assert rec["business_service"]["link"].endswith(
            "/api/now/table/cmdb_ci_service/5e000000000000000000000000000001"
        )
        assert rec["parent_incident"] == ""
        path = f"/api/now/table/incident/{rec['sys_id']}"
        t = c.get(path, params={"sysparm_display_value": "True"}).json()["result"]
        # display_value=true: references are {display_value, link}; choices show their labels.
        assert t["business_service"] == {
            "display_value": "Checkout",
            "link": rec["business_service"]["link"],
        }
        assert (t["state"], t["impact"], t["priority"]) == (
            "In Progress",
            "2 - Medium",
            "3 - Moderate",
        )
        a = c.get(path, params={"sysparm_display_value": "all"}).json()["result"]
        assert a["assignment_group"]["display_value"] == "SRE"
        assert a["assignment_group"]["value"].startswith("9a")
        x = c.get(path, params={"sysparm_exclude_reference_link": "true"}).json()["result"]
        assert x["caller_id"] == "a11ce000000000000000000000000001"
        assert a["state"] == {"display_value": "In Progress", "value": "2"}
        tn = c.get(
            path, params={"sysparm_display_value": "true", "sysparm_exclude_reference_link": "true"}
        )
        assert tn.json()["result"]["caller_id"] == "Alice Anders"


def test_display_values_in_the_users_time_zone_and_journal_text(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        inc = make_incident(c, comments="first words")
        c.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"work_notes": "a note"})
        c.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"comments": "second words"})
        path = f"/api/now/table/incident/{inc['sys_id']}"
        a = c.get(path, params={"sysparm_display_value": "all"}).json()["result"]
        utc = datetime.strptime(a["opened_at"]["value"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        # admin has no time_zone of its own: the system default (America/Los_Angeles) applies.
        local = utc.astimezone(ZoneInfo("America/Los_Angeles")).strftime("%Y-%m-%d %H:%M:%S")
        assert a["opened_at"]["display_value"] == local != a["opened_at"]["value"]
        comments = a["comments"]["display_value"]
        assert a["comments"]["value"] == ""
        assert comments.index("second words") < comments.index("first words")
        assert " - System Administrator (Additional comments)\nsecond words\n\n" in comments
        assert "a note" not in comments
        assert a["work_notes"]["display_value"].endswith("(Work notes)\na note\n\n")
        me = c.get("/api/now/table/sys_user", params={"user_name": "admin"}).json()["result"][0]
        c.patch(f"/api/now/table/sys_user/{me['sys_id']}", json={"time_zone": "Asia/Tokyo"})
        t = c.get(path, params={"sysparm_display_value": "true"}).json()["result"]
        tokyo = utc.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
        assert t["opened_at"] == tokyo and t["comments"].startswith(tokyo[:10])


def test_input_display_value(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        me = c.get("/api/now/table/sys_user", params={"user_name": "admin"}).json()["result"][0]
        c.patch(f"/api/now/table/sys_user/{me['sys_id']}", json={"time_zone": "Europe/Berlin"})
        r = c.post(
            "/api/now/table/incident",
            params={"sysparm_input_display_value": "true"},
            json={
                "short_description": "by labels",
                "caller_id": "Bob Brown",
                "assignment_group": "SRE",
                "impact": "1 - High",
                "urgency": "2 - medium",
                "state": "In Progress",
                "resolved_at": "2026-07-01 12:00:00",
            },
        )
        rec = r.json()["result"]
        assert rec["caller_id"]["value"] == "b0b00000000000000000000000000002"
        assert rec["assignment_group"]["value"] == "9a000000000000000000000000000002"
        assert (rec["impact"], rec["urgency"], rec["state"], rec["priority"]) == (
            "1",
            "2",
            "2",
            "2",
        )
        assert rec["resolved_at"] == "2026-07-01 10:00:00"  # Berlin summer time is UTC+2
        # Without the parameter, values are stored as given.
        raw = make_incident(c, impact="1 - High", caller_id="a11ce000000000000000000000000001")
        assert raw["impact"] == "1 - High"
        assert raw["caller_id"]["value"] == "a11ce000000000000000000000000001"


def test_task_defaults_and_state_pair(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        inc = make_incident(c)
        admin_id = "6816f79cc0a8016401c5a33be04be441"
        assert inc["opened_by"]["value"] == admin_id and inc["opened_at"]
        assert (inc["state"], inc["incident_state"], inc["active"]) == ("1", "1", "true")
        path = f"/api/now/table/incident/{inc['sys_id']}"
        moved = c.patch(path, json={"incident_state": "2"}).json()["result"]
        assert (moved["state"], moved["incident_state"]) == ("2", "2")
        canceled = c.patch(path, json={"state": "8"}).json()["result"]
        assert (canceled["incident_state"], canceled["active"]) == ("8", "false")
        chg = c.post("/api/now/table/change_request", json={"short_description": "c"}).json()
        assert chg["result"]["opened_by"]["value"] == admin_id
        assert chg["result"]["active"] == "true"


def test_patch_without_changes_is_not_an_update(
    sims: SimulatorCluster, webhook_receiver: WebhookReceiver
) -> None:
    url = sims.urls["servicenow"]
    with client(sims) as c:
        inc = make_incident(c, short_description="same", impact="2")
        httpx.post(f"{url}/_sim/webhooks", json={"url": webhook_receiver.url})
        path = f"/api/now/table/incident/{inc['sys_id']}"
        same = c.patch(path, json={"short_description": "same", "impact": "2", "bogus": "x"})
        rec = same.json()["result"]
        assert (rec["sys_mod_count"], rec["sys_updated_on"]) == ("0", inc["sys_updated_on"])
        audit = c.get("/api/now/table/sys_audit", params={"documentkey": inc["sys_id"]})
        assert {a["record_checkpoint"] for a in audit.json()["result"]} == {"0"}
        changed = c.patch(path, json={"impact": "1"}).json()["result"]
        assert changed["sys_mod_count"] == "1"
        # The first delivery is the real update's: the no-op PATCH fired no business rule.
        first = webhook_receiver.wait_for(1)[0]
        headers = {k.lower(): v for k, v in first.headers.items()}
        assert headers["x-servicenow-delivery"] == f"{inc['sys_id']}:1"


def test_journal_and_data_policy(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        inc = make_incident(c, comments="first comment")
        assert inc["comments"] == ""
        path = f"/api/now/table/incident/{inc['sys_id']}"
        c.patch(path, json={"work_notes": "note one"})
        c.patch(path, json={"work_notes": "note two"})
        q = f"element_id={inc['sys_id']}^element=work_notes^ORDERBYDESCsys_created_on"
        j = c.get("/api/now/table/sys_journal_field", params={"sysparm_query": q}).json()
        assert len(j["result"]) == 2 and j["result"][0]["element"] == "work_notes"
        assert {x["value"] for x in j["result"]} == {"note one", "note two"}
        denied = c.patch(path, json={"state": "6"})
        assert denied.status_code == 403
        assert denied.json()["error"]["detail"].startswith("Data Policy Exception")
        ok = c.patch(path, json={"state": "6", "close_code": "Solved", "close_notes": "done"})
        assert ok.json()["result"]["resolved_at"] != ""
        closed = c.patch(path, json={"state": "7"}).json()["result"]
        assert closed["active"] == "false" and closed["closed_at"]
        reopened = c.patch(path, json={"state": "2"}).json()["result"]
        assert reopened["reopen_count"] == "1"
        ro = c.post("/api/now/table/sys_journal_field", json={"value": "x"})
        assert ro.status_code == 403


def test_error_bodies(sims: SimulatorCluster) -> None:
    url = sims.urls["servicenow"]
    r = httpx.get(f"{url}/api/now/table/incident")
    assert r.status_code == 401 and r.json() == {
        "error": {"message": "User Not Authenticated",
                  "detail": "Required to provide Auth information"},
        "status": "failure",
    }  # fmt: skip
    with client(sims) as c:
        nf = c.get("/api/now/table/incident/" + "0" * 32)
        assert nf.status_code == 404 and nf.json()["error"]["message"] == "No Record found"
        bad = c.get("/api/now/table/nope")
        assert bad.status_code == 400
        assert bad.json() == {"error": {"message": "Invalid table nope", "detail": None},
                              "status": "failure"}  # fmt: skip
        mal = c.post("/api/now/table/incident", content=b"{nope",
                     headers={"content-type": "application/json"})  # fmt: skip
        assert mal.status_code == 400 and mal.json()["status"] == "failure"
        ign = make_incident(c, unknown_field="z")
        assert "unknown_field" not in ign


def test_oauth_flow(sims: SimulatorCluster) -> None:
    """As ServiceNow documents /oauth_token.do: a form with the registered client's id and
    secret on every grant; password: access and refresh token; refresh_token: an access token
    only; a refused request: 401 access_denied."""
    url = sims.urls["servicenow"]
    client = {"client_id": "itsm-sync", "client_secret": "sim-client-secret"}
    form = {"grant_type": "password", **client, "username": "admin", "password": "admin"}
    tok = httpx.post(f"{url}/oauth_token.do", data=form).json()
    assert tok["token_type"] == "Bearer" and tok["scope"] == "useraccount"
    assert tok["expires_in"] > 0 and tok["refresh_token"]
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    assert httpx.get(f"{url}/api/now/table/sys_user", headers=h).status_code == 200
    refresh = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]}
    ref = httpx.post(f"{url}/oauth_token.do", data={**refresh, **client})
    assert ref.status_code == 200 and ref.json()["access_token"] != tok["access_token"]
    assert "refresh_token" not in ref.json()
    again = httpx.post(f"{url}/oauth_token.do", data={**refresh, **client})  # still good
    assert again.status_code == 200
    refused = {"error_description": "access_denied", "error": "server_error"}
    for bad in (
        {**form, "password": "x"},  # wrong password
        {**form, "client_id": "someone-else"},  # not in the Application Registry
        {**form, "client_secret": "x"},  # wrong client secret
        {k: v for k, v in form.items() if k != "client_id"},  # client_id is required
        refresh,  # a refresh token without its client
        {**refresh, **client, "refresh_token": "zz"},  # an unknown refresh token
    ):
        answer = httpx.post(f"{url}/oauth_token.do", data=bad)
        assert (answer.status_code, answer.json()) == (401, refused), bad
    bogus = httpx.get(f"{url}/api/now/table/sys_user", headers={"Authorization": "Bearer zz"})
    assert bogus.status_code == 401


def test_rate_limit(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        free = c.get("/api/now/table/sys_user")
        assert not [h for h in free.headers if h.lower().startswith("x-ratelimit")]
        c.post("/_sim/ratelimit", json={"requests_per_hour": 3})
        ok = [c.get("/api/now/table/sys_user") for _ in range(3)]
        # A request matching a rate limit rule carries the rule's headers on every response.
        for r in ok:
            assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "3"
            assert int(r.headers["X-RateLimit-Reset"]) > time.time()
            assert re.fullmatch("[0-9a-f]{32}", r.headers["X-RateLimit-Rule"])
        assert c.get("/api/now/table/sys_user").status_code == 429
        r = c.get("/api/now/table/sys_user")
        assert r.headers["X-RateLimit-Limit"] == "3" and int(r.headers["Retry-After"]) > 0
        assert "X-RateLimit-Reset" in r.headers and "X-RateLimit-Rule" in r.headers
        assert r.json()["error"]["message"] == "Rate limit exceeded"
        sims.servicenow.requests_per_hour = None  # type: ignore[attr-defined]


def test_pace_limit_per_second_and_stats_by_status(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        c.delete("/_sim/stats")
        try:
            got = c.post("/_sim/ratelimit", json={"requests_per_second": 0.5, "requests_burst": 2})
            assert got.json() == {
                "requests_per_hour": None, "requests_per_second": 0.5, "requests_burst": 2.0,
            }  # fmt: skip
            codes = [c.get("/api/now/table/sys_user").status_code for _ in range(3)]
            assert codes == [200, 200, 429]  # the burst, then refused
            refused = c.get("/api/now/table/sys_user")
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
            assert refused.json()["error"]["message"] == "Rate limit exceeded"
            by_status = c.get("/_sim/stats", params={"by": "status"}).json()
            assert {k: v for k, v in by_status.items() if "/_sim/" not in k} == {
                "GET /api/now/table/{table} 200": 2, "GET /api/now/table/{table} 429": 2,
            }  # fmt: skip
            assert by_status["POST /_sim/ratelimit 200"] == 1
            assert c.get("/_sim/stats").json()["GET /api/now/table/{table}"] == 4
        finally:
            c.post("/_sim/ratelimit", json={"requests_per_second": None})
        assert c.get("/api/now/table/sys_user").status_code == 200
        c.delete("/_sim/stats")
        assert "GET /api/now/table/{table} 429" not in c.get("/_sim/stats?by=status").json()


def test_faults_and_stats(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        c.delete("/_sim/stats")
        c.post("/_sim/faults", json={"route": "GET /api/now/table/{table}", "error_rate": 1.0,
                                     "error_status": 503, "count": 2})  # fmt: skip
        codes = [c.get("/api/now/table/sys_user").status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        c.delete("/_sim/faults")
        inc = make_incident(c)
        for i in range(3):
            c.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"description": str(i)})
        stats = c.get("/_sim/stats").json()
        assert json.dumps(stats).count("PATCH /api/now/table/{table}/{sys_id}") == 1
        assert "3" in json.dumps(stats)


def test_webhook(sims: SimulatorCluster, webhook_receiver: WebhookReceiver) -> None:
    with client(sims) as c:
        c.post("/_sim/webhooks", json={"url": webhook_receiver.url, "secret": "s3"})
        inc = make_incident(c, short_description="hooked")
        got = webhook_receiver.wait_for(1)
        body = got[0].json()
        payload = body.get("payload", body)
        text = json.dumps(payload)
        assert inc["sys_id"] in text and "insert" in text
        headers = {k.lower(): v for k, v in got[0].headers.items()}
        assert headers["x-servicenow-secret"] == "s3"
        assert headers["x-servicenow-delivery"] == f"{inc['sys_id']}:0"


def test_seed_recorded_change(sims: SimulatorCluster) -> None:
    raw = json.loads(next(RECORDED.glob("*.json")).read_text())
    rec = raw.get("result", raw)
    values = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in rec.items()}
    values["state"] = values.get("state") or "-5"
    with client(sims) as c:
        r = c.post("/_sim/seed", json={"change_request": [values]})
        assert r.status_code == 200
        sys_id = values["sys_id"]
        got = c.get(f"/api/now/table/change_request/{sys_id}",
                    params={"sysparm_exclude_reference_link": "true"}).json()["result"]  # fmt: skip
        assert got["short_description"] == str(values.get("short_description", ""))
        assert all(isinstance(v, str) for v in got.values())


def test_sys_audit_one_row_per_changed_field(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        inc = make_incident(c, short_description="audit me", urgency="2", comments="hello")
        sid = inc["sys_id"]
        path = f"/api/now/table/incident/{sid}"
        c.patch(path, json={"urgency": "1", "work_notes": "journal, not audit"})
        c.put(path, json={"short_description": "audited"})
        q = f"tablename=incident^documentkey={sid}^sys_created_on>=2000-01-01 00:00:00"
        r = c.get(
            "/api/now/table/sys_audit", params={"sysparm_query": q + "^ORDERBYsys_created_on"}
        )
        rows = r.json()["result"]
        by_cp: dict[str, dict[str, tuple[str, str]]] = {}
        for row in rows:
            assert row["user"] == "admin" and row["sys_created_by"] == "admin"
            assert len(row["internal_checkpoint"]) == 18 and row["reason"] == ""
            by_cp.setdefault(row["record_checkpoint"], {})[row["fieldname"]] = (
                row["oldvalue"],
                row["newvalue"],
            )
        # Insert: every non-empty audited field, old value empty; no sys_* or journal fields.
        assert by_cp["0"]["short_description"] == ("", "audit me")
        assert by_cp["0"]["number"] == ("", inc["number"])
        assert not [f for cp in by_cp.values() for f in cp if f.startswith("sys_")]
        assert not [f for cp in by_cp.values() for f in cp if f in ("comments", "work_notes")]
        # Update 1: urgency and the priority it derives; update 2: the description only.
        assert by_cp["1"] == {"urgency": ("2", "1"), "priority": ("4", "3")}
        assert by_cp["2"] == {"short_description": ("audit me", "audited")}
        assert [x["record_checkpoint"] for x in rows] == sorted(
            (x["record_checkpoint"] for x in rows), key=int
        )
        # The platform writes audit rows itself; the Table API refuses writes to them.
        assert c.post("/api/now/table/sys_audit", json={"tablename": "x"}).status_code == 403
        one = c.patch(f"/api/now/table/sys_audit/{rows[0]['sys_id']}", json={"newvalue": "x"})
        assert one.status_code == 403
        users = c.get("/api/now/table/sys_audit", params={"sysparm_query": "tablename=sys_user"})
        assert users.json()["result"] == []


def test_problem_table_and_incident_linkage(
    tls_sims: SimulatorCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = str(tls_sims.cert.cert)  # type: ignore[union-attr]
    snc = pysnc.ServiceNowClient(tls_sims.urls["servicenow"], AUTH, verify=ca)
    with httpx.Client(base_url=tls_sims.urls["servicenow"], auth=AUTH, verify=ca) as c:
        inc = make_incident(c, short_description="checkout 500s")
        r = c.post(
            "/api/now/table/problem",
            json={"short_description": "checkout flaps", "first_reported_by_task": inc["sys_id"]},
        )
        assert r.status_code == 201, r.text
        prb = r.json()["result"]
        assert prb["number"].startswith("PRB") and len(prb["number"]) == 10
        assert (prb["state"], prb["active"], prb["known_error"]) == ("101", "true", "false")
        assert prb["priority"] == "5" and prb["related_incidents"] == "0"
        assert prb["first_reported_by_task"]["value"] == inc["sys_id"]
        assert prb["first_reported_by_task"]["link"].endswith(f"/table/task/{inc['sys_id']}")
        pid = prb["sys_id"]
        # Linking incidents through incident.problem_id keeps related_incidents counted.
        c.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"problem_id": pid})
        other = make_incident(c, problem_id=pid)
        # PySNC (a real client) reads the problem and its incidents over HTTP.
        gr = snc.GlideRecord("problem")
        assert gr.get(pid)
        assert gr.related_incidents == "2" and gr.short_description == "checkout flaps"
        incs = snc.GlideRecord("incident")
        incs.add_query("problem_id", pid)
        incs.query()
        assert sorted(i.number for i in incs) == sorted([inc["number"], other["number"]])
        assert c.delete(f"/api/now/table/incident/{other['sys_id']}").status_code == 204
        path = f"/api/now/table/problem/{pid}"
        assert c.get(path).json()["result"]["related_incidents"] == "1"
        disp = c.get(path, params={"sysparm_display_value": "true"}).json()["result"]
        assert disp["first_reported_by_task"]["display_value"] == inc["number"]
        assert disp["state"] == "New"
        # State model: 106 Resolved sets resolved_*, 107 Closed deactivates, reopening counts.
        res = c.patch(path, json={"state": "106", "resolution_code": "fix_applied"}).json()
        assert res["result"]["resolved_at"] and res["result"]["resolved_by"]
        closed = c.patch(path, json={"state": "107"}).json()["result"]
        assert closed["active"] == "false" and closed["closed_at"]
        back = c.patch(path, json={"state": "103"}).json()["result"]
        assert (back["reopen_count"], back["active"], back["closed_at"]) == ("1", "true", "")
        audit = c.get(
            "/api/now/table/sys_audit",
            params={"sysparm_query": f"tablename=problem^documentkey={pid}^fieldname=state"},
        ).json()["result"]
        assert [(a["oldvalue"], a["newvalue"]) for a in audit] == [
            ("", "101"),
            ("101", "106"),
            ("106", "107"),
            ("107", "103"),
        ]


def _pysnc(tls_sims: SimulatorCluster, monkeypatch: pytest.MonkeyPatch) -> pysnc.ServiceNowClient:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = str(tls_sims.cert.cert)  # type: ignore[union-attr]
    return pysnc.ServiceNowClient(tls_sims.urls["servicenow"], AUTH, verify=ca)


def test_attachment_api_with_pysnc(
    tls_sims: SimulatorCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    snc = _pysnc(tls_sims, monkeypatch)
    gr = snc.GlideRecord("incident")
    gr.initialize()
    gr.short_description = "has a log"
    gr.insert()
    content = b"line one\nline two\n"
    gr.add_attachment("app.log", content, "text/plain")
    atts = gr.get_attachments()
    assert len(atts) == 1
    for a in atts:
        assert a.file_name == "app.log" and a.size_bytes == str(len(content))
        assert a.read() == content
        assert a.table_sys_id == gr.sys_id
    ca = str(tls_sims.cert.cert)  # type: ignore[union-attr]
    with httpx.Client(base_url=tls_sims.urls["servicenow"], auth=AUTH, verify=ca) as c:
        meta = c.get("/api/now/attachment", params={"sysparm_query": f"table_sys_id={gr.sys_id}"})
        (row,) = meta.json()["result"]
        assert row["download_link"].endswith(f"/api/now/attachment/{row['sys_id']}/file")
        got = c.get(f"/api/now/attachment/{row['sys_id']}/file")
        assert got.content == content and got.headers["content-type"].startswith("text/plain")
        assert json.loads(got.headers["X-Attachment-Metadata"])["file_name"] == "app.log"
        up = c.post(
            "/api/now/attachment/upload",
            data={"table_name": "incident", "table_sys_id": gr.sys_id},
            files={"uploadFile": ("shot.png", b"\x89PNG\r\n", "image/png")},
        )
        assert up.status_code == 201 and up.json()["result"]["content_type"] == "image/png"
        nowhere = c.post(
            "/api/now/attachment/file",
            params={"table_name": "incident", "table_sys_id": "0" * 32, "file_name": "x"},
            content=b"x",
        )
        assert nowhere.status_code == 400
        assert c.delete(f"/api/now/attachment/{row['sys_id']}").status_code == 204
        assert c.get(f"/api/now/attachment/{row['sys_id']}").status_code == 404
        assert c.post("/api/now/table/sys_attachment", json={}).status_code == 403


def test_batch_api_with_pysnc(tls_sims: SimulatorCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    snc = _pysnc(tls_sims, monkeypatch)
    ids = []
    for i in range(3):
        gr = snc.GlideRecord("incident")
        gr.initialize()
        gr.short_description = f"batch {i}"
        ids.append(gr.insert())
    gr = snc.GlideRecord("incident")
    gr.add_query("short_description", "STARTSWITH", "batch ")
    gr.query()
    for rec in gr:
        rec.urgency = "1"
    assert gr.update_multiple()  # PySNC sends these PATCHes through /api/now/v1/batch
    check = snc.GlideRecord("incident")
    check.add_query("short_description", "STARTSWITH", "batch ")
    check.add_query("urgency", "1")
    check.query()
    assert len(check) == 3
    ca = str(tls_sims.cert.cert)  # type: ignore[union-attr]
    with httpx.Client(base_url=tls_sims.urls["servicenow"], auth=AUTH, verify=ca) as c:
        body = {
            "batch_request_id": "7",
            "rest_requests": [
                {"id": "a", "method": "GET", "url": f"/api/now/table/incident/{ids[0]}"},
                {"id": "b", "method": "GET", "url": "/api/now/table/nope"},
                {"id": "c", "url": "/api/now/nothing/here", "exclude_response_headers": True},
            ],
        }
        r = c.post("/api/now/v1/batch", json=body).json()
        assert r["batch_request_id"] == "7" and r["unserviced_requests"] == []
        by_id = {s["id"]: s for s in r["serviced_requests"]}
        a = json.loads(base64.b64decode(by_id["a"]["body"]))
        assert by_id["a"]["status_code"] == 200 and a["result"]["sys_id"] == ids[0]
        assert by_id["a"]["status_text"] == "OK" and by_id["a"]["headers"]
        assert by_id["b"]["status_code"] == 400 and "headers" not in by_id["c"]
        bad = c.post("/api/now/v1/batch", json={"rest_requests": "x"})
        assert bad.status_code == 400


def test_join_and_related_list_queries(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        noted = make_incident(c, short_description="noted", work_notes="n1")
        c.patch(f"/api/now/table/incident/{noted['sys_id']}", json={"work_notes": "n2"})
        make_incident(c, short_description="quiet")

        def names(query: str) -> set[str]:
            r = c.get("/api/now/table/incident", params={"sysparm_query": query})
            assert r.status_code == 200, r.text
            return {x["short_description"] for x in r.json()["result"]}

        rl = "RLQUERYsys_journal_field.element_id,{}^element=work_notes^ENDRLQUERY"
        assert names(rl.format(">1")) == {"noted"}
        assert names(rl.format("=0") + "^short_descriptionSTARTSWITHq") == {"quiet"}
        assert names(rl.format(">5")) == set()
        # Incidents whose caller manages... here: whose caller is an active user named Alice.
        join = "JOINincident.caller_id=sys_user.sys_id!name=Alice Anders"
        assert names(join) == {"Checkout latency elevated"}
        assert names("JOINincident.caller_id=sys_user.sys_id!name=Nobody") == set()
        assert names("JOINincident.caller_id=nope.sys_id!name=x") == set()  # invalid: no rows


def test_dot_walked_fields_custom_sys_id_and_long_urls(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        q = {"sysparm_query": "impact=2", "sysparm_fields": "number,caller_id.email,caller_id"}
        rec = c.get("/api/now/table/incident", params=q).json()["result"][0]
        assert rec["caller_id.email"] == "alice@example.com" and set(rec) == {
            "number",
            "caller_id.email",
            "caller_id",
        }
        custom = "AAAABBBBCCCCDDDDEEEEFFFF00001111"
        made = make_incident(c, sys_id=custom)
        assert made["sys_id"] == custom
        again = c.post("/api/now/table/incident", json={"sys_id": custom})
        assert again.status_code == 403
        assert make_incident(c, sys_id="not-a-sys-id")["sys_id"] != "not-a-sys-id"
        long = c.get("/api/now/table/" + "A" * 20000)
        assert long.status_code == 414 and long.text.startswith("<html>")
        me = c.get("/api/now/table/sys_user", params={"user_name": "admin"}).json()["result"][0]
        assert me["user_password"] == ""  # a password is never returned
