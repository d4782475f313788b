"""The service in-process on a free port, wired to a set of simulators: for the demo, the
end-to-end tests and the benchmarks. Everything between the parts is real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import uvicorn

from config.settings import Settings
from service.app import create_app
from service.runtime import Runtime, settle_gc
from service.supervisor import worker_processes
from simulators.runner import ClusterConfig

T = TypeVar("T")


class TimedOut(AssertionError):
    """A wait_for ran out of time; the message says what it waited for."""


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` every ``interval`` seconds until it returns something truthy (and return
    that), or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise TimedOut(f"timed out waiting for {what}")


def serving(url: str, timeout: float = 10.0) -> bool:
    """Whether the ``itsm-sync run`` at ``url`` does its work: its database answers and its
    workers run (those two checks of ``/readyz``; a test's faults may make a remote system or
    the queue age fail the others). ``/healthz`` only says the process answers."""
    try:
        checks = httpx.get(f"{url}/readyz", timeout=timeout).json()["checks"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return bool(checks["database"]["ok"] and checks["workers"]["ok"])


WEBHOOK_SECRETS = {
    "servicenow": "demo-servicenow-secret",
    "jira": "demo-jira-secret",
    "statuspage": "demo-statuspage-secret",
}


class Simulators(Protocol):
    """What the service needs of running simulators: their addresses and how they were started
    (a :class:`simulators.runner.SimulatorCluster` here, or the benchmarks' simulators in a
    process of their own)."""

    @property
    def urls(self) -> dict[str, str]: ...

    @property
    def config(self) -> ClusterConfig: ...


def settings_for(cluster: Simulators, database_url: str, **overrides: Any) -> Settings:
    """Settings pointing at ``cluster`` (credentials as the cluster was started with)."""
    creds = cluster.config.credentials
    data: dict[str, Any] = {
        "servicenow": {
            "url": cluster.urls["servicenow"],
            "username": creds.servicenow_username,
            "password": creds.servicenow_password,
            "webhook_secret": WEBHOOK_SECRETS["servicenow"],
        },
        "jira": {
            "url": cluster.urls["jira"],
            "email": creds.jira_email,
            "api_token": creds.jira_api_token,
            "webhook_secret": WEBHOOK_SECRETS["jira"],
        },
        "statuspage": {
            "url": cluster.urls["statuspage"] + "/v1",
            "api_key": creds.statuspage_api_key,
            "page_id": creds.statuspage_page_id,
            "webhook_secret": WEBHOOK_SECRETS["statuspage"],
        },
        "database_url": database_url,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


def simulator_env(
    cluster: Simulators, database_url: str | None = None, *, api_token: str = ""
) -> dict[str, str]:
    """The simulator profile as ``ITSM_SYNC_*`` variables, for ``itsm-sync`` in a subprocess:
    the cluster's URLs and credentials and the demo webhook secrets (no setting has a secret
    by default), the database and, with ``api_token``, an admin API token."""
    creds = cluster.config.credentials
    env = {
        "ITSM_SYNC_SERVICENOW__URL": cluster.urls["servicenow"],
        "ITSM_SYNC_SERVICENOW__USERNAME": creds.servicenow_username,
        "ITSM_SYNC_SERVICENOW__PASSWORD": creds.servicenow_password,
        "ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET": WEBHOOK_SECRETS["servicenow"],
        "ITSM_SYNC_JIRA__URL": cluster.urls["jira"],
        "ITSM_SYNC_JIRA__EMAIL": creds.jira_email,
        "ITSM_SYNC_JIRA__API_TOKEN": creds.jira_api_token,
        "ITSM_SYNC_JIRA__WEBHOOK_SECRET": WEBHOOK_SECRETS["jira"],
        "ITSM_SYNC_STATUSPAGE__URL": cluster.urls["statuspage"] + "/v1",
        "ITSM_SYNC_STATUSPAGE__API_KEY": creds.statuspage_api_key,
        "ITSM_SYNC_STATUSPAGE__PAGE_ID": creds.statuspage_page_id,
        "ITSM_SYNC_STATUSPAGE__WEBHOOK_SECRET": WEBHOOK_SECRETS["statuspage"],
    }
    if database_url is not None:
        env["ITSM_SYNC_DATABASE_URL"] = database_url
    if api_token:
        env["ITSM_SYNC_API_TOKENS"] = json.dumps(
            [{"name": "sim", "token": api_token, "role": "admin"}]
        )
    return env


class Service:
    """``itsm-sync run`` in this process: a Runtime plus uvicorn on a free port.

    By default the poller and the workers run in this process too (``run
    --workers-in-process``), so that tests can reach into them; ``worker_process=True`` runs
    them in a worker process as ``itsm-sync run`` does by default. ``freeze_gc`` (default: as
    ``worker_process``) moves the start-up objects out of the garbage collector's way once
    started, as ``run`` does (:func:`service.runtime.settle_gc`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        poll: bool = True,
        workers: bool = True,
        worker_process: bool = False,
        freeze_gc: bool | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.app = create_app(self.runtime)
        self._poll = poll
        self._workers = workers
        self._worker_process = worker_process
        self._freeze_gc = worker_process if freeze_gc is None else freeze_gc
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without, small answers wait ~40 ms for delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        )
        self._thread: threading.Thread | None = None

    def start(self) -> Service:
        if self._worker_process:
            child = worker_processes(self.runtime.settings)
            child.start()
            self.runtime.start(worker_process=child)
            if not child.wait_ready(60):
                self.runtime.stop()
                raise RuntimeError("the worker process did not start")
        else:
            self.runtime.start(poll=self._poll, workers=self._workers)

        def serve() -> None:
            # As `itsm-sync run` serves: uvicorn picks the event loop (uvloop where installed).
            self._server.run(sockets=[self._sock])

        self._thread = threading.Thread(target=serve, name="itsm-sync-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        if self._freeze_gc:
            settle_gc()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.runtime.stop()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def register_webhooks(self, cluster: Simulators) -> None:
        """Point each simulator's outbound webhooks at this service."""
        register_webhooks(cluster, self.url)


def register_webhooks(cluster: Simulators, service_url: str) -> None:
    """Add ``service_url`` as a webhook target of every simulator (others stay registered),
    with the secret each system's connector expects."""
    with httpx.Client(timeout=10, verify=False) as client:
        for system, url in cluster.urls.items():
            target = f"{service_url}/webhooks/{system}"
            secret = WEBHOOK_SECRETS[system]
            if system == "statuspage":
                target += f"?token={secret}"
            client.post(
                f"{url}/_sim/webhooks", json={"url": target, "secret": secret}
            ).raise_for_status()


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'itsm-sync.db'}"
