"""TLS and proxy settings of one connector, for requests (pysnow, jira) and httpx clients:
a CA bundle, a client certificate for mutual TLS, an HTTP(S) proxy for this system only."""

from __future__ import annotations

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


def httpx_options(settings: TransportSettings) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client``: verify, cert, proxy."""
    options: dict[str, Any] = {"verify": settings.ca_bundle or True}
    cert = client_cert(settings)
    if cert is not None:
        options["cert"] = cert
    if settings.proxy:
        options["proxy"] = settings.proxy
    return options
