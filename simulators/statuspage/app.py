"""Atlassian Statuspage manage API v1 simulator (``/v1/pages/{page_id}/...``)."""

from __future__ import annotations

import copy
import hmac
import json
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from starlette.responses import Response

from simulators.base import (
    Handler,
    JSONResponse,
    MalformedBody,
    SimHTTPError,
    SimRequest,
    Simulator,
)

from .model import (
    COMPONENT_STATUSES,
    COMPONENT_WRITABLE,
    IMPACT_OF_STATUS,
    IMPACTS,
    INCIDENT_FLAGS,
    INCIDENT_STATUSES,
    INDICATOR_TEXT,
    PAGE_WRITABLE,
    REALTIME_STATUSES,
    SCHEDULED_STATUSES,
    WEBHOOK_DOCS,
    Record,
    as_bool,
    as_str,
    check_enum,
    component_defaults,
    incident_defaults,
    new_id,
    now,
    page_defaults,
    parse_date,
    parse_rails_form,
    parse_time,
    update_defaults,
    worst_impact,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "statuspage.json"
FIXTURE_PAGE_ID = "simpage0001"  # the page id written in the fixture file
PREFIX = "/v1/pages"
INTERNAL = ("component_ids", "_seq")  # stored on incidents, never rendered
NOT_FOUND = "The requested resource could not be found."
UNAUTHENTICATED = "Could not authenticate"
WINDOW_SECONDS = 60.0
# GET /incidents/<subset>: which statuses each subset lists.
SUBSETS: dict[str, tuple[str, ...]] = {
    "unresolved": ("investigating", "identified", "monitoring"),
    "scheduled": ("scheduled",),
    "upcoming": ("scheduled",),
    "active_maintenance": ("in_progress", "verifying"),
}


class StatuspageSimulator(Simulator):
    name = "statuspage"

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        page_id: str = "simpage0001",
        seed: int = 0,
        requests_per_minute: int | None = 60,
        rate_limit_status: int = 420,
    ) -> None:
        self.api_key = api_key
        self.page_id = page_id
        self.default_requests_per_minute = requests_per_minute
        self.default_rate_limit_status = rate_limit_status
        self.requests_per_minute = requests_per_minute
        self.rate_limit_status = rate_limit_status
        self._windows: dict[str, deque[float]] = {}
        self._subscriber = new_id()
        super().__init__(seed=seed)

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget components and incidents; the configured page always exists (as on the real
        service, where a key belongs to a page). The rate-limit settings stay; its window empties.
        """
        self.pages: dict[str, Record] = {}
        self.components: dict[str, Record] = {}
        self.incidents: dict[str, Record] = {}
        self._seq = 0
        self._windows = {}
        self._ensure_page(self.page_id)

    def dump_state(self) -> dict[str, Any]:
        return {
            "pages": copy.deepcopy(self.pages),
            "components": copy.deepcopy(self.components),
            "incidents": copy.deepcopy(self.incidents),
            "seq": self._seq,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.pages = copy.deepcopy(dict(state.get("pages", {})))
        self.components = copy.deepcopy(dict(state.get("components", {})))
        self.incidents = copy.deepcopy(dict(state.get("incidents", {})))
        self._seq = int(state.get("seq", len(self.incidents)))
        self._ensure_page(self.page_id)

    def default_seed(self) -> dict[str, Any]:
        text = FIXTURE.read_text()
        if self.page_id != FIXTURE_PAGE_ID:
            text = text.replace(json.dumps(FIXTURE_PAGE_ID), json.dumps(self.page_id))
        return dict(json.loads(text))

    def seed(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Load ``{"pages": [...], "components": [...], "incidents": [...]}``; objects as the API
        (or a webhook payload) renders them. A whole webhook payload (``page`` plus ``incident``
        or ``component``) is accepted as well."""
        if not isinstance(data, Mapping):
            raise ValueError("seed data must be a JSON object")

        def items(plural: str, singular: str) -> list[Mapping[str, Any]]:
            rows = list(data.get(plural) or [])
            if isinstance(data.get(singular), Mapping):
                rows.append(data[singular])
            for row in rows:
                if not isinstance(row, Mapping):
                    raise ValueError(f"{plural}: every entry must be an object")
            return rows

        pages = items("pages", "page")
        components = items("components", "component")
        incidents = items("incidents", "incident")
        for page in pages:
            self._seed_page(page)
        for component in components:
            self._seed_component(component, None)
        for incident in incidents:
            self._seed_incident(incident)
        return {"pages": len(pages), "components": len(components), "incidents": len(incidents)}

    def _ensure_page(self, page_id: str) -> Record:
        page = self.pages.get(page_id)
        if page is None:
            page = page_defaults(page_id, now())
            self.pages[page_id] = page
        return page

    def _seed_page(self, data: Mapping[str, Any]) -> None:
        page = self._ensure_page(str(data["id"]))
        for key in page:
            if key in data and key != "id":
                page[key] = copy.deepcopy(data[key])

    def _seed_component(self, data: Mapping[str, Any], page_id: str | None) -> str:
        cid = str(data.get("id") or new_id(self._taken()))
        existing = self.components.get(cid)
        pid = str(data.get("page_id") or page_id or (existing or {}).get("page_id") or self.page_id)
        self._ensure_page(pid)
        rec = existing or component_defaults(cid, pid, now(), self._next_position(pid))
        for key in rec:
            if key in data and key not in ("id", "page_id"):
                rec[key] = copy.deepcopy(data[key])
        rec["page_id"] = pid
        if rec["status"] not in (*COMPONENT_STATUSES, ""):
            raise ValueError(f"component {cid}: unknown status {rec['status']!r}")
        self.components[cid] = rec
        return cid

    def _seed_incident(self, data: Mapping[str, Any]) -> None:
        iid = str(data.get("id") or new_id(self._taken()))
        pid = str(data.get("page_id") or self.page_id)
        self._ensure_page(pid)
        rec = incident_defaults(iid, pid, now())
        for key in rec:
            if key in data and key not in ("id", "page_id", "incident_updates"):
                rec[key] = copy.deepcopy(data[key])
        if rec["status"] not in INCIDENT_STATUSES:
            raise ValueError(f"incident {iid}: unknown status {rec['status']!r}")
        if rec["impact"] not in IMPACTS or rec["impact_override"] not in (*IMPACTS, None):
            raise ValueError(f"incident {iid}: unknown impact {rec['impact']!r}")
        ids: list[str] = [str(c) for c in data.get("component_ids") or []]
        embedded = data.get("components") or []
        if isinstance(embedded, Mapping):  # the request style: {component_id: status}
            for cid, status in embedded.items():
                ids.append(self._seed_component({"id": cid, "status": status}, pid))
        else:
            for comp in embedded:
                if isinstance(comp, str):  # a bare component id
                    comp = {"id": comp}
                if not isinstance(comp, Mapping):
                    raise TypeError(f"incident {iid}: components must be objects or ids")
                cid = str(comp.get("id", ""))
                ids.append(cid if cid in self.components else self._seed_component(comp, pid))
        rec["component_ids"] = list(dict.fromkeys(ids))
        if "impact" not in data:
            rec["impact"] = rec["impact_override"] or self._computed_impact(rec)
        updates = data.get("incident_updates")
        if updates is None:
            updates = [{"status": rec["status"], "body": data.get("body") or ""}]
        rec["incident_updates"] = []
        for raw in updates:
            if not isinstance(raw, Mapping):
                raise TypeError(f"incident {iid}: incident_updates must be objects")
            upd = update_defaults(
                str(raw.get("id") or new_id(self._taken())), iid, rec["created_at"]
            )
            for key in upd:
                if key in raw and key not in ("id", "incident_id"):
                    upd[key] = copy.deepcopy(raw[key])
            rec["incident_updates"].append(upd)
        self._seq += 1
        rec["_seq"] = self._seq
        self.incidents[iid] = rec

    def _taken(self) -> Iterable[str]:
        return [*self.components, *self.incidents, *self.pages]

    def _next_position(self, page_id: str) -> int:
        positions = [c["position"] for c in self.components.values() if c["page_id"] == page_id]
        return max(positions, default=0) + 1

    # -- framework hooks ----------------------------------------------------------------------

    def error_response(
        self, status: int, message: str, detail: Any = None, **extra: Any
    ) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=extra.get("headers"))

    def rate_limit_response(self, retry_after: int) -> Response:
        return self.error_response(
            self.rate_limit_status,
            "Rate limit exceeded",
            headers={"Retry-After": str(max(1, int(retry_after)))},
        )

    def authenticate(self, req: SimRequest) -> Response | None:
        if req.path.startswith("/_sim/"):
            return None
        key = self._credential(req)
        if key is None or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return self.error_response(401, UNAUTHENTICATED)
        req.user = key
        return self._rate_check(key)

    @staticmethod
    def _credential(req: SimRequest) -> str | None:
        header = req.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() in ("oauth", "bearer") and value.strip():
                return value.strip()
            return None
        return req.arg("api_key") or None

    def _rate_check(self, key: str) -> Response | None:
        """Sliding 60 s window per API key; only accepted requests count."""
        limit = self.requests_per_minute
        if not limit:
            return None
        t = time.monotonic()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= t - WINDOW_SECONDS:
            window.popleft()
        if len(window) >= limit:
            return self.rate_limit_response(math.ceil(window[0] + WINDOW_SECONDS - t))
        window.append(t)
        return None

    # -- routes -------------------------------------------------------------------------------

    def register_routes(self) -> None:
        p = PREFIX + "/{page_id}"
        self._add(PREFIX, ["GET"], self.list_pages)
        self._add(p, ["GET", "PATCH", "PUT"], self.page)
        self._add(p + "/components", ["GET", "POST"], self.component_collection)
        self._add(
            p + "/components/{component_id}",
            ["GET", "PATCH", "PUT", "DELETE"],
            self.component_item,
        )
        for subset in SUBSETS:  # before /incidents/{incident_id}, which would match them too
            self._add(p + f"/incidents/{subset}", ["GET"], self.incident_subset)
        self._add(p + "/incidents", ["GET", "POST"], self.incident_collection)
        self._add(
            p + "/incidents/{incident_id}", ["GET", "PATCH", "PUT", "DELETE"], self.incident_item
        )
        self._add(
            p + "/incidents/{incident_id}/incident_updates/{incident_update_id}",
            ["PATCH", "PUT"],
            self.incident_update_item,
        )
        self.route("/_sim/ratelimit", ["GET", "POST", "DELETE"])(self.ratelimit)

    def _add(self, path: str, methods: list[str], handler: Handler) -> None:
        """Register ``path`` and, where it ends in a fixed segment, ``path.json`` (the API's
        examples use the suffix; it is optional). A trailing id may carry ``.json`` too."""
        self.route(path, methods)(handler)
        if not path.endswith("}"):
            self.route(path + ".json", methods)(handler)

    def ratelimit(self, req: SimRequest) -> Response:
        """``/_sim/ratelimit``: POST ``{"requests_per_minute": N|null, "status": 420|429}``
        (missing keys unchanged); DELETE restores the defaults. Either empties the window."""
        if req.method == "POST":
            body = req.json() or {}
            if not isinstance(body, dict) or set(body) - {"requests_per_minute", "status"}:
                raise SimHTTPError(400, "expected {'requests_per_minute': int|null, 'status': int}")
            rpm = body.get("requests_per_minute", self.requests_per_minute)
            status = body.get("status", self.rate_limit_status)
            if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0):
                raise SimHTTPError(
                    400, "requests_per_minute must be a non-negative integer or null"
                )
            if status not in (420, 429):
                raise SimHTTPError(400, "status must be 420 or 429")
            self.requests_per_minute = rpm or None
            self.rate_limit_status = int(status)
            self._windows = {}
        elif req.method == "DELETE":
            self.requests_per_minute = self.default_requests_per_minute
            self.rate_limit_status = self.default_rate_limit_status
            self._windows = {}
        return JSONResponse(
            {
                "requests_per_minute": self.requests_per_minute,
                "status": self.rate_limit_status,
                "window_seconds": int(WINDOW_SECONDS),
            }
        )

    # -- request helpers ----------------------------------------------------------------------

    @staticmethod
    def _param(req: SimRequest, name: str) -> str:
        return req.path_params[name].removesuffix(".json")

    def _page(self, req: SimRequest) -> Record:
        page = self.pages.get(self._param(req, "page_id"))
        if page is None:
            raise SimHTTPError(404, NOT_FOUND)
        return page

    @staticmethod
    def _body(req: SimRequest, wrapper: str) -> Record:
        """The ``{"<wrapper>": {...}}`` body, JSON or Rails-style form encoded."""
        data: Any
        if req.content_type == "application/x-www-form-urlencoded":
            data = parse_rails_form(req.form())
        else:
            try:
                data = req.json()
            except MalformedBody as exc:
                raise SimHTTPError(400, f"Bad request: malformed JSON ({exc.detail})") from exc
        inner = data.get(wrapper) if isinstance(data, dict) else None
        if not isinstance(inner, dict):
            raise SimHTTPError(400, f"param is missing or the value is empty: {wrapper}")
        return inner

    @staticmethod
    def _int_arg(req: SimRequest, name: str, default: int) -> int:
        raw = req.arg(name)
        try:
            return int(raw) if raw not in (None, "") else default
        except ValueError:
            return default  # like Rails' to_i fallback: a bad number is ignored

    @staticmethod
    def _paginate(rows: list[Record], page: int, per_page: int) -> list[Record]:
        per_page = 100 if per_page <= 0 or per_page > 100 else per_page
        page = max(page, 1)
        return rows[(page - 1) * per_page : page * per_page]

    # -- pages --------------------------------------------------------------------------------

    def list_pages(self, req: SimRequest) -> Response:
        return JSONResponse([copy.deepcopy(p) for p in self.pages.values()])

    def page(self, req: SimRequest) -> Response:
        page = self._page(req)
        if req.method in ("PATCH", "PUT"):
            data = self._body(req, "page")
            changes: Record = {}
            for key in PAGE_WRITABLE:
                if key not in data:
                    continue
                value = data[key]
                if key == "branding":
                    value = check_enum(value, ("basic", "premium"), "Branding")
                elif isinstance(page[key], bool):
                    value = as_bool(value, key)
                else:
                    value = as_str(value, key, limit=255 if key == "name" else None)
                changes[key] = value
            if "name" in changes and not changes["name"]:
                raise SimHTTPError(422, "Name can't be blank")
            page.update(changes)
            page["updated_at"] = now()
        return JSONResponse(copy.deepcopy(page))

    # -- components ---------------------------------------------------------------------------

    def _page_components(self, page_id: str) -> list[Record]:
        rows = [c for c in self.components.values() if c["page_id"] == page_id]
        return sorted(rows, key=lambda c: (c["position"], c["created_at"]))

    def component_collection(self, req: SimRequest) -> Response:
        page = self._page(req)
        if req.method == "POST":
            data = self._body(req, "component")
            cid = new_id(self._taken())
            rec = component_defaults(cid, page["id"], now(), self._next_position(page["id"]))
            self._apply_component(rec, data, creating=True)
            self.components[cid] = rec
            return JSONResponse(copy.deepcopy(rec), status_code=201)
        rows = self._page_components(page["id"])
        rows = self._paginate(
            rows, self._int_arg(req, "page", 1), self._int_arg(req, "per_page", 100)
        )
        return JSONResponse([copy.deepcopy(c) for c in rows])

    def _component(self, page: Record, component_id: str) -> Record:
        rec = self.components.get(component_id)
        if rec is None or rec["page_id"] != page["id"]:
            raise SimHTTPError(404, NOT_FOUND)
        return rec

    def component_item(self, req: SimRequest) -> Response:
        page = self._page(req)
        rec = self._component(page, self._param(req, "component_id"))
        if req.method == "DELETE":
            del self.components[rec["id"]]
            for inc in self.incidents.values():
                if rec["id"] in inc["component_ids"]:
                    inc["component_ids"].remove(rec["id"])
            return Response(status_code=204)
        if req.method in ("PATCH", "PUT"):
            self._apply_component(rec, self._body(req, "component"), creating=False)
        return JSONResponse(copy.deepcopy(rec))

    def _apply_component(self, rec: Record, data: Record, *, creating: bool) -> None:
        """Validate everything first, then change ``rec`` (and emit if the status changed)."""
        changes: Record = {}
        for key in COMPONENT_WRITABLE:
            if key not in data:
                continue
            value = data[key]
            if key == "name":
                value = as_str(value, "Name", limit=255, nullable=False)
                if not value.strip():
                    raise SimHTTPError(422, "Name can't be blank")
            elif key == "description":
                value = as_str(value, "Description", limit=1000)
            elif key == "status":
                if value == "":
                    continue  # the spec's enum allows "": leaves the status as it is
                value = check_enum(value, COMPONENT_STATUSES, "Status")
            elif key in ("showcase", "only_show_if_degraded"):
                value = as_bool(value, key)
            elif key == "start_date":
                value = parse_date(value, "Start date")
            elif key == "group_id" and value is not None:
                group = self.components.get(str(value))
                if group is None or not group["group"] or group["page_id"] != rec["page_id"]:
                    raise SimHTTPError(422, f"Group {value!r} not found")
            changes[key] = value
        if creating and not changes.get("name"):
            raise SimHTTPError(422, "Name can't be blank")
        ts = now()
        old_status = rec["status"]
        rec.update(changes)
        rec["updated_at"] = ts
        if not creating and rec["status"] != old_status:
            self._emit_component(rec, old_status, ts)

    # -- incidents ----------------------------------------------------------------------------

    def _incident(self, page: Record, incident_id: str) -> Record:
        rec = self.incidents.get(incident_id)
        if rec is None or rec["page_id"] != page["id"]:
            raise SimHTTPError(404, NOT_FOUND)
        return rec

    def _page_incidents(self, page_id: str) -> list[Record]:
        rows = [i for i in self.incidents.values() if i["page_id"] == page_id]
        return sorted(rows, key=lambda i: (i["created_at"], i.get("_seq", 0)), reverse=True)

    def _render_incident(self, inc: Record) -> Record:
        out = {k: copy.deepcopy(v) for k, v in inc.items() if k not in INTERNAL}
        out["components"] = [
            copy.deepcopy(self.components[c]) for c in inc["component_ids"] if c in self.components
        ]
        return out

    def incident_collection(self, req: SimRequest) -> Response:
        page = self._page(req)
        if req.method == "POST":
            inc = self._write_incident(page, self._body(req, "incident"), None)
            return JSONResponse(self._render_incident(inc), status_code=201)
        rows = self._page_incidents(page["id"])
        q = (req.arg("q") or "").strip().lower()
        if q:
            rows = [i for i in rows if _matches(i, q)]
        per_page = self._int_arg(req, "limit", self._int_arg(req, "per_page", 100))
        rows = self._paginate(rows, self._int_arg(req, "page", 1), per_page)
        return JSONResponse([self._render_incident(i) for i in rows])

    def incident_subset(self, req: SimRequest) -> Response:
        page = self._page(req)
        subset = req.route.rsplit("/", 1)[-1].removesuffix(".json")
        statuses = SUBSETS[subset]
        rows = [i for i in self._page_incidents(page["id"]) if i["status"] in statuses]
        if subset == "upcoming":
            t = now()
            rows = [i for i in rows if not i["scheduled_for"] or i["scheduled_for"] > t]
        rows = self._paginate(
            rows, self._int_arg(req, "page", 1), self._int_arg(req, "per_page", 100)
        )
        return JSONResponse([self._render_incident(i) for i in rows])

    def incident_item(self, req: SimRequest) -> Response:
        page = self._page(req)
        inc = self._incident(page, self._param(req, "incident_id"))
        if req.method == "DELETE":
            del self.incidents[inc["id"]]
            return JSONResponse(self._render_incident(inc))
        if req.method in ("PATCH", "PUT"):
            inc = self._write_incident(page, self._body(req, "incident"), inc)
        return JSONResponse(self._render_incident(inc))

    def incident_update_item(self, req: SimRequest) -> Response:
        page = self._page(req)
        inc = self._incident(page, self._param(req, "incident_id"))
        update_id = self._param(req, "incident_update_id")
        upd = next((u for u in inc["incident_updates"] if u["id"] == update_id), None)
        if upd is None:
            raise SimHTTPError(404, NOT_FOUND)
        data = self._body(req, "incident_update")
        changes: Record = {}
        if "body" in data:
            changes["body"] = as_str(data["body"], "Body", limit=25000, nullable=False)
        if "display_at" in data:
            changes["display_at"] = parse_time(data["display_at"], "Display at")
        for flag in ("deliver_notifications", "wants_twitter_update"):
            if flag in data:
                changes[flag] = as_bool(data[flag], flag)
        ts = now()
        upd.update(changes)
        upd["updated_at"] = ts
        inc["updated_at"] = ts
        return JSONResponse(copy.deepcopy(upd))

    def _computed_impact(self, inc: Record) -> str:
        impact = worst_impact(
            IMPACT_OF_STATUS.get(self.components[c]["status"], "none")
            for c in inc["component_ids"]
            if c in self.components
        )
        if inc["scheduled_for"] and impact == "none":
            return "maintenance"
        return impact

    def _write_incident(self, page: Record, data: Record, existing: Record | None) -> Record:
        """Create (``existing`` None) or update an incident. Everything is validated before
        anything changes, so a 4xx leaves no trace."""
        ts = now()
        creating = existing is None
        if existing is None:
            inc = incident_defaults(new_id(self._taken()), page["id"], ts)
            inc["component_ids"] = []
        else:
            inc = copy.deepcopy(existing)

        if creating or "name" in data:
            name = as_str(data.get("name"), "Name", limit=255)
            if not name or not name.strip():
                raise SimHTTPError(422, "Name can't be blank")
            inc["name"] = name
        for field in ("scheduled_for", "scheduled_until"):
            if field in data:
                inc[field] = parse_time(data[field], field)
        scheduled = inc["scheduled_for"] is not None
        old_status = None if existing is None else existing["status"]
        if data.get("status") is not None:
            status = check_enum(data["status"], INCIDENT_STATUSES, "Status")
        elif creating:
            status = "scheduled" if scheduled else "investigating"
        else:
            status = inc["status"]
        allowed = SCHEDULED_STATUSES if scheduled else REALTIME_STATUSES
        if status not in allowed:
            kind = "scheduled" if scheduled else "realtime"
            raise SimHTTPError(
                422, f"Status {status!r} is not valid for a {kind} incident: {', '.join(allowed)}"
            )
        if "impact_override" in data:
            value = data["impact_override"]
            inc["impact_override"] = (
                None if value in (None, "") else check_enum(value, IMPACTS, "Impact override")
            )
        body = as_str(data.get("body"), "Body", limit=25000)
        deliver = as_bool(data.get("deliver_notifications", True), "deliver_notifications")
        if "metadata" in data:
            metadata = data["metadata"]
            if metadata is None:
                metadata = {}
            if not isinstance(metadata, dict) or not all(
                isinstance(v, dict) for v in metadata.values()
            ):
                raise SimHTTPError(422, "Metadata must be an object whose values are objects")
            inc["metadata"] = copy.deepcopy(metadata)
        if "reminder_intervals" in data:
            inc["reminder_intervals"] = as_str(data["reminder_intervals"], "Reminder intervals")
        for flag in INCIDENT_FLAGS:
            if flag in data:
                inc[flag] = as_bool(data[flag], flag)
        if "scheduled_auto_transition" in data:
            inc["scheduled_auto_in_progress"] = as_bool(
                data["scheduled_auto_transition"], "scheduled_auto_transition"
            )
        if creating and "backfilled" in data:
            inc["backfilled"] = as_bool(data["backfilled"], "backfilled")
        wants_twitter = as_bool(data.get("wants_twitter_update", False), "wants_twitter_update")

        on_page = {c["id"] for c in self._page_components(page["id"])}
        ids = data.get("component_ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
                raise SimHTTPError(422, "component_ids must be a list of component ids")
            _check_known(ids, on_page)
        statuses = data.get("components")
        if statuses is not None:
            if not isinstance(statuses, dict):
                raise SimHTTPError(422, "components must map component ids to statuses")
            _check_known(list(statuses), on_page)
            for value in statuses.values():
                if value != "":
                    check_enum(value, COMPONENT_STATUSES, "Component status")
        if inc["backfilled"] and (ids or statuses):
            raise SimHTTPError(422, "Backfilled incidents cannot specify components")

        # -- valid: apply ------------------------------------------------------------------
        component_ids = list(inc["component_ids"]) if ids is None else list(dict.fromkeys(ids))
        component_ids += [c for c in statuses or {} if c not in component_ids]
        component_ids = [c for c in component_ids if c in self.components]
        inc["component_ids"] = component_ids
        before = {c: self.components[c]["status"] for c in component_ids}
        changed: list[tuple[Record, str]] = []
        for cid, value in (statuses or {}).items():
            comp = self.components[cid]
            if value and value != comp["status"]:
                changed.append((comp, comp["status"]))
                comp["status"] = value
                comp["updated_at"] = ts
        if status != old_status:
            if status == "monitoring":
                inc["monitoring_at"] = ts
            if status in ("resolved", "completed"):
                inc["resolved_at"] = ts
            elif old_status in ("resolved", "completed"):
                inc["resolved_at"] = None  # reopened
        inc["status"] = status
        computed = self._computed_impact(inc)
        if inc["impact_override"]:
            inc["impact"] = inc["impact_override"]
        elif creating:
            inc["impact"] = computed
        else:  # the incident keeps its peak impact
            inc["impact"] = worst_impact([inc["impact"], computed])

        adds_update = creating or "status" in data or body is not None
        if adds_update:
            upd = update_defaults(new_id(self._taken()), inc["id"], ts)
            upd.update(
                status=status,
                body=body or "",
                deliver_notifications=deliver,
                wants_twitter_update=wants_twitter,
                affected_components=[
                    {
                        "code": cid,
                        "name": self.components[cid]["name"],
                        "old_status": before[cid],
                        "new_status": self.components[cid]["status"],
                    }
                    for cid in component_ids
                ],
            )
            inc["incident_updates"].insert(0, upd)
        inc["updated_at"] = ts
        if creating:
            self._seq += 1
            inc["_seq"] = self._seq
        self.incidents[inc["id"]] = inc

        for comp, old in changed:
            self._emit_component(comp, old, ts)
        if adds_update and deliver:
            event = "incident.created" if creating else "incident.updated"
            self.emit(event, {**self._webhook_head(page["id"]), **self._incident_hook(inc)})
        return inc

    # -- webhooks -----------------------------------------------------------------------------

    def _webhook_head(self, page_id: str) -> Record:
        page = self.pages[page_id]
        impacts = [
            IMPACT_OF_STATUS.get(c["status"], "none") for c in self._page_components(page_id)
        ]
        impacts += [
            i["impact"]
            for i in self.incidents.values()
            if i["page_id"] == page_id
            and i["status"] in SUBSETS["unresolved"] + SUBSETS["active_maintenance"]
        ]
        indicator = worst_impact(impacts)
        return {
            "meta": {
                "unsubscribe": (
                    f"http://{page['subdomain']}.statuspage.io/?unsubscribe={self._subscriber}"
                ),
                "documentation": WEBHOOK_DOCS,
                "generated_at": now(),
            },
            "page": {
                "id": page_id,
                "status_indicator": indicator,
                "status_description": INDICATOR_TEXT[indicator],
            },
        }

    def _incident_hook(self, inc: Record) -> Record:
        return {"incident": self._render_incident(inc)}

    def _emit_component(self, comp: Record, old_status: str, ts: str) -> None:
        payload = {
            **self._webhook_head(comp["page_id"]),
            "component_update": {
                "old_status": old_status,
                "new_status": comp["status"],
                "created_at": ts,
                "component_type": "Component",
                "id": new_id(self._taken()),
                "component_id": comp["id"],
            },
            "component": copy.deepcopy(comp),
        }
        self.emit("component.updated", payload)


def _check_known(ids: list[str], known: set[str]) -> None:
    unknown = [c for c in ids if c not in known]
    if unknown:
        raise SimHTTPError(422, f"Component(s) not found on this page: {', '.join(unknown)}")


def _matches(inc: Record, q: str) -> bool:
    """``q`` searches name, status, postmortem body and the updates' bodies (case-insensitive)."""
    texts = [inc["name"], inc["status"], inc["postmortem_body"] or ""]
    texts += [u.get("body") or "" for u in inc["incident_updates"]]
    return any(q in str(t).lower() for t in texts)
