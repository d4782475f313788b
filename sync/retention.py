"""Retention: what only explains the past is deleted after a while, so the store does not grow
forever (``itsm-sync prune``, and ``run`` on a schedule).

- webhook deliveries (accepted ones are kept only to recognise redeliveries; refused ones for
  diagnosis): after ``retention.events_days``;
- audit entries and resolved parked items: after ``retention.audit_days`` (longer by default).

What the engine needs to work (incidents, links, shadows, the newest observation of each
record, comment links, open parked items, the queue) is never pruned."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from config.settings import RetentionSettings
from sync import store

log = logging.getLogger("itsm_sync.retention")
BATCH = 5000  # rows per delete statement: short transactions, others write in between


def _targets(now: dt.datetime, settings: RetentionSettings) -> list[tuple[str, Any, Any]]:
    events = now - dt.timedelta(days=settings.events_days)
    audit = now - dt.timedelta(days=settings.audit_days)
    return [
        (
            "webhook deliveries",
            store.WebhookDelivery,
            col(store.WebhookDelivery.received_at) < events,
        ),
        ("audit entries", store.AuditEntry, col(store.AuditEntry.at) < audit),
        (
            "resolved parked items",
            store.Parked,
            col(store.Parked.resolved_at).is_not(None) & (col(store.Parked.resolved_at) < audit),
        ),
    ]


def prune(
    db: Engine,
    settings: RetentionSettings,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or, with ``dry_run``, count) what is past retention; returns rows per kind."""
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, int] = {}
    for name, table, older in _targets(now, settings):
        if dry_run:
            with store.session_scope(db, readonly=True) as s:
                out[name] = int(s.exec(select(func.count()).select_from(table).where(older)).one())
            continue
        total = 0
        while True:
            with store.session_scope(db) as s:
                n = _delete_batch(s, table, older)
            total += n
            if n < BATCH:
                break
        out[name] = total
    if not dry_run and any(out.values()):
        log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in out.items()))
    return out


def _delete_batch(s: Session, table: Any, older: Any) -> int:
    keys = [c for c in table.__table__.primary_key.columns]
    rows = s.connection().execute(select(*keys).where(older).limit(BATCH)).all()
    if not rows:
        return 0
    if len(keys) == 1:
        s.exec(delete(table).where(keys[0].in_([r[0] for r in rows])))
    else:
        for row in rows:
            s.exec(delete(table).where(*(k == v for k, v in zip(keys, row, strict=True))))
    return len(rows)


class PruneLoop:
    """Prunes every ``retention.every_hours`` in a thread (``run``'s worker side)."""

    def __init__(self, db: Engine, settings: RetentionSettings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.every_hours:
            return

        def loop() -> None:
            while not self._stop.wait(self.settings.every_hours * 3600):
                try:
                    prune(self.db, self.settings)
                except Exception:  # the next round may work
                    log.exception("pruning failed")

        self._thread = threading.Thread(target=loop, name="prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
