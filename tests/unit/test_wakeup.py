"""Idle workers wake when work is queued (and when a debounced key falls due), instead of
polling; commits that queue work tell the engine's hooks; SQLite writers of one process take
turns on a Python lock."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from sync import store
from sync import worker as worker_module
from sync.queue import claim, incident_key, mark_dirty, next_due
from sync.reconcile import Outcome
from sync.worker import Wakeup, WorkerPool

RECHECK = 5.0  # the pools below look at the queue on their own only this rarely


class CountingReconciler:
    """Stands in for the engine: records when each incident was reconciled."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.connectors: dict[Any, Any] = {}
        self.resolvers: list[Any] = []
        self.done: dict[str, float] = {}
        self.event = threading.Event()

    def reconcile(self, incident_id: str) -> Outcome:
        self.done[incident_id] = time.monotonic()
        self.event.set()
        return Outcome()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'wake.db'}")
    store.migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pool(db: Engine) -> Iterator[tuple[WorkerPool, CountingReconciler]]:
    """Two idle workers whose own periodic look is 5 s apart, woken by the engine's commits
    (wired as ``Runtime`` wires them)."""
    engine = CountingReconciler(db)
    wakeup = Wakeup()
    store.engine_hooks(db).on_queued.append(wakeup.notify)
    workers = WorkerPool(
        engine,  # type: ignore[arg-type]
        threads=2,
        lease=30,
        wakeup=wakeup,
        recheck=RECHECK,
    )
    workers.start()
    time.sleep(0.3)  # both have looked at the empty queue and sleep
    try:
        yield workers, engine
    finally:
        workers.stop()


def test_wakeup_wait_returns_at_once_for_a_notify_made_after_seq_was_read() -> None:
    wakeup = Wakeup()
    seen = wakeup.seq
    wakeup.notify()  # between "looked at the queue" and "sleep": must not be lost
    started = time.monotonic()
    assert wakeup.wait(seen, timeout=5.0) is True
    assert time.monotonic() - started < 1.0
    assert wakeup.wait(wakeup.seq, timeout=0.05) is False  # nothing new: times out


def test_a_committed_mark_wakes_an_idle_pool(
    db: Engine, pool: tuple[WorkerPool, CountingReconciler]
) -> None:
    workers, engine = pool
    woken_before = workers.wakeup.woken
    marked = time.monotonic()
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("i1"))
    assert engine.event.wait(RECHECK - 1), "the idle pool did not pick the mark up"
    # Woken by the mark, not by its own periodic look (5 s apart): well under a second.
    assert engine.done["i1"] - marked < RECHECK / 2
    assert workers.wakeup.woken > woken_before
    assert workers.wakeup.notified >= 1


def test_a_debounced_mark_is_picked_up_when_due_not_before(
    db: Engine, pool: tuple[WorkerPool, CountingReconciler]
) -> None:
    _, engine = pool
    marked = time.monotonic()
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("i2"), debounce=0.4)
    assert engine.event.wait(RECHECK - 1), "the debounced mark was never picked up"
    waited = engine.done["i2"] - marked
    # The workers slept until due_at (one query), not until their 5 s periodic look.
    assert 0.35 <= waited < RECHECK / 2, waited


def test_a_rolled_back_mark_calls_no_hook(db: Engine) -> None:
    calls: list[int] = []
    store.engine_hooks(db).on_queued.append(lambda: calls.append(1))
    with pytest.raises(RuntimeError), store.session_scope(db) as s:
        mark_dirty(s, incident_key("i3"))
        raise RuntimeError("changed my mind")
    assert calls == []
    with store.session_scope(db) as s:
        s.exec(select(store.Dirty)).all()  # a scope that marks nothing
    assert calls == []
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("i3"))
    assert calls == [1]


def test_next_due_is_the_earliest_row_nobody_holds(db: Engine) -> None:
    now = store.utcnow()
    with store.session_scope(db, readonly=True) as s:
        assert next_due(s, now=now) is None
    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("held"), now=now - dt.timedelta(seconds=5))
        claim(s, "someone", limit=1, lease_seconds=60, now=now)
        mark_dirty(s, incident_key("later"), delay=3, now=now)
        mark_dirty(s, incident_key("sooner"), delay=1, now=now)
    with store.session_scope(db, readonly=True) as s:
        due = next_due(s, now=now)
    assert due is not None and abs((due - now).total_seconds() - 1.0) < 0.01


