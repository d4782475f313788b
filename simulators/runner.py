"""Run the three simulators in one process: ``itsm-sync simulate``, the demo and the tests.

All three uvicorn servers share one asyncio loop on a background thread. Ports may be 0 (the
OS picks free ones; :attr:`SimulatorCluster.urls` tells which). With ``state_file`` the state
is loaded at start and written back whenever it changed (every second at most) and at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from simulators.base import Simulator, TransportCapture
from simulators.tls import CertFiles, make_self_signed

log = logging.getLogger("simulators")


@dataclass
class Credentials:
    servicenow_username: str = "admin"
    servicenow_password: str = "admin"
    jira_email: str = "admin@example.com"
    jira_api_token: str = "sim-token"
    statuspage_api_key: str = "sim-key"
    statuspage_page_id: str = "simpage0001"


@dataclass
class ClusterConfig:
    host: str = "127.0.0.1"
    servicenow_port: int = 8701
    jira_port: int = 8702
    statuspage_port: int = 8703
    tls: bool = False
    state_file: Path | None = None
    seed: bool = True  # load the default fixtures into empty simulators
    credentials: Credentials = field(default_factory=Credentials)
    fault_seed: int = 0


def build_simulators(config: ClusterConfig) -> dict[str, Simulator]:
    from simulators.jira import JiraSimulator
    from simulators.servicenow import ServiceNowSimulator
    from simulators.statuspage import StatuspageSimulator

    c = config.credentials
    return {
        "servicenow": ServiceNowSimulator(
            username=c.servicenow_username, password=c.servicenow_password, seed=config.fault_seed
        ),
        "jira": JiraSimulator(
            email=c.jira_email, api_token=c.jira_api_token, seed=config.fault_seed
        ),
        "statuspage": StatuspageSimulator(
            api_key=c.statuspage_api_key, page_id=c.statuspage_page_id, seed=config.fault_seed
        ),
    }


class SimulatorCluster:
    """The three simulators behind real sockets. Use as a context manager or start()/stop()."""

    def __init__(
        self, config: ClusterConfig | None = None, simulators: dict[str, Simulator] | None = None
    ) -> None:
        self.config = config or ClusterConfig()
        self.simulators = simulators if simulators is not None else build_simulators(self.config)
        self.urls: dict[str, str] = {}
        self.cert: CertFiles | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._saver_stop = threading.Event()
        self._saver: threading.Thread | None = None

    # -- convenience --------------------------------------------------------------------------

    @property
    def servicenow(self) -> Simulator:
        return self.simulators["servicenow"]

    @property
    def jira(self) -> Simulator:
        return self.simulators["jira"]

    @property
    def statuspage(self) -> Simulator:
        return self.simulators["statuspage"]

    def __enter__(self) -> SimulatorCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        cfg = self.config
        self._load_state_or_seed()
        if cfg.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="itsm-sync-tls-")
            self.cert = make_self_signed(Path(self._tmp.name), cfg.host)
        default_ports = {
            "servicenow": cfg.servicenow_port,
            "jira": cfg.jira_port,
            "statuspage": cfg.statuspage_port,
        }
        ports = {name: default_ports.get(name, 0) for name in self.simulators}
        sockets: dict[str, socket.socket] = {}
        try:
            for name, port in ports.items():
                sockets[name] = _bind(cfg.host, port)
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        scheme = "https" if cfg.tls else "http"
        host_for_url = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        for name, sock in sockets.items():
            port = sock.getsockname()[1]
            self.urls[name] = f"{scheme}://{host_for_url}:{port}"
            sim = self.simulators[name]
            uv_config = uvicorn.Config(
                TransportCapture(sim.build_app()),
                log_level="warning",
                access_log=False,
                lifespan="off",
                ssl_certfile=str(self.cert.cert) if self.cert else None,
                ssl_keyfile=str(self.cert.key) if self.cert else None,
                timeout_keep_alive=30,
                timeout_graceful_shutdown=1,
            )
            server = uvicorn.Server(uv_config)
            self._servers.append(server)
        self._thread = threading.Thread(
            target=self._run, args=(list(sockets.values()),), name="simulators", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(s.started for s in self._servers):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"simulators failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("simulators did not start in time")
            time.sleep(0.01)
        if cfg.state_file is not None:
            self._saver = threading.Thread(target=self._save_loop, name="sim-snapshot", daemon=True)
            self._saver.start()

    def _run(self, sockets: list[socket.socket]) -> None:
        # The loop uvicorn would pick (uvloop where installed): less CPU per request, and the
        # simulators share the machine with what they are used to measure.
        factory = self._servers[0].config.get_loop_factory() if self._servers else None
        loop = factory() if factory is not None else asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            await asyncio.gather(
                *(
                    server.serve(sockets=[sock])
                    for server, sock in zip(self._servers, sockets, strict=True)
                )
            )

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to start(); the thread ends either way
            self._error = exc
        finally:
            loop.close()

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sim in self.simulators.values():
            sim.webhooks.stop()
        self._saver_stop.set()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save_state()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._servers.clear()

    def wait(self) -> None:
        """Block until the servers stop (Ctrl-C stops them)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass

    # -- state --------------------------------------------------------------------------------

    def _load_state_or_seed(self) -> None:
        path = self.config.state_file
        if path is not None and path.is_file():
            try:
                state = json.loads(path.read_text())
            except ValueError as exc:
                raise ValueError(f"{path}: not a simulator state file: {exc}") from exc
            self.load_state(state)
            return
        if self.config.seed:
            for sim in self.simulators.values():
                with sim.lock:
                    sim.seed(sim.default_seed())

    def load_state(self, state: Mapping[str, Any]) -> None:
        for name, sim in self.simulators.items():
            if name in state:
                with sim.lock:
                    sim.load_state(state[name])

    def dump_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sim in self.simulators.items():
            with sim.lock:
                out[name] = sim.dump_state()
                sim.dirty = False
        return out

    def save_state(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.dump_state(), indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: a crash never leaves half a snapshot

    def _save_loop(self) -> None:
        while not self._saver_stop.wait(1.0):
            if any(sim.dirty for sim in self.simulators.values()):
                with contextlib.suppress(OSError):
                    self.save_state()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. asyncio only sets it itself when proto == IPPROTO_TCP; without
    # it every keep-alive request waits ~40 ms (Nagle against the client's delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
