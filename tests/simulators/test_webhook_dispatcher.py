"""The simulators' webhook dispatcher is idle only when every delivery is done."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from simulators.base import WebhookDispatcher, WebhookTarget


class Slow(BaseHTTPRequestHandler):
    received: list[float] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.5)  # the receiver takes its time to answer
        Slow.received.append(time.monotonic())
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_not_idle_while_a_delivery_is_being_posted(receiver: str) -> None:
    dispatcher = WebhookDispatcher("test", lambda target, body: {})
    dispatcher.start()
    try:
        dispatcher.send([WebhookTarget(url=receiver)], "incident.update", {"n": 1}, {})
        answered_before = len(Slow.received)
        deadline = time.monotonic() + 5
        seen_idle_early = False
        while len(Slow.received) == answered_before and time.monotonic() < deadline:
            # Polled throughout the delivery: the queue is empty and nothing is pending while
            # the POST is under way, which must not read as idle.
            seen_idle_early |= dispatcher.idle()
            time.sleep(0.005)
        assert len(Slow.received) == answered_before + 1, "the delivery never arrived"
        assert not seen_idle_early, "idle() said done while the delivery was still in flight"
        deadline = time.monotonic() + 2
        while not dispatcher.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dispatcher.idle()
        assert [d["status"] for d in dispatcher.log] == [202]
    finally:
        dispatcher.stop()
