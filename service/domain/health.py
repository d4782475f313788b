"""What is stuck, read from the store: for ``/readyz`` warnings, ``/metrics`` and ``status``.

A change whose reconcile failed stays queued with its attempts and error (``dirty``), a target
that keeps failing waits in ``target_backoff``, one that cannot be fixed by retrying is parked;
none of them may stall an incident invisibly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import Session, col, func, select

from postmortem_tracker.models import GateEvent
from sync import store


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def oldest_change_age(s: Session, *, now: dt.datetime | None = None) -> float:
    """Seconds the oldest due, unprocessed change has waited (0: none is waiting)."""
    now = now or dt.datetime.now(dt.UTC)
    first = s.exec(
        select(
            func.min(func.coalesce(col(store.Dirty.first_marked_at), col(store.Dirty.due_at)))
        ).where(col(store.Dirty.due_at) <= now)
    ).one()
    if first is None:
        return 0.0
    return max(0.0, (now - _aware(first)).total_seconds())


def stuck(s: Session, *, now: dt.datetime | None = None, examples: int = 5) -> dict[str, Any]:
    """Failing changes (queued with a failed attempt), targets in backoff, parked items, gate
    blocks; with a few examples each (key or incident, target, error)."""
    now = now or dt.datetime.now(dt.UTC)
    failing = s.exec(
        select(store.Dirty).where(col(store.Dirty.attempts) > 0).order_by(col(store.Dirty.key))
    ).all()
    backoff = s.exec(select(store.TargetBackoff).order_by(col(store.TargetBackoff.target))).all()
    per_target: dict[str, dict[str, float]] = {}
    for row in backoff:
        entry = per_target.setdefault(row.target, {"incidents": 0, "max_wait_seconds": 0.0})
        entry["incidents"] += 1
        wait = (_aware(row.next_attempt_at) - now).total_seconds()
        entry["max_wait_seconds"] = max(entry["max_wait_seconds"], max(0.0, wait))
    blocks = s.exec(
        select(func.count()).select_from(GateEvent).where(col(GateEvent.kind) == "blocked")
    ).one()
    return {
        "failing": len(failing),
        "failing_examples": [
            {"key": d.key, "attempts": d.attempts, "error": d.last_error}
            for d in failing[:examples]
        ],
        "backoff": per_target,
        "backoff_examples": [
            {
                "incident": b.incident_id,
                "target": b.target,
                "attempts": b.attempts,
                "error": b.last_error,
            }
            for b in backoff[:examples]
        ],
        "parked": len(store.open_parked(s)),
        "gate_blocks": int(blocks),
        "oldest_change_age_seconds": oldest_change_age(s, now=now),
    }
