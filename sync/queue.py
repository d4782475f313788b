"""The dirty queue: "look at incident X", coalesced, claimed by one worker at a time.

Level-triggered (DESIGN.md §2): a queue row only says *that* something changed, never *what*,
so marks coalesce freely and a reconcile always works from the newest stored state.

Life of a row::

    mark_dirty ──> waiting (due_at) ──claim──> claimed (claimed_by, lease) ──finish──> gone
                      ^    ^                    |   |
                      |    └── retry_later ─────┘   └─ marked again meanwhile: finish releases
                      └──── lease expired: claimable by anyone ──┘

- ``generation`` is bumped by every mark. :func:`claim` returns the generation it saw and
  :func:`finish` deletes the row only if it is unchanged, so a mark that arrives while a worker
  is busy is never lost: the row is released, due, and reconciled again.
- A claim is a lease: a worker that dies stops renewing, and its rows become claimable again
  when ``claimed_until`` passes. Workers must have unique names (host:pid:thread).
- On PostgreSQL, claiming selects with ``FOR UPDATE SKIP LOCKED``: several processes share the
  queue with nothing else between them. On SQLite, the claim is one ``UPDATE .. RETURNING`` in a
  ``BEGIN IMMEDIATE`` transaction (see :func:`sync.store.session_scope`), so no two threads
  or processes get one key.

Like the store, nothing here commits: call each in its own short ``session_scope`` (commit the
claim before doing the work, otherwise the lease protects nothing).

Per-target backoff (:func:`next_backoff`, :func:`blocked_targets`) lets one incident's healthy
targets go on while another target waits out a retriable failure; fatal failures are parked
(:func:`sync.store.park`).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, bindparam, case, delete, func, or_
from sqlalchemy import select as sa_select  # Core
from sqlmodel import Session, col, select, update

from sync.store import QUEUED, Dirty, TargetBackoff, dialect_insert, insert_for, prepared, utcnow

__all__ = [
    "Claim",
    "backoffs",
    "blocked_targets",
    "claim",
    "clear_backoff",
    "finish",
    "incident_key",
    "mark_dirty",
    "next_backoff",
    "next_due",
    "parse_key",
    "queue_depth",
    "release",
    "remote_key",
    "renew",
    "retry_later",
]

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one queue row, as of the generation it saw when claiming."""

    key: str
    generation: int
    worker: str
    attempts: int = 0  # failed attempts so far (retry_later), for the caller's own policy


def incident_key(incident_id: str) -> str:
    return f"incident:{incident_id}"


def remote_key(
    system: str, instance: str, object_type: str, remote_id: str, *, stored: bool = False
) -> str:
    """The key of a remote record to look at: ``remote:`` to read it afresh (a trigger that
    did not carry it, or a record not linked yet), ``stored:`` when what was stored with the
    mark is the record as it is (a complete delivery or a poll of a record not linked when
    marked): no read, unless the store has nothing of it."""
    kind = "stored" if stored else "remote"
    return f"{kind}:{system}:{instance}:{object_type}:{remote_id}"


def parse_key(key: str) -> tuple[str, ...]:
    """``("incident", id)`` or ``("remote" | "stored", system, instance, object_type,
    remote_id)``.

    The remote id is last and may itself contain ``:``.
    """
    kind, _, rest = key.partition(":")
    if kind == "incident" and rest:
        return (kind, rest)
    if kind in ("remote", "stored"):
        parts = rest.split(":", 3)
        if len(parts) == 4 and all(parts):
            return (kind, *parts)
    raise ValueError(f"not a queue key: {key!r}")


def _later(now: dt.datetime, seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=max(0.0, seconds))


