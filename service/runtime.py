"""The composition root: settings -> database, connectors, mappings, engine, poller, workers."""

from __future__ import annotations

import gc
import getpass
import logging
import os
import signal
import socket
import threading
from typing import Any, Protocol

from config.settings import Settings
from connectors.base import Connector
from connectors.registry import build_connectors
from mapping.registry import MappingSet, Reloader
from mapping.spec import Mapping, MappingFileError
from postmortem_tracker.tracker import Tracker
from sync import store
from sync.cadence import CadenceLoop, OverdueGauge
from sync.maintenance import Maintenance
from sync.poller import Poller
from sync.reconcile import Reconciler
from sync.retention import PruneLoop
from sync.worker import (
    QueueListener,
    QueueNotifier,
    Totals,
    Wakeup,
    WorkerPool,
    reclaim_orphans,
)


class ChildWorkers(Protocol):
    """The poller and workers running in a process of their own, as this process's Runtime
    uses them (:class:`service.supervisor.WorkerProcess`, which the caller makes and starts:
    the supervisor builds the child's Runtime, so this module does not import it)."""

    @property
    def ready_pid(self) -> int | None: ...  # the (first) child's pid once it said it is ready

    @property
    def deaths(self) -> int: ...  # children that died and were replaced

    @property
    def ready_pids(self) -> list[int | None]: ...  # each child's, None until it is ready

    def poke(self) -> None: ...

    def reload(self) -> None: ...

    def health(self) -> tuple[bool, str]: ...

    def stats(self, timeout: float = 2.0) -> dict[str, Any] | None: ...

    def stop(self) -> None: ...


log = logging.getLogger("itsm_sync.service")


# What a worker process reports of its work (:meth:`Runtime.local_stats`), added up across
# processes; wake-ups are each process's own.
WORK_COUNTS = ("reconciled", "writes", "conflicts", "failures")


def add_stats(into: dict[str, Any], one: dict[str, Any], counts: tuple[str, ...]) -> None:
    """Add one process's :meth:`Runtime.local_stats` to ``into``: the ``counts`` summed, remote
    calls and rate-limit waits summed by label."""
    for key in counts:
        into[key] = into.get(key, 0) + one.get(key, 0)
    for key in ("calls", "rate_waits"):
        merged = dict(into.get(key, {}))
        for label, n in one.get(key, {}).items():
            merged[label] = merged.get(label, 0) + n
        into[key] = merged


def settle_gc() -> None:
    """Once start-up is done: collect, then move everything alive into the permanent
    generation (``gc.freeze``), so that later full collections don't walk the tens of
    thousands of long-lived objects (modules, mappings, the ORM's metadata) every time."""
    gc.collect()
    gc.freeze()


