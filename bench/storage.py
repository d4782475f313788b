"""Storage per edit: bytes the database keeps per incident edit, amortised over a 10,000-edit
run, after ``itsm-sync prune`` (target ≤ 600 B/edit; issue 14).

The real engine and store on SQLite (``itsm-sync run``'s two worker processes reconcile; this
process ingests, polls and prunes), against the simulators in a process of their own: 500 SEV1
ServiceNow incidents, each with its Jira issue, then 20 rounds in which every incident is
edited once (its short description: a Jira write and its audit entry per edit). Each edit also
arrives as a signed business-rule webhook delivery (ingested as ``POST /webhooks/servicenow``
would), and each round the poller reads the edits and the workers reconcile them. Then the
events are aged past ``retention.events_days`` (the clock moved on, the audit is still within
``retention.audit_days``), ``prune`` runs, the file is vacuumed, and its size is divided by the
number of edits.

``python -m bench.storage [--small]`` (``--small``: 50 incidents, 1,000 edits).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import Row, SimulatorProcess, finish, header, parser
from config.settings import RetentionSettings
from connectors.http import reset_buckets
from service.harness import WEBHOOK_SECRETS, Service, settings_for
from sync import store
from sync.ingest import ingest_webhook
from sync.poller import poll_all
from sync.queue import queue_depth
from sync.retention import prune

TARGET = 600


def _size(db_file: Path) -> int:
    return sum(p.stat().st_size for p in db_file.parent.glob(db_file.name + "*"))


def settle(db: Engine, *, timeout: float) -> None:
    """Until the queue is empty (every key worked on and finished), as ``drain`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        with store.session_scope(db, readonly=True) as s:
            if queue_depth(s) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue was not empty after {timeout:.0f} s")
        time.sleep(0.05)


def run(incidents: int, rounds: int) -> dict[str, Any]:
    reset_buckets()
    # The simulators in a process of their own, not sharing this process's interpreter lock.
    sims = SimulatorProcess(seed=True)
    sims.start()
    with contextlib.ExitStack() as stack:
        stack.callback(sims.stop)
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        db_file = Path(folder) / "storage.db"
        settings = settings_for(
            sims, f"sqlite:///{db_file}", statuspage={"requests_per_second": 50},
            sync={"workers": 8, "poll_interval_seconds": 3600, "worker_processes": 2,
                  "worker_process_nice": 0},
        )  # fmt: skip
        # `itsm-sync run`'s two worker processes reconcile (draining in this process's threads,
        # under one interpreter lock, was two-thirds of the run's ~140 s); this process ingests,
        # polls and prunes on the same database, and its marks wake them as `run`'s do.
        service = Service(settings, poll=False, worker_process=True).start()
        rt = service.runtime
        sn = httpx.Client(base_url=sims.urls["servicenow"], auth=("admin", "admin"), timeout=30)
        connector = rt.connectors[("servicenow", "default")]
        secret = {"X-ServiceNow-Secret": WEBHOOK_SECRETS["servicenow"]}
        try:
            ids = []
            for n in range(incidents):
                row = sn.post(
                    "/api/now/table/incident",
                    json={
                        "short_description": f"Checkout fails {n}",
                        "impact": "1",
                        "urgency": "1",
                    },
                ).json()["result"]
                ids.append(row["sys_id"])
            poll_all(rt.db, rt.connectors)
            settle(rt.db, timeout=600)

            # One client per editing thread: a client shared by the four once failed a read
            # with EBADF (make bench, 2026-12-07 18:35 UTC), another thread having closed the
            # pooled connection under it.
            local = threading.local()
            clients: list[httpx.Client] = []

            def client() -> httpx.Client:
                if not hasattr(local, "sn"):
                    local.sn = httpx.Client(
                        base_url=sims.urls["servicenow"], auth=("admin", "admin"), timeout=30
                    )
                    clients.append(local.sn)
                return local.sn

            def edit(n: int, sys_id: str, r: int) -> None:
                record = (
                    client()
                    .patch(
                        f"/api/now/table/incident/{sys_id}",
                        json={"short_description": f"Checkout fails {n}, round {r}"},
                    )
                    .json()["result"]
                )
                body = json.dumps({"table": "incident", "record": record}).encode()
                ack = ingest_webhook(rt.db, connector, secret, body, coalesce=0)
                assert ack.status in (200, 202), ack

            edits = 0
            started = time.monotonic()
            # A round's edits go four at a time, as the desk's edits and their deliveries
            # arrive side by side; what is stored per edit is the same as one at a time.
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for r in range(rounds):
                    done = pool.map(edit, range(len(ids)), ids, [r] * len(ids))
                    edits += sum(1 for _ in done)
                    poll_all(rt.db, rt.connectors)
                    settle(rt.db, timeout=600)
            elapsed = time.monotonic() - started
            for each in clients:
                each.close()
            with store.session_scope(rt.db, readonly=True) as s:
                audit = s.exec(text("SELECT count(*) FROM audit")).one()[0]  # type: ignore[call-overload]
            before = _size(db_file)
            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.retention.events_days + 1)
            pruned = prune(rt.db, RetentionSettings(), now=later)
        finally:
            service.stop()
            sn.close()
        c = sqlite3.connect(db_file)  # everything closed: give the free pages back
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.execute("PRAGMA journal_mode=DELETE")  # VACUUM into the file itself, no WAL left
            c.execute("VACUUM")
        finally:
            c.close()
        after = _size(db_file)
        with sqlite3.connect(db_file) as c:  # where the bytes are (dbstat: SQLite's page map)
            tables = dict(
                c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
            )
    return {
        "incidents": incidents, "edits": edits, "seconds": round(elapsed, 1),
        "audit_rows": audit, "pruned_deliveries": pruned["webhook deliveries"],
        "bytes_before_prune_per_edit_incl_wal": round(before / edits),
        "bytes_total_after_prune_per_edit": round(after / edits),
        "per_edit_by_table": {
            name: round(size / edits) for name, size in tables.items() if size / edits >= 10
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0] if __doc__ else "").parse_args(argv)
    incidents = 50 if args.small else 500  # --small: 1,000 edits
    # The header starts the watch of other processes' CPU that finish() reports.
    header("Database bytes per edit after pruning", "bench.storage", args.small, {
        "incidents": incidents, "edits": incidents * 20, "database": "SQLite (temp file)",
        "after": "prune past retention.events_days, then VACUUM",
    })  # fmt: skip
    result = run(incidents, 20)
    for key, value in result.items():
        print(f"  {key}: {value}")
    figure = result["bytes_total_after_prune_per_edit"]
    verdict = "PASS" if figure <= TARGET else "FAIL"
    print(f"{verdict} storage-bytes-per-edit: {figure} B (target ≤ {TARGET})")
    rows = [
        Row("storage", "bytes per edit after prune", f"≤ {TARGET} B", f"{figure} B",
            figure <= TARGET)
    ]  # fmt: skip
    finish(rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
