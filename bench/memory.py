"""Memory per link: the service's growth when the store holds L links (100k; --small 10k).

What is measured, in this order, in the processes that run the service as ``itsm-sync run``
does (HTTP in this process; 4 workers and the poller in its worker process;
``--workers-in-process``: all in this one) while the simulators run in a process of their own:

1. **start**: the service is running and one real incident was synced through it (a ServiceNow
   P1 and the Jira issue the service made): its rows are the templates.
2. **filled**: *separate* processes (two) bulk-insert L/2 more incidents, each with a ServiceNow and
   a Jira link, both links' shadows and both records' latest observations (copies of the
   template rows with their own ids, titles and remote keys), straight into the database with
   SQLAlchemy Core (the fast path; the service's own code never builds that many rows). The
   inserting processes' memory is not the service's.
3. **exercised**: the running service works over the full store: a sample of the incidents is
   queued and reconciled by the workers (each reads its links, observations, shadows, comment
   links and writes its incident back), signed ServiceNow webhooks for another sample are
   posted to it (each looks up its link among L), one poll round runs, and the API's status,
   metrics and incident pages are read.

Reported: RSS growth (``/proc/PID/statm``) of the service's processes, added up, from start to
exercised, per link (and per process); Python heap still allocated in this process after the
exercise (``tracemalloc``, started after the fill) per link; the database's size per link; and
one growth the exercise does not reach but code reading found: the Jira connector's per-issue
write buckets (forgotten once full again).

``python -m bench.memory [--small] [--postgres] [--workers-in-process]``
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import sqlite3
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text
from sqlmodel import func, select

from bench.common import (
    PostgresDatabase,
    Rig,
    Row,
    finish,
    header,
    parser,
    table,
    wait_for,
)
from connectors.http import KeyedBuckets
from service.harness import WEBHOOK_SECRETS
from sync import store
from sync.poller import poll_all
from sync.queue import incident_key, mark_dirty

MODULE = "bench.memory"
GOAL_BYTES = 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
BATCH = 2000


def rss(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default), in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def worker_pid(rig: Rig) -> int | None:
    """The service's worker process (as itsm-sync run), if it has one."""
    process = rig.runtime.worker_process
    return None if process is None or process.process is None else int(process.process.pid)


def settle(rig: Rig) -> tuple[int, int]:
    """RSS of the service's process (after a collection) and of its worker process (0: none)."""
    gc.collect()
    time.sleep(0.2)
    child = worker_pid(rig)
    return rss(), rss(child) if child is not None else 0


# --------------------------------------------------------------------------------------------
# The fill (its own process)
# --------------------------------------------------------------------------------------------


def _templates(rig: Rig) -> dict[str, Any]:
    """The rows of the one synced incident, as JSON text with placeholders for what differs."""
    with store.session_scope(rig.runtime.db, readonly=True) as s:
        [row] = s.exec(select(store.IncidentRow)).all()
        links = {link.system: link for link in store.links_of(s, row.id)}
        sn, jira = links["servicenow"], links["jira"]
        out: dict[str, Any] = {"incident": row.data, "links": {}}
        for system, link in (("servicenow", sn), ("jira", jira)):
            shadow = store.get_shadow(s, link.id or 0)
            obs = store.latest_observation(
                s, system=link.system, instance=link.instance,
                object_type=link.object_type, remote_id=link.remote_id,
            )  # fmt: skip
            assert shadow is not None and obs is not None
            out["links"][system] = {
                "link": link.model_dump(exclude={"id", "created_at"}),
                "shadow": {"fields": shadow.fields, "version": shadow.version},
                "observation": {
                    "version": obs.version, "fields": obs.fields, "source": obs.source,
                    "remote_updated_at": obs.remote_updated_at.isoformat()
                    if obs.remote_updated_at else None,
                },
            }  # fmt: skip
    subs = {
        row.id: "@@INCIDENT@@",
        sn.remote_id: "@@SYSID@@",
        sn.remote_key: "@@NUMBER@@",
        jira.remote_key: "@@KEY@@",
        str(row.data["title"]): "@@TITLE@@",
    }
    blob = json.dumps(out)
    for real, placeholder in subs.items():
        blob = blob.replace(real, placeholder)
    jira_id = json.dumps(jira.remote_id)  # as a JSON string: "10001"
    blob = blob.replace(jira_id, '"@@JIRAID@@"')
    return {"blob": blob}


