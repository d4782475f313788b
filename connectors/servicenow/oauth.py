"""OAuth for ServiceNow: a bearer token from ``/oauth_token.do`` (password or client
credentials grant, with the OAuth client of *System OAuth > Application Registry*), refreshed
before it expires (with the refresh token when there is one, else a new grant)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from config.settings import ServiceNowSettings, env_prefix, reveal
from connectors.errors import AuthFailed
from connectors.requests_errors import from_response
from connectors.tls import apply_to_session, read_environment_once

SYSTEM = "servicenow"
REFRESH_MARGIN_SECONDS = 60.0  # a token this close to expiring is replaced first


class ServiceNowOAuth(requests.auth.AuthBase):
    def __init__(
        self,
        settings: ServiceNowSettings,
        base_url: str,
        *,
        instance: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.url = f"{base_url}/oauth_token.do"
        self.env = env_prefix(SYSTEM, instance)
        self.clock = clock
        self._http = requests.Session()
        apply_to_session(self._http, settings)
        read_environment_once(self._http, base_url)
        self._lock = threading.Lock()
        self._access = ""
        self._refresh = ""
        self._expires_at = 0.0
        self.grants: list[str] = []  # the grant types used, in order (for tests and metrics)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def token(self) -> str:
        with self._lock:
            if self._access and self.clock() < self._expires_at - REFRESH_MARGIN_SECONDS:
                return self._access
            if self._refresh:
                try:
                    return self._grant(
                        {"grant_type": "refresh_token", "refresh_token": self._refresh}
                    )
                except AuthFailed:
                    self._refresh = ""  # revoked or expired: a new grant below
            form: dict[str, str] = {"grant_type": self.settings.oauth_grant}
            if self.settings.oauth_grant == "password":
                form["username"] = self.settings.username
                form["password"] = reveal(self.settings.password)
            return self._grant(form)

    def _grant(self, form: dict[str, str]) -> str:
        data: dict[str, Any] = {
            **form,
            "client_id": self.settings.client_id,
            "client_secret": reveal(self.settings.client_secret),
        }
        response = self._http.post(self.url, data=data, timeout=self.settings.timeout_seconds)
        self.grants.append(form["grant_type"])
        if response.status_code in (400, 401):
            raise AuthFailed(
                f"OAuth {form['grant_type']} grant refused (HTTP {response.status_code}): fix "
                f"{self.env}CLIENT_ID / {self.env}CLIENT_SECRET"
                + (
                    f" / {self.env}USERNAME / {self.env}PASSWORD"
                    if form["grant_type"] == "password"
                    else ""
                ),
                system=SYSTEM,
                status=401,
            )
        if response.status_code >= 400:
            raise from_response(SYSTEM, response, "get an OAuth token")
        body = response.json()
        self._access = str(body["access_token"])
        # A refresh-token grant "returns only an access token" (ServiceNow's OAuth API docs):
        # the refresh token we hold stays good for the next one.
        self._refresh = str(body.get("refresh_token") or form.get("refresh_token") or "")
        self._expires_at = self.clock() + float(body.get("expires_in") or 1800)
        return self._access
