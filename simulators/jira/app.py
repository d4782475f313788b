"""Jira Cloud platform REST simulator: ``/rest/api/2`` (wiki strings) and ``/rest/api/3`` (ADF).

The routes, envelopes, status codes, error bodies, auth, pagination, time formats, rate-limit
headers and webhooks follow Jira Cloud (see ``docs/simulators/jira.md`` for every route and
every deliberate difference). State is one JSON-able structure: the site :class:`Catalog`
plus issues, issue links and id counters.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import Response

from simulators.base import (
    JSONResponse,
    MalformedBody,
    PaceLimit,
    SimHTTPError,
    SimRequest,
    Simulator,
    WebhookTarget,
    hmac_sha256_hex,
)

from . import adf, jql, times
from .catalog import CUSTOM_CLAUSE_SUFFIX, CUSTOM_TYPES, STATUS_CATEGORIES, Catalog, Ctx
from .fields import BY_ID, CANNOT_SET, PSEUDO_FIELDS, RICH_TEXT, SYSTEM_FIELDS
from .jql_schema import KEY_RE, JqlSchema, key_sort
from .permissions import PERMISSIONS, USER_GLOBAL

Obj = dict[str, Any]

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "jira.json"
JSON_TYPE = "application/json;charset=UTF-8"
NOT_FOUND = "Issue does not exist or you do not have permission to see it."
UNAUTHORIZED = "Client must be authenticated to access this resource."
# Project role membership where a project does not list it ("roleMembers": {role: [accountId or
# group name]}): administrators are the site admins, the other roles every licensed user.
DEFAULT_ROLE_MEMBERS: dict[str, list[str]] = {
    "Administrators": ["site-admins"],
    "Developers": ["jira-software-users"],
    "Users": ["jira-software-users"],
}
# "Get available gadgets": what a dashboard may hold.
GADGETS: list[Obj] = [
    {
        "moduleKey": f"com.atlassian.jira.gadgets:{name}-gadget",
        "title": title,
        "uri": f"rest/gadgets/1.0/g/com.atlassian.jira.gadgets:{name}-gadget/gadgets/"
        f"{name}-gadget.xml",
    }
    for name, title in (("filter-results", "Filter Results"), ("assigned-to-me", "Assigned to Me"))
]
FILTER_GONE = (
    "The selected filter is not available to you, perhaps it has been deleted or had its "
    "permissions changed."
)
GADGET_COLORS = ("blue", "red", "yellow", "green", "cyan", "purple", "gray", "white")
# Longest request target (path and query) a GET search may have; longer gets the edge's 414.
MAX_URL = 8192
VERSIONS = {"2": "2", "3": "3", "latest": "2"}
SERVER_VERSION = [1001, 0, 0]
EXPAND_ISSUE = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"
ISSUE_LINK_NAME = "Link"
MAX_TEXT = 32767
_INVALID = object()  # a field value that failed validation (its error is already recorded)


class JiraJSON(JSONResponse):
    """JSON with the exact content type Jira sends (atlassian-python-api checks it on 401)."""

    media_type = JSON_TYPE


def _page_bean(base: str, start: int, limit: int, total: int, values: list[Obj]) -> Obj:
    """Jira's paged envelope (``PageBean``): startAt/maxResults/total/isLast, and nextPage."""
    out: Obj = {
        "self": f"{base}?startAt={start}&maxResults={limit}",
        "maxResults": limit,
        "startAt": start,
        "total": total,
        "isLast": start + len(values) >= total,
        "values": values,
    }
    if not out["isLast"]:
        out["nextPage"] = f"{base}?startAt={start + limit}&maxResults={limit}"
    return out


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JiraJSON(data, status_code=status, headers=dict(headers or {}))


