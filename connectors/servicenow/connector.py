"""ServiceNow connector on pysnow: incidents and change requests through the Table API.

- Reads ask for raw values (``sysparm_display_value=false``) without reference links, so every
  field is the string ServiceNow stores (a reference is the referenced sys_id).
- Writes are PATCHes of only the given fields (pysnow's own ``update`` re-reads and PUTs).
- Comments are journal entries: ``comments`` is customer-visible, ``work_notes`` internal;
  both are read back from ``sys_journal_field``. A business-rule delivery may carry the
  entries its update wrote (``"journal": [...]``, see docs/operations.md); then nothing needs
  reading, as long as no update in between went unseen (``sys_mod_count`` counts every one).
- Every call goes through :func:`connectors.http.call_with_retries` (the one retry layer) and
  the (system, credential) token bucket; pysnow itself never retries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pysnow
import pysnow.exceptions

from config.settings import ServiceNowSettings, env_prefix, reveal, webhook_secrets
from connectors.base import (
    FIELD_CHANGES_KEY,
    JOURNAL_KEY,
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
    RatePolicy,
    RetryPolicy,
    bucket_for,
    call_with_retries,
    credential_fingerprint,
    limit_concurrency,
)
from connectors.requests_errors import TimeoutSession, translate
from connectors.servicenow.oauth import ServiceNowOAuth
from connectors.tls import apply_to_session, read_environment_once

SYSTEM = "servicenow"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SYS_ID = re.compile(r"^[0-9a-f]{32}$")
ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]+-[1-9][0-9]*$")
OBJECT_TYPES = ("incident", "change_request")  # what is polled and synced
TABLES = (*OBJECT_TYPES, "problem")  # what can be read and written (the postmortem's problem)
RESOLVED, CLOSED, ON_HOLD = "6", "7", "3"
# What ServiceNow requires to enter a state (base data policy and the hold rule).
STATE_NEEDS: dict[str, tuple[str, ...]] = {
    RESOLVED: ("close_code", "close_notes"),
    CLOSED: ("close_code", "close_notes"),
    ON_HOLD: ("hold_reason",),
}
# What a resolve or close falls back to when the incident has no close code or notes of its own.
STATE_DEFAULTS = {
    "close_code": "Solution provided",
    "close_notes": "Resolved in another system; synced by itsm-sync.",
}
CHANGE_CLOSED = "3"
CHANGE_STATE_NEEDS: dict[str, tuple[str, ...]] = {CHANGE_CLOSED: ("close_code", "close_notes")}
T = TypeVar("T")
# The dictionary lengths of the text fields we write (an instance stores longer text, but the
# forms and lists show this much); journal entries are capped where the journal is.
TEXT_LIMITS = {"short_description": 160, "description": 4000, "close_notes": 4000}
JOURNAL_LIMIT = 32_000
# Our own journal entries start with a marker people neither see nor type: [code] renders HTML
# in a journal entry, and an HTML comment shows nothing.
MARKER = "[code]<!--itsm-sync:origin={origin}-->[/code]"
_MARKER = re.compile(r"^\[code\]<!--itsm-sync:origin=(?P<origin>[^>]*?)-->\[/code\]")
# Markup that a journal entry would render live: [code]...[/code] is raw HTML.
_CODE_TAG = re.compile(r"\[(/?code)\]", re.IGNORECASE)


# TIME_FORMAT's usual form, which datetime.fromisoformat reads ~30x faster than strptime
# (strptime was ~3 % of the HTTP process's CPU under load: every webhook has times to read).
_USUAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.ASCII)


def parse_time(value: str) -> dt.datetime:
    """A ServiceNow date-time (UTC, ``YYYY-MM-DD HH:MM:SS``) as an aware datetime."""
    if _USUAL_TIME.fullmatch(value):
        try:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        except ValueError:
            pass  # out of range (a 13th month): strptime's own error below
    # any other form strptime takes (single-digit fields), or its error
    return dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    """``value`` in UTC at ServiceNow's one-second precision (rounded down)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: ServiceNow times are UTC, pass an aware datetime")
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


