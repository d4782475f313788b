"""What the three simulators share: routing with route templates, the request log and stats,
faults, outbound webhooks, snapshots and the ``/_sim/`` control routes.

A simulator subclasses :class:`Simulator`, registers the real API's routes with
:meth:`Simulator.route` and implements the vendor-specific pieces (auth, error bodies, rate-limit
responses, seeding, state dump/load). Handlers are plain synchronous functions
``handler(req: SimRequest) -> Response`` run under the simulator's lock, so state changes are
atomic; latency and timeouts are applied around them without blocking the event loop.

Nothing here is part of a real vendor API except what subclasses put on their routes; the
controls live under ``/_sim/`` and are documented in ``docs/simulators.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import hashlib
import hmac
import json
import logging
import math
import queue
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("simulators")


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the vendors send it, made by orjson: serialising with
    ``json.dumps`` was ~9 % of the simulators' CPU in a throughput run (every answer, every
    webhook), CPU the service under test shares. What orjson refuses (an integer beyond 64
    bits, a lone surrogate) is made by ``json.dumps`` in the same form."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


class JSONResponse(StarletteJSONResponse):
    """Starlette's JSON answer (compact, UTF-8), rendered by :func:`json_bytes`."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


Handler = Callable[["SimRequest"], Response]


class SimHTTPError(Exception):
    """Raised by handlers to answer with the simulator's own error body."""

    def __init__(self, status: int, message: str, detail: Any = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.extra = extra


class MalformedBody(SimHTTPError, ValueError):
    """The request body is not valid JSON (a ValueError too, for handlers that catch that)."""


@dataclass
class SimRequest:
    """An incoming request, read fully, as handlers see it."""

    method: str
    path: str
    route: str  # the route template, e.g. "/api/now/table/{table}/{sys_id}"
    path_params: dict[str, str]
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes
    base_url: str  # scheme://host:port of this simulator as the client reached it
    user: Any = None  # set by the simulator's authenticate()

    def arg(self, name: str, default: str | None = None) -> str | None:
        """Last value of a query parameter (like most web frameworks)."""
        value = default
        for key, val in self.query:
            if key == name:
                value = val
        return value

    def args(self, name: str) -> list[str]:
        return [val for key, val in self.query if key == name]

    def json(self) -> Any:
        """The JSON body, or None if empty; malformed JSON raises :class:`MalformedBody` (400)."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise MalformedBody(400, "Malformed JSON in request body", str(exc)) from exc

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def multipart(self) -> list[FilePart]:
        """The parts of a ``multipart/form-data`` body (400 if it is not one)."""
        if self.content_type != "multipart/form-data":
            raise SimHTTPError(400, "Expected a multipart/form-data body", self.content_type)
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        if not msg.is_multipart():
            raise SimHTTPError(400, "Malformed multipart body", None)
        parts = []
        for part in msg.iter_parts():
            if not isinstance(part, EmailMessage):
                continue
            payload = part.get_payload(decode=True)
            parts.append(
                FilePart(
                    name=str(part.get_param("name", "", header="content-disposition")),
                    filename=part.get_filename(),
                    content_type=part.get_content_type(),
                    data=payload if isinstance(payload, bytes) else b"",
                )
            )
        return parts


@dataclass
class FilePart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


# ---------------------------------------------------------------------------------------------
# Faults


@dataclass
class FaultRule:
    """One fault rule. ``route`` is ``"*"``, ``"METHOD *"`` or ``"METHOD /template"``.

    Rates are probabilities per matching request (drawn from the simulator's seeded RNG, so a
    run is reproducible). ``count`` limits how many requests the rule affects in total (then it
    is spent); ``None`` means unlimited.
    """

    route: str = "*"
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    timeout_when: str = "after"  # "after": the write is applied, then the answer never comes
    reset_rate: float = 0.0
    count: int | None = None
    # Requests whose User-Agent contains this are spared (a test's own calls, made through
    # the same API as the client under test); empty: none is.
    except_agent: str = ""
    hits: int = 0

    def matches(self, method: str, route: str, agent: str = "") -> bool:
        if self.except_agent and self.except_agent in agent:
            return False
        if self.route == "*":
            return True
        want_method, _, want_route = self.route.partition(" ")
        if want_method not in ("*", method):
            return False
        return want_route in ("*", route)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)
    down: bool = False
    seed: int = 0

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Faults:
        allowed = set(FaultRule.__dataclass_fields__) - {"hits"}
        rules = []
        for index, raw in enumerate(body.get("rules", [])):
            unknown = set(raw) - allowed
            if unknown:
                raise ValueError(f"rules[{index}]: unknown keys {sorted(unknown)}")
            rules.append(FaultRule(**raw))
        if body.get("route") is not None or any(k in body for k in allowed if k != "route"):
            # A single rule given inline at the top level.
            inline = {k: v for k, v in body.items() if k in allowed}
            rules.append(FaultRule(**inline))
        return cls(rules=rules, down=bool(body.get("down", False)), seed=int(body.get("seed", 0)))


@dataclass
class FaultDecision:
    latency: float = 0.0
    error_status: int | None = None
    rate_limited: int | None = None  # retry-after seconds
    timeout: float | None = None
    timeout_when: str = "after"
    reset: bool = False


# ---------------------------------------------------------------------------------------------
# Outbound webhooks


@dataclass
class WebhookTarget:
    url: str
    secret: str = ""
    events: list[str] = field(default_factory=list)  # empty: every event
    delay_seconds: float = 0.0  # deliver late
    duplicate: bool = False  # deliver twice
    max_attempts: int = 5
    # Per delivery, drawn from the dispatcher's seeded RNG: never sent, sent twice, or late by
    # up to ``delay_jitter_seconds`` more (so deliveries also arrive out of order).
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_rate: float = 0.0
    delay_jitter_seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["secret"] = "***" if self.secret else ""
        return data


@dataclass
class Delivery:
    target: WebhookTarget
    event: str
    body: bytes
    headers: dict[str, str]
    attempt: int = 0
    not_before: float = 0.0


class WebhookDispatcher:
    """Delivers outbound webhooks from a background thread, retrying failures with backoff."""

    def __init__(
        self, name: str, sign: Callable[[WebhookTarget, bytes], dict[str, str]], seed: int = 0
    ) -> None:
        self.name = name
        self._sign = sign
        self.rng = random.Random(seed)
        # What the per-delivery rates did: dropped, duplicated, delayed (since the last clear).
        self.faults: Counter[str] = Counter()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._pending: list[Delivery] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.log: deque[dict[str, Any]] = deque(maxlen=2000)
        self._lock = threading.Lock()
        # Deliveries sent but not yet done (delivered, or out of attempts): wherever they are
        # (the queue, pending, or being posted right now), so idle() has no blind moment.
        self._outstanding = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"{self.name}-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._stop = threading.Event()

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._outstanding = 0
            self.faults.clear()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def send(
        self, targets: Iterable[WebhookTarget], event: str, payload: Any, headers: dict[str, str]
    ) -> None:
        body = json_bytes(payload)
        for target in targets:
            if target.events and event not in target.events:
                continue
            all_headers = {
                "Content-Type": "application/json",
                **headers,
                **self._sign(target, body),
            }
            not_before = time.monotonic() + target.delay_seconds
            copies = 2 if target.duplicate else 1
            with self._lock:
                if target.drop_rate and self.rng.random() < target.drop_rate:
                    self.faults["dropped"] += 1
                    continue
                if target.duplicate_rate and self.rng.random() < target.duplicate_rate:
                    self.faults["duplicated"] += 1
                    copies = 2
                if target.delay_rate and self.rng.random() < target.delay_rate:
                    self.faults["delayed"] += 1
                    not_before += self.rng.uniform(0.0, target.delay_jitter_seconds)
            for _ in range(copies):
                with self._lock:
                    self._outstanding += 1
                self._queue.put(Delivery(target, event, body, dict(all_headers), 0, not_before))

    def idle(self) -> bool:
        with self._lock:
            return self._outstanding == 0

    def _run(self) -> None:
        with httpx.Client(timeout=10.0, verify=False) as client:
            while not self._stop.is_set():
                timeout = 0.05
                with self._lock:
                    now = time.monotonic()
                    due = [d for d in self._pending if d.not_before <= now]
                    self._pending = [d for d in self._pending if d.not_before > now]
                for delivery in due:
                    self._deliver(client, delivery)
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
                if item is None:
                    break
                with self._lock:
                    self._pending.append(item)

    def _deliver(self, client: httpx.Client, d: Delivery) -> None:
        d.attempt += 1
        headers = dict(d.headers)
        if d.attempt > 1:
            headers["X-Atlassian-Webhook-Retry"] = str(d.attempt - 1)
        status: int | str
        try:
            resp = client.post(d.target.url, content=d.body, headers=headers)
            status = resp.status_code
            ok = 200 <= resp.status_code < 300
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        self.log.append(
            {"event": d.event, "url": d.target.url, "attempt": d.attempt, "status": status}
        )
        if not ok and d.attempt < d.target.max_attempts:
            d.not_before = time.monotonic() + min(0.2 * 2 ** (d.attempt - 1), 5.0)
            with self._lock:
                self._pending.append(d)
            return
        with self._lock:
            self._outstanding = max(0, self._outstanding - 1)


class PaceLimit:
    """A per-second budget over every authenticated API call (not ``/_sim/``): a token bucket
    of ``rate`` requests per second holding at most ``burst``, as a gateway in front of an API
    enforces it. Off (``rate`` None) by default. Not a documented limit of any one vendor: the
    benchmarks set it to the rate the service is configured with, so that a client that paces
    itself is never refused and one that does not is (``/_sim/ratelimit`` of ServiceNow and
    Jira)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate: float | None = None
        self.burst = 1.0
        self._clock = clock
        self._tokens = 0.0
        self._at = 0.0

    def configure(self, rate: float | None, burst: float | None = None) -> None:
        """Set (rate None or 0: off) and start from a full bucket."""
        self.rate = float(rate) if rate else None
        if burst is not None:
            self.burst = max(1.0, float(burst))
        self._tokens = self.burst
        self._at = self._clock()

    def check(self) -> int | None:
        """Take a token and return None, or the whole seconds to wait (>= 1; nothing taken)."""
        if not self.rate:
            return None
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / self.rate))

    def describe(self) -> dict[str, float | None]:
        return {"requests_per_second": self.rate, "requests_burst": self.burst}


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# The simulator base class