def fill(
    database_url: str, templates: dict[str, Any], count: int, first_link_id: int, first: int = 0
) -> float:
    """Insert ``count`` incidents with two links each (and shadows, observations), numbered
    from ``first``, their links from ``first_link_id`` + 1; seconds."""
    import datetime as dt

    started = time.monotonic()
    db = store.make_engine(database_url)
    blob: str = templates["blob"]
    now = store.utcnow()
    link_id = first_link_id
    tables = {
        "incident": store.IncidentRow.__table__,  # type: ignore[attr-defined]
        "link": store.Link.__table__,  # type: ignore[attr-defined]
        "shadow": store.Shadow.__table__,  # type: ignore[attr-defined]
        "observation": store.Observation.__table__,  # type: ignore[attr-defined]
    }
    for start in range(first, first + count, BATCH):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        for i in range(start, min(first + count, start + BATCH)):
            incident_id = uuid.uuid4().hex
            filled = (
                blob.replace("@@INCIDENT@@", incident_id)
                .replace("@@SYSID@@", uuid.uuid4().hex)
                .replace("@@NUMBER@@", f"INC{2_000_000 + i}")
                .replace("@@KEY@@", f"OPS-{100_000 + i}")
                .replace("@@JIRAID@@", str(200_000 + i))
                .replace("@@TITLE@@", f"Checkout fails for some customers (bulk {i})")
            )
            data = json.loads(filled)
            rows["incident"].append(
                {"id": incident_id, "data": data["incident"],
                 **store.incident_columns(data["incident"]), "created_at": now,
                 "updated_at": now, "version": 1}
            )  # fmt: skip
            for part in data["links"].values():
                link_id += 1
                link = part["link"]
                rows["link"].append({**link, "id": link_id, "created_at": now})
                rows["shadow"].append({"link_id": link_id, **part["shadow"], "updated_at": now})
                obs = part["observation"]
                updated = obs["remote_updated_at"]
                rows["observation"].append(
                    {"system": link["system"], "instance": link["instance"],
                     "object_type": link["object_type"], "remote_id": link["remote_id"],
                     "version": obs["version"], "fields": obs["fields"], "source": obs["source"],
                     "observed_at": now,
                     "remote_updated_at": dt.datetime.fromisoformat(updated) if updated else None}
                )  # fmt: skip
        with store.session_scope(db) as s:
            for name in ("incident", "link", "shadow", "observation"):
                s.execute(insert(tables[name]), rows[name])
    db.dispose()
    return time.monotonic() - started


def _fill_main(args: tuple[str, dict[str, Any], int, int, int], conn: Any) -> None:
    conn.send(fill(*args))
    conn.close()


FILL_PROCESSES = 2  # the fill is CPU-bound (JSON, packing) and the service idles meanwhile


