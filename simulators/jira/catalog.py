"""The Jira site's configuration: users, groups, roles, projects and components, issue types,
priorities, statuses, resolutions, link types, custom fields and the workflow.

Everything is plain JSON-able data (so it snapshots with the issues). Lookups accept what the
REST API accepts (``{"id"}``, ``{"name"}``, ``{"key"}``, ``{"accountId"}`` or a bare string),
and the ``render_*`` helpers give the objects exactly as Jira embeds them.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from .times import zone

Obj = dict[str, Any]

STATUS_CATEGORIES: dict[str, Obj] = {
    "undefined": {"id": 1, "key": "undefined", "colorName": "medium-gray", "name": "No Category"},
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
    "indeterminate": {
        "id": 4,
        "key": "indeterminate",
        "colorName": "yellow",
        "name": "In Progress",
    },
}

# Custom field types: our short name -> (schema type, custom type key, items).
CUSTOM_TYPES: dict[str, tuple[str, str, str | None]] = {
    "string": ("string", "com.atlassian.jira.plugin.system.customfieldtypes:textfield", None),
    "textarea": ("string", "com.atlassian.jira.plugin.system.customfieldtypes:textarea", None),
    "number": ("number", "com.atlassian.jira.plugin.system.customfieldtypes:float", None),
    "datetime": ("datetime", "com.atlassian.jira.plugin.system.customfieldtypes:datetime", None),
    "date": ("date", "com.atlassian.jira.plugin.system.customfieldtypes:datepicker", None),
    "option": ("option", "com.atlassian.jira.plugin.system.customfieldtypes:select", None),
    "options": ("array", "com.atlassian.jira.plugin.system.customfieldtypes:multiselect", "option"),
    "labels": ("array", "com.atlassian.jira.plugin.system.customfieldtypes:labels", "string"),
    "user": ("user", "com.atlassian.jira.plugin.system.customfieldtypes:userpicker", None),
    "url": ("string", "com.atlassian.jira.plugin.system.customfieldtypes:url", None),
}
CUSTOM_CLAUSE_SUFFIX = {
    "string": "Short text",
    "textarea": "Paragraph",
    "number": "Number",
    "datetime": "Time stamp",
    "date": "Date",
    "option": "Dropdown",
    "options": "Select List (multiple choices)",
    "labels": "Labels",
    "user": "User Picker (single user)",
    "url": "URL Field",
}


@dataclass
class Ctx:
    """Where and how a response is rendered: the simulator's base URL as the client reached it,
    the REST version (``"2"`` or ``"3"``), the requesting user's time zone and account id."""

    base: str
    version: str
    tz: tzinfo
    user: str | None = None  # the requesting user's accountId

    @property
    def api(self) -> str:
        return f"{self.base}/rest/api/{self.version}"


def _ident(value: Any, *keys: str) -> str | None:
    """The identifying string of a reference given as an object or a bare string/number."""
    if isinstance(value, Mapping):
        for key in keys:
            v = value.get(key)
            if v is not None and v != "":
                return str(v)
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    return None


def account_id_for(email: str) -> str:
    """A stable Cloud-style account id for a user known only by email."""
    return "712020:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + email.lower()))


