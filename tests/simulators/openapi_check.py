"""Validate simulator responses against the vendors' own OpenAPI documents.

The specs load slowly (the Jira one takes seconds), so each is loaded once per process.
Requests are rebuilt against the spec's own server URL with the simulator's path; Jira v2
paths are checked against the v3 description of the same resource.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from simulators.base import Simulator
from tests.contracts import SPECS

SERVERS = {
    "jira": ("jira-cloud-platform.swagger-v3.v3.json", "https://your-domain.atlassian.net"),
    "statuspage": ("statuspage.swagger.json", "https://api.statuspage.io"),
}


@cache
def load_spec(system: str) -> OpenAPI:
    from openapi_core import Config

    filename, _ = SERVERS[system]
    config = Config(spec_validator_cls=None)
    if system == "statuspage":
        document = json.loads((SPECS / filename).read_text())
        _statuspage_nullable(document)
        return OpenAPI.from_dict(document, config=config)
    return OpenAPI.from_file_path(str(SPECS / filename), config=config)


def _statuspage_nullable(node: Any) -> None:
    """The Statuspage document marks no field nullable and types ``metadata`` as "Object", yet the
    real API sends null for unset fields (recorded payloads: ``resolved_at``, ``description``,
    ``group_id``, ``postmortem_*``...). Accept null for every typed schema; read "Object" as
    "object"."""
    if isinstance(node, dict):
        if node.get("type") == "Object":
            node["type"] = "object"
        if "type" in node:
            node["nullable"] = True
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"].append(None)
        for value in node.values():
            _statuspage_nullable(value)
    elif isinstance(node, list):
        for value in node:
            _statuspage_nullable(value)


def spec_path(system: str, path: str) -> str:
    if system == "jira" and path.startswith("/rest/api/2/"):
        return "/rest/api/3/" + path[len("/rest/api/2/") :]
    if system == "statuspage" and path.endswith(".json"):
        return path[: -len(".json")]
    return path


def validate_entry(system: str, entry: dict[str, Any]) -> None:
    """Raise if the logged response does not match the spec (openapi-core's error says why)."""
    _, server = SERVERS[system]
    path = spec_path(system, entry["path"])
    # Statuspage's server URL ends in /v1; the full path is kept (openapi-core joins the two
    # with urljoin, which would drop a /v1 put on the server side).
    args: dict[str, Any] = {}
    for key, value in entry["query"]:
        args[key] = value
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    request = MockRequest(
        server,
        entry["method"].lower(),
        path,
        args=args,
        headers=headers,
        data=entry["body"].encode() if entry["body"] else None,
        content_type=headers.get("content-type", "application/json").split(";")[0],
    )
    response_headers = {k.lower(): v for k, v in entry["response_headers"].items()}
    content_type = response_headers.get("content-type", "application/json").split(";")[0]
    response = MockResponse(
        entry["response_body"].encode(),
        status_code=entry["status"],
        headers=response_headers,
        content_type=content_type,
    )
    load_spec(system).validate_response(request, response)


def assert_logged_responses_valid(
    sim: Simulator, system: str, *, skip_routes: tuple[str, ...] = ()
) -> int:
    """Validate every logged API response of ``sim`` (not ``/_sim``); return how many."""
    checked = 0
    failures: list[str] = []
    for entry in list(sim.request_log):
        if entry["path"].startswith("/_sim") or entry["fault"] or entry["route"] in skip_routes:
            continue
        try:
            validate_entry(system, entry)
        except Exception as exc:  # collect all, report together
            failures.append(
                f"{entry['method']} {entry['path']} -> {entry['status']}: {type(exc).__name__}: "
                f"{_explain(exc)}\n  body: {entry['response_body'][:300]}"
            )
        checked += 1
    assert not failures, "responses not valid per the vendor spec:\n" + "\n".join(failures)
    return checked


def _explain(exc: Exception) -> str:
    parts = [str(exc)]
    for attr in ("schema_errors", "__cause__"):
        inner = getattr(exc, attr, None)
        if inner:
            parts.append(
                json.dumps([str(e) for e in inner]) if isinstance(inner, list) else str(inner)
            )
    return " | ".join(parts)


def host_of(url: str) -> str:
    return urlsplit(url).netloc
