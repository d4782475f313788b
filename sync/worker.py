"""Workers: claim dirty keys and reconcile them, one worker per incident at a time.

Claims come from :mod:`sync.queue` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several
threads and several ``itsm-sync run`` processes share the work with nothing else between them.
A failure backs off that key; a fatal one has already parked its (incident, target) pair, and
the incident's other targets went on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from connectors.errors import ConnectorError
from sync import store
from sync.queue import (
    Claim,
    claim,
    claim_key,
    finish,
    incident_key,
    mark_dirty,
    next_due,
    parse_key,
    queue_depth,
    release,
    renew,
    retry_later,
)
from sync.reconcile import Reconciler

log = logging.getLogger("itsm_sync.worker")
# An idle worker looks at the queue at least this often, whatever it was told: rows queued by
# processes that cannot wake it (on SQLite: the CLI's `parked replay` and `public`, `run --role
# http`; a lost NOTIFY on PostgreSQL) are still found.
IDLE_RECHECK_SECONDS = 0.5
# How long an idle worker that is not the pool's timekeeper sleeps unless woken (a backstop).
IDLE_SAFETY_SECONDS = 30.0


class Wakeup:
    """Tells idle workers that work was queued, instead of having them poll.

    :meth:`notify` is called after a mark is committed (``sync.store.session_scope`` does it
    through the engine's ``on_queued`` hooks; the worker process does it for marks made in the
    HTTP process). It wakes one waiting worker per call and calls the ``also`` callbacks (e.g.
    "poke the worker process"). A worker reads :attr:`seq` *before* it looks at the queue and
    passes it to :meth:`wait`, which returns at once if anything was notified meanwhile: no
    wake-up is lost between looking and sleeping.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0
        self._closed = False
        self.also: list[Callable[[], None]] = []
        self.notified = 0  # how many times notify() was called (for tests and diagnostics)
        self.woken = 0  # how many waits ended because of a notify rather than the timeout

    @property
    def seq(self) -> int:
        return self._seq

    def notify(self, n: int = 1) -> None:
        self.nudge(n)
        with self._cond:
            self.notified += 1
        for callback in self.also:
            callback()

    def nudge(self, n: int = 1) -> None:
        """Wake ``n`` waiting workers of this process (nothing was queued: unlike
        :meth:`notify`, not counted and no ``also`` callbacks)."""
        with self._cond:
            self._seq += 1
            self._cond.notify(n)

    def wait(self, seen: int, timeout: float) -> bool:
        """Sleep until notified after ``seen`` was read, closed, or ``timeout`` s; True when
        woken by a notify (or closed)."""
        with self._cond:
            woken = self._cond.wait_for(lambda: self._seq != seen or self._closed, timeout)
            if woken:
                self.woken += 1
            return woken

    def close(self) -> None:
        """Wake every waiter for good (the pool is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


@functools.cache
def place() -> str:
    """Where a pid names one process: the host's name plus its boot and pid namespace.

    Containers may share a hostname (set by compose, or the host's with host networking) and
    each has pids of its own (pid 1 in each), so the hostname alone would let one container's
    restart judge, and take back, another's live claims."""
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host alone
        return host
    return f"{host}~{hashlib.sha256(f'{boot}/{namespace}'.encode()).hexdigest()[:8]}"


def worker_name() -> str:
    return f"{place()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Done:
    """How a key's work ended: retry in this many seconds (None: no), due again at once, and
    the incident to mark and take next (a record's)."""

    retry_in: float | None = None
    again: bool = False
    take: str | None = None


@dataclass
class Totals:
    reconciled: int = 0
    writes: int = 0
    conflicts: int = 0
    failures: int = 0
    parked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LeaseKeeper:
    """Renews the lease of the key a worker works on, every third of the lease, so that a long
    reconcile is never taken over (and done twice) by another worker.

    One thread per worker, while it works, not one per key: a thread started and joined for
    each key cost every key ~0.2 ms of CPU and a hand-over of the GIL before its work could
    begin. The thread ends after a third of the lease with nothing held (:func:`drain`'s
    workers leave none behind) and starts again with the next key.
    """

    def __init__(self, db: Engine, lease_seconds: float) -> None:
        self.db = db
        self.lease = lease_seconds
        self.renewals = 0
        self._cond = threading.Condition()
        self._held: Claim | None = None
        self._since = 0.0
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    def hold(self, claim: Claim) -> None:
        with self._cond:
            self._held, self._since = claim, time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
                self._thread.start()
            # No notify: the thread wakes at the old key's due time at the latest, which is
            # before the new key's, and waits again; a wake-up per key would cost a GIL
            # hand-over per key, the very thing this class is for.

    def drop(self, claim: Claim) -> None:
        with self._cond:
            if self._held is claim:
                self._held = None

    def _run(self) -> None:
        period = self.lease / 3
        while True:
            with self._cond:
                if self._held is None:
                    self._cond.wait(period)
                    if self._held is None:  # idle for a third of the lease: end
                        self._thread = None
                        return
                    continue
                held, due = self._held, self._since + period
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue  # due, or another key held meanwhile: look again
                self._since = time.monotonic()
            try:
                with store.session_scope(self.db) as s:
                    kept = renew(s, held, lease_seconds=self.lease)
            except Exception:  # the database went away for a moment: try again next period
                log.exception("renewing the lease on %s failed", held.key)
                continue
            with self._cond:
                self.renewals += 1
                if not kept and self._held is held:  # not finished meanwhile: lost
                    log.warning("lost the lease on %s", held.key, extra={"key": held.key})
                    self._held = None


class Worker:
    def __init__(self, reconciler: Reconciler, *, lease_seconds: float = 120.0) -> None:
        self.reconciler = reconciler
        self.db: Engine = reconciler.db
        self.name = worker_name()
        self.lease = lease_seconds
        self.totals = Totals()
        # The next key, claimed in the transaction that finished the last one (one write
        # transaction per key fewer while there is work); given back by release_next().
        self._next: Claim | None = None
        self.keeper = LeaseKeeper(self.db, lease_seconds)

    chain = True  # claim the next key while finishing one

    def step(self) -> bool:
        """Claim and handle one key; False when nothing was due."""
        return self.step_or_idle() == 0.0

    def step_or_idle(self, claimed: Callable[[], None] | None = None) -> float:
        """Claim and handle one key and return 0; or, when nothing is due, return how many
        seconds until the earliest waiting key is (``inf``: the queue holds none).

        ``claimed`` is called when a due key was claimed, before it is handled (the pool wakes
        another worker then, for any other key that is due)."""
        if self._next is not None:
            held, self._next = self._next, None
            self.handle(held)
            return 0.0
        now = store.utcnow()
        with store.session_scope(self.db, readonly=True) as s:
            due = next_due(s, now=now)  # a cheap read: idle workers take no write lock
        if due is None:
            return math.inf
        if due > now:
            return (due - now).total_seconds()
        with store.session_scope(self.db, single=True) as s:  # one UPDATE ... RETURNING
            claims = claim(s, self.name, limit=1, lease_seconds=self.lease)
        if not claims:
            return 0.0001  # another worker took it first: look again (almost) at once
        if claimed is not None:
            claimed()
        self.handle(claims[0])
        return 0.0

    def handle(self, held: Claim) -> None:
        self.keeper.hold(held)
        try:
            self._handle(held)
        finally:
            self.keeper.drop(held)

    def _handle(self, held: Claim) -> None:
        try:
            result = self._work(held.key)
        except store.StaleIncident:
            with store.session_scope(self.db) as s:
                release(s, held)  # someone saved the incident meanwhile: again, from the newest
            return
        except Exception as exc:  # one bad key must not stop the worker; it backs off
            delay = min(300.0, 2.0 * 2 ** min(held.attempts, 7))
            log.exception(
                "reconciling %s failed; again in %.0fs", held.key, delay, extra={"key": held.key}
            )
            with self.totals.lock:
                self.totals.failures += 1
            with store.session_scope(self.db) as s:
                retry_later(s, held, delay=delay, error=f"{type(exc).__name__}: {exc}")
            return
        with store.session_scope(self.db) as s:
            if result.again:  # a write's answer may hold someone's edit: due again, now
                release(s, held)
            elif result.retry_in is not None:
                retry_later(s, held, delay=result.retry_in, error="a target failed retriably")
            else:
                finish(s, held)
            take = incident_key(result.take) if result.take else None
            if take is not None:
                mark_dirty(s, take, reason=f"from {held.key}")
            if self.chain:
                # The incident a record belongs to first (it was just adopted, or its record
                # changed): this worker goes on with it rather than queueing it behind every
                # other record, as a backfill's thousands would be.
                claimed = claim_key(s, self.name, take, lease_seconds=self.lease) if take else None
                if claimed is None:
                    found = claim(s, self.name, limit=1, lease_seconds=self.lease)
                    claimed = found[0] if found else None
                self._next = claimed

    def release_next(self) -> None:
        """Give back a key claimed ahead but not worked on (the worker is stopping)."""
        held, self._next = self._next, None
        if held is not None:
            with store.session_scope(self.db) as s:
                release(s, held)

    def _work(self, key: str) -> Done:
        kind, *rest = parse_key(key)
        if kind == "incident":
            retry_in, again = self._incident(rest[0])
            return Done(retry_in, again)
        return self._remote(key, kind, *rest)

    def _incident(self, incident_id: str) -> tuple[float | None, bool]:
        started = time.monotonic()
        outcome = self.reconciler.reconcile(incident_id)
        log.info(
            "reconciled incident %s: %d write(s)", incident_id, outcome.writes,
            extra={"incident_id": incident_id, "writes": outcome.writes,
                   "parked": outcome.parked,
                   "ms": round((time.monotonic() - started) * 1000, 1)},
        )  # fmt: skip
        with self.totals.lock:
            self.totals.reconciled += 1
            self.totals.writes += outcome.writes
            self.totals.conflicts += outcome.conflicts
            self.totals.parked.update(f"{incident_id}:{t}" for t in outcome.parked)
        return outcome.retry_in, outcome.again

    def _remote(
        self, key: str, kind: str, system: str, instance: str, object_type: str, remote_id: str
    ) -> Done:
        for handler in self.reconciler.handlers:
            # Records that stand for something else than an incident (a planned change shown
            # as maintenance on the status page).
            try:
                handler(system, instance, object_type, remote_id)
            except ConnectorError as exc:
                if exc.retriable:
                    return Done(5.0)
                log.warning("%s: %s", key, exc)
        for resolver in self.reconciler.resolvers:
            # A record that belongs to an incident without being one (a change request, a
            # postmortem review, an action item): wake the incident.
            owner = resolver(system, object_type, remote_id)
            if owner is not None:
                return Done(take=owner)
        connector = self.reconciler.connectors.get((system, instance))
        if connector is None:
            log.warning("no connector for %s/%s; dropping %s", system, instance, key)
            return Done()
        with store.session_scope(self.db, readonly=True) as s:
            link = store.find_link(
                s, system=system, instance=instance, object_type=object_type, remote_id=remote_id
            )
            known = store.latest_observation(
                s, system=system, instance=instance, object_type=object_type, remote_id=remote_id
            )
        seen: tuple[store.Link | None, store.Observation | None] | None = (link, known)
        if known is None or (link is not None and kind == "remote"):
            # A trigger without the record (a Jira comment event), or a record we never saw:
            # read it now. A record stored with its mark ("stored:", e.g. the created-event of
            # a record we made, delivered before our link was committed) is not read again.
            try:
                record = connector.get(object_type, remote_id)
            except ConnectorError as exc:
                if exc.retriable:
                    return Done(5.0)
                log.warning("cannot read %s: %s", key, exc)
                return Done()
            self.reconciler.observe(record, source="poll")
            seen = None  # adopt reads what was just stored
        # Linked (or found linked): the incident is marked, and taken next by this worker,
        # in the transaction that finishes this key (a crash before it leaves this key's
        # claim, whose retry finds the link and gets here again).
        incident_id = self.reconciler.adopt(
            system, instance, object_type, remote_id, mark=False, seen=seen
        )
        return Done(take=incident_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not reaped yet: e.g. a worker process whose parent was killed)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reclaim_orphans(db: Engine) -> int:
    """Give back claims held by workers of this :func:`place` whose process is gone (killed
    -9), so a restart picks their keys up now instead of when the lease runs out. Claims of
    other hosts and containers are left to their leases."""
    here = place()
    freed = 0
    with store.session_scope(db) as s:
        for row in s.exec(
            select(store.Dirty).where(col(store.Dirty.claimed_by).is_not(None))
        ).all():
            owner, _, rest = (row.claimed_by or "").partition(":")
            pid = rest.partition(":")[0]
            if owner == here and pid.isdigit() and not _alive(int(pid)):
                row.claimed_by, row.claimed_until, row.due_at = None, None, store.utcnow()
                freed += 1
    if freed:
        log.info("took back %d claim(s) of workers that died", freed)
    return freed


def drain(
    reconciler: Reconciler, *, threads: int = 4, timeout: float = 300.0, lease: float = 120.0
) -> Totals:
    """Work until nothing is due (``sync --once``); keys backing off for longer are left."""
    workers = [Worker(reconciler, lease_seconds=lease) for _ in range(threads)]
    deadline = time.monotonic() + timeout

    def run(worker: Worker) -> None:
        quiet = 0
        while time.monotonic() < deadline:
            if worker.step():
                quiet = 0
                continue
            quiet += 1
            if quiet >= 3:
                return
            time.sleep(0.05)

    pool = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()) + 1)
    for w, t in zip(workers, pool, strict=True):
        if not t.is_alive():
            w.release_next()
    return _sum_totals(workers)