class Catalog:
    """The site configuration; ``data`` is the JSON-able state."""

    def __init__(self) -> None:
        self.data: Obj = self.empty()

    @staticmethod
    def empty() -> Obj:
        return {
            "config": {"timeZone": "UTC", "serverTitle": "Jira"},
            "users": {},
            "groups": [],
            "roles": [],
            "priorities": [],
            "issuetypes": [],
            "statuses": [],
            "resolutions": [],
            "linktypes": [],
            "fields": [],
            "projects": [],
            "workflow": {"initial": None, "transitions": []},
        }

    def dump(self) -> Obj:
        return copy.deepcopy(self.data)

    def load(self, data: Mapping[str, Any]) -> None:
        base = self.empty()
        base.update(copy.deepcopy(dict(data)))
        self.data = base

    # -- seeding ------------------------------------------------------------------------------

    def seed(self, data: Mapping[str, Any]) -> dict[str, int]:
        """Upsert configuration from a fixture; returns counts per kind."""
        d = self.data
        summary: dict[str, int] = {}
        if "config" in data:
            d["config"].update(dict(data["config"]))
        for user in data.get("users") or []:
            u = self._user_from(user)
            d["users"][u["accountId"]] = u
        summary["users"] = len(data.get("users") or [])
        for kind in ("groups", "roles"):
            for item in data.get(kind) or []:
                obj = {"name": item} if isinstance(item, str) else dict(item)
                if kind == "groups":
                    obj.setdefault("groupId", str(uuid.uuid5(uuid.NAMESPACE_DNS, obj["name"])))
                else:
                    obj.setdefault("id", self._next_id(d["roles"], 10002))
                    obj["id"] = int(obj["id"])
                self._upsert(d[kind], obj, key="name")
            summary[kind] = len(data.get(kind) or [])
        for kind in ("priorities", "issuetypes", "statuses", "resolutions", "linktypes"):
            for item in data.get(kind) or []:
                obj = dict(item)
                obj["id"] = str(obj["id"])
                if kind == "statuses":
                    obj.setdefault("category", "new")
                    obj.setdefault("description", "")
                if kind == "issuetypes":
                    obj.setdefault("subtask", False)
                    obj.setdefault("hierarchyLevel", -1 if obj["subtask"] else 0)
                    obj.setdefault("description", "")
                    obj.setdefault("avatarId", 10300)
                self._upsert(d[kind], obj)
            summary[kind] = len(data.get(kind) or [])
        for item in data.get("fields") or []:
            obj = dict(item)
            if obj.get("type") not in CUSTOM_TYPES:
                raise ValueError(f"custom field {obj.get('id')}: unknown type {obj.get('type')}")
            opts = []
            for i, opt in enumerate(obj.get("options") or []):
                o = {"value": opt} if isinstance(opt, str) else dict(opt)
                o.setdefault("id", str(int(obj["id"].split("_")[-1]) * 10 + i))
                o["id"] = str(o["id"])
                opts.append(o)
            obj["options"] = opts
            self._upsert(d["fields"], obj)
        summary["fields"] = len(data.get("fields") or [])
        for item in data.get("projects") or []:
            obj = dict(item)
            obj["id"] = str(obj["id"])
            obj.setdefault("projectTypeKey", "software")
            obj.setdefault("description", "")
            obj.setdefault("issuetypes", [t["id"] for t in d["issuetypes"]])
            obj["issuetypes"] = [str(t) for t in obj["issuetypes"]]
            obj["components"] = [
                {"description": "", **c, "id": str(c["id"])} for c in obj.get("components") or []
            ]
            if obj.get("lead") and "@" in str(obj["lead"]):
                lead = self.user_by(obj["lead"])
                obj["lead"] = lead["accountId"] if lead else None
            self._upsert(d["projects"], obj)
        summary["projects"] = len(data.get("projects") or [])
        if "workflow" in data:
            wf = dict(data["workflow"])
            transitions = []
            for t in wf.get("transitions") or []:
                tr = dict(t)
                tr["id"] = str(tr["id"])
                tr["to"] = self._status_id(tr["to"])
                tr["from"] = [self._status_id(s) for s in tr.get("from") or []]
                tr.setdefault("screen", [])
                tr.setdefault("required", [])
                tr.setdefault("event", "issue_generic")
                transitions.append(tr)
            d["workflow"] = {
                "initial": self._status_id(wf.get("initial") or transitions[0]["from"][0]),
                "transitions": transitions,
            }
        return summary

    def _status_id(self, ref: Any) -> str:
        status = self.find("statuses", ref)
        if status is None:
            raise ValueError(f"workflow refers to unknown status {ref!r}")
        return str(status["id"])

    @staticmethod
    def _upsert(items: list[Obj], obj: Obj, key: str = "id") -> None:
        for i, existing in enumerate(items):
            if existing[key] == obj[key]:
                items[i] = {**existing, **obj}
                return
        items.append(obj)

    @staticmethod
    def _next_id(items: list[Obj], floor: int = 10000) -> str:
        ids = [int(i["id"]) for i in items if str(i["id"]).isdigit()]
        return str(max([floor - 1, *ids]) + 1)

    def _user_from(self, raw: Mapping[str, Any]) -> Obj:
        email = raw.get("emailAddress") or raw.get("email") or ""
        account_id = raw.get("accountId") or (account_id_for(email) if email else None)
        if not account_id:
            raise ValueError(f"user needs accountId or emailAddress: {dict(raw)}")
        name = raw.get("displayName") or (email.split("@")[0] if email else account_id)
        user: Obj = {
            "accountId": str(account_id),
            "emailAddress": email,
            "displayName": name,
            "active": bool(raw.get("active", True)),
            "accountType": raw.get("accountType", "atlassian"),
            "timeZone": raw.get("timeZone") or self.data["config"].get("timeZone", "UTC"),
            "locale": raw.get("locale", "en_US"),
            "groups": list(raw.get("groups") or ["jira-software-users"]),
        }
        if raw.get("apiToken"):
            user["apiToken"] = str(raw["apiToken"])
        return user

    # -- find-or-create, for seeding recorded payloads ----------------------------------------

    def ensure_user(self, raw: Any) -> str | None:
        if raw is None:
            return None
        found = self.user_by(raw)
        if found:
            return str(found["accountId"])
        if not isinstance(raw, Mapping):
            raw = {"emailAddress": raw} if "@" in str(raw) else {"accountId": raw}
        user = self._user_from(raw)
        self.data["users"][user["accountId"]] = user
        return str(user["accountId"])

    def ensure(self, kind: str, raw: Any) -> Obj | None:
        """Find by name (then id); create from a named object if missing, keeping its id
        when that id is free."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping) or not raw.get("name"):
            return self.find(kind, raw)
        found = self.find(kind, {"name": raw["name"]})
        if found is not None:
            return found
        items = self.data[kind]
        rid = str(raw.get("id") or "")
        if not rid or any(i["id"] == rid for i in items):
            rid = self._next_id(items)
        obj: Obj = {
            "id": rid,
            "name": str(raw["name"]),
            "description": raw.get("description") or "",
        }
        if kind == "statuses":
            cat = (raw.get("statusCategory") or {}).get("key", "new")
            obj["category"] = cat if cat in STATUS_CATEGORIES else "new"
        elif kind == "issuetypes":
            obj.update(
                subtask=bool(raw.get("subtask", False)),
                hierarchyLevel=int(raw.get("hierarchyLevel", 0)),
                avatarId=int(raw.get("avatarId", 10300)),
            )
        elif kind == "linktypes":
            obj.update(inward=str(raw.get("inward", "")), outward=str(raw.get("outward", "")))
        items.append(obj)
        return obj

    def ensure_project(self, raw: Any) -> Obj | None:
        found = self.project(raw)
        if found is not None or not isinstance(raw, Mapping) or not raw.get("key"):
            return found
        items = self.data["projects"]
        pid = str(raw.get("id") or "")
        if not pid or any(p["id"] == pid for p in items):
            pid = self._next_id(items)
        obj: Obj = {
            "id": pid,
            "key": str(raw["key"]).upper(),
            "name": raw.get("name") or raw["key"],
            "description": "",
            "projectTypeKey": raw.get("projectTypeKey", "software"),
            "issuetypes": [t["id"] for t in self.data["issuetypes"]],
            "components": [],
            "lead": None,
        }
        category = raw.get("projectCategory")
        if isinstance(category, Mapping) and category.get("name"):
            obj["projectCategory"] = {
                "id": str(category.get("id") or "10000"),
                "name": str(category["name"]),
                "description": str(category.get("description") or ""),
            }
        items.append(obj)
        return obj

    def ensure_component(self, project: Obj, raw: Any) -> str | None:
        comp = self.component(project, raw)
        if comp is not None:
            return str(comp["id"])
        name = _ident(raw, "name")
        if not name:
            return None
        all_ids = [c for p in self.data["projects"] for c in p["components"]]
        cid = self._next_id(all_ids)
        project["components"].append({"id": cid, "name": name, "description": ""})
        return cid

    # -- lookups ------------------------------------------------------------------------------

    @property
    def config(self) -> Obj:
        return dict(self.data["config"])

    def find(self, kind: str, ref: Any) -> Obj | None:
        """A priority/issuetype/status/resolution/linktype by ``{"id"}``, ``{"name"}`` or a bare
        id or name (names are case-insensitive)."""
        items: list[Obj] = self.data[kind]
        if isinstance(ref, Mapping):
            rid, name = _ident(ref, "id"), _ident(ref, "name")
        else:
            rid = name = _ident(ref)
        if rid is not None:
            for item in items:
                if item["id"] == rid:
                    return item
        if name is not None:
            for item in items:
                if item["name"].lower() == name.lower():
                    return item
        return None

    def get(self, kind: str, item_id: Any) -> Obj | None:
        for item in self.data[kind]:
            if item["id"] == str(item_id):
                return item
        return None

    def project(self, ref: Any) -> Obj | None:
        """By ``{"id"}``, ``{"key"}``, or a bare id/key (keys are case-insensitive)."""
        ident = _ident(ref, "id", "key", "name") if isinstance(ref, Mapping) else _ident(ref)
        if ident is None:
            return None
        for p in self.data["projects"]:
            if p["id"] == ident or p["key"].lower() == ident.lower():
                return p
        return None

    def project_by_name(self, name: str) -> Obj | None:
        for p in self.data["projects"]:
            if p["name"].lower() == name.lower():
                return p
        return None

    def component(self, project: Obj, ref: Any) -> Obj | None:
        if isinstance(ref, Mapping):
            rid, name = _ident(ref, "id"), _ident(ref, "name")
        else:
            rid = name = _ident(ref)
        for c in project["components"]:
            if (rid is not None and c["id"] == rid) or (
                name is not None and c["name"].lower() == name.lower()
            ):
                return c
        return None

    def component_anywhere(self, ref: str) -> list[str]:
        out = []
        for p in self.data["projects"]:
            c = self.component(p, ref)
            if c is not None:
                out.append(str(c["id"]))
        return out

    def component_by_id(self, cid: str) -> tuple[Obj, Obj] | None:
        for p in self.data["projects"]:
            for c in p["components"]:
                if c["id"] == cid:
                    return p, c
        return None

    def user(self, account_id: str | None) -> Obj | None:
        if account_id is None:
            return None
        u = self.data["users"].get(account_id)
        return dict(u) if u is not None else None

    def user_by(self, ref: Any) -> Obj | None:
        """By ``{"accountId"}`` (``{"id"}``, ``{"name"}``, ``{"emailAddress"}`` also accepted),
        or a bare accountId, email address or display name."""
        if isinstance(ref, Mapping):
            ident = _ident(ref, "accountId", "id", "emailAddress", "name")
        else:
            ident = _ident(ref)
        if ident is None:
            return None
        users: dict[str, Obj] = self.data["users"]
        if ident in users:
            return users[ident]
        low = ident.lower()
        for u in users.values():
            if u["emailAddress"].lower() == low:
                return u
        for u in users.values():
            if u["displayName"].lower() == low:
                return u
        return None

    def custom(self, field_id: str) -> Obj | None:
        for f in self.data["fields"]:
            if f["id"] == field_id:
                return f
        return None

    def custom_by_clause(self, name: str) -> Obj | None:
        low = name.lower()
        for f in self.data["fields"]:
            number = f["id"].split("_")[-1]
            names = {
                f"cf[{number}]",
                f["name"].lower(),
                f["id"].lower(),
                f"{f['name']}[{CUSTOM_CLAUSE_SUFFIX[f['type']]}]".lower(),
            }
            if low in names:
                return f
        return None

    def option(self, field: Obj, ref: Any) -> Obj | None:
        if isinstance(ref, Mapping):
            rid, value = _ident(ref, "id"), _ident(ref, "value", "name")
        else:
            rid = value = _ident(ref)
        for o in field["options"]:
            if (rid is not None and o["id"] == rid) or (
                value is not None and o["value"].lower() == value.lower()
            ):
                return o
        return None

    def role(self, name: str) -> Obj | None:
        for r in self.data["roles"]:
            if r["name"].lower() == name.lower():
                return r
        return None

    def group(self, name: str) -> Obj | None:
        for g in self.data["groups"]:
            if g["name"].lower() == name.lower():
                return g
        return None

    def status_category(self, status_id: str) -> Obj:
        status = self.get("statuses", status_id)
        return STATUS_CATEGORIES[status["category"] if status else "undefined"]

    def priority_rank(self, priority_id: str | None) -> int | None:
        """0 for the highest priority (first in the list)."""
        for i, p in enumerate(self.data["priorities"]):
            if p["id"] == priority_id:
                return i
        return None

    def user_tz(self, account_id: str | None) -> tzinfo:
        u = self.user(account_id)
        name = (u or {}).get("timeZone") or self.data["config"].get("timeZone", "UTC")
        return zone(str(name))

    def transitions_from(self, status_id: str) -> list[Obj]:
        return [
            t
            for t in self.data["workflow"]["transitions"]
            if not t["from"] or status_id in t["from"]
        ]

    # -- rendering ----------------------------------------------------------------------------

    def render_user(self, account_id: str | None, ctx: Ctx, *, full: bool = False) -> Obj | None:
        u = self.user(account_id)
        if u is None:
            if account_id is None:
                return None
            u = {
                "accountId": account_id,
                "emailAddress": "",
                "displayName": account_id,
                "active": False,
                "accountType": "unknown",
                "timeZone": "UTC",
            }
        out: Obj = {
            "self": f"{ctx.api}/user?accountId={u['accountId']}",
            "accountId": u["accountId"],
            "emailAddress": u["emailAddress"],
            "avatarUrls": avatar_urls(u["displayName"], u["accountId"]),
            "displayName": u["displayName"],
            "active": u["active"],
            "timeZone": u["timeZone"],
            "accountType": u["accountType"],
        }
        if full:
            out["locale"] = u.get("locale", "en_US")
        return out

    def render_priority(
        self, priority_id: str | None, ctx: Ctx, *, full: bool = False
    ) -> Obj | None:
        p = self.get("priorities", priority_id) if priority_id else None
        if p is None:
            return None
        out: Obj = {
            "self": f"{ctx.api}/priority/{p['id']}",
            "iconUrl": f"{ctx.base}/images/icons/priorities/{p['name'].lower()}.svg",
            "name": p["name"],
            "id": p["id"],
        }
        if full:
            out.update(
                statusColor=p.get("statusColor", "#4a6785"),
                description=p.get("description", ""),
                isDefault=bool(p.get("isDefault", False)),
            )
        return out

    def render_status(self, status_id: str | None, ctx: Ctx) -> Obj | None:
        s = self.get("statuses", status_id) if status_id else None
        if s is None:
            return None
        cat = STATUS_CATEGORIES[s["category"]]
        return {
            "self": f"{ctx.api}/status/{s['id']}",
            "description": s.get("description", ""),
            "iconUrl": f"{ctx.base}/",
            "name": s["name"],
            "id": s["id"],
            "statusCategory": {"self": f"{ctx.api}/statuscategory/{cat['id']}", **cat},
        }

    def render_issuetype(self, type_id: str | None, ctx: Ctx) -> Obj | None:
        t = self.get("issuetypes", type_id) if type_id else None
        if t is None:
            return None
        return {
            "self": f"{ctx.api}/issuetype/{t['id']}",
            "id": t["id"],
            "description": t.get("description", ""),
            "iconUrl": f"{ctx.api}/universal_avatar/view/type/issuetype/avatar/"
            f"{t.get('avatarId', 10300)}?size=medium",
            "name": t["name"],
            "subtask": bool(t.get("subtask", False)),
            "avatarId": int(t.get("avatarId", 10300)),
            "hierarchyLevel": int(t.get("hierarchyLevel", 0)),
        }

    def render_resolution(self, resolution_id: str | None, ctx: Ctx) -> Obj | None:
        r = self.get("resolutions", resolution_id) if resolution_id else None
        if r is None:
            return None
        return {
            "self": f"{ctx.api}/resolution/{r['id']}",
            "id": r["id"],
            "description": r.get("description", ""),
            "name": r["name"],
        }

    def render_project(self, project: Obj, ctx: Ctx) -> Obj:
        out: Obj = {
            "self": f"{ctx.api}/project/{project['id']}",
            "id": project["id"],
            "key": project["key"],
            "name": project["name"],
            "projectTypeKey": project.get("projectTypeKey", "software"),
            "simplified": False,
            "avatarUrls": project_avatar_urls(ctx),
        }
        category = project.get("projectCategory")
        if category:
            out["projectCategory"] = {
                "self": f"{ctx.api}/projectCategory/{category['id']}",
                **category,
            }
        return out

    def render_component(self, cid: str, ctx: Ctx, *, full: bool = False) -> Obj | None:
        found = self.component_by_id(cid)
        if found is None:
            return None
        project, c = found
        out: Obj = {"self": f"{ctx.api}/component/{c['id']}", "id": c["id"], "name": c["name"]}
        if c.get("description"):
            out["description"] = c["description"]
        if full:
            out.update(
                description=c.get("description", ""),
                assigneeType=c.get("assigneeType", "PROJECT_DEFAULT"),
                realAssigneeType="PROJECT_DEFAULT",
                isAssigneeTypeValid=False,
                project=project["key"],
                projectId=int(project["id"]),
            )
        return out

    def render_linktype(self, lt: Obj, ctx: Ctx) -> Obj:
        return {
            "id": lt["id"],
            "name": lt["name"],
            "inward": lt["inward"],
            "outward": lt["outward"],
            "self": f"{ctx.api}/issueLinkType/{lt['id']}",
        }


def avatar_urls(display_name: str, account_id: str) -> dict[str, str]:
    initials = "".join(w[0] for w in display_name.split()[:2] if w).upper() or "U"
    n = int(hashlib.sha1(account_id.encode()).hexdigest(), 16) % 6
    base = "https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/initials"
    return {f"{s}x{s}": f"{base}/{initials}-{n}.png?size={s}&s={s}" for s in (48, 24, 16, 32)}


def project_avatar_urls(ctx: Ctx) -> dict[str, str]:
    base = f"{ctx.api}/universal_avatar/view/type/project/avatar/10400"
    return {
        "48x48": base,
        "24x24": base + "?size=small",
        "16x16": base + "?size=xsmall",
        "32x32": base + "?size=medium",
    }
