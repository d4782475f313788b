"""Bounded concurrency per system: at most ``max_concurrency`` calls in flight, a slot taken
before a token (so waiting threads never save tokens up for a burst), re-entrant per thread."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from config.settings import JiraSettings, ServiceNowSettings
from connectors import http
from connectors.http import TokenBucket, call_with_retries, limit_concurrency, slots_for
from connectors.servicenow import ServiceNowConnector
from simulators.runner import SimulatorCluster

FIXTURE_INCIDENT = "1c000000000000000000000000000001"  # simulators/fixtures/servicenow.json


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    http._slots.clear()


def test_no_more_than_the_limit_in_flight() -> None:
    slots = limit_concurrency("sys-a", 3)
    gate = threading.Event()
    started = threading.Semaphore(0)

    def call() -> int:
        started.release()
        gate.wait(5)
        return 1

    threads = [
        threading.Thread(target=lambda: call_with_retries(call, system="sys-a", what="x"))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for _ in range(3):
        assert started.acquire(timeout=5)
    assert not started.acquire(timeout=0.2)  # the fourth waits for a slot
    assert slots.in_flight == 3
    gate.set()
    for t in threads:
        t.join(5)
    assert slots.peak == 3 and slots.in_flight == 0


def test_a_call_inside_a_call_takes_no_second_slot() -> None:
    limit_concurrency("sys-b", 1)

    def inner() -> str:
        return "inner"

    def outer() -> str:
        return call_with_retries(inner, system="sys-b", what="inner")

    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(call_with_retries(outer, system="sys-b",
                                                                      what="outer")))  # fmt: skip
    t.start()
    t.join(2)
    assert done == ["inner"]  # with one slot, a second acquire would hang


def test_a_slot_comes_before_the_token() -> None:
    """Threads waiting for a slot hold no token: when the slot frees up, requests still leave
    at the bucket's pace, never in a burst of tokens taken while waiting."""
    limit_concurrency("sys-c", 1)
    bucket = TokenBucket(rate=0.01, capacity=4)
    gate = threading.Event()
    holding = threading.Event()

    def call() -> None:
        holding.set()
        gate.wait(5)

    def work() -> None:
        call_with_retries(call, system="sys-c", what="x", bucket=bucket)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    assert holding.wait(5)
    time.sleep(0.2)  # the three others are waiting by now
    assert bucket._tokens == pytest.approx(3, abs=0.01)  # only the holder spent one
    gate.set()
    for t in threads:
        t.join(5)


def test_the_settings_name_the_limit() -> None:
    from connectors.jira import JiraConnector

    connector = JiraConnector(JiraSettings(max_concurrency=7))
    slots = slots_for("jira", connector.base_url)
    assert slots is not None and slots.limit == 7
    assert slots_for("jira", "https://another.atlassian.net") is None  # per instance


def test_a_connector_paced_at_the_limit_is_never_refused(sims: SimulatorCluster) -> None:
    """The service's bucket at a system's rate, the simulator enforcing that rate: calls from
    many threads at once wait for tokens and none is answered 429 (bench.backfill's set-up).

    The simulator's bucket holds ``burst`` calls so that it absorbs (burst - 1) / rate seconds
    of scheduling jitter, as a gateway's does: a paced call that leaves late behind calls that
    leave on time reaches it together with them. The suite's six workers on two cores drew
    429s with 100 ms (burst 3 at 20/s) and with 250 ms (6 at 20/s); this absorbs 500 ms."""
    http.reset_buckets()
    url = sims.urls["servicenow"]
    rate, calls, burst = 10.0, 30, 6
    sn = ServiceNowConnector(
        ServiceNowSettings.model_validate(
            {"url": url, "password": "admin", "requests_per_second": rate, "max_concurrency": 8}
        )
    )
    httpx.post(f"{url}/_sim/ratelimit", json={"requests_per_second": rate, "requests_burst": burst})
    httpx.delete(f"{url}/_sim/stats")
    try:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: sn.get("incident", FIXTURE_INCIDENT), range(calls)))
        elapsed = time.monotonic() - t0
        by_status = httpx.get(f"{url}/_sim/stats", params={"by": "status"}).json()
        # The simulator does enforce it: a client that does not pace itself is refused.
        with httpx.Client(base_url=url, auth=("admin", "admin")) as c:
            unpaced = [c.get("/api/now/table/sys_user").status_code for _ in range(3 * burst)]
        assert 429 in unpaced
    finally:
        httpx.post(f"{url}/_sim/ratelimit", json={"requests_per_second": None})
        http.reset_buckets()
    refused = {k: v for k, v in by_status.items() if k.endswith(" 429")}
    assert refused == {}
    assert elapsed >= (calls - 1) / rate * 0.95  # it was paced, not let through at once