def mark_dirty(
    session: Session,
    key: str,
    *,
    delay: float = 0.0,
    reason: str = "",
    now: dt.datetime | None = None,
    debounce: float | None = None,
    max_wait: float = 2.0,
) -> None:
    """Ask for ``key`` to be reconciled in ``delay`` seconds (coalesced, never lost).

    With ``debounce``, a burst of marks is gathered instead: due ``debounce`` seconds after the
    last mark, at most ``max_wait`` after the first (see the body).

    A key already waiting keeps the earlier of its due time and the new one, so a burst of
    marks makes one entry and one reconcile; a fresh mark also cuts short a retry wait. Every
    mark bumps the generation, which is how a busy worker learns it must look again.
    """
    now = now or utcnow()
    session.info[QUEUED] = True  # session_scope wakes idle workers once this is committed
    # Core statements built once: this runs for every webhook, in the HTTP process, and the
    # ORM's per-call statement building was most of its cost.
    waiting_q, debounce_q, upsert_q = prepared(session, "dirty.mark", _mark_statements)
    connection = session.connection()
    due = _later(now, delay)
    if debounce is not None:
        waiting = connection.execute(waiting_q, {"b_key": key}).first()
        if waiting is not None:
            # Trailing debounce: each mark of a waiting key moves it to `debounce` after this
            # mark, but never later than `max_wait` after the burst began, so 50 edits in a
            # second make one reconcile and a steady stream still gets through.
            due_at, first_marked_at = waiting
            first = first_marked_at or now
            due = min(max(due_at, _later(now, debounce)), _later(first, max_wait))
            connection.execute(
                debounce_q,
                {"b_key": key, "b_due": due, "b_first": first, "b_reason": reason},
            )
            return
        due = _later(now, debounce)
    connection.execute(
        upsert_q,
        {
            "key": key,
            "due_at": due,
            "generation": 1,
            "first_marked_at": now,
            "claimed_by": None,
            "claimed_until": None,
            "attempts": 0,
            "last_error": "",
            "reason": reason,
        },
    )


def _mark_statements(dialect: str) -> tuple[Any, Any, Any]:
    """SELECT the waiting key's due_at and first_marked_at; UPDATE a waiting key (debounce);
    INSERT .. ON CONFLICT: keep the earlier due_at, generation + 1."""
    table = Dirty.__table__  # type: ignore[attr-defined]
    c = table.c
    waiting = sa_select(c.due_at, c.first_marked_at).where(
        c.key == bindparam("b_key"), c.claimed_by.is_(None)
    )
    debounce = (
        update(table)
        .where(c.key == bindparam("b_key"), c.claimed_by.is_(None))
        .values(
            due_at=bindparam("b_due", type_=c.due_at.type),
            first_marked_at=bindparam("b_first", type_=c.first_marked_at.type),
            generation=c.generation + 1,
            reason=bindparam("b_reason", type_=c.reason.type),
        )
    )
    insert = insert_for(dialect, table)
    upsert = insert.on_conflict_do_update(
        index_elements=[c.key],
        set_={
            "due_at": case((insert.excluded.due_at < c.due_at, insert.excluded.due_at),
                           else_=c.due_at),
            "generation": c.generation + 1,
            "reason": insert.excluded.reason,
            # Marked while a worker holds it: a new burst begins now (else, once released,
            # its max_wait would already be over and every later mark due at once).
            "first_marked_at": case(
                (c.claimed_by.is_not(None), insert.excluded.first_marked_at),
                else_=c.first_marked_at,
            ),
        },
    )  # fmt: skip
    return waiting, debounce, upsert


def has_due(session: Session, *, now: dt.datetime | None = None) -> bool:
    """Whether any row is due and free: a cheap read, so idle workers don't take write locks."""
    now = now or utcnow()
    row = session.exec(
        select(col(Dirty.key))
        .where(
            col(Dirty.due_at) <= now,
            or_(col(Dirty.claimed_until).is_(None), col(Dirty.claimed_until) <= now),
        )
        .limit(1)
    ).first()
    return row is not None


