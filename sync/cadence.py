"""The update rhythm a major incident owes: reminders when an update is due, escalation when
two are missed.

Per severity (``comms.cadence_minutes``: SEV1 every 15 minutes, SEV2 every 30 by default) an
open incident owes an update. An update is a public one — comms approving a public message
(the status page posts it), a customer-visible comment on any side — or, with
``comms.internal_updates_count``, an internal one too. When one is due and none came, the
incident gets an internal reminder naming its assignee, which the engine posts as a ServiceNow
work note and a restricted Jira comment (never a public comment, never the status page). After
two missed updates in a row it escalates to ``comms.escalate_to``. Each reminder has an id made
of the incident and the due time, so a check run twice (or by two processes) reminds once.

Pure functions of the incident and a time, plus :func:`check`, which the worker process runs
every ``comms.check_seconds`` with the time passed in (tests pass their own clock).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from config.settings import CommsSettings
from mapping.model import Comment, Incident, State, Visibility
from sync import store
from sync.queue import incident_key, mark_dirty

log = logging.getLogger("itsm_sync.cadence")
OPEN = (State.NEW, State.INVESTIGATING, State.IDENTIFIED, State.MONITORING)
ORIGIN = "itsm-sync:cadence"


def period(incident: Incident, settings: CommsSettings) -> dt.timedelta | None:
    """How often the incident owes an update (None: it owes none)."""
    if incident.state not in OPEN or incident.severity is None:
        return None
    minutes = settings.cadence_minutes.get(incident.severity.value)
    return dt.timedelta(minutes=minutes) if minutes else None


def updates(incident: Incident, settings: CommsSettings) -> Iterable[dt.datetime]:
    """When the incident got the updates that count."""
    message = incident.changed.get("public_message")
    if incident.public and message is not None:
        yield message.at
    for comment in incident.comments:
        if comment.created_at is None or comment.origin.startswith("itsm-sync:"):
            continue
        if comment.visibility is Visibility.PUBLIC or settings.internal_updates_count:
            yield comment.created_at


def last_update(incident: Incident, settings: CommsSettings, opened: dt.datetime) -> dt.datetime:
    """The newest update that counts, or the incident's start if none came yet."""
    start = incident.started_at or opened
    return max([start, *updates(incident, settings)])


def next_update_due(
    incident: Incident, settings: CommsSettings, opened: dt.datetime
) -> dt.datetime | None:
    every = period(incident, settings)
    return None if every is None else last_update(incident, settings, opened) + every


def reminders(
    incident: Incident, settings: CommsSettings, opened: dt.datetime, now: dt.datetime
) -> list[Comment]:
    """The reminders the incident is owed at ``now`` and does not have yet."""
    every = period(incident, settings)
    if every is None:
        return []
    due = last_update(incident, settings, opened) + every
    if now < due:
        return []
    have = {c.id for c in incident.comments}
    who = incident.assignee or "the assignee"
    stamp = due.isoformat(timespec="minutes")
    severity = incident.severity.value if incident.severity else ""
    out = [
        Comment(
            id=f"cadence:{incident.id}:{stamp}",
            body=(
                f"Update due: this {severity} incident owes an update every "
                f"{every.total_seconds() / 60:g} minutes and the last one was at "
                f"{(due - every).isoformat(timespec='minutes')}. {who}, please post an update "
                "(a public message for the status page, or a comment for the customer)."
            ),
            visibility=Visibility.INTERNAL,
            origin=ORIGIN,
            created_at=now,
        )
    ]
    if now >= due + every:  # the second one is missed too
        out.append(
            Comment(
                id=f"cadence-escalation:{incident.id}:{stamp}",
                body=(
                    f"Two updates missed (due at {stamp} and "
                    f"{(due + every).isoformat(timespec='minutes')}): escalating to "
                    f"{settings.escalate_to}. {who} is assigned."
                ),
                visibility=Visibility.INTERNAL,
                origin=ORIGIN,
                created_at=now,
            )
        )
    return [c for c in out if c.id not in have]


def check(db: Engine, settings: CommsSettings, *, now: dt.datetime | None = None) -> int:
    """Give every open incident the reminders it is owed; returns how many were added."""
    now = now or store.utcnow()
    added = 0
    with store.session_scope(db, readonly=True) as s:
        # Only those owed a reminder now are kept (ids), not every open incident's data.
        owed = [
            (incident_id, opened)
            for incident_id, data, opened in open_rows(s)
            if reminders(_incident(incident_id, data), settings, opened, now)
        ]
    for incident_id, opened in owed:
        try:
            with store.session_scope(db) as s:
                row = store.get_incident(s, incident_id)
                if row is None:
                    continue
                fresh = Incident.model_validate({**row.data, "id": incident_id})
                new = reminders(fresh, settings, opened, now)
                new = [c for c in new if c.id not in {x.id for x in fresh.comments}]
                if not new:
                    continue
                updated = fresh.model_copy(update={"comments": (*fresh.comments, *new)})
                store.save_incident(s, row, updated.model_dump(mode="json"))
                for comment in new:
                    store.audit(
                        s, action="comment", incident_id=incident_id, field="update_cadence",
                        reason=comment.body.split(":", 1)[0].lower(),
                    )  # fmt: skip
                mark_dirty(s, incident_key(incident_id), reason="update due")
        except store.StaleIncident:
            continue  # saved meanwhile: the next check sees it
        added += len(new)
    if added:
        log.info("%d update reminder(s) added", added)
    return added


