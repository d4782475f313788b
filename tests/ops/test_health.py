"""Truthful health: ``/readyz`` says not ready with a wrong password (and which system); a
change that fails to apply shows in ``/readyz`` warnings, ``/metrics`` and ``status`` within one
poll interval; every metric the shipped alert rules use is exported."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from connectors.http import reset_buckets
from service.app import create_app
from service.harness import Service, settings_for, wait_for
from service.runtime import Runtime
from simulators.runner import SimulatorCluster

ROOT = Path(__file__).resolve().parents[2]


def test_readyz_is_not_ready_with_a_wrong_password_and_says_which(
    empty_sims: SimulatorCluster, tmp_path: Path
) -> None:
    reset_buckets()
    bad = settings_for(
        empty_sims, f"sqlite:///{tmp_path / 'bad.db'}", servicenow={"password": "wrong"}
    )
    runtime = Runtime(bad)
    try:
        with TestClient(create_app(runtime)) as client:
            answer = client.get("/readyz")
            assert answer.status_code == 503
            body = answer.json()
            assert body["status"] == "not ready"
            sn = body["checks"]["servicenow/default"]
            assert sn["ok"] is False
            assert "credentials refused (HTTP 401)" in sn["detail"]
            assert "ITSM_SYNC_SERVICENOW__PASSWORD" in sn["detail"]
            assert body["checks"]["jira/default"]["ok"] is True
            assert body["checks"]["database"]["ok"] is True
            assert "wrong" not in answer.text
            assert client.get("/healthz").status_code == 200  # alive all the same
    finally:
        runtime.stop()
    good = settings_for(empty_sims, f"sqlite:///{tmp_path / 'good.db'}")
    runtime = Runtime(good)
    try:
        with TestClient(create_app(runtime)) as client:
            answer = client.get("/readyz")
            assert answer.status_code == 200, answer.text
            assert set(answer.json()["checks"]) >= {
                "database", "workers", "queue", "servicenow/default", "jira/default",
                "statuspage/default",
            }  # fmt: skip
    finally:
        runtime.stop()


def test_a_change_that_fails_to_apply_shows_everywhere_within_a_poll_interval(
    empty_sims: SimulatorCluster, tmp_path: Path
) -> None:
    reset_buckets()
    url = f"sqlite:///{tmp_path / 'failing.db'}"
    poll = 3.0
    settings = settings_for(
        empty_sims, url, sync={"poll_interval_seconds": poll, "workers": 1},
        statuspage={"requests_per_second": 50},
    )  # fmt: skip
    # Every Jira issue create fails (a retriable 503): the P1 cannot get its Jira issue.
    httpx.post(
        f"{empty_sims.urls['jira']}/_sim/faults",
        json={"rules": [{"route": "POST /rest/api/{version}/issue", "error_rate": 1.0,
                         "error_status": 503}]},
    ).raise_for_status()  # fmt: skip
    try:
        with Service(settings) as service:
            created = httpx.post(
                f"{empty_sims.urls['servicenow']}/api/now/table/incident",
                auth=("admin", "admin"),
                json={"short_description": "Payments down", "impact": "1", "urgency": "1"},
            )
            assert created.status_code == 201, created.text

            def warned() -> dict[str, object] | None:
                body = httpx.get(f"{service.url}/readyz", timeout=10).json()
                return (
                    body
                    if any("failing" in w or "backoff" in w for w in body["warnings"])
                    else None
                )

            body = wait_for(warned, "a /readyz warning", timeout=poll + 10)
            assert any("jira" in w for w in body["warnings"]), body  # type: ignore[union-attr]
            metrics = httpx.get(f"{service.url}/metrics").text
            failing = re.search(r"^itsm_sync_failing_changes (\S+)$", metrics, re.M)
            backoff = re.search(r'^itsm_sync_target_backoff_incidents\{target="jira[^"]*"\} (\S+)$',
                                metrics, re.M)  # fmt: skip
            assert (failing and float(failing.group(1)) >= 1) or (
                backoff and float(backoff.group(1)) >= 1
            ), metrics
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
        result = subprocess.run(
            [sys.executable, "-m", "service", "status"],
            env={**env, "ITSM_SYNC_DATABASE_URL": url, "COLUMNS": "250"},
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert re.search(r"target jira\S* in backoff", result.stdout) or re.search(
            r"changes failing to apply\s*│\s*[1-9]", result.stdout
        ), result.stdout
    finally:
        httpx.delete(f"{empty_sims.urls['jira']}/_sim/faults")


def _alert_rules() -> list[dict[str, str]]:
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```yaml\n(groups:.*?)```", text, re.S)
    assert blocks, "docs/operations.md ships no Prometheus rule group"
    rules: list[dict[str, str]] = []
    for block in blocks:
        for group in yaml.safe_load(block)["groups"]:
            rules += group["rules"]
    return rules


def test_every_alert_rule_names_an_exported_metric(tmp_path: Path) -> None:
    rules = _alert_rules()
    runtime = Runtime(settings_for_nothing(tmp_path))
    try:
        with TestClient(create_app(runtime)) as client:
            exported = client.get("/metrics").text
    finally:
        runtime.stop()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", exported, re.M))
    families = {n for n, _ in names}
    counters = {n + "_total" for n, kind in names if kind == "counter"}
    for rule in rules:
        used = set(re.findall(r"\b(itsm_sync_[a-z_]+)", rule["expr"]))
        assert used or rule["alert"] == "ItsmSyncDown", rule
        for name in used:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in families | counters or base in families, (rule["alert"], name)
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
    alerts = {r["alert"] for r in rules}
    assert {"ItsmSyncNotReady", "ItsmSyncPollLag", "ItsmSyncOldChange", "ItsmSyncParked",
            "ItsmSyncTargetBackoff", "ItsmSyncRateLimitWaits", "ItsmSyncRejectedDeliveries",
            "ItsmSyncGateBlocks", "ItsmSyncFailingChanges"} <= alerts  # fmt: skip


def settings_for_nothing(tmp_path: Path):  # type: ignore[no-untyped-def]
    from config.settings import Settings

    return Settings.model_validate({"database_url": f"sqlite:///{tmp_path / 'm.db'}"})


def test_promtool_accepts_the_alert_rules(tmp_path: Path) -> None:
    """With promtool installed (Debian: apt-get install prometheus), it checks the rules as
    Prometheus would; without, the parser test above is the check."""
    if shutil.which("promtool") is None:
        assert _alert_rules()  # parsed and checked against /metrics above
        return
    text = (ROOT / "docs" / "operations.md").read_text()
    [block] = re.findall(r"```yaml\n(groups:.*?)```", text, re.S)
    rules = tmp_path / "itsm-sync.rules.yaml"
    rules.write_text(block)
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_healthz_stays_alive_while_the_database_is_down_and_readyz_names_it(
    empty_sims: SimulatorCluster,
) -> None:
    """Liveness is the process only: a database that stops answering makes the service not
    ready (and says it is the database), never "dead" (a restart would not bring it back)."""
    from tests.store.conftest import PG_MAINTENANCE_URL, PostgresServer

    reset_buckets()
    server = PostgresServer(PG_MAINTENANCE_URL)
    url = server.create_database()
    name = make_url(url).database
    runtime = Runtime(settings_for(empty_sims, url))

    def database(allowed: bool) -> None:
        with server.admin.connect() as c:
            c.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:  # and drop the connections the pool holds
                c.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    try:
        with TestClient(create_app(runtime)) as client:
            assert client.get("/readyz").json()["checks"]["database"] == {"ok": True}
            database(allowed=False)
            alive = client.get("/healthz")
            assert alive.status_code == 200, alive.text
            assert alive.json() == {
                "status": "ok",
                "checks": {
                    "process": {
                        "ok": True,
                        "pid": os.getpid(),
                        "uptime_seconds": alive.json()["checks"]["process"]["uptime_seconds"],
                    }
                },
            }
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["status"] == "not ready"
            assert body["checks"]["database"]["ok"] is False
            assert body["checks"]["database"]["detail"].startswith("database error:"), body
            failing = [check for check, c in body["checks"].items() if not c["ok"]]
            assert failing == ["database"], body  # the systems still answer
            database(allowed=True)
            answer = wait_for(
                lambda: (r := client.get("/readyz")).status_code == 200 and r,
                "ready again once the database answers", timeout=20,
            )  # fmt: skip
            assert answer.json()["checks"]["database"] == {"ok": True}
    finally:
        runtime.stop()
        database(allowed=True)
        server.drop_all()


def test_a_scrape_and_the_status_never_wait_for_the_overdue_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting reads every open incident (50,000 open: /metrics and /api/status took 35 s on a
    slow VM, past Prometheus' 10 s scrape timeout). It runs in the background now: the first
    read waits a little for it, later ones answer with the last count and its age."""
    from sync import cadence

    release = threading.Event()
    counts = iter([3, 5])
    calls: list[int] = []

    def slow_overdue(s: object, settings: object, **_: object) -> int:
        calls.append(1)
        if len(calls) > 1:
            release.wait(30)  # the recount hangs until the test lets it go
        return next(counts)

    monkeypatch.setattr(cadence, "overdue", slow_overdue)
    from config.settings import Settings

    runtime = Runtime(
        Settings.model_validate(
            {
                "database_url": f"sqlite:///{tmp_path / 'm.db'}",
                "api_tokens": [{"name": "sre", "token": "t0k", "role": "viewer"}],
            }
        )
    )
    gauge = runtime.overdue
    gauge.max_age = 0.0  # every read after the first asks for a recount
    answers: list[str] = []
    try:
        with TestClient(create_app(runtime)) as client:
            first = client.get("/metrics").text
            assert re.search(r"^itsm_sync_incidents_update_overdue 3\.0$", first, re.M), first
            # The recount hangs: a scrape and the status answer anyway, with the last count.
            worker = threading.Thread(
                target=lambda: answers.extend(
                    [
                        client.get("/metrics").text,
                        client.get("/api/status", headers={"Authorization": "Bearer t0k"}).text,
                    ]
                )
            )
            worker.start()
            worker.join(20)
            assert not worker.is_alive(), "a scrape waited for the count"
            assert re.search(r"^itsm_sync_incidents_update_overdue 3\.0$", answers[0], re.M)
            assert "itsm_sync_incidents_update_overdue_age_seconds" in answers[0]
            assert '"updates_overdue":3' in answers[1].replace(" ", "")
            release.set()
            deadline = time.monotonic() + 10
            while gauge.read()[0] != 5:
                assert time.monotonic() < deadline, "the recount never landed"
                time.sleep(0.05)
    finally:
        release.set()
        runtime.stop()


def test_the_first_overdue_count_that_takes_long_is_reported_as_not_counted_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync import cadence

    release = threading.Event()
    monkeypatch.setattr(cadence, "overdue", lambda *a, **k: release.wait(30) and 7)
    runtime = Runtime(settings_for_nothing(tmp_path))
    runtime.overdue.wait = 0.1
    try:
        assert runtime.overdue.read() == (None, None)  # not counted yet: not made up
        release.set()
        deadline = time.monotonic() + 10
        while runtime.overdue.read()[0] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert runtime.overdue.read()[0] == 7
    finally:
        release.set()
        runtime.stop()
