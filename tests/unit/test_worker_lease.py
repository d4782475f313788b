"""A long reconcile keeps its lease: no other worker takes the incident meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sync import store
from sync.queue import claim, incident_key, mark_dirty
from sync.reconcile import Outcome
from sync.worker import Worker


class SlowReconciler:
    """Stands in for the engine: takes longer than several leases, counts its runs."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.connectors: dict[Any, Any] = {}
        self.resolvers: list[Any] = []
        self.runs = 0

    def reconcile(self, incident_id: str) -> Outcome:
        self.runs += 1
        time.sleep(1.5)
        return Outcome()


def test_a_long_reconcile_is_not_taken_over(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'lease.db'}")
    store.migrate(db)
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("i1"))
    engine = SlowReconciler(db)
    worker = Worker(engine, lease_seconds=0.3)  # type: ignore[arg-type]
    done = threading.Thread(target=worker.step)
    done.start()
    taken: list[object] = []
    deadline = time.monotonic() + 1.3
    time.sleep(0.2)
    while time.monotonic() < deadline:  # well past the 0.3 s lease
        with store.session_scope(db) as s:
            taken += claim(s, "intruder", limit=1, lease_seconds=5)
        time.sleep(0.1)
    done.join()
    assert taken == [], "another worker took the incident while it was being reconciled"
    assert engine.runs == 1
    with store.session_scope(db) as s:
        assert s.get(store.Dirty, incident_key("i1")) is None  # finished: off the queue