def _fail(
    status: int,
    messages: Iterable[str] = (),
    errors: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> SimHTTPError:
    msgs = list(messages)
    return SimHTTPError(
        status, msgs[0] if msgs else "", dict(errors or {}), messages=msgs, headers=headers
    )


def _not_found() -> SimHTTPError:
    return _fail(404, [NOT_FOUND])


_UNITS = {"w": 5 * 8 * 3600, "d": 8 * 3600, "h": 3600, "m": 60}


def _parse_duration(text: str) -> int | None:
    """Jira durations ("1w 2d 3h 4m", a working day of 8 h and week of 5 days) in seconds."""
    parts = text.split()
    if not parts:
        return None
    total = 0
    for part in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([wdhm])", part)
        if m is None:
            return None
        total += int(float(m.group(1)) * _UNITS[m.group(2)])
    return total


def _duration(seconds: int) -> str:
    out = []
    for unit in "wdhm":
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return " ".join(out) or "0m"


def _csv(values: Iterable[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


def _int_arg(req: SimRequest, name: str, default: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise _fail(400, [f"The value '{raw}' is not a valid number for '{name}'."]) from exc


class JiraSimulator(Simulator):
    name = "jira"

    def __init__(
        self,
        *,
        email: str = "admin@example.com",
        api_token: str = "sim-token",
        seed: int = 0,
        per_issue_writes: int | None = 20,
        per_issue_window_seconds: float = 2.0,
        burst_per_second: int | None = None,
    ) -> None:
        self.email = email
        self.api_token = api_token
        # A Data Center personal access token (Authorization: Bearer) of the same account.
        self.pat = "sim-pat"
        self.limits: Obj = {
            "burst_per_second": burst_per_second,
            "per_issue_writes": per_issue_writes,
            "per_issue_window_seconds": per_issue_window_seconds,
        }
        self._burst: dict[str, deque[float]] = {}
        self._issue_writes: dict[str, deque[float]] = {}
        # Requests per second over every API call, whatever the route (off by default).
        self.pace = PaceLimit()
        super().__init__(seed=seed)

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        self.catalog = Catalog()
        self.issues: dict[str, Obj] = {}  # by id
        self.links: dict[str, Obj] = {}  # issue links by id
        self.keys: dict[str, str] = {}  # issue key -> id
        self.counters: Obj = {
            "issue": 10000,
            "comment": 10000,
            "history": 10000,
            "remotelink": 10000,
            "link": 10000,
            "attachment": 10000,
            "worklog": 10000,
            "filter": 10000,
            "dashboard": 10000,
            "gadget": 10000,
            "project": {},
        }
        self.filters_by_id: dict[str, Obj] = {}
        # Every site has the system dashboard (id 10000).
        self.dashboards_by_id: dict[str, Obj] = {
            "10000": {
                "id": "10000",
                "name": "Default dashboard",
                "description": "",
                "owner": None,
                "sharePermissions": [{"type": "global"}],
                "editPermissions": [],
                "systemDashboard": True,
                "gadgets": [],
                "refreshMs": 0,
            }
        }
        self.files: dict[str, str] = {}  # attachment id -> content, base64
        self._burst = {}
        self._issue_writes = {}

    def dump_state(self) -> Obj:
        return {
            "catalog": self.catalog.dump(),
            "issues": copy.deepcopy(self.issues),
            "links": copy.deepcopy(self.links),
            "counters": copy.deepcopy(self.counters),
            "files": dict(self.files),
            "filters": copy.deepcopy(self.filters_by_id),
            "dashboards": copy.deepcopy(self.dashboards_by_id),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.reset()
        self.catalog.load(state.get("catalog") or {})
        self.issues = copy.deepcopy(dict(state.get("issues") or {}))
        self.keys = {i["key"]: iid for iid, i in self.issues.items()}
        self.links = copy.deepcopy(dict(state.get("links") or {}))
        self.counters.update(copy.deepcopy(dict(state.get("counters") or {})))
        self.files = dict(state.get("files") or {})
        self.filters_by_id.update(copy.deepcopy(dict(state.get("filters") or {})))
        self.dashboards_by_id.update(copy.deepcopy(dict(state.get("dashboards") or {})))

    def default_seed(self) -> Obj:
        return dict(json.loads(FIXTURE.read_text()))

    def seed(self, data: Mapping[str, Any]) -> Obj:
        if not isinstance(data, Mapping):
            raise ValueError("seed data must be a JSON object")
        try:
            return self._seed(data)
        except AttributeError as exc:  # a list where an object belongs, say
            raise ValueError(f"malformed seed data: {exc}") from exc

    def _seed(self, data: Mapping[str, Any]) -> Obj:
        summary: Obj = self.catalog.seed(data)
        issues = data.get("issues") or []
        for raw in issues:
            self._seed_issue(raw)
        summary["issues"] = len(issues)
        for key, comments in (data.get("comments") or {}).items():
            issue = self._find_issue(key)
            if issue is None:
                raise ValueError(f"comments for unknown issue {key}")
            page = comments.get("comments", []) if isinstance(comments, Mapping) else comments
            for raw in page:
                issue["comments"].append(self._seed_comment(raw))
        for key, links in (data.get("remotelinks") or {}).items():
            issue = self._find_issue(key)
            if issue is None:
                raise ValueError(f"remote links for unknown issue {key}")
            for raw in links:
                issue["remotelinks"].append(self._seed_remotelink(raw))
        for key, props in (data.get("properties") or {}).items():
            issue = self._find_issue(key)
            if issue is None:
                raise ValueError(f"properties for unknown issue {key}")
            issue["properties"].update(dict(props))
        for raw in data.get("links") or []:
            lt = self.catalog.find("linktypes", raw["type"])
            inward, outward = self._find_issue(raw["inward"]), self._find_issue(raw["outward"])
            if lt is None or inward is None or outward is None:
                raise ValueError(f"bad issue link {raw}")
            lid = self._next("link")
            self.links[lid] = {
                "id": lid,
                "type": lt["id"],
                "inward": inward["id"],
                "outward": outward["id"],
            }
        self._api_user()
        return summary

    def _next(self, counter: str) -> str:
        self.counters[counter] += 1
        return str(self.counters[counter])

    def _next_key(self, project: Obj) -> str:
        key = project["key"]
        n = int(self.counters["project"].get(key, 0)) + 1
        while f"{key}-{n}" in self.keys:  # only after a hand-edited state file
            n += 1
        self.counters["project"][key] = n
        return f"{key}-{n}"

    def _api_user(self) -> str:
        """The account id of the configured API user (created on demand)."""
        user = self.catalog.user_by({"emailAddress": self.email})
        if user is None:
            return str(
                self.catalog.ensure_user(
                    {
                        "emailAddress": self.email,
                        "displayName": "Jira Admin",
                        "groups": ["jira-software-users", "site-admins"],
                    }
                )
            )
        return str(user["accountId"])

    # -- seeding issues -----------------------------------------------------------------------

    def _seed_time(self, value: Any, default: int | None) -> int | None:
        if value is None or value == "":
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return times.parse(str(value))

    def _seed_issue(self, raw: Mapping[str, Any]) -> Obj:
        cat = self.catalog
        f = dict(raw.get("fields") or {})
        key = str(raw.get("key") or "").upper() or None
        project_ref = f.get("project") or raw.get("project")
        if project_ref is None and key:
            project_ref = {"key": key.rsplit("-", 1)[0]}
        project = cat.ensure_project(
            project_ref if isinstance(project_ref, Mapping) else {"key": project_ref}
        )
        if project is None:
            raise ValueError(f"issue {key or raw}: unknown project {project_ref!r}")
        if key and not KEY_RE.match(key):
            raise ValueError(f"bad issue key {key}")
        if key and key.rsplit("-", 1)[0] != project["key"]:
            raise ValueError(f"issue key {key} is not in project {project['key']}")
        existing = self._find_issue(key) if key else None
        if existing is not None:
            self._drop_issue(existing)
        itype = cat.ensure("issuetypes", f.get("issuetype")) or cat.get(
            "issuetypes", project["issuetypes"][0]
        )
        if itype is None:
            raise ValueError(f"issue {key}: no issue type")
        if itype["id"] not in project["issuetypes"]:
            project["issuetypes"].append(itype["id"])
        initial = cat.data["workflow"]["initial"]
        status = cat.ensure("statuses", f.get("status")) or cat.get("statuses", initial)
        if status is None:
            raise ValueError(f"issue {key}: no status")
        priority = (
            cat.ensure("priorities", f["priority"])
            if f.get("priority")
            else (self._default_priority())
        )
        resolution = cat.ensure("resolutions", f.get("resolution"))
        now = times.now_ms()
        created = self._seed_time(f.get("created") or raw.get("created"), now) or now
        updated = self._seed_time(f.get("updated") or raw.get("updated"), created) or created
        api_user = self._api_user()
        fields: Obj = {
            "summary": str(f.get("summary") or ""),
            "description": f.get("description"),
            "environment": f.get("environment"),
            "issuetype": itype["id"],
            "status": status["id"],
            "priority": priority["id"] if priority else None,
            "assignee": cat.ensure_user(f.get("assignee")),
            "reporter": cat.ensure_user(f.get("reporter", api_user)),
            "creator": cat.ensure_user(f.get("creator") or f.get("reporter") or api_user),
            "labels": [str(x) for x in f.get("labels") or []],
            "components": [
                c
                for c in (cat.ensure_component(project, x) for x in f.get("components") or [])
                if c
            ],
            "resolution": resolution["id"] if resolution else None,
            "resolutiondate": self._seed_time(f.get("resolutiondate"), None),
            "created": created,
            "updated": updated,
            "statuscategorychangedate": self._seed_time(f.get("statuscategorychangedate"), created),
            "duedate": times.parse_date(f["duedate"]) if f.get("duedate") else None,
        }
        if fields["resolution"] and fields["resolutiondate"] is None:
            fields["resolutiondate"] = updated
        extra: Obj = {}
        ctx = Ctx("", "2", UTC)
        for fid, value in f.items():
            if fid in fields or fid in ("project", "comment", "issuelinks"):
                continue
            cf = cat.custom(fid)
            if cf is not None:
                errors: dict[str, str] = {}
                conv = self._convert_custom(cf, value, ctx, errors, lenient=True)
                if conv is not _INVALID:
                    fields[fid] = conv
                    continue
            extra[fid] = value
        iid = str(raw.get("id") or "")
        if not iid.isdigit() or iid in self.issues:
            iid = self._next("issue")
        else:
            self.counters["issue"] = max(self.counters["issue"], int(iid))
        if key is None:
            key = self._next_key(project)
        else:
            n = int(key.rsplit("-", 1)[1])
            counters = self.counters["project"]
            counters[project["key"]] = max(counters.get(project["key"], 0), n)
        issue: Obj = {
            "id": iid,
            "key": key,
            "projectId": project["id"],
            "fields": fields,
            "extra": extra,
            "comments": [],
            "histories": [],
            "properties": dict(raw.get("properties") or {}),
            "remotelinks": [],
            "watchers": [fields["reporter"]] if fields["reporter"] else [],
        }
        comment_field = f.get("comment")
        raw_comments = list(raw.get("comments") or [])
        if isinstance(comment_field, Mapping):
            raw_comments = list(comment_field.get("comments") or []) + raw_comments
        self._put_issue(issue)
        for c in raw_comments:
            issue["comments"].append(self._seed_comment(c))
        for link in raw.get("remotelinks") or []:
            issue["remotelinks"].append(self._seed_remotelink(link))
        changelog = raw.get("changelog")
        for h in (changelog or {}).get("histories") or []:
            hid = str(h.get("id") or self._next("history"))
            issue["histories"].append(
                {
                    "id": hid,
                    "author": cat.ensure_user(h.get("author")),
                    "created": self._seed_time(h.get("created"), updated),
                    "items": [dict(i) for i in h.get("items") or []],
                }
            )
        return issue

    def _seed_comment(self, raw: Mapping[str, Any]) -> Obj:
        cid = str(raw.get("id") or "")
        used = {c["id"] for i in self.issues.values() for c in i["comments"]}
        if not cid.isdigit() or cid in used:
            cid = self._next("comment")
        else:
            self.counters["comment"] = max(self.counters["comment"], int(cid))
        author = self.catalog.ensure_user(raw.get("author")) or self._api_user()
        created = self._seed_time(raw.get("created"), times.now_ms()) or times.now_ms()
        return {
            "id": cid,
            "author": author,
            "updateAuthor": self.catalog.ensure_user(raw.get("updateAuthor")) or author,
            "body": raw.get("body") or "",
            "created": created,
            "updated": self._seed_time(raw.get("updated"), created),
            "visibility": dict(raw["visibility"]) if raw.get("visibility") else None,
            "jsdPublic": bool(raw.get("jsdPublic", True)),
        }

    def _seed_remotelink(self, raw: Mapping[str, Any]) -> Obj:
        rid = str(raw.get("id") or "")
        used = {str(r["id"]) for i in self.issues.values() for r in i["remotelinks"]}
        if not rid.isdigit() or rid in used:
            rid = self._next("remotelink")
        else:
            self.counters["remotelink"] = max(self.counters["remotelink"], int(rid))
        link = {k: copy.deepcopy(v) for k, v in raw.items() if k not in ("id", "self")}
        link["id"] = int(rid)
        return link

    def _put_issue(self, issue: Obj) -> None:
        self.issues[issue["id"]] = issue
        self.keys[issue["key"]] = issue["id"]

    def _drop_issue(self, issue: Obj) -> None:
        self.issues.pop(issue["id"], None)
        self.keys.pop(issue["key"], None)
        for lid in [
            lid for lid, lk in self.links.items() if issue["id"] in (lk["inward"], lk["outward"])
        ]:
            del self.links[lid]

    # -- framework hooks ----------------------------------------------------------------------

    def error_response(
        self, status: int, message: str, detail: Any = None, **extra: Any
    ) -> Response:
        messages = extra.get("messages")
        if messages is None:
            messages = [message] if message else []
        errors = detail if isinstance(detail, dict) else {}
        return _json(
            {"errorMessages": list(messages), "errors": errors}, status, extra.get("headers")
        )

    def _rate_headers(self, retry_after: int, reason: str, limit: int) -> dict[str, str]:
        reset = datetime.fromtimestamp(time.time() + retry_after, UTC)
        return {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
            "RateLimit-Reason": reason,
        }

    def rate_limit_response(self, retry_after: int) -> Response:
        limit = self.limits["burst_per_second"] or 100
        return self.error_response(
            429,
            "Rate limit exceeded.",
            headers=self._rate_headers(max(1, int(retry_after)), "jira-burst-based", limit),
        )

    def sign_webhook(self, target: WebhookTarget, body: bytes) -> dict[str, str]:
        if not target.secret:
            return {}
        return {"X-Hub-Signature": "sha256=" + hmac_sha256_hex(target.secret, body)}

    def authenticate(self, req: SimRequest) -> Response | None:
        if req.path.startswith("/_sim/"):
            req.user = self._api_user()
            return None
        header = req.headers.get("authorization", "")
        kind, _, cred = header.partition(" ")
        account: str | None = None
        if kind.lower() == "basic" and cred:
            try:
                email, _, token = base64.b64decode(cred.strip()).decode().partition(":")
            except (ValueError, binascii.Error, UnicodeDecodeError):
                email, token = "", ""
            if email.lower() == self.email.lower() and token == self.api_token:
                account = self._api_user()
            else:
                user = self.catalog.user_by({"emailAddress": email}) if email else None
                if user and user.get("apiToken") and user["apiToken"] == token and user["active"]:
                    account = str(user["accountId"])
        elif kind.lower() == "bearer" and cred and self.pat and cred.strip() == self.pat:
            # Data Center: a personal access token. (Cloud refuses its API tokens as Bearer.)
            account = self._api_user()
        if account is None:
            headers = {"WWW-Authenticate": 'Basic realm="protected-by-api-token"'}
            if header:
                headers["X-Seraph-LoginReason"] = "AUTHENTICATED_FAILED"
            return _json({"errorMessages": [UNAUTHORIZED], "errors": {}}, 401, headers)
        req.user = account
        return self._burst_check(req)

    def _burst_window(self, req: SimRequest) -> deque[float]:
        q = self._burst.setdefault(f"{req.method} {req.route}", deque())
        now = time.monotonic()
        while q and q[0] <= now - 1.0:
            q.popleft()
        return q

    def _burst_check(self, req: SimRequest) -> Response | None:
        wait = self.pace.check()
        if wait is not None:
            return self.rate_limit_response(wait)
        q = self._burst_window(req)
        limit = self.limits["burst_per_second"]
        if limit and len(q) >= limit:
            retry = max(1, math.ceil(q[0] + 1.0 - time.monotonic()))
            return self.error_response(
                429,
                "Rate limit exceeded.",
                headers=self._rate_headers(retry, "jira-burst-based", int(limit)),
            )
        q.append(time.monotonic())
        return None

    def extra_headers(self, req: SimRequest, response: Response) -> None:
        if req.user is None or req.path.startswith("/_sim/"):
            return
        limit = int(self.limits["burst_per_second"] or 100)
        if "x-ratelimit-limit" not in response.headers:
            used = len(self._burst_window(req))
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(max(0, limit - used))
        response.headers["X-AAccountId"] = str(req.user)

    def _write_check(self, issue: Obj) -> None:
        """The per-issue write limit (``jira-per-issue-on-write``)."""
        limit = self.limits["per_issue_writes"]
        if not limit:
            return
        window = float(self.limits["per_issue_window_seconds"])
        q = self._issue_writes.setdefault(issue["id"], deque())
        now = time.monotonic()
        while q and q[0] <= now - window:
            q.popleft()
        if len(q) >= limit:
            retry = max(1, math.ceil(q[0] + window - now))
            raise _fail(
                429,
                ["Rate limit exceeded."],
                headers=self._rate_headers(retry, "jira-per-issue-on-write", int(limit)),
            )
        q.append(now)

    # -- routes -------------------------------------------------------------------------------

    def register_routes(self) -> None:
        def api(path: str, methods: list[str], handler: Callable[[SimRequest], Response]) -> None:
            self.route("/rest/api/{version}" + path, methods)(handler)

        api("/serverInfo", ["GET"], self.server_info)
        api("/myself", ["GET"], self.myself)
        api("/field", ["GET"], self.field_list)
        api("/priority", ["GET"], self.priorities)
        api("/priority/{id}", ["GET"], self.priority)
        api("/project", ["GET", "POST"], self.projects)
        api("/project/search", ["GET"], self.project_search)
        api("/project/{projectIdOrKey}", ["GET", "DELETE"], self.project)
        api("/project/{projectIdOrKey}/components", ["GET"], self.project_components)
        api("/project/{projectIdOrKey}/statuses", ["GET"], self.project_statuses)
        api("/component/{id}", ["GET", "PUT", "DELETE"], self.component)
        api("/issuetype", ["GET"], self.issuetypes)
        api("/issuetype/{id}", ["GET"], self.issuetype)
        api("/status", ["GET"], self.statuses)
        api("/status/{idOrName}", ["GET"], self.status)
        api("/statuscategory", ["GET"], self.statuscategories)
        api("/resolution", ["GET"], self.resolutions)
        api("/resolution/{id}", ["GET"], self.resolution)
        api("/issue/createmeta", ["GET"], self.createmeta)
        api("/issue/createmeta/{projectIdOrKey}/issuetypes", ["GET"], self.createmeta_types)
        api(
            "/issue/createmeta/{projectIdOrKey}/issuetypes/{issueTypeId}",
            ["GET"],
            self.createmeta_fields,
        )
        api("/issue", ["POST"], self.create_issue)
        api("/issue/{issueIdOrKey}", ["GET", "PUT", "DELETE"], self.issue)
        api("/issue/{issueIdOrKey}/editmeta", ["GET"], self.editmeta)
        api("/issue/{issueIdOrKey}/transitions", ["GET", "POST"], self.transitions)
        api("/issue/{issueIdOrKey}/comment", ["GET", "POST"], self.comments)
        api("/issue/{issueIdOrKey}/comment/{id}", ["GET", "PUT", "DELETE"], self.comment)
        api("/issue/{issueIdOrKey}/changelog", ["GET"], self.changelog)
        api("/issue/{issueIdOrKey}/assignee", ["PUT"], self.assign)
        api("/issue/{issueIdOrKey}/properties", ["GET"], self.property_keys)
        api(
            "/issue/{issueIdOrKey}/properties/{propertyKey}",
            ["GET", "PUT", "DELETE"],
            self.issue_property,
        )
        api("/issue/{issueIdOrKey}/remotelink", ["GET", "POST", "DELETE"], self.remotelinks)
        api("/issue/{issueIdOrKey}/remotelink/{linkId}", ["GET", "PUT", "DELETE"], self.remotelink)
        api("/issueLink", ["POST"], self.create_link)
        api("/issueLink/{linkId}", ["GET", "DELETE"], self.issue_link)
        api("/issueLinkType", ["GET"], self.link_types)
        api("/issueLinkType/{issueLinkTypeId}", ["GET"], self.link_type)
        api("/user", ["GET"], self.user)
        api("/user/search", ["GET"], self.user_search)
        api("/user/assignable/search", ["GET"], self.assignable_search)
        api("/search", ["GET", "POST"], self.search)
        api("/search/jql", ["GET", "POST"], self.search_jql)
        api("/search/approximate-count", ["POST"], self.approximate_count)
        api("/mypermissions", ["GET"], self.my_permissions)
        api("/permissions", ["GET"], self.all_permissions)
        api("/permissionscheme", ["GET"], self.permission_schemes)
        api("/issuesecurityschemes", ["GET"], self.issue_security_schemes)
        api("/projectCategory", ["GET"], self.project_categories)
        api("/comment/list", ["POST"], self.comment_list)
        api("/filter", ["POST"], self.filters)
        api("/filter/favourite", ["GET"], self.favourite_filters)
        api("/filter/{id}", ["GET", "PUT", "DELETE"], self.filter_item)
        api("/dashboard", ["GET", "POST"], self.dashboards)
        api("/dashboard/gadgets", ["GET"], self.available_gadgets)
        api("/dashboard/{id}", ["GET", "PUT", "DELETE"], self.dashboard)
        api("/dashboard/{id}/copy", ["POST"], self.copy_dashboard)
        api("/dashboard/{id}/gadget", ["GET", "POST"], self.gadgets)
        api("/dashboard/{id}/gadget/{gadgetId}", ["PUT", "DELETE"], self.gadget)
        api("/dashboard/{id}/items/{itemId}/properties", ["GET"], self.item_property_keys)
        api(
            "/dashboard/{id}/items/{itemId}/properties/{propertyKey}",
            ["GET", "PUT", "DELETE"],
            self.item_property,
        )
        self.route("/rest/internal/{version}/dashboards/{id}/automatic-refresh-ms", ["PUT"])(
            self.dashboard_refresh
        )
        api("/statuscategory/{idOrKey}", ["GET"], self.statuscategory)
        api("/project/{projectIdOrKey}/role", ["GET"], self.project_roles)
        api("/project/{projectIdOrKey}/versions", ["GET"], self.project_versions)
        api("/version", ["POST"], self.create_version)
        api("/version/{id}", ["GET", "PUT", "DELETE"], self.version)
        api("/component", ["POST"], self.create_component)
        api("/attachment/meta", ["GET"], self.attachment_meta)
        api("/issue/{issueIdOrKey}/votes", ["GET", "POST", "DELETE"], self.votes)
        api("/issue/{issueIdOrKey}/worklog", ["GET", "POST"], self.worklogs)
        api("/issue/{issueIdOrKey}/worklog/{id}", ["GET", "PUT", "DELETE"], self.worklog)
        api("/group", ["GET"], self.group)
        api("/groups/picker", ["GET"], self.groups_picker)
        api("/user/viewissue/search", ["GET"], self.viewissue_search)
        api("/issue/{issueIdOrKey}/attachments", ["POST"], self.add_attachments)
        api("/attachment/{id}", ["GET", "DELETE"], self.attachment)
        api("/attachment/content/{id}", ["GET"], self.attachment_content)
        for prefix in ("/rest/auth/1", "/rest/auth/latest"):
            self.route(prefix + "/session", ["GET"])(self.auth_session)
        self.route("/rest/applinks/latest/listApplicationlinks", ["GET"])(self.applinks)
        self.route("/rest/webhooks/1.0/webhook", ["GET"])(self.webhook_list)
        self.route("/_sim/ratelimit", ["GET", "POST"])(self.sim_ratelimit)

    # -- request helpers ----------------------------------------------------------------------

    def _ctx(self, req: SimRequest) -> Ctx:
        version = VERSIONS.get(req.path_params.get("version", "2"))
        if version is None:
            raise _fail(404, ["Not found: unknown REST API version"])
        return Ctx(req.base_url, version, self.catalog.user_tz(req.user), req.user)

    def _hook_ctx(self, ctx: Ctx) -> Ctx:
        """Webhook payloads are v2 bodies in the site's default time zone."""
        tz = times.zone(str(self.catalog.config.get("timeZone", "UTC")))
        return Ctx(ctx.base, "2", tz, ctx.user)

    def _body(self, req: SimRequest, *, required: bool = True) -> Any:
        try:
            body = req.json()
        except MalformedBody as exc:
            raise _fail(400, [f"Unexpected character in the JSON body: {exc.detail}"]) from exc
        if body is None and required:
            raise _fail(400, ["No content to map to Object due to end of input"])
        return body

    def _obj_body(self, req: SimRequest) -> Obj:
        body = self._body(req)
        if not isinstance(body, dict):
            raise _fail(
                400,
                [
                    "Can not deserialize instance of the request object out of "
                    f"{type(body).__name__.upper()} token"
                ],
            )
        return body

    def _find_issue(self, ref: Any) -> Obj | None:
        ident = str(ref or "").strip()
        if ident.isdigit():
            return self.issues.get(ident)
        iid = self.keys.get(ident.upper())
        return self.issues.get(iid) if iid is not None else None

    def _issue_or_404(self, req: SimRequest) -> Obj:
        issue = self._find_issue(req.path_params["issueIdOrKey"])
        if issue is None:
            raise _not_found()
        return issue

    def _project_of(self, issue: Obj) -> Obj:
        project = self.catalog.project({"id": issue["projectId"]})
        if project is None:  # only possible with a hand-edited state file
            raise _fail(500, ["Issue's project is missing"])
        return project

    def _default_priority(self) -> Obj | None:
        prios = self.catalog.data["priorities"]
        for p in prios:
            if p.get("isDefault"):
                return dict(p)
        return dict(prios[len(prios) // 2]) if prios else None

    # -- reference data -----------------------------------------------------------------------

    def webhook_list(self, req: SimRequest) -> Response:
        """GET /rest/webhooks/1.0/webhook: the registered webhooks (the /_sim/webhooks
        targets), in the shape of Jira's admin webhook API."""
        base = str(req.base_url).rstrip("/")
        every = ["jira:issue_created", "jira:issue_updated", "jira:issue_deleted",
                 "comment_created", "issuelink_created", "issuelink_deleted"]  # fmt: skip
        return _json(
            [
                {
                    "name": f"webhook {n}",
                    "url": t.url,
                    "events": list(t.events) or every,
                    "filters": {"issue-related-events-section": ""},
                    "excludeBody": False,
                    "enabled": True,
                    "self": f"{base}/rest/webhooks/1.0/webhook/{n}",
                }
                for n, t in enumerate(self.webhook_targets, start=1)
            ]
        )

    def server_info(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            {
                "baseUrl": ctx.base,
                "displayUrl": ctx.base,
                "version": ".".join(str(n) for n in SERVER_VERSION) + "-SNAPSHOT",
                "versionNumbers": SERVER_VERSION,
                "deploymentType": "Cloud",
                "buildNumber": 100290,
                "buildDate": "2025-06-02T00:00:00.000+0000",
                "serverTime": times.fmt(times.now_ms(), ctx.tz),
                "scmInfo": hashlib.sha1(b"jira-simulator").hexdigest(),
                "serverTitle": str(self.catalog.config.get("serverTitle", "Jira")),
                "serverTimeZone": str(self.catalog.config.get("timeZone", "UTC")),
            }
        )

    def auth_session(self, req: SimRequest) -> Response:
        """GET /rest/auth/1/session: who the credentials belong to (the jira library's check)."""
        ctx = self._ctx(req)
        user = self.catalog.user(str(req.user)) or {}
        return _json(
            {
                "self": f"{ctx.api}/user?accountId={req.user}",
                "name": user.get("displayName", ""),
                "loginInfo": {"failedLoginCount": 0, "loginCount": 1},
            }
        )

    # -- permissions --------------------------------------------------------------------------

    def _is_admin(self, account_id: str) -> bool:
        return "site-admins" in (self.catalog.user(account_id) or {}).get("groups", [])

    def _permission(self, key: str, have: bool | None = None) -> Obj:
        pid, kind, name, description = PERMISSIONS[key]
        out: Obj = {"id": pid, "key": key, "name": name, "type": kind, "description": description}
        if have is not None:
            out["havePermission"] = have
        return out

    def all_permissions(self, req: SimRequest) -> Response:
        self._ctx(req)
        return _json({"permissions": {k: self._permission(k) for k in PERMISSIONS}})

    def my_permissions(self, req: SimRequest) -> Response:
        """GET /mypermissions?permissions=A,B[&projectKey|projectId|issueKey|issueId]."""
        self._ctx(req)
        wanted = _csv(req.args("permissions"))
        if not wanted:
            raise _fail(400, ["The 'permissions' query parameter is required."])
        unknown = [k for k in wanted if k not in PERMISSIONS]
        if unknown:
            raise _fail(404, [f"No permissions with key {unknown[0]} found."])
        for param in ("projectKey", "projectId"):
            ref = req.arg(param)
            if ref is not None and self.catalog.project(ref) is None:
                raise _fail(404, [f"No project could be found with key '{ref}'."])
        for param in ("issueKey", "issueId"):
            ref = req.arg(param)
            if ref is not None and self._find_issue(ref) is None:
                raise _fail(404, ["Issue does not exist or you do not have permission to see it."])
        admin = self._is_admin(str(req.user))
        return _json(
            {
                "permissions": {
                    k: self._permission(
                        k, admin or PERMISSIONS[k][1] == "PROJECT" or k in USER_GLOBAL
                    )
                    for k in wanted
                }
            }
        )

    def permission_schemes(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            {
                "permissionSchemes": [
                    {
                        "id": 10000,
                        "self": f"{ctx.api}/permissionscheme/10000",
                        "name": "Default Permission Scheme",
                        "description": "This is the default Permission Scheme.",
                    }
                ]
            }
        )

    def issue_security_schemes(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            {
                "issueSecuritySchemes": [
                    {
                        "self": f"{ctx.api}/issuesecurityschemes/10000",
                        "id": 10000,
                        "name": "Default",
                        "description": "",
                        "defaultSecurityLevelId": -1,
                    }
                ]
            }
        )

    def project_categories(self, req: SimRequest) -> Response:
        self._ctx(req)
        return _json([])

    def _user_full(self, account_id: str, ctx: Ctx, expand: list[str]) -> Obj:
        out = self.catalog.render_user(account_id, ctx, full=True) or {}
        u = self.catalog.user(account_id) or {}
        groups = [g for g in self.catalog.data["groups"] if g["name"] in u.get("groups", [])]
        out["groups"] = {"size": len(groups), "items": []}
        out["applicationRoles"] = {"size": 1, "items": []}
        out["expand"] = "groups,applicationRoles"
        if "groups" in expand:
            out["groups"]["items"] = [
                {
                    "name": g["name"],
                    "groupId": g["groupId"],
                    "self": f"{ctx.api}/group?groupId={g['groupId']}",
                }
                for g in groups
            ]
        return out

    def myself(self, req: SimRequest) -> Response:
        return _json(self._user_full(str(req.user), self._ctx(req), self._expand(req)))

    def user(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        account = req.arg("accountId")
        if not account:
            raise _fail(400, ["The query parameter 'accountId' is required."])
        if self.catalog.user(account) is None:
            raise _fail(
                404,
                [
                    f"Specified user does not exist or you do not have required "
                    f"permissions (accountId: {account})"
                ],
            )
        return _json(self._user_full(account, ctx, self._expand(req)))

    def _matching_users(self, query: str) -> list[Obj]:
        q = query.strip().lower()
        out = []
        for u in self.catalog.data["users"].values():
            texts = [u["displayName"].lower(), u["emailAddress"].lower()]
            words = [w for t in texts for w in re.split(r"[\s@.]+", t) if w]
            if not q or any(t.startswith(q) for t in texts) or any(w.startswith(q) for w in words):
                out.append(u)
        return sorted(out, key=lambda u: u["displayName"].lower())

    def user_search(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        query, account = req.arg("query"), req.arg("accountId")
        if query is None and account is None and req.arg("username") is None:
            raise _fail(400, ["One of 'accountId' or 'query' must be specified."])
        if query is not None and account is not None:
            raise _fail(400, ["Only one of 'accountId' or 'query' may be specified."])
        if account is not None:
            users = [u for u in [self.catalog.user(account)] if u]
        else:
            users = self._matching_users(query if query is not None else req.arg("username") or "")
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(0, min(_int_arg(req, "maxResults", 50), 1000))
        page = users[start : start + limit]
        return _json([self.catalog.render_user(u["accountId"], ctx, full=True) for u in page])

    def assignable_search(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        if not (req.arg("project") or req.arg("issueKey") or req.arg("issueId")):
            raise _fail(
                400,
                ["At least one of the parameters 'project', 'issueKey' or 'issueId' is required."],
            )
        users = [u for u in self._matching_users(req.arg("query") or "") if u["active"]]
        if req.arg("accountId"):
            users = [u for u in users if u["accountId"] == req.arg("accountId")]
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(0, _int_arg(req, "maxResults", 50))
        return _json(
            [
                self.catalog.render_user(u["accountId"], ctx, full=True)
                for u in users[start : start + limit]
            ]
        )

    def field_list(self, req: SimRequest) -> Response:
        out: list[Obj] = []
        for f in SYSTEM_FIELDS:
            entry: Obj = {
                "id": f.id,
                "key": f.id,
                "name": f.name,
                "custom": False,
                "orderable": f.orderable,
                "navigable": f.navigable,
                "searchable": f.searchable,
                "clauseNames": list(f.clauses),
            }
            if f.schema:
                entry["schema"] = dict(f.schema)
            out.append(entry)
        out.extend(copy.deepcopy(list(PSEUDO_FIELDS)))
        for cf in self.catalog.data["fields"]:
            out.append(
                {
                    "id": cf["id"],
                    "key": cf["id"],
                    "name": cf["name"],
                    "custom": True,
                    "orderable": True,
                    "navigable": True,
                    "searchable": True,
                    "clauseNames": self._custom_clauses(cf),
                    "schema": self._custom_schema(cf),
                }
            )
        return _json(out)

    @staticmethod
    def _custom_clauses(cf: Obj) -> list[str]:
        number = cf["id"].split("_")[-1]
        return [f"cf[{number}]", cf["name"], f"{cf['name']}[{CUSTOM_CLAUSE_SUFFIX[cf['type']]}]"]

    @staticmethod
    def _custom_schema(cf: Obj) -> Obj:
        type_, custom, items = CUSTOM_TYPES[cf["type"]]
        out: Obj = {"type": type_}
        if items:
            out["items"] = items
        out.update(custom=custom, customId=int(cf["id"].split("_")[-1]))
        return out

    def _field_schema(self, fid: str) -> Obj | None:
        if fid in BY_ID:
            return dict(BY_ID[fid].schema or {}) or None
        cf = self.catalog.custom(fid)
        return self._custom_schema(cf) if cf else None

    def _field_name(self, fid: str) -> str:
        if fid in BY_ID:
            return BY_ID[fid].name
        cf = self.catalog.custom(fid)
        return str(cf["name"]) if cf else fid

    def priorities(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            [
                self.catalog.render_priority(p["id"], ctx, full=True)
                for p in self.catalog.data["priorities"]
            ]
        )

    def priority(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        out = self.catalog.render_priority(req.path_params["id"], ctx, full=True)
        if out is None:
            raise _fail(404, [f"The priority with ID '{req.path_params['id']}' does not exist."])
        return _json(out)

    def issuetypes(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            [self.catalog.render_issuetype(t["id"], ctx) for t in self.catalog.data["issuetypes"]]
        )

    def issuetype(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        out = self.catalog.render_issuetype(req.path_params["id"], ctx)
        if out is None:
            raise _fail(404, ["Issue type does not exist or you do not have permission to see it."])
        return _json(out)

    def statuses(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            [self.catalog.render_status(s["id"], ctx) for s in self.catalog.data["statuses"]]
        )

    def status(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        found = self.catalog.find("statuses", req.path_params["idOrName"])
        if found is None:
            raise _fail(404, [f"The status with ID '{req.path_params['idOrName']}' was not found."])
        return _json(self.catalog.render_status(found["id"], ctx))

    def statuscategories(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            [
                {"self": f"{ctx.api}/statuscategory/{c['id']}", **c}
                for c in sorted(STATUS_CATEGORIES.values(), key=lambda c: c["id"])
            ]
        )

    def resolutions(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            [self.catalog.render_resolution(r["id"], ctx) for r in self.catalog.data["resolutions"]]
        )

    def resolution(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        out = self.catalog.render_resolution(req.path_params["id"], ctx)
        if out is None:
            raise _fail(404, [f"The resolution with ID '{req.path_params['id']}' does not exist."])
        return _json(out)

    def link_types(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(
            {
                "issueLinkTypes": [
                    self.catalog.render_linktype(lt, ctx) for lt in self.catalog.data["linktypes"]
                ]
            }
        )

    def link_type(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        lt = self.catalog.get("linktypes", req.path_params["issueLinkTypeId"])
        if lt is None:
            raise _fail(
                404, [f"No issue link type with id '{req.path_params['issueLinkTypeId']}' found."]
            )
        return _json(self.catalog.render_linktype(lt, ctx))

    def applinks(self, req: SimRequest) -> Response:
        return _json({"list": []})

    def sim_ratelimit(self, req: SimRequest) -> Response:
        if req.method == "POST":
            body = self._body(req, required=False) or {}
            pace_keys = {"requests_per_second", "requests_burst"}
            if not isinstance(body, dict) or set(body) - set(self.limits) - pace_keys:
                raise _fail(400, [f"allowed keys: {sorted([*self.limits, *pace_keys])}"])
            for k, v in body.items():
                number = isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                if not number and not (v is None and k != "per_issue_window_seconds"):
                    raise _fail(400, [f"{k} must be a non-negative number"])
            if "requests_per_second" in body:
                self.pace.configure(body["requests_per_second"], body.get("requests_burst"))
            self.limits.update({k: v for k, v in body.items() if k not in pace_keys})
            self._burst = {}
            self._issue_writes = {}
        return JSONResponse({**self.limits, **self.pace.describe()})

    # -- projects -----------------------------------------------------------------------------

    def _project_or_404(self, ref: str) -> Obj:
        project = self.catalog.project(ref)
        if project is None:
            raise _fail(404, [f"No project could be found with key '{ref}'."])
        return project

    def _render_project_full(self, project: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
            **self.catalog.render_project(project, ctx),
            "description": project.get("description", ""),
            "components": [
                self.catalog.render_component(c["id"], ctx, full=True)
                for c in project["components"]
            ],
            "issueTypes": [self.catalog.render_issuetype(t, ctx) for t in project["issuetypes"]],
            "assigneeType": "UNASSIGNED",
            "versions": [self._render_version(v, ctx) for v in project.get("versions", [])],
            "roles": {
                r["name"]: f"{ctx.api}/project/{project['id']}/role/{r['id']}"
                for r in self.catalog.data["roles"]
            },
            "style": "classic",
            "isPrivate": False,
            "properties": {},
        }
        lead = self.catalog.render_user(project.get("lead"), ctx, full=True)
        if lead:
            out["lead"] = lead
        return out

    def projects(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        if req.method == "POST":
            return self._create_project(req, ctx)
        rows = [self._render_project_full(p, ctx) for p in self.catalog.data["projects"]]
        if "projectKeys" in self._expand(req):
            for row in rows:
                row["projectKeys"] = [row["key"]]
        return _json(rows)

    def _create_project(self, req: SimRequest, ctx: Ctx) -> Response:
        """POST /project (needs Administer Jira): a project with the site's issue types, the
        one workflow and no components."""
        if not self._is_admin(str(req.user)):
            raise _fail(
                403, ["You must have global administrator rights in order to modify projects."]
            )
        body = self._obj_body(req)
        errors: dict[str, str] = {}
        key = str(body.get("key") or "")
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[A-Z][A-Z0-9]{1,9}", key):
            errors["projectKey"] = (
                "Project keys must start with an uppercase letter, followed by one or more "
                "uppercase alphanumeric characters, and be at most 10 characters long."
            )
        elif self.catalog.project(key) is not None:
            errors["projectKey"] = f"Project '{key}' uses this project key."
        if not name:
            errors["projectName"] = "You must specify a valid project name."
        elif self.catalog.project_by_name(name) is not None:
            errors["projectName"] = "A project with that name already exists."
        lead = str(body.get("leadAccountId") or body.get("lead") or "")
        if self.catalog.user(lead) is None:
            errors["projectLead"] = "The project lead must be a valid user."
        if errors:
            raise _fail(400, [], errors)
        pid = str(max([int(p["id"]) for p in self.catalog.data["projects"]] + [9999]) + 1)
        self.catalog.seed(
            {
                "projects": [
                    {
                        "id": pid,
                        "key": key,
                        "name": name,
                        "lead": lead,
                        "description": str(body.get("description") or ""),
                        "projectTypeKey": str(body.get("projectTypeKey") or "software"),
                    }
                ]
            }
        )
        return _json({"self": f"{ctx.api}/project/{pid}", "id": int(pid), "key": key}, 201)

    def _delete_project(self, req: SimRequest, project: Obj) -> Response:
        if not self._is_admin(str(req.user)):
            raise _fail(
                403, ["You must have global administrator rights in order to modify projects."]
            )
        for issue in [i for i in self.issues.values() if i["projectId"] == project["id"]]:
            self._drop_issue(issue)
        self.catalog.data["projects"].remove(project)
        self.counters["project"].pop(project["key"], None)
        return Response(status_code=204)

    def project_search(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        query = (req.arg("query") or "").lower()
        keys = set(k.upper() for k in _csv(req.args("keys")))
        rows = [
            p
            for p in self.catalog.data["projects"]
            if (not query or query in p["key"].lower() or query in p["name"].lower())
            and (not keys or p["key"] in keys)
        ]
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(1, min(_int_arg(req, "maxResults", 50), 100))
        page = rows[start : start + limit]
        values = [self._render_project_full(p, ctx) for p in page]
        return _json(_page_bean(f"{ctx.api}/project/search", start, limit, len(rows), values))

    def project(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        if req.method == "DELETE":
            return self._delete_project(
                req, self._project_or_404(req.path_params["projectIdOrKey"])
            )
        out = self._render_project_full(
            self._project_or_404(req.path_params["projectIdOrKey"]), ctx
        )
        if "projectKeys" in self._expand(req):
            out["projectKeys"] = [out["key"]]
        return _json(out)

    def project_components(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self._project_or_404(req.path_params["projectIdOrKey"])
        return _json(
            [self.catalog.render_component(c["id"], ctx, full=True) for c in project["components"]]
        )

    def project_statuses(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self._project_or_404(req.path_params["projectIdOrKey"])
        statuses = [self.catalog.render_status(s["id"], ctx) for s in self.catalog.data["statuses"]]
        out = []
        for tid in project["issuetypes"]:
            t = self.catalog.get("issuetypes", tid)
            if t is not None:
                out.append(
                    {
                        "self": f"{ctx.api}/issuetype/{tid}",
                        "id": tid,
                        "name": t["name"],
                        "subtask": bool(t.get("subtask")),
                        "statuses": statuses,
                    }
                )
        return _json(out)

    def component(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        cid = req.path_params["id"]
        found = self.catalog.component_by_id(cid)
        if found is None:
            raise _fail(404, [f"The component with id {cid} does not exist."])
        project, comp = found
        if req.method == "DELETE":
            project["components"].remove(comp)
            for issue in self.issues.values():
                if cid in issue["fields"].get("components", []):
                    issue["fields"]["components"].remove(cid)
            return Response(status_code=204)
        if req.method == "PUT":
            body = self._obj_body(req)
            name = str(body.get("name") or comp["name"])
            if any(c["name"] == name and c is not comp for c in project["components"]):
                raise _fail(400, [], {"name": f"The component name '{name}' is not valid"})
            comp["name"] = name
            if "description" in body:
                comp["description"] = str(body.get("description") or "")
        return _json(self.catalog.render_component(cid, ctx, full=True))

    def create_component(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        body = self._obj_body(req)
        ref = body.get("project") or body.get("projectId")
        project = self.catalog.project(str(ref or ""))
        if project is None:
            raise _fail(400, [], {"project": "The project is not valid."})
        name = str(body.get("name") or "")
        if not name or any(c["name"] == name for c in project["components"]):
            raise _fail(400, [], {"name": f"The component name '{name}' is not valid"})
        ids = [int(c["id"]) for p in self.catalog.data["projects"] for c in p["components"]]
        comp = {
            "id": str(max([9999, *ids]) + 1),
            "name": name,
            "description": str(body.get("description") or ""),
        }
        kind = str(body.get("assigneeType") or "PROJECT_DEFAULT")
        if kind not in ("PROJECT_DEFAULT", "COMPONENT_LEAD", "PROJECT_LEAD", "UNASSIGNED"):
            raise _fail(400, [], {"assigneeType": f"The assignee type {kind} is not valid."})
        comp["assigneeType"] = kind
        project["components"].append(comp)
        return _json(self.catalog.render_component(comp["id"], ctx, full=True), 201)

    def statuscategory(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        ref = req.path_params["idOrKey"]
        for c in STATUS_CATEGORIES.values():
            if str(c["id"]) == ref or c["key"] == ref:
                return _json({"self": f"{ctx.api}/statuscategory/{c['id']}", **c})
        raise _fail(404, [f"No status category with id or key {ref} was found."])

    def project_roles(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self._project_or_404(req.path_params["projectIdOrKey"])
        return _json(
            {
                r["name"]: f"{ctx.api}/project/{project['id']}/role/{r['id']}"
                for r in self.catalog.data["roles"]
            }
        )

    def attachment_meta(self, req: SimRequest) -> Response:
        self._ctx(req)
        return _json({"enabled": True, "uploadLimit": 10485760})

    # -- versions -----------------------------------------------------------------------------

    def _render_version(self, v: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "self": f"{ctx.api}/version/{v['id']}",
            "id": v["id"],
            "name": v["name"],
            "archived": v["archived"],
            "released": v["released"],
            "projectId": int(v["projectId"]),
        }
        for k in ("description", "releaseDate", "startDate"):
            if v.get(k):
                out[k] = v[k]
        return out

    def _find_version(self, vid: str) -> tuple[Obj, Obj]:
        for p in self.catalog.data["projects"]:
            for v in p.get("versions", []):
                if v["id"] == vid:
                    return p, v
        raise _fail(404, [f"Could not find version for id '{vid}'"])

    def _version_fields(self, body: Obj, project: Obj, current: Obj | None) -> Obj:
        name = str(body.get("name") or (current or {}).get("name") or "")
        if not name:
            raise _fail(400, [], {"name": "You must specify a valid version name"})
        if any(v["name"] == name and v is not current for v in project.get("versions", [])):
            raise _fail(
                400, [], {"name": "A version with this name already exists in this project."}
            )
        out: Obj = {"name": name}
        for k in ("description", "releaseDate", "startDate"):
            if k in body:
                out[k] = body[k]
        for k in ("archived", "released"):
            if k in body:
                out[k] = bool(body[k])
        return out

    def create_version(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        body = self._obj_body(req)
        project = self.catalog.project(str(body.get("projectId") or body.get("project") or ""))
        if project is None:
            raise _fail(400, [], {"project": "Project must be specified to create a version."})
        ids = [int(v["id"]) for p in self.catalog.data["projects"] for v in p.get("versions", [])]
        v = {
            "id": str(max([9999, *ids]) + 1),
            "projectId": project["id"],
            "archived": False,
            "released": False,
            **self._version_fields(body, project, None),
        }
        project.setdefault("versions", []).append(v)
        return _json(self._render_version(v, ctx), 201)

    def version(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project, v = self._find_version(req.path_params["id"])
        if req.method == "DELETE":
            project["versions"].remove(v)
            return Response(status_code=204)
        if req.method == "PUT":
            v.update(self._version_fields(self._obj_body(req), project, v))
        return _json(self._render_version(v, ctx))

    def project_versions(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self._project_or_404(req.path_params["projectIdOrKey"])
        return _json([self._render_version(v, ctx) for v in project.get("versions", [])])

    # -- votes and worklogs -------------------------------------------------------------------

    def votes(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        voters: list[str] = issue.setdefault("votes", [])
        if req.method == "POST":
            if issue["fields"].get("reporter") == ctx.user:
                raise _fail(404, ["You cannot vote for an issue you have reported."])
            if ctx.user not in voters:
                voters.append(str(ctx.user))
            return Response(status_code=204)
        if req.method == "DELETE":
            if ctx.user in voters:
                voters.remove(str(ctx.user))
            return Response(status_code=204)
        return _json(
            {
                "self": f"{ctx.api}/issue/{issue['key']}/votes",
                "votes": len(voters),
                "hasVoted": ctx.user in voters,
                "voters": [self.catalog.render_user(u, ctx) for u in voters],
            }
        )

    def _render_worklog(self, issue: Obj, w: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "self": f"{ctx.api}/issue/{issue['id']}/worklog/{w['id']}",
            "author": self.catalog.render_user(w["author"], ctx),
            "updateAuthor": self.catalog.render_user(w["updateAuthor"], ctx),
            "created": times.fmt(w["created"], ctx.tz),
            "updated": times.fmt(w["updated"], ctx.tz),
            "started": times.fmt(w["started"], ctx.tz),
            "timeSpent": _duration(w["seconds"]),
            "timeSpentSeconds": w["seconds"],
            "id": w["id"],
            "issueId": issue["id"],
        }
        if w.get("comment") is not None:
            out["comment"] = (
                adf.to_adf(w["comment"]) if ctx.version == "3" else adf.to_text(w["comment"])
            )
        return out

    def _worklog_fields(self, body: Obj, current: Obj | None) -> Obj:
        out: Obj = {}
        if "timeSpentSeconds" in body:
            out["seconds"] = int(body["timeSpentSeconds"])
        elif "timeSpent" in body:
            seconds = _parse_duration(str(body["timeSpent"]))
            if seconds is None:
                raise _fail(400, [], {"timeLogged": "Invalid time duration entered."})
            out["seconds"] = seconds
        elif current is None:
            raise _fail(400, [], {"timeLogged": "You must indicate the time spent working."})
        if "comment" in body:
            out["comment"] = body["comment"]
        if "started" in body:
            started = times.parse(str(body["started"])) if body["started"] else None
            if started is None:
                raise _fail(400, [], {"started": "Invalid date format."})
            out["started"] = started
        return out

    def worklogs(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        logs: list[Obj] = issue.setdefault("worklogs", [])
        if req.method == "GET":
            return _json(
                {
                    "startAt": 0,
                    "maxResults": len(logs),
                    "total": len(logs),
                    "worklogs": [self._render_worklog(issue, w, ctx) for w in logs],
                }
            )
        now = times.now_ms()
        w = {
            "id": self._next("worklog"),
            "author": ctx.user,
            "updateAuthor": ctx.user,
            "created": now,
            "updated": now,
            "started": now,
            "comment": None,
            **self._worklog_fields(self._obj_body(req), None),
        }
        logs.append(w)
        issue["fields"]["updated"] = now
        return _json(self._render_worklog(issue, w, ctx), 201)

    def worklog(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        logs: list[Obj] = issue.setdefault("worklogs", [])
        w = next((x for x in logs if x["id"] == req.path_params["id"]), None)
        if w is None:
            raise _fail(404, ["Cannot find worklog with id: " + req.path_params["id"]])
        if req.method == "DELETE":
            logs.remove(w)
            return Response(status_code=204)
        if req.method == "PUT":
            w.update(self._worklog_fields(self._obj_body(req), w))
            w.update(updateAuthor=ctx.user, updated=times.now_ms())
        return _json(self._render_worklog(issue, w, ctx))

    # -- field metadata -----------------------------------------------------------------------

    def _allowed(self, fid: str, project: Obj, ctx: Ctx) -> list[Any] | None:
        cat = self.catalog
        if fid == "issuetype":
            return [cat.render_issuetype(t, ctx) for t in project["issuetypes"]]
        if fid == "priority":
            return [cat.render_priority(p["id"], ctx) for p in cat.data["priorities"]]
        if fid == "components":
            return [cat.render_component(c["id"], ctx) for c in project["components"]]
        if fid == "resolution":
            return [cat.render_resolution(r["id"], ctx) for r in cat.data["resolutions"]]
        if fid == "project":
            return [cat.render_project(project, ctx)]
        cf = cat.custom(fid)
        if cf is not None and cf["type"] in ("option", "options"):
            return [self._render_option(fid, o, ctx) for o in cf["options"]]
        return None

    def _field_meta(self, fid: str, project: Obj, ctx: Ctx, required: bool) -> Obj:
        schema = self._field_schema(fid) or {"type": "any"}
        sf = BY_ID.get(fid)
        if sf is not None:
            ops = list(sf.ops)
        else:
            cf = self.catalog.custom(fid) or {}
            ops = ["add", "set", "remove"] if cf.get("type") in ("options", "labels") else ["set"]
        out: Obj = {
            "required": required,
            "schema": schema,
            "name": self._field_name(fid),
            "key": fid,
            "hasDefaultValue": fid == "priority",
            "operations": ops,
        }
        allowed = self._allowed(fid, project, ctx)
        if allowed is not None:
            out["allowedValues"] = allowed
        if fid == "priority":
            default = self._default_priority()
            if default:
                out["defaultValue"] = self.catalog.render_priority(default["id"], ctx)
        return out

    def _create_fields(self, project: Obj, itype: Obj) -> list[tuple[str, bool]]:
        required = set(itype.get("required") or []) | {"summary", "issuetype", "project"}
        ids = [f.id for f in SYSTEM_FIELDS if f.create] + [
            cf["id"] for cf in self.catalog.data["fields"]
        ]
        return [(fid, fid in required) for fid in ids]

    def _edit_fields(self) -> list[str]:
        return (
            [f.id for f in SYSTEM_FIELDS if f.edit]
            + ["comment"]
            + [cf["id"] for cf in self.catalog.data["fields"]]
        )

    def createmeta(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        keys = set(k.upper() for k in _csv(req.args("projectKeys")))
        ids = set(_csv(req.args("projectIds")))
        type_names = {n.lower() for n in _csv(req.args("issuetypeNames"))}
        type_ids = set(_csv(req.args("issuetypeIds")))
        with_fields = "projects.issuetypes.fields" in _csv(req.args("expand"))
        projects = []
        for p in self.catalog.data["projects"]:
            if (keys or ids) and p["key"] not in keys and p["id"] not in ids:
                continue
            types = []
            for tid in p["issuetypes"]:
                t = self.catalog.get("issuetypes", tid)
                if (
                    t is None
                    or (type_ids and tid not in type_ids)
                    or (type_names and t["name"].lower() not in type_names)
                ):
                    continue
                entry: Obj = {**(self.catalog.render_issuetype(tid, ctx) or {}), "expand": "fields"}
                if with_fields:
                    entry["fields"] = {
                        fid: self._field_meta(fid, p, ctx, req_)
                        for fid, req_ in self._create_fields(p, t)
                    }
                types.append(entry)
            projects.append(
                {
                    "expand": "issuetypes",
                    "self": f"{ctx.api}/project/{p['id']}",
                    "id": p["id"],
                    "key": p["key"],
                    "name": p["name"],
                    "avatarUrls": self.catalog.render_project(p, ctx)["avatarUrls"],
                    "issuetypes": types,
                }
            )
        return _json({"expand": "projects", "projects": projects})

    def createmeta_types(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self.catalog.project(req.path_params["projectIdOrKey"])
        if project is None:
            raise _fail(
                400, [f"No project could be found with key '{req.path_params['projectIdOrKey']}'."]
            )
        types = [self.catalog.render_issuetype(t, ctx) for t in project["issuetypes"]]
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(1, _int_arg(req, "maxResults", 50))
        page = types[start : start + limit]
        return _json(
            {"maxResults": limit, "startAt": start, "total": len(types), "issueTypes": page}
        )

    def createmeta_fields(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        project = self.catalog.project(req.path_params["projectIdOrKey"])
        itype = self.catalog.get("issuetypes", req.path_params["issueTypeId"])
        if project is None or itype is None or itype["id"] not in project["issuetypes"]:
            raise _fail(
                400,
                [
                    "Issue type with the provided id does not exist in the project or "
                    "you do not have permission to see it."
                ],
            )
        metas = [
            {**self._field_meta(fid, project, ctx, r), "fieldId": fid}
            for fid, r in self._create_fields(project, itype)
        ]
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(1, _int_arg(req, "maxResults", 50))
        return _json(
            {
                "maxResults": limit,
                "startAt": start,
                "total": len(metas),
                "fields": metas[start : start + limit],
            }
        )

    def _editmeta(self, issue: Obj, ctx: Ctx) -> Obj:
        project = self._project_of(issue)
        return {
            "fields": {
                fid: self._field_meta(fid, project, ctx, fid == "summary")
                for fid in self._edit_fields()
            }
        }

    def editmeta(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        return _json(self._editmeta(self._issue_or_404(req), ctx))

    # -- rendering issues ---------------------------------------------------------------------

    @staticmethod
    def _rich(value: Any, ctx: Ctx) -> Any:
        return adf.to_adf(value) if ctx.version == "3" else adf.to_text(value)

    def _render_option(self, fid: str, opt: Obj, ctx: Ctx) -> Obj:
        return {
            "self": f"{ctx.api}/customFieldOption/{opt['id']}",
            "value": opt["value"],
            "id": opt["id"],
        }

    def _render_custom(self, cf: Obj, value: Any, ctx: Ctx) -> Any:
        if value is None:
            return None
        kind = cf["type"]
        if kind == "textarea":
            return self._rich(value, ctx)
        if kind == "datetime":
            return times.fmt(value, ctx.tz)
        if kind == "option":
            opt = self.catalog.option(cf, {"id": value})
            return self._render_option(cf["id"], opt, ctx) if opt else None
        if kind == "options":
            opts = [self.catalog.option(cf, {"id": v}) for v in value]
            return [self._render_option(cf["id"], o, ctx) for o in opts if o]
        if kind == "user":
            return self.catalog.render_user(value, ctx)
        return copy.deepcopy(value)

    def _field_ids(self, issue: Obj) -> list[str]:
        ids = [f.id for f in SYSTEM_FIELDS] + [cf["id"] for cf in self.catalog.data["fields"]]
        return ids + [k for k in issue["extra"] if k not in ids]

    def _render_field(self, issue: Obj, fid: str, ctx: Ctx) -> Any:
        f, cat = issue["fields"], self.catalog
        if fid in issue["extra"] and fid not in f:
            return copy.deepcopy(issue["extra"][fid])
        if fid in ("summary",):
            return f["summary"]
        if fid in RICH_TEXT:
            return self._rich(f.get(fid), ctx)
        if fid == "issuetype":
            return cat.render_issuetype(f["issuetype"], ctx)
        if fid == "project":
            return cat.render_project(self._project_of(issue), ctx)
        if fid == "status":
            return cat.render_status(f["status"], ctx)
        if fid == "priority":
            return cat.render_priority(f.get("priority"), ctx)
        if fid == "resolution":
            return cat.render_resolution(f.get("resolution"), ctx)
        if fid in ("assignee", "reporter", "creator"):
            return cat.render_user(f.get(fid), ctx)
        if fid == "labels":
            return list(f["labels"])
        if fid == "components":
            return [c for c in (cat.render_component(cid, ctx) for cid in f["components"]) if c]
        if fid in ("created", "updated", "resolutiondate", "statuscategorychangedate"):
            return times.fmt(f.get(fid), ctx.tz)
        if fid == "duedate":
            return f.get("duedate")
        if fid == "issuelinks":
            return self._render_issue_links(issue, ctx)
        if fid == "comment":
            comments = [
                self._render_comment(issue, c, ctx) for c in self._visible_comments(issue, ctx)
            ]
            return {
                "comments": comments,
                "self": f"{ctx.api}/issue/{issue['id']}/comment",
                "maxResults": len(comments),
                "total": len(comments),
                "startAt": 0,
            }
        if fid == "watches":
            return {
                "self": f"{ctx.api}/issue/{issue['key']}/watchers",
                "watchCount": len(issue["watchers"]),
                "isWatching": ctx.user in issue["watchers"],
            }
        if fid == "votes":
            voters = issue.get("votes", [])
            return {
                "self": f"{ctx.api}/issue/{issue['key']}/votes",
                "votes": len(voters),
                "hasVoted": ctx.user in voters,
            }
        if fid == "worklog":
            logs = [self._render_worklog(issue, w, ctx) for w in issue.get("worklogs", [])]
            return {"startAt": 0, "maxResults": 20, "total": len(logs), "worklogs": logs[:20]}
        if fid in ("progress", "aggregateprogress"):
            return {"progress": 0, "total": 0}
        if fid == "timetracking":
            return {}
        if fid == "workratio":
            return -1
        if fid == "attachment":
            return [self._render_attachment(a, ctx) for a in issue.get("attachments", [])]
        if fid in ("fixVersions", "versions", "subtasks"):
            return []
        if fid == "issuerestriction":
            return {"issuerestrictions": {}, "shouldDisplay": False}
        cf = cat.custom(fid)
        if cf is not None:
            return self._render_custom(cf, f.get(fid), ctx)
        return None

    def _selector(self, params: list[str], default: str) -> Callable[[str], bool]:
        tokens = _csv(params) or [default]
        include = {t for t in tokens if not t.startswith("-") and not t.startswith("*")}
        exclude = {t[1:] for t in tokens if t.startswith("-")}
        everything = "*all" in tokens
        navigable = "*navigable" in tokens or not (everything or include)

        def wanted(fid: str) -> bool:
            if fid in exclude:
                return False
            if everything or fid in include:
                return True
            sf = BY_ID.get(fid)
            return navigable and (sf is None or sf.navigable)

        return wanted

    def _render_issue(
        self,
        issue: Obj,
        ctx: Ctx,
        *,
        fields: list[str] | None = None,
        default_fields: str = "*all",
        expand: Iterable[str] = (),
        properties: list[str] | None = None,
    ) -> Obj:
        wanted = self._selector(fields or [], default_fields)
        expand = set(expand)
        out: Obj = {
            "expand": EXPAND_ISSUE,
            "id": issue["id"],
            "self": f"{ctx.api}/issue/{issue['id']}",
            "key": issue["key"],
        }
        selected = [fid for fid in self._field_ids(issue) if wanted(fid)]
        if "renderedFields" in expand:
            out["renderedFields"] = {fid: self._rendered_value(issue, fid, ctx) for fid in selected}
        if properties:
            keys = _csv(properties)
            props = issue["properties"]
            out["properties"] = {
                k: copy.deepcopy(v) for k, v in props.items() if "*all" in keys or k in keys
            }
        if "names" in expand:
            out["names"] = {fid: self._field_name(fid) for fid in selected}
        if "schema" in expand:
            out["schema"] = {fid: s for fid in selected if (s := self._field_schema(fid))}
        if "transitions" in expand or "transitions.fields" in expand:
            out["transitions"] = [
                self._render_transition(t, issue, ctx, "transitions.fields" in expand)
                for t in self.catalog.transitions_from(issue["fields"]["status"])
            ]
        if "editmeta" in expand:
            out["editmeta"] = self._editmeta(issue, ctx)
        if "changelog" in expand:
            histories = issue["histories"][-100:]
            out["changelog"] = {
                "startAt": 0,
                "maxResults": len(histories),
                "total": len(issue["histories"]),
                "histories": [self._render_history(h, ctx) for h in histories],
            }
        out["fields"] = {fid: self._render_field(issue, fid, ctx) for fid in selected}
        return out

    def _rendered_value(self, issue: Obj, fid: str, ctx: Ctx) -> Any:
        f = issue["fields"]
        if fid in RICH_TEXT:
            return adf.to_html(f.get(fid))
        if fid in ("created", "updated", "resolutiondate", "statuscategorychangedate"):
            return times.fmt_rendered(f.get(fid), ctx.tz)
        if fid == "comment":
            comments = []
            for c in self._visible_comments(issue, ctx):
                rc = self._render_comment(issue, c, ctx)
                rc["body"] = adf.to_html(c["body"]) or ""
                comments.append(rc)
            return {
                "comments": comments,
                "maxResults": len(comments),
                "total": len(comments),
                "startAt": 0,
            }
        cf = self.catalog.custom(fid)
        if cf is not None and cf["type"] == "textarea":
            return adf.to_html(f.get(fid))
        return None

    def _render_history(self, h: Obj, ctx: Ctx) -> Obj:
        return {
            "id": h["id"],
            "author": self.catalog.render_user(h["author"], ctx),
            "created": times.fmt(h["created"], ctx.tz),
            "items": copy.deepcopy(h["items"]),
        }

    def _linked(self, issue: Obj, ctx: Ctx) -> Obj:
        cat = self.catalog
        f = issue["fields"]
        return {
            "id": issue["id"],
            "key": issue["key"],
            "self": f"{ctx.api}/issue/{issue['id']}",
            "fields": {
                "summary": f["summary"],
                "status": cat.render_status(f["status"], ctx),
                "priority": cat.render_priority(f.get("priority"), ctx),
                "issuetype": cat.render_issuetype(f["issuetype"], ctx),
            },
        }

    def _render_issue_links(self, issue: Obj, ctx: Ctx) -> list[Obj]:
        out = []
        for link in self.links.values():
            lt = self.catalog.get("linktypes", link["type"])
            if lt is None or issue["id"] not in (link["inward"], link["outward"]):
                continue
            entry: Obj = {
                "id": link["id"],
                "self": f"{ctx.api}/issueLink/{link['id']}",
                "type": self.catalog.render_linktype(lt, ctx),
            }
            if link["inward"] == issue["id"]:
                other = self.issues.get(link["outward"])
                if other is not None:
                    entry["outwardIssue"] = self._linked(other, ctx)
            else:
                other = self.issues.get(link["inward"])
                if other is not None:
                    entry["inwardIssue"] = self._linked(other, ctx)
            out.append(entry)
        return out

    def _expand(self, req: SimRequest) -> list[str]:
        return _csv(req.args("expand"))

    def issue(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        if req.method == "GET":
            fields = req.args("fields")
            return _json(
                self._render_issue(
                    issue,
                    ctx,
                    fields=fields or None,
                    expand=self._expand(req),
                    properties=req.args("properties") or None,
                )
            )
        self._write_check(issue)
        if req.method == "DELETE":
            return self._delete_issue(req, ctx, issue)
        return self._edit_issue(req, ctx, issue)

    # -- field values -------------------------------------------------------------------------

    def _convert(self, fid: str, value: Any, ctx: Ctx, project: Obj, errors: dict[str, str]) -> Any:
        """A field value as the API accepts it -> the stored value (or _INVALID)."""
        cat = self.catalog

        def bad(message: str) -> Any:
            errors[fid] = message
            return _INVALID

        if fid == "summary":
            if not isinstance(value, str):
                return bad(adf.STRING_ERROR)
            if "\n" in value or "\r" in value:
                return bad("The summary is invalid because it contains newline characters.")
            if len(value) > 255:
                return bad("Summary must be less than 255 characters.")
            if not value.strip():
                return bad("You must specify a summary of the issue.")
            return value
        if fid in RICH_TEXT:
            return self._convert_rich(value, ctx, bad)
        if fid == "issuetype":
            t = cat.find("issuetypes", value)
            if t is None or t["id"] not in project["issuetypes"]:
                return bad("The issue type selected is invalid.")
            return t["id"]
        if fid == "priority":
            if value is None:
                return None
            p = cat.find("priorities", value)
            if p is None:
                if isinstance(value, Mapping) and value.get("id") is not None:
                    return bad(f"Priority id '{value['id']}' is not valid")
                name = value.get("name") if isinstance(value, Mapping) else value
                return bad(f"Priority name '{name}' is not valid")
            return p["id"]
        if fid == "resolution":
            if value is None:
                return None
            r = cat.find("resolutions", value)
            if r is None:
                name = value.get("name") or value.get("id") if isinstance(value, Mapping) else value
                return bad(f"Resolution name '{name}' is not valid")
            return r["id"]
        if fid in ("assignee", "reporter"):
            return self._convert_user(value, fid, project, bad)
        if fid == "labels":
            return self._convert_labels(value, bad)
        if fid == "components":
            if not isinstance(value, list):
                return bad("data was not an array")
            ids = []
            for ref in value:
                comp = cat.component(project, ref)
                if comp is None:
                    if isinstance(ref, Mapping) and ref.get("id") is not None:
                        return bad(f"Component with id '{ref['id']}' does not exist.")
                    name = ref.get("name") if isinstance(ref, Mapping) else ref
                    return bad(f"Component name '{name}' is not valid")
                if comp["id"] not in ids:
                    ids.append(comp["id"])
            return ids
        if fid == "duedate":
            if value is None or value == "":
                return None
            try:
                return times.parse_date(str(value))
            except ValueError:
                return bad(f"Error parsing date string: {value}")
        cf = cat.custom(fid)
        if cf is not None:
            return self._convert_custom(cf, value, ctx, errors)
        return bad(CANNOT_SET.format(fid))

    def _convert_rich(self, value: Any, ctx: Ctx, bad: Callable[[str], Any]) -> Any:
        if value is None:
            return None
        if ctx.version == "3":
            if not adf.is_adf(value):
                return bad(adf.ADF_ERROR)
            if len(adf.adf_to_text(value)) > MAX_TEXT:
                return bad(
                    "The entered text is too long. It exceeds the allowed limit of "
                    "32,767 characters."
                )
            return copy.deepcopy(value)
        if not isinstance(value, str):
            return bad(adf.STRING_ERROR)
        if len(value) > MAX_TEXT:
            return bad(
                "The entered text is too long. It exceeds the allowed limit of 32,767 characters."
            )
        return value

    def _convert_user(self, value: Any, fid: str, project: Obj, bad: Callable[[str], Any]) -> Any:
        if value is None:
            return None
        if isinstance(value, Mapping) and value.get("accountId") == "-1":
            return project.get("lead")
        if not isinstance(value, Mapping) or not (value.get("accountId") or value.get("id")):
            if isinstance(value, Mapping) and value.get("name"):
                return bad(f"User '{value['name']}' does not exist.")
            return bad("data was not an object")
        account = str(value.get("accountId") or value.get("id"))
        user = self.catalog.user(account)
        if user is None:
            return bad(f"User '{account}' does not exist.")
        if fid == "assignee" and not user["active"]:
            return bad(f"User '{user['displayName']}' cannot be assigned issues.")
        return account

    @staticmethod
    def _convert_labels(value: Any, bad: Callable[[str], Any]) -> Any:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return bad("data was not an array")
        out: list[str] = []
        for label in value:
            if not label.strip():
                continue
            if re.search(r"\s", label):
                return bad(f"The label '{label}' contains spaces which is invalid.")
            if len(label) > 255:
                return bad("The label must not exceed 255 characters.")
            if label not in out:
                out.append(label)
        return out

    def _convert_custom(
        self, cf: Obj, value: Any, ctx: Ctx, errors: dict[str, str], lenient: bool = False
    ) -> Any:
        fid = cf["id"]

        def bad(message: str) -> Any:
            errors[fid] = message
            return _INVALID

        if value is None:
            return None
        kind = cf["type"]
        if kind in ("string", "url"):
            if not isinstance(value, str):
                return bad(adf.STRING_ERROR)
            if len(value) > 255:
                return bad(
                    f"{cf['name']}: The entered text is too long. It exceeds the allowed "
                    "limit of 255 characters."
                )
            return value
        if kind == "textarea":
            if lenient:
                return copy.deepcopy(value) if isinstance(value, str | dict) else _INVALID
            return self._convert_rich(value, ctx, bad)
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return bad("Operation value must be a number")
            return value
        if kind == "datetime":
            try:
                return times.parse(str(value), ctx.tz)
            except ValueError:
                return bad(
                    "Invalid date format. Please enter the date in the format "
                    "\"yyyy-MM-dd'T'HH:mm:ss.SSSZ\"."
                )
        if kind == "date":
            try:
                return times.parse_date(str(value))
            except ValueError:
                return bad(f"Error parsing date string: {value}")
        if kind == "option":
            opt = self.catalog.option(cf, value)
            if opt is None:
                if isinstance(value, Mapping) and value.get("id") is not None:
                    return bad(f"Option id '{value['id']}' is not valid")
                shown = value.get("value") if isinstance(value, Mapping) else value
                return bad(f"Option value '{shown}' is not valid")
            return opt["id"]
        if kind == "options":
            if not isinstance(value, list):
                return bad("data was not an array")
            ids = []
            for v in value:
                opt = self.catalog.option(cf, v)
                if opt is None:
                    shown = v.get("value") if isinstance(v, Mapping) else v
                    return bad(f"Option value '{shown}' is not valid")
                ids.append(opt["id"])
            return ids
        if kind == "labels":
            return self._convert_labels(value, bad)
        if kind == "user":
            if isinstance(value, Mapping) and self.catalog.user(str(value.get("accountId"))):
                return str(value["accountId"])
            if lenient and isinstance(value, Mapping):
                return self.catalog.ensure_user(value)
            return bad("Specified user does not exist or you do not have required permissions")
        return bad(CANNOT_SET.format(fid))

    def _apply_update(
        self, fid: str, ops: Any, current: Any, ctx: Ctx, project: Obj, errors: dict[str, str]
    ) -> Any:
        """Apply ``update`` operations (set/add/remove) to one field's stored value."""
        if not isinstance(ops, list):
            errors[fid] = "data was not an array"
            return _INVALID
        sf = BY_ID.get(fid)
        cf = self.catalog.custom(fid)
        multi = fid in ("labels", "components") or (
            cf is not None and cf["type"] in ("options", "labels")
        )
        value = copy.deepcopy(current)
        for op in ops:
            if not isinstance(op, Mapping) or len(op) != 1:
                errors[fid] = "Operation must be an object with exactly one of set/add/remove."
                return _INVALID
            ((verb, arg),) = op.items()
            allowed = sf.ops if sf else (("add", "set", "remove") if multi else ("set",))
            if verb not in allowed:
                errors[fid] = f"Field '{fid}' does not support the operation '{verb}'."
                return _INVALID
            if verb == "set":
                value = self._convert(fid, arg, ctx, project, errors)
            else:
                item = self._convert(fid, [arg], ctx, project, errors)
                if item is _INVALID:
                    return _INVALID
                value = list(value or [])
                for v in item:
                    if verb == "add" and v not in value:
                        value.append(v)
                    elif verb == "remove" and v in value:
                        value.remove(v)
            if value is _INVALID:
                return _INVALID
        return value

    # -- changelog ----------------------------------------------------------------------------

    def _display(self, fid: str, value: Any) -> tuple[str | None, str | None]:
        """(from/to id, from/toString) of a stored value, as changelog items show them."""
        cat = self.catalog
        if value is None or value == [] or value == "":
            return None, None
        if fid in ("summary", "environment", "description"):
            return None, adf.to_text(value)
        if fid in ("priority", "issuetype", "status", "resolution"):
            kind = {
                "priority": "priorities",
                "issuetype": "issuetypes",
                "status": "statuses",
                "resolution": "resolutions",
            }[fid]
            item = cat.get(kind, value)
            return str(value), item["name"] if item else str(value)
        if fid in ("assignee", "reporter"):
            u = cat.user(value)
            return str(value), u["displayName"] if u else str(value)
        if fid == "labels":
            return None, " ".join(value)
        if fid == "duedate":
            return str(value), f"{value} 00:00:00.0"
        cf = cat.custom(fid)
        if cf is not None:
            kind = cf["type"]
            if kind == "option":
                opt = cat.option(cf, {"id": value})
                return str(value), opt["value"] if opt else str(value)
            if kind == "options":
                opts = [cat.option(cf, {"id": v}) for v in value]
                return ",".join(value), ",".join(o["value"] for o in opts if o)
            if kind == "labels":
                return None, " ".join(value)
            if kind == "user":
                u = cat.user(value)
                return str(value), u["displayName"] if u else str(value)
            if kind == "datetime":
                tz = times.zone(str(cat.config.get("timeZone", "UTC")))
                return str(value), times.fmt(value, tz)
            if kind == "textarea":
                return None, adf.to_text(value)
            return None, str(value)
        return None, str(value)

    def _items(self, old: Obj, new: Obj) -> list[Obj]:
        items: list[Obj] = []
        for fid, value in new.items():
            before = old.get(fid)
            if before == value:
                continue
            if fid in (
                "updated",
                "created",
                "statuscategorychangedate",
                "resolutiondate",
                "creator",
            ):
                continue
            cf = self.catalog.custom(fid)
            fieldtype = "custom" if cf else "jira"
            name = str(cf["name"]) if cf else (BY_ID[fid].changelog_name or fid)
            if fid == "components":
                for cid in before or []:
                    if cid not in value:
                        found = self.catalog.component_by_id(cid)
                        items.append(
                            {
                                "field": name,
                                "fieldtype": "jira",
                                "fieldId": fid,
                                "from": cid,
                                "fromString": found[1]["name"] if found else cid,
                                "to": None,
                                "toString": None,
                            }
                        )
                for cid in value or []:
                    if cid not in (before or []):
                        found = self.catalog.component_by_id(cid)
                        items.append(
                            {
                                "field": name,
                                "fieldtype": "jira",
                                "fieldId": fid,
                                "from": None,
                                "fromString": None,
                                "to": cid,
                                "toString": found[1]["name"] if found else cid,
                            }
                        )
                continue
            f_id, f_str = self._display(fid, before)
            t_id, t_str = self._display(fid, value)
            items.append(
                {
                    "field": name,
                    "fieldtype": fieldtype,
                    "fieldId": fid,
                    "from": f_id,
                    "fromString": f_str,
                    "to": t_id,
                    "toString": t_str,
                }
            )
        return items

    def _add_history(self, issue: Obj, author: str | None, items: list[Obj], at: int) -> Obj:
        history = {"id": self._next("history"), "author": author, "created": at, "items": items}
        issue["histories"].append(history)
        return history

    # -- webhooks -----------------------------------------------------------------------------

    def _hook(self, event: str, payload: Obj) -> None:
        body = {"timestamp": times.now_ms(), "webhookEvent": event, **payload}
        self.emit(
            event,
            body,
            {
                "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
                "X-Atlassian-Webhook-Flow": "Primary",
                "User-Agent": "Atlassian Webhook HTTP Client",
            },
        )

    def _issue_event(
        self, event: str, type_name: str, issue: Obj, ctx: Ctx, history: Obj | None = None
    ) -> None:
        if not self.webhook_targets:
            return
        hctx = self._hook_ctx(ctx)
        payload: Obj = {
            "issue_event_type_name": type_name,
            "user": self.catalog.render_user(ctx.user, hctx, full=True),
            "issue": self._render_issue(issue, hctx),
        }
        if history is not None:
            payload["changelog"] = {"id": history["id"], "items": copy.deepcopy(history["items"])}
        self._hook(event, payload)

    def _comment_event(self, event: str, issue: Obj, comment: Obj, ctx: Ctx) -> None:
        if not self.webhook_targets:
            return
        hctx = self._hook_ctx(ctx)
        f, cat = issue["fields"], self.catalog
        self._hook(
            event,
            {
                "comment": self._render_comment(issue, comment, hctx),
                "issue": {
                    "id": issue["id"],
                    "self": f"{hctx.api}/issue/{issue['id']}",
                    "key": issue["key"],
                    "fields": {
                        "summary": f["summary"],
                        "issuetype": cat.render_issuetype(f["issuetype"], hctx),
                        "project": cat.render_project(self._project_of(issue), hctx),
                        "assignee": cat.render_user(f.get("assignee"), hctx),
                        "priority": cat.render_priority(f.get("priority"), hctx),
                        "status": cat.render_status(f["status"], hctx),
                    },
                },
            },
        )

    # -- create / edit / delete ---------------------------------------------------------------

    def create_issue(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        body = self._obj_body(req)
        fields_in = body.get("fields") or {}
        update_in = body.get("update") or {}
        if not isinstance(fields_in, dict) or not isinstance(update_in, dict):
            raise _fail(
                400,
                [
                    "Can not deserialize instance of the request object: 'fields' and "
                    "'update' must be objects"
                ],
            )
        cat = self.catalog
        errors: dict[str, str] = {}
        project = cat.project(fields_in.get("project")) if fields_in.get("project") else None
        if project is None:
            errors["project"] = "Specify a valid project ID or key"
        itype = None
        if not fields_in.get("issuetype"):
            errors["issuetype"] = "Specify an issue type"
        else:
            itype = cat.find("issuetypes", fields_in["issuetype"])
            if itype is None or (project is not None and itype["id"] not in project["issuetypes"]):
                errors["issuetype"] = "The issue type selected is invalid."
                itype = None
        summary = fields_in.get("summary")
        if (not isinstance(summary, str) or not summary.strip()) and "summary" not in update_in:
            errors["summary"] = "You must specify a summary of the issue."
        if project is None or itype is None:
            errors.update(
                {
                    k: v
                    for k, v in self._screen_errors(fields_in, "create").items()
                    if k not in errors
                }
            )
            raise _fail(400, [], errors)
        now = times.now_ms()
        initial = cat.data["workflow"]["initial"]
        default_priority = self._default_priority()
        values: Obj = {
            "summary": "",
            "description": None,
            "environment": None,
            "issuetype": itype["id"],
            "status": initial,
            "priority": default_priority["id"] if default_priority else None,
            "assignee": None,
            "reporter": ctx.user,
            "creator": ctx.user,
            "labels": [],
            "components": [],
            "resolution": None,
            "resolutiondate": None,
            "created": now,
            "updated": now,
            "statuscategorychangedate": now,
            "duedate": None,
        }
        on_screen = {fid for fid, _ in self._create_fields(project, itype)}
        for fid, value in fields_in.items():
            if fid in ("project", "issuetype"):
                continue
            if fid not in on_screen:
                errors[fid] = CANNOT_SET.format(fid)
                continue
            if fid in update_in:
                errors[fid] = f"Field '{fid}' cannot be set in both 'fields' and 'update'."
                continue
            conv = self._convert(fid, value, ctx, project, errors)
            if conv is not _INVALID:
                values[fid] = conv
        for fid, ops in update_in.items():
            if fid not in on_screen:
                errors[fid] = CANNOT_SET.format(fid)
                continue
            conv = self._apply_update(fid, ops, values.get(fid), ctx, project, errors)
            if conv is not _INVALID:
                values[fid] = conv
        for fid, required in self._create_fields(project, itype):
            if (
                required
                and fid not in ("project", "issuetype")
                and values.get(fid) in (None, "", [])
                and fid not in errors
            ):
                errors[fid] = (
                    "You must specify a summary of the issue."
                    if fid == "summary"
                    else f"{self._field_name(fid)} is required."
                )
        if errors:
            raise _fail(400, [], errors)
        transition = body.get("transition")
        iid = self._next("issue")
        issue: Obj = {
            "id": iid,
            "key": self._next_key(project),
            "projectId": project["id"],
            "fields": values,
            "extra": {},
            "comments": [],
            "histories": [],
            "properties": {},
            "remotelinks": [],
            "watchers": [ctx.user] if ctx.user else [],
        }
        props = body.get("properties")
        for prop in props if isinstance(props, list) else []:
            if isinstance(prop, Mapping) and prop.get("key"):
                issue["properties"][str(prop["key"])] = copy.deepcopy(prop.get("value"))
        self._put_issue(issue)
        self._issue_event("jira:issue_created", "issue_created", issue, ctx)
        out: Obj = {"id": iid, "key": issue["key"], "self": f"{ctx.api}/issue/{iid}"}
        if isinstance(transition, Mapping) and transition.get("id") is not None:
            try:
                self._do_transition(issue, ctx, {"transition": transition})
            except SimHTTPError as exc:
                out["transition"] = {
                    "status": exc.status,
                    "errorCollection": {
                        "errorMessages": exc.extra.get("messages", []),
                        "errors": exc.detail or {},
                    },
                }
            else:
                out["transition"] = {"status": 200}
        return _json(out, 201)

    def _screen_errors(self, fields_in: Mapping[str, Any], screen: str) -> dict[str, str]:
        allowed = {f.id for f in SYSTEM_FIELDS if getattr(f, screen)} | {
            cf["id"] for cf in self.catalog.data["fields"]
        }
        return {
            fid: CANNOT_SET.format(fid)
            for fid in fields_in
            if fid not in allowed and fid not in ("project", "issuetype")
        }

    def _edit_issue(self, req: SimRequest, ctx: Ctx, issue: Obj) -> Response:
        body = self._obj_body(req)
        fields_in = body.get("fields") or {}
        update_in = body.get("update") or {}
        if not isinstance(fields_in, dict) or not isinstance(update_in, dict):
            raise _fail(
                400,
                [
                    "Can not deserialize instance of the request object: 'fields' and "
                    "'update' must be objects"
                ],
            )
        project = self._project_of(issue)
        errors: dict[str, str] = {}
        editable = set(self._edit_fields()) - {"comment"}
        new = copy.deepcopy(issue["fields"])
        for fid, value in fields_in.items():
            if fid not in editable:
                errors[fid] = CANNOT_SET.format(fid)
            elif fid in update_in:
                errors[fid] = f"Field '{fid}' cannot be set in both 'fields' and 'update'."
            else:
                conv = self._convert(fid, value, ctx, project, errors)
                if conv is not _INVALID:
                    new[fid] = conv
        comment_ops: list[Any] = []
        link_ops: list[Any] = []
        for fid, ops in update_in.items():
            if fid == "comment":
                comment_ops = ops if isinstance(ops, list) else [ops]
            elif fid == "issuelinks":
                link_ops = ops if isinstance(ops, list) else [ops]
            elif fid not in editable:
                errors[fid] = CANNOT_SET.format(fid)
            else:
                conv = self._apply_update(fid, ops, new.get(fid), ctx, project, errors)
                if conv is not _INVALID:
                    new[fid] = conv
        if new.get("summary") in (None, "") and "summary" not in errors:
            errors["summary"] = "You must specify a summary of the issue."
        prepared_comments = [self._comment_op(issue, op, ctx, errors) for op in comment_ops]
        prepared_links = [self._link_op(issue, op, errors) for op in link_ops]
        if errors:
            raise _fail(400, [], errors)
        items = self._items(issue["fields"], new)
        now = times.now_ms()
        if items:
            new["updated"] = now
            issue["fields"] = new
            history = self._add_history(issue, ctx.user, items, now)
            only_assignee = all(i["fieldId"] == "assignee" for i in items)
            self._issue_event(
                "jira:issue_updated",
                "issue_assigned" if only_assignee else "issue_updated",
                issue,
                ctx,
                history,
            )
        for apply in prepared_comments:
            apply()
        for link_apply in prepared_links:
            link_apply(ctx)
        if _bool(req.arg("returnIssue")):
            return _json(self._render_issue(issue, ctx, expand=self._expand(req)))
        return Response(status_code=204)

    def _delete_issue(self, req: SimRequest, ctx: Ctx, issue: Obj) -> Response:
        self._issue_event("jira:issue_deleted", "issue_deleted", issue, ctx)
        self._drop_issue(issue)
        self._issue_writes.pop(issue["id"], None)
        return Response(status_code=204)

    def assign(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        self._write_check(issue)
        body = self._body(req, required=False)
        errors: dict[str, str] = {}
        project = self._project_of(issue)

        def bad(message: str) -> Any:
            errors["assignee"] = message
            return _INVALID

        if body is None or (
            isinstance(body, Mapping) and body.get("accountId") is None and body.get("id") is None
        ):
            value = None
        else:
            value = self._convert_user(body, "assignee", project, bad)
        if errors or value is _INVALID:
            raise _fail(400, [], errors)
        new = copy.deepcopy(issue["fields"])
        new["assignee"] = value
        items = self._items(issue["fields"], new)
        if items:
            now = times.now_ms()
            new["updated"] = now
            issue["fields"] = new
            history = self._add_history(issue, ctx.user, items, now)
            self._issue_event("jira:issue_updated", "issue_assigned", issue, ctx, history)
        return Response(status_code=204)

    def changelog(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(1, min(_int_arg(req, "maxResults", 100), 100))
        rows = issue["histories"]
        page = rows[start : start + limit]
        base = f"{ctx.api}/issue/{issue['key']}/changelog"
        values = [self._render_history(h, ctx) for h in page]
        return _json(_page_bean(base, start, limit, len(rows), values))

    # -- transitions --------------------------------------------------------------------------

    def _render_transition(self, t: Obj, issue: Obj, ctx: Ctx, with_fields: bool) -> Obj:
        out: Obj = {
            "id": t["id"],
            "name": t["name"],
            "to": self.catalog.render_status(t["to"], ctx),
            "hasScreen": bool(t["screen"]),
            "isGlobal": not t["from"],
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "isLooped": False,
        }
        if with_fields:
            project = self._project_of(issue)
            out["fields"] = {
                fid: self._field_meta(fid, project, ctx, fid in t["required"])
                for fid in t["screen"]
            }
        return out

    def transitions(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        if req.method == "GET":
            with_fields = "transitions.fields" in self._expand(req)
            only = req.arg("transitionId")
            rows = [
                t
                for t in self.catalog.transitions_from(issue["fields"]["status"])
                if only is None or t["id"] == only
            ]
            return _json(
                {
                    "expand": "transitions",
                    "transitions": [
                        self._render_transition(t, issue, ctx, with_fields) for t in rows
                    ],
                }
            )
        self._write_check(issue)
        self._do_transition(issue, ctx, self._obj_body(req))
        return Response(status_code=204)

    def _do_transition(self, issue: Obj, ctx: Ctx, body: Mapping[str, Any]) -> None:
        ref = body.get("transition")
        tid = ref.get("id") if isinstance(ref, Mapping) else None
        if tid is None or isinstance(tid, bool):
            raise _fail(400, ["Transition id must be specified."])
        tid = str(tid)
        available = self.catalog.transitions_from(issue["fields"]["status"])
        t = next((x for x in available if x["id"] == tid), None)
        if t is None:
            raise _fail(400, [f"Transition id '{tid}' is not valid for this issue."])
        fields_in = body.get("fields") or {}
        update_in = body.get("update") or {}
        if not isinstance(fields_in, dict) or not isinstance(update_in, dict):
            raise _fail(400, ["'fields' and 'update' must be objects"])
        project = self._project_of(issue)
        errors: dict[str, str] = {}
        new = copy.deepcopy(issue["fields"])
        for fid, value in fields_in.items():
            if fid not in t["screen"]:
                errors[fid] = CANNOT_SET.format(fid)
            elif fid in update_in:
                errors[fid] = f"Field '{fid}' cannot be set in both 'fields' and 'update'."
            else:
                conv = self._convert(fid, value, ctx, project, errors)
                if conv is not _INVALID:
                    new[fid] = conv
        comment_ops: list[Any] = []
        for fid, ops in update_in.items():
            if fid == "comment":
                comment_ops = ops if isinstance(ops, list) else [ops]
            elif fid not in t["screen"]:
                errors[fid] = CANNOT_SET.format(fid)
            else:
                conv = self._apply_update(fid, ops, new.get(fid), ctx, project, errors)
                if conv is not _INVALID:
                    new[fid] = conv
        for fid in t["required"]:
            provided = fid in fields_in or fid in update_in
            if fid not in errors and (not provided or new.get(fid) in (None, "", [])):
                errors[fid] = f"{self._field_name(fid)} is required."
        prepared = [self._comment_op(issue, op, ctx, errors) for op in comment_ops]
        if errors:
            raise _fail(400, [], errors)
        now = times.now_ms()
        old_category = self.catalog.status_category(new["status"])["key"]
        new["status"] = t["to"]
        if t.get("setResolution") and not new.get("resolution"):
            new["resolution"] = str(t["setResolution"])
        if t.get("clearResolution"):
            new["resolution"] = None
        if new.get("resolution") and not issue["fields"].get("resolution"):
            new["resolutiondate"] = now
        elif not new.get("resolution"):
            new["resolutiondate"] = None
        if self.catalog.status_category(t["to"])["key"] != old_category:
            new["statuscategorychangedate"] = now
        new["updated"] = now
        items = self._items(issue["fields"], new)
        issue["fields"] = new
        history = self._add_history(issue, ctx.user, items, now)
        self._issue_event(
            "jira:issue_updated", str(t.get("event") or "issue_generic"), issue, ctx, history
        )
        for apply in prepared:
            apply()

    # -- comments -----------------------------------------------------------------------------

    def _render_comment(
        self, issue: Obj, c: Obj, ctx: Ctx, rendered: bool = False, properties: bool = False
    ) -> Obj:
        cat = self.catalog
        out: Obj = {
            "self": f"{ctx.api}/issue/{issue['id']}/comment/{c['id']}",
            "id": c["id"],
            "author": cat.render_user(c["author"], ctx),
            "body": self._rich(c["body"], ctx),
            "updateAuthor": cat.render_user(c["updateAuthor"], ctx),
            "created": times.fmt(c["created"], ctx.tz),
            "updated": times.fmt(c["updated"], ctx.tz),
        }
        if c.get("visibility"):
            out["visibility"] = dict(c["visibility"])
        out["jsdPublic"] = bool(c.get("jsdPublic", True))
        if rendered:
            out["renderedBody"] = adf.to_html(c["body"]) or ""
        if properties:
            out["properties"] = [
                {"key": k, "value": copy.deepcopy(v)}
                for k, v in (c.get("properties") or {}).items()
            ]
        return out

    def _comment_fields(
        self, body: Mapping[str, Any], ctx: Ctx, errors: dict[str, str], *, partial: bool = False
    ) -> Obj:
        out: Obj = {}
        if "body" in body or not partial:
            text = body.get("body")
            if ctx.version == "3":
                if not adf.is_adf(text):
                    errors["comment"] = adf.ADF_ERROR
                elif not adf.adf_to_text(text).strip():
                    errors["comment"] = "Comment body can not be empty!"
            elif not isinstance(text, str):
                errors["comment"] = (
                    "Comment body can not be empty!" if text is None else adf.STRING_ERROR
                )
            elif not text.strip():
                errors["comment"] = "Comment body can not be empty!"
            if "comment" not in errors and len(adf.to_text(text) or "") > MAX_TEXT:
                errors["comment"] = (
                    "The entered text is too long. It exceeds the allowed limit "
                    "of 32,767 characters."
                )
            out["body"] = copy.deepcopy(text)
        if "visibility" in body:
            out["visibility"] = self._visibility(body.get("visibility"), ctx, errors)
        props = body.get("properties")
        for prop in props if isinstance(props, list) else []:
            if not isinstance(prop, Mapping) or not prop.get("key"):
                continue
            if prop.get("key") == "sd.public.comment":
                internal = (prop.get("value") or {}).get("internal")
                out["jsdPublic"] = not bool(internal)
            # Comment properties (entity properties of the comment): kept, and shown with
            # ?expand=properties, as Jira does.
            out.setdefault("properties", {})[str(prop["key"])] = copy.deepcopy(prop.get("value"))
        return out

    def _visibility(self, vis: Any, ctx: Ctx, errors: dict[str, str]) -> Obj | None:
        if vis is None:
            return None
        if not isinstance(vis, Mapping) or vis.get("type") not in ("role", "group"):
            errors["commentLevel"] = "Visibility type must be 'role' or 'group'."
            return None
        value = str(vis.get("value") or vis.get("identifier") or "")
        if vis["type"] == "role":
            role = self.catalog.role(value)
            if role is None:
                errors["commentLevel"] = (
                    f"You are currently not a member of the project role: {value}."
                )
                return None
            return {"type": "role", "value": role["name"], "identifier": role["name"]}
        group = self.catalog.group(value)
        member = group is not None and group["name"] in (self.catalog.user(ctx.user) or {}).get(
            "groups", []
        )
        if group is None or not member:
            errors["commentLevel"] = f"You are currently not a member of the group: {value}."
            return None
        return {"type": "group", "value": group["name"], "identifier": group["groupId"]}

    def _can_see(self, issue: Obj, comment: Obj, account_id: str) -> bool:
        """A comment restricted to a group or a project role is only there for its members."""
        vis = comment.get("visibility")
        if not vis:
            return True
        user = self.catalog.user(account_id) or {}
        groups = set(user.get("groups", []))
        if vis.get("type") == "group":
            return str(vis.get("value")) in groups
        project = self.catalog.project({"id": issue["projectId"]}) or {}
        members = (project.get("roleMembers") or {}).get(str(vis.get("value")))
        if members is None:
            members = DEFAULT_ROLE_MEMBERS.get(str(vis.get("value")), [])
        return account_id in members or bool(groups & set(members))

    def _visible_comments(self, issue: Obj, ctx: Ctx) -> list[Obj]:
        return [c for c in issue["comments"] if self._can_see(issue, c, str(ctx.user))]

    # -- filters and dashboards ---------------------------------------------------------------

    def _render_filter(self, f: Obj, ctx: Ctx) -> Obj:
        return {
            "self": f"{ctx.api}/filter/{f['id']}",
            "id": f["id"],
            "name": f["name"],
            "owner": self._owner(f["owner"], ctx),
            "jql": f["jql"],
            "viewUrl": f"{ctx.base}/issues/?filter={f['id']}",
            "searchUrl": f"{ctx.api}/search?jql={quote(f['jql'])}",
            "favourite": str(ctx.user) in f["favouritedBy"],
            "favouritedCount": len(f["favouritedBy"]),
            "sharePermissions": f["sharePermissions"],
            "editPermissions": [],
        } | ({"description": f["description"]} if f["description"] else {})

    def _filter_fields(self, body: Obj, ctx: Ctx, current: Obj | None) -> Obj:
        name = str(body.get("name") or (current or {}).get("name") or "")
        if not name:
            raise _fail(400, [], {"filterName": "You must specify a name to save this filter as."})
        clash = [
            f
            for f in self.filters_by_id.values()
            if f["name"] == name and f["owner"] == ctx.user and f is not current
        ]
        if clash:
            raise _fail(400, [], {"filterName": "Filter with same name already exists."})
        jql_text = str(body.get("jql") if "jql" in body else (current or {}).get("jql", ""))
        self._run_jql(jql_text, ctx)  # an invalid JQL is refused with the search's own error
        return {
            "name": name,
            "description": str(body.get("description") or ""),
            "jql": jql_text,
            "sharePermissions": list(body.get("sharePermissions") or []),
        }

    def filters(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        fields = self._filter_fields(self._obj_body(req), ctx, None)
        fid = self._next("filter")
        f = {"id": fid, "owner": ctx.user, "favouritedBy": [], **fields}
        if self._obj_body(req).get("favourite"):
            f["favouritedBy"].append(ctx.user)
        self.filters_by_id[fid] = f
        return _json(self._render_filter(f, ctx))

    def favourite_filters(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        mine = [f for f in self.filters_by_id.values() if ctx.user in f["favouritedBy"]]
        return _json([self._render_filter(f, ctx) for f in mine])

    def filter_item(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        f = self.filters_by_id.get(req.path_params["id"])
        if f is None:
            raise _fail(400, [FILTER_GONE])
        if req.method == "GET":
            return _json(self._render_filter(f, ctx))
        if f["owner"] != ctx.user:  # Jira answers 400 here, not 403 (the spec lists no 403)
            raise _fail(400, ["Only the owner of a filter can change it."])
        if req.method == "DELETE":
            del self.filters_by_id[f["id"]]
            return Response(status_code=204)
        body = self._obj_body(req)
        f.update(self._filter_fields(body, ctx, f))
        if "favourite" in body:
            f["favouritedBy"] = [u for u in f["favouritedBy"] if u != ctx.user]
            if body["favourite"]:
                f["favouritedBy"].append(ctx.user)
        return _json(self._render_filter(f, ctx))

    def _render_dashboard(self, d: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "id": d["id"],
            "isFavourite": False,
            "name": d["name"],
            "popularity": 0,
            "self": f"{ctx.api}/dashboard/{d['id']}",
            "sharePermissions": d["sharePermissions"],
            "editPermissions": d["editPermissions"],
            "view": f"{ctx.base}/jira/dashboards/{d['id']}",
            "systemDashboard": d["systemDashboard"],
        }
        if d["description"]:
            out["description"] = d["description"]
        if d["owner"]:
            out["owner"] = self._owner(d["owner"], ctx)
        return out

    def _owner(self, account_id: str, ctx: Ctx) -> Obj:
        """A filter's or dashboard's owner: the short user bean those resources embed."""
        user = self.catalog.render_user(account_id, ctx) or {}
        keep = ("self", "accountId", "displayName", "active", "avatarUrls")
        return {k: user[k] for k in keep if k in user}

    def _dashboard_or_404(self, req: SimRequest) -> Obj:
        did = req.path_params["id"]
        d = self.dashboards_by_id.get(did)
        if d is None:
            raise _fail(404, [f"The dashboard with id '{did}' does not exist."])
        return d

    @staticmethod
    def _share(perms: Any) -> list[Obj]:
        # Jira stores "authenticated" (any logged-in user) as "loggedin".
        out = []
        for p in perms or []:
            p = dict(p) if isinstance(p, Mapping) else {}
            if p.get("type") == "authenticated":
                p["type"] = "loggedin"
            out.append(p)
        return out

    def _dashboard_fields(self, body: Obj) -> Obj:
        name = str(body.get("name") or "")
        if not name:
            raise _fail(400, ["The name of the dashboard must be specified."])
        return {
            "name": name,
            "description": str(body.get("description") or ""),
            "sharePermissions": self._share(body.get("sharePermissions")),
            "editPermissions": self._share(body.get("editPermissions")),
        }

    def dashboards(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        if req.method == "POST":
            d: Obj = {"id": self._next("dashboard"), "owner": ctx.user, "systemDashboard": False}
            d.update(gadgets=[], refreshMs=0, **self._dashboard_fields(self._obj_body(req)))
            self.dashboards_by_id[d["id"]] = d
            return _json(self._render_dashboard(d, ctx))
        rows = sorted(self.dashboards_by_id.values(), key=lambda d: int(d["id"]))
        if req.arg("filter") == "my":
            rows = [d for d in rows if d["owner"] == ctx.user]
        elif req.arg("filter") == "favourite":
            rows = []
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(1, min(_int_arg(req, "maxResults", 20), 1000))
        page = rows[start : start + limit]
        out: Obj = {
            "startAt": start,
            "maxResults": limit,
            "total": len(rows),
            "dashboards": [self._render_dashboard(d, ctx) for d in page],
        }
        if start + limit < len(rows):
            out["next"] = f"{ctx.api}/dashboard?startAt={start + limit}&maxResults={limit}"
        return _json(out)

    def dashboard(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        d = self._dashboard_or_404(req)
        if req.method == "GET":
            return _json(self._render_dashboard(d, ctx))
        if d["systemDashboard"] or d["owner"] != ctx.user:
            raise _fail(403, ["You do not have permission to edit this dashboard."])
        if req.method == "DELETE":
            del self.dashboards_by_id[d["id"]]
            return Response(status_code=204)
        d.update(self._dashboard_fields(self._obj_body(req)))
        return _json(self._render_dashboard(d, ctx))

    def copy_dashboard(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        src = self._dashboard_or_404(req)
        new = {
            "id": self._next("dashboard"),
            "owner": ctx.user,
            "systemDashboard": False,
            "refreshMs": 0,
            **self._dashboard_fields(self._obj_body(req)),
        }
        new["gadgets"] = [
            {**copy.deepcopy(g), "id": int(self._next("gadget"))} for g in src["gadgets"]
        ]
        self.dashboards_by_id[new["id"]] = new
        return _json(self._render_dashboard(new, ctx))

    def dashboard_refresh(self, req: SimRequest) -> Response:
        d = self._dashboard_or_404(req)
        body = self._obj_body(req)
        d["refreshMs"] = int(body.get("automaticRefreshMs") or 0)
        return Response(status_code=204)

    def available_gadgets(self, req: SimRequest) -> Response:
        self._ctx(req)
        return _json({"gadgets": [dict(g) for g in GADGETS]})

    @staticmethod
    def _render_gadget(g: Obj) -> Obj:
        out: Obj = {k: g[k] for k in ("id", "color", "position", "title") if k in g}
        for k in ("moduleKey", "uri"):
            if g.get(k):
                out[k] = g[k]
        return out

    def gadgets(self, req: SimRequest) -> Response:
        self._ctx(req)
        d = self._dashboard_or_404(req)
        if req.method == "GET":
            return _json({"gadgets": [self._render_gadget(g) for g in d["gadgets"]]})
        body = self._obj_body(req)
        uri, module = body.get("uri"), body.get("moduleKey") or body.get("module_key")
        if bool(uri) == bool(module):
            raise _fail(
                400, ["Either the uri or the moduleKey of the gadget must be given, not both."]
            )
        known = next(
            (g for g in GADGETS if g.get("uri") == uri or g.get("moduleKey") == module), None
        )
        if known is None and not body.get("ignoreUriAndModuleKeyValidation"):
            raise _fail(400, ["The gadget's uri or moduleKey is not valid."])
        color = str(body.get("color") or "blue")
        if color not in GADGET_COLORS:
            raise _fail(400, [f"The color {color} is not a valid gadget color."])
        position = body.get("position") or {"row": len(d["gadgets"]), "column": 0}
        g = {
            "id": int(self._next("gadget")),
            "color": color,
            "position": position,
            "title": str(body.get("title") or (known or {}).get("title") or ""),
            "uri": uri,
            "moduleKey": module,
            "properties": {},
        }
        d["gadgets"].append(g)
        return _json(self._render_gadget(g))

    def _gadget_or_404(self, d: Obj, gid: str) -> Obj:
        g = next((g for g in d["gadgets"] if str(g["id"]) == gid), None)
        if g is None:
            raise _fail(
                404,
                [f"The gadget with id {gid} does not exist on the dashboard with id {d['id']}."],
            )
        return g

    def gadget(self, req: SimRequest) -> Response:
        self._ctx(req)
        d = self._dashboard_or_404(req)
        g = self._gadget_or_404(d, req.path_params["gadgetId"])
        if req.method == "DELETE":
            d["gadgets"].remove(g)
            return Response(status_code=204)
        body = self._obj_body(req)
        if "color" in body and body["color"] not in GADGET_COLORS:
            raise _fail(400, [f"The color {body['color']} is not a valid gadget color."])
        for k in ("color", "position", "title"):
            if k in body:
                g[k] = body[k]
        return Response(status_code=204)

    def item_property_keys(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        d = self._dashboard_or_404(req)
        g = self._gadget_or_404(d, req.path_params["itemId"])
        base = f"{ctx.api}/dashboard/{d['id']}/items/{g['id']}/properties"
        return _json(
            {"keys": [{"key": k, "self": f"{base}/{quote(k, safe='')}"} for k in g["properties"]]}
        )

    def item_property(self, req: SimRequest) -> Response:
        self._ctx(req)
        d = self._dashboard_or_404(req)
        g = self._gadget_or_404(d, req.path_params["itemId"])
        key = req.path_params["propertyKey"]
        if req.method == "GET":
            if key not in g["properties"]:
                raise _fail(404, [f"The property with key '{key}' does not exist."])
            return _json({"key": key, "value": g["properties"][key]})
        if req.method == "DELETE":
            if g["properties"].pop(key, None) is None:
                raise _fail(404, [f"The property with key '{key}' does not exist."])
            return Response(status_code=204)
        created = key not in g["properties"]
        g["properties"][key] = self._body(req)
        return _json({"key": key, "value": g["properties"][key]}, 201 if created else 200)

    # -- groups -------------------------------------------------------------------------------

    def group(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        name = req.arg("groupname") or ""
        g = self.catalog.group(name)
        if g is None:
            raise _fail(404, ["Specified group does not exist."])
        members = [
            u for u in self.catalog.data["users"].values() if g["name"] in u.get("groups", [])
        ]
        items = (
            [self.catalog.render_user(u["accountId"], ctx) for u in members]
            if "users" in self._expand(req)
            else []
        )
        return _json(
            {
                "name": g["name"],
                "groupId": g["groupId"],
                "self": f"{ctx.api}/group?groupId={g['groupId']}",
                "users": {
                    "size": len(members),
                    "items": items,
                    "max-results": 50,
                    "start-index": 0,
                    "end-index": max(0, len(items) - 1),
                },
                "expand": "users",
            }
        )

    def groups_picker(self, req: SimRequest) -> Response:
        self._ctx(req)
        query = (req.arg("query") or "").lower()
        exclude = set(req.args("exclude"))
        rows = [
            g
            for g in self.catalog.data["groups"]
            if query in g["name"].lower() and g["name"] not in exclude
        ]
        limit = max(0, _int_arg(req, "maxResults", 20))
        shown = rows[:limit]
        return _json(
            {
                "header": f"Showing {len(shown)} of {len(rows)} matching groups",
                "total": len(rows),
                "groups": [
                    {"name": g["name"], "html": g["name"], "groupId": g["groupId"], "labels": []}
                    for g in shown
                ],
            }
        )

    def viewissue_search(self, req: SimRequest) -> Response:
        """Users who may see an issue (or a project's issues) matching ``query``."""
        ctx = self._ctx(req)
        if req.arg("issueKey") is None and req.arg("projectKey") is None:
            raise _fail(400, ["Either the issueKey or the projectKey must be given."])
        if req.arg("issueKey") is not None and self._find_issue(req.arg("issueKey")) is None:
            raise _not_found()
        if req.arg("projectKey") is not None:
            self._project_or_404(str(req.arg("projectKey")))
        query = (req.arg("query") or "").lower()
        users = [
            u
            for u in self.catalog.data["users"].values()
            if u.get("active", True)
            and (query in u["displayName"].lower() or query in u.get("emailAddress", "").lower())
        ]
        start = max(0, _int_arg(req, "startAt", 0))
        limit = max(0, _int_arg(req, "maxResults", 50))
        return _json(
            [self.catalog.render_user(u["accountId"], ctx) for u in users[start : start + limit]]
        )

    # -- attachments --------------------------------------------------------------------------

    def _render_attachment(self, a: Obj, ctx: Ctx) -> Obj:
        return {
            "self": f"{ctx.api}/attachment/{a['id']}",
            "id": a["id"],
            "filename": a["filename"],
            "author": self.catalog.render_user(a["author"], ctx),
            "created": times.fmt(a["created"], ctx.tz),
            "size": a["size"],
            "mimeType": a["mimeType"],
            "content": f"{ctx.base}/rest/api/{ctx.version}/attachment/content/{a['id']}",
        }

    def _find_attachment(self, aid: str) -> tuple[Obj, Obj]:
        for issue in self.issues.values():
            for a in issue.get("attachments", []):
                if a["id"] == aid:
                    return issue, a
        raise _fail(404, [f"The attachment with id '{aid}' does not exist"])

    def add_attachments(self, req: SimRequest) -> Response:
        """POST /issue/{key}/attachments: multipart ``file`` parts; needs the XSRF opt-out."""
        ctx = self._ctx(req)
        if req.headers.get("x-atlassian-token", "").lower() != "no-check":
            return Response("XSRF check failed", status_code=403, media_type="text/plain")
        issue = self._issue_or_404(req)
        self._write_check(issue)
        files = [p for p in req.multipart() if p.name == "file" and p.filename is not None]
        if not files:
            raise _fail(400, ["No attachment was found in the request: expected a 'file' part."])
        out = []
        for part in files:
            aid = self._next("attachment")
            a = {
                "id": aid,
                "filename": part.filename,
                "author": ctx.user,
                "created": times.now_ms(),
                "size": len(part.data),
                "mimeType": part.content_type or "application/octet-stream",
            }
            issue.setdefault("attachments", []).append(a)
            self.files[aid] = base64.b64encode(part.data).decode()
            out.append(self._render_attachment(a, ctx))
        issue["fields"]["updated"] = times.now_ms()
        self._issue_event("jira:issue_updated", "issue_updated", issue, ctx)
        return _json(out)

    def attachment(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue, a = self._find_attachment(req.path_params["id"])
        if req.method == "DELETE":
            issue["attachments"].remove(a)
            self.files.pop(a["id"], None)
            return Response(status_code=204)
        return _json(self._render_attachment(a, ctx))

    def attachment_content(self, req: SimRequest) -> Response:
        self._ctx(req)
        _, a = self._find_attachment(req.path_params["id"])
        return Response(
            base64.b64decode(self.files.get(a["id"], "")),
            media_type=a["mimeType"],
            headers={"Content-Disposition": f'attachment; filename="{a["filename"]}"'},
        )

    def comment_list(self, req: SimRequest) -> Response:
        """POST /comment/list {"ids": [...]}: the comments the caller may see, by id."""
        ctx = self._ctx(req)
        body = self._obj_body(req)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids:
            raise _fail(400, ["The 'ids' field is required and must contain at least 1 id."])
        if len(ids) > 1000:
            raise _fail(400, ["The maximum number of comments that can be requested is 1000."])
        wanted = {str(i) for i in ids}
        rendered = "renderedBody" in _csv(req.args("expand"))
        values = [
            self._render_comment(issue, c, ctx, rendered)
            for issue in self.issues.values()
            for c in issue["comments"]
            if c["id"] in wanted and self._can_see(issue, c, str(ctx.user))
        ]
        values.sort(key=lambda c: int(c["id"]))
        return _json(_page_bean(f"{ctx.api}/comment/list", 0, len(values), len(values), values))

    def _add_comment(self, issue: Obj, fields: Obj, ctx: Ctx) -> Obj:
        now = times.now_ms()
        comment = {
            "id": self._next("comment"),
            "author": ctx.user,
            "updateAuthor": ctx.user,
            "body": fields["body"],
            "created": now,
            "updated": now,
            "visibility": fields.get("visibility"),
            "jsdPublic": fields.get("jsdPublic", True),
            "properties": dict(fields.get("properties") or {}),
        }
        issue["comments"].append(comment)
        issue["fields"]["updated"] = now
        self._comment_event("comment_created", issue, comment, ctx)
        self._issue_event("jira:issue_updated", "issue_commented", issue, ctx)
        return comment

    def _comment_op(
        self, issue: Obj, op: Any, ctx: Ctx, errors: dict[str, str]
    ) -> Callable[[], Any]:
        """Validate one ``update.comment`` operation now; apply it later (after the edit)."""
        if not isinstance(op, Mapping) or len(op) != 1:
            errors["comment"] = "Operation must be an object with exactly one of add/edit/remove."
            return lambda: None
        ((verb, arg),) = op.items()
        if verb == "add" and isinstance(arg, Mapping):
            fields = self._comment_fields(arg, ctx, errors)
            return lambda: self._add_comment(issue, fields, ctx)
        if verb in ("edit", "remove") and isinstance(arg, Mapping):
            target = next((c for c in issue["comments"] if c["id"] == str(arg.get("id"))), None)
            if target is None:
                errors["comment"] = f"Can not find a comment for the id: {arg.get('id')}."
                return lambda: None
            if verb == "remove":
                return lambda: self._delete_comment(issue, target, ctx)
            fields = self._comment_fields(arg, ctx, errors, partial=True)
            return lambda: self._update_comment(issue, target, fields, ctx)
        errors["comment"] = f"Field 'comment' does not support the operation '{verb}'."
        return lambda: None

    def _update_comment(self, issue: Obj, comment: Obj, fields: Obj, ctx: Ctx) -> None:
        comment.update(fields)
        comment["updateAuthor"] = ctx.user
        comment["updated"] = times.now_ms()
        issue["fields"]["updated"] = comment["updated"]
        self._comment_event("comment_updated", issue, comment, ctx)
        self._issue_event("jira:issue_updated", "issue_comment_edited", issue, ctx)

    def _delete_comment(self, issue: Obj, comment: Obj, ctx: Ctx) -> None:
        issue["comments"].remove(comment)
        issue["fields"]["updated"] = times.now_ms()
        self._comment_event("comment_deleted", issue, comment, ctx)
        self._issue_event("jira:issue_updated", "issue_comment_deleted", issue, ctx)

    def comments(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        expand = self._expand(req)
        rendered = "renderedBody" in expand
        if req.method == "GET":
            order = req.arg("orderBy") or "created"
            rows = sorted(
                self._visible_comments(issue, ctx),
                key=lambda c: (c["created"], int(c["id"])),
                reverse=order.startswith("-"),
            )
            start = max(0, _int_arg(req, "startAt", 0))
            limit = max(0, min(_int_arg(req, "maxResults", 5000), 5000))
            page = rows[start : start + limit]
            return _json(
                {
                    "startAt": start,
                    "maxResults": limit,
                    "total": len(rows),
                    "comments": [
                        self._render_comment(issue, c, ctx, rendered, "properties" in expand)
                        for c in page
                    ],
                }
            )
        self._write_check(issue)
        errors: dict[str, str] = {}
        fields = self._comment_fields(self._obj_body(req), ctx, errors)
        if errors:
            raise _fail(400, [], errors)
        comment = self._add_comment(issue, fields, ctx)
        return _json(self._render_comment(issue, comment, ctx, rendered), 201)

    def comment(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        cid = req.path_params["id"]
        visible = self._visible_comments(issue, ctx)
        target = next((c for c in visible if c["id"] == cid), None)
        if target is None:
            raise _fail(404, [f"Can not find a comment for the id: {cid}."])
        if req.method == "GET":
            return _json(
                self._render_comment(issue, target, ctx, "renderedBody" in self._expand(req))
            )
        self._write_check(issue)
        if req.method == "DELETE":
            self._delete_comment(issue, target, ctx)
            return Response(status_code=204)
        errors: dict[str, str] = {}
        fields = self._comment_fields(self._obj_body(req), ctx, errors)
        if errors:
            raise _fail(400, [], errors)
        self._update_comment(issue, target, fields, ctx)
        return _json(self._render_comment(issue, target, ctx, "renderedBody" in self._expand(req)))

    # -- properties ---------------------------------------------------------------------------

    def property_keys(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        return _json(
            {
                "keys": [
                    {
                        "self": f"{ctx.api}/issue/{issue['id']}/properties/{quote(k, safe='')}",
                        "key": k,
                    }
                    for k in issue["properties"]
                ]
            }
        )

    def issue_property(self, req: SimRequest) -> Response:
        self._ctx(req)
        issue = self._issue_or_404(req)
        key = req.path_params["propertyKey"]
        props = issue["properties"]
        if req.method == "GET":
            if key not in props:
                raise _fail(404, [f"The property with key '{key}' does not exist."])
            return _json({"key": key, "value": props[key]})
        self._write_check(issue)
        if req.method == "DELETE":
            if key not in props:
                raise _fail(404, [f"The property with key '{key}' does not exist."])
            del props[key]
            return Response(status_code=204)
        if len(key) > 255:
            raise _fail(400, ["The property key can not be longer than 255 characters."])
        if not req.body.strip():
            raise _fail(400, ["The property value cannot be empty."])
        value = self._body(req)
        if len(req.body) > 32768:
            raise _fail(400, ["The property value can not be longer than 32768 bytes."])
        created = key not in props
        props[key] = value
        return Response(status_code=201 if created else 200)

    # -- remote links -------------------------------------------------------------------------

    def _render_remotelink(self, issue: Obj, link: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "id": int(link["id"]),
            "self": f"{ctx.api}/issue/{issue['key']}/remotelink/{link['id']}",
        }
        for k in ("globalId", "application", "relationship", "object"):
            if link.get(k) is not None:
                out[k] = copy.deepcopy(link[k])
        return out

    def _remotelink_fields(self, body: Any) -> Obj:
        if not isinstance(body, Mapping):
            raise _fail(400, ["Can not deserialize the remote link: not an object"])
        obj = body.get("object")
        errors: dict[str, str] = {}
        if not isinstance(obj, Mapping):
            errors["object"] = "'object' is required."
        else:
            if not obj.get("title"):
                errors["title"] = "'title' is required."
            if not obj.get("url"):
                errors["url"] = "'url' is required."
        if errors:
            raise _fail(400, [], errors)
        return {
            k: copy.deepcopy(body.get(k))
            for k in ("globalId", "application", "relationship", "object")
        }

    def remotelinks(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        global_id = req.arg("globalId")
        if req.method == "GET":
            if global_id is not None:
                link = next(
                    (r for r in issue["remotelinks"] if r.get("globalId") == global_id), None
                )
                if link is None:
                    raise _fail(404, [f"No remote link with globalId '{global_id}' found."])
                return _json(self._render_remotelink(issue, link, ctx))
            return _json([self._render_remotelink(issue, r, ctx) for r in issue["remotelinks"]])
        self._write_check(issue)
        if req.method == "DELETE":
            if global_id is None:
                raise _fail(400, ["The globalId parameter is required."])
            before = len(issue["remotelinks"])
            issue["remotelinks"] = [
                r for r in issue["remotelinks"] if r.get("globalId") != global_id
            ]
            if len(issue["remotelinks"]) == before:
                raise _fail(404, [f"No remote link with globalId '{global_id}' found."])
            return Response(status_code=204)
        fields = self._remotelink_fields(self._body(req))
        existing = None
        if fields.get("globalId"):
            existing = next(
                (r for r in issue["remotelinks"] if r.get("globalId") == fields["globalId"]), None
            )
        if existing is not None:
            existing.update(fields)  # fields missing from the request become null
            link, status = existing, 200
        else:
            link = {"id": int(self._next("remotelink")), **fields}
            issue["remotelinks"].append(link)
            status = 201
        return _json(
            {
                "id": int(link["id"]),
                "self": f"{ctx.api}/issue/{issue['key']}/remotelink/{link['id']}",
            },
            status,
        )

    def remotelink(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        issue = self._issue_or_404(req)
        lid = req.path_params["linkId"]
        link = next((r for r in issue["remotelinks"] if str(r["id"]) == lid), None)
        if link is None:
            raise _fail(404, [f"No remote link with id '{lid}' found for issue {issue['key']}."])
        if req.method == "GET":
            return _json(self._render_remotelink(issue, link, ctx))
        self._write_check(issue)
        if req.method == "DELETE":
            issue["remotelinks"].remove(link)
            return Response(status_code=204)
        link.update(self._remotelink_fields(self._body(req)))
        return Response(status_code=204)

    # -- issue links --------------------------------------------------------------------------

    def _link_phrase(self, lt: Obj, outward: bool, other: Obj) -> str:
        return f"This issue {lt['outward'] if outward else lt['inward']} {other['key']}"

    def _create_link_now(self, lt: Obj, inward: Obj, outward: Obj, ctx: Ctx) -> Obj:
        for existing in self.links.values():
            if (existing["type"], existing["inward"], existing["outward"]) == (
                lt["id"],
                inward["id"],
                outward["id"],
            ):
                return existing
        lid = self._next("link")
        link = {"id": lid, "type": lt["id"], "inward": inward["id"], "outward": outward["id"]}
        self.links[lid] = link
        now = times.now_ms()
        for issue, other, is_source in ((inward, outward, True), (outward, inward, False)):
            item = {
                "field": ISSUE_LINK_NAME,
                "fieldtype": "jira",
                "from": None,
                "fromString": None,
                "to": other["key"],
                "toString": self._link_phrase(lt, is_source, other),
            }
            issue["fields"]["updated"] = now
            self._add_history(issue, ctx.user, [item], now)
        if self.webhook_targets:
            self._hook(
                "issuelink_created",
                {
                    "issueLink": {
                        "id": int(lid),
                        "sourceIssueId": int(inward["id"]),
                        "destinationIssueId": int(outward["id"]),
                        "issueLinkType": {
                            "id": int(lt["id"]),
                            "name": lt["name"],
                            "outwardName": lt["outward"],
                            "inwardName": lt["inward"],
                            "isSubTaskLinkType": False,
                            "isSystemLinkType": False,
                        },
                        "systemLink": False,
                    }
                },
            )
        return link

    def _link_op(self, issue: Obj, op: Any, errors: dict[str, str]) -> Callable[[Ctx], Any]:
        arg = op.get("add") if isinstance(op, Mapping) else None
        if not isinstance(arg, Mapping):
            errors["issuelinks"] = "Field 'issuelinks' only supports the 'add' operation."
            return lambda ctx: None
        lt = self.catalog.find("linktypes", arg.get("type") or {})
        if lt is None:
            errors["issuelinks"] = "No issue link type with the given name or id found."
            return lambda ctx: None
        # {"outwardIssue": X} means "this issue <outward> X": this issue is the link's inward end.
        outward_ref = arg.get("outwardIssue")
        other = self._find_issue(_ref_key(outward_ref or arg.get("inwardIssue")))
        if other is None:
            errors["issuelinks"] = NOT_FOUND
            return lambda ctx: None
        inward, outward = (issue, other) if outward_ref else (other, issue)
        return lambda ctx: self._create_link_now(lt, inward, outward, ctx)

    def create_link(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        body = self._obj_body(req)
        lt = self.catalog.find("linktypes", body.get("type") or {})
        if lt is None:
            ref = body.get("type") or {}
            shown = ref.get("name") or ref.get("id") if isinstance(ref, Mapping) else ref
            raise _fail(404, [f"No issue link type with name '{shown}' found."])
        inward = self._find_issue(_ref_key(body.get("inwardIssue")))
        outward = self._find_issue(_ref_key(body.get("outwardIssue")))
        if inward is None or outward is None:
            raise _fail(404, [NOT_FOUND])
        errors: dict[str, str] = {}
        comment = body.get("comment")
        fields = (
            self._comment_fields(comment, ctx, errors) if isinstance(comment, Mapping) else None
        )
        if errors:
            raise _fail(400, [], errors)
        self._write_check(inward)
        self._create_link_now(lt, inward, outward, ctx)
        if fields is not None:
            self._add_comment(inward, fields, ctx)
        return Response(status_code=201)

    def _render_link(self, link: Obj, ctx: Ctx) -> Obj:
        lt = self.catalog.get("linktypes", link["type"]) or {}
        return {
            "id": link["id"],
            "self": f"{ctx.api}/issueLink/{link['id']}",
            "type": self.catalog.render_linktype(lt, ctx),
            "inwardIssue": self._linked(self.issues[link["inward"]], ctx),
            "outwardIssue": self._linked(self.issues[link["outward"]], ctx),
        }

    def issue_link(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        link = self.links.get(req.path_params["linkId"])
        if link is None:
            raise _fail(404, [f"No issue link with id '{req.path_params['linkId']}' exists."])
        if req.method == "GET":
            return _json(self._render_link(link, ctx))
        del self.links[link["id"]]
        now = times.now_ms()
        lt = self.catalog.get("linktypes", link["type"]) or {"inward": "", "outward": ""}
        inward, outward = self.issues[link["inward"]], self.issues[link["outward"]]
        for issue, other, is_source in ((inward, outward, True), (outward, inward, False)):
            item = {
                "field": ISSUE_LINK_NAME,
                "fieldtype": "jira",
                "from": other["key"],
                "fromString": self._link_phrase(lt, is_source, other),
                "to": None,
                "toString": None,
            }
            issue["fields"]["updated"] = now
            self._add_history(issue, ctx.user, [item], now)
        return Response(status_code=204)

    # -- search -------------------------------------------------------------------------------

    def _search_args(self, req: SimRequest) -> Obj:
        """Search parameters from the query string (GET) or the JSON body (POST)."""
        if req.method == "GET" and len(req.path) + len(urlencode(req.query)) + 1 > MAX_URL:
            # Too large to be a query parameter: the edge refuses it; POST is the way.
            raise _fail(414, ["URI Too Long: send a JQL this long in the body of a POST search."])
        if req.method == "POST":
            body = self._obj_body(req)
            out: Obj = {}
            for k, v in body.items():
                if v is None:
                    continue
                if k in ("fields", "properties", "expand") and isinstance(v, list):
                    out[k] = [str(x) for x in v]
                elif k in ("fields", "properties", "expand"):
                    out[k] = [str(v)]
                else:
                    out[k] = v
            return out
        args: Obj = {}
        for k in ("jql", "nextPageToken", "maxResults", "startAt", "validateQuery"):
            if req.arg(k) is not None:
                args[k] = req.arg(k)
        for k in ("fields", "properties", "expand"):
            if req.args(k):
                args[k] = req.args(k)
        return args

    def _run_jql(self, text: str, ctx: Ctx) -> list[Obj]:
        """Issues matching ``text``; no ORDER BY means ``ORDER BY key DESC``."""
        try:
            query = jql.parse(text)
            schema = JqlSchema(self.catalog, self._find_issue, ctx)
            pred, order = jql.compile_query(query, schema)
            issues = list(self.issues.values())
            return jql.run(issues, pred, order or [(key_sort, True)], default=_issue_id)
        except jql.JqlError as exc:
            raise _fail(400, exc.messages) from exc
        except RecursionError as exc:  # absurdly nested queries
            raise _fail(400, ["Error in the JQL Query: The query is too complex."]) from exc

    @staticmethod
    def _limit(raw: Any, default: int, cap: int) -> int:
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except (TypeError, ValueError) as exc:
            raise _fail(
                400, [f"The value '{raw}' is not a valid number for 'maxResults'."]
            ) from exc
        return max(0, min(value, cap))

    def search(self, req: SimRequest) -> Response:
        """The old offset-paginated search (deprecated on Cloud, still served)."""
        ctx = self._ctx(req)
        args = self._search_args(req)
        rows = self._run_jql(str(args.get("jql") or ""), ctx)
        try:
            start = max(0, int(args.get("startAt") or 0))
        except (TypeError, ValueError) as exc:
            raise _fail(400, ["The value for 'startAt' is not a valid number."]) from exc
        limit = self._limit(args.get("maxResults"), 50, 100)
        expand = _csv(args.get("expand") or [])
        page = rows[start : start + limit]
        issues = [
            self._render_issue(
                i,
                ctx,
                fields=args.get("fields"),
                default_fields="*navigable",
                expand=expand,
                properties=args.get("properties"),
            )
            for i in page
        ]
        out: Obj = {
            "expand": "schema,names",
            "startAt": start,
            "maxResults": limit,
            "total": len(rows),
            "issues": issues,
        }
        self._search_meta(out, issues, expand)
        return _json(out)

    def _search_meta(self, out: Obj, issues: list[Obj], expand: list[str]) -> None:
        fids = {fid for i in issues for fid in i.get("fields", {})}
        if "names" in expand:
            out["names"] = {fid: self._field_name(fid) for fid in sorted(fids)}
        if "schema" in expand:
            out["schema"] = {fid: s for fid in sorted(fids) if (s := self._field_schema(fid))}
        for i in issues:
            i.pop("names", None)
            i.pop("schema", None)

    def search_jql(self, req: SimRequest) -> Response:
        """Token-paginated search: ``nextPageToken``/``isLast``, no ``total``."""
        ctx = self._ctx(req)
        args = self._search_args(req)
        text = str(args.get("jql") or "")
        try:
            bounded = jql.parse(text).where is not None
        except jql.JqlError as exc:
            raise _fail(400, exc.messages) from exc
        except RecursionError as exc:
            raise _fail(400, ["Error in the JQL Query: The query is too complex."]) from exc
        if not bounded:
            raise _fail(
                400,
                [
                    "Unbounded JQL queries are not allowed here. Please add a search "
                    "restriction to your query."
                ],
            )
        rows = self._run_jql(text, ctx)
        fields = _csv(args.get("fields") or []) or ["id"]
        ids_only = set(fields) <= {"id", "key"}
        limit = self._limit(args.get("maxResults"), 50, 5000 if ids_only else 100)
        token = args.get("nextPageToken")
        digest = hashlib.sha1(text.encode()).hexdigest()[:12]
        start = 0
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(token) + "==").decode())
                start = int(decoded["o"])
                if decoded["q"] != digest:
                    raise ValueError("token from another query")
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise _fail(400, ["The provided nextPageToken is invalid."]) from exc
        expand = _csv(args.get("expand") or [])
        page = rows[start : start + limit]
        if set(fields) == {"id"}:
            issues = [{"id": i["id"]} for i in page]
        else:
            issues = [
                self._render_issue(
                    i, ctx, fields=fields, expand=expand, properties=args.get("properties")
                )
                for i in page
            ]
        out: Obj = {"issues": issues}
        if start + limit < len(rows) and limit > 0:
            raw = json.dumps({"o": start + limit, "q": digest}).encode()
            out["nextPageToken"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        out["isLast"] = "nextPageToken" not in out
        self._search_meta(out, issues, expand)
        return _json(out)

    def approximate_count(self, req: SimRequest) -> Response:
        ctx = self._ctx(req)
        body = self._obj_body(req)
        return _json({"count": len(self._run_jql(str(body.get("jql") or ""), ctx))})


def _issue_id(issue: Obj) -> int:
    return int(issue["id"])


def _ref_key(ref: Any) -> str:
    if isinstance(ref, Mapping):
        return str(ref.get("key") or ref.get("id") or "")
    return str(ref or "")
