"""Retention: deliveries go after retention.events_days, the audit after the (longer)
retention.audit_days; `prune --dry-run` counts without deleting; `run` schedules it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import func, select

from config.settings import RetentionSettings, Settings
from sync import store
from sync.retention import PruneLoop, prune

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _seed(url: str) -> None:
    db = store.make_engine(url)
    store.migrate(db)
    with store.session_scope(db) as s:
        for days in (1, 13, 15, 100, 399, 401):
            at = NOW - dt.timedelta(days=days)
            store.record_delivery(
                s, system="jira", delivery_id=f"d{days}", status="accepted", received_at=at
            )
            store.audit(s, action="update", incident_id="i1", field="summary", after="x", at=at)
        old = store.park(s, incident_id="i1", target="jira:default", error="e",
                         now=NOW - dt.timedelta(days=500))  # fmt: skip
        old.resolved_at = NOW - dt.timedelta(days=450)
        s.add(old)
        store.park(s, incident_id="i2", target="jira:default", error="still open",
                   now=NOW - dt.timedelta(days=500))  # fmt: skip
    db.dispose()


def _counts(url: str) -> tuple[int, int, int]:
    db = store.make_engine(url)
    with store.session_scope(db, readonly=True) as s:
        out = tuple(
            int(s.exec(select(func.count()).select_from(t)).one())
            for t in (store.WebhookDelivery, store.AuditEntry, store.Parked)
        )
    db.dispose()
    return out  # type: ignore[return-value]


def test_prune_keeps_the_audit_longer_than_the_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _seed(url)
    db = store.make_engine(url)
    settings = RetentionSettings()
    assert settings.audit_days > settings.events_days  # the default keeps the audit longer
    counted = prune(db, settings, now=NOW, dry_run=True)
    assert counted == {"webhook deliveries": 4, "audit entries": 1, "resolved parked items": 1}
    assert _counts(url) == (6, 6, 2)  # a dry run deletes nothing
    assert prune(db, settings, now=NOW) == counted
    assert _counts(url) == (2, 5, 1)  # the open parked item stays, however old
    assert prune(db, settings, now=NOW) == dict.fromkeys(counted, 0)


def test_prune_command_dry_run_and_real(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _seed(url)  # rows dated against 2026-12-01; the command's clock is now, later still
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    env.update(ITSM_SYNC_DATABASE_URL=url, ITSM_SYNC_RETENTION__EVENTS_DAYS="10000",
               ITSM_SYNC_RETENTION__AUDIT_DAYS="100000")  # fmt: skip
    cli = [sys.executable, "-m", "service", "prune"]
    dry = subprocess.run([*cli, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would delete: 0 webhook deliveries, 0 audit entries")
    env["ITSM_SYNC_RETENTION__EVENTS_DAYS"] = "1"
    dry = subprocess.run([*cli, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.stdout.startswith("would delete: 6 webhook deliveries, 0 audit entries"), dry.stdout
    assert _counts(url)[0] == 6
    real = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("deleted: 6 webhook deliveries, 0 audit entries"), real.stdout
    assert _counts(url) == (0, 6, 2)


def test_run_schedules_pruning(tmp_path: Path) -> None:
    from service.runtime import Runtime

    settings = Settings.model_validate(
        {"database_url": f"sqlite:///{tmp_path / 'run.db'}", "retention": {"every_hours": 6}}
    )
    runtime = Runtime(settings)
    try:
        runtime.start(poll=True, workers=False)
        assert runtime.pruner is not None and runtime.pruner._thread is not None
        assert runtime.pruner._thread.is_alive()
    finally:
        runtime.stop()
    off = PruneLoop(store.make_engine(settings.database_url), RetentionSettings(every_hours=0))
    off.start()
    assert off._thread is None
