"""ServiceNow Table API simulator."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.responses import HTMLResponse, Response
from starlette.routing import compile_path

from simulators.base import (
    Handler,
    JSONResponse,
    PaceLimit,
    SimHTTPError,
    SimRequest,
    Simulator,
    WebhookTarget,
)

from . import display
from .query import QueryError, compile_query

Record = dict[str, Any]

COMMON = [
    "sys_id", "sys_created_on", "sys_updated_on", "sys_created_by", "sys_updated_by",
    "sys_mod_count",
]  # fmt: skip
TASK = [
    "number", "short_description", "description", "state", "active", "opened_at", "opened_by",
    "assigned_to", "assignment_group", "cmdb_ci", "business_service", "correlation_id",
    "correlation_display", "close_code", "close_notes", "closed_at", "closed_by", "comments",
    "work_notes", "priority", "impact", "urgency", "parent",
]  # fmt: skip
TABLES: dict[str, list[str]] = {
    "incident": COMMON + TASK + [
        "caller_id", "category", "hold_reason", "resolved_at", "resolved_by",
        "parent_incident", "reopen_count", "problem_id", "incident_state",
        # A custom choice field an admin adds for the communication stage (identified,
        # monitoring): docs/communications.md.
        "u_comms_status",
    ],
    "change_request": COMMON + TASK + ["type", "due_date", "start_date", "end_date"],
    # The problem table as shaped since the Madrid state model (New 101 ... Closed 107).
    "problem": COMMON + TASK + [
        "first_reported_by_task", "known_error", "workaround", "cause_notes", "fix_notes",
        "resolution_code", "resolved_at", "resolved_by", "duplicate_of", "related_incidents",
        "rfc", "category", "subcategory", "reopen_count", "reopened_at", "reopened_by",
    ],
    "sys_user": [
        *COMMON, "user_name", "email", "name", "first_name", "last_name", "active", "time_zone",
        "department", "manager", "title", "phone", "mobile_phone", "user_password",
    ],
    "sys_user_group": [*COMMON, "name", "description", "active", "manager"],
    "sys_user_role": [*COMMON, "name", "description"],
    "sys_user_has_role": [*COMMON, "user", "role", "state", "inherited"],
    "sys_group_has_role": [*COMMON, "group", "role", "inherits"],
    "cmn_department": [*COMMON, "name", "id", "description", "dept_head"],
    "syslog": [*COMMON, "level", "message", "source"],
    # The table dictionary: one row per table the simulator has (filled on reset).
    "sys_db_object": [*COMMON, "name", "label", "super_class"],
    # The column dictionary of the synced tables (filled on reset): name = table, element =
    # column, as on a real instance (read by `itsm-sync check`).
    "sys_dictionary": [*COMMON, "name", "element", "column_label"],
    "cmdb_ci_service": [*COMMON, "name", "short_description", "operational_status"],
    "sys_journal_field": [*COMMON, "element", "element_id", "name", "value"],
    "sys_attachment": [
        *COMMON, "file_name", "content_type", "size_bytes", "size_compressed", "compressed",
        "table_name", "table_sys_id", "hash", "state", "image_width", "image_height",
        "average_image_color", "chunk_size_bytes", "sys_tags",
    ],
    # Audit rows are written once and never updated: no sys_updated_* / sys_mod_count columns.
    "sys_audit": [
        "sys_id", "sys_created_on", "sys_created_by", "tablename", "documentkey", "fieldname",
        "oldvalue", "newvalue", "user", "reason", "record_checkpoint", "internal_checkpoint",
    ],
}  # fmt: skip
# Tables the platform writes itself; the Table API refuses writes to them (ACL).
READ_ONLY = ("sys_journal_field", "sys_audit", "sys_attachment", "sys_dictionary")
# /_sim/seed loads these, in this order (referenced records before the records that count them).
SEEDABLE = [t for t in TABLES if t not in READ_ONLY and t != "problem"]
SEEDABLE.insert(SEEDABLE.index("incident"), "problem")
# Tables audited out of the box (task tables); journal fields are in sys_journal_field instead.
AUDITED = ("incident", "change_request", "problem")
# Tables the business rule in docs/operations.md is installed on (webhook events).
NOTIFIED = ("incident", "change_request")
REFS: dict[str, str] = {
    "assigned_to": "sys_user", "opened_by": "sys_user", "closed_by": "sys_user",
    "resolved_by": "sys_user", "caller_id": "sys_user", "assignment_group": "sys_user_group",
    "cmdb_ci": "cmdb_ci_service", "business_service": "cmdb_ci_service",
    "parent_incident": "incident", "parent": "task", "problem_id": "problem",
    "first_reported_by_task": "task", "duplicate_of": "problem", "rfc": "change_request",
    "reopened_by": "sys_user", "department": "cmn_department", "dept_head": "sys_user",
    "manager": "sys_user", "user": "sys_user", "role": "sys_user_role",
    "group": "sys_user_group",
}  # fmt: skip
# Fields named like a reference field that are plain strings in their table.
NOT_REFS = {("sys_audit", "user")}
# Password fields: never returned; shown masked when set.
PASSWORDS = {"user_password"}
TASK_TABLES = ("incident", "change_request", "problem")
PREFIX = {"incident": ("INC", 10001), "change_request": ("CHG", 30001), "problem": ("PRB", 40001)}
INITIAL_STATE = {"incident": "1", "change_request": "-5", "problem": "101"}
PRIORITY = {
    ("1", "1"): "1", ("1", "2"): "2", ("2", "1"): "2", ("1", "3"): "3", ("2", "2"): "3",
    ("3", "1"): "3", ("2", "3"): "4", ("3", "2"): "4", ("3", "3"): "5",
}  # fmt: skip
JOURNAL = ("comments", "work_notes")
DATE_FIELDS = {"due_date", "start_date", "end_date"}
# States in which a task is no longer active (closed or canceled).
INACTIVE = {"incident": ("7", "8"), "change_request": ("3", "4"), "problem": ("107",)}
MAX_URL = 16384
URI_TOO_LONG = (
    "<html><head><title>414 Request-URI Too Long</title></head>"
    "<body><h1>Request-URI Too Long</h1></body></html>"
)
# The sys_id of the simulated rate limit rule (X-RateLimit-Rule names the rule's sys_id).
RATE_RULE = "5a7e11a1c0a8016400f1a2b3c4d5e6f7"
# System properties the simulator honours, with their defaults (set through /_sim/properties).
INVALID_QUERY_PROPERTY = "glide.invalid_query.returns_no_rows"
PROPERTIES: dict[str, bool] = {INVALID_QUERY_PROPERTY: True}
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "servicenow.json"
DATA_POLICY = (
    "Data Policy Exception: \n\tThe following fields are mandatory: "
    "Resolution code, Resolution notes\n"
)


# ``/_sim/clock``: a frozen time (tests that need many records stamped in one second).
_FROZEN: list[str] = []


def now() -> str:
    if _FROZEN:
        return _FROZEN[0]
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ref_table(table: str, field: str) -> str | None:
    """The table a reference field of ``table`` points at (None: not a reference)."""
    return None if (table, field) in NOT_REFS else REFS.get(field)


def is_date(field: str) -> bool:
    return field in DATE_FIELDS or field.endswith(("_at", "_on"))


def truthy(v: str | None) -> bool:
    return (v or "").strip().lower() == "true"


class ServiceNowSimulator(Simulator):
    name = "servicenow"

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str = "admin",
        seed: int = 0,
        webhook_secret_header: str = "X-ServiceNow-Secret",
    ) -> None:
        self.username = username
        self.password = password
        self.webhook_secret_header = webhook_secret_header
        self.requests_per_hour: int | None = None
        self.tokens: dict[str, str] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (client_id, user)
        # OAuth clients (System OAuth > Application Registry): client_id -> client_secret.
        self.oauth_clients: dict[str, str] = {"itsm-sync": "sim-client-secret"}
        self._window: list[float] = []
        self.pace = PaceLimit()  # requests per second over every API call (off by default)
        super().__init__(seed=seed)

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        _FROZEN.clear()
        self.tables: dict[str, dict[str, Record]] = {t: {} for t in TABLES}
        self.properties = dict(PROPERTIES)
        self.files: dict[str, str] = {}  # attachment sys_id -> content, base64
        for name in TABLES:
            sid = uuid.uuid5(uuid.NAMESPACE_URL, f"sys_db_object/{name}").hex
            label = name.replace("_", " ").title()
            row = {"sys_id": sid, "name": name, "label": label, "super_class": ""}
            if name in TASK_TABLES:
                row["super_class"] = uuid.uuid5(uuid.NAMESPACE_URL, "sys_db_object/task").hex
            self._insert("sys_db_object", row, "system", seeding=True)
        for name in TASK_TABLES:
            for column in TABLES[name]:
                sid = uuid.uuid5(uuid.NAMESPACE_URL, f"sys_dictionary/{name}/{column}").hex
                label = column.replace("_", " ").title()
                entry = {"sys_id": sid, "name": name, "element": column, "column_label": label}
                self._insert("sys_dictionary", entry, "system", seeding=True)
        self.counters = {t: n for t, (_, n) in PREFIX.items()}
        self._window = []
        self._audit_seq = 0

    def dump_state(self) -> dict[str, Any]:
        return {
            "tables": copy.deepcopy(self.tables),
            "counters": dict(self.counters),
            "files": dict(self.files),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.tables = {t: {} for t in TABLES}
        for t, rows in state.get("tables", {}).items():
            if t in self.tables:
                self.tables[t] = copy.deepcopy(dict(rows))
        self.counters.update(state.get("counters", {}))
        self.files = dict(state.get("files", {}))

    def default_seed(self) -> dict[str, Any]:
        return dict(json.loads(FIXTURE.read_text()))

    def seed(self, data: Mapping[str, Any]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for table in SEEDABLE:
            rows = data.get(table) or []
            for row in rows:
                self._insert(table, dict(row), "system", seeding=True)
            summary[table] = len(rows)
        return summary

    # -- framework hooks ----------------------------------------------------------------------

    def error_response(
        self, status: int, message: str, detail: Any = None, **extra: Any
    ) -> Response:
        headers = extra.get("headers")
        return JSONResponse(
            {"error": {"message": message, "detail": detail}, "status": "failure"},
            status_code=status,
            headers=headers,
        )

    def rate_limit_response(self, retry_after: int) -> Response:
        limit = self.requests_per_hour or 100  # a fault-injected 429: the documented example
        resp = self.error_response(
            429,
            "Rate limit exceeded",
            f"Rate limit of {limit} requests per hour for Table API exceeded",
        )
        resp.headers["Retry-After"] = str(retry_after)
        resp.headers["X-RateLimit-Limit"] = str(limit)
        resp.headers["X-RateLimit-Reset"] = str(int(time.time()) + retry_after)
        resp.headers["X-RateLimit-Rule"] = RATE_RULE
        return resp

    def extra_headers(self, req: SimRequest, response: Response) -> None:
        # A request that matches a rate limit rule gets the rule's headers on every response,
        # not only on the 429 (docs: "REST API response headers").
        if not self.requests_per_hour or req.user is None or req.path.startswith("/_sim/"):
            return
        if "x-ratelimit-limit" in response.headers:
            return
        oldest = self._window[0] if self._window else time.time()
        response.headers["X-RateLimit-Limit"] = str(self.requests_per_hour)
        response.headers["X-RateLimit-Reset"] = str(int(oldest + 3600))
        response.headers["X-RateLimit-Rule"] = RATE_RULE

    def sign_webhook(self, target: WebhookTarget, body: bytes) -> dict[str, str]:
        secret = getattr(target, "secret", None)
        return {self.webhook_secret_header: secret} if secret else {}

    def _unauth(self) -> Response:
        return self.error_response(
            401, "User Not Authenticated", "Required to provide Auth information"
        )

    def authenticate(self, req: SimRequest) -> Response | None:
        if len(req.path) + sum(len(k) + len(v) + 2 for k, v in req.query) > MAX_URL:
            # The instance's web tier refuses an over-long request line with an HTML page,
            # before the REST API sees it (PySNC sends long queries through the Batch API).
            return HTMLResponse(URI_TOO_LONG, status_code=414)
        if req.path == "/oauth_token.do":
            return None
        auth = req.headers.get("authorization", "")
        kind, _, cred = auth.partition(" ")
        user: str | None = None
        if kind.lower() == "basic":
            try:
                u, _, p = base64.b64decode(cred).decode().partition(":")
            except ValueError:
                return self._unauth()
            if u == self.username and p == self.password:
                user = u
        elif kind.lower() == "bearer":
            user = self.tokens.get(cred)
        if user is None:
            return self._unauth()
        req.user = user
        return self._rate_check()

    def _rate_check(self) -> Response | None:
        wait = self.pace.check()
        if wait is not None:
            return self.rate_limit_response(wait)
        if not self.requests_per_hour:
            return None
        t = time.time()
        self._window = [x for x in self._window if x > t - 3600]
        if len(self._window) >= self.requests_per_hour:
            return self.rate_limit_response(max(1, int(self._window[0] + 3600 - t)))
        self._window.append(t)
        return None

    # -- routes -------------------------------------------------------------------------------

    def route(self, path: str, methods: list[str]) -> Callable[[Handler], Handler]:
        register = super().route(path, methods)

        def decorator(handler: Handler) -> Handler:
            if path.startswith("/api/now") and not path.endswith("/batch"):
                regex, _, _ = compile_path(path)
                self._batchable.append(((regex, path), methods, handler))
            return register(handler)

        return decorator

    def register_routes(self) -> None:
        self._batchable: list[tuple[tuple[re.Pattern[str], str], list[str], Handler]] = []
        for prefix in ("/api/now", "/api/now/{version}"):
            self.route(prefix + "/table/{table}", ["GET", "POST"])(self.collection)
            self.route(prefix + "/table/{table}/{sys_id}", ["GET", "PATCH", "PUT", "DELETE"])(
                self.item
            )
            self.route(prefix + "/attachment", ["GET"])(self.attachments)
            self.route(prefix + "/attachment/file", ["POST"])(self.attachment_file_upload)
            self.route(prefix + "/attachment/upload", ["POST"])(self.attachment_multipart_upload)
            self.route(prefix + "/attachment/{sys_id}", ["GET", "DELETE"])(self.attachment)
            self.route(prefix + "/attachment/{sys_id}/file", ["GET"])(self.attachment_content)
            self.route(prefix + "/batch", ["POST"])(self.batch)
        self.route("/oauth_token.do", ["POST"])(self.oauth)
        self.route("/_sim/ratelimit", ["POST", "GET"])(self.ratelimit)
        self.route("/_sim/properties", ["POST", "GET"])(self.sim_properties)
        self.route("/_sim/clock", ["POST", "GET", "DELETE"])(self.sim_clock)

    # -- Attachment API -----------------------------------------------------------------------

    def _attach(
        self, req: SimRequest, table: str, sys_id: str, name: str, ctype: str, data: bytes
    ) -> Response:
        if not table or not sys_id or not name:
            raise SimHTTPError(
                400, "Missing parameters", "table_name, table_sys_id and file_name are required"
            )
        if table not in self.tables or sys_id not in self.tables[table]:
            raise SimHTTPError(400, "Invalid table_sys_id", f"No record {sys_id} in table {table}")
        rec = self._insert("sys_attachment", {}, str(req.user))
        size = str(len(data))
        rec.update(file_name=name, content_type=ctype or "application/octet-stream")
        rec.update(size_bytes=size, size_compressed=size, compressed="true", state="available")
        rec.update(table_name=table, table_sys_id=sys_id, chunk_size_bytes="700000")
        rec["hash"] = hashlib.sha256(data).hexdigest()
        self.files[rec["sys_id"]] = base64.b64encode(data).decode()
        # Location names the content's URL under the API version the upload used.
        prefix = req.path[: req.path.index("/attachment")]
        location = f"{req.base_url}{prefix}/attachment/{rec['sys_id']}/file"
        return JSONResponse(
            {"result": self._attachment_meta(req, rec)},
            status_code=201,
            headers={"Location": location},
        )

    def _attachment_meta(self, req: SimRequest, rec: Record) -> Record:
        out = dict(rec)
        out["download_link"] = f"{req.base_url}/api/now/attachment/{rec['sys_id']}/file"
        return out

    def attachment_file_upload(self, req: SimRequest) -> Response:
        """POST /attachment/file?table_name=&table_sys_id=&file_name= with the raw content."""
        return self._attach(
            req,
            req.arg("table_name") or "",
            req.arg("table_sys_id") or "",
            req.arg("file_name") or "",
            req.content_type,
            req.body,
        )

    def attachment_multipart_upload(self, req: SimRequest) -> Response:
        """POST /attachment/upload: form fields table_name, table_sys_id, then the file part."""
        fields: dict[str, str] = {}
        for part in req.multipart():
            if part.filename is None:
                fields[part.name] = part.data.decode("utf-8", "replace")
                continue
            return self._attach(
                req,
                fields.get("table_name", ""),
                fields.get("table_sys_id", ""),
                part.filename,
                fields.get("Content-Type") or part.content_type,
                part.data,
            )
        raise SimHTTPError(
            400, "Failed to create the attachment. File part might be missing in the request.", None
        )

    def _attachment_record(self, req: SimRequest) -> Record:
        rec = self.tables["sys_attachment"].get(req.path_params["sys_id"])
        if rec is None:
            raise SimHTTPError(
                404, "Record doesn't exist or ACL restricts the record retrieval", None
            )
        return rec

    def attachments(self, req: SimRequest) -> Response:
        resp = self._list(req, "sys_attachment", not_found=False)
        rows = json.loads(bytes(resp.body))["result"]
        for row in rows:
            if isinstance(row, dict) and "sys_id" in row:
                row["download_link"] = f"{req.base_url}/api/now/attachment/{row['sys_id']}/file"
        out = JSONResponse({"result": rows})
        for h in ("X-Total-Count", "Link"):
            if h in resp.headers:
                out.headers[h] = resp.headers[h]
        return out

    def attachment(self, req: SimRequest) -> Response:
        rec = self._attachment_record(req)
        if req.method == "DELETE":
            del self.tables["sys_attachment"][rec["sys_id"]]
            self.files.pop(rec["sys_id"], None)
            return Response(status_code=204)
        return JSONResponse({"result": self._attachment_meta(req, rec)})

    def attachment_content(self, req: SimRequest) -> Response:
        rec = self._attachment_record(req)
        meta = json.dumps(self._attachment_meta(req, rec))
        return Response(
            base64.b64decode(self.files.get(rec["sys_id"], "")),
            media_type=rec["content_type"],
            headers={"X-Attachment-Metadata": meta},
        )

    # -- Batch API ----------------------------------------------------------------------------

    def batch(self, req: SimRequest) -> Response:
        """POST /api/now/v1/batch: run each rest_request as this user, answer them base64'd."""
        body = self._body(req)
        requests = body.get("rest_requests")
        if "batch_request_id" not in body or not isinstance(requests, list):
            raise SimHTTPError(
                400, "Invalid batch request", "batch_request_id and rest_requests are required"
            )
        serviced = []
        for item in requests:
            if not isinstance(item, dict) or "id" not in item or "url" not in item:
                raise SimHTTPError(400, "Invalid batch request", "each request needs id and url")
            started = time.monotonic()
            resp = self._batch_one(req, item)
            headers = [{"name": k, "value": v} for k, v in resp.headers.items()]
            entry: Record = {
                "id": str(item["id"]),
                "status_code": resp.status_code,
                "status_text": HTTPStatus(resp.status_code).phrase,
                "execution_time": int((time.monotonic() - started) * 1000),
                "body": base64.b64encode(bytes(resp.body)).decode(),
            }
            if not item.get("exclude_response_headers"):
                entry["headers"] = headers
            serviced.append(entry)
        return JSONResponse(
            {
                "batch_request_id": str(body["batch_request_id"]),
                "serviced_requests": serviced,
                "unserviced_requests": [],
            }
        )

    def _batch_one(self, req: SimRequest, item: Record) -> Response:
        url = urlsplit(str(item["url"]))
        method = str(item.get("method", "GET")).upper()
        headers = {
            str(h.get("name", "")).lower(): str(h.get("value", ""))
            for h in item.get("headers") or []
            if isinstance(h, dict)
        }
        raw = item.get("body")
        try:
            content = base64.b64decode(raw) if raw else b""
        except ValueError:
            return self.error_response(400, "Invalid batch request", "body is not base64")
        for template, methods, handler in self._batchable:
            m = template[0].match(url.path)
            if m is None:
                continue
            if method not in methods:
                return self.error_response(405, "Method not Supported", method)
            query = parse_qsl(url.query, keep_blank_values=True)
            inner = SimRequest(
                method, url.path, template[1], m.groupdict(), query, headers, content, req.base_url
            )
            inner.user = req.user
            try:
                resp = handler(inner)
            except SimHTTPError as exc:
                resp = self.error_response(exc.status, exc.message, exc.detail, **exc.extra)
            self.extra_headers(inner, resp)
            return resp
        return self.error_response(400, "Requested URI does not represent any resource", None)

    def ratelimit(self, req: SimRequest) -> Response:
        if req.method == "POST":
            body = req.json() or {}
            if not isinstance(body, dict):
                return self.error_response(400, "Invalid body", "a JSON object")
            if "requests_per_hour" in body or not body.keys() & {"requests_per_second"}:
                n = body.get("requests_per_hour")
                self.requests_per_hour = int(n) if n else None
                self._window = []
            if "requests_per_second" in body:
                self.pace.configure(body["requests_per_second"], body.get("requests_burst"))
        return JSONResponse({"requests_per_hour": self.requests_per_hour, **self.pace.describe()})

    def sim_clock(self, req: SimRequest) -> Response:
        """POST ``{"now": "YYYY-MM-DD HH:MM:SS"}`` stamps every write with that time (UTC) until
        DELETE (or a reset) lets the clock run again; GET says which time is in force."""
        if req.method == "POST":
            body = req.json()
            value = body.get("now") if isinstance(body, dict) else None
            try:
                frozen = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise SimHTTPError(
                    400, "Invalid clock", "expected {'now': 'YYYY-MM-DD HH:MM:SS'}"
                ) from None
            _FROZEN[:] = [frozen.strftime("%Y-%m-%d %H:%M:%S")]
        elif req.method == "DELETE":
            _FROZEN.clear()
        return JSONResponse({"now": now(), "frozen": bool(_FROZEN)})

    def sim_properties(self, req: SimRequest) -> Response:
        """System properties: POST a JSON object of the known ones (booleans) to change them."""
        if req.method == "POST":
            body = req.json()
            if not isinstance(body, dict):
                raise SimHTTPError(400, "Invalid properties", "expected a JSON object")
            for key, value in body.items():
                if key not in PROPERTIES:
                    raise SimHTTPError(400, "Invalid properties", f"unknown property {key!r}")
                if not isinstance(value, bool):
                    raise SimHTTPError(400, "Invalid properties", f"{key} must be true or false")
            self.properties.update(body)
        return JSONResponse(self.properties)

    def oauth(self, req: SimRequest) -> Response:
        """``POST /oauth_token.do`` as ServiceNow documents it ("OAuth API request parameters",
        "OAuth API response parameters"): a form with ``grant_type``, ``client_id`` and
        ``client_secret`` (both required, for a client of the Application Registry) and the
        grant's own fields. A password grant returns an access token and a refresh token; a
        refresh-token grant "returns only an access token" (the refresh token stays valid);
        the client-credentials grant (since Washington DC) runs as the registry entry's user
        and has no refresh token. Anything refused: 401 ``{"error_description":
        "access_denied", "error": "server_error"}``."""
        form = dict(req.form())
        grant = form.get("grant_type")
        user: str | None = None
        client = form.get("client_id", "")
        if self.oauth_clients.get(client) != form.get("client_secret") or client == "":
            grant = "refused"  # not a registered client, or its secret is wrong
        if grant == "client_credentials":
            user = self.username
        elif grant == "password":
            if form.get("username") == self.username and form.get("password") == self.password:
                user = self.username
        elif grant == "refresh_token":
            held = self.refresh_tokens.get(form.get("refresh_token", ""))
            if held is not None and held[0] == client:  # a refresh token is its client's
                user = held[1]
        if user is None:
            return JSONResponse(
                {"error_description": "access_denied", "error": "server_error"}, status_code=401
            )
        access = secrets.token_urlsafe(24)
        self.tokens[access] = user
        body: dict[str, Any] = {
            "access_token": access, "scope": "useraccount", "token_type": "Bearer",
            "expires_in": 1799,
        }  # fmt: skip
        if grant == "password":
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = (client, user)
            body["refresh_token"] = refresh
        return JSONResponse(body)

    def _table(self, req: SimRequest) -> str:
        table = req.path_params["table"]
        version = req.path_params.get("version")
        if version is not None and version not in ("v1", "v2"):
            raise SimHTTPError(400, "Requested URI does not represent any resource", None)
        if table not in TABLES:
            raise SimHTTPError(400, f"Invalid table {table}", None)
        return table

    def collection(self, req: SimRequest) -> Response:
        table = self._table(req)
        if req.method == "POST":
            if table in READ_ONLY:
                raise SimHTTPError(403, "Operation Failed", "ACL Exception Insert Failed")
            body = self._input(req, table, self._body(req))
            rec = self._insert(table, body, str(req.user))
            return JSONResponse(
                {"result": self._render(req, table, rec)},
                status_code=201,
                headers={"Location": f"{req.base_url}/api/now/table/{table}/{rec['sys_id']}"},
            )
        return self._list(req, table)

    def item(self, req: SimRequest) -> Response:
        table = self._table(req)
        rec = self.tables[table].get(req.path_params["sys_id"])
        if rec is None:
            raise SimHTTPError(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        if req.method == "GET":
            return JSONResponse({"result": self._render(req, table, rec)})
        if table in READ_ONLY:
            raise SimHTTPError(403, "Operation Failed", "ACL Exception Update Failed")
        if req.method == "DELETE":
            del self.tables[table][rec["sys_id"]]
            self._count_related(table, rec, None)
            # A record's attachments go with it.
            gone = [
                a
                for a in self.tables["sys_attachment"].values()
                if a["table_sys_id"] == rec["sys_id"]
            ]
            for att in gone:
                del self.tables["sys_attachment"][att["sys_id"]]
                self.files.pop(att["sys_id"], None)
            return Response(status_code=204)
        rec = self._update(table, rec, self._input(req, table, self._body(req)), str(req.user))
        return JSONResponse({"result": self._render(req, table, rec)})

    def _body(self, req: SimRequest) -> Record:
        try:
            body = req.json()
        except SimHTTPError as exc:
            raise SimHTTPError(400, "Exception while reading request", str(exc.detail)) from exc
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise SimHTTPError(400, "Exception while reading request", "Invalid payload")
        return body

    def _input(self, req: SimRequest, table: str, body: Record) -> Record:
        """``sysparm_input_display_value=true``: choice labels, reference display values and
        dates in the user's time zone are turned into stored values, as a real instance does."""
        if not truthy(req.arg("sysparm_input_display_value")):
            return body
        tz = self._tz(str(req.user))
        out: Record = {}
        for k, v in body.items():
            text = self._str(v)
            ref = ref_table(table, k)
            if ref and text:
                text = self._lookup(ref, text)
            elif is_date(k) and text:
                text = display.local_to_utc(text, tz)
            elif text:
                text = display.choice_value(table, k, text)
            out[k] = text
        return out

    def _lookup(self, ref: str, text: str) -> str:
        """A reference given by sys_id or by the referenced record's display value."""
        for t in TASK_TABLES if ref == "task" else (ref,):
            if text in self.tables[t]:
                return text
            for row in self.tables[t].values():
                if text in (row.get("name"), row.get("number")):
                    return str(row["sys_id"])
        return text

    def _user(self, user_name: str) -> Record | None:
        for u in self.tables["sys_user"].values():
            if u["user_name"] == user_name:
                return u
        return None

    def _tz(self, user_name: str) -> str:
        return str((self._user(user_name) or {}).get("time_zone", ""))

    # -- data ---------------------------------------------------------------------------------

    @staticmethod
    def _str(v: Any) -> str:
        if isinstance(v, dict):
            v = v.get("value", "")
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    def _insert(self, table: str, body: Record, user: str, seeding: bool = False) -> Record:
        fields = TABLES[table]
        ts = now()
        rec: Record = {f: "" for f in fields}
        sys_id = self._str(body.get("sys_id"))
        if sys_id and not seeding and not re.fullmatch("[0-9a-fA-F]{32}", sys_id):
            sys_id = ""  # a real instance ignores a sys_id that is not 32 hex digits
        if sys_id and sys_id in self.tables[table] and seeding:
            del self.tables[table][sys_id]  # seeding a known sys_id replaces the record
        if sys_id and sys_id in self.tables[table]:
            raise SimHTTPError(
                403, "Operation Failed", f"Error during insert of {table} (duplicate sys_id)"
            )
        rec.update(
            sys_id=sys_id or uuid.uuid4().hex,
            sys_created_on=ts,
            sys_updated_on=ts,
            sys_created_by=user,
            sys_updated_by=user,
            sys_mod_count="0",
        )
        if table in PREFIX:
            p, _ = PREFIX[table]
            rec["number"] = f"{p}{self.counters[table]:07d}"
            self.counters[table] += 1
            rec.update(active="true", opened_at=ts, state=INITIAL_STATE[table])
            rec["opened_by"] = self._user_id(user)
            if table == "incident":
                rec.update(impact="3", urgency="3", reopen_count="0", incident_state="1")
            elif table == "problem":
                rec.update(impact="3", urgency="3", reopen_count="0", related_incidents="0")
                rec["known_error"] = "false"
            elif table == "change_request":
                rec.update(type="normal")
        elif "active" in rec:
            rec["active"] = "true"
        journal: list[tuple[str, str]] = []
        for k, v in body.items():
            if k in JOURNAL:
                if self._str(v):
                    journal.append((k, self._str(v)))
            elif k in rec and k != "sys_id" and (seeding or k not in COMMON):
                rec[k] = self._str(v)
        self._derive(table, rec, None, user)
        self._policy(table, rec, None)
        self.tables[table][rec["sys_id"]] = rec
        audited = self._audit(table, None, rec, user)
        self._count_related(table, None, rec)
        written = [self._journal(table, rec["sys_id"], el, val, user) for el, val in journal]
        if table in NOTIFIED and not seeding:
            self._notify(table, "insert", rec, written, audited)
        return rec

    def _update(self, table: str, rec: Record, body: Record, user: str) -> Record:
        old = dict(rec)
        new = dict(rec)
        journal = []
        for k, v in body.items():
            if k in JOURNAL:
                if self._str(v):
                    journal.append((k, self._str(v)))
            elif k in new and k not in COMMON and k != "number":
                new[k] = self._str(v)
        if table == "incident" and "incident_state" in body and "state" not in body:
            new["state"] = new["incident_state"]  # either of the pair may be written
        self._derive(table, new, old, user)
        self._policy(table, new, old)
        if new == old and not journal:
            return rec  # nothing changed: no sys_mod_count bump, no audit, no business rule
        new.update(
            sys_updated_on=now(),
            sys_updated_by=user,
            sys_mod_count=str(int(old["sys_mod_count"] or 0) + 1),
        )
        rec.clear()
        rec.update(new)
        audited = self._audit(table, old, rec, user)
        self._count_related(table, old, rec)
        written = [self._journal(table, rec["sys_id"], el, val, user) for el, val in journal]
        if table in NOTIFIED:
            self._notify(table, "update", rec, written, audited)
        return rec

    def _derive(self, table: str, rec: Record, old: Record | None, user: str) -> None:
        if table not in TASK_TABLES:
            return
        prev = old["state"] if old else ""
        state = rec["state"]
        if table == "incident":
            rec["incident_state"] = state
        if state != prev:
            rec["active"] = "false" if state in INACTIVE[table] else "true"
        if table == "problem":
            rec["priority"] = PRIORITY.get((rec["impact"], rec["urgency"]), rec["priority"])
            if state == prev:
                return
            if state == "106":
                rec.update(resolved_at=now(), resolved_by=self._user_id(user))
            if state == "107":
                rec.update(closed_at=now(), closed_by=self._user_id(user), active="false")
            if prev in ("106", "107") and state in ("101", "102", "103", "104"):
                rec["reopen_count"] = str(int(rec["reopen_count"] or 0) + 1)
                rec.update(active="true", reopened_at=now(), reopened_by=self._user_id(user))
                rec.update(
                    dict.fromkeys(("resolved_at", "resolved_by", "closed_at", "closed_by"), "")
                )
        elif table == "incident":
            rec["priority"] = PRIORITY.get((rec["impact"], rec["urgency"]), rec["priority"])
            if state != prev:
                if state == "6":
                    rec.update(resolved_at=now(), resolved_by=self._user_id(user))
                if state == "7":
                    rec.update(closed_at=now(), closed_by=self._user_id(user), active="false")
                if prev in ("6", "7") and state in ("1", "2", "3"):
                    rec["reopen_count"] = str(int(rec["reopen_count"] or 0) + 1)
                    rec.update(active="true", resolved_at="", closed_at="")
        elif rec["state"] in ("3", "4") and (not old or old["state"] != rec["state"]):
            rec.update(closed_at=now(), active="false")

    def _count_related(self, table: str, old: Record | None, rec: Record | None) -> None:
        """Keep ``problem.related_incidents`` equal to the incidents whose problem_id points at
        it, as the platform's business rule does (no audit row, no sys_mod_count bump)."""
        if table != "incident":
            return
        touched = {(old or {}).get("problem_id", ""), (rec or {}).get("problem_id", "")}
        for pid in touched - {""}:
            prb = self.tables["problem"].get(pid)
            if prb is not None:
                n = sum(1 for i in self.tables["incident"].values() if i["problem_id"] == pid)
                prb["related_incidents"] = str(n)

    def _user_id(self, user_name: str) -> str:
        return str((self._user(user_name) or {}).get("sys_id", ""))

    def _policy(self, table: str, rec: Record, old: Record | None) -> None:
        if table not in ("incident", "change_request"):
            return
        closing = (table == "incident" and rec["state"] in ("6", "7")) or (
            table == "change_request" and rec["state"] == "3"
        )
        changed = not old or old["state"] != rec["state"]
        if closing and changed and (not rec["close_code"] or not rec["close_notes"]):
            raise SimHTTPError(403, "Operation Failed", DATA_POLICY)

    def _journal(self, table: str, sys_id: str, element: str, value: str, user: str) -> Record:
        jid = uuid.uuid4().hex
        ts = now()
        row: Record = {
            "sys_id": jid, "sys_created_on": ts, "sys_updated_on": ts, "sys_created_by": user,
            "sys_updated_by": user, "sys_mod_count": "0", "element": element,
            "element_id": sys_id, "name": table, "value": value,
        }  # fmt: skip
        self.tables["sys_journal_field"][jid] = row
        return row

    def _audit(self, table: str, old: Record | None, rec: Record, user: str) -> list[Record]:
        """One sys_audit row per audited field this insert set or this update changed.

        As on a real instance: system fields (``sys_*``) are not audited, values are stored raw
        (reference fields as sys_ids, dates in UTC), ``record_checkpoint`` is the record's
        ``sys_mod_count`` after the change and ``internal_checkpoint`` a hex sequence.
        """
        if table not in AUDITED:
            return []
        rows: list[Record] = []
        ts = rec["sys_updated_on"]
        for field in TABLES[table]:
            if field.startswith("sys_") or field in JOURNAL:
                continue
            before = old.get(field, "") if old else ""
            after = rec.get(field, "")
            if before == after:
                continue
            self._audit_seq += 1
            aid = uuid.uuid4().hex
            self.tables["sys_audit"][aid] = {
                "sys_id": aid,
                "sys_created_on": ts,
                "sys_created_by": user,
                "tablename": table,
                "documentkey": rec["sys_id"],
                "fieldname": field,
                "oldvalue": before,
                "newvalue": after,
                "user": user,
                "reason": "",
                "record_checkpoint": rec["sys_mod_count"],
                "internal_checkpoint": f"{int(time.time() * 1000):011x}{self._audit_seq:07x}",
            }
            rows.append(self.tables["sys_audit"][aid])
        return rows

    def _notify(
        self, table: str, op: str, rec: Record, journal: list[Record], audit: list[Record]
    ) -> None:
        # What the business rule in docs/operations.md sends: the record, and the journal
        # entries (sys_journal_field rows) and field changes (sys_audit rows) this insert or
        # update wrote.
        payload = {
            "table": table,
            "operation": op,
            "sys_id": rec["sys_id"],
            "record": dict(rec),
            "journal": [dict(j) for j in journal],
            "audit": [dict(a) for a in audit],
        }
        self.emit(
            f"{table}.{op}",
            payload,
            {"X-ServiceNow-Delivery": f"{rec['sys_id']}:{rec['sys_mod_count']}"},
        )

    # -- reading ------------------------------------------------------------------------------

    def _render(self, req: SimRequest, table: str, rec: Record) -> Record:
        dv = (req.arg("sysparm_display_value") or "false").lower()
        no_link = truthy(req.arg("sysparm_exclude_reference_link"))
        wanted = [f.strip() for f in (req.arg("sysparm_fields") or "").split(",") if f.strip()]
        schema = _Schema(self, table)
        fields = [f for f in wanted if f in rec or ("." in f and schema.known(f))] or list(rec)
        tz = self._tz(str(req.user)) if dv in ("true", "all") else ""
        out: Record = {}
        for f in fields:
            # A dot-walked field (sysparm_fields=department.name) reads the referenced record.
            owner, where, last = (table, rec, f) if f in rec else schema.resolve(rec, f)
            value = "" if last in PASSWORDS else str(where.get(last, ""))
            ref = ref_table(owner, last)
            link = f"{req.base_url}/api/now/table/{ref}/{value}" if ref and value else None
            if dv not in ("true", "all"):
                out[f] = {"link": link, "value": value} if link and not no_link else value
                continue
            shown = self._display(owner, where, last, value, tz)
            item: Record = {"display_value": shown}
            if dv == "all":
                item["value"] = value
            if link and not no_link:
                item["link"] = link
            # display_value=true: plain display strings, references as {display_value, link}
            out[f] = item if dv == "all" or len(item) > 1 else shown
        return out

    def _display(self, table: str, rec: Record, field: str, value: str, tz: str) -> str:
        if field in JOURNAL and table in TASK_TABLES:
            rows = [
                j
                for j in self.tables["sys_journal_field"].values()
                if j["element_id"] == rec["sys_id"] and j["element"] == field
            ]
            entries = [
                (j["sys_created_on"], self._user_name(j["sys_created_by"]), field, j["value"])
                for j in rows
            ]
            return display.journal_text(entries, tz)
        if field in PASSWORDS:
            return "********" if rec.get(field) else ""
        if not value:
            return value
        ref = ref_table(table, field)
        if ref:
            for t in [ref] if ref in self.tables else TASK_TABLES:
                row = self.tables[t].get(value)
                if row:
                    return str(row.get("name") or row.get("number") or value)
            return value
        if is_date(field):
            return display.utc_to_local(value, tz)
        return display.choice_label(table, field, value)

    def _user_name(self, user_name: str) -> str:
        """A journal entry's author as the form shows it: the user's name."""
        return str((self._user(user_name) or {}).get("name") or user_name)

    def _list(self, req: SimRequest, table: str, not_found: bool = True) -> Response:
        fields = set(TABLES[table])
        query = req.arg("sysparm_query") or ""
        extra = [f"{k}={v}" for k, v in req.query if not k.startswith("sysparm_") and k in fields]
        if extra:
            query = "^".join([query, *extra]) if query else "^".join(extra)
        try:
            compiled = compile_query(query, _Schema(self, table))
        except QueryError as exc:
            raise SimHTTPError(400, "Invalid query", str(exc)) from exc
        order = compiled.order
        if compiled.invalid and self.properties[INVALID_QUERY_PROPERTY]:
            rows = []  # glide.invalid_query.returns_no_rows: an invalid query matches nothing
        else:
            rows = [r for r in self.tables[table].values() if compiled.match(r)]
        rows.sort(key=lambda r: r["sys_created_on"])
        for f, desc in reversed(order):
            rows.sort(key=_field_key(f), reverse=desc)
        try:
            limit = int(req.arg("sysparm_limit") or 10000)
            offset = int(req.arg("sysparm_offset") or 0)
        except ValueError as exc:
            raise SimHTTPError(400, "Invalid limit or offset", str(exc)) from exc
        limit, offset = max(limit, 1), max(offset, 0)
        total = len(rows)
        page = rows[offset : offset + limit]
        if not page and not_found and req.path_params.get("version") == "v1" and query:
            raise SimHTTPError(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        resp = JSONResponse({"result": [self._render(req, table, r) for r in page]})
        resp.headers["X-Total-Count"] = str(total)
        if not truthy(req.arg("sysparm_suppress_pagination_header")):
            resp.headers["Link"] = self._links(req, offset, limit, total)
        return resp

    def _links(self, req: SimRequest, offset: int, limit: int, total: int) -> str:
        base = [(k, v) for k, v in req.query if k not in ("sysparm_offset", "sysparm_limit")]

        def url(off: int) -> str:
            q = urlencode([*base, ("sysparm_limit", str(limit)), ("sysparm_offset", str(off))])
            return f"{req.base_url}{req.path}?{q}"

        last = max(0, ((total - 1) // limit) * limit) if total else 0
        links = [f'<{url(0)}>;rel="first"']
        if offset > 0:
            links.append(f'<{url(max(0, offset - limit))}>;rel="prev"')
        if offset + limit < total:
            links.append(f'<{url(offset + limit)}>;rel="next"')
        links.append(f'<{url(last)}>;rel="last"')
        return ",".join(links)


class _Schema:
    """What the query compiler needs to know about a table: its fields, dot-walked through
    reference fields (``caller_id.email``), and which of them hold dates."""

    def __init__(self, sim: ServiceNowSimulator, table: str) -> None:
        self.sim = sim
        self.table = table

    def _walk(self, path: str) -> tuple[list[str], str] | None:
        """The tables the last segment of ``path`` lives in, and that segment."""
        tables = [self.table]
        *hops, last = path.split(".")
        for hop in hops:
            ref = next((r for t in tables if (r := ref_table(t, hop)) and hop in TABLES[t]), None)
            if ref is None:
                return None
            tables = list(TASK_TABLES) if ref == "task" else [ref]
        if not any(last in TABLES[t] for t in tables):
            return None
        return tables, last

    def known(self, path: str) -> bool:
        return self._walk(path) is not None

    def is_date(self, path: str) -> bool:
        return is_date(path.rsplit(".", 1)[-1])

    def resolve(self, rec: Record, path: str) -> tuple[str, Record, str]:
        """(table, record, field) that a dot-walked ``path`` ends on; an empty record where a
        reference on the way is empty or dangling."""
        *hops, last = path.split(".")
        cur: Record = rec
        table = self.table
        for hop in hops:
            ref = ref_table(table, hop) or ""
            value = str(cur.get(hop, ""))
            cur, table = {}, ref
            for t in TASK_TABLES if ref == "task" else (ref,):
                if value in self.sim.tables.get(t, {}):
                    cur, table = self.sim.tables[t][value], t
                    break
        return table, cur, last

    def get(self, rec: Record, path: str) -> str:
        _, where, last = self.resolve(rec, path)
        return str(where.get(last, ""))

    def rows(self, table: str) -> list[Record]:
        return list(self.sim.tables.get(table, {}).values())

    def on(self, table: str) -> _Schema | None:
        return _Schema(self.sim, table) if table in TABLES else None


def _field_key(field: str) -> Callable[[Record], tuple[int, float, str]]:
    def key(r: Record) -> tuple[int, float, str]:
        return _sort_key(str(r.get(field, "")))

    return key


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)