def next_due(session: Session, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the earliest row nobody holds is (or was) due; None when there is none.

    One cheap read (the ``due_at`` index, first row): an idle worker sleeps until then instead
    of polling. Rows claimed by someone are left out: their holder finishes or releases them
    (and a dead holder's lease runs out; idle workers look again now and then anyway).
    """
    now = now or utcnow()
    query = prepared(session, "dirty.next_due", _next_due_statement)
    found = session.connection().execute(query, {"now": now}).scalar_one_or_none()
    return cast(dt.datetime | None, found)


def _next_due_statement(dialect: str) -> Any:
    c = Dirty.__table__.c  # type: ignore[attr-defined]
    now = bindparam("now", type_=c.due_at.type)
    return (
        sa_select(c.due_at)
        .where(or_(c.claimed_until.is_(None), c.claimed_until <= now))
        .order_by(c.due_at)
        .limit(1)
    )


def claim(
    session: Session,
    worker: str,
    *,
    limit: int,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` due rows that nobody holds (or whose lease ran out), oldest first.

    Commit right away; the lease lasts ``lease_seconds`` (:func:`renew` it for long work).
    While claimed, a row's ``due_at`` is the lease end, so a crashed worker's rows come back
    in order, and marks made during the work decide when it is due again.
    """
    now = now or utcnow()
    until = _later(now, lease_seconds)
    rows = session.connection().execute(
        prepared(session, "dirty.claim", _claim_statement),
        {"now": now, "until": until, "worker": worker, "limit": limit},
    )
    claims = [Claim(key=k, generation=g, worker=worker, attempts=a) for k, g, a in rows]
    return sorted(claims, key=lambda c: c.key)


def _claim_statement(dialect: str) -> Any:
    table = Dirty.__table__  # type: ignore[attr-defined]
    c = table.c
    now = bindparam("now", type_=c.due_at.type)
    until = bindparam("until", type_=c.due_at.type)
    # An alias, so the UPDATE does not correlate it; FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite
    # renders nothing) locks the chosen rows and skips rows other workers are claiming.
    waiting = table.alias("waiting")
    chosen = (
        sa_select(waiting.c.key)
        .where(
            waiting.c.due_at <= now,
            or_(waiting.c.claimed_until.is_(None), waiting.c.claimed_until <= now),
        )
        .order_by(waiting.c.due_at, waiting.c.key)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )
    return (
        update(table)
        .where(c.key.in_(chosen))
        .values(
            claimed_by=bindparam("worker", type_=c.claimed_by.type),
            claimed_until=until,
            due_at=until,
        )
        .returning(c.key, c.generation, c.attempts)
    )


def claim_key(
    session: Session,
    worker: str,
    key: str,
    *,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Claim one given key if it is due and nobody holds it (or their lease ran out): the
    incident of a record just worked on, taken next by the same worker. None otherwise (it
    waits for a debounce, or another worker has it: it stays queued for them)."""
    now = now or utcnow()
    until = _later(now, lease_seconds)
    table = Dirty.__table__  # type: ignore[attr-defined]
    c = table.c

    def build(dialect: str) -> Any:
        n = bindparam("now", type_=c.due_at.type)
        return (
            update(table)
            .where(
                c.key == bindparam("k_key"),
                c.due_at <= n,
                or_(c.claimed_until.is_(None), c.claimed_until <= n),
            )
            .values(
                claimed_by=bindparam("k_worker", type_=c.claimed_by.type),
                claimed_until=bindparam("k_until", type_=c.due_at.type),
                due_at=bindparam("k_until", type_=c.due_at.type),
            )
            .returning(c.key, c.generation, c.attempts)
        )

    row = (
        session.connection()
        .execute(
            prepared(session, "dirty.claim_key", build),
            {"k_key": key, "now": now, "k_until": until, "k_worker": worker},
        )
        .first()
    )
    if row is None:
        return None
    return Claim(key=row[0], generation=row[1], worker=worker, attempts=row[2])


def _held(claim: Claim) -> tuple[Any, ...]:
    return (col(Dirty.key) == claim.key, col(Dirty.claimed_by) == claim.worker)


def finish(session: Session, claim: Claim) -> bool:
    """Done with a claim: delete the row, unless it was marked again meanwhile.

    Returns True when the row is gone. If the generation moved on, the claim is released and
    the row is due when the new mark asked (normally now). If the lease was lost to another
    worker, nothing changes (they own the row now) and False is returned.
    """
    table = Dirty.__table__  # type: ignore[attr-defined]
    c = table.c
    deleted = session.connection().execute(
        prepared(
            session,
            "dirty.finish",
            lambda d: delete(table).where(
                (c.key == bindparam("k_key"))
                & (c.claimed_by == bindparam("k_worker"))
                & (c.generation == bindparam("k_generation"))
            ),
        ),
        {"k_key": claim.key, "k_worker": claim.worker, "k_generation": claim.generation},
    )
    if deleted.rowcount == 1:
        return True
    session.exec(
        update(Dirty)
        .where(*_held(claim))
        .values(claimed_by=None, claimed_until=None, attempts=0, last_error="")
        .execution_options(synchronize_session=False)
    )
    return False


def retry_later(
    session: Session,
    claim: Claim,
    *,
    delay: float,
    error: str,
    now: dt.datetime | None = None,
) -> bool:
    """Give a claim back after a failure: due in ``delay`` s, attempts += 1, error kept.

    False if the lease was already lost to another worker (then nothing changes).
    """
    now = now or utcnow()
    result = session.exec(
        update(Dirty)
        .where(*_held(claim))
        .values(
            claimed_by=None,
            claimed_until=None,
            due_at=_later(now, delay),
            attempts=col(Dirty.attempts) + 1,
            last_error=error,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release(session: Session, claim: Claim, *, now: dt.datetime | None = None) -> bool:
    """Give a claim back untouched, due now (e.g. on shutdown); not counted as a failure."""
    now = now or utcnow()
    result = session.exec(
        update(Dirty)
        .where(*_held(claim))
        .values(claimed_by=None, claimed_until=None, due_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def renew(
    session: Session, claim: Claim, *, lease_seconds: float, now: dt.datetime | None = None
) -> bool:
    """Extend the lease of a claim still held; False if it was lost (stop working on it).

    A lease that ran out but that nobody took yet is still ours (claiming is atomic, so
    ``claimed_by`` names whoever holds the row).
    """
    now = now or utcnow()
    until = _later(now, lease_seconds)
    result = session.exec(
        update(Dirty)
        .where(*_held(claim))
        .values(
            claimed_until=until,
            due_at=case((col(Dirty.due_at) > until, until), else_=col(Dirty.due_at)),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def queue_depth(session: Session) -> int:
    """Rows in the queue, waiting or claimed."""
    return int(session.exec(select(func.count()).select_from(Dirty)).one())


# --------------------------------------------------------------------------------------------
# Per-(incident, target) backoff
# --------------------------------------------------------------------------------------------


def next_backoff(
    session: Session,
    incident_id: str,
    target: str,
    error: str,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
    now: dt.datetime | None = None,
) -> float:
    """Count one more retriable failure of (incident, target); return how long it must wait.

    Exponential (base, 2 base, 4 base, ...) capped at ``cap``, with jitter (50-100 %) so
    incidents that failed together don't retry together. The target is blocked until then.
    """
    now = now or utcnow()
    statement = dialect_insert(session, TargetBackoff).values(
        incident_id=incident_id, target=target, attempts=1, next_attempt_at=now, last_error=error
    )
    attempts = session.exec(
        statement.on_conflict_do_update(
            index_elements=[col(TargetBackoff.incident_id), col(TargetBackoff.target)],
            set_={"attempts": col(TargetBackoff.attempts) + 1, "last_error": error},
        ).returning(col(TargetBackoff.attempts))
    ).scalar_one()
    ceiling = min(cap, base * 2 ** min(int(attempts) - 1, 30))
    delay = ceiling * random.uniform(0.5, 1.0)
    session.exec(
        update(TargetBackoff)
        .where(col(TargetBackoff.incident_id) == incident_id, col(TargetBackoff.target) == target)
        .values(next_attempt_at=_later(now, delay))
        .execution_options(synchronize_session=False)
    )
    return delay


def clear_backoff(session: Session, incident_id: str, target: str) -> None:
    """The target worked again: forget its failures."""
    session.exec(
        delete(TargetBackoff)
        .where(col(TargetBackoff.incident_id) == incident_id, col(TargetBackoff.target) == target)
        .execution_options(synchronize_session=False)
    )


def backoffs(session: Session, incident_id: str) -> dict[str, dt.datetime]:
    """Every target of the incident with a backoff row, and when it may be tried again."""
    rows = session.exec(
        select(col(TargetBackoff.target), col(TargetBackoff.next_attempt_at)).where(
            col(TargetBackoff.incident_id) == incident_id
        )
    )
    return {target: at for target, at in rows}


def blocked_targets(session: Session, incident_id: str, now: dt.datetime | None = None) -> set[str]:
    """Targets of the incident still waiting out a backoff."""
    now = now or utcnow()
    return {target for target, at in backoffs(session, incident_id).items() if at > now}
