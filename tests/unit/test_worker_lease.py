"""A long reconcile keeps its lease: no other worker takes the incident meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlmodel import func, select

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


class QuickReconciler(SlowReconciler):
    def reconcile(self, incident_id: str) -> Outcome:
        self.runs += 1
        return Outcome()


def test_one_lease_thread_per_worker_not_one_per_key(tmp_path: Path) -> None:
    """A thread started and joined for every key cost each key a GIL hand-over before its work
    began: the keeper is one thread for the worker's keys, and it ends once the worker idles."""
    db = store.make_engine(f"sqlite:///{tmp_path / 'keeper.db'}")
    store.migrate(db)
    with store.session_scope(db) as s:
        for n in range(30):
            mark_dirty(s, incident_key(f"i{n}"))
    engine = QuickReconciler(db)
    worker = Worker(engine, lease_seconds=0.6)  # type: ignore[arg-type]
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        while worker.step():
            pass
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert engine.runs == 30
    assert started == ["lease"], started  # the old code: 30 threads, one per key
    deadline = time.monotonic() + 3
    while worker.keeper.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.keeper.running, "the lease thread outlived the work"
    with store.session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(store.Dirty)).one() == 0


def test_the_keeper_renews_every_third_of_the_lease(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'renew.db'}")
    store.migrate(db)
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("i1"))
    engine = SlowReconciler(db)  # 1.5 s of work
    worker = Worker(engine, lease_seconds=0.6)  # type: ignore[arg-type]
    assert worker.step()
    assert 4 <= worker.keeper.renewals <= 9, worker.keeper.renewals  # ~1.5 / 0.2
