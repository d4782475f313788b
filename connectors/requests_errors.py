"""Turn what a ``requests``-based client library raised into the one error taxonomy.

pysnow and jira (pycontribs) both sit on ``requests``; their failures arrive as
``requests.HTTPError`` (with the response), ``requests.Timeout``, ``requests.ConnectionError``
or the library's own exception carrying a response. This module maps all of them, through
:func:`connectors.errors.classify_response`, so there is one table for every connector.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from connectors.errors import ConnectorError, Fatal, Retriable, classify_response, network_cause
from connectors.http import CALLS


class TimeoutSession(requests.Session):
    """A session that puts a timeout on every request, whatever the library passes, and counts
    every response by (system, method, status) in :data:`connectors.http.CALLS`."""

    def __init__(self, system: str, timeout: float, connections: int = 10) -> None:
        super().__init__()
        self.default_timeout = timeout
        size_pool(self, connections)
        self.hooks["response"].append(self._count)
        self._system = system

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        CALLS.add(self._system, response.request.method or "", response.status_code)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None or kwargs["timeout"] > self.default_timeout:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)


def size_pool(session: requests.Session, connections: int) -> None:
    """Keep up to ``connections`` connections per host alive (requests keeps 10: the 11th
    concurrent call would open, then drop, a connection of its own every time)."""
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(pool_maxsize=max(10, connections)))


def from_response(system: str, response: requests.Response, what: str) -> ConnectorError:
    return classify_response(
        system=system,
        status=response.status_code,
        body=response.content,
        headers=response.headers,
        what=what,
    )


def translate(system: str, exc: BaseException, what: str) -> ConnectorError:
    """The taxonomy error for ``exc``, raised by a requests-based library during ``what``."""
    if isinstance(exc, ConnectorError):
        return exc
    response = getattr(exc, "response", None)
    if isinstance(response, requests.Response) and response.status_code >= 400:
        return from_response(system, response, what)
    if isinstance(exc, requests.RequestException):
        method = exc.request.method if exc.request is not None else "?"
        CALLS.add(system, method or "?", type(exc).__name__)
    if isinstance(exc, requests.Timeout):
        return Retriable(f"{what} timed out", system=system)
    if isinstance(exc, requests.ConnectionError):
        return Retriable(f"{what}: {network_cause(exc, system=system)}", system=system)
    if isinstance(exc, requests.RequestException):
        return Retriable(f"{what}: {type(exc).__name__}", system=system)
    return Fatal(f"{what}: {type(exc).__name__}: {exc}", system=system)
