"""The simulator's issues as JQL fields: what each clause name means, how literals resolve
(with Jira's "does not exist" messages) and how each field sorts. Used by
:func:`simulators.jira.jql.compile_query`."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import adf, jql, times
from .catalog import STATUS_CATEGORIES, Catalog, Ctx

Obj = dict[str, Any]
KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-(\d+)$")


def key_sort(issue: Obj) -> Any:
    """Issue keys order by project key, then number (OPS-9 < OPS-10)."""
    m = KEY_RE.match(issue["key"])
    return (m.group(1), int(m.group(2))) if m else (issue["key"], 0)


class JqlSchema:
    """The simulator's issues as JQL fields (see :mod:`simulators.jira.jql`)."""

    def __init__(self, catalog: Catalog, find_issue: Callable[[str], Obj | None], ctx: Ctx) -> None:
        self.cat = catalog
        self.find_issue = find_issue
        self.ctx = ctx
        self.now = times.now_ms()

    key_sort = staticmethod(key_sort)

    def _missing(self, text: str, name: str) -> jql.JqlError:
        return jql.JqlError([f"The value '{text}' does not exist for the field '{name}'."])

    def field(self, name: str) -> jql.FieldDef | None:
        low = name.lower()
        cat = self.cat

        def fv(fid: str) -> Callable[[Obj], list[Any]]:
            def values(issue: Obj) -> list[Any]:
                v = issue["fields"].get(fid)
                if v is None or v == "":
                    return []
                return list(v) if isinstance(v, list) else [v]

            return values

        def lookup(kind: str, fid: str) -> Callable[[jql.Operand, str], list[Any]]:
            def resolve(op: jql.Operand, clause: str) -> list[Any]:
                if op.kind == "function":
                    raise self._function_error(op)
                found = cat.find(kind, op.text)
                if found is None:
                    if fid == "resolution" and op.text.lower() == "unresolved":
                        return [jql.EMPTY]
                    raise self._missing(op.text, clause)
                return [found["id"]]

            return resolve

        if low in ("project",):

            def project_resolve(op: jql.Operand, clause: str) -> list[Any]:
                if op.kind == "function":
                    raise self._function_error(op)
                p = cat.project(op.text) or cat.project_by_name(op.text)
                if p is None:
                    raise self._missing(op.text, clause)
                return [p["id"]]

            return jql.FieldDef(
                name,
                "constant",
                lambda i: [i["projectId"]],
                project_resolve,
                lambda i: (cat.project({"id": i["projectId"]}) or {}).get("key"),
            )
        if low in ("key", "issuekey", "issue", "id"):
            return jql.FieldDef(
                name, "key", lambda i: [self.key_sort(i)], self._key_resolve, self.key_sort
            )
        if low == "status":
            order = {s["id"]: n for n, s in enumerate(cat.data["statuses"])}
            return jql.FieldDef(
                name,
                "constant",
                fv("status"),
                lookup("statuses", "status"),
                lambda i: order.get(i["fields"]["status"], 999),
            )
        if low in ("statuscategory", "category"):

            def cat_resolve(op: jql.Operand, clause: str) -> list[Any]:
                for c in STATUS_CATEGORIES.values():
                    if op.text.lower() in (c["key"], c["name"].lower(), str(c["id"])):
                        return [c["key"]]
                raise self._missing(op.text, clause)

            return jql.FieldDef(
                name,
                "constant",
                lambda i: [cat.status_category(i["fields"]["status"])["key"]],
                cat_resolve,
            )
        if low == "priority":

            def rank(issue: Obj) -> list[Any]:
                r = cat.priority_rank(issue["fields"].get("priority"))
                return [] if r is None else [-r]

            def prio_resolve(op: jql.Operand, clause: str) -> list[Any]:
                found = cat.find("priorities", op.text) if op.kind != "function" else None
                if found is None:
                    raise self._missing(op.text, clause)
                return [-(cat.priority_rank(found["id"]) or 0)]

            return jql.FieldDef(
                name, "ordinal", rank, prio_resolve, lambda i: (rank(i) or [None])[0]
            )
        if low in ("issuetype", "type"):
            return jql.FieldDef(
                name,
                "constant",
                fv("issuetype"),
                lookup("issuetypes", "issuetype"),
                lambda i: i["fields"]["issuetype"],
            )
        if low == "resolution":
            return jql.FieldDef(
                name,
                "constant",
                fv("resolution"),
                lookup("resolutions", "resolution"),
                lambda i: i["fields"].get("resolution"),
            )
        if low in ("assignee", "reporter", "creator"):
            fid = low
            return jql.FieldDef(
                name,
                "constant",
                fv(fid),
                self._user_resolve,
                lambda i: self._user_sort(i["fields"].get(fid)),
            )
        if low == "labels":
            return jql.FieldDef(name, "multi", fv("labels"), lambda op, c: [op.text])
        if low in ("component", "components"):

            def comp_resolve(op: jql.Operand, clause: str) -> list[Any]:
                ids = cat.component_anywhere(op.text)
                if not ids:
                    raise self._missing(op.text, clause)
                return ids

            return jql.FieldDef(name, "multi", fv("components"), comp_resolve)
        if low in ("summary", "description", "environment"):
            text_sort = (
                (lambda i: str(i["fields"]["summary"]).lower()) if low == "summary" else None
            )
            return jql.FieldDef(name, "text", lambda i: self._texts(i, [low]), None, text_sort)
        if low == "comment":
            return jql.FieldDef(
                name, "text", lambda i: [adf.to_text(c["body"]) for c in i["comments"]]
            )
        if low == "text":

            def all_text(issue: Obj) -> list[Any]:
                cfs = [
                    cf["id"] for cf in cat.data["fields"] if cf["type"] in ("string", "textarea")
                ]
                return self._texts(issue, ["summary", "description", "environment", *cfs]) + [
                    adf.to_text(c["body"]) for c in issue["comments"]
                ]

            return jql.FieldDef(name, "text", all_text)
        dates = {
            "created": "created",
            "createddate": "created",
            "updated": "updated",
            "updateddate": "updated",
            "resolved": "resolutiondate",
            "resolutiondate": "resolutiondate",
            "statuscategorychangeddate": "statuscategorychangedate",
        }
        if low in dates:
            fid = dates[low]
            return jql.FieldDef(
                name, "date", fv(fid), self._date_resolve, lambda i: i["fields"].get(fid)
            )
        if low in ("due", "duedate"):
            return jql.FieldDef(
                name,
                "date",
                self._due_values,
                self._date_resolve,
                lambda i: i["fields"].get("duedate"),
            )
        m = re.match(r"^issue\.property\[([^\]]+)\](?:\.(.+))?$", name, re.IGNORECASE)
        if m:
            return self._property_field(name, m.group(1), m.group(2))
        cf = cat.custom_by_clause(name)
        if cf is not None:
            return self._custom_field(name, cf)
        return None

    def _texts(self, issue: Obj, fids: list[str]) -> list[Any]:
        out = []
        for fid in fids:
            v = issue["fields"].get(fid)
            if v:
                out.append(adf.to_text(v) if not isinstance(v, str) else v)
        return out

    def _due_values(self, issue: Obj) -> list[Any]:
        due = issue["fields"].get("duedate")
        if not due:
            return []
        return [jql.parse_date_literal(due, self.ctx.tz, self.now, "due")]

    def _function_error(self, op: jql.Operand) -> jql.JqlError:
        return jql.JqlError([f"Unable to find JQL function '{op.text}({', '.join(op.args)})'."])

    def _date_resolve(self, op: jql.Operand, clause: str) -> list[Any]:
        if op.kind == "function":
            if op.text.lower() not in jql.DATE_FUNCTIONS:
                raise self._function_error(op)
            try:
                return [jql.date_function(op.text, op.args, self.ctx.tz, self.now)]
            except (OverflowError, ValueError) as exc:
                raise jql.JqlError([f"Invalid argument for JQL function '{op.text}'."]) from exc
        return [jql.parse_date_literal(op.text, self.ctx.tz, self.now, clause)]

    def _user_resolve(self, op: jql.Operand, clause: str) -> list[Any]:
        if op.kind == "function":
            if op.text.lower() == "currentuser":
                return [self.ctx.user]
            raise self._function_error(op)
        user = self.cat.user_by(op.text)
        if user is None:
            raise self._missing(op.text, clause)
        return [user["accountId"]]

    def _user_sort(self, account: str | None) -> str | None:
        u = self.cat.user(account)
        return str(u["displayName"]).lower() if u else None

    def _key_resolve(self, op: jql.Operand, clause: str) -> list[Any]:
        if op.kind == "function":
            raise self._function_error(op)
        issue = self.find_issue(op.text)
        if issue is not None:
            return [self.key_sort(issue)]
        if op.text.isdigit():  # an issue id that does not exist matches nothing
            return [("", -1)]
        raise jql.JqlError([f"An issue with key '{op.text}' does not exist for field '{clause}'."])

    def _property_field(self, name: str, key: str, path: str | None) -> jql.FieldDef:
        def values(issue: Obj) -> list[Any]:
            if key not in issue["properties"]:
                return []
            v: Any = issue["properties"][key]
            for part in (path or "").split(".") if path else []:
                if not isinstance(v, Mapping) or part not in v:
                    return []
                v = v[part]
            items = v if isinstance(v, list) else [v]
            return [_prop_value(x) for x in items if x is not None]

        def resolve(op: jql.Operand, clause: str) -> list[Any]:
            if op.kind == "function":
                raise self._function_error(op)
            out: list[Any] = [op.text]
            with contextlib.suppress(ValueError):
                out.append(float(op.text))
            if op.text.lower() in ("true", "false"):
                out.append(op.text.lower())
            return out

        return jql.FieldDef(name, "property", values, resolve, lambda i: (values(i) or [None])[0])

    def _custom_field(self, name: str, cf: Obj) -> jql.FieldDef:
        fid, kind = cf["id"], cf["type"]

        def values(issue: Obj) -> list[Any]:
            v = issue["fields"].get(fid)
            if v is None or v == "" or v == []:
                return []
            if kind == "textarea":
                return [adf.to_text(v)]
            if kind == "date":
                return [jql.parse_date_literal(v, self.ctx.tz, self.now, name)]
            return list(v) if isinstance(v, list) else [v]

        def sort(issue: Obj) -> Any:
            got = values(issue)
            if not got:
                return None
            if kind in ("option", "options"):
                opt = self.cat.option(cf, {"id": got[0]})
                return opt["value"].lower() if opt else None
            return got[0].lower() if isinstance(got[0], str) else got[0]

        if kind in ("string", "textarea", "url"):
            return jql.FieldDef(name, "text", values, None, sort)
        if kind in ("datetime", "date"):
            return jql.FieldDef(name, "date", values, self._date_resolve, sort)
        if kind == "number":

            def num(op: jql.Operand, clause: str) -> list[Any]:
                try:
                    return [float(op.text)]
                except ValueError as exc:
                    raise jql.JqlError(
                        [f"The value '{op.text}' is not a valid number for field '{clause}'."]
                    ) from exc

            return jql.FieldDef(name, "number", values, num, sort)
        if kind in ("option", "options"):

            def opt_resolve(op: jql.Operand, clause: str) -> list[Any]:
                opt = self.cat.option(cf, op.text) if op.kind != "function" else None
                if opt is None:
                    raise jql.JqlError(
                        [f"The option '{op.text}' for field '{cf['name']}' does not exist."]
                    )
                return [opt["id"]]

            return jql.FieldDef(
                name, "constant" if kind == "option" else "multi", values, opt_resolve, sort
            )
        if kind == "user":
            return jql.FieldDef(name, "constant", values, self._user_resolve, sort)
        return jql.FieldDef(name, "multi", values, lambda op, c: [op.text], sort)


def _prop_value(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)
