"""The shared simulator machinery: faults, stats, request log, webhooks, snapshots, TLS."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from simulators.base import SimHTTPError, SimRequest, Simulator
from simulators.runner import ClusterConfig, SimulatorCluster
from tests.conftest import WebhookReceiver


class Toy(Simulator):
    """A minimal simulator: a counter behind one route, with its own error shape."""

    name = "toy"

    def register_routes(self) -> None:
        @self.route("/things/{thing_id}", methods=["GET", "PUT"])
        def thing(req: SimRequest) -> Response:
            if req.method == "PUT":
                self.things[req.path_params["thing_id"]] = req.json()
                self.emit("thing_updated", {"id": req.path_params["thing_id"]})
            if req.path_params["thing_id"] not in self.things:
                raise SimHTTPError(404, "no such thing")
            return JSONResponse(self.things[req.path_params["thing_id"]])

    def reset(self) -> None:
        self.things: dict[str, Any] = {}

    def dump_state(self) -> dict[str, Any]:
        return {"things": self.things}

    def load_state(self, state: Any) -> None:
        self.things = dict(state["things"])

    def error_response(
        self, status: int, message: str, detail: Any = None, **extra: Any
    ) -> Response:
        return JSONResponse({"toy_error": message}, status_code=status)

    def rate_limit_response(self, retry_after: int) -> Response:
        return JSONResponse(
            {"toy_error": "slow down"}, status_code=429, headers={"Retry-After": str(retry_after)}
        )

    def sign_webhook(self, target: Any, body: bytes) -> dict[str, str]:
        return {"X-Toy-Secret": target.secret} if target.secret else {}


@pytest.fixture
def toy() -> Iterator[tuple[Toy, str]]:
    sim = Toy(seed=7)
    with SimulatorCluster(ClusterConfig(seed=False), simulators={"toy": sim}) as c:
        yield sim, c.urls["toy"]


def test_route_templates_are_counted_and_logged(toy: tuple[Toy, str]) -> None:
    _, url = toy
    httpx.put(f"{url}/things/a", json={"n": 1})
    httpx.put(f"{url}/things/b", json={"n": 2})
    assert httpx.get(f"{url}/things/a").json() == {"n": 1}
    stats = httpx.get(f"{url}/_sim/stats").json()
    assert stats == {"PUT /things/{thing_id}": 2, "GET /things/{thing_id}": 1}
    log = httpx.get(f"{url}/_sim/requests").json()["requests"]
    assert [e["path"] for e in log] == ["/things/a", "/things/b", "/things/a"]
    assert log[2]["response_body"] == '{"n":1}'


def test_errors_use_the_simulators_own_shape_never_a_traceback(toy: tuple[Toy, str]) -> None:
    _, url = toy
    missing = httpx.get(f"{url}/things/zzz")
    assert missing.status_code == 404 and missing.json() == {"toy_error": "no such thing"}
    unknown_route = httpx.get(f"{url}/nope")
    assert unknown_route.status_code == 404 and "toy_error" in unknown_route.json()
    bad_json = httpx.put(f"{url}/things/a", content=b"{not json")
    assert bad_json.status_code == 400
    assert bad_json.json() == {"toy_error": "Malformed JSON in request body"}
    assert "Traceback" not in bad_json.text


def test_error_burst_is_limited_by_count_and_reproducible(toy: tuple[Toy, str]) -> None:
    _, url = toy
    httpx.put(f"{url}/things/a", json={"n": 1})
    rule = {"route": "GET /things/{thing_id}", "error_rate": 1.0, "error_status": 503, "count": 3}
    assert httpx.post(f"{url}/_sim/faults", json={"rules": [rule]}).status_code == 200
    statuses = [httpx.get(f"{url}/things/a").status_code for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    # PUT is not matched by the rule.
    assert httpx.put(f"{url}/things/a", json={"n": 2}).status_code == 200

    def run(seed: int) -> list[int]:
        httpx.post(f"{url}/_sim/faults", json={"seed": seed, "rules": [{"error_rate": 0.5}]})
        return [httpx.get(f"{url}/things/a").status_code for _ in range(20)]

    first, second = run(11), run(11)
    assert first == second and 500 in first and 200 in first


def test_rate_limit_fault_answers_with_retry_after(toy: tuple[Toy, str]) -> None:
    _, url = toy
    httpx.put(f"{url}/things/a", json={"n": 1})
    httpx.post(f"{url}/_sim/faults", json={"rate_limit_rate": 1.0, "retry_after": 4, "count": 1})
    limited = httpx.get(f"{url}/things/a")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "4"
    assert httpx.get(f"{url}/things/a").status_code == 200


def test_latency_is_applied(toy: tuple[Toy, str]) -> None:
    _, url = toy
    httpx.put(f"{url}/things/a", json={"n": 1})
    httpx.post(f"{url}/_sim/faults", json={"latency_ms": 300})
    start = time.monotonic()
    httpx.get(f"{url}/things/a")
    assert time.monotonic() - start >= 0.29


def test_reset_and_down_abort_the_connection(toy: tuple[Toy, str]) -> None:
    _, url = toy
    httpx.post(f"{url}/_sim/faults", json={"reset_rate": 1.0, "count": 1})
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/things/a")
    httpx.post(f"{url}/_sim/faults", json={"down": True})
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/things/a")
    httpx.delete(f"{url}/_sim/faults")
    assert httpx.get(f"{url}/things/a").status_code == 404


def test_timeout_after_the_write_applies_it_but_never_answers(toy: tuple[Toy, str]) -> None:
    sim, url = toy
    httpx.post(
        f"{url}/_sim/faults",
        json={"route": "PUT *", "timeout_rate": 1.0, "timeout_seconds": 2, "count": 1},
    )
    with pytest.raises(httpx.ReadTimeout):
        httpx.put(f"{url}/things/late", json={"n": 9}, timeout=0.5)
    assert sim.things["late"] == {"n": 9}  # the remote stored it


def test_bad_fault_config_is_rejected_with_a_reason(toy: tuple[Toy, str]) -> None:
    _, url = toy
    resp = httpx.post(f"{url}/_sim/faults", json={"rules": [{"eror_rate": 1}]})
    assert resp.status_code == 400 and "eror_rate" in resp.json()["error"]


def test_webhooks_are_signed_retried_and_can_be_duplicated(
    toy: tuple[Toy, str], webhook_receiver: WebhookReceiver
) -> None:
    _, url = toy
    webhook_receiver.statuses = [500]  # the first delivery fails and is retried
    target = {"url": webhook_receiver.url, "secret": "s3", "duplicate": True}
    listed = httpx.post(f"{url}/_sim/webhooks", json=target).json()
    assert listed["targets"][0]["secret"] == "***"  # never echoed
    httpx.put(f"{url}/things/a", json={"n": 1})
    received = webhook_receiver.wait_for(3)
    assert all(r.headers["X-Toy-Secret"] == "s3" for r in received)
    assert all(r.json() == {"id": "a"} for r in received)


def test_a_fault_rule_spares_the_user_agent_it_names(toy: tuple[Toy, str]) -> None:
    _, url = toy
    rule = {"route": "*", "error_rate": 1.0, "error_status": 503, "except_agent": "my-tests"}
    httpx.post(f"{url}/_sim/faults", json=rule).raise_for_status()
    assert httpx.put(f"{url}/things/a", json={"n": 1}).status_code == 503
    spared = httpx.put(f"{url}/things/a", json={"n": 2}, headers={"User-Agent": "my-tests/1"})
    assert spared.status_code == 200
    [listed] = httpx.get(f"{url}/_sim/faults").json()["rules"]
    assert listed["hits"] == 1  # the spared request is no hit


def test_webhook_rates_drop_duplicate_and_delay_deliveries_and_count_them(
    toy: tuple[Toy, str], webhook_receiver: WebhookReceiver
) -> None:
    _, url = toy
    rates = {"drop_rate": 0.3, "duplicate_rate": 0.3, "delay_rate": 0.3}
    target = {"url": webhook_receiver.url, "delay_jitter_seconds": 0.2, **rates}
    httpx.post(f"{url}/_sim/webhooks", json=target).raise_for_status()
    for n in range(40):
        httpx.put(f"{url}/things/t{n}", json={"n": n})
    deadline = time.monotonic() + 10
    while not httpx.get(f"{url}/_sim/webhooks/log").json()["idle"]:
        assert time.monotonic() < deadline, "deliveries still outstanding"
        time.sleep(0.05)
    faults = httpx.get(f"{url}/_sim/webhooks/log").json()["faults"]
    assert faults["dropped"] > 0 and faults["duplicated"] > 0 and faults["delayed"] > 0
    ids = [r.json()["id"] for r in webhook_receiver.received]
    assert len(ids) == 40 - faults["dropped"] + faults["duplicated"]
    assert len(set(ids)) == 40 - faults["dropped"]


def test_the_webhook_log_lists_only_the_newest_deliveries_asked_for(
    toy: tuple[Toy, str], webhook_receiver: WebhookReceiver
) -> None:
    _, url = toy
    httpx.post(f"{url}/_sim/webhooks", json={"url": webhook_receiver.url}).raise_for_status()
    for n in range(3):
        httpx.put(f"{url}/things/t{n}", json={"n": n})
    webhook_receiver.wait_for(3)
    deadline = time.monotonic() + 10
    while not (idle := httpx.get(f"{url}/_sim/webhooks/log?limit=0").json())["idle"]:
        assert time.monotonic() < deadline, "deliveries still outstanding"
        time.sleep(0.05)
    assert idle["deliveries"] == []  # a harness asking only "idle?" gets no log to parse
    everything = httpx.get(f"{url}/_sim/webhooks/log").json()["deliveries"]
    assert len(everything) == 3
    assert httpx.get(f"{url}/_sim/webhooks/log?limit=2").json()["deliveries"] == everything[1:]
    assert httpx.get(f"{url}/_sim/webhooks/log?limit=9").json()["deliveries"] == everything
    for bad in ("-1", "", "2.5", "\u00b2"):  # "²" passes str.isdigit() but not int()
        refused = httpx.get(f"{url}/_sim/webhooks/log", params={"limit": bad})
        assert refused.status_code == 400 and "limit" in refused.text, bad


def test_snapshot_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    sim = Toy()
    with SimulatorCluster(
        ClusterConfig(seed=False, state_file=state), simulators={"toy": sim}
    ) as c:
        httpx.put(f"{c.urls['toy']}/things/kept", json={"n": 5})
    assert json.loads(state.read_text())["toy"]["things"] == {"kept": {"n": 5}}
    again = Toy()
    with SimulatorCluster(
        ClusterConfig(seed=False, state_file=state), simulators={"toy": again}
    ) as c:
        assert httpx.get(f"{c.urls['toy']}/things/kept").json() == {"n": 5}


def test_tls_serves_https_with_the_generated_certificate() -> None:
    sim = Toy()
    with SimulatorCluster(ClusterConfig(seed=False, tls=True), simulators={"toy": sim}) as c:
        assert c.urls["toy"].startswith("https://")
        assert c.cert is not None
        trusted = ssl.create_default_context(cafile=str(c.cert.cert))
        httpx.put(f"{c.urls['toy']}/things/a", json={"n": 1}, verify=trusted)
        assert httpx.get(f"{c.urls['toy']}/things/a", verify=trusted).json() == {"n": 1}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{c.urls['toy']}/things/a")  # not trusted by default


def test_pace_limit_is_a_token_bucket_over_every_call() -> None:
    from simulators.base import PaceLimit

    now = [100.0]
    pace = PaceLimit(clock=lambda: now[0])
    assert pace.check() is None  # off by default: never refuses
    pace.configure(4.0, 2)
    assert [pace.check(), pace.check()] == [None, None]  # the burst
    assert pace.check() == 1  # empty: wait (whole seconds, at least 1)
    now[0] += 0.25  # one token back at 4/s
    assert pace.check() is None and pace.check() == 1
    now[0] += 10  # refilled, but never beyond the burst
    assert [pace.check() for _ in range(3)] == [None, None, 1]
    pace.configure(0.5, 1)
    assert pace.check() is None
    assert pace.check() == 2  # a token every 2 s
    assert pace.describe() == {"requests_per_second": 0.5, "requests_burst": 1.0}
    pace.configure(None)
    assert all(pace.check() is None for _ in range(10))


def test_answers_and_webhooks_are_the_json_starlette_would_send() -> None:
    """The simulators serialise with orjson (less CPU taken from the service under test):
    the same compact UTF-8 bytes as Starlette's JSONResponse, big integers and lone
    surrogates included."""
    from starlette.responses import JSONResponse as Starlette

    from simulators.base import JSONResponse, json_bytes

    for value in ({"a": [1, 2.5, None, True], "é": "ü/<"}, [], {"n": 2**70}):
        assert JSONResponse(value).body == Starlette(value).body == json_bytes(value)
        assert json.loads(json_bytes(value)) == value
    lone = {"t": "a\ud800"}  # Starlette fails on it; json.dumps escapes it
    assert json_bytes(lone) == b'{"t":"a\\ud800"}' and json.loads(json_bytes(lone)) == lone
