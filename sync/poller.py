"""Polling: the safety net for every missed webhook.

Per (system, instance, object type) a watermark; each poll reads what changed since it (the
connector applies an overlap and de-duplicates), stores it, and only then advances the
watermark, never past the moment the poll started.

Ties: remote times have a coarse grain (ServiceNow's ``sys_updated_on`` is to the second, JQL
to the minute), so the connector reads from the watermark minus its overlap, and records of
the watermark's own second come back. Were the watermark left at the newest record read, those
records would be read again at every poll for as long as nothing newer came (500 records
stamped in one second: 500 reads per poll, forever). After a poll that read everything, the
watermark moves on to :data:`SETTLE_SECONDS` before the poll began: what was updated before
then and is not committed yet is covered by the connector's overlap, as before; what was read
at the boundary is read once more at most, by a poll within the settling time, and never after.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from connectors.base import Connector, RemoteRecord
from connectors.errors import ConnectorError
from sync import store
from sync.ingest import store_records

log = logging.getLogger("itsm_sync.poller")
# Statuspage is output only; change requests are polled for the postmortem tracker.
POLLED = {"servicenow": ("incident", "change_request"), "jira": ("issue",)}
BATCH = 200
# A complete poll moves the watermark to this long before it began (see the module's doc): the
# allowance for the remote's clock being behind ours, on top of the connector's own overlap.
SETTLE_SECONDS = 5.0


@dataclass
class PollResult:
    system: str
    instance: str
    object_type: str
    read: int = 0
    newer: int = 0
    watermark: dt.datetime | None = None
    error: str = ""


def poll_once(
    db: Engine,
    connector: Connector,
    object_type: str,
    *,
    since: dt.datetime | None = None,
    watermark_key: str | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], dt.datetime] = store.utcnow,
    page_size: int = 100,
) -> PollResult:
    """Read what changed since the watermark (or ``since``, whichever is later), store it,
    and advance the watermark batch by batch (records come oldest first), never past the
    poll's start: a poll killed half-way resumes where its last stored batch ended. A poll
    that read everything moves it to :data:`SETTLE_SECONDS` before its start at least, so a
    quiet system's last records are not read again at every poll. ``page_size``: the records
    asked for per list call (a backfill asks for more; a connector may cap it)."""
    key = dict(
        system=connector.system,
        instance=connector.instance,
        object_type=watermark_key or object_type,
    )
    result = PollResult(connector.system, connector.instance, object_type)
    started = clock()
    with store.session_scope(db) as s:
        stored = store.get_watermark(s, **key)
    watermark = max((w for w in (since, stored) if w is not None), default=None)
    batch: list[RemoteRecord] = []

    def flush() -> None:
        newer, top = store_records(db, batch)
        result.newer += newer
        if top is not None:
            with store.session_scope(db) as s:
                result.watermark = store.set_watermark(s, **key, value=min(top, started))
        if progress is not None:
            progress(len(batch))
        batch.clear()

    try:
        for record in connector.changes_since(object_type, watermark, page_size=page_size):
            batch.append(record)
            result.read += 1
            if len(batch) >= BATCH:
                flush()
        flush()
        settled = started - dt.timedelta(seconds=SETTLE_SECONDS)
        if watermark is None or settled > watermark:
            with store.session_scope(db) as s:
                result.watermark = store.set_watermark(s, **key, value=settled)
    except ConnectorError as exc:
        result.error = str(exc)
        log.warning(
            "poll %s/%s %s failed: %s", connector.system, connector.instance, object_type, exc
        )
    return result


def poll_all(
    db: Engine, connectors: Mapping[tuple[str, str], Connector], *, since: dt.datetime | None = None
) -> list[PollResult]:
    results = []
    for (system, _), connector in sorted(connectors.items()):
        for object_type in POLLED.get(system, ()):
            results.append(poll_once(db, connector, object_type, since=since))
    return results


class Poller:
    """Polls every source on an interval, in a thread."""

    def __init__(
        self, db: Engine, connectors: Mapping[tuple[str, str], Connector], interval: float
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: list[PollResult] = []

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.last = poll_all(self.db, self.connectors)
                except Exception:  # keep polling: the next round may work
                    log.exception("poll round failed")
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def results_table(results: Iterable[PollResult]) -> list[str]:
    return [
        f"{r.system}/{r.instance} {r.object_type}: read {r.read}, {r.newer} new"
        + (f", error: {r.error}" if r.error else "")
        for r in results
    ]
