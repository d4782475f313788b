"""The composition root: settings -> database, connectors, mappings, engine, poller, workers."""

from __future__ import annotations

import getpass
import logging
import signal
import socket
import threading
from typing import Any

from config.settings import Settings
from connectors.base import Connector
from connectors.registry import build_connectors
from mapping.registry import MappingSet, Reloader
from mapping.spec import Mapping, MappingFileError
from postmortem_tracker.tracker import Tracker
from sync import store
from sync.poller import Poller
from sync.reconcile import Reconciler
from sync.worker import WorkerPool, reclaim_orphans

log = logging.getLogger("itsm_sync.service")


class Runtime:
    """Everything one ``itsm-sync`` process runs, built from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        connectors: dict[tuple[str, str], Connector] | None = None,
    ) -> None:
        self.settings = settings
        self.db = store.make_engine(settings.database_url)
        store.migrate(self.db)
        self.connectors = connectors or build_connectors(settings)
        self.mapping_problems: str = ""
        self.reloader = Reloader(
            settings.mappings_dir, on_accept=self._accepted, on_reject=self._rejected
        )
        self._record_current()
        self.reconciler = Reconciler(self.db, self.connectors, lambda: self.mappings, settings.sync)
        self.tracker = Tracker(self.db, self.connectors, settings.postmortem)
        self.reconciler.tracker = self.tracker
        self.reconciler.resolvers.append(self.tracker.owner_of)
        reclaim_orphans(self.db)
        self.poller: Poller | None = None
        self.pool: WorkerPool | None = None

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
            versions = store.mapping_versions(s, system=mapping.system, instance=mapping.instance)
            if versions and versions[-1].digest == mapping.digest:
                return
            store.add_mapping_version(
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

    def start(self, *, poll: bool = True, workers: bool = True) -> None:
        self.reloader.start()
        if poll:
            self.poller = Poller(self.db, self.connectors, self.settings.sync.poll_interval_seconds)
            self.poller.start()
        if workers:
            self.pool = WorkerPool(
                self.reconciler,
                threads=self.settings.sync.workers,
                lease=self.settings.sync.lease_seconds,
            )
            self.pool.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, *_: Any) -> None:
        log.info("SIGHUP: reloading mappings")
        self.reloader.check(force=True)

    def stop(self) -> None:
        self.reloader.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.pool is not None:
            self.pool.stop()
        for connector in self.connectors.values():
            close = getattr(connector, "close", None)
            if close is not None:
                close()
        self.db.dispose()