class Simulator:
    """Base of the three simulators. Subclasses fill in the vendor-specific hooks."""

    name = "simulator"

    def __init__(self, *, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self._routes: list[Route] = []
        self.request_log: deque[dict[str, Any]] = deque(maxlen=5000)
        self.stats: Counter[str] = Counter()
        # The same counts by answer too ("METHOD template status"): /_sim/stats?by=status.
        self.status_stats: Counter[str] = Counter()
        self.faults = Faults(seed=seed)
        self.rng = random.Random(seed)
        self.webhook_targets: list[WebhookTarget] = []
        self.webhooks = WebhookDispatcher(self.name, self.sign_webhook, seed)
        self.dirty = False  # set on every state change; the runner snapshots dirty state
        self.register_routes()
        self.reset()

    # -- hooks for subclasses -----------------------------------------------------------------

    def register_routes(self) -> None:
        """Register the real API's routes with :meth:`route`."""

    def reset(self) -> None:
        """Forget all data (not faults, not webhook targets)."""

    def seed(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Load fixtures; returns a summary (counts per kind)."""
        return {}

    def default_seed(self) -> dict[str, Any]:
        """The fixtures ``/_sim/seed`` loads when called with an empty body."""
        return {}

    def dump_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`dump_state` returned."""

    def authenticate(self, req: SimRequest) -> Response | None:
        """Set ``req.user`` and return None, or return the vendor's 401 response."""
        return None

    def error_response(
        self, status: int, message: str, detail: Any = None, **extra: Any
    ) -> Response:
        return JSONResponse({"message": message}, status_code=status)

    def rate_limit_response(self, retry_after: int) -> Response:
        return self.error_response(429, "Too many requests")

    def extra_headers(self, req: SimRequest, response: Response) -> None:
        """Add headers the real API sends on every response (rate-limit counters, say)."""

    def sign_webhook(self, target: WebhookTarget, body: bytes) -> dict[str, str]:
        return {}

    # -- routing ------------------------------------------------------------------------------

    def route(self, path: str, methods: list[str]) -> Callable[[Handler], Handler]:
        """Register ``handler`` for ``path`` (a Starlette template) and ``methods``."""

        def decorator(handler: Handler) -> Handler:
            template = path

            async def endpoint(request: Request) -> Response:
                return await self._dispatch(request, template, handler)

            self._routes.append(Route(path, endpoint, methods=methods))
            return handler

        return decorator

    def build_app(self) -> Starlette:
        sim_routes = [
            Route("/_sim/reset", self._sim_reset, methods=["POST"]),
            Route("/_sim/seed", self._sim_seed, methods=["POST"]),
            Route("/_sim/faults", self._sim_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/webhooks", self._sim_webhooks, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/webhooks/log", self._sim_webhook_log, methods=["GET"]),
            Route("/_sim/requests", self._sim_requests, methods=["GET", "DELETE"]),
            Route("/_sim/stats", self._sim_stats, methods=["GET", "DELETE"]),
            Route("/_sim/state", self._sim_state, methods=["GET"]),
        ]
        app = Starlette(routes=sim_routes + self._routes)

        async def not_found(request: Request, exc: Exception) -> Response:
            return self.error_response(404, "Not found", f"No route for {request.url.path}")

        async def method_not_allowed(request: Request, exc: Exception) -> Response:
            return self.error_response(405, "Method not allowed", request.method)

        async def server_error(request: Request, exc: Exception) -> Response:
            log.exception("%s: unhandled error on %s", self.name, request.url.path)
            return self.error_response(500, "Internal server error")

        app.add_exception_handler(404, not_found)
        app.add_exception_handler(405, method_not_allowed)
        app.add_exception_handler(Exception, server_error)
        return app

    # -- the request pipeline -----------------------------------------------------------------

    async def _dispatch(self, request: Request, template: str, handler: Handler) -> Response:
        body = await request.body()
        req = SimRequest(
            method=request.method,
            path=request.url.path,
            route=template,
            path_params={k: str(v) for k, v in request.path_params.items()},
            query=parse_qsl(request.url.query, keep_blank_values=True),
            headers=request.headers,
            body=body,
            base_url=f"{request.url.scheme}://{request.url.netloc}",
        )
        key = f"{req.method} {template}"
        decision = self._decide_faults(req.method, template, req.headers.get("user-agent", ""))
        if decision.reset:
            self._record(req, key, 0, b"", "reset")
            return await self._reset_connection(request)
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.timeout is not None and decision.timeout_when == "before":
            self._record(req, key, 0, b"", "timeout")
            await asyncio.sleep(decision.timeout)
            return await self._reset_connection(request)

        response: Response
        fault: str | None = None
        if decision.error_status is not None:
            response = self.error_response(decision.error_status, "Simulated server error")
            fault = "error"
        elif decision.rate_limited is not None:
            response = self.rate_limit_response(decision.rate_limited)
            fault = "rate_limit"
        else:
            with self.lock:
                # /_sim/ controls are not part of the real API and need no credentials.
                denied = None if req.path.startswith("/_sim/") else self.authenticate(req)
                if denied is not None:
                    response = denied
                else:
                    try:
                        response = handler(req)
                    except SimHTTPError as exc:
                        response = self.error_response(
                            exc.status, exc.message, exc.detail, **exc.extra
                        )
                    except Exception:
                        log.exception(
                            "%s: handler failed on %s %s", self.name, req.method, req.path
                        )
                        response = self.error_response(500, "Internal server error")
                    if req.method != "GET" and response.status_code < 400:
                        self.dirty = True
        with self.lock:
            self.extra_headers(req, response)
        resp_body = bytes(response.body) if hasattr(response, "body") else b""
        if decision.timeout is not None:
            # The request was applied; the answer never arrives in time.
            self._record(req, key, response.status_code, resp_body, "timeout-after")
            await asyncio.sleep(decision.timeout)
            return await self._reset_connection(request)
        self._record(req, key, response.status_code, resp_body, fault, response)
        return response

    def _decide_faults(self, method: str, template: str, agent: str = "") -> FaultDecision:
        decision = FaultDecision()
        with self.lock:
            if self.faults.down:
                decision.reset = True
                return decision
            for rule in self.faults.rules:
                if not rule.matches(method, template, agent):
                    continue
                if rule.count is not None and rule.hits >= rule.count:
                    continue
                fired = False
                decision.latency += rule.latency_ms / 1000.0
                if rule.reset_rate and self.rng.random() < rule.reset_rate:
                    decision.reset = fired = True
                elif rule.timeout_rate and self.rng.random() < rule.timeout_rate:
                    decision.timeout, decision.timeout_when = (
                        rule.timeout_seconds,
                        rule.timeout_when,
                    )
                    fired = True
                elif rule.rate_limit_rate and self.rng.random() < rule.rate_limit_rate:
                    decision.rate_limited = rule.retry_after
                    fired = True
                elif rule.error_rate and self.rng.random() < rule.error_rate:
                    decision.error_status = rule.error_status
                    fired = True
                if fired or rule.latency_ms:
                    rule.hits += 1
        return decision

    @staticmethod
    async def _reset_connection(request: Request) -> Response:
        """Abort the TCP connection with an RST, as a crashed or unreachable server would.

        The returned response is never seen by the client: the connection is gone.
        """
        transport = request.scope.get("sim.transport")
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            await asyncio.sleep(0)
        return Response(status_code=503)

    def _record(
        self,
        req: SimRequest,
        key: str,
        status: int,
        resp_body: bytes,
        fault: str | None,
        response: Response | None = None,
    ) -> None:
        with self.lock:
            self.stats[key] += 1
            self.status_stats[f"{key} {status}"] += 1
            self.request_log.append(
                {
                    "id": uuid.uuid4().hex,
                    "time": time.time(),
                    "method": req.method,
                    "path": req.path,
                    "route": req.route,
                    "query": req.query,
                    "headers": {
                        k: v for k, v in req.headers.items() if k.lower() != "authorization"
                    },
                    "body": req.body.decode("utf-8", "replace")[:100_000],
                    "status": status,
                    "response_headers": dict(response.headers) if response is not None else {},
                    "response_body": resp_body.decode("utf-8", "replace")[:1_000_000],
                    "fault": fault,
                }
            )

    # -- /_sim controls -----------------------------------------------------------------------

    async def _control_body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        return json.loads(raw)

    async def _sim_reset(self, request: Request) -> Response:
        with self.lock:
            self.reset()
            self.faults = Faults(seed=self.faults.seed)
            self.rng = random.Random(self.faults.seed)
            self.request_log.clear()
            self.stats.clear()
            self.status_stats.clear()
            self.webhooks.clear()
            self.dirty = True
        return JSONResponse({"reset": True})

    async def _sim_seed(self, request: Request) -> Response:
        try:
            body = await self._control_body(request)
        except ValueError as exc:
            return JSONResponse({"error": f"malformed JSON: {exc}"}, status_code=400)
        with self.lock:
            try:
                summary = self.seed(body or self.default_seed())
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"bad seed data: {exc}"}, status_code=400)
            self.dirty = True
        return JSONResponse({"seeded": summary})

    async def _sim_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                faults = Faults.parse(await self._control_body(request))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": f"bad fault config: {exc}"}, status_code=400)
            with self.lock:
                self.faults = faults
                self.rng = random.Random(faults.seed)
        elif request.method == "DELETE":
            with self.lock:
                self.faults = Faults(seed=self.faults.seed)
        with self.lock:
            return JSONResponse(
                {
                    "down": self.faults.down,
                    "seed": self.faults.seed,
                    "rules": [r.to_dict() for r in self.faults.rules],
                }
            )

    async def _sim_webhooks(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await self._control_body(request)
                allowed = set(WebhookTarget.__dataclass_fields__)
                unknown = set(body) - allowed
                if unknown or "url" not in body:
                    raise ValueError(
                        f"need 'url'; allowed keys {sorted(allowed)}; unknown {sorted(unknown)}"
                    )
                target = WebhookTarget(**body)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": f"bad webhook target: {exc}"}, status_code=400)
            with self.lock:
                self.webhook_targets = [t for t in self.webhook_targets if t.url != target.url]
                self.webhook_targets.append(target)
            self.webhooks.start()
        elif request.method == "DELETE":
            with self.lock:
                self.webhook_targets.clear()
            self.webhooks.clear()
        with self.lock:
            return JSONResponse({"targets": [t.public() for t in self.webhook_targets]})

    async def _sim_webhook_log(self, request: Request) -> Response:
        # ``?limit=N``: only the newest N deliveries (0: none). A harness that only asks
        # whether the queue is idle, many times a second, must not serialise the whole log
        # (up to 2,000 deliveries) each time: that CPU is taken from what it measures.
        raw = request.query_params.get("limit")
        if raw is not None and not (raw.isascii() and raw.isdigit()):
            return self.error_response(400, "Invalid limit", f"limit must be 0 or more: {raw!r}")
        log = list(self.webhooks.log)
        if raw is not None:
            log = log[len(log) - int(raw) :] if int(raw) else []
        return JSONResponse(
            {
                "deliveries": log,
                "idle": self.webhooks.idle(),
                "faults": dict(self.webhooks.faults),
            }
        )

    async def _sim_requests(self, request: Request) -> Response:
        with self.lock:
            if request.method == "DELETE":
                self.request_log.clear()
            return JSONResponse({"requests": list(self.request_log)})

    async def _sim_stats(self, request: Request) -> Response:
        with self.lock:
            if request.method == "DELETE":
                self.stats.clear()
                self.status_stats.clear()
            if request.query_params.get("by") == "status":
                return JSONResponse(dict(self.status_stats))
            return JSONResponse(dict(self.stats))

    async def _sim_state(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse(self.dump_state())

    # -- webhooks from handlers ---------------------------------------------------------------

    def emit(self, event: str, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Queue a webhook to every registered target (called by handlers on changes)."""
        if self.webhook_targets:
            self.webhooks.send(list(self.webhook_targets), event, payload, headers or {})


class TransportCapture:
    """ASGI middleware that exposes the server's transport to :meth:`Simulator._reset_connection`.

    uvicorn's ``send`` callable is a bound method of an object holding the asyncio transport;
    the simulated connection reset and timeout faults need it to abort the connection.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            owner = getattr(send, "__self__", None)
            transport = getattr(owner, "transport", None)
            if transport is not None:
                scope["sim.transport"] = transport
        await self.app(scope, receive, send)
