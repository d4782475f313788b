"""Jira Cloud connector on the ``jira`` library (pycontribs), REST v2 (plain-text bodies).

- Changes are listed with ``/search/jql`` and ``nextPageToken``. JQL dates have minute precision
  in the API user's time zone, so the watermark is converted to that zone and floored to the
  minute; a listing pass that saw records change under it is repeated, so a record shifted
  between pages by someone else's edit is never missed; (id, updated) pairs are yielded once.
- Creates stamp the correlation key as a label (searchable) and an issue property.
- State changes go by transition, found by target status name; with no direct transition the
  workflow is walked (and remembered) until the target is reached; required transition fields
  (such as resolution) are filled.
- The library's own ``ResilientSession`` retries are switched off (``max_retries=0``): the one
  retry layer is :func:`connectors.http.call_with_retries`. Writes to one issue also take a
  token from a per-issue bucket, so Jira's 20 writes / 2 s per issue is never hit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jira import JIRA
from jira.exceptions import JIRAError

from config.settings import JiraSettings, env_prefix, reveal, webhook_secrets
from connectors.base import (
    COMMENT_EVENT_KEY,
    FIELD_CHANGES_KEY,
    OUR_UPDATES_KEY,
    Capability,
    FieldChange,
    Observation,
    Person,
    Probe,
    RemoteComment,
    RemoteRecord,
    RemoteRef,
    Visibility,
    attributed,
    unattributed,
)
from connectors.errors import AuthFailed, ConnectorError, Fatal, NotFound
from connectors.http import (
    CALLS,
    KeyedBuckets,
    RatePolicy,
    RetryPolicy,
    TokenBucket,
    bucket_for,
    call_with_retries,
    credential_fingerprint,
    limit_concurrency,
)
from connectors.requests_errors import size_pool, translate
from connectors.tls import client_cert, read_environment_once

SYSTEM = "jira"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
PROPERTY = "itsm-sync"
MAX_WALK = 8  # transitions tried on the way to a status before giving up
T = TypeVar("T")
# Jira Cloud's limit on a text field (summary: 255).
TEXT_LIMITS = {"summary": 255}
TEXT_LIMIT = 32_767
# Wiki markup that Jira renders live: links and mentions ([text|url], [url], [~account]),
# images and attachments (!x!), and macros ({html}, {iframe}...). A backslash shows it as typed.
_WIKI_LIVE = re.compile(r"(?<!\\)([\[{!])")
# A ServiceNow record named in a remote link: its sys_id in the URL, or its number.
SN_SYS_ID = re.compile(r"sys_id(?:=|%3D)([0-9a-f]{32})")
SN_NUMBER = re.compile(r"\b((?:INC|PRB|CHG)[0-9]{7,})\b")
# Fields whose changelog value maps onto the record's shape ({"name": toString}).
NAMED = ("status", "priority", "resolution", "issuetype")
PEOPLE_FIELDS = ("assignee", "reporter")


# TIME_FORMAT's usual form, which datetime.fromisoformat reads ~30x faster than strptime
# (strptime was ~3 % of the HTTP process's CPU under load: every webhook has times to read).
_USUAL_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,6}[+-](?:[01]\d|2[0-3])[0-5]\d", re.ASCII
)


def parse_time(value: str) -> dt.datetime:
    """A Jira timestamp (``2024-01-01T10:00:00.000+0000``) as an aware datetime."""
    if _USUAL_TIME.fullmatch(value):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass  # out of range (a 13th month): strptime's own error below
    return dt.datetime.strptime(value, TIME_FORMAT)  # any other form it takes, or its error


def jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def version_of(fields: Mapping[str, Any]) -> tuple[int, ...]:
    updated = fields.get("updated")
    if not updated:
        return (0,)
    return (int(parse_time(str(updated)).timestamp() * 1000),)


class JiraConnector:
    """One Jira Cloud site and project."""

    system = SYSTEM
    capabilities = frozenset(
        {
            Capability.CREATE,
            Capability.UPDATE,
            Capability.COMMENTS,
            Capability.INTERNAL_COMMENTS,
            Capability.TRANSITIONS,
            Capability.PEOPLE,
            Capability.WEBHOOKS,
            Capability.FIELD_HISTORY,
            Capability.ISSUE_LINKS,
            Capability.MENTIONS,
            Capability.WORKFLOW,
        }
    )

    def __init__(
        self,
        settings: JiraSettings,
        *,
        instance: str = "default",
        retry: RetryPolicy | None = None,
        poll_overlap: dt.timedelta = dt.timedelta(minutes=1),
        internal_visibility: Mapping[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.poll_overlap = poll_overlap
        self.base_url = settings.url.rstrip("/")
        self.internal_visibility = dict(
            internal_visibility or {"type": "role", "value": "Developers"}
        )
        self._jira: JIRA | None = None
        self._lock = threading.Lock()
        fingerprint = credential_fingerprint(f"{self.base_url}|{settings.email}")
        self._bucket = bucket_for(
            SYSTEM, fingerprint, RatePolicy(requests_per_second=settings.requests_per_second)
        )
        self._issue_writes = KeyedBuckets(
            settings.issue_writes_per_second, settings.issue_write_burst
        )
        self._slots = limit_concurrency(SYSTEM, settings.max_concurrency, self.base_url)
        self._people_by_email: dict[str, Person] = {}
        self._people_by_id: dict[str, Person] = {}
        self._time_zone: ZoneInfo | None = None
        # status name (lower) -> {transition id: (transition name, target status name)}
        self._workflow: dict[str, dict[str, tuple[str, str]]] = {}
        self._options: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._status_categories: dict[str, str] = {}

    def __repr__(self) -> str:  # never the token
        project = self.settings.project
        return f"JiraConnector({self.instance!r}, {self.base_url!r}, project={project!r})"

    def object_types(self) -> Sequence[str]:
        return ("issue",)

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def jira(self) -> JIRA:
        """The library client, built on first use (its constructor calls serverInfo)."""
        with self._lock:
            if self._jira is None:
                self._jira = self._connect()
            return self._jira

    def _connect(self) -> JIRA:
        options: dict[str, Any] = {"rest_api_version": "2"}
        if self.settings.ca_bundle:
            options["verify"] = self.settings.ca_bundle
        cert = client_cert(self.settings)
        if cert is not None:
            options["client_cert"] = cert
        token = reveal(self.settings.api_token)
        auth: dict[str, Any] = (
            {"token_auth": token}  # a Data Center personal access token: Bearer
            if self.settings.auth == "bearer"
            else {"basic_auth": (self.settings.email, token)}
        )
        client = JIRA(
            server=self.base_url,
            **auth,
            proxies=(
                {"http": self.settings.proxy, "https": self.settings.proxy}
                if self.settings.proxy
                else None
            ),
            options=options,
            max_retries=0,  # one retry layer: ours
            timeout=self.settings.timeout_seconds,
            get_server_info=False,  # no call at construction; we use REST v2 paths directly
        )
        size_pool(client._session, self.settings.max_concurrency)
        read_environment_once(client._session, self.base_url)
        client._session.hooks["response"].append(
            lambda r, *a, **k: CALLS.add(SYSTEM, r.request.method or "", r.status_code)
        )
        return client

    def _once(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ConnectorError:
            raise
        except JIRAError as exc:
            if exc.response is not None:
                raise translate(SYSTEM, exc, what) from None
            raise Fatal(
                what + " failed",
                system=SYSTEM,
                status=exc.status_code,
                remote_message=str(exc.text or ""),
            ) from None
        except Exception as exc:
            raise translate(SYSTEM, exc, what) from exc

    def _call(self, what: str, fn: Callable[[], T], *, issue: str = "") -> T:
        key_bucket: TokenBucket | None = self._issue_writes.get(issue) if issue else None
        return call_with_retries(
            lambda: self._once(what, fn),
            system=SYSTEM,
            what=what,
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
            key_bucket=key_bucket,
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}/rest/api/2/{path.lstrip('/')}"

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self.jira._session.get(self._url(path), params=dict(params or {}))
        return response.json() if response.content else {}

    def _send(
        self, method: str, path: str, body: Any, params: Mapping[str, Any] | None = None
    ) -> Any:
        response = self.jira._session.request(
            method, self._url(path), data=json.dumps(body), params=dict(params or {})
        )
        return response.json() if response.content else {}

    def _record(self, raw: Mapping[str, Any]) -> RemoteRecord:
        try:
            fields = dict(raw["fields"])
            ref = RemoteRef(SYSTEM, self.instance, "issue", str(raw["id"]), str(raw["key"]))
            updated = parse_time(str(fields["updated"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise Fatal(f"issue without id/key/fields.updated: {exc}", system=SYSTEM) from exc
        histories = (raw.get("changelog") or {}).get("histories")
        if isinstance(histories, list):
            # expand=changelog: who changed which field when, for last-writer-wins per field.
            fields[FIELD_CHANGES_KEY] = [
                c.to_json() for h in histories if isinstance(h, Mapping) for c in _changes(h)
            ]
        return RemoteRecord(
            ref=ref,
            version=version_of(fields),
            updated_at=updated,
            fields=fields,
            url=f"{self.base_url}/browse/{ref.key}",
        )

    # -- reading ------------------------------------------------------------------------------

    def time_zone(self) -> ZoneInfo:
        """The API user's time zone: the zone JQL date literals are read in."""
        if self._time_zone is None:
            me = self._call("myself", lambda: self._get("myself"))
            try:
                self._time_zone = ZoneInfo(str(me.get("timeZone") or "UTC"))
            except (ZoneInfoNotFoundError, ValueError):
                self._time_zone = ZoneInfo("UTC")
        return self._time_zone

    def _scope(self) -> str:
        scope = f"project = {jql_quote(self.settings.project)}"
        return f"{scope} AND ({self.settings.jql})" if self.settings.jql else scope

    def _search(self, jql: str, page_size: int) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "jql": jql, "maxResults": page_size, "fields": "*all", "expand": "changelog",
            }  # fmt: skip
            if token:
                params["nextPageToken"] = token
            page = self._call("search", lambda p=params: self._get("search/jql", p))  # type: ignore[misc]
            yield from page.get("issues", [])
            token = page.get("nextPageToken")
            if page.get("isLast", not token) or not token:
                return

    def changes_since(
        self, object_type: str, watermark: dt.datetime | None, *, page_size: int = 100
    ) -> Iterator[RemoteRecord]:
        if object_type != "issue":
            raise ValueError(f"jira serves issues, not {object_type!r}")
        terms = [self._scope()]
        if watermark is not None:
            since = (watermark - self.poll_overlap).astimezone(self.time_zone())
            terms.append(f'updated >= "{since:%Y-%m-%d %H:%M}"')
        jql = " AND ".join(terms) + " ORDER BY updated ASC, key ASC"
        seen: set[tuple[str, tuple[int, ...]]] = set()
        for _ in range(5):
            pass_started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            changed_under_us = False
            for raw in self._search(jql, page_size):
                record = self._record(raw)
                pair = (record.ref.id, record.version)
                if pair in seen:
                    continue
                seen.add(pair)
                changed_under_us |= record.updated_at >= pass_started
                yield record
            if not changed_under_us:
                return

    def get(self, object_type: str, id_or_key: str) -> RemoteRecord:
        return self._record(
            self._call(
                f"get {id_or_key}",
                lambda: self._get(f"issue/{id_or_key}", {"expand": "changelog"}),
            )
        )

    def find_by_correlation(self, object_type: str, correlation_key: str) -> RemoteRecord | None:
        jql = f"{self._scope()} AND labels = {jql_quote(correlation_key)} ORDER BY created ASC"
        for raw in self._search(jql, 1):
            return self._record(raw)
        return None

    # -- writing ------------------------------------------------------------------------------

    def create(
        self,
        object_type: str,
        fields: Mapping[str, Any],
        *,
        correlation_key: str,
        look_first: bool = True,
    ) -> RemoteRecord:
        """Create the issue (labelled with the correlation key, and the key in our issue
        property, set by the create itself: no second write) and read it back with its
        changelog; a retry, or a first attempt with ``look_first``, looks for the label first.
        """
        if not correlation_key or " " in correlation_key:
            raise ValueError(f"not a usable correlation key (a Jira label): {correlation_key!r}")
        body = dict(fields)
        body.setdefault("project", {"key": self.settings.project})
        body["labels"] = sorted({*body.get("labels", []), correlation_key})
        jql = f"{self._scope()} AND labels = {jql_quote(correlation_key)} ORDER BY created ASC"
        properties = [{"key": PROPERTY, "value": {"correlation_key": correlation_key}}]
        tries = 0

        def find_or_create() -> str:
            nonlocal tries
            tries += 1
            if look_first or tries > 1:
                page = self._once(
                    "find", lambda: self._get("search/jql", {"jql": jql, "maxResults": 1})
                )
                if page.get("issues"):
                    return str(page["issues"][0]["id"])
                if self._bucket is not None:
                    self._bucket.acquire()
            created = self._once(
                "create issue",
                lambda: self._send("POST", "issue", {"fields": body, "properties": properties}),
            )
            return str(created["id"])

        issue_id = call_with_retries(
            find_or_create,
            system=SYSTEM,
            what="create issue",
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
        )
        return self.get("issue", issue_id)

    def update(self, ref: RemoteRef, fields: Mapping[str, Any]) -> RemoteRecord:
        if "status" in fields:
            raise Fatal("Jira status changes go by transition(), not by edit", system=SYSTEM)
        if not fields:
            return self.get("issue", ref.id)
        # returnIssue: the edited issue comes back in the answer (200), no second call for it,
        # with its changelog: an edit someone made just before ours shows there.
        raw = self._call(
            f"edit {ref.key}",
            lambda: self._send(
                "PUT", f"issue/{ref.id}", {"fields": dict(fields)},
                {"returnIssue": "true", "expand": "changelog"},
            ),
            issue=ref.id,
        )  # fmt: skip
        record = self._record(raw) if raw.get("fields") else self.get("issue", ref.id)
        # Our edit is the newest history that changed a field we sent (none if nothing did).
        changes = record.fields.get(FIELD_CHANGES_KEY) or []
        newest = str(changes[-1]["update"]) if changes else ""
        mine = (
            [newest] if any(c["update"] == newest and c["field"] in fields for c in changes) else []
        )
        return _with_ours(record, mine)

    def _transitions(self, issue_id: str) -> list[dict[str, Any]]:
        data = self._call(
            "transitions",
            lambda: self._get(f"issue/{issue_id}/transitions", {"expand": "transitions.fields"}),
        )
        return list(data.get("transitions", []))

    def _fill(self, transition: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_id, meta in (transition.get("fields") or {}).items():
            if field_id in given:
                out[field_id] = given[field_id]
            elif meta.get("required"):
                allowed = meta.get("allowedValues") or []
                if not allowed:
                    raise Fatal(
                        f"transition {transition.get('name')!r} needs field {field_id!r}",
                        system=SYSTEM,
                    )
                first = allowed[0]
                out[field_id] = {"name": first["name"]} if "name" in first else {"id": first["id"]}
        return out

    def transition(
        self,
        ref: RemoteRef,
        target: str,
        fields: Mapping[str, Any] | None = None,
        *,
        known: Mapping[str, Any] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> RemoteRecord:
        """Move the issue to status ``target`` (by name), through the workflow if need be.

        Each step is idempotent: a step whose answer was lost is not posted again if the issue
        is already where it led (Jira would refuse it from there, "not valid for this issue").
        """
        given = dict(fields or {})
        want = target.lower()
        visited: list[str] = []
        steps: list[str] = []  # the statuses our posts moved it to
        current = self.get("issue", ref.id)
        for _ in range(MAX_WALK):
            status = str(current.fields["status"]["name"])
            if status.lower() == want:
                return _with_ours(current, _steps_taken(current, steps))
            visited.append(status.lower())
            kind = str((current.fields.get("issuetype") or {}).get("name", ""))
            cached = (kind, status.lower()) in self._options
            options = self._options_for(ref.id, kind, status)
            step = self._next_step(status.lower(), want, options, visited)
            if step is None:
                break
            try:
                if on_step is not None:
                    on_step(str(step["to"]["name"]))
                self._post_transition(ref, step, given)
            except Fatal:
                if not cached:
                    raise
                # The workflow changed since we learned it: learn it again, once.
                self._options.pop((kind, status.lower()), None)
                options = self._options_for(ref.id, kind, status)
                step = self._next_step(status.lower(), want, options, visited)
                if step is None:
                    break
                if on_step is not None:
                    on_step(str(step["to"]["name"]))
                self._post_transition(ref, step, given)
            steps.append(str(step["to"]["name"]))
            current = self.get("issue", ref.id)  # where it really is now, and what we return
        path = " -> ".join(visited)
        raise Fatal(f"{ref}: no workflow path to status {target!r} (walked {path})", system=SYSTEM)

    def created_status(self, record: RemoteRecord) -> str:
        """The status ``record`` was created in: the ``from`` of its first status change in the
        changelog, or its status now if it never moved."""
        changelog = self._offset_pages(
            f"changelog {record.ref.key}", f"issue/{record.ref.id}/changelog", "values"
        )
        for history in changelog:
            for item in history.get("items") or []:
                if item.get("field") == "status":
                    return str(item.get("fromString") or "")
        return str(record.fields["status"]["name"])

    def _options_for(self, issue_id: str, kind: str, status: str) -> list[dict[str, Any]]:
        """The transitions out of ``status`` for issues of type ``kind``, as Jira listed them
        (with their fields) the first time; a workflow rarely changes, so one read serves all
        issues of the type (and a refused transition makes us read it again)."""
        key = (kind, status.lower())
        if key not in self._options:
            options = self._transitions(issue_id)
            self._options[key] = options
            self._workflow[status.lower()] = {
                str(t["id"]): (str(t["name"]), str(t["to"]["name"])) for t in options
            }
        return self._options[key]

    def _post_transition(
        self, ref: RemoteRef, step: Mapping[str, Any], given: Mapping[str, Any]
    ) -> None:
        body = {"transition": {"id": str(step["id"])}, "fields": self._fill(step, given)}
        what = f"transition {ref.key} to {step['to']['name']}"
        tries = 0

        def post() -> None:
            nonlocal tries
            tries += 1
            if tries > 1:  # an earlier try may have been applied, its answer lost: look first
                now = self._once(f"status of {ref.key}", lambda: self._get(
                    f"issue/{ref.id}", {"fields": "status"}
                ))  # fmt: skip
                status = ((now.get("fields") or {}).get("status") or {}).get("name")
                if str(status).lower() == str(step["to"]["name"]).lower():
                    return
            self._once(what, lambda: self._send("POST", f"issue/{ref.id}/transitions", body))

        call_with_retries(
            post,
            system=SYSTEM,
            what=what,
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
            key_bucket=self._issue_writes.get(ref.id),
        )

    def _categories(self) -> dict[str, str]:
        """Status name (lower) -> status category key (new, indeterminate, done)."""
        if not self._status_categories:
            statuses = self._call("statuses", lambda: self._get("status"))
            self._status_categories = {
                str(st["name"]).lower(): str((st.get("statusCategory") or {}).get("key", ""))
                for st in statuses
            }
        return self._status_categories

    def _next_step(
        self, status: str, want: str, options: list[dict[str, Any]], visited: list[str]
    ) -> dict[str, Any] | None:
        by_target = {str(t["to"]["name"]).lower(): t for t in options}
        if want in by_target:
            return by_target[want]
        # A path through statuses we have seen before (breadth-first over the learned graph).
        route = self._route(status, want)
        if route and route[0] in by_target:
            return by_target[route[0]]
        # Explore: a status not visited yet, nearest to the target's category first.
        order = {"new": 0, "indeterminate": 1, "done": 2}
        categories = self._categories()
        goal = order.get(categories.get(want, ""), 1)

        def distance(t: dict[str, Any]) -> int:
            name = str(t["to"]["name"]).lower()
            category = (t["to"].get("statusCategory") or {}).get("key") or categories.get(name)
            return abs(order.get(str(category), 1) - goal)

        fresh = [t for t in options if str(t["to"]["name"]).lower() not in visited]
        return min(fresh, key=distance) if fresh else None

    def _route(self, start: str, goal: str) -> list[str]:
        queue: deque[tuple[str, list[str]]] = deque([(start, [])])
        seen = {start}
        while queue:
            node, path = queue.popleft()
            for _, to in self._workflow.get(node, {}).values():
                nxt = to.lower()
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, [*path, nxt]))
        return []

    # -- comments -----------------------------------------------------------------------------

    def comments(self, ref: RemoteRef) -> list[RemoteComment]:
        pages = self._offset_pages(
            f"comments {ref.key}", f"issue/{ref.id}/comment", "comments", expand="properties"
        )
        return [self._comment(c) for c in pages]

    def _offset_pages(
        self, what: str, path: str, items: str, *, expand: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Every item of an offset-paged list (``startAt``/``maxResults``; ends on an empty
        page, ``isLast`` or ``total``), one page read at a time."""
        start = 0
        extra = {"expand": expand} if expand else {}
        while True:
            page = self._call(
                what,
                lambda s=start: self._get(path, {"startAt": s, "maxResults": 100, **extra}),  # type: ignore[misc]
            )
            batch = page.get(items) or []
            yield from batch
            start += len(batch)
            if not batch or page.get("isLast") or start >= int(page.get("total", start + 1)):
                return

    def known_comments(
        self, fields: Mapping[str, Any], through: tuple[int, ...] | None
    ) -> list[RemoteComment] | None:
        """An issue carries its comments (``fields.comment``, also in webhook deliveries) when
        they all fit in it; comments delivered on their own ride along (see the store)."""
        events = fields.get(COMMENT_EVENT_KEY)
        delivered = [e for e in events or [] if isinstance(e, Mapping)]
        page = fields.get("comment")
        if not isinstance(page, Mapping) or not isinstance(page.get("comments"), list):
            return None
        listed: list[Mapping[str, Any]] = page["comments"]
        if int(page.get("startAt") or 0) != 0 or int(page.get("total", 0)) > len(listed):
            return None  # only a page of them: read them all
        try:
            unique = {str(c["id"]): c for c in [*listed, *delivered]}
            return [self._comment(c) for c in unique.values()]
        except (KeyError, TypeError, ValueError):
            return None

    def _comment(self, raw: Mapping[str, Any]) -> RemoteComment:
        origin = ""
        for prop in raw.get("properties") or []:
            if isinstance(prop, Mapping) and prop.get("key") == PROPERTY:
                origin = str((prop.get("value") or {}).get("origin") or "")
        body = unattributed(str(raw.get("body", "")), origin)
        author = raw.get("author") or {}
        # Restricted to a role or group, or a Jira Service Management internal comment
        # (jsdPublic false: the sd.public.comment property): not for customers.
        internal = bool(raw.get("visibility")) or raw.get("jsdPublic") is False
        return RemoteComment(
            id=str(raw["id"]),
            body=body,
            visibility=Visibility.INTERNAL if internal else Visibility.PUBLIC,
            author=str(author.get("emailAddress") or author.get("accountId") or ""),
            created_at=parse_time(str(raw["created"])),
            origin=origin,
        )

    def add_comment(
        self, ref: RemoteRef, body: str, *, visibility: Visibility, origin: str = ""
    ) -> RemoteComment:
        payload: dict[str, Any] = {"body": attributed(body, origin)}
        if origin:  # ours: a comment property says so (people cannot type one)
            payload["properties"] = [{"key": PROPERTY, "value": {"origin": origin}}]
        if visibility is Visibility.INTERNAL:
            payload["visibility"] = self.internal_visibility
        what = f"comment on {ref.key}"
        tries = 0

        def post() -> RemoteComment:
            # A POST is not idempotent: if an earlier try may have been applied (its answer was
            # lost), look for the comment before posting it again.
            nonlocal tries
            tries += 1
            if tries > 1:
                for c in self.comments(ref):
                    if (c.body, c.origin, c.visibility) == (body, origin, visibility):
                        return c
            raw = self._once(what, lambda: self._send("POST", f"issue/{ref.id}/comment", payload))
            # The answer leaves the properties out: it is ours, with the origin we gave it.
            return dataclasses.replace(self._comment(raw), body=body, origin=origin)

        return call_with_retries(
            post,
            system=SYSTEM,
            what=what,
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
            key_bucket=self._issue_writes.get(ref.id),
        )

    # -- field history ----------------------------------------------------------------------

    def field_changes(self, ref: RemoteRef, since: dt.datetime | None) -> list[FieldChange]:
        """The issue's changelog at or after ``since``, oldest first."""
        histories = self._offset_pages(
            f"changelog {ref.key}", f"issue/{ref.id}/changelog", "values"
        )
        changes = [c for h in histories for c in _changes(h)]
        return sorted((c for c in changes if since is None or c.at >= since), key=lambda c: c.at)

    def stamps(self, fields: Mapping[str, Any]) -> list[str]:
        return [str(x) for x in fields.get("labels") or []]

    def partners(self, ref: RemoteRef, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The ServiceNow incident the issue's remote links point at (the ServiceNow
        integration's link, or one a person added), or the configured custom field names."""
        out: list[tuple[str, str]] = []
        named = self.settings.servicenow_field
        if named and fields.get(named):
            value = fields[named]
            out.append(
                ("servicenow", str(value.get("value") if isinstance(value, dict) else value))
            )
        for link in self.remote_links(ref):
            obj = link.get("object") or {}
            app = link.get("application") or {}
            text = f"{obj.get('url', '')} {obj.get('title', '')}"
            if "servicenow" not in f"{app.get('type', '')} {app.get('name', '')}".lower() and (
                "sys_id=" not in text
            ):
                continue
            found = SN_SYS_ID.search(text) or SN_NUMBER.search(text)
            if found:
                out.append(("servicenow", found[1]))
        return out

    def text_limit(self, path: str) -> int | None:
        return TEXT_LIMITS.get(path, TEXT_LIMIT)

    def inert(self, text: str) -> str:
        """Wiki markup shown as typed: a backslash before each ``[``, ``{`` and ``!`` that
        could start a link, a mention, an image or a macro."""
        return _WIKI_LIVE.sub(r"\\\1", text)

    # -- links (the postmortem tracker) ------------------------------------------------------

    def linked_issues(self, ref: RemoteRef, link_type: str) -> list[str]:
        """Keys of issues linked to ``ref`` with ``link_type`` (either direction)."""
        fields = self.get("issue", ref.id).fields
        keys = []
        for link in fields.get("issuelinks") or []:
            if str((link.get("type") or {}).get("name", "")).lower() != link_type.lower():
                continue
            other = link.get("inwardIssue") or link.get("outwardIssue") or {}
            if other.get("key"):
                keys.append(str(other["key"]))
        return keys

    def link_issues(self, link_type: str, inward_key: str, outward_key: str) -> None:
        body = {
            "type": {"name": link_type},
            "inwardIssue": {"key": inward_key},
            "outwardIssue": {"key": outward_key},
        }
        self._call("link issues", lambda: self._send("POST", "issueLink", body), issue=inward_key)

    def add_remote_link(self, ref: RemoteRef, *, global_id: str, url: str, title: str) -> None:
        """Create or update (by ``global_id``) a link from the issue to a page elsewhere."""
        body = {
            "globalId": global_id,
            "application": {"type": "com.servicenow", "name": "ServiceNow"},
            "object": {"url": url, "title": title},
        }
        self._call(
            f"remote link on {ref.key}",
            lambda: self._send("POST", f"issue/{ref.id}/remotelink", body),
            issue=ref.id,
        )

    def remote_links(self, ref: RemoteRef) -> list[dict[str, Any]]:
        return list(self._call("remote links", lambda: self._get(f"issue/{ref.id}/remotelink")))

    # -- people -------------------------------------------------------------------------------

    def _person(self, raw: Mapping[str, Any]) -> Person:
        person = Person(
            id=str(raw["accountId"]),
            email=str(raw.get("emailAddress") or "").lower(),
            name=str(raw.get("displayName") or ""),
        )
        self._people_by_id[person.id] = person
        if person.email:
            self._people_by_email[person.email] = person
        return person

    def person_by_email(self, email: str) -> Person:
        key = email.strip().lower()
        if key in self._people_by_email:
            return self._people_by_email[key]
        users = self._call("user search", lambda: self._get("user/search", {"query": key}))
        for raw in users:
            if str(raw.get("emailAddress", "")).lower() == key:
                return self._person(raw)
        raise NotFound(
            f"no Jira user has the email {email!r} (or its email is hidden from the API user)",
            system=SYSTEM,
        )

    def mention(self, person: Person) -> str:
        """A mention by account id (wiki markup; the v3 API reads it as an ADF mention)."""
        return f"[~accountid:{person.id}]"

    def person_by_id(self, person_id: str) -> Person:
        if person_id in self._people_by_id:
            return self._people_by_id[person_id]
        return self._person(self._call("user", lambda: self._get("user", {"accountId": person_id})))

    # -- preflight (itsm-sync check) ---------------------------------------------------------

    def signin(self) -> Probe:
        """Reachable and the credentials valid (GET myself)."""
        env = env_prefix(SYSTEM, self.instance)
        where = f"jira/{self.instance}"
        who = self.settings.email
        try:
            self._once("sign in", lambda: self._get("myself"))
        except AuthFailed:
            return Probe(
                f"{where}: sign in as {who}",
                False,
                f"credentials refused (HTTP 401): fix {env}EMAIL / {env}API_TOKEN",
            )
        except ConnectorError as exc:
            return Probe(f"{where}: reach {self.base_url}", False, str(exc))
        return Probe(f"{where}: signed in as {who}", True)

    def preflight(self, fields: Mapping[str, Sequence[str]]) -> list[Probe]:
        """Sign in (myself), the project and the issue types the settings name, the mapped
        fields in the field list, webhooks when the account may list them; nothing written."""
        env = env_prefix(SYSTEM, self.instance)
        where = f"jira/{self.instance}"
        signed_in = self.signin()
        probes = [signed_in]
        if not signed_in.ok:
            return probes
        key = self.settings.project
        try:
            project = self._once("read project", lambda: self._get(f"project/{key}"))
        except ConnectorError as exc:
            probes.append(
                Probe(
                    f"{where}: project {key}",
                    False,
                    f"{exc}: create it, give the account Browse Projects, or fix {env}PROJECT",
                )
            )
            return probes
        probes.append(Probe(f"{where}: project {key}", True))
        types = {str(t.get("name")) for t in project.get("issueTypes", [])}
        for name in fields.get("issue_types", ()):
            probes.append(
                Probe(
                    f"{where}: issue type {name!r} in {key}",
                    name in types,
                    ""
                    if name in types
                    else f"add it to the project's issue type scheme (has: "
                    f"{', '.join(sorted(types))}) or fix the setting",
                )
            )
        wanted = sorted(set(fields.get("issue", ())))
        if wanted:
            try:
                known = self._once("read fields", lambda: self._get("field"))
            except ConnectorError as exc:
                probes.append(Probe(f"{where}: mapped fields exist", False, str(exc)))
            else:
                ids = {str(f.get("id")) for f in known} | {str(f.get("key")) for f in known}
                missing = [f for f in wanted if f not in ids]
                probes.append(
                    Probe(
                        f"{where}: mapped fields exist ({len(wanted)})",
                        not missing,
                        f"no field {', '.join(missing)}: create the custom field and put it on the "
                        f"project's screens, or fix the mapping"
                        if missing
                        else "",
                    )
                )
        try:
            hooks = self._once(
                "list webhooks",
                lambda: self.jira._session.get(f"{self.base_url}/rest/webhooks/1.0/webhook").json(),
            )
        except ConnectorError as exc:
            probes.append(
                Probe(
                    f"{where}: webhooks",
                    True,
                    f"cannot list them ({exc}); check by hand (docs/operations.md)",
                )
            )
        else:
            ours = [h for h in hooks if "/webhooks/jira" in str(h.get("url", ""))]
            links = any("issuelink" in str(e) for h in ours for e in h.get("events", []))
            probes.append(
                Probe(
                    f"{where}: webhook registered with issue-link events",
                    bool(ours) and links,
                    ""
                    if ours and links
                    else "add the issue link created/deleted events to it (docs/operations.md)"
                    if ours
                    else "register one to <service>/webhooks/jira with issue, comment and "
                    "issue-link events (docs/operations.md)",
                )
            )
        return probes

    # -- webhooks -----------------------------------------------------------------------------

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> list[Observation]:
        """Verify ``X-Hub-Signature`` (HMAC-SHA256 of the raw body) and read the issue in it."""
        lower = {k.lower(): v for k, v in headers.items()}
        given = lower.get("x-hub-signature", "").encode()
        signatures = [
            b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
            for secret in webhook_secrets(self.settings)  # none configured: nothing matches
        ]
        if not given or not any(hmac.compare_digest(given, s) for s in signatures):
            raise AuthFailed("webhook signature missing or wrong", system=SYSTEM, status=401)
        try:
            payload = json.loads(body)
            issue = payload["issue"]
            ref = RemoteRef(SYSTEM, self.instance, "issue", str(issue["id"]), str(issue["key"]))
            fields = dict(issue.get("fields") or {})
            comment = payload.get("comment")
            if payload.get("webhookEvent") == "comment_created":
                # A new comment: a trimmed issue (no `updated`) and the comment itself. (Edited
                # and deleted comments only trigger a fresh read of the issue.)
                if not isinstance(comment, dict) or "id" not in comment or "created" not in comment:
                    raise TypeError("a comment delivery without the comment's id and created")
                fields = {**fields, COMMENT_EVENT_KEY: [comment]}
            changelog = payload.get("changelog")
            if isinstance(changelog, Mapping) and "timestamp" in payload:
                # The fields this update changed, when and by whom.
                history = {
                    "id": changelog.get("id", ""),
                    "author": payload.get("user") or {},
                    "created": int(payload["timestamp"]),
                    "items": changelog.get("items") or [],
                }
                fields[FIELD_CHANGES_KEY] = [c.to_json() for c in _changes(history)]
        except (ValueError, KeyError, TypeError) as exc:
            raise Fatal(f"not a Jira issue delivery: {exc}", system=SYSTEM) from exc
        version = version_of(fields) if "updated" in fields else (int(payload.get("timestamp", 0)),)
        delivery = lower.get("x-atlassian-webhook-identifier", "")
        return [
            Observation(
                ref=ref,
                version=version,
                fields=fields,
                source="webhook",
                delivery_id=delivery or hashlib.sha256(body).hexdigest(),
                complete="updated" in fields,  # comment events carry a trimmed issue
            )
        ]


def _change_value(item: Mapping[str, Any], side: str) -> tuple[Any, bool]:
    """(value shaped as the issue holds it, known) of a changelog item's ``from`` or ``to``."""
    field = str(item.get("fieldId") or item.get("field") or "")
    raw_id, text = item.get(side), item.get(f"{side}String")
    if field in NAMED:
        return ({"name": text} if text else None), True
    if field in PEOPLE_FIELDS:
        return ({"accountId": raw_id} if raw_id else None), True
    if field == "labels":
        return (str(text).split() if text else []), True
    if field in ("summary", "description", "environment"):
        return text, True
    if field == "duedate":
        return raw_id, True
    if field.startswith("customfield_"):
        if raw_id and text:  # an option: {"id", "value"}
            return {"id": str(raw_id), "value": text}, True
        return text, raw_id is None
    return text, False  # components, versions...: one element at a time


def _changes(history: Mapping[str, Any]) -> list[FieldChange]:
    """A changelog history (one update) as field changes."""
    created = history.get("created")
    try:
        if isinstance(created, int | float):
            at = dt.datetime.fromtimestamp(created / 1000, dt.UTC)
        else:
            at = parse_time(str(created))
    except (TypeError, ValueError):
        return []
    author = history.get("author") or {}
    who = str(author.get("accountId") or author.get("emailAddress") or "")
    out = []
    for index, item in enumerate(history.get("items") or []):
        if not isinstance(item, Mapping):
            continue
        value, known = _change_value(item, "to")
        old, _ = _change_value(item, "from")
        field = str(item.get("fieldId") or item.get("field") or "")
        out.append(
            FieldChange(
                id=f"{history.get('id', '')}:{index}", field=field, value=value, old=old, at=at,
                author=who, known=known, update=str(history.get("id", "")),
            )
        )  # fmt: skip
    return out


def _with_ours(record: RemoteRecord, updates: list[str]) -> RemoteRecord:
    return dataclasses.replace(record, fields={**record.fields, OUR_UPDATES_KEY: updates})


def _steps_taken(record: RemoteRecord, steps: list[str]) -> list[str]:
    """The changelog histories our transition posts made: the newest ones that moved the
    status to each step's target, in order."""
    histories: dict[str, str] = {}  # history id -> status it moved to
    for change in record.fields.get(FIELD_CHANGES_KEY) or []:
        if change.get("field") == "status":
            histories[str(change.get("update"))] = str((change.get("value") or {}).get("name"))
    mine: list[str] = []
    remaining = list(steps)
    for history, status in reversed(list(histories.items())):
        if remaining and status == remaining[-1]:
            mine.append(history)
            remaining.pop()
    return mine
