"""Shared fixtures: the three simulators on real sockets, and a webhook receiver."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from simulators.runner import ClusterConfig, SimulatorCluster
from tests.systems import people_only


def _free_cluster(tls: bool = False) -> SimulatorCluster:
    return SimulatorCluster(
        ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, tls=tls, seed=True)
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[SimulatorCluster]:
    """The three simulators over plain HTTP on free ports, for the whole test session."""
    with _free_cluster() as c:
        yield c


@pytest.fixture(scope="session")
def tls_cluster() -> Iterator[SimulatorCluster]:
    """The three simulators over HTTPS (self-signed; trust ``cluster.cert.cert``)."""
    with _free_cluster(tls=True) as c:
        yield c


def reset_and_seed(c: SimulatorCluster) -> SimulatorCluster:
    """Reset every simulator (data, faults, logs, webhook targets) and load default fixtures."""
    verify = ssl.create_default_context(cafile=str(c.cert.cert)) if c.cert else True
    with httpx.Client(verify=verify, timeout=10) as client:
        for url in c.urls.values():
            client.delete(f"{url}/_sim/webhooks").raise_for_status()
            client.post(f"{url}/_sim/reset").raise_for_status()
            client.post(f"{url}/_sim/seed").raise_for_status()
    return c


@pytest.fixture
def sims(cluster: SimulatorCluster) -> SimulatorCluster:
    """The session's simulators, reset and seeded with the default fixtures for this test."""
    return reset_and_seed(cluster)


@pytest.fixture
def tls_sims(tls_cluster: SimulatorCluster) -> SimulatorCluster:
    return reset_and_seed(tls_cluster)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP endpoint that records deliveries. Set ``statuses`` to fail the first ones."""

    url: str
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # consumed one per delivery; then 204
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.received.append(
                    Received("POST", self.path, {k: v for k, v in self.headers.items()}, body)
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def empty_sims(sims: SimulatorCluster) -> Iterator[SimulatorCluster]:
    """The session's simulators holding only people and services (no incidents, no faults),
    Statuspage's rate limit raised so the budget is set by the service's own token bucket."""
    with httpx.Client(timeout=10) as client:
        for name, url in sims.urls.items():
            client.post(f"{url}/_sim/reset").raise_for_status()
            client.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
        client.post(
            f"{sims.urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 6000}
        ).raise_for_status()
    try:
        yield sims
    finally:
        with httpx.Client(timeout=10) as client:
            for url in sims.urls.values():
                client.delete(f"{url}/_sim/webhooks")
                client.delete(f"{url}/_sim/faults")
            client.delete(f"{sims.urls['statuspage']}/_sim/ratelimit")
