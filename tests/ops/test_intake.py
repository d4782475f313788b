"""Bounded unauthenticated input: refused deliveries are kept but capped (count and bytes,
oldest dropped, counted); per-source rate limits answer 429 with Retry-After; ticket text
printed to a terminal is escaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from config.settings import IntakeSettings, ServiceNowSettings, Settings
from connectors.servicenow import ServiceNowConnector
from service.app import create_app
from service.routes.webhooks import Intake
from service.runtime import Runtime
from sync import store
from sync.ingest import RejectedLimits, ingest_webhook

MB = 1024 * 1024


def _kept(db: object) -> tuple[int, int]:
    with store.session_scope(db, readonly=True) as s:  # type: ignore[arg-type]
        rows = s.exec(
            select(store.WebhookDelivery).where(
                store.WebhookDelivery.status.in_(("rejected", "malformed"))  # type: ignore[attr-defined]
            )
        ).all()
        return len(rows), sum(len((r.body or "").encode()) for r in rows)


def test_forty_forged_one_megabyte_posts_store_no_more_than_the_cap(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    store.migrate(db)
    sn = ServiceNowConnector(ServiceNowSettings(webhook_secret="right"))  # type: ignore[arg-type]
    limits = RejectedLimits(keep=10, max_bytes=MB // 4, body_bytes=16 * 1024)
    forged = b'{"table": "incident", "record": {"x": "' + b"A" * (MB - 64) + b'"}}'
    assert len(forged) <= MB
    dropped = 0
    for _ in range(40):
        ack = ingest_webhook(db, sn, {"X-ServiceNow-Secret": "wrong"}, forged, limits=limits)
        assert (ack.status, ack.rejected) == (401, True)
        dropped += ack.dropped
    count, size = _kept(db)
    assert count == 10 and size <= 10 * 16 * 1024 <= limits.max_bytes
    assert dropped == 30  # the counter says how many went
    # The byte cap holds too: bigger kept bodies, fewer rows.
    big = RejectedLimits(keep=100, max_bytes=100 * 1024, body_bytes=30 * 1024)
    ingest_webhook(db, sn, {"X-ServiceNow-Secret": "wrong"}, forged, limits=big)
    count, size = _kept(db)
    assert size <= 100 * 1024 and count <= 100
    # A valid delivery is never dropped by the caps (accepted rows are not refused ones).
    with store.session_scope(db, readonly=True) as s:
        total = s.exec(select(func.count()).select_from(store.WebhookDelivery)).one()
    assert total == count


def test_per_source_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    now = [1000.0]
    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'rate.db'}",
            "jira": {"webhook_secret": "right", "api_token": "t"},
            "intake": {"rejection_burst": 5, "rejections_per_minute": 6},
        }
    )
    runtime = Runtime(settings)
    try:
        app = create_app(runtime)
        app.state.intake = Intake(settings.intake, clock=lambda: now[0])
        with TestClient(app) as client:
            answers = [
                client.post("/webhooks/jira", content=b"{}", headers={"X-Hub-Signature": "x"})
                for _ in range(8)
            ]
            assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
            assert answers[-1].headers["Retry-After"] == "10"  # 6 a minute: one every 10 s
            now[0] += 10
            ok = client.post("/webhooks/jira", content=b"{}", headers={"X-Hub-Signature": "x"})
            assert ok.status_code == 401  # one more try after waiting
            metrics = client.get("/metrics").text
            assert 'itsm_sync_rejected_deliveries_total{system="jira"} 6.0' in metrics
            assert 'itsm_sync_webhooks_total{status="429",system="jira"} 3.0' in metrics
        count, _ = _kept(runtime.db)
        assert count == 6  # the 429s stored nothing
    finally:
        runtime.stop()


def test_request_bucket_limits_every_delivery_per_source() -> None:
    now = [0.0]
    intake = Intake(IntakeSettings(requests_per_second=2, burst=3), clock=lambda: now[0])
    assert [intake.admit("10.0.0.1 jira/default") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert intake.admit("10.0.0.1 jira/default") == pytest.approx(0.5)
    assert intake.admit("10.0.0.2 jira/default") == 0.0  # another source has its own
    now[0] += 0.5
    assert intake.admit("10.0.0.1 jira/default") == 0.0


def test_history_and_status_print_ticket_markup_as_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'markup.db'}"
    db = store.make_engine(url)
    store.migrate(db)
    title = "[bold]DB down[/] [/] [red]x"
    with store.session_scope(db) as s:
        row = store.create_incident(s, {"title": title})
        store.add_link(
            s, incident_id=row.id, system="jira", instance="default", object_type="issue",
            remote_id="10001", remote_key="OPS-1",
        )  # fmt: skip
        store.audit(
            s, action="update", incident_id=row.id, system="jira", field="summary",
            before="[/]", after="[bold]loud[/bold]", reason="[link=x]y[/link]", actor="[/]",
        )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    env.update(ITSM_SYNC_DATABASE_URL=url, COLUMNS="250", FORCE_COLOR="1", TERM="xterm")
    result = subprocess.run(
        [sys.executable, "-m", "service", "history", "OPS-1"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    for text in ("[bold]DB down[/] [/] [red]x", "[bold]loud[/bold]", "[link=x]y[/link]"):
        assert text in out, out
    assert "\x1b[1m" not in out.split("┡")[1]  # no bold from the ticket's text in the rows


def test_sync_once_prints_a_parked_error_with_markup_as_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parked.db'}"
    db = store.make_engine(url)
    store.migrate(db)
    with store.session_scope(db) as s:
        row = store.create_incident(s, {"title": "x"})
        store.park(s, incident_id=row.id, target="jira:default", error="remote says [/] [bold]no")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    dead = "http://127.0.0.1:9"  # nothing listens: every poll fails at once
    env.update(
        ITSM_SYNC_DATABASE_URL=url, COLUMNS="250", ITSM_SYNC_SERVICENOW__URL=dead,
        ITSM_SYNC_JIRA__URL=dead, ITSM_SYNC_STATUSPAGE__URL=dead + "/v1",
        ITSM_SYNC_SERVICENOW__PASSWORD="p", ITSM_SYNC_JIRA__API_TOKEN="t",
        ITSM_SYNC_STATUSPAGE__API_KEY="k",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "service", "sync", "--once", "--timeout", "5"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3, result.stdout + result.stderr
    assert "remote says [/] [bold]no" in result.stdout


def test_behind_a_proxy_the_forwarded_address_is_the_source(tmp_path: Path) -> None:
    now = [0.0]
    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'proxy.db'}",
            "jira": {"webhook_secret": "right", "api_token": "t"},
            "intake": {"rejection_burst": 2, "forwarded_for": True},
        }
    )
    runtime = Runtime(settings)
    try:
        app = create_app(runtime)
        app.state.intake = Intake(settings.intake, clock=lambda: now[0])
        with TestClient(app) as client:

            def post(address: str) -> int:
                headers = {"X-Hub-Signature": "x", "X-Forwarded-For": f"6.6.6.6, {address}"}
                return client.post("/webhooks/jira", content=b"{}", headers=headers).status_code

            assert [post("203.0.113.9") for _ in range(3)] == [401, 401, 429]
            assert post("198.51.100.7") == 401  # another client behind the same proxy
    finally:
        runtime.stop()
