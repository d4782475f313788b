"""ServiceNow OAuth (password and client-credentials grants via /oauth_token.do, refreshed
before expiry), Jira personal access tokens (Bearer), and each connector's TLS client
certificate and proxy settings."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
import requests

from config.settings import (
    JiraSettings,
    ServiceNowSettings,
    Settings,
    StatuspageSettings,
    missing_for_run,
)
from connectors.jira import JiraConnector
from connectors.servicenow import ServiceNowConnector
from connectors.servicenow.oauth import ServiceNowOAuth
from connectors.statuspage import StatuspageConnector
from simulators.runner import SimulatorCluster


def _oauth_log(sims: SimulatorCluster) -> list[dict[str, Any]]:
    entries = httpx.get(f"{sims.urls['servicenow']}/_sim/requests").json()["requests"]
    return [e for e in entries if "oauth_token" in str(e.get("path", ""))]


@pytest.mark.parametrize("grant", ["password", "client_credentials"])
def test_servicenow_oauth_reads_with_a_bearer_token(sims: SimulatorCluster, grant: str) -> None:
    settings = ServiceNowSettings.model_validate(
        {"url": sims.urls["servicenow"], "password": "admin", "auth": "oauth",
         "oauth_grant": grant, "client_id": "itsm-sync", "client_secret": "sim-client-secret"}
    )  # fmt: skip
    connector = ServiceNowConnector(settings)
    assert connector.signin().ok
    assert connector.oauth is not None and connector.oauth.grants == [grant]
    httpx.delete(f"{sims.urls['servicenow']}/_sim/requests")
    connector.signin()
    assert connector.oauth.grants == [grant]  # the token is reused, not fetched per call
    entries = httpx.get(f"{sims.urls['servicenow']}/_sim/requests").json()["requests"]
    assert entries and not _oauth_log(sims)


def test_servicenow_oauth_refreshes_before_expiry(sims: SimulatorCluster) -> None:
    now = [0.0]
    settings = ServiceNowSettings.model_validate(
        {"url": sims.urls["servicenow"], "password": "admin", "auth": "oauth",
         "client_id": "itsm-sync", "client_secret": "sim-client-secret"}
    )  # fmt: skip
    connector = ServiceNowConnector(settings)
    assert connector.oauth is not None
    connector.oauth.clock = lambda: now[0]
    first = connector.oauth.token()
    now[0] += 1799 - 120  # two minutes before it expires: still used
    assert connector.oauth.token() == first
    now[0] += 90  # within the last minute: replaced first, with the refresh token
    second = connector.oauth.token()
    assert second != first
    assert connector.oauth.grants == ["password", "refresh_token"]
    assert connector.signin().ok  # the refreshed token works
    # The refresh answer holds an access token only: the refresh token is kept for the next
    # one, rather than sending the password again.
    now[0] += 1799
    assert connector.oauth.token() not in (first, second)
    assert connector.oauth.grants == ["password", "refresh_token", "refresh_token"]
    assert connector.signin().ok


def test_servicenow_oauth_wrong_client_secret_names_the_settings(sims: SimulatorCluster) -> None:
    settings = ServiceNowSettings.model_validate(
        {"url": sims.urls["servicenow"], "auth": "oauth", "oauth_grant": "client_credentials",
         "client_id": "itsm-sync", "client_secret": "wrong"}
    )  # fmt: skip
    probe = ServiceNowConnector(settings).signin()
    assert not probe.ok
    assert "OAuth client_credentials grant refused (HTTP 401)" in probe.detail
    assert "ITSM_SYNC_SERVICENOW__CLIENT_SECRET" in probe.detail
    assert "wrong" not in probe.detail


def test_oauth_settings_required_by_run() -> None:
    s = Settings.model_validate(
        {
            "servicenow": {
                "auth": "oauth",
                "oauth_grant": "client_credentials",
                "webhook_secret": "w",
            }
        }
    )
    missing = missing_for_run(s)
    assert "ITSM_SYNC_SERVICENOW__CLIENT_ID" in missing
    assert "ITSM_SYNC_SERVICENOW__CLIENT_SECRET" in missing
    assert "ITSM_SYNC_SERVICENOW__PASSWORD" not in missing  # the client's own grant


def test_jira_personal_access_token_is_sent_as_bearer(sims: SimulatorCluster) -> None:
    pat = JiraConnector(
        JiraSettings.model_validate(
            {"url": sims.urls["jira"], "auth": "bearer", "api_token": "sim-pat", "email": ""}
        )
    )
    assert pat.signin().ok
    prepared = pat.jira._session.prepare_request(requests.Request("GET", sims.urls["jira"]))
    assert prepared.headers["Authorization"] == "Bearer sim-pat"
    wrong = JiraConnector(
        JiraSettings.model_validate(
            {"url": sims.urls["jira"], "auth": "bearer", "api_token": "sim-token"}
        )
    )
    assert not wrong.signin().ok  # a Cloud API token is no personal access token


def test_client_certificate_and_proxy_reach_each_client(tmp_path: Any) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    common = {"client_cert": str(cert), "client_key": str(key), "proxy": "http://proxy.test:3128",
              "ca_bundle": str(cert)}  # fmt: skip
    sn = ServiceNowConnector(ServiceNowSettings.model_validate({**common, "password": "p"}))
    session = sn._client.session
    assert session.cert == (str(cert), str(key))
    assert session.proxies == {"http": "http://proxy.test:3128", "https": "http://proxy.test:3128"}
    assert session.verify == str(cert)
    oauth = ServiceNowOAuth(
        ServiceNowSettings.model_validate({**common, "auth": "oauth"}), "https://x.test"
    )
    assert oauth._http.cert == (str(cert), str(key))  # the token endpoint goes the same way
    jira = JiraConnector(JiraSettings.model_validate({**common, "api_token": "t"}))
    js = jira.jira._session
    assert js.cert == (str(cert), str(key))
    assert js.proxies == {"http": "http://proxy.test:3128", "https": "http://proxy.test:3128"}
    with pytest.raises(ssl.SSLError):  # httpx loads the client certificate at once: not PEM
        StatuspageConnector(StatuspageSettings.model_validate({**common, "api_key": "k"}))
    sp = StatuspageConnector(
        StatuspageSettings.model_validate({"api_key": "k", "proxy": "http://proxy.test:3128"})
    )
    [transport] = [t for t in sp._http._mounts.values() if t is not None]
    assert transport._pool._proxy_url.host == b"proxy.test"  # httpx's proxy transport


def test_the_environment_is_read_once_and_a_connectors_own_settings_win(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests looked up proxies, CA bundle and ~/.netrc on every call (~0.2 ms of CPU each,
    measured); the connectors look once at start-up and then stop looking."""
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text("ca")
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    (tmp_path / ".netrc").write_text("machine acme.service-now.com login intruder password x\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    sn = ServiceNowConnector(
        ServiceNowSettings.model_validate({"url": "https://acme.service-now.com", "password": "p"})
    )
    session = sn._client.session
    assert session.trust_env is False
    assert session.proxies == {"https": "http://egress.test:3128"}
    assert session.verify == str(bundle)
    prepared = session.prepare_request(requests.Request("GET", "https://acme.service-now.com/x"))
    assert prepared.headers["Authorization"] == requests.auth._basic_auth_str("admin", "p")
    # NO_PROXY is honoured; a connector's own CA bundle is not overridden by the environment's.
    own = tmp_path / "own-ca.pem"
    own.write_text("ca")
    jira = JiraConnector(
        JiraSettings.model_validate(
            {"url": "https://jira.internal.test", "api_token": "t", "ca_bundle": str(own)}
        )
    )
    js = jira.jira._session
    assert js.trust_env is False and js.proxies == {}
    assert js.verify == str(own)
    settings = js.merge_environment_settings("https://jira.internal.test/x", {}, None, None, None)
    assert settings["verify"] == str(own) and not settings["proxies"]
