"""Statuspage connector on httpx: a page's incidents (with their updates) and components.

- The budget is 1 request/s per API key over a rolling 60 s window; the shared token bucket
  for (statuspage, key) keeps us under it, so a 420 is the exception, and a 420 (Statuspage's
  429) pauses the bucket for its ``Retry-After``.
- Everything here is public. Incident updates are the only "comments" and they are public by
  construction: asking for an internal one is refused, never downgraded.
- Creates stamp ``metadata.itsm_sync.correlation_key``. The API cannot search metadata, so
  find-before-create looks through the unresolved incidents and the newest page of incidents.
- Which system an update came from is kept in ``metadata.itsm_sync.origins`` (update id ->
  origin), never in the public text.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from config.settings import StatuspageSettings, env_prefix, reveal, webhook_secrets
from connectors.base import (
    Capability,
    FieldChange,
    Observation,
    Person,
    Probe,
    RemoteComment,
    RemoteRecord,
    RemoteRef,
    Visibility,
)
from connectors.errors import (
    AuthFailed,
    ConnectorError,
    Fatal,
    NotFound,
    Retriable,
    classify_response,
    network_cause,
)
from connectors.http import (
    CALLS,
    RatePolicy,
    RetryPolicy,
    bucket_for,
    call_with_retries,
    credential_fingerprint,
    limit_concurrency,
)
from connectors.tls import httpx_options

SYSTEM = "statuspage"
MAX_FIND_PAGES = 20  # unresolved incidents looked through for a correlation key: 2,000
META = "itsm_sync"
TEXT_LIMITS = {"name": 255}
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
COMPONENT_STATUSES = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
T = TypeVar("T")


def parse_time(value: str) -> dt.datetime:
    """Statuspage time (``...T07:32:00.507Z`` or ``...-06:00``) as an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class StatuspageConnector:
    """One Statuspage page."""

    system = SYSTEM
    capabilities = frozenset(
        {Capability.CREATE, Capability.UPDATE, Capability.COMMENTS, Capability.TRANSITIONS,
         Capability.WEBHOOKS, Capability.CREATE_IN_STATE, Capability.FIELDS_ON_TRANSITION}
    )  # fmt: skip

    def __init__(
        self,
        settings: StatuspageSettings,
        *,
        instance: str = "default",
        retry: RetryPolicy | None = None,
        poll_overlap: dt.timedelta = dt.timedelta(seconds=2),
    ) -> None:
        self.instance = instance
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.poll_overlap = poll_overlap
        self.base_url = settings.url.rstrip("/")
        self.page = settings.page_id
        key = reveal(settings.api_key)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"OAuth {key}", "Accept": "application/json"},
            timeout=settings.timeout_seconds,
            **httpx_options(settings),
            event_hooks={"response": [self._count]},
        )
        self._bucket = bucket_for(
            SYSTEM,
            credential_fingerprint(f"{self.base_url}|{key}"),
            RatePolicy(requests_per_second=settings.requests_per_second, burst=settings.burst),
        )
        self._slots = limit_concurrency(SYSTEM, settings.max_concurrency, self.base_url)

    def __repr__(self) -> str:  # never the key
        return f"StatuspageConnector({self.instance!r}, {self.base_url!r}, page={self.page!r})"

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _count(response: httpx.Response) -> None:
        CALLS.add(SYSTEM, response.request.method, response.status_code)

    def object_types(self) -> Sequence[str]:
        return ("incident", "component")

    # -- plumbing -----------------------------------------------------------------------------

    def _once(self, what: str, method: str, path: str, body: Any = None,
              params: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        try:
            response = self._http.request(
                method,
                f"/pages/{self.page}/{path}".rstrip("/"),
                json=body,
                params=dict(params or {}),
            )
        except httpx.TimeoutException as exc:
            CALLS.add(SYSTEM, method, "Timeout")
            raise Retriable(f"{what} timed out", system=SYSTEM) from exc
        except httpx.TransportError as exc:
            CALLS.add(SYSTEM, method, type(exc).__name__)
            raise Retriable(f"{what}: {network_cause(exc, system=SYSTEM)}", system=SYSTEM) from exc
        if response.status_code >= 400:
            raise classify_response(
                system=SYSTEM,
                status=response.status_code,
                body=response.content,
                headers=response.headers,
                what=what,
            )
        try:
            return response.json() if response.content else None
        except ValueError as exc:
            raise Fatal(f"{what}: the answer is not JSON", system=SYSTEM) from exc

    def _call(self, what: str, method: str, path: str, body: Any = None,
              params: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        return call_with_retries(
            lambda: self._once(what, method, path, body, params),
            system=SYSTEM,
            what=what,
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
        )

    def _record(self, object_type: str, raw: Mapping[str, Any]) -> RemoteRecord:
        try:
            ref = RemoteRef(SYSTEM, self.instance, object_type, str(raw["id"]))
            updated = parse_time(str(raw["updated_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise Fatal(f"{object_type} without id/updated_at: {exc}", system=SYSTEM) from exc
        version = (int(updated.timestamp() * 1000), len(raw.get("incident_updates") or []))
        url = str(raw.get("shortlink") or "")
        return RemoteRecord(ref=ref, version=version, updated_at=updated, fields=raw, url=url)

    def _check(self, object_type: str) -> str:
        if object_type not in ("incident", "component"):
            raise ValueError(f"statuspage serves incidents and components, not {object_type!r}")
        return object_type

    # -- reading ------------------------------------------------------------------------------

    def _all(self, object_type: str, page_size: int) -> Iterator[dict[str, Any]]:
        path = "incidents" if object_type == "incident" else "components"
        size_param = "limit" if object_type == "incident" else "per_page"
        page = 1
        while True:
            batch = self._call(
                f"list {path}", "GET", path, params={"page": page, size_param: page_size}
            )
            yield from batch or []
            if not batch or len(batch) < page_size:
                return
            page += 1

    def changes_since(
        self, object_type: str, watermark: dt.datetime | None, *, page_size: int = 100
    ) -> Iterator[RemoteRecord]:
        """Records updated at or after ``watermark`` (minus the overlap), oldest first.

        The API lists newest first and cannot filter by time, so this reads every page and
        filters here; a record changed while we page is read again at its new place, and the
        (id, version) pairs already seen are dropped.
        """
        self._check(object_type)
        since = watermark - self.poll_overlap if watermark else None
        found: dict[tuple[str, tuple[int, ...]], RemoteRecord] = {}
        for raw in self._all(object_type, min(page_size, 100)):
            record = self._record(object_type, raw)
            if since is None or record.updated_at >= since:
                found[(record.ref.id, record.version)] = record
        latest: dict[str, RemoteRecord] = {}
        for record in found.values():
            if record.ref.id not in latest or record.version > latest[record.ref.id].version:
                latest[record.ref.id] = record
        yield from sorted(latest.values(), key=lambda r: (r.updated_at, r.ref.id))

    def get(self, object_type: str, id_or_key: str) -> RemoteRecord:
        path = "incidents" if self._check(object_type) == "incident" else "components"
        return self._record(
            object_type, self._call(f"get {object_type}", "GET", f"{path}/{id_or_key}")
        )

    def _find(self, correlation_key: str, call: Callable[..., Any]) -> dict[str, Any] | None:
        """Every unresolved incident (page by page: one we made a moment ago is among them),
        then the newest 100 of all (one resolved since). Metadata is not searchable."""

        def ours(raw: Mapping[str, Any]) -> bool:
            meta = (raw.get("metadata") or {}).get(META) or {}
            return bool(meta.get("correlation_key") == correlation_key)

        for page in range(1, MAX_FIND_PAGES + 1):
            batch = call(
                "find incident", "GET", "incidents/unresolved", None,
                {"page": page, "per_page": 100},
            ) or []  # fmt: skip
            found = next((raw for raw in batch if ours(raw)), None)
            if found is not None:
                return dict(found)
            if len(batch) < 100:
                break
        recent = call("find incident", "GET", "incidents", None, {"limit": 100}) or []
        found = next((raw for raw in recent if ours(raw)), None)
        return dict(found) if found is not None else None

    def find_by_correlation(self, object_type: str, correlation_key: str) -> RemoteRecord | None:
        if self._check(object_type) != "incident":
            return None
        raw = self._find(correlation_key, self._call)
        return self._record("incident", raw) if raw else None

    # -- writing ------------------------------------------------------------------------------

    def create(
        self,
        object_type: str,
        fields: Mapping[str, Any],
        *,
        correlation_key: str,
        look_first: bool = True,
    ) -> RemoteRecord:
        if self._check(object_type) != "incident":
            raise Fatal("components are created by page admins, not by itsm-sync", system=SYSTEM)
        body = dict(fields)
        metadata = dict(body.get("metadata") or {})
        metadata[META] = {**(metadata.get(META) or {}), "correlation_key": correlation_key}
        body["metadata"] = metadata

        tries = 0

        def find_or_create() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            if look_first or tries > 1:  # a retry always looks: its answer may have been lost
                existing = self._find(correlation_key, self._once_counted)
                if existing is not None:
                    return existing
                post = self._once_counted
            else:
                post = self._once  # the attempt's own token pays for it: one call, one token
            return dict(post("create incident", "POST", "incidents", {"incident": body}))

        raw = call_with_retries(
            find_or_create,
            system=SYSTEM,
            what="create incident",
            policy=self.retry,
            bucket=self._bucket,
            slots=self._slots,
        )
        return self._record("incident", raw)

    def _once_counted(self, what: str, method: str, path: str, body: Any = None,
                      params: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        """One call without retries (the caller's retry layer wraps it) that still spends a
        token, so a multi-call attempt stays inside the budget."""
        if self._bucket is not None:
            self._bucket.acquire()
        return self._once(what, method, path, body, params)

    def update(self, ref: RemoteRef, fields: Mapping[str, Any]) -> RemoteRecord:
        if ref.object_type == "component":
            status = fields.get("status")
            if status is not None and status not in COMPONENT_STATUSES:
                raise Fatal(
                    f"component status {status!r} is not one of {COMPONENT_STATUSES}", system=SYSTEM
                )
            raw = self._call(
                "update component", "PATCH", f"components/{ref.id}", {"component": dict(fields)}
            )
            return self._record("component", raw)
        if not fields:
            return self.get("incident", ref.id)
        raw = self._call(
            "update incident", "PATCH", f"incidents/{ref.id}", {"incident": dict(fields)}
        )
        return self._record("incident", raw)

    def transition(
        self,
        ref: RemoteRef,
        target: str,
        fields: Mapping[str, Any] | None = None,
        *,
        known: Mapping[str, Any] | None = None,
        on_step: Callable[[str], None] | None = None,  # one step: nothing in between
    ) -> RemoteRecord:
        """Set the incident status, with component statuses (``components``) in the same PATCH."""
        if target not in INCIDENT_STATUSES:
            raise Fatal(
                f"incident status {target!r} is not one of {INCIDENT_STATUSES}", system=SYSTEM
            )
        return self.update(ref, {**(fields or {}), "status": target})

    # -- what the engine asks of every connector -------------------------------------------

    def field_changes(self, ref: RemoteRef, since: dt.datetime | None) -> list[FieldChange]:
        return []  # output only: nothing here is read back into the incident

    def stamps(self, fields: Mapping[str, Any]) -> list[str]:
        meta = (fields.get("metadata") or {}).get(META) or {}
        return [str(meta.get("correlation_key") or "")]

    def text_limit(self, path: str) -> int | None:
        return TEXT_LIMITS.get(path)

    def partners(self, ref: RemoteRef, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def inert(self, text: str) -> str:
        return text  # only the public message, which comms approved, reaches the page

    # -- comments (incident updates: public only) ---------------------------------------------

    def known_comments(
        self, fields: Mapping[str, Any], through: tuple[int, ...] | None
    ) -> list[RemoteComment] | None:
        """Never known without a read (the updates are read with the incident)."""
        return None

    def comments(self, ref: RemoteRef) -> list[RemoteComment]:
        raw = self.get("incident", ref.id).fields
        origins = ((raw.get("metadata") or {}).get(META) or {}).get("origins") or {}
        updates = sorted(raw.get("incident_updates") or [], key=lambda u: str(u.get("created_at")))
        return [
            RemoteComment(
                id=str(u["id"]),
                body=str(u.get("body") or ""),
                visibility=Visibility.PUBLIC,
                author="",
                created_at=parse_time(str(u["created_at"])),
                origin=str(origins.get(str(u["id"]), "")),
            )
            for u in updates
            if u.get("body")
        ]

    def add_comment(
        self, ref: RemoteRef, body: str, *, visibility: Visibility, origin: str = ""
    ) -> RemoteComment:
        if visibility is not Visibility.PUBLIC:
            raise Fatal(
                "Statuspage incident updates are public only; an internal comment is never posted",
                system=SYSTEM,
            )
        raw = self._call(
            "post incident update", "PATCH", f"incidents/{ref.id}", {"incident": {"body": body}}
        )
        updates = sorted(raw.get("incident_updates") or [], key=lambda u: str(u.get("created_at")))
        mine = [u for u in updates if u.get("body") == body]
        if not mine:
            raise Fatal(f"{ref}: the update just posted is not on the incident", system=SYSTEM)
        update = mine[-1]
        if origin:
            metadata = dict(raw.get("metadata") or {})
            own = dict(metadata.get(META) or {})
            own["origins"] = {**(own.get("origins") or {}), str(update["id"]): origin}
            metadata[META] = own
            self._call(
                "record origin",
                "PATCH",
                f"incidents/{ref.id}",
                {"incident": {"metadata": metadata}},
            )
        return RemoteComment(
            id=str(update["id"]),
            body=body,
            visibility=Visibility.PUBLIC,
            author="",
            created_at=parse_time(str(update["created_at"])),
            origin=origin,
        )

    # -- people: Statuspage has none ----------------------------------------------------------

    def person_by_email(self, email: str) -> Person:
        raise Fatal("Statuspage has no people to look up", system=SYSTEM)

    def person_by_id(self, person_id: str) -> Person:
        raise Fatal("Statuspage has no people to look up", system=SYSTEM)

    # -- preflight (itsm-sync check) ---------------------------------------------------------

    def signin(self) -> Probe:
        """Reachable, the API key valid and the page id right (GET the page)."""
        env = env_prefix(SYSTEM, self.instance)
        where = f"statuspage/{self.instance}"
        try:
            page = self._once("read page", "GET", "")
        except AuthFailed:
            return Probe(
                f"{where}: sign in", False, f"API key refused (HTTP 401): fix {env}API_KEY"
            )
        except NotFound:
            return Probe(
                f"{where}: page {self.page}", False, f"no such page for this key: fix {env}PAGE_ID"
            )
        except ConnectorError as exc:
            return Probe(f"{where}: reach {self.base_url}", False, str(exc))
        name = page.get("name", self.page) if isinstance(page, dict) else self.page
        return Probe(f"{where}: page {self.page} ({name})", True)

    def preflight(self, fields: Mapping[str, Sequence[str]]) -> list[Probe]:
        """The page (key valid, page id right) and its components; nothing written."""
        where = f"statuspage/{self.instance}"
        signed_in = self.signin()
        probes = [signed_in]
        if not signed_in.ok:
            return probes
        try:
            components = self._once("read components", "GET", "components")
        except ConnectorError as exc:
            probes.append(Probe(f"{where}: components", False, str(exc)))
        else:
            ids = {str(c.get("id")) for c in components}
            wanted = sorted(set(fields.get("values:components", ())))
            missing = [c for c in wanted if c not in ids]
            probes.append(
                Probe(
                    f"{where}: components ({len(ids)} on the page)",
                    not missing,
                    f"no component {', '.join(missing)} on the page: fix the mapping's component "
                    "ids (Statuspage > Components > the id in the URL)"
                    if missing
                    else "",
                )
            )
        return probes

    # -- webhooks -----------------------------------------------------------------------------

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> list[Observation]:
        """Verify the ``token`` in the subscriber URL (Statuspage signs nothing) and read the
        incident or component in the notification."""
        given = str((query or {}).get("token", "")).encode()
        secrets = webhook_secrets(self.settings)  # none configured: nothing matches
        if not given or not any(hmac.compare_digest(given, secret) for secret in secrets):
            raise AuthFailed("webhook token missing or wrong", system=SYSTEM, status=401)
        try:
            payload = json.loads(body)
            if "incident" in payload:
                record = self._record("incident", payload["incident"])
            elif "component" in payload:
                record = self._record("component", payload["component"])
            else:
                raise KeyError("neither 'incident' nor 'component'")
        except (ValueError, KeyError, TypeError, ConnectorError) as exc:
            raise Fatal(f"not a Statuspage notification: {exc}", system=SYSTEM) from exc
        update = payload.get("component_update") or {}
        latest = (record.fields.get("incident_updates") or [{}])[0]
        delivery = str(update.get("id") or latest.get("id") or "") + f"@{record.version}"
        return [
            Observation(
                ref=record.ref,
                version=record.version,
                fields=record.fields,
                source="webhook",
                delivery_id=delivery,
            )
        ]
