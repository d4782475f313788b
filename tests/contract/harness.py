"""What the contract suite needs to know about each system, and nothing more.

A :class:`Harness` wraps one connector on the simulators with the few system-specific facts the
shared tests need: which fields make a valid record, how a person edits it behind our back
(straight through the simulator's API, not the connector), and which state moves to try.
The tests in ``test_contract.py`` and ``test_faults.py`` are written once against it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.base import Connector, RemoteRecord
from connectors.http import RetryPolicy
from simulators.runner import SimulatorCluster

# Fast retries for tests: the behaviour is the same, the backoff is shorter.
FAST_RETRY = RetryPolicy(max_attempts=4, initial_wait=0.05, max_backoff=0.2, max_wait=5.0)


Forged = tuple[dict[str, str], bytes, dict[str, str]]
# Turns a genuine delivery (headers, body, query) into a forged one parse_webhook must refuse.
Forgery = Callable[[dict[str, str], bytes, dict[str, str]], Forged]


@dataclass(frozen=True)
class Move:
    """A state change: ``target`` as the connector's ``transition`` takes it, the fields it
    needs, and the field value that proves the record got there."""

    target: str
    fields: Mapping[str, Any]
    check: Callable[[RemoteRecord], bool]


@dataclass
class Harness:
    name: str  # servicenow | jira | statuspage
    connector: Connector
    object_type: str
    sims: SimulatorCluster
    new_fields: Callable[[str], dict[str, Any]]  # title -> fields for create
    edit: Callable[[str], dict[str, Any]]  # title -> fields for an update
    title_of: Callable[[RemoteRecord], str]
    raw_edit: Callable[[RemoteRecord, str], None]  # a person renames it, not via the connector
    moves: list[Move] = field(default_factory=list)
    internal_comments: bool = True
    people: bool = True
    create_route: str = ""  # the route template a create POSTs to (for faults and stats)
    webhook_secret: str = ""  # registered with the simulator (signs or sends it)
    webhook_query: dict[str, str] = field(default_factory=dict)  # added to the target URL
    forgeries: list[Forgery] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # must never show up anywhere
    bad_credentials: Callable[[], Connector] = lambda: None  # type: ignore[assignment,return-value]
    with_timeout: Callable[[float], Connector] = lambda t: None  # type: ignore[assignment,return-value]
    get_route: str = ""  # the route template a get by id uses

    @property
    def url(self) -> str:
        return self.sims.urls[self.name]

    def control(self, path: str, body: Any = None) -> Any:
        with httpx.Client(timeout=10) as client:
            if body is None:
                r = client.get(f"{self.url}/_sim/{path}")
            else:
                r = client.post(f"{self.url}/_sim/{path}", json=body)
            r.raise_for_status()
            return r.json()

    def faults(self, **rule: Any) -> None:
        self.control("faults", {"rules": [rule]} if rule else {"rules": []})

    def stats(self) -> dict[str, int]:
        data = self.control("stats")
        return dict(data.get("routes", data))

    def hits(self, route: str) -> int:
        return sum(n for key, n in self.stats().items() if key == route)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def tamper(body: bytes) -> bytes:
    """The same delivery with one field changed, as an attacker would send it."""
    data = json.loads(body)
    data["tampered"] = True
    return json.dumps(data).encode()