def _sum_totals(workers: list[Worker]) -> Totals:
    totals = Totals()
    for w in workers:
        with w.totals.lock:
            totals.reconciled += w.totals.reconciled
            totals.writes += w.totals.writes
            totals.conflicts += w.totals.conflicts
            totals.failures += w.totals.failures
            totals.parked |= w.totals.parked
    return totals


def _own_connection(db: Engine) -> Any:
    """A psycopg connection of its own (not the pool's), in autocommit: LISTEN and NOTIFY."""
    import psycopg

    args, kwargs = db.dialect.create_connect_args(db.url)
    return psycopg.connect(*args, **{**kwargs, "autocommit": True})


class QueueListener:
    """PostgreSQL: ``LISTEN itsm_sync_queue`` on a connection of its own and notify
    :class:`Wakeup` for every ``NOTIFY`` (sent by ``sync.store.session_scope`` with each commit
    that queued work, in any process on any machine). Reconnects after a failure; while it is
    down, the workers' periodic look at the queue still finds everything."""

    def __init__(self, db: Engine, wakeup: Wakeup) -> None:
        self.db = db
        self.wakeup = wakeup
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="queue-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with _own_connection(self.db) as conn:
                    conn.execute(f"LISTEN {store.QUEUE_CHANNEL}")
                    self.wakeup.notify()  # anything queued while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wakeup.notify()
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); again in 5 s", store.QUEUE_CHANNEL, exc)
                self._stop.wait(5.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def notify_workers(db: Engine) -> None:
    """PostgreSQL: one ``NOTIFY itsm_sync_queue`` now, for a short-lived command that queued
    work (``parked replay``, ``public``), so the running service's workers, wherever they run,
    pick it up at once. A hint: a failure is logged, never raised. SQLite: nothing (the
    workers look at the queue every 0.5 s)."""
    if db.dialect.name != "postgresql":
        return
    try:
        with db.connect() as connection:
            connection.exec_driver_sql(f"NOTIFY {store.QUEUE_CHANNEL}")
            connection.commit()
    except SQLAlchemyError as exc:
        log.warning("NOTIFY %s failed (%s)", store.QUEUE_CHANNEL, exc)


class QueueNotifier:
    """PostgreSQL: ``NOTIFY itsm_sync_queue`` after work was queued, from a thread with a
    connection of its own, so that the listening workers of every instance wake at once.

    :meth:`poke` is an ``on_queued`` hook (it runs after the commit that queued the work): it
    only sets a flag, and the thread sends one ``NOTIFY`` for every poke since its last one. The
    transaction that queued the work (a webhook's, whose answer waits for it) never waits for
    the NOTIFY: sent inside it, the NOTIFY made webhook answers on PostgreSQL wait up to
    seconds on a busy machine (docs/performance.md §3). A NOTIFY that fails is logged and
    dropped: it is a hint, and idle workers look at the queue every 0.5 s anyway.
    """

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.sent = 0  # NOTIFYs sent (for tests and diagnostics)
        self._poked = False
        self._due = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        self._poked = True
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="queue-notifier", daemon=True
                    )
                    self._thread.start()
        self._due.set()

    def _run(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if not self._poked:
                    if self._stop.is_set():
                        return
                    continue
                self._poked = False  # a poke from now on makes one more NOTIFY
                try:
                    if conn is None:
                        conn = _own_connection(self.db)
                    conn.execute(f"NOTIFY {store.QUEUE_CHANNEL}")
                    self.sent += 1
                except psycopg.Error as exc:
                    log.warning("NOTIFY %s failed (%s)", store.QUEUE_CHANNEL, exc)
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(1.0)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        """Stop after sending the NOTIFY of a poke still waiting (a CLI command that queued
        work and exits right after still wakes the workers)."""
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class WorkerPool:
    """N workers in threads until stopped (``itsm-sync run``).

    Idle workers sleep until :attr:`wakeup` is notified (a mark was committed). One of them,
    the *timekeeper*, sleeps only until the earliest waiting key is due (a debounced mark) or
    for :data:`IDLE_RECHECK_SECONDS`, whichever comes first; a worker whose key falls due
    sooner than any timekeeper's becomes one too. A worker that claims a due key wakes one
    other, which takes the next due key or becomes the timekeeper. So a key falls due and one
    worker looks, not every idle one (each idle worker used to sleep until the due time it
    last saw or its recheck: eight idle workers looked 80 times a second, and keys marked
    together waited for the others' recheck). The others also look on their own every
    :data:`IDLE_SAFETY_SECONDS`, a backstop that is never needed.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        threads: int,
        lease: float,
        wakeup: Wakeup | None = None,
        recheck: float = IDLE_RECHECK_SECONDS,
    ) -> None:
        self.workers = [Worker(reconciler, lease_seconds=lease) for _ in range(threads)]
        self.wakeup = wakeup or Wakeup()
        self.recheck = recheck
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timing = threading.Lock()
        self._targets: list[float] = []  # when each timekeeper wakes (time.monotonic)

    def start(self) -> None:
        self.wakeup.reopen()
        for i, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=self._loop, args=(worker,), name=f"worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _loop(self, worker: Worker) -> None:
        while not self._stop.is_set():
            seen = self.wakeup.seq  # before looking: a mark committed after this wakes us
            try:
                idle = worker.step_or_idle(claimed=self.wakeup.nudge)
            except Exception:  # the database went away for a moment: keep trying
                log.exception("worker step failed")
                self._stop.wait(1.0)
                continue
            if idle > 0:
                self._idle(seen, idle)
        try:
            worker.release_next()
        except Exception:  # the database is gone: the lease runs out instead
            log.exception("giving back a claimed key failed")

    def _idle(self, seen: int, idle: float) -> None:
        """Sleep: as a timekeeper until ``idle`` s (or the recheck) have passed, unless
        another timekeeper wakes by then; else until woken."""
        wait = min(idle + 0.001, self.recheck)  # +1 ms: due_at <= now must hold on waking
        target = time.monotonic() + wait
        with self._timing:
            keeper = not any(t <= target for t in self._targets)
            if keeper:
                self._targets.append(target)
        if not keeper:
            self.wakeup.wait(seen, IDLE_SAFETY_SECONDS)
            return
        try:
            self.wakeup.wait(seen, wait)
        finally:
            with self._timing:
                self._targets.remove(target)

    def stop(self) -> None:
        self._stop.set()
        self.wakeup.close()
        for thread in self._threads:
            thread.join(timeout=30)

    def totals(self) -> Totals:
        """The workers' totals, added up."""
        return _sum_totals(self.workers)

    def depth(self) -> int:
        with store.session_scope(self.workers[0].db) as s:
            return queue_depth(s)