OPEN_PAGE = 1000


def _incident(incident_id: str, data: Any) -> Incident:
    return Incident.model_validate({**data, "id": incident_id})


def open_rows(s: Session) -> Iterator[tuple[str, Any, dt.datetime]]:
    """Every open incident's (id, data, opened), read a thousand at a time (by id), so that
    at most a page is held: holding them all at once (50,000 open incidents: ~470 MB at peak
    in ``bench.memory``) grew the process for good. Plain pages, not a server-side cursor,
    which PostgreSQL refuses outside a transaction (read sessions there are autocommit)."""
    after = ""
    while True:
        page = s.exec(
            select(store.IncidentRow.id, store.IncidentRow.data, store.IncidentRow.created_at)
            .where(
                store.state_of(s).in_([x.value for x in OPEN]),
                col(store.IncidentRow.id) > after,
            )
            .order_by(col(store.IncidentRow.id))
            .limit(OPEN_PAGE)
        ).all()
        yield from page
        if len(page) < OPEN_PAGE:
            return
        after = page[-1][0]


def overdue(s: Session, settings: CommsSettings, *, now: dt.datetime | None = None) -> int:
    """How many open incidents owe an update now (the ``incidents_update_overdue`` gauge)."""
    return count_overdue(open_rows(s), settings, now=now)


class OverdueGauge:
    """:func:`overdue` for what is asked often (``/metrics``, ``/api/status``): counted in a
    thread of its own at most every ``max_age`` seconds, so that a scrape reads the last count
    and never waits for one.

    Counting reads every open incident: with 50,000 open (``bench.memory``) a scrape took 35 s
    on a slow two-core VM, where Prometheus gives up on a scrape after 10 s by default. Only
    the very first read waits, up to ``wait`` seconds, for the first count (on a small store it
    takes milliseconds); after that a read answers at once, with the count's age.
    """

    def __init__(
        self, db: Engine, settings: CommsSettings, *, max_age: float = 30.0, wait: float = 2.0
    ) -> None:
        self.db = db
        self.settings = settings
        self.max_age = max_age
        self.wait = wait
        self._lock = threading.Lock()
        self._value: int | None = None
        self._at: float | None = None  # time.monotonic() of the count
        self._counting: threading.Event | None = None

    def read(self) -> tuple[int | None, float | None]:
        """(the last count, its age in seconds); (None, None) until a first count is done.
        Starts a count when the last one is older than ``max_age`` and none is under way."""
        with self._lock:
            stale = self._at is None or time.monotonic() - self._at > self.max_age
            if stale and self._counting is None:
                self._counting = threading.Event()
                threading.Thread(
                    target=self._count, args=(self._counting,), name="overdue-count", daemon=True
                ).start()
            first = self._counting if self._at is None else None
        if first is not None:
            first.wait(self.wait)
        with self._lock:
            if self._value is None or self._at is None:
                return None, None
            return self._value, round(time.monotonic() - self._at, 3)

    def _count(self, done: threading.Event) -> None:
        try:
            with store.session_scope(self.db, readonly=True) as s:
                value = overdue(s, self.settings)
            with self._lock:
                self._value, self._at = value, time.monotonic()
        except Exception:  # the last count stands (its age says how old); the next read retries
            log.exception("counting the incidents that owe an update failed")
        finally:
            with self._lock:
                self._counting = None
            done.set()


def count_overdue(
    rows: Iterable[tuple[str, Any, dt.datetime]],
    settings: CommsSettings,
    *,
    now: dt.datetime | None = None,
) -> int:
    """How many of these (id, data, opened) open incidents owe an update now."""
    now = now or store.utcnow()
    count = 0
    for incident_id, data, opened in rows:
        incident = Incident.model_validate({**data, "id": incident_id})
        due = next_update_due(incident, settings, opened)
        count += due is not None and due <= now
    return count


class CadenceLoop:
    """Runs :func:`check` every ``comms.check_seconds``, in a thread (the worker side)."""

    def __init__(self, db: Engine, settings: CommsSettings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.settings.check_seconds):
                try:
                    check(self.db, self.settings)
                except Exception:  # keep checking: the next round may work
                    log.exception("update cadence check failed")

        self._thread = threading.Thread(target=loop, name="cadence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
