"""Jira Cloud REST simulator, over real HTTP with pycontribs ``jira``, atlassian-python-api and
httpx. Every test ends by validating every logged response against Atlassian's v3 spec."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import requests
from atlassian import Jira
from jira import JIRA, JIRAError

from simulators.base import Simulator
from simulators.jira import JiraSimulator
from simulators.runner import ClusterConfig, SimulatorCluster
from tests.conftest import WebhookReceiver
from tests.contracts import CONTRACTS
from tests.simulators.openapi_check import assert_logged_responses_valid

# Only the Jira simulator is started here (overriding the session-wide cluster fixture), so this
# file runs on its own and does not depend on the other simulators.


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimulatorCluster]:
    cfg = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=True)
    with SimulatorCluster(cfg, simulators={"jira": JiraSimulator()}) as c:
        yield c


@pytest.fixture(autouse=True)
def default_limits(cluster: SimulatorCluster) -> Iterator[None]:
    """Rate-limit settings survive /_sim/reset; put back the defaults after every test."""
    jira = cast(JiraSimulator, cluster.jira)
    saved = dict(jira.limits)
    yield
    with jira.lock:
        jira.limits.update(saved)


EMAIL, TOKEN = "admin@example.com", "sim-token"
ADMIN = "5b10a2844c20165700ede200"
ALICE = "5b10a2844c20165700ede201"
RECORDED = CONTRACTS / "jira" / "recorded"
JIRA_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$")


def client(sims: SimulatorCluster) -> httpx.Client:
    return httpx.Client(base_url=sims.urls["jira"], auth=(EMAIL, TOKEN), timeout=10)


def pyjira(sims: SimulatorCluster) -> JIRA:
    return JIRA(server=sims.urls["jira"], basic_auth=(EMAIL, TOKEN))


def apa(sims: SimulatorCluster) -> Jira:
    return Jira(sims.urls["jira"], username=EMAIL, password=TOKEN, cloud=True)


def sim(sims: SimulatorCluster) -> JiraSimulator:
    return cast(JiraSimulator, sims.jira)


# Where Atlassian's spec and the real Jira Cloud disagree, the simulator follows Jira; the view
# below undoes exactly those differences before validating, and nothing else:
# - Jira sends timestamps as 2024-01-01T10:00:00.000+0000 (offset without a colon), which is
#   not RFC 3339 `date-time` as the spec declares;
# - changelog items carry `"from": null` / `"to": null`, which the spec does not mark nullable;
# - these operations answer with an empty body although the spec declares JSON content;
# - GET .../remotelink without `globalId` returns an array; the spec declares one object;
# - 429 is not declared on most operations;
# - /rest/applinks/latest/listApplicationlinks is not part of the platform REST spec.
_TIME = re.compile(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})([+-]\d\d)(\d\d)"')
_EMPTY_BODY = {
    ("PUT", "/rest/api/{version}/issue/{issueIdOrKey}"),
    ("POST", "/rest/api/{version}/issue/{issueIdOrKey}/transitions"),
    ("PUT", "/rest/api/{version}/issue/{issueIdOrKey}/assignee"),
    ("PUT", "/rest/api/{version}/issue/{issueIdOrKey}/properties/{propertyKey}"),
    ("PUT", "/rest/api/{version}/issue/{issueIdOrKey}/remotelink/{linkId}"),
    ("POST", "/rest/api/{version}/issueLink"),
    ("POST", "/rest/api/{version}/issue/{issueIdOrKey}/votes"),
    ("DELETE", "/rest/api/{version}/issue/{issueIdOrKey}/votes"),
}


def _strip_null_changes(value: Any) -> Any:
    if isinstance(value, dict):
        if "fieldtype" in value:  # a changelog item
            return {k: v for k, v in value.items() if v is not None}
        return {k: _strip_null_changes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_null_changes(v) for v in value]
    return value


def assert_valid(sims: SimulatorCluster) -> int:
    entries = []
    for entry in list(sims.jira.request_log):
        if (entry["method"], entry["route"]) in _EMPTY_BODY and not entry["response_body"]:
            continue
        if entry["status"] == 429 or entry["route"].startswith(("/rest/applinks/", "/rest/auth/")):
            continue
        if "/gadget" in entry["route"]:
            # The v3 spec names DashboardGadgetPosition's properties by their descriptions
            # ("The row position of the gadget."); Jira sends {"row", "column"}.
            continue
        if (
            entry["method"] == "GET"
            and entry["route"].endswith("/remotelink")
            and not any(k == "globalId" for k, _ in entry["query"])
        ):
            continue
        body = _TIME.sub(r'"\1\2:\3"', entry["response_body"])
        if body[:1] in ("{", "["):
            body = json.dumps(_strip_null_changes(json.loads(body)))
        entries.append({**entry, "response_body": body})
    view = cast(Simulator, SimpleNamespace(request_log=entries))
    checked = assert_logged_responses_valid(view, "jira")
    assert checked > 0
    return checked


def jira_error(info: pytest.ExceptionInfo[JIRAError]) -> Any:
    """The JSON error body behind a pycontribs JIRAError."""
    assert info.value.response is not None
    return info.value.response.json()


def create(c: httpx.Client, version: str = "2", **fields: Any) -> dict[str, Any]:
    body = {"project": {"key": "OPS"}, "issuetype": {"name": "Incident"}, "summary": "x", **fields}
    r = c.post(f"/rest/api/{version}/issue", json={"fields": body})
    assert r.status_code == 201, r.text
    return dict(r.json())


# ---------------------------------------------------------------------------------------------
# pycontribs jira


def test_pycontribs_create_get_edit(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    assert j._is_cloud
    issue = j.create_issue(
        project="OPS",
        issuetype={"name": "Incident"},
        summary="Disk full on db-1",
        description="first line\nsecond line",
        priority={"name": "Highest"},
        assignee={"accountId": ALICE},
        labels=["incident", "db"],
        components=[{"name": "Payments"}],
        customfield_10010={"value": "SEV1"},
        customfield_10011="INC0010001",
    )
    assert re.fullmatch(r"OPS-\d+", issue.key)
    f = issue.fields
    assert (f.status.name, f.status.statusCategory.key) == ("Open", "new")
    assert f.priority.name == "Highest" and f.assignee and f.assignee.accountId == ALICE
    assert f.reporter.accountId == ADMIN and f.creator.accountId == ADMIN
    assert f.customfield_10010.value == "SEV1" and f.customfield_10011 == "INC0010001"
    assert [c.name for c in f.components] == ["Payments"] and f.resolution is None
    assert JIRA_TIME.match(f.created) and f.created == f.updated

    issue.update(
        fields={"summary": "Disk full on db-1 and db-2", "priority": {"name": "High"}},
        update={"labels": [{"add": "storage"}, {"remove": "db"}]},
    )
    assert issue.fields.summary == "Disk full on db-1 and db-2"
    assert issue.fields.labels == ["incident", "storage"]
    assert issue.fields.updated > issue.fields.created

    got = j.issue(issue.key, expand="changelog,names")
    items = {i.field: i for h in got.changelog.histories for i in h.items}
    assert items["priority"].fromString == "Highest" and items["priority"].toString == "High"
    assert items["labels"].toString == "incident storage"
    assert got.raw["names"]["customfield_10010"] == "Severity"

    # Unknown names in `fields` are ignored, like Jira does.
    only = j.issue(issue.key, fields="summary,nonexistent")
    assert set(only.raw["fields"]) == {"summary"}

    # v3 reads the same description as ADF; v2 as the string that was written.
    with client(sims) as c:
        v3 = c.get(f"/rest/api/3/issue/{issue.key}").json()["fields"]["description"]
        assert v3["type"] == "doc" and v3["content"][0]["content"][1] == {"type": "hardBreak"}
        v2 = c.get(f"/rest/api/2/issue/{issue.key}").json()["fields"]["description"]
        assert v2 == "first line\nsecond line"
        assert c.delete(f"/rest/api/2/issue/{issue.key}").status_code == 204
        assert c.get(f"/rest/api/2/issue/{issue.key}").status_code == 404
    assert_valid(sims)


def test_pycontribs_search_uses_search_jql(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        keys = [create(c, summary=f"bulk {n}", labels=["bulk"])["key"] for n in range(7)]
    j = pyjira(sims)
    first = j.search_issues("labels = bulk ORDER BY key ASC", maxResults=3)
    assert [i.key for i in first] == keys[:3]
    everything = j.enhanced_search_issues("labels = bulk ORDER BY key DESC", maxResults=0)
    assert [i.key for i in everything] == list(reversed(keys))
    stats = sims.jira.stats
    assert stats["GET /rest/api/{version}/search/jql"] == 2
    assert stats["GET /rest/api/{version}/field"] >= 1  # pycontribs' field cache
    assert "GET /rest/api/{version}/search" not in stats
    assert_valid(sims)


def test_pagination_with_next_page_token_and_start_at(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        keys = [create(c, summary=f"page {n}", labels=["paged"])["key"] for n in range(7)]
        seen: list[str] = []
        params: dict[str, Any] = {
            "jql": "labels = paged ORDER BY created ASC, key ASC",
            "maxResults": 3,
            "fields": "summary",
        }
        pages = 0
        while True:
            body = c.get("/rest/api/3/search/jql", params=params).json()
            assert "total" not in body
            pages += 1
            seen += [i["key"] for i in body["issues"]]
            if body["isLast"]:
                assert "nextPageToken" not in body
                break
            params["nextPageToken"] = body["nextPageToken"]
        assert pages == 3 and seen == keys
        # The token is bound to its query.
        other = c.get(
            "/rest/api/3/search/jql",
            params={"jql": "project = OPS", "nextPageToken": params["nextPageToken"]},
        )
        assert other.status_code == 400
        # Default fields on /search/jql are ids only.
        ids = c.get("/rest/api/2/search/jql", params={"jql": "labels = paged"}).json()
        assert all(set(i) == {"id"} for i in ids["issues"])
        # POST variant, as pycontribs sends it with use_post=True.
        post = c.post(
            "/rest/api/2/search/jql",
            json={
                "jql": "labels = paged",
                "maxResults": 5,
                "fields": ["summary"],
                "expand": None,
                "reconcileIssues": [],
            },
        )
        assert len(post.json()["issues"]) == 5 and post.json()["isLast"] is False
        # The old offset search: startAt / maxResults / total.
        old = c.get(
            "/rest/api/2/search",
            params={"jql": "labels = paged ORDER BY key", "startAt": 6, "maxResults": 3},
        )
        assert old.json()["total"] == 7 and old.json()["startAt"] == 6
        assert [i["key"] for i in old.json()["issues"]] == keys[6:]
        posted = c.post(
            "/rest/api/2/search",
            json={"jql": "labels = paged", "startAt": 0, "maxResults": 2, "fields": ["key"]},
        )
        assert posted.json()["maxResults"] == 2 and len(posted.json()["issues"]) == 2
    assert_valid(sims)


def test_transitions_multi_step_with_required_resolution(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    issue = j.create_issue(project="OPS", issuetype={"name": "Incident"}, summary="walk me")
    assert [t["name"] for t in j.transitions(issue)] == ["Start Progress"]
    with pytest.raises(JIRAError) as closed:
        j.transition_issue(issue, "41")  # Close is only available from Resolved
    assert closed.value.status_code == 400
    assert jira_error(closed)["errorMessages"] == [
        "Transition id '41' is not valid for this issue."
    ]
    j.transition_issue(issue, "Start Progress")
    resolve = j.transitions(issue, expand="transitions.fields")
    meta = {t["name"]: t for t in resolve}["Resolve"]
    assert meta["fields"]["resolution"]["required"] is True
    assert "Done" in [v["name"] for v in meta["fields"]["resolution"]["allowedValues"]]
    with pytest.raises(JIRAError) as missing:
        j.transition_issue(issue, "Resolve")
    assert jira_error(missing)["errors"] == {"resolution": "Resolution is required."}
    with pytest.raises(JIRAError) as off_screen:
        j.transition_issue(
            issue, "Resolve", fields={"resolution": {"name": "Done"}, "summary": "no"}
        )
    assert "summary" in jira_error(off_screen)["errors"]
    j.transition_issue(
        issue, "Resolve", fields={"resolution": {"name": "Done"}}, comment="fixed by restart"
    )
    done = j.issue(issue.key, expand="changelog")
    assert done.fields.status.name == "Resolved"
    assert done.fields.resolution and done.fields.resolution.name == "Done"
    assert JIRA_TIME.match(done.fields.resolutiondate)
    assert done.fields.comment.comments[-1].body == "fixed by restart"
    status_items = [i for h in done.changelog.histories for i in h.items if i.field == "status"]
    assert [(i.fromString, i.toString) for i in status_items] == [
        ("Open", "In Progress"),
        ("In Progress", "Resolved"),
    ]
    j.transition_issue(issue, "Close")
    j.transition_issue(issue, "Reopen")
    reopened = j.issue(issue.key)
    assert reopened.fields.status.name == "Reopened"
    assert reopened.fields.resolution is None and reopened.fields.resolutiondate is None
    assert reopened.fields.statuscategorychangedate >= done.fields.resolutiondate
    assert_valid(sims)


def test_comments_visibility_and_paging(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    issue = j.create_issue(project="OPS", issuetype={"name": "Task"}, summary="talk")
    internal = j.add_comment(
        issue, "for admins", visibility={"type": "role", "value": "Administrators"}
    )
    assert internal.visibility.type == "role" and internal.visibility.value == "Administrators"
    assert internal.author.accountId == ADMIN and JIRA_TIME.match(internal.created)
    group = j.add_comment(issue, "for sre", visibility={"type": "group", "value": "sre"})
    assert group.visibility.value == "sre"
    with pytest.raises(JIRAError) as bad_role:
        j.add_comment(issue, "x", visibility={"type": "role", "value": "Nobody"})
    assert "commentLevel" in jira_error(bad_role)["errors"]
    for n in range(3):
        j.add_comment(issue, f"note {n}")
    assert [c.body for c in j.comments(issue)][-1] == "note 2"
    with client(sims) as c:
        page = c.get(
            f"/rest/api/2/issue/{issue.key}/comment", params={"startAt": 1, "maxResults": 2}
        ).json()
        assert (page["startAt"], page["maxResults"], page["total"]) == (1, 2, 5)
        assert [x["body"] for x in page["comments"]] == ["for sre", "note 0"]
        newest = c.get(
            f"/rest/api/2/issue/{issue.key}/comment",
            params={"orderBy": "-created", "maxResults": 1},
        ).json()
        assert newest["comments"][0]["body"] == "note 2"
        v3 = c.get(
            f"/rest/api/3/issue/{issue.key}/comment/{internal.id}",
            params={"expand": "renderedBody"},
        ).json()
        assert v3["body"]["type"] == "doc" and v3["renderedBody"] == "<p>for admins</p>"
        adf_body = {
            "type": "doc",
            "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": "rich"}]}],
        }
        made = c.post(f"/rest/api/3/issue/{issue.key}/comment", json={"body": adf_body})
        assert made.status_code == 201 and made.json()["body"] == adf_body
        as_v2 = c.get(f"/rest/api/2/issue/{issue.key}/comment/{made.json()['id']}").json()
        assert as_v2["body"] == "rich"
        wrong = c.post(f"/rest/api/3/issue/{issue.key}/comment", json={"body": "plain"})
        assert (
            wrong.status_code == 400 and "Atlassian Document" in wrong.json()["errors"]["comment"]
        )
        empty = c.post(f"/rest/api/2/issue/{issue.key}/comment", json={"body": "  "})
        assert empty.json()["errors"] == {"comment": "Comment body can not be empty!"}
    group.update(body="edited for sre")
    assert j.comment(issue.key, group.id).body == "edited for sre"
    group.delete()
    assert len(j.comments(issue)) == 5
    assert_valid(sims)


def test_remote_links_upsert_by_global_id(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    sims.jira.request_log.clear()
    first = j.add_remote_link(
        "OPS-1",
        {"url": "https://sn.example.com/INC1", "title": "INC1"},
        globalId="servicenow:incident:1",
        application={"type": "servicenow", "name": "ServiceNow"},
    )
    again = j.add_remote_link(
        "OPS-1",
        {"url": "https://sn.example.com/INC1", "title": "INC1 v2"},
        globalId="servicenow:incident:1",
    )
    assert first.id == again.id
    posts = [e["status"] for e in sims.jira.request_log if e["method"] == "POST"]
    assert posts == [201, 200]
    other = j.add_simple_link("OPS-1", {"url": "https://status.example.com", "title": "Status"})
    links = j.remote_links("OPS-1")
    assert [link.object.title for link in links] == ["INC1 v2", "Status"]
    # The upsert replaces the whole link: fields missing from the request become null.
    assert not hasattr(links[0], "application") or links[0].application is None
    with client(sims) as c:
        one = c.get(
            "/rest/api/2/issue/OPS-1/remotelink", params={"globalId": "servicenow:incident:1"}
        ).json()
        assert one["id"] == first.id and one["object"]["title"] == "INC1 v2"
        put = c.put(
            f"/rest/api/2/issue/OPS-1/remotelink/{other.id}",
            json={"object": {"url": "https://status.example.com", "title": "Page"}},
        )
        assert put.status_code == 204
        assert (
            c.get(f"/rest/api/2/issue/OPS-1/remotelink/{other.id}").json()["object"]["title"]
            == "Page"
        )
        bad = c.post("/rest/api/2/issue/OPS-1/remotelink", json={"object": {"url": "u"}})
        assert bad.status_code == 400 and bad.json()["errors"] == {"title": "'title' is required."}
        assert c.delete(f"/rest/api/2/issue/OPS-1/remotelink/{other.id}").status_code == 204
        assert c.get(f"/rest/api/2/issue/OPS-1/remotelink/{other.id}").status_code == 404
    assert_valid(sims)


def test_issue_links_and_link_types(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    a = j.create_issue(project="OPS", issuetype={"name": "Incident"}, summary="a")
    b = j.create_issue(project="ENG", issuetype={"name": "Task"}, summary="b")
    assert "Problem/Incident" in [t.name for t in j.issue_link_types()]
    response = j.create_issue_link("Blocks", a.key, b.key)
    assert response.status_code == 201 and response.text == ""
    # pycontribs swaps the issues when given the inward phrase.
    j.create_issue_link("is caused by", b.key, a.key)
    a_links = j.issue(a.key).fields.issuelinks
    b_links = j.issue(b.key).fields.issuelinks
    assert [(lk.type.name, lk.outwardIssue.key) for lk in a_links] == [
        ("Blocks", b.key),
        ("Problem/Incident", b.key),
    ]
    assert all(lk.inwardIssue.key == a.key for lk in b_links)
    link = j.issue_link(a_links[0].id)
    assert link.inwardIssue.key == a.key and link.outwardIssue.key == b.key
    history = j.issue(b.key, expand="changelog").changelog.histories
    assert history[0].items[0].toString == f"This issue is blocked by {a.key}"
    with client(sims) as c:
        missing = c.post(
            "/rest/api/2/issueLink",
            json={
                "type": {"name": "Nope"},
                "inwardIssue": {"key": a.key},
                "outwardIssue": {"key": b.key},
            },
        )
        assert missing.status_code == 404
        assert c.delete(f"/rest/api/2/issueLink/{link.id}").status_code == 204
    assert len(j.issue(a.key).fields.issuelinks) == 1
    assert_valid(sims)


def test_issue_properties_and_property_jql(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    issue = j.create_issue(project="OPS", issuetype={"name": "Incident"}, summary="props")
    assert (
        j.add_issue_property(issue.key, "itsm", {"incident": "INC0010042", "n": 3}).status_code
        == 201
    )
    assert (
        j.add_issue_property(issue.key, "itsm", {"incident": "INC0010042", "n": 4}).status_code
        == 200
    )
    assert j.add_issue_property(issue.key, "other", True).status_code == 201
    assert [p.key for p in j.issue_properties(issue.key)] == ["itsm", "other"]
    assert j.issue_property(issue.key, "itsm").value.n == 4
    found = j.search_issues('issue.property[itsm].incident = "INC0010042"')
    assert [i.key for i in found] == [issue.key]
    assert [i.key for i in j.search_issues("issue.property[itsm].n > 3")] == [issue.key]
    assert j.search_issues("issue.property[itsm].n < 3") == []
    with client(sims) as c:
        got = c.get(
            f"/rest/api/2/issue/{issue.key}", params={"properties": "itsm", "fields": "summary"}
        ).json()
        assert got["properties"] == {"itsm": {"incident": "INC0010042", "n": 4}}
        assert c.delete(f"/rest/api/2/issue/{issue.key}/properties/itsm").status_code == 204
        gone = c.get(f"/rest/api/2/issue/{issue.key}/properties/itsm")
        assert gone.status_code == 404
        assert gone.json()["errorMessages"] == ["The property with key 'itsm' does not exist."]
    assert_valid(sims)


def test_users_and_myself(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    me = j.myself()
    assert me["accountId"] == ADMIN and me["timeZone"] == "UTC"
    assert me["emailAddress"] == EMAIL and me["accountType"] == "atlassian"
    by_mail = j.search_users(query="alice@example.com")
    assert [(u.accountId, u.displayName, u.active) for u in by_mail] == [
        (ALICE, "Alice Anders", True)
    ]
    assert {u.emailAddress for u in j.search_users(query="b")} == {"bob@example.com"}
    with client(sims) as c:
        alice = c.get("/rest/api/3/user", params={"accountId": ALICE}).json()
        assert alice["timeZone"] == "Europe/Berlin" and alice["groups"]["size"] == 3
        assert c.get("/rest/api/3/user", params={"accountId": "nope"}).status_code == 404
        assert c.get("/rest/api/3/user/search").status_code == 400
        assignable = c.get(
            "/rest/api/2/user/assignable/search", params={"project": "OPS", "query": "car"}
        ).json()
        assert [u["displayName"] for u in assignable] == ["Carol Clark"]
    # Other seeded users authenticate with their own API tokens.
    as_alice = httpx.get(
        f"{sims.urls['jira']}/rest/api/2/myself", auth=("alice@example.com", "alice-token")
    )
    assert as_alice.json()["accountId"] == ALICE
    assert_valid(sims)


def test_metadata_endpoints(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        info = c.get("/rest/api/2/serverInfo").json()
        assert info["deploymentType"] == "Cloud" and len(info["versionNumbers"]) == 3
        fields = {f["id"]: f for f in c.get("/rest/api/2/field").json()}
        assert fields["customfield_10010"]["clauseNames"][:2] == ["cf[10010]", "Severity"]
        assert fields["summary"]["schema"] == {"type": "string", "system": "summary"}
        assert [p["name"] for p in c.get("/rest/api/2/priority").json()] == [
            "Highest",
            "High",
            "Medium",
            "Low",
            "Lowest",
        ]
        project = c.get("/rest/api/2/project/OPS").json()
        assert [t["name"] for t in project["issueTypes"]] == [
            "Incident",
            "Task",
            "Post-incident review",
        ]
        assert [x["name"] for x in project["components"]] == [
            "Checkout",
            "Payments",
            "Search",
            "Login",
        ]
        assert c.get("/rest/api/2/project/NOPE").json()["errorMessages"] == [
            "No project could be found with key 'NOPE'."
        ]
        found = c.get("/rest/api/3/project/search", params={"query": "eng"}).json()
        assert [p["key"] for p in found["values"]] == ["ENG"]
        assert {s["name"] for s in c.get("/rest/api/2/status").json()} >= {"Open", "Closed"}
        assert len(c.get("/rest/api/2/resolution").json()) == 4
        assert len(c.get("/rest/api/2/issuetype").json()) == 3
        assert c.get("/rest/api/2/issueLinkType").json()["issueLinkTypes"][0]["name"] == "Blocks"
        types = c.get("/rest/api/3/issue/createmeta/OPS/issuetypes").json()
        assert types["total"] == 3
        incident = types["issueTypes"][0]["id"]
        meta = c.get(f"/rest/api/3/issue/createmeta/OPS/issuetypes/{incident}").json()
        by_id = {m["fieldId"]: m for m in meta["fields"]}
        assert by_id["summary"]["required"] and not by_id["description"]["required"]
        assert by_id["customfield_10010"]["allowedValues"][0]["value"] == "SEV1"
        old = c.get(
            "/rest/api/2/issue/createmeta",
            params={
                "projectKeys": "OPS",
                "issuetypeNames": "Task",
                "expand": "projects.issuetypes.fields",
            },
        ).json()
        assert old["projects"][0]["issuetypes"][0]["fields"]["summary"]["required"] is True
        edit = c.get("/rest/api/2/issue/OPS-1/editmeta").json()["fields"]
        assert "status" not in edit and edit["labels"]["operations"] == ["add", "set", "remove"]
        assert c.get("/rest/api/2/project/OPS/components").json()[0]["name"] == "Checkout"
        statuses = c.get("/rest/api/2/project/OPS/statuses").json()
        assert statuses[0]["statuses"][0]["statusCategory"]["key"] == "new"
    assert_valid(sims)


# ---------------------------------------------------------------------------------------------
# atlassian-python-api


def test_atlassian_python_api_flow(sims: SimulatorCluster) -> None:
    jira = apa(sims)
    created = jira.issue_create(
        fields={
            "project": {"key": "OPS"},
            "issuetype": {"name": "Incident"},
            "summary": "from APA",
            "labels": ["apa"],
        }
    )
    key = created["key"]
    assert created["self"].endswith(f"/rest/api/2/issue/{created['id']}")
    assert jira.issue(key)["fields"]["summary"] == "from APA"
    found = cast(dict[str, Any], jira.jql("labels = apa", fields=["summary", "status"]))
    assert [i["key"] for i in found["issues"]] == [key] and found["isLast"] is True
    assert set(found["issues"][0]["fields"]) == {"summary", "status"}
    assert jira.enhanced_jql("labels = apa", fields="summary")["issues"][0]["key"] == key
    comment = jira.issue_add_comment(
        key, "APA comment", visibility={"type": "role", "value": "Developers"}
    )
    assert comment["body"] == "APA comment" and comment["visibility"]["value"] == "Developers"
    assert jira.get_issue_transitions(key) == [
        {"name": "Start Progress", "id": 11, "to": "In Progress"}
    ]
    jira.set_issue_status(key, "In Progress")
    with pytest.raises(requests.HTTPError, match="Resolution is required"):
        jira.set_issue_status(key, "Resolved")
    jira.set_issue_status(key, "Resolved", fields={"resolution": {"name": "Won't Do"}})
    assert jira.get_issue_status(key) == "Resolved"
    assert jira.issue(key)["fields"]["resolution"]["name"] == "Won't Do"
    link = jira.create_or_update_issue_remote_links(
        key, "https://sn/INC7", "INC7", global_id="sn:7"
    )
    same = jira.create_or_update_issue_remote_links(
        key, "https://sn/INC7", "INC7!", global_id="sn:7", relationship="mirrors"
    )
    assert link["id"] == same["id"]
    links = jira.get_issue_remote_links(key)
    assert len(links) == 1 and links[0]["relationship"] == "mirrors"
    jira.update_issue_field(key, {"labels": ["apa", "edited"]})
    assert jira.issue(key)["fields"]["labels"] == ["apa", "edited"]
    assert_valid(sims)


# ---------------------------------------------------------------------------------------------
# Errors


def test_error_bodies(sims: SimulatorCluster) -> None:
    url = sims.urls["jira"]
    for auth in (None, (EMAIL, "wrong")):
        r = httpx.get(f"{url}/rest/api/2/myself", auth=auth)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/json;charset=UTF-8"
        assert r.json() == {
            "errorMessages": ["Client must be authenticated to access this resource."],
            "errors": {},
        }
    with pytest.raises(requests.HTTPError, match="Client must be authenticated"):
        Jira(url, username=EMAIL, password="wrong", cloud=True).issue("OPS-1")
    with client(sims) as c:
        nf = c.get("/rest/api/3/issue/OPS-999")
        assert nf.status_code == 404 and nf.json() == {
            "errorMessages": ["Issue does not exist or you do not have permission to see it."],
            "errors": {},
        }
        assert nf.headers["content-type"] == "application/json;charset=UTF-8"
        bad = c.get("/rest/api/2/search/jql", params={"jql": "project = OPS AND"})
        assert bad.status_code == 400 and bad.json()["errorMessages"] == [
            "Error in the JQL Query: Expecting a field name before the end of the query."
        ]
        op = c.get("/rest/api/2/search/jql", params={"jql": "project OPS"})
        assert op.json()["errorMessages"][0].startswith(
            "Error in the JQL Query: Expecting operator but got 'OPS'."
        )
        unknown = c.get(
            "/rest/api/2/search/jql", params={"jql": "project = NOPE AND flavour = sweet"}
        )
        assert unknown.json()["errorMessages"] == [
            "The value 'NOPE' does not exist for the field 'project'.",
            "Field 'flavour' does not exist or you do not have permission to view it.",
        ]
        status = c.put("/rest/api/2/issue/OPS-1", json={"fields": {"status": {"name": "Closed"}}})
        assert status.status_code == 400 and status.json() == {
            "errorMessages": [],
            "errors": {
                "status": "Field 'status' cannot be set. It is not on the appropriate screen, "
                "or unknown."
            },
        }
        mal = c.post(
            "/rest/api/2/issue", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert mal.status_code == 400 and mal.json()["errorMessages"]
        odd = c.post(
            "/rest/api/2/issue",
            json={
                "fields": {
                    "project": {"key": "OPS"},
                    "issuetype": {"name": "Task"},
                    "summary": "s",
                    "flavour": "x",
                    "priority": {"name": "Urgent"},
                }
            },
        )
        assert odd.json()["errors"] == {
            "flavour": "Field 'flavour' cannot be set. It is not on the appropriate screen, or "
            "unknown.",
            "priority": "Priority name 'Urgent' is not valid",
        }
        nosum = c.post(
            "/rest/api/2/issue",
            json={"fields": {"project": {"key": "OPS"}, "issuetype": {"id": "10002"}}},
        )
        assert nosum.json()["errors"] == {"summary": "You must specify a summary of the issue."}
        noproj = c.post("/rest/api/2/issue", json={"fields": {"summary": "s"}})
        assert set(noproj.json()["errors"]) == {"project", "issuetype"}
        v3_text = c.post(
            "/rest/api/3/issue",
            json={
                "fields": {
                    "project": {"key": "OPS"},
                    "issuetype": {"name": "Task"},
                    "summary": "s",
                    "description": "not adf",
                }
            },
        )
        assert v3_text.json()["errors"]["description"].startswith(
            "Operation value must be an Atlassian Document"
        )
        v2_adf = c.put(
            "/rest/api/2/issue/OPS-1",
            json={"fields": {"description": {"type": "doc", "version": 1, "content": []}}},
        )
        assert v2_adf.json()["errors"] == {"description": "Operation value must be a string"}
        spaces = c.put("/rest/api/2/issue/OPS-1", json={"update": {"labels": [{"add": "a b"}]}})
        assert spaces.json()["errors"] == {
            "labels": "The label 'a b' contains spaces which is invalid."
        }
        assert c.get("/rest/api/2/issue/OPS-1/transitions").status_code == 200
        assert c.post("/rest/api/2/issue/OPS-1/transitions", json={}).status_code == 400
        # Nothing above is a server error.
        assert all(e["status"] < 500 for e in sims.jira.request_log)
    assert_valid(sims)


GARBAGE: list[Any] = [
    b"{nope",
    b"[]",
    b"7",
    b"null",
    b'"x"',
    {"fields": [], "update": 5},
    {
        "fields": {
            "project": [],
            "issuetype": 5,
            "summary": {"a": 1},
            "labels": "x",
            "components": {"a": 1},
            "priority": [1],
            "assignee": "bob",
            "duedate": 5,
            "customfield_10010": 5,
            "customfield_10013": [],
            "description": 5,
        }
    },
    {
        "update": {
            "labels": "x",
            "summary": [{"set": 5}],
            "components": [{"add": 5}],
            "comment": [{"add": 5}, {"edit": {"id": 1}}],
            "issuelinks": [{"add": 5}],
        }
    },
    {"transition": {"id": {"x": 1}}, "fields": {"resolution": 5}, "update": {"comment": 5}},
    {"body": 5, "visibility": "x", "properties": 5, "object": 5, "globalId": [1]},
    {"type": "Blocks", "inwardIssue": "OPS-1", "outwardIssue": 5, "comment": 5, "accountId": 5},
    {"jql": 5, "fields": 5, "expand": {"a": 1}, "maxResults": "x", "nextPageToken": 5},
]
WRITE_ROUTES = [
    ("POST", "/rest/api/{v}/issue"),
    ("PUT", "/rest/api/{v}/issue/OPS-1"),
    ("POST", "/rest/api/{v}/issue/OPS-1/transitions"),
    ("POST", "/rest/api/{v}/issue/OPS-1/comment"),
    ("PUT", "/rest/api/{v}/issue/OPS-1/remotelink/1"),
    ("POST", "/rest/api/{v}/issue/OPS-1/remotelink"),
    ("PUT", "/rest/api/{v}/issue/OPS-1/assignee"),
    ("POST", "/rest/api/{v}/issueLink"),
    ("POST", "/rest/api/{v}/search/jql"),
    ("POST", "/rest/api/{v}/search"),
]


@pytest.mark.parametrize("version", ["2", "3"])
def test_garbage_never_causes_a_server_error(sims: SimulatorCluster, version: str) -> None:
    with client(sims) as c:
        c.post("/_sim/ratelimit", json={"per_issue_writes": None})
        for method, route in WRITE_ROUTES:
            for body in GARBAGE:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                r = c.request(
                    method,
                    route.format(v=version),
                    content=raw,
                    headers={"content-type": "application/json"},
                )
                assert r.status_code < 500, (method, route, raw, r.text)
                if r.status_code >= 400:
                    assert r.json()["errorMessages"] or r.json()["errors"], r.text
        for jql in [
            "((",
            "a = b = c",
            "key = 'OPS-1",
            "labels in ()",
            "status WAS Open",
            "due < -1d AND priority > nope",
            "updated > startOfDay(-9999999999999w)",
        ]:
            r = c.get(f"/rest/api/{version}/search/jql", params={"jql": jql})
            assert r.status_code == 400, (jql, r.text)
        # The issue survived all of it.
        assert c.get("/rest/api/2/issue/OPS-1").json()["fields"]["summary"] == (
            "Checkout latency elevated"
        )
    assert_valid(sims)


# ---------------------------------------------------------------------------------------------
# JQL


def _seed_jql_issues(c: httpx.Client) -> None:
    issues = [
        {
            "key": "OPS-11",
            "fields": {
                "summary": "Checkout down",
                "status": "In Progress",
                "priority": "Highest",
                "labels": ["a", "b"],
                "assignee": ADMIN,
                "components": ["Checkout"],
                "customfield_10010": {"value": "SEV1"},
                "issuetype": "Incident",
            },
        },
        {
            "key": "OPS-12",
            "fields": {
                "summary": "Search slow",
                "status": "Open",
                "priority": "Low",
                "labels": ["b"],
                "assignee": ALICE,
                "components": ["Search"],
                "issuetype": "Incident",
                "customfield_10010": {"value": "SEV3"},
            },
        },
        {
            "key": "OPS-13",
            "fields": {
                "summary": "Login disk full",
                "status": "Resolved",
                "resolution": "Done",
                "priority": "Medium",
                "issuetype": "Task",
                "description": "the DISK is full",
            },
        },
        {
            "key": "ENG-5",
            "fields": {
                "summary": "Add disk alert",
                "status": "Open",
                "priority": "High",
                "labels": ["a"],
                "issuetype": "Task",
            },
        },
    ]
    assert c.post("/_sim/seed", json={"issues": issues}).status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("project = OPS AND status = 'In Progress'", ["OPS-1", "OPS-11"]),
        ("project in (OPS, Engineering) AND labels = a ORDER BY key", ["ENG-5", "OPS-11"]),
        ("labels in (a, b) AND labels != a", ["OPS-12"]),
        ("labels not in (a) AND project = OPS", ["OPS-1", "OPS-12"]),
        ("labels is EMPTY AND key >= OPS-11", ["OPS-13"]),
        ("assignee = currentUser()", ["OPS-11"]),
        ("assignee = 'alice@example.com' OR assignee = 'Carol Clark'", ["OPS-1", "OPS-12"]),
        ("assignee is EMPTY AND project = OPS ORDER BY key", ["OPS-13"]),
        ("priority >= High ORDER BY priority DESC", ["OPS-11", "OPS-1", "ENG-5"]),
        ("resolution = Unresolved AND project = OPS AND priority < Medium", ["OPS-12"]),
        ("resolution is not EMPTY", ["OPS-13"]),
        ('summary ~ "disk" ORDER BY key DESC', ["OPS-13", "ENG-5"]),
        ("text ~ 'DISK full' AND issuetype = Task", ["OPS-13"]),
        ("component = Checkout", ["OPS-1", "OPS-11"]),
        ("cf[10010] = SEV1", ["OPS-11"]),
        ("Severity in (SEV2, SEV3) ORDER BY cf[10010] ASC", ["OPS-1", "OPS-12"]),
        ("key in (OPS-11, ENG-5) ORDER BY key ASC", ["ENG-5", "OPS-11"]),
        ("project = OPS AND NOT (status = Open OR status = 'In Progress')", ["OPS-13"]),
        ("statusCategory = Done", ["OPS-13"]),
        ("statusCategory != Done AND type = Task", ["ENG-5"]),
        ("created >= -1d AND project = ENG", ["ENG-5"]),
        ("updated < startOfDay(-3650d)", []),
    ],
)
def test_jql_subset(sims: SimulatorCluster, query: str, expected: list[str]) -> None:
    with client(sims) as c:
        _seed_jql_issues(c)
        r = c.get("/rest/api/2/search/jql", params={"jql": query, "fields": "key"})
        assert r.status_code == 200, r.text
        keys = [i["key"] for i in r.json()["issues"]]
        if "ORDER BY" in query:
            assert keys == expected
        else:
            assert sorted(keys) == sorted(expected)
    assert_valid(sims)


def test_jql_dates_in_the_users_time_zone(sims: SimulatorCluster) -> None:
    issues = [
        {"key": f"OPS-{21 + n}", "updated": updated, "fields": {"summary": "t", "labels": ["tz"]}}
        for n, updated in enumerate(
            [
                "2024-01-01T09:59:00.000+0000",
                "2024-01-01T10:00:30.000+0000",
                "2024-01-02T08:00:00.000+0000",
            ]
        )
    ]

    def keys(c: httpx.Client, jql: str) -> list[str]:
        r = c.get("/rest/api/2/search/jql", params={"jql": jql, "fields": "updated"})
        assert r.status_code == 200, r.text
        return [i["key"] for i in r.json()["issues"]]

    with client(sims) as c:
        c.post("/_sim/seed", json={"issues": issues})
        base = "labels = tz AND "
        assert keys(c, base + 'updated >= "2024-01-01 10:00" ORDER BY updated ASC') == [
            "OPS-22",
            "OPS-23",
        ]
        assert keys(c, base + "updated >= '2024/01/01 10:01' ORDER BY updated DESC") == ["OPS-23"]
        assert keys(c, base + "updated < 2024-01-02 ORDER BY updated") == ["OPS-21", "OPS-22"]
        bad = c.get("/rest/api/2/search/jql", params={"jql": "updated >= '2024-13-01'"})
        assert bad.json()["errorMessages"] == [
            "Date value '2024-13-01' for field 'updated' is invalid. Valid formats include: "
            "'YYYY/MM/DD', 'YYYY-MM-DD', 'YYYY/MM/DD HH:MM', 'YYYY-MM-DD HH:MM', or a period "
            "format e.g. '-5d', '4w 2d'."
        ]
        # The API user moves to Berlin (UTC+1 in January): literals and rendered times follow.
        c.post(
            "/_sim/seed",
            json={
                "users": [
                    {
                        "accountId": ADMIN,
                        "emailAddress": EMAIL,
                        "displayName": "Jira Admin",
                        "timeZone": "Europe/Berlin",
                    }
                ]
            },
        )
        assert keys(c, base + 'updated >= "2024-01-01 10:00" ORDER BY updated ASC') == [
            "OPS-21",
            "OPS-22",
            "OPS-23",
        ]
        assert keys(c, base + 'updated >= "2024-01-01 11:00" ORDER BY updated ASC') == [
            "OPS-22",
            "OPS-23",
        ]
        got = c.get("/rest/api/2/issue/OPS-22", params={"fields": "updated"}).json()
        assert got["fields"]["updated"] == "2024-01-01T11:00:30.000+0100"
        assert c.get("/rest/api/2/myself").json()["timeZone"] == "Europe/Berlin"
    assert_valid(sims)


# ---------------------------------------------------------------------------------------------
# Rate limits


def test_per_issue_write_limit(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        ok = c.get("/rest/api/2/issue/OPS-1", params={"fields": "summary"})
        assert ok.headers["X-RateLimit-Limit"] and int(ok.headers["X-RateLimit-Remaining"]) >= 0
        codes = [
            c.put("/rest/api/2/issue/OPS-1", json={"fields": {"summary": f"s{n}"}}).status_code
            for n in range(21)
        ]
        assert codes[:20] == [204] * 20 and codes[20] == 429
        r = c.put("/rest/api/2/issue/OPS-1", json={"fields": {"summary": "again"}})
        assert r.status_code == 429
        assert r.headers["RateLimit-Reason"] == "jira-per-issue-on-write"
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", r.headers["X-RateLimit-Reset"])
        assert r.headers["content-type"] == "application/json;charset=UTF-8"
        assert r.json()["errorMessages"]
        # Other issues and reads are not affected.
        other = create(c)
        assert (
            c.put(
                f"/rest/api/2/issue/{other['key']}", json={"fields": {"summary": "fine"}}
            ).status_code
            == 204
        )
        assert c.get("/rest/api/2/issue/OPS-1").status_code == 200
        # A fault-injected 429 has the same shape (burst-based).
        c.post(
            "/_sim/faults",
            json={
                "route": "GET /rest/api/{version}/myself",
                "rate_limit_rate": 1.0,
                "retry_after": 3,
                "count": 1,
            },
        )
        limited = c.get("/rest/api/2/myself")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
        assert limited.headers["RateLimit-Reason"] == "jira-burst-based"
        assert limited.json()["errorMessages"] == ["Rate limit exceeded."]
        assert c.get("/rest/api/2/myself").status_code == 200
        # The burst limit, off by default, can be switched on.
        c.post("/_sim/ratelimit", json={"burst_per_second": 2})
        burst = [c.get("/rest/api/2/serverInfo").status_code for _ in range(3)]
        assert burst == [200, 200, 429]
    assert_valid(sims)


def test_pace_limit_over_every_route(sims: SimulatorCluster) -> None:
    with client(sims) as c:
        try:
            c.post("/_sim/ratelimit", json={"requests_per_second": 0.5, "requests_burst": 2})
            # Per second over all routes together (the burst limit is per route).
            codes = [c.get(path).status_code for path in
                     ("/rest/api/2/myself", "/rest/api/2/serverInfo", "/rest/api/2/field")]  # fmt: skip
            assert codes == [200, 200, 429]
            refused = c.get("/rest/api/2/myself")
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
            assert refused.json()["errorMessages"] == ["Rate limit exceeded."]
            assert c.get("/_sim/ratelimit").json()["requests_per_second"] == 0.5
            bad = c.post("/_sim/ratelimit", json={"requests_per_minute": 3})
            assert bad.status_code == 400
        finally:
            c.post("/_sim/ratelimit", json={"requests_per_second": None})
        assert c.get("/rest/api/2/myself").status_code == 200


# ---------------------------------------------------------------------------------------------
# Webhooks


def _signed(received: Any, secret: str) -> bool:
    want = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return bool(received.headers.get("X-Hub-Signature") == want)


def test_webhooks_signed_with_changelog(
    sims: SimulatorCluster, webhook_receiver: WebhookReceiver
) -> None:
    with client(sims) as c:
        c.post("/_sim/webhooks", json={"url": webhook_receiver.url, "secret": "s3cret"})
        created = create(c, summary="hooked")
        key = created["key"]
        c.post(f"/rest/api/2/issue/{key}/transitions", json={"transition": {"id": "11"}})
        c.post(f"/rest/api/2/issue/{key}/comment", json={"body": "hello"})
        got = webhook_receiver.wait_for(4)
    events = [(r.json()["webhookEvent"], r.json().get("issue_event_type_name")) for r in got]
    assert events == [
        ("jira:issue_created", "issue_created"),
        ("jira:issue_updated", "issue_work_started"),
        ("comment_created", None),
        ("jira:issue_updated", "issue_commented"),
    ]
    assert all(_signed(r, "s3cret") for r in got)
    ids = [r.headers["X-Atlassian-Webhook-Identifier"] for r in got]
    assert len(set(ids)) == 4
    created_body = got[0].json()
    assert created_body["issue"]["key"] == key and created_body["user"]["accountId"] == ADMIN
    assert isinstance(created_body["timestamp"], int)
    item = got[1].json()["changelog"]["items"][0]
    assert item == {
        "field": "status",
        "fieldtype": "jira",
        "fieldId": "status",
        "from": "1",
        "fromString": "Open",
        "to": "3",
        "toString": "In Progress",
    }
    comment = got[2].json()
    assert comment["comment"]["body"] == "hello"
    assert set(comment["issue"]["fields"]) == {
        "summary",
        "issuetype",
        "project",
        "assignee",
        "priority",
        "status",
    }
    hooks = CONTRACTS / "jira" / "webhooks"
    recorded = json.loads((hooks / "comment_created.json").read_text())
    assert set(comment) == set(recorded)
    assert set(comment["issue"]["fields"]) == set(recorded["issue"]["fields"])
    for ours, name in ((got[0], "issue_created.json"), (got[1], "issue_updated__status.json")):
        theirs = json.loads((hooks / name).read_text())
        assert set(ours.json()) == set(theirs), name
        system = {k for k in theirs["issue"]["fields"] if not k.startswith("customfield_")}
        assert system <= set(ours.json()["issue"]["fields"]), name
    assert_valid(sims)


def test_webhook_redelivery_and_duplicates_keep_the_identifier(
    sims: SimulatorCluster, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [500]
    with client(sims) as c:
        c.post(
            "/_sim/webhooks",
            json={"url": webhook_receiver.url, "events": ["comment_created"], "duplicate": True},
        )
        c.post("/rest/api/2/issue/OPS-1/comment", json={"body": "once"})
        got = webhook_receiver.wait_for(3)
        log = c.get("/_sim/webhooks/log").json()["deliveries"]
    assert [r.json()["webhookEvent"] for r in got] == ["comment_created"] * 3
    assert len({r.headers["X-Atlassian-Webhook-Identifier"] for r in got}) == 1
    assert any(r.headers.get("X-Atlassian-Webhook-Retry") == "1" for r in got)
    assert "X-Hub-Signature" not in got[0].headers
    assert sorted(d["status"] for d in log)[-1] == 500
    assert_valid(sims)


# ---------------------------------------------------------------------------------------------
# Seeding recorded payloads, snapshots


def _recorded(name: str) -> Any:
    data = json.loads((RECORDED / "atlassian-python-api" / name).read_text())
    return next(iter(data.values()))


def _same_shape(ours: Any, theirs: Any, path: str = "") -> None:
    """Every key the recorded object has, ours has too, with the same JSON type."""
    if isinstance(theirs, dict) and theirs:
        assert isinstance(ours, dict), path
        for key, value in theirs.items():
            assert key in ours, f"{path}.{key} missing"
            if value is not None and ours[key] is not None and key != "avatarUrls":
                _same_shape(ours[key], value, f"{path}.{key}")
    elif isinstance(theirs, list) and theirs:
        assert isinstance(ours, list) and ours, path
        _same_shape(ours[0], theirs[0], path + "[0]")
    elif theirs is not None and not isinstance(theirs, dict | list):
        assert type(ours) is type(theirs), f"{path}: {ours!r} vs {theirs!r}"


def test_seed_recorded_payloads(sims: SimulatorCluster) -> None:
    issue = _recorded("rest_api_2_issue_FOO-123_GET.json")
    comments = _recorded("rest_api_2_issue_FOO-123_comment_GET.json")
    remotelinks = _recorded("rest_api_2_issue_FOO-123_remotelink_GET.json")
    with client(sims) as c:
        r = c.post(
            "/_sim/seed",
            json={
                "issues": [issue],
                "comments": {"FOO-123": comments},
                "remotelinks": {"FOO-123": remotelinks},
            },
        )
        assert r.status_code == 200, r.text
        got = c.get("/rest/api/2/issue/FOO-123").json()
        assert set(got) == set(issue)
        assert set(issue["fields"]) <= set(got["fields"])
        _same_shape(got, issue)
        assert got["fields"]["status"]["name"] == "Backlog"
        assert got["fields"]["priority"]["name"] == "Normal"
        assert got["fields"]["worklog"]["total"] == 3257  # unmodelled fields are kept
        page = c.get("/rest/api/2/issue/FOO-123/comment").json()
        assert set(page) == set(comments)
        _same_shape(page["comments"][0], comments["comments"][0])
        assert [x["body"] for x in page["comments"]] == ["Some Text comment", "Second Comment"]
        one = c.get("/rest/api/2/issue/FOO-123/comment/10000").json()
        _same_shape(one, _recorded("rest_api_2_issue_FOO-123_comment_10000_GET.json"))
        links = c.get("/rest/api/2/issue/FOO-123/remotelink").json()
        assert links[0]["globalId"] == remotelinks[0]["globalId"]
        _same_shape(links[0], remotelinks[0])
        # The recorded v3 comment and transitions pages have the shapes we serve.
        v3 = c.post(
            "/rest/api/3/issue/FOO-123/comment",
            params={"expand": "renderedBody"},
            json={
                "body": {
                    "type": "doc",
                    "version": 1,
                    "content": [{"type": "paragraph", "content": [{"type": "text", "text": "x"}]}],
                },
                "visibility": {"type": "role", "value": "Administrators"},
            },
        ).json()
        _same_shape(v3, json.loads((RECORDED / "create_comment.raw_response.json").read_text()))
        transitions = c.get("/rest/api/3/issue/OPS-1/transitions").json()
        _same_shape(
            transitions, json.loads((RECORDED / "get_transitions.raw_response.json").read_text())
        )
        # New issues in the seeded project continue the recorded numbering.
        assert create(c, project={"key": "FOO"}, issuetype={"name": "Epic"})["key"] == "FOO-124"
    assert_valid(sims)


def test_state_survives_a_snapshot(sims: SimulatorCluster, tmp_path: Path) -> None:
    with client(sims) as c:
        key = create(c, summary="persist me", labels=["snap"])["key"]
        c.post(f"/rest/api/2/issue/{key}/comment", json={"body": "kept"})
        c.put(f"/rest/api/2/issue/{key}/properties/itsm", json={"id": 1})
        c.post(f"/rest/api/2/issue/{key}/remotelink", json={"object": {"url": "u", "title": "t"}})
        before = c.get(f"/rest/api/3/issue/{key}", params={"expand": "changelog"}).text
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"jira": sims.jira.dump_state()}))
    cfg = ClusterConfig(jira_port=0, servicenow_port=0, statuspage_port=0, state_file=state_file)
    with SimulatorCluster(cfg, simulators={"jira": JiraSimulator()}) as restored:
        url = restored.urls["jira"]
        with httpx.Client(base_url=url, auth=(EMAIL, TOKEN)) as c2:
            after = c2.get(f"/rest/api/3/issue/{key}", params={"expand": "changelog"}).text
            assert after.replace(url, sims.urls["jira"]) == before
            assert c2.get(f"/rest/api/2/issue/{key}/properties/itsm").json()["value"] == {"id": 1}
            assert create(c2)["key"] == f"OPS-{int(key.split('-')[1]) + 1}"
    # Stopping wrote the new issue back into the snapshot.
    saved = json.loads(state_file.read_text())["jira"]
    assert len(saved["issues"]) == len(sim(sims).issues) + 1


def test_basic_auth_header_is_parsed_strictly(sims: SimulatorCluster) -> None:
    url = sims.urls["jira"] + "/rest/api/2/serverInfo"
    garbage = httpx.get(url, headers={"Authorization": "Basic !!!notbase64"})
    assert garbage.status_code == 401
    token = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    assert httpx.get(url, headers={"Authorization": f"Basic {token}"}).status_code == 200
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 401 and bearer.headers["WWW-Authenticate"]
    assert_valid(sims)


BOB, BOB_TOKEN = "bob@example.com", "bob-token"


def test_session_permissions_and_server_info_as_the_library_reads_them(
    sims: SimulatorCluster,
) -> None:
    # validate=True makes the library call /rest/auth/1/session while it connects.
    j = JIRA(server=sims.urls["jira"], basic_auth=(EMAIL, TOKEN), validate=True)
    assert j.session().name == "Jira Admin"
    assert j.server_info()["deploymentType"] == "Cloud" and j._is_cloud
    assert j.server_info()["serverTimeZone"] == "UTC"
    mine = j.my_permissions(permissions="BROWSE_PROJECTS,ADMINISTER")["permissions"]
    assert mine["ADMINISTER"]["havePermission"] is True
    assert mine["BROWSE_PROJECTS"]["type"] == "PROJECT"
    bob = JIRA(server=sims.urls["jira"], basic_auth=(BOB, BOB_TOKEN))
    theirs = bob.my_permissions(permissions="ADMINISTER,USER_PICKER")["permissions"]
    assert theirs["ADMINISTER"]["havePermission"] is False
    assert theirs["USER_PICKER"]["havePermission"] is True
    with client(sims) as c:
        assert c.get("/rest/api/2/mypermissions").status_code == 400  # Cloud requires the list
        assert c.get("/rest/api/2/mypermissions", params={"permissions": "NOPE"}).status_code == 404
        everything = c.get("/rest/api/3/permissions").json()["permissions"]
        assert "havePermission" not in everything["EDIT_ISSUES"]
        bad = httpx.get(f"{sims.urls['jira']}/rest/auth/1/session", auth=(EMAIL, "wrong"))
        assert bad.status_code == 401
    assert_valid(sims)


def test_comment_visibility_is_enforced_per_user(sims: SimulatorCluster) -> None:
    admin = pyjira(sims)
    bob = JIRA(server=sims.urls["jira"], basic_auth=(BOB, BOB_TOKEN))
    issue = admin.create_issue(project="OPS", summary="visibility", issuetype={"name": "Task"})
    public = admin.add_comment(issue.key, "for everyone")
    group = admin.add_comment(
        issue.key, "responders only", visibility={"type": "group", "value": "incident-responders"}
    )
    role = admin.add_comment(
        issue.key, "admins only", visibility={"type": "role", "value": "Administrators"}
    )
    seen_by_admin = [c.id for c in admin.comments(issue.key)]
    assert seen_by_admin == [public.id, group.id, role.id]
    # Bob is in jira-software-users and sre: neither restricted comment is there for him.
    assert [c.id for c in bob.comments(issue.key)] == [public.id]
    assert [c.id for c in bob.issue(issue.key).fields.comment.comments] == [public.id]
    with pytest.raises(JIRAError) as err:
        bob.comment(issue.key, group.id)
    assert err.value.status_code == 404
    with client(sims) as c:
        ids = {"ids": [int(public.id), int(group.id), int(role.id)]}
        listed = c.post("/rest/api/3/comment/list", json=ids).json()
        assert [v["id"] for v in listed["values"]] == [public.id, group.id, role.id]
        assert listed["total"] == 3 and listed["isLast"] is True
        for_bob = httpx.post(
            f"{sims.urls['jira']}/rest/api/2/comment/list", json=ids, auth=(BOB, BOB_TOKEN)
        )
        assert [v["id"] for v in for_bob.json()["values"]] == [public.id]
        assert c.post("/rest/api/2/comment/list", json={"ids": []}).status_code == 400
    assert_valid(sims)


def test_attachments_with_the_library(sims: SimulatorCluster, tmp_path: Path) -> None:
    j = pyjira(sims)
    issue = j.create_issue(project="OPS", summary="attach", issuetype={"name": "Task"})
    log = tmp_path / "app.log"
    log.write_bytes(b"first\nsecond\n")
    att = j.add_attachment(issue.key, str(log))
    assert att.filename == "app.log" and att.size == 13
    assert att.get() == b"first\nsecond\n"
    assert [a.filename for a in j.issue(issue.key).fields.attachment] == ["app.log"]
    with client(sims) as c:
        files = {"file": ("x.txt", b"x", "text/plain")}
        no_token = c.post(f"/rest/api/3/issue/{issue.key}/attachments", files=files)
        assert no_token.status_code == 403 and "XSRF" in no_token.text
        ok = c.post(
            f"/rest/api/3/issue/{issue.key}/attachments",
            files=files,
            headers={"X-Atlassian-Token": "no-check"},
        )
        assert ok.status_code == 200 and ok.json()[0]["mimeType"] == "text/plain"
        assert c.delete(f"/rest/api/3/attachment/{att.id}").status_code == 204
        assert c.get(f"/rest/api/3/attachment/{att.id}").status_code == 404


def test_projects_created_and_deleted_by_an_admin_only(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    created = j.create_project("NEWP", "New project")
    assert isinstance(created, dict) and j.project("NEWP").id == str(created["id"])
    issue = j.create_issue(project="NEWP", summary="in new", issuetype={"name": "Task"})
    assert issue.key == "NEWP-1"
    bob = JIRA(server=sims.urls["jira"], basic_auth=(BOB, BOB_TOKEN))
    with pytest.raises(JIRAError):
        bob.delete_project("NEWP")
    with client(sims) as c:
        dup = c.post(
            "/rest/api/2/project",
            json={"key": "NEWP", "name": "Other", "leadAccountId": ADMIN},
        )
        assert dup.status_code == 400 and "projectKey" in dup.json()["errors"]
        bad = c.post("/rest/api/2/project", json={"key": "lower", "name": "x"})
        assert set(bad.json()["errors"]) == {"projectKey", "projectLead"}
    assert j.delete_project("NEWP", enable_undo=False)
    with pytest.raises(JIRAError):
        j.issue("NEWP-1")


def test_get_search_too_long_for_a_url_is_refused_post_is_served(sims: SimulatorCluster) -> None:
    jql = "project = OPS AND (" + " OR ".join(f'summary ~ "word{i}"' for i in range(600)) + ")"
    with client(sims) as c:
        too_long = c.get("/rest/api/3/search/jql", params={"jql": jql})
        assert too_long.status_code == 414
        posted = c.post("/rest/api/3/search/jql", json={"jql": jql, "fields": ["summary"]})
        assert posted.status_code == 200 and "issues" in posted.json()
        short = c.get("/rest/api/3/search/jql", params={"jql": "project = OPS"})
        assert short.status_code == 200


def test_filters_dashboards_gadgets_and_groups_with_the_library(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    flt = j.create_filter("ops open", "mine", "project = OPS", True)
    assert [f.id for f in j.favourite_filters()] == [flt.id]
    assert j.filter(flt.id).jql == "project = OPS"
    with pytest.raises(JIRAError):
        j.create_filter("bad", "", "project = = OPS", False)  # refused like a bad search
    board = j.create_dashboard(name="ops", share_permissions=[{"type": "authenticated"}])
    assert board.sharePermissions[0].type == "loggedin" and int(board.id) > 10000
    uri = next(g.uri for g in j.all_dashboard_gadgets() if g.title == "Filter Results")
    gadget = j.add_gadget_to_dashboard(board.id, color="blue", uri=uri)
    j.set_dashboard_item_property(board.id, gadget.id, "config", value={"filterId": flt.id})
    again = j.dashboard(board.id)
    assert [g.id for g in again.gadgets] == [gadget.id]
    assert again.gadgets[0].item_properties[0].value.filterId == flt.id
    copied = j.dashboard(j.copy_dashboard(board.id, name="copy").id)
    assert copied.gadgets[0].uri == uri and copied.gadgets[0].id != gadget.id
    with client(sims) as c:
        bad = c.post(f"/rest/api/3/dashboard/{board.id}/gadget", json={"uri": "x", "color": "blue"})
        assert bad.status_code == 400
        assert c.delete(f"/rest/api/3/dashboard/{board.id}").status_code == 204
        gone = c.get(f"/rest/api/3/dashboard/{board.id}")
        assert gone.json()["errorMessages"] == [
            f"The dashboard with id '{board.id}' does not exist."
        ]
    bob = JIRA(server=sims.urls["jira"], basic_auth=(BOB, BOB_TOKEN))
    with pytest.raises(JIRAError):
        bob.update_filter(flt.id, name="not yours")
    assert "sre" in j.groups("sr") and j.group_members("sre")
    assert {u.accountId for u in j.search_allowed_users_for_issue("bob", projectKey="OPS")} == {
        "5b10a2844c20165700ede202"
    }
    assert_valid(sims)


def test_v2_wiki_markup_reads_back_as_v3_adf_and_back(sims: SimulatorCluster) -> None:
    wiki = (
        "h2. Impact\n\nCheckout is *down* for _some_ users: see [the runbook|https://example.com/rb]"
        " and {{kubectl get pods}}.\nSecond line.\n\n* one\n** one.a\n* two\n\n"
        "{code:python}\nprint('x')\n{code}\n\n----\n\nping [~accountid:" + ALICE + "] about co-op"
    )
    with client(sims) as c:
        made = c.post(
            "/rest/api/2/issue",
            json={
                "fields": {
                    "project": {"key": "OPS"},
                    "issuetype": {"name": "Task"},
                    "summary": "wiki",
                    "description": wiki,
                }
            },
        ).json()
        doc = c.get(f"/rest/api/3/issue/{made['key']}", params={"fields": "description"})
        content = doc.json()["fields"]["description"]["content"]
        assert [n["type"] for n in content] == [
            "heading",
            "paragraph",
            "bulletList",
            "codeBlock",
            "rule",
            "paragraph",
        ]
        para = content[1]["content"]
        assert {"type": "text", "text": "down", "marks": [{"type": "strong"}]} in para
        assert {"type": "text", "text": "some", "marks": [{"type": "em"}]} in para
        link = next(n for n in para if n.get("text") == "the runbook")
        assert link["marks"] == [{"type": "link", "attrs": {"href": "https://example.com/rb"}}]
        assert {"type": "hardBreak"} in para and "*" not in json.dumps(para)
        nested = content[2]["content"][0]["content"][1]
        assert nested["type"] == "bulletList"
        assert content[3]["attrs"] == {"language": "python"}
        assert content[5]["content"][1] == {
            "type": "mention",
            "attrs": {"id": ALICE, "text": f"@{ALICE}"},
        }
        # Back through v2: the same wiki text, and ADF written through v3 reads as wiki.
        v2 = c.get(f"/rest/api/2/issue/{made['key']}", params={"fields": "description"})
        assert v2.json()["fields"]["description"] == wiki
        adf_doc = {"type": "doc", "version": 1, "content": content}
        c.put(f"/rest/api/3/issue/{made['key']}", json={"fields": {"description": adf_doc}})
        again = c.get(f"/rest/api/2/issue/{made['key']}", params={"fields": "description"})
        assert again.json()["fields"]["description"] == wiki
    assert_valid(sims)


def test_versions_components_votes_and_worklogs_with_the_library(sims: SimulatorCluster) -> None:
    j = pyjira(sims)
    bob = JIRA(server=sims.urls["jira"], basic_auth=(BOB, BOB_TOKEN))
    version = j.create_version("1.0", "OPS", description="first")
    assert [v.name for v in j.project_versions("OPS")] == ["1.0"]
    with pytest.raises(JIRAError):
        j.create_version("1.0", "OPS")  # names are unique per project
    version.update(name="1.0.1")
    assert j.version(version.id).name == "1.0.1"
    version.delete()
    assert j.project_versions("OPS") == []
    comp = j.create_component("Edge", "OPS", description="cdn", assigneeType="COMPONENT_LEAD")
    assert comp.assigneeType == "COMPONENT_LEAD"
    assert "Edge" in [c.name for c in j.project_components("OPS")]
    comp.delete()
    issue = j.create_issue(project="OPS", summary="votes", issuetype={"name": "Task"})
    with pytest.raises(JIRAError):
        j.add_vote(issue.key)  # the reporter cannot vote
    bob.add_vote(issue.key)
    assert j.votes(issue.key).votes == 1 and bob.votes(issue.key).hasVoted
    bob.remove_vote(issue.key)
    assert j.votes(issue.key).votes == 0
    log = j.add_worklog(issue.key, "1d 2h", comment="triage")
    assert log.timeSpent == "1d 2h" and log.timeSpentSeconds == 10 * 3600
    log.update(timeSpent="3h")
    assert j.worklog(issue.key, log.id).timeSpent == "3h"
    assert len(j.worklogs(issue.key)) == 1
    with client(sims) as c:
        bad = c.post(f"/rest/api/2/issue/{issue.key}/worklog", json={"timeSpent": "lots"})
        assert bad.status_code == 400
    log.delete()
    assert j.worklogs(issue.key) == []
    assert_valid(sims)