class ServiceNowConnector:
    """One ServiceNow instance."""

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
            Capability.CHANGE_REQUESTS,
            Capability.FIELD_HISTORY,
            Capability.FIELDS_ON_TRANSITION,
            Capability.MENTIONS,
        }
    )

    def __init__(
        self,
        settings: ServiceNowSettings,
        *,
        instance: str = "default",
        retry: RetryPolicy | None = None,
        poll_overlap: dt.timedelta = dt.timedelta(seconds=2),
    ) -> None:
        self.instance = instance
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.poll_overlap = poll_overlap
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"servicenow.url: not an http(s) URL: {settings.url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        session = TimeoutSession(SYSTEM, settings.timeout_seconds, settings.max_concurrency)
        self.oauth: ServiceNowOAuth | None = None
        if settings.auth == "oauth":
            self.oauth = ServiceNowOAuth(settings, self.base_url, instance=instance)
            session.auth = self.oauth
        else:
            session.auth = (settings.username, reveal(settings.password))
        apply_to_session(session, settings)
        read_environment_once(session, self.base_url)
        self._client = pysnow.Client(
            host=parts.netloc, use_ssl=parts.scheme == "https", session=session
        )
        self._bucket = bucket_for(
            SYSTEM,
            credential_fingerprint(f"{self.base_url}|{settings.username}"),
            RatePolicy(requests_per_second=settings.requests_per_second, burst=1.0),
        )
        self._slots = limit_concurrency(SYSTEM, settings.max_concurrency, self.base_url)
        self._people_lock = threading.Lock()
        self._people_by_email: dict[str, Person] = {}
        self._people_by_id: dict[str, Person] = {}
        self._queries = {
            "incident": settings.incident_query,
            "change_request": settings.change_request_query,
        }

    def __repr__(self) -> str:  # never the password
        return f"ServiceNowConnector({self.instance!r}, {self.base_url!r})"

    def object_types(self) -> Sequence[str]:
        return OBJECT_TYPES

    # -- plumbing -----------------------------------------------------------------------------

    def _resource(self, table: str) -> Any:
        return self._client.resource(api_path=f"/table/{table}")

    def _once(self, what: str, fn: Callable[[], T]) -> T:
        """Run one remote call, turning whatever pysnow/requests raised into the taxonomy."""
        try:
            return fn()
        except pysnow.exceptions.ResponseError as exc:
            raise Fatal(what + " failed", system=SYSTEM, remote_message=str(exc)) from exc
        except ConnectorError:
            raise
        except Exception as exc:
            raise translate(SYSTEM, exc, what) from exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """One remote call with the retry layer and the rate budget."""
        return call_with_retries(
            lambda: self._once(what, fn),
            system=SYSTEM,
            what=what,
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
        )

    def _fetch(
        self, table: str, query: str, *, limit: int, offset: int = 0, fields: Sequence[str] = ()
    ) -> Callable[[], list[dict[str, Any]]]:
        def fetch() -> list[dict[str, Any]]:
            response = self._resource(table).get(
                query=query,
                limit=limit,
                offset=offset,
                fields=list(fields),
                display_value=False,
                exclude_reference_link=True,
                suppress_pagination_header=True,
            )
            return list(response.all())

        return fetch

    def _list(
        self, table: str, query: str, *, limit: int, offset: int = 0, fields: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        return self._call(
            f"list {table}", self._fetch(table, query, limit=limit, offset=offset, fields=fields)
        )

    def _patch(self, table: str, sys_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        def patch() -> dict[str, Any]:
            response = self._resource(table).request(
                "PATCH",
                path_append=f"/{sys_id}",
                json=dict(payload),
            )
            return dict(response.one())

        return self._call(f"update {table}/{sys_id}", patch)

    def _record(self, table: str, row: Mapping[str, Any]) -> RemoteRecord:
        row = plain(row)
        try:
            sys_id = str(row["sys_id"])
            version = (int(row.get("sys_mod_count") or 0),)
            updated = parse_time(str(row["sys_updated_on"]))
        except (KeyError, ValueError) as exc:
            raise Fatal(
                f"{table} record without sys_id/sys_mod_count/sys_updated_on: {exc}",
                system=SYSTEM,
            ) from exc
        ref = RemoteRef(SYSTEM, self.instance, table, sys_id, str(row.get("number", "")))
        url = f"{self.base_url}/nav_to.do?uri={table}.do?sys_id={sys_id}"
        return RemoteRecord(ref=ref, version=version, updated_at=updated, fields=row, url=url)

    def _table(self, object_type: str) -> str:
        if object_type not in TABLES:
            raise ValueError(f"servicenow serves {', '.join(TABLES)}, not {object_type!r}")
        return object_type

    # -- reading ------------------------------------------------------------------------------

    def changes_since(
        self, object_type: str, watermark: dt.datetime | None, *, page_size: int = 100
    ) -> Iterator[RemoteRecord]:
        """Every record updated at or after ``watermark`` (minus the overlap), oldest first.

        Pages by time, not by offset alone: a record updated while we page moves to the end of
        the order and is read again there, so nothing is missed; (sys_id, sys_mod_count) pairs
        already yielded are not yielded twice.
        """
        table = self._table(object_type)
        base = self._queries[table]
        cursor = format_time(watermark - self.poll_overlap) if watermark else None
        offset = 0
        seen: set[tuple[str, str]] = set()
        while True:
            terms = [t for t in (base, f"sys_updated_on>={cursor}" if cursor else "") if t]
            query = "^".join([*terms, "ORDERBYsys_updated_on", "ORDERBYsys_id"])
            page = self._list(table, query, limit=page_size, offset=offset)
            for row in page:
                key = (str(row.get("sys_id")), str(row.get("sys_mod_count")))
                if key not in seen:
                    seen.add(key)
                    yield self._record(table, row)
            if len(page) < page_size:
                return
            last = str(page[-1]["sys_updated_on"])
            if last != cursor:
                cursor, offset = last, 0  # re-reads at most one page of ties; `seen` drops them
            else:
                offset += len(page)  # a whole page in one second: step through it

    def get(self, object_type: str, id_or_key: str) -> RemoteRecord:
        table = self._table(object_type)
        field = "sys_id" if SYS_ID.match(id_or_key) else "number"
        rows = self._list(table, f"{field}={id_or_key}", limit=1)
        if not rows:
            raise NotFound(f"{table} {id_or_key} not found", system=SYSTEM, status=404)
        return self._record(table, rows[0])

    def find_by_correlation(self, object_type: str, correlation_key: str) -> RemoteRecord | None:
        table = self._table(object_type)
        if not correlation_key or "^" in correlation_key:
            raise ValueError(f"not a usable correlation key: {correlation_key!r}")
        rows = self._list(table, f"correlation_id={correlation_key}^ORDERBYsys_created_on", limit=1)
        return self._record(table, rows[0]) if rows else None

    # -- writing ------------------------------------------------------------------------------

    def create(
        self,
        object_type: str,
        fields: Mapping[str, Any],
        *,
        correlation_key: str,
        look_first: bool = True,
    ) -> RemoteRecord:
        """Create, unless a record with ``correlation_key`` exists already (then return it).

        Every retry looks first, so a create whose response was lost (timeout after the
        remote stored it) is found instead of being repeated; so does the first attempt unless
        the caller knows there was none before (``look_first=False``).
        """
        tries = 0
        table = self._table(object_type)
        payload = {
            **fields,
            "correlation_id": correlation_key,
            "correlation_display": "itsm-sync",
        }

        def find_or_create() -> RemoteRecord:
            # One attempt = look, then create; the retry layer wraps the pair, never each half.
            nonlocal tries
            tries += 1
            if look_first or tries > 1:
                rows = self._once(
                    f"find {table}",
                    self._fetch(
                        table, f"correlation_id={correlation_key}^ORDERBYsys_created_on", limit=1
                    ),
                )
                if rows:
                    return self._record(table, rows[0])
                if self._bucket is not None:
                    self._bucket.acquire()
            row = self._once(
                f"create {table}", lambda: self._resource(table).create(payload=payload).one()
            )
            return self._record(table, row)

        if not correlation_key or "^" in correlation_key:
            raise ValueError(f"not a usable correlation key: {correlation_key!r}")
        return call_with_retries(
            find_or_create,
            system=SYSTEM,
            what=f"create {table}",
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
        )

    def update(self, ref: RemoteRef, fields: Mapping[str, Any]) -> RemoteRecord:
        if not fields:
            return self.get(ref.object_type, ref.id)
        record = self._record(ref.object_type, self._patch(ref.object_type, ref.id, fields))
        # The answer is the record right after our update: its counter names our update (the
        # record_checkpoint of its sys_audit rows).
        return dataclasses.replace(
            record, fields={**record.fields, OUR_UPDATES_KEY: [str(record.version[0])]}
        )

    def transition(
        self,
        ref: RemoteRef,
        target: str,
        fields: Mapping[str, Any] | None = None,
        *,
        known: Mapping[str, Any] | None = None,
        on_step: Callable[[str], None] | None = None,  # one step: nothing in between
    ) -> RemoteRecord:
        """Set ``state`` to ``target`` (a state value such as ``"6"``) with what it requires.

        Resolving or closing an incident needs ``close_code`` and ``close_notes``: taken from
        ``fields``, else from ``known`` (the incident's own), else the defaults (the incident's
        own are never replaced by a default). Hold needs ``hold_reason``, which has no default:
        refused here, naming it, before any call. Setting the state it has changes nothing.
        """
        fields = dict(fields or {})
        change = ref.object_type == "change_request"
        needs = (CHANGE_STATE_NEEDS if change else STATE_NEEDS).get(target, ())
        defaults = {} if change else STATE_DEFAULTS  # a change's close code is a decision
        for name in needs:
            if str(fields.get(name, "")).strip():
                continue
            value = (known or {}).get(name)
            if str(value or "").strip():
                fields[name] = value
            elif name in defaults:
                fields[name] = defaults[name]
        missing = [name for name in needs if not str(fields.get(name, "")).strip()]
        if missing:
            raise Fatal(
                f"{ref}: moving to state {target} needs {', '.join(missing)}", system=SYSTEM
            )
        return self.update(ref, {**fields, "state": target})

    # -- comments -----------------------------------------------------------------------------

    def comments(self, ref: RemoteRef) -> list[RemoteComment]:
        rows = self._list(
            "sys_journal_field",
            f"element_id={ref.id}^elementINcomments,work_notes^ORDERBYsys_created_on^ORDERBYsys_id",
            limit=10000,
        )
        return [self._comment(row) for row in rows]

    def _comment(self, row: Mapping[str, Any]) -> RemoteComment:
        body, origin = str(row.get("value", "")), ""
        marker = _MARKER.match(body)
        if marker is not None:
            origin = marker["origin"]
            body = unattributed(body[marker.end() :], origin)
        author = str(row.get("sys_created_by", ""))
        return RemoteComment(
            id=str(row["sys_id"]),
            body=body,
            visibility=Visibility.INTERNAL
            if row.get("element") == "work_notes"
            else Visibility.PUBLIC,
            author=author,
            created_at=parse_time(str(row["sys_created_on"])),
            origin=origin,
        )

    def add_comment(
        self, ref: RemoteRef, body: str, *, visibility: Visibility, origin: str = ""
    ) -> RemoteComment:
        element = "work_notes" if visibility is Visibility.INTERNAL else "comments"
        text = MARKER.format(origin=origin) + attributed(body, origin) if origin else body
        what = f"{element} on {ref.object_type}/{ref.id}"
        tries = 0

        def append() -> dict[str, Any]:
            # Appending to the journal is not idempotent: if an earlier try may have been
            # applied (its answer was lost), look for the entry before writing it again.
            nonlocal tries
            tries += 1
            if tries > 1 and any(
                (c.body, c.origin, c.visibility) == (body, origin, visibility)
                for c in self.comments(ref)
            ):
                return dict(self.get(ref.object_type, ref.id).fields)
            response = self._resource(ref.object_type).request(
                "PATCH", path_append=f"/{ref.id}", json={element: text}
            )
            return dict(response.one())

        row = plain(
            call_with_retries(
                lambda: self._once(what, append),
                system=SYSTEM,
                what=what,
                policy=self.retry,
                bucket=self._bucket,
                slots=self._slots,
            )
        )
        # The answer is the record, not the journal entry; reading the entry back only to learn
        # its id would cost a call per comment. Its id here is the update that wrote it.
        return RemoteComment(
            id=f"{ref.id}@{row.get('sys_mod_count', '')}:{element}",
            body=body,
            visibility=visibility,
            author=str(row.get("sys_updated_by", "")),
            created_at=parse_time(str(row["sys_updated_on"])),
            origin=origin,
        )

    def known_comments(
        self, fields: Mapping[str, Any], through: tuple[int, ...] | None
    ) -> list[RemoteComment] | None:
        """The journal entries the deliveries said their updates wrote, if they cover every
        update since ``through`` (the store joins consecutive deliveries; ``after`` is the
        version before the first; entries seen before come again and are skipped by id);
        nothing if the record is at ``through``; else None (read them)."""
        version = (int(fields.get("sys_mod_count") or 0),)
        if through is not None and version == tuple(through):
            return []
        journal = fields.get(JOURNAL_KEY)
        if through is None or not isinstance(journal, Mapping):
            return None
        if tuple(journal.get("after") or ()) > tuple(through):
            return None  # an update in between was not delivered: what it wrote is unknown
        try:
            return [self._comment(row) for row in journal.get("entries") or []]
        except (KeyError, TypeError, ValueError):
            return None

    # -- field history ----------------------------------------------------------------------

    def field_changes(self, ref: RemoteRef, since: dt.datetime | None) -> list[FieldChange]:
        """The record's sys_audit rows (one per changed field per update) at or after
        ``since``, oldest first."""
        terms = [f"tablename={ref.object_type}", f"documentkey={ref.id}"]
        if since is not None:
            terms.append(f"sys_created_on>={format_time(since)}")
        query = "^".join([*terms, "ORDERBYsys_created_on", "ORDERBYinternal_checkpoint"])
        rows = self._list("sys_audit", query, limit=10000)
        return [c for c in (_field_change(row) for row in rows) if c is not None]

    def stamps(self, fields: Mapping[str, Any]) -> list[str]:
        return [str(fields.get("correlation_id") or "")]

    def partners(self, ref: RemoteRef, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
        """A ``correlation_id`` that holds an issue key (an integration or a person put it
        there) names the Jira issue."""
        value = str(fields.get("correlation_id") or "").strip()
        return [("jira", value)] if ISSUE_KEY.match(value) else []

    def text_limit(self, path: str) -> int | None:
        if path in ("comments", "work_notes"):
            return JOURNAL_LIMIT
        return TEXT_LIMITS.get(path)

    def inert(self, text: str) -> str:
        """A journal entry shows ``[code]...[/code]`` as live HTML: a zero-width space after the
        bracket shows the same text and renders nothing."""
        return _CODE_TAG.sub(lambda m: f"[\u200b{m[1]}]", text)

    # -- people -------------------------------------------------------------------------------

    def _remember(self, row: Mapping[str, Any]) -> Person:
        person = Person(
            id=str(row["sys_id"]),
            email=str(row.get("email", "")).lower(),
            name=str(row.get("name", "")),
        )
        with self._people_lock:
            self._people_by_id[person.id] = person
            if person.email:
                self._people_by_email[person.email] = person
        return person

    def person_by_email(self, email: str) -> Person:
        key = email.strip().lower()
        with self._people_lock:
            if key in self._people_by_email:
                return self._people_by_email[key]
        if not key or "^" in key:
            raise NotFound(f"not an email address: {email!r}", system=SYSTEM)
        rows = self._list(
            "sys_user", f"email={key}^active=true", limit=1, fields=("sys_id", "email", "name")
        )
        if not rows:
            raise NotFound(f"no active ServiceNow user has the email {email!r}", system=SYSTEM)
        return self._remember(rows[0])

    def mention(self, person: Person) -> str:
        """The user as a journal names them: ``@Name`` and the sys_user it is."""
        return f"@{person.name or person.email} (sys_user {person.id}, {person.email})"

    def person_by_id(self, person_id: str) -> Person:
        with self._people_lock:
            if person_id in self._people_by_id:
                return self._people_by_id[person_id]
        if not SYS_ID.match(person_id):
            raise NotFound(f"not a sys_user sys_id: {person_id!r}", system=SYSTEM)
        rows = self._list(
            "sys_user", f"sys_id={person_id}", limit=1, fields=("sys_id", "email", "name")
        )
        if not rows:
            raise NotFound(f"no ServiceNow user with sys_id {person_id}", system=SYSTEM)
        return self._remember(rows[0])

    # -- preflight (itsm-sync check) ---------------------------------------------------------

    def signin(self) -> Probe:
        """Reachable and the credentials valid: the integration user's own sys_user row."""
        env = env_prefix(SYSTEM, self.instance)
        where = f"servicenow/{self.instance}"
        user = self.settings.username
        try:
            me = self._once("sign in", self._fetch("sys_user", f"user_name={user}", limit=1))
        except AuthFailed as exc:
            return Probe(
                f"{where}: sign in as {user}",
                False,
                exc.args[0]  # the OAuth grant's own refusal names the settings to fix
                if self.oauth is not None and "OAuth" in str(exc)
                else f"credentials refused (HTTP 401): fix {env}USERNAME / {env}PASSWORD",
            )
        except ConnectorError as exc:
            return Probe(f"{where}: reach {self.base_url}", False, str(exc))
        return Probe(f"{where}: signed in as {user}" + ("" if me else " (no sys_user row)"), True)

    def preflight(self, fields: Mapping[str, Sequence[str]]) -> list[Probe]:
        """Sign in (the integration user's own sys_user row), each synced table readable, the
        mapped columns in the table dictionary; one call each, no retries, nothing written."""
        env = env_prefix(SYSTEM, self.instance)
        where = f"servicenow/{self.instance}"
        signed_in = self.signin()
        probes = [signed_in]
        if not signed_in.ok:
            return probes
        for table in OBJECT_TYPES:
            try:
                self._once(f"read {table}", self._fetch(table, "", limit=1, fields=("sys_id",)))
            except ConnectorError as exc:
                probes.append(
                    Probe(
                        f"{where}: table {table} readable",
                        False,
                        f"{exc}: grant the integration user read on {table}",
                    )
                )
                continue
            probes.append(Probe(f"{where}: table {table} readable", True))
            wanted = sorted(set(fields.get(table, ())))
            if not wanted:
                continue
            try:
                rows = self._once(
                    f"read sys_dictionary for {table}",
                    self._fetch(
                        "sys_dictionary",
                        f"name={table}^elementIN{','.join(wanted)}",
                        limit=len(wanted) + 10,
                        fields=("element",),
                    ),
                )
            except ConnectorError as exc:
                probes.append(
                    Probe(
                        f"{where}: mapped {table} fields exist",
                        False,
                        f"{exc}: grant read on sys_dictionary to verify them",
                    )
                )
                continue
            found = {str(r.get("element")) for r in rows}
            # Columns every table inherits from task/sys are not always listed under its name.
            missing = [f for f in wanted if f not in found and not f.startswith("sys_")]
            probes.append(
                Probe(
                    f"{where}: mapped {table} fields exist ({len(wanted)})",
                    not missing,
                    f"no column {', '.join(missing)} on {table}: create it (a u_ field) or "
                    "fix the mapping"
                    if missing
                    else "",
                )
            )
        probes.append(
            Probe(
                f"{where}: webhooks",
                True,
                "not readable through the API: the business rule of docs/operations.md must send "
                f"{env}WEBHOOK_SECRET",
            )
        )
        return probes

    # -- webhooks -----------------------------------------------------------------------------

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> list[Observation]:
        """Verify a business-rule delivery (shared secret header) and read the record in it."""
        lower = {k.lower(): v for k, v in headers.items()}
        given = lower.get("x-servicenow-secret", "").encode()
        secrets = webhook_secrets(self.settings)  # none configured: nothing matches
        if not given or not any(hmac.compare_digest(given, secret) for secret in secrets):
            raise AuthFailed("webhook secret missing or wrong", system=SYSTEM, status=401)
        try:
            payload = json.loads(body)
            table = str(payload["table"])
            record = payload["record"]
            if not isinstance(record, dict):
                raise TypeError("'record' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise Fatal(f"not a ServiceNow record delivery: {exc}", system=SYSTEM) from exc
        if table not in OBJECT_TYPES:
            return []
        rec = self._record(table, record)
        delivery = lower.get("x-servicenow-delivery", "") or f"{rec.ref.id}:{rec.version[0]}"
        fields = dict(rec.fields)
        journal = payload.get("journal")
        if isinstance(journal, list) and all(
            isinstance(j, dict) and {"sys_id", "element", "value", "sys_created_on"} <= set(j)
            for j in journal
        ):
            # The entries this update wrote: one update after the previous version.
            entries = [plain(j) for j in journal if j.get("element") in ("comments", "work_notes")]
            fields[JOURNAL_KEY] = {"after": [rec.version[0] - 1], "entries": entries}
        audit = payload.get("audit")
        if isinstance(audit, list):
            # The fields this update changed, with when and by whom (its sys_audit rows).
            fields[FIELD_CHANGES_KEY] = [
                c.to_json() for c in (_field_change(plain(a)) for a in audit) if c is not None
            ]
        return [
            Observation(
                ref=rec.ref,
                version=rec.version,
                fields=fields,
                source="webhook",
                delivery_id=delivery,
            )
        ]


def _field_change(row: Mapping[str, Any]) -> FieldChange | None:
    """A sys_audit row as a field change (None for a row that is not one of a field)."""
    try:
        return FieldChange(
            id=str(row.get("sys_id") or ""),
            field=str(row["fieldname"]),
            value=row.get("newvalue"),
            old=row.get("oldvalue"),
            at=parse_time(str(row["sys_created_on"])),
            author=str(row.get("user") or row.get("sys_created_by") or ""),
            update=str(row.get("record_checkpoint") or ""),
        )
    except (KeyError, TypeError, ValueError):
        return None


def plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A Table API record with reference links dropped (``{"link", "value"}`` -> value), as
    every record this connector hands out looks."""
    return {k: _raw(v) for k, v in row.items()}


def _raw(value: Any) -> Any:
    """A Table API value with reference links dropped: ``{"link", "value"}`` -> value."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value
