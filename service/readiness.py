"""``/readyz``: ready means the database answers, each configured system answers with valid
credentials, the workers run and the oldest due change is younger than
``health.max_queue_age_seconds``. Each check is in the answer; failing changes, targets in
backoff, parked items and mapping problems are warnings (they need someone, but the service
works)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from connectors.base import Preflight, Probe
from service.domain.health import stuck
from service.errors_cli import describe
from service.runtime import Runtime
from sync import store


class Readiness:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.clock = clock
        self._signins: dict[tuple[str, str], tuple[float, Probe]] = {}
        self._lock = threading.Lock()

    def _signin(self, key: tuple[str, str], connector: Preflight) -> Probe:
        ttl = self.runtime.settings.health.remote_check_seconds
        with self._lock:
            cached = self._signins.get(key)
        if cached is not None and self.clock() - cached[0] < ttl:
            return cached[1]
        try:
            probe = connector.signin()
        except Exception as exc:  # a probe never breaks the endpoint
            probe = Probe(f"{key[0]}/{key[1]}", False, describe(exc))
        with self._lock:
            self._signins[key] = (self.clock(), probe)
        return probe

    def report(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        warnings: list[str] = []
        try:
            with store.session_scope(self.runtime.db, readonly=True) as s:
                data = stuck(s)
            checks["database"] = {"ok": True}
        except Exception as exc:
            data = None
            checks["database"] = {"ok": False, "detail": describe(exc)}
        healthy, workers = self.runtime.health()
        checks["workers"] = {"ok": healthy, "detail": workers}
        if self.runtime.worker_process is not None:  # run's worker process (None: not ready)
            child = self.runtime.worker_process
            checks["workers"]["pid"] = child.ready_pid if healthy else None
            checks["workers"]["pids"] = child.ready_pids  # each of sync.worker_processes
        for key, connector in sorted(self.runtime.connectors.items()):
            if isinstance(connector, Preflight):
                probe = self._signin(key, connector)
                entry: dict[str, Any] = {"ok": probe.ok, "detail": probe.what}
                if probe.detail:
                    entry["detail"] = f"{probe.what}: {probe.detail}"
                checks[f"{key[0]}/{key[1]}"] = entry
        if data is not None:
            limit = self.runtime.settings.health.max_queue_age_seconds
            age = data["oldest_change_age_seconds"]
            checks["queue"] = {
                "ok": age <= limit,
                "oldest_change_age_seconds": round(age, 1),
                "max_seconds": limit,
            }
            if data["failing"]:
                first = data["failing_examples"][0]
                warnings.append(
                    f"{data['failing']} change(s) failing to apply, e.g. {first['key']} after "
                    f"{first['attempts']} attempt(s): {first['error']}"
                )
            for target, info in data["backoff"].items():
                warnings.append(
                    f"{target}: {info['incidents']} incident(s) in backoff "
                    f"(next try within {info['max_wait_seconds']:.0f} s)"
                )
            if data["parked"]:
                warnings.append(f"{data['parked']} parked: see `itsm-sync parked list`")
        if self.runtime.mapping_problems:
            warnings.append(f"mappings: {self.runtime.mapping_problems}")
        ready = all(c["ok"] for c in checks.values())
        return ready, {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "warnings": warnings,
        }
