"""TLS and proxy settings of one connector, for requests (pysnow, jira) and httpx clients:
a CA bundle, a client certificate for mutual TLS, an HTTP(S) proxy for this system only."""

from __future__ import annotations

import os
from typing import Any, Protocol

import requests


class TransportSettings(Protocol):
    ca_bundle: str | None
    client_cert: str | None
    client_key: str | None
    proxy: str | None


def client_cert(settings: TransportSettings) -> str | tuple[str, str] | None:
    if not settings.client_cert:
        return None
    if settings.client_key:
        return (settings.client_cert, settings.client_key)
    return settings.client_cert


def apply_to_session(session: requests.Session, settings: TransportSettings) -> None:
    """Configure a requests session: verify, client certificate, proxies."""
    if settings.ca_bundle:
        session.verify = settings.ca_bundle
    cert = client_cert(settings)
    if cert is not None:
        session.cert = cert
    if settings.proxy:
        session.proxies = {"http": settings.proxy, "https": settings.proxy}


def read_environment_once(session: requests.Session, url: str) -> None:
    """Look up once what requests would otherwise look up in the environment on every call:
    the proxy for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, honouring ``NO_PROXY``) and a CA
    bundle named by ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``; then stop looking. Per call
    that lookup (and ``~/.netrc``'s) cost ~0.2 ms of CPU, measured, on every remote call.
    A connector's own ``proxy`` and ``ca_bundle`` settings win over the environment (with
    ``trust_env`` on, the environment's CA bundle overrode a session's own), and ``~/.netrc``
    can no longer replace the connector's credentials."""
    if not session.proxies:
        found = requests.utils.get_environ_proxies(url)  # {} where NO_PROXY names the host
        session.proxies = {k: v for k, v in found.items() if k != "no"}
    if session.verify is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    session.trust_env = False


def httpx_options(settings: TransportSettings) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client``: verify, cert, proxy."""
    options: dict[str, Any] = {"verify": settings.ca_bundle or True}
    cert = client_cert(settings)
    if cert is not None:
        options["cert"] = cert
    if settings.proxy:
        options["proxy"] = settings.proxy
    return options