def fill_in_child(database_url: str, templates: dict[str, Any], count: int, first: int) -> float:
    """:func:`fill` in :data:`FILL_PROCESSES` processes of their own, each inserting its own
    share (its own incident numbers and link ids; SQLite takes their batches in turn);
    the seconds until the last one finished."""
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    share = -(-count // FILL_PROCESSES)
    children = []
    for k in range(FILL_PROCESSES):
        n = min(share, count - k * share)
        if n <= 0:
            break
        receiver, sender = ctx.Pipe(duplex=False)
        args = (database_url, templates, n, first + 2 * k * share, k * share)
        process = ctx.Process(target=_fill_main, args=(args, sender), daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    for process, receiver in children:
        receiver.recv()
        process.join(timeout=60)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def database_bytes(rig: Rig) -> tuple[int, dict[str, int]]:
    db = rig.runtime.db
    if db.dialect.name == "sqlite":
        path = Path(str(db.url.database))
        raw = sqlite3.connect(path)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            tables = {
                str(name): int(size)
                for name, size in raw.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
            }
        finally:
            raw.close()
        wal = path.with_name(path.name + "-wal")
        total = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return total, tables
    with db.connect() as c:
        total = int(c.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        tables = {
            str(name): int(size)
            for name, size in c.execute(
                text(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                )
            )
        }
    return total, tables


def bucket_bytes(n: int = 20_000) -> tuple[float, float]:
    """What the Jira connector keeps for per-issue write budgets (KeyedBuckets): bytes per issue
    while ``n`` issues were each written within the last refill time (the worst case), and what
    is left, per issue, once the buckets are full again (they are forgotten then)."""
    now = [0.0]
    buckets = KeyedBuckets(5.0, 10.0, clock=lambda: now[0])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        buckets.get(str(100_000 + i)).acquire()
    busy = tracemalloc.get_traced_memory()[0]
    now[0] += 10.0 / 5.0  # capacity / rate: every bucket is full again
    buckets.get("one more write")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (busy - before) / n, (after - before) / n


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def exercise(rig: Rig, sample: int, hooks: int) -> dict[str, float]:
    """Work the service over the full store; returns timings."""
    out: dict[str, float] = {}
    db = rig.runtime.db
    with store.session_scope(db, readonly=True) as s:
        ids = list(
            s.exec(select(store.IncidentRow.id).order_by(func.random()).limit(sample + hooks))
        )
        sn_links = list(
            s.exec(
                select(store.Link).where(
                    store.Link.system == "servicenow",
                    store.Link.incident_id.in_(ids[sample:]),  # type: ignore[attr-defined]
                )
            )
        )
        observations = {
            link.remote_id: store.latest_observation(
                s, system="servicenow", instance="default", object_type="incident",
                remote_id=link.remote_id,
            )
            for link in sn_links
        }  # fmt: skip
    before = rig.reconciled()
    t0 = time.monotonic()
    with store.session_scope(db) as s:
        for incident_id in ids[:sample]:
            mark_dirty(s, incident_key(incident_id), reason="bench")
    rig.quiet(timeout=600, settle=0.2)
    out["reconcile_seconds"] = time.monotonic() - t0
    t0 = time.monotonic()
    assert rig.service is not None
    with httpx.Client(base_url=rig.service.url, timeout=30) as client:
        for link in sn_links:
            obs = observations[link.remote_id]
            assert obs is not None
            record = {k: v for k, v in obs.fields.items() if not k.startswith("_")}
            record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
            body = json.dumps(
                {"table": "incident", "operation": "update", "sys_id": link.remote_id,
                 "record": record}
            )  # fmt: skip
            r = client.post(
                "/webhooks/servicenow",
                content=body,
                headers={
                    "X-ServiceNow-Secret": WEBHOOK_SECRETS["servicenow"],
                    "X-ServiceNow-Delivery": f"bench-{uuid.uuid4().hex}",
                },
            )
            r.raise_for_status()
        rig.quiet(timeout=600, settle=0.2)
        out["webhook_seconds"] = time.monotonic() - t0
        poll_all(db, rig.runtime.connectors)
        for path in ("/api/status", "/metrics", f"/api/incidents/{ids[0]}"):
            rig.api.get(path).raise_for_status()
    out["reconciled"] = rig.reconciled() - before
    with store.session_scope(db, readonly=True) as s:
        out["parked"] = len(store.open_parked(s))
    return out


def measure(
    links: int, database: str, database_url: str | None, worker_process: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"database": database, "links": links}
    with Rig(
        database_url=database_url, separate_simulators=True, worker_process=worker_process
    ) as rig:
        rig.open_p1("Checkout fails for some customers")
        wait_for(lambda: any("jira" in x for x in rig.links().values()), "the Jira issue", 60)
        rig.quiet()
        templates = _templates(rig)
        result["start"] = settle(rig)
        with store.session_scope(rig.runtime.db, readonly=True) as s:
            first = int(s.exec(select(func.max(store.Link.id))).one() or 0)
        result["fill_seconds"] = fill_in_child(rig.database_url, templates, links // 2, first)
        with store.session_scope(rig.runtime.db, readonly=True) as s:
            result["links_stored"] = int(s.exec(select(func.count()).select_from(store.Link)).one())
        result["filled"] = settle(rig)
        tracemalloc.start()
        sample = 200 if links <= 10_000 else 500
        result["timings"] = exercise(rig, sample=sample, hooks=sample // 2)
        result["sample"] = sample
        result["exercised"] = settle(rig)
        result["traced"], result["traced_peak"] = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["db_bytes"], result["tables"] = database_bytes(rig)
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    p.add_argument(
        "--workers-in-process",
        action="store_true",
        help="the poller and the workers in the service's process (run --workers-in-process)",
    )
    args = p.parse_args()
    split = not args.workers_in_process
    links = 10_000 if args.small else 100_000
    database = "postgresql" if args.postgres else "sqlite"
    settings = {
        "links": f"{links:,} ({links // 2:,} incidents x ServiceNow + Jira link), each with its"
        " shadow and its record's latest observation",
        "database": database + (" (fresh database)" if args.postgres else " (temp file)"),
        "service": (
            "HTTP in this process, 4 workers + poller in its worker process (as itsm-sync run);"
            " RSS is both processes'"
            if split
            else "HTTP + 4 workers + poller in this process (run --workers-in-process)"
        )
        + "; simulators in another",
    }
    extra = [] if split else ["--workers-in-process"]
    header("Memory per link", MODULE, args.small, settings, extra)
    if args.postgres:
        with PostgresDatabase() as pg:
            r = measure(links, database, pg.url, split)
    else:
        r = measure(links, database, None, split)
    n = r["links_stored"]
    total = {k: sum(r[k]) for k in ("start", "filled", "exercised")}
    growth = total["exercised"] - total["start"]
    mib = 1024 * 1024
    rows = [
        ["RSS at start (1 incident synced)", total["start"] / mib, "", ""],
        ["RSS after the fill (service idle)", total["filled"] / mib,
         (total["filled"] - total["start"]) / mib, (total["filled"] - total["start"]) / n],
        ["RSS after the exercise", total["exercised"] / mib, growth / mib, growth / n],
    ]  # fmt: skip
    if split:
        for i, name in enumerate(("HTTP process", "worker process")):
            grew = r["exercised"][i] - r["start"][i]
            rows.append([f"  of which the {name}", r["exercised"][i] / mib, grew / mib, grew / n])
    rows += [
        ["Python heap still allocated (tracemalloc"
         + (", the HTTP process)" if split else ")"), "", r["traced"] / mib, r["traced"] / n],
        ["  tracemalloc peak during the exercise", "", r["traced_peak"] / mib,
         r["traced_peak"] / n],
        ["database (file + WAL / pg_database_size)", "", r["db_bytes"] / mib, r["db_bytes"] / n],
    ]  # fmt: skip
    print(table(["", "MiB", "growth MiB", "bytes/link"], rows, f"{n:,} links in the store"))
    print()
    big = sorted(r["tables"].items(), key=lambda kv: -kv[1])[:8]
    print(
        table(
            ["table or index", "MiB", "bytes/link"],
            [[name, size / mib, size / n] for name, size in big],
            "Database by table (largest)",
        )
    )
    print()
    t = r["timings"]
    print(
        f"fill: {r['fill_seconds']:.1f}s in {FILL_PROCESSES} separate processes; "
        f"exercise: {int(t['reconciled'])} "
        f"reconciles: {r['sample']} queued at once, drained in {t['reconcile_seconds']:.1f}s; "
        f"{r['sample'] // 2} webhooks posted one by one and drained in "
        f"{t['webhook_seconds']:.1f}s; {int(t['parked'])} parked"
    )
    busy_bucket, idle_bucket = bucket_bytes()
    print(
        f"not reached by the exercise: the Jira connector's per-issue write buckets take"
        f" {busy_bucket:.0f} bytes per issue written in the last 2 s, and {idle_bucket:.1f} bytes"
        f" per issue once they are full again (forgotten)"
    )
    # The goal is set at 100k links; the growth is mostly fixed-size (caches), so a smaller
    # store shows a larger figure per link: --small reports it without a verdict.
    verdict = None if args.small else growth / n <= GOAL_BYTES
    finish(
        [
            Row("memory", f"RSS growth per link ({n:,} links, {database})",
                f"<= {GOAL_BYTES} B at 100k", f"{growth / n:.0f} B", verdict),
            Row("memory", "database bytes per link", "-", f"{r['db_bytes'] / n:,.0f} B", None),
            Row("memory", "Jira write bucket per issue written in the last 2 s", "-",
                f"{busy_bucket:.0f} B ({idle_bucket:.1f} B once full again)", None),
        ],
        args.json,
    )  # fmt: skip


if __name__ == "__main__":
    main()