class Runtime:
    """Everything one ``itsm-sync`` process runs, built from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        connectors: dict[tuple[str, str], Connector] | None = None,
    ) -> None:
        self.settings = settings
        # A pooled connection for each worker thread, the poller and a few web requests.
        self.db = store.make_engine(
            settings.database_url, pool_size=settings.sync.workers + store.POOL_SIZE
        )
        store.migrate(self.db)
        self.connectors = connectors or build_connectors(settings)
        self.mapping_problems: str = ""
        self._overdue: OverdueGauge | None = None
        self.reloader = Reloader(
            settings.mappings_dir, on_accept=self._accepted, on_reject=self._rejected
        )
        self._record_current()
        self.reconciler = Reconciler(self.db, self.connectors, lambda: self.mappings, settings.sync)
        self.tracker = Tracker(self.db, self.connectors, settings.postmortem)
        self.reconciler.tracker = self.tracker
        self.reconciler.resolvers.append(self.tracker.owner_of)
        self.maintenance = Maintenance(
            self.db, self.connectors, lambda: self.mappings, self.reconciler.context
        )
        self.reconciler.handlers.append(self.maintenance.handle)
        reclaim_orphans(self.db)
        self.poller: Poller | None = None
        self.cadence: CadenceLoop | None = None
        self.pruner: PruneLoop | None = None
        self.pool: WorkerPool | None = None
        self.listener: QueueListener | None = None
        self.worker_process: ChildWorkers | None = None
        # Every commit that queued work (a webhook, a poll, an API call) wakes idle workers:
        # this process's, the worker process's (through the supervisor) and, on PostgreSQL
        # with sync.pg_notify, every listening process's (NOTIFY, sent after the commit).
        self.wakeup = Wakeup()
        hooks = store.engine_hooks(self.db)
        hooks.on_queued.append(self.wakeup.notify)
        self.pg_notify = self.db.dialect.name == "postgresql" and settings.sync.pg_notify
        self.notifier: QueueNotifier | None = None
        if self.pg_notify:
            self.notifier = QueueNotifier(self.db)
            hooks.on_queued.append(self.notifier.poke)

    @property
    def mappings(self) -> MappingSet:
        return self.reloader.current

    # -- mapping versions ---------------------------------------------------------------------

    def _who(self) -> str:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return f"{user}@{socket.gethostname()}"

    def _record_current(self) -> None:
        """Store the version of each mapping in use, if it is not the latest stored one."""
        for mapping in self.mappings:
            self._store_version(mapping, ["(loaded at start)"])

    def _store_version(self, mapping: Mapping, changes: list[str]) -> None:
        with store.session_scope(self.db) as s:
            store.record_mapping_version(
                s, system=mapping.system, instance=mapping.instance, digest=mapping.digest,
                source=mapping.source, diff="\n".join(changes), accepted_by=self._who(),
            )  # fmt: skip

    def _accepted(self, mapping: Mapping, changes: list[str]) -> None:
        self.mapping_problems = ""
        self._store_version(mapping, changes)
        log.info("mapping %s/%s now in use: %s", mapping.system, mapping.instance, changes)

    def _rejected(self, error: MappingFileError) -> None:
        self.mapping_problems = str(error)

    # -- life cycle ---------------------------------------------------------------------------

    def start(
        self,
        *,
        poll: bool = True,
        workers: bool = True,
        worker_process: ChildWorkers | None = None,
    ) -> None:
        """Start the mapping reloader and, as asked, the poller and the workers: in this
        process, or in the ``worker_process`` given (:class:`service.supervisor.WorkerProcess`,
        started by the caller; ``itsm-sync run``'s default starts it before this process
        builds its own Runtime, so the two start-ups overlap)."""
        self.reloader.start()
        if worker_process is not None:
            self.worker_process = worker_process
            self.wakeup.also.append(self.worker_process.poke)
        else:
            if poll:
                interval = self.settings.sync.poll_interval_seconds
                self.poller = Poller(self.db, self.connectors, interval)
                self.poller.start()
                self.cadence = CadenceLoop(self.db, self.settings.comms)
                self.cadence.start()
                self.pruner = PruneLoop(self.db, self.settings.retention)
                self.pruner.start()
            if workers:
                self.pool = WorkerPool(
                    self.reconciler,
                    threads=self.settings.sync.workers,
                    lease=self.settings.sync.lease_seconds,
                    wakeup=self.wakeup,
                )
                self.pool.start()
                if self.pg_notify:
                    self.listener = QueueListener(self.db, self.wakeup)
                    self.listener.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, *_: Any) -> None:
        log.info("SIGHUP: reloading mappings")
        self.reloader.check(force=True)
        if self.worker_process is not None:
            self.worker_process.reload()

    # -- what the HTTP side reports -----------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(healthy, what to say) about the workers: the worker process must be running."""
        if self.worker_process is not None:
            return self.worker_process.health()
        if self.pool is not None:
            return True, "ok (in this process)"
        return True, "none in this process"

    @property
    def overdue(self) -> OverdueGauge:
        """How many open incidents owe an update, counted in the background (for ``/metrics``
        and ``/api/status``); a new one when a reload changed the ``comms`` settings."""
        comms = self.settings.comms
        if self._overdue is None or self._overdue.settings is not comms:
            self._overdue = OverdueGauge(self.db, comms)
        return self._overdue

    def local_stats(self) -> dict[str, Any]:
        """This process's worker totals and remote calls (what the worker process reports)."""
        from connectors.http import CALLS, RATE_WAITS

        totals = self.pool.totals() if self.pool is not None else Totals()
        return {
            "pid": os.getpid(),
            "reconciled": totals.reconciled,
            "writes": totals.writes,
            "conflicts": totals.conflicts,
            "failures": totals.failures,
            "calls": CALLS.snapshot(),
            "rate_waits": RATE_WAITS.snapshot(),
            "wakeups": self.wakeup.notified,  # marks this process heard of
            "woken": self.wakeup.woken,  # idle workers woken by one (not by their timer)
        }

    def stats(self) -> dict[str, Any]:
        """Worker totals and remote calls of this process and its worker process together
        (for ``/metrics``); ``worker_process`` says whether the latter answered."""
        out = self.local_stats()
        out["worker_process"] = None
        if self.worker_process is not None:
            child = self.worker_process.stats()
            out["worker_process"] = child is not None
            if child is not None:
                add_stats(out, child, WORK_COUNTS)
        return out

    def stop(self) -> None:
        self.reloader.stop()
        if self.worker_process is not None:
            self.worker_process.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.cadence is not None:
            self.cadence.stop()
        if self.pruner is not None:
            self.pruner.stop()
        if self.pool is not None:
            self.pool.stop()
        if self.listener is not None:
            self.listener.stop()
        if self.notifier is not None:
            store.engine_hooks(self.db).on_queued.remove(self.notifier.poke)
            self.notifier.stop()
        for connector in self.connectors.values():
            close = getattr(connector, "close", None)
            if close is not None:
                close()
        self.db.dispose()