def test_sqlite_writers_of_one_process_take_turns_on_a_python_lock(db: Engine) -> None:
    lock = store.engine_hooks(db).write_lock
    assert lock is not None
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        with store.session_scope(db) as s:
            order.append("second")
            mark_dirty(s, incident_key("b"))

    with store.session_scope(db) as s:
        mark_dirty(s, incident_key("a"))
        thread = threading.Thread(target=second)
        thread.start()
        inside.wait(0.2)  # the second writer waits on the lock, not in SQLite's busy handler
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    with store.session_scope(db, readonly=True):  # readers never take it
        assert lock.acquire(blocking=False)
        lock.release()


def test_a_writer_waiting_for_another_process_gets_the_lock_soon_after_it_is_free(
    tmp_path: Path,
) -> None:
    """Two engines on one file stand for two processes (each has its own Python lock). SQLite's
    own busy handler would let the waiter sleep past the release by up to 100 ms (here ~90 ms);
    the store tries again every 0.2 ms."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    first, second = store.make_engine(url), store.make_engine(url)
    store.migrate(first)
    released: list[float] = []
    holding = threading.Event()

    def hold() -> None:
        with store.session_scope(first) as s:
            mark_dirty(s, incident_key("held"))
            holding.set()
            time.sleep(0.24)
            released.append(time.monotonic())

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    with store.session_scope(second) as s:
        mark_dirty(s, incident_key("waited"))  # BEGIN IMMEDIATE: waits for the first
        got = time.monotonic()
    thread.join(10)
    assert released and got >= released[0] - 0.005
    assert got - released[0] < 0.04, f"{(got - released[0]) * 1000:.0f} ms after the release"
    with second.connect() as connection:  # the usual busy timeout is back for everything else
        timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    assert timeout == store.SQLITE_BUSY_TIMEOUT_MS
    first.dispose()
    second.dispose()


class SlowReconciler(CountingReconciler):
    """A reconcile that takes a while, as one waiting on a remote system does."""

    def reconcile(self, incident_id: str) -> Outcome:
        time.sleep(0.15)
        return super().reconcile(incident_id)


def _pool(db: Engine, engine: CountingReconciler, threads: int, recheck: float) -> WorkerPool:
    wakeup = Wakeup()
    store.engine_hooks(db).on_queued.append(wakeup.notify)
    return WorkerPool(
        engine,  # type: ignore[arg-type]
        threads=threads,
        lease=30,
        wakeup=wakeup,
        recheck=recheck,
    )


def test_idle_workers_leave_the_periodic_look_to_one_of_them(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight idle workers with a 0.1 s recheck: one timekeeper looks every 0.1 s, the others
    sleep until woken. (Each looked every 0.1 s before: ~80 looks a second.)"""
    looks: list[float] = []
    real = worker_module.next_due

    def counting(*args: Any, **kwargs: Any) -> Any:
        looks.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "next_due", counting)
    workers = _pool(db, CountingReconciler(db), threads=8, recheck=0.1)
    workers.start()
    try:
        time.sleep(0.5)  # every worker has looked once and sleeps
        before = len(looks)
        time.sleep(1.0)
        during = len(looks) - before
    finally:
        workers.stop()
    assert 5 <= during <= 15, during  # ~10: one look per recheck, not eight


def test_keys_due_together_are_taken_side_by_side(db: Engine) -> None:
    """Six debounced marks fall due at once: the timekeeper takes one and wakes another, and
    so on, so the six reconciles (0.15 s each) run side by side, not one after another."""
    engine = SlowReconciler(db)
    workers = _pool(db, engine, threads=8, recheck=5.0)
    workers.start()
    time.sleep(0.3)
    try:
        marked = time.monotonic()
        with store.session_scope(db) as s:
            for i in range(6):
                mark_dirty(s, incident_key(f"k{i}"), debounce=0.3)
        deadline = time.monotonic() + 5
        while len(engine.done) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        workers.stop()
    assert len(engine.done) == 6
    first = min(engine.done.values()) - marked
    last = max(engine.done.values()) - marked
    assert first >= 0.3 + 0.15 - 0.02  # not before they were due
    assert last < 0.3 + 0.15 * 3, last  # side by side (one after another: 1.2 s)


def test_a_mark_nobody_announced_is_found_by_the_timekeeper(db: Engine, tmp_path: Path) -> None:
    """A row queued by a process that cannot wake this one (another engine on the file, no
    hooks) is found within the recheck, though seven of the eight workers sleep until woken."""
    engine = CountingReconciler(db)
    workers = _pool(db, engine, threads=8, recheck=0.2)
    workers.start()
    time.sleep(0.4)
    other = store.make_engine(str(db.url))
    try:
        with store.session_scope(other) as s:
            mark_dirty(s, incident_key("silent"))
        marked = time.monotonic()
        assert engine.event.wait(3), "the unannounced mark was never picked up"
        assert engine.done["silent"] - marked < 0.2 + 0.3
    finally:
        workers.stop()
        other.dispose()
