"""API writes never leave the store's write lock behind.

A write session given as a FastAPI generator dependency was entered on one thread-pool thread
and left on another; the store's per-thread write lock (SQLite) could then not be released,
and every later writer (workers, webhooks, the next API call) waited until the busy timeout,
for good. Concurrent API writes made it happen within a few calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service.harness import wait_for
from sync.store.db import engine_hooks
from tests.e2e.conftest import World


def test_concurrent_api_writes_leave_the_write_lock_free(world: World) -> None:
    inc = world.open_p1()
    number = inc["number"]
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the Jira issue")  # it is known

    def publish(n: int) -> int:
        r = world.api.post(f"/api/incidents/{number}/public", json={"message": f"update {n}"})
        return r.status_code

    def replay(_: int) -> int:
        return world.api.post("/api/parked/replay-all").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(publish, range(12))) + list(pool.map(replay, range(12)))
    assert set(codes) == {200}, codes
    lock = engine_hooks(world.service.runtime.db).write_lock
    assert lock is not None
    # Free now: taken at once from this thread (a leaked lock would hold it for good).
    assert lock.acquire(timeout=2), "an API write left the store's write lock held"
    lock.release()
    r = world.api.post(f"/api/incidents/{number}/public", json={"message": "all clear"})
    assert r.status_code == 200, r.text
