"""The console over HTTP: sessions, CSRF, and the server enforcing each role."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from postmortem_tracker.models import GateEvent
from postmortem_tracker.report import COLUMNS
from service.domain.roles import Actor
from service.routes.console_auth import COOKIE, Sessions
from sync import store
from tests.console.conftest import NAMES, TOKENS, Console, csrf_of, signed_in


def test_every_page_renders_for_an_admin(console: Console) -> None:
    client = signed_in(console, "admin")
    number = console.sample.gated[0]
    for path in ("/", f"/incidents/{number}", "/changes", "/admin", "/changes?since=2020-01-01"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert "Sign out" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_pages_need_a_session(console: Console) -> None:
    answer = httpx.get(f"{console.url}/changes?since=2020-01-01", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fchanges"


def test_the_session_cookie_is_httponly_and_strict(console: Console) -> None:
    client = httpx.Client(base_url=console.url)
    form = client.get("/signin")
    answer = client.post(
        "/signin", data={"csrf": csrf_of(form.text), "token": TOKENS["viewer"], "next": "/"}
    )
    cookie = next(v for k, v in answer.headers.multi_items() if v.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back


def test_over_tls_the_cookie_is_secure(console: Console) -> None:
    client = TestClient(console.service.app, base_url="https://console.example")
    form = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "token": TOKENS["viewer"], "next": "/"},
        follow_redirects=False,
    )
    cookie = next(v for k, v in answer.headers.multi_items() if v.startswith(f"{COOKIE}="))
    assert "Secure" in cookie


def test_an_unknown_token_is_refused(console: Console) -> None:
    client = httpx.Client(base_url=console.url)
    form = client.get("/signin")
    answer = client.post("/signin", data={"csrf": csrf_of(form.text), "token": "guess"})
    assert answer.status_code == 401
    assert "unknown token" in answer.text
    assert COOKIE not in answer.cookies


def test_sign_in_without_its_csrf_token_is_refused(console: Console) -> None:
    client = httpx.Client(base_url=console.url)
    client.get("/signin")
    answer = client.post("/signin", data={"token": TOKENS["admin"]})
    assert answer.status_code == 403
    assert COOKIE not in answer.cookies


def test_sign_in_goes_back_to_this_site_only(console: Console) -> None:
    client = httpx.Client(base_url=console.url)
    form = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "token": TOKENS["viewer"], "next": "//evil.example/"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_sign_out_ends_the_session(console: Console) -> None:
    client = signed_in(console, "viewer")
    page = client.get("/")
    cookie = client.cookies[COOKIE]
    assert client.post("/signout", data={"csrf": csrf_of(page.text)}).status_code == 303
    again = httpx.get(f"{console.url}/", cookies={COOKIE: cookie}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/signin")
    assert "You are signed out." in client.get("/signin?signed_out=1").text


def test_sessions_expire_when_idle_and_after_their_lifetime() -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    sessions = Sessions(clock=lambda: now[0])
    actor = Actor.token("val", "viewer")
    idle, busy = sessions.start(actor), sessions.start(actor)
    for _ in range(20):  # busy is used every 25 minutes; idle is not
        now[0] += dt.timedelta(minutes=25)
        sessions.get(busy)
        if now[0] < dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC):
            assert sessions.get(busy) is not None
    assert sessions.get(idle) is None
    assert sessions.get(busy) is None  # 8 hours after sign-in, however busy


def test_an_expired_session_is_sent_to_sign_in(console: Console) -> None:
    client = signed_in(console, "viewer")
    sessions: Sessions = console.service.app.state.console_sessions
    clock = sessions.clock
    sessions.clock = lambda: clock() + dt.timedelta(minutes=31)
    try:
        answer = client.get("/")
    finally:
        sessions.clock = clock
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2F&expired=1"


def _gate_events(console: Console, incident_id: str) -> list[GateEvent]:
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        return list(s.exec(select(GateEvent).where(col(GateEvent.incident_id) == incident_id)))


def _incident_id(console: Console, number: str) -> str:
    return console.sample.incident_ids[console.sample.numbers.index(number)]


def test_the_server_refuses_a_viewer_override(console: Console) -> None:
    """The page hides the form from a viewer; a crafted post is refused all the same."""
    client = signed_in(console, "viewer")
    number = console.sample.gated[2]
    page = client.get(f"/incidents/{number}")
    assert 'name="reason"' not in page.text
    before = _gate_events(console, _incident_id(console, number))
    answer = client.post(
        f"/incidents/{number}/override", data={"csrf": csrf_of(page.text), "reason": "because"}
    )
    assert answer.status_code == 403
    assert "needs the change-manager or admin role; val has viewer" in answer.text
    assert _gate_events(console, _incident_id(console, number)) == before


@pytest.mark.parametrize("role", ["viewer", "comms", "change-manager"])
def test_only_an_admin_replays_or_saves_mappings(console: Console, role: str) -> None:
    client = signed_in(console, role)
    token = csrf_of(client.get("/").text)
    for path in ("/admin/parked/replay-all", "/admin/mappings/save", "/admin"):
        answer = client.post(path, data={"csrf": token}) if path != "/admin" else client.get(path)
        assert answer.status_code == 403, path
        assert f"needs the admin role; {NAMES[role]} has {role}" in answer.text
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        assert len(store.open_parked(s)) >= 1


def test_an_override_needs_a_reason(console: Console) -> None:
    client = signed_in(console, "change-manager")
    number = console.sample.gated[3]
    page = client.get(f"/incidents/{number}")
    answer = client.post(
        f"/incidents/{number}/override", data={"csrf": csrf_of(page.text), "reason": "  "}
    )
    assert answer.status_code == 303
    shown = client.get(answer.headers["location"])
    assert "an override needs a reason of 3 characters or more (it is audited)" in shown.text
    assert not [
        e for e in _gate_events(console, _incident_id(console, number)) if e.kind == "override"
    ]


def test_a_post_without_the_csrf_token_changes_nothing(console: Console) -> None:
    client = signed_in(console, "admin")
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        before = len(store.open_parked(s))
    for data in ({}, {"csrf": "forged"}):
        answer = client.post("/admin/parked/replay-all", data=data)
        assert answer.status_code == 403
        assert "CSRF token is missing or stale" in answer.text
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        assert len(store.open_parked(s)) == before


def test_the_audit_exports_as_csv_with_its_filters(console: Console) -> None:
    client = signed_in(console, "change-manager")
    answer = client.get("/changes/audit.csv?since=2000-01-01&severity=SEV1")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert rows and {r["severity"] for r in rows} == {"SEV1"}
    assert list(rows[0]) == list(COLUMNS)
    late = client.get("/changes/audit.csv?since=2000-01-01&outcome=overdue")
    assert all(int(r["days_overdue"]) > 0 for r in csv.DictReader(io.StringIO(late.text)))


def test_a_bad_filter_says_what_is_wrong(console: Console) -> None:
    client = signed_in(console, "change-manager")
    page = client.get("/changes?since=yesterday")
    assert page.status_code == 200
    assert "since &#39;yesterday&#39;: use YYYY-MM-DD" in page.text


def test_comms_publishes_but_cannot_see_the_audit(console: Console) -> None:
    client = signed_in(console, "comms")
    number = console.sample.open_numbers[-1]
    page = client.get(f"/incidents/{number}")
    answer = client.post(
        f"/incidents/{number}/publish",
        data={
            "csrf": csrf_of(page.text),
            "message": "We are on it.",
            "public": "yes",
            "force": "customers are asking",
        },
    )
    assert answer.status_code == 303
    assert "published to the status page" in client.get(answer.headers["location"]).text
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        row = store.get_incident(s, _incident_id(console, number))
        assert row is not None and row.data["public_message"] == "We are on it."
    assert client.get("/changes").status_code == 403


def test_an_admin_publishes_from_the_admin_page(console: Console) -> None:
    client = signed_in(console, "admin")
    number = console.sample.open_numbers[-2]
    page = client.get("/admin")
    answer = client.post(
        "/publish",
        data={
            "csrf": csrf_of(page.text),
            "incident": number,
            "message": "Fixed soon.",
            "public": "yes",
            "force": "asked by support",
        },
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/admin?done=")
    with store.session_scope(console.service.runtime.db, readonly=True) as s:
        row = store.get_incident(s, _incident_id(console, number))
        assert row is not None and row.data["public_message"] == "Fixed soon."
    missing = client.post("/publish", data={"csrf": csrf_of(page.text), "message": "x"})
    assert "name+the+incident+to+publish" in missing.headers["location"]


def test_a_mapping_version_shows_its_source_who_and_when(console: Console) -> None:
    client = signed_in(console, "admin")
    page = client.get("/admin/mappings/1")
    assert page.status_code == 200
    assert "system: " in page.text and "Accepted " in page.text
    assert client.get("/admin/mappings/9999").status_code == 404


def test_audit_values_read_as_words_not_python() -> None:
    from service.routes.console_auth import shown

    assert shown({"number": "CHG1", "owner": "", "due": None}) == "number: CHG1, owner: ∅, due: ∅"
    assert shown(["a", 1]) == "a, 1" and shown(None) == "∅" and shown(0) == "0"
