"""Mapping files: YAML an admin writes, validated into a compiled :class:`Mapping`.

A file maps one system instance (``system``, ``instance``) to the canonical incident::

    system: servicenow
    object_type: incident
    when: severity in ["SEV1", "SEV2"]     # which incidents this system mirrors (optional)
    fields:
      title: {path: short_description}
      severity:
        - path: priority                    # in: priority -> severity
          direction: in
          values: {SEV1: "1", SEV2: "2", SEV3: "3", SEV4: ["4", "5"]}
        - path: impact                      # out: severity -> impact (priority is derived)
          direction: out
          values: {SEV1: "1", SEV2: "1", SEV3: "2", SEV4: "3"}

Every problem in a file is reported at once, each with the file, line and path and what is
allowed (``servicenow.yaml:14 fields.severity.values: 'P5' is not a canonical severity
(SEV1, SEV2, SEV3, SEV4)``). Conditions and templates are parsed, never executed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mapping.conditions import Condition, ConditionError, parse_condition
from mapping.model import CANONICAL_FIELDS
from mapping.templates import Template, TemplateError, compile_template
from mapping.transforms import TRANSFORMS, Transform, TransformError, get_transform

SYSTEMS = ("servicenow", "jira", "statuspage")
LIST_FIELDS = frozenset({"services", "labels"})
DEFAULT_TERMINAL = ("closed", "canceled")  # a state mapping without `terminal:`
OBJECT_TYPES = {"servicenow": ("incident",), "jira": ("issue",), "statuspage": ("incident",)}


# -- the file format (structure only; meaning is checked in _compile_field) --------------------


class DefaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str


class FieldFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    values: dict[str, str | list[str]] | None = None
    reverse: dict[str, str] = Field(default_factory=dict)
    unknown: str | DefaultRule = "error"
    transform: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    template: str | None = None
    direction: Literal["in", "out", "both"] = "both"
    policy: str = "latest"
    when: str | None = None
    # Only on `state`: the canonical states that end an incident (the postmortem gate guards
    # every move into one of them). Without it: closed and canceled.
    terminal: list[str] | None = None

    @field_validator("unknown", mode="before")
    @classmethod
    def _unknown(cls, value: Any) -> Any:
        if value in ("error", "keep", "ignore"):
            return value
        if isinstance(value, dict) and set(value) == {"default"}:
            return DefaultRule(default=str(value["default"]))
        raise ValueError(
            f"{value!r}: use `error`, `keep`, `ignore` or `{{default: <canonical value>}}`"
        )


class MappingFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: Literal["servicenow", "jira", "statuspage"]
    instance: str = "default"
    object_type: str
    when: str | None = None
    description: str = ""
    # For a system that mirrors only some incidents (`when`): the text its record is closed
    # with when an incident stops matching (downgraded, made private).
    withdraw_message: str | None = None
    fields: dict[str, list[dict[str, Any]]]  # each validated as a FieldFile on its own


# -- the compiled form ------------------------------------------------------------------------


class MappingError(ValueError):
    """A value could not be mapped (e.g. an unknown value with ``unknown: error``)."""


@dataclass(frozen=True)
class ValueMap:
    """Two-way value map. ``out``: canonical -> remote (the preferred remote value);
    ``into``: remote -> canonical (``reverse`` picks one where several canonical values share
    a remote value); ``unknown``: ``error``, ``keep`` or ``default:<canonical value>``."""

    out: dict[str, str]
    into: dict[str, str]
    unknown: str = "error"
    default: str = ""

    def to_remote(self, value: str, where: str) -> str:
        if value in self.out:
            return self.out[value]
        if self.unknown == "keep":
            return value
        if self.unknown == "default" and self.default in self.out:
            return self.out[self.default]
        raise MappingError(f"{where}: no remote value for {value!r} (known: {sorted(self.out)})")

    def to_canonical(self, value: str, where: str) -> str:
        if value in self.into:
            return self.into[value]
        if self.unknown == "keep":
            return value
        if self.unknown == "default":
            return self.default
        raise MappingError(
            f"{where}: remote value {value!r} has no canonical value (known: {sorted(self.into)})"
        )


@dataclass(frozen=True)
class FieldMapping:
    canonical: str
    path: str
    direction: str  # in | out | both
    policy: str  # latest | owner:<system>
    values: ValueMap | None = None
    transform: Transform | None = None
    args: dict[str, Any] = field(default_factory=dict)
    template: Template | None = None
    when: Condition | None = None
    terminal: tuple[str, ...] = ()
    line: int = 0

    @property
    def reads(self) -> bool:
        return self.direction in ("in", "both")

    @property
    def writes(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def refines(self) -> bool:
        """A reader that only speaks for the values it maps (``unknown: ignore``): read after
        the field's main reader, it overrides it for those values and leaves it otherwise
        (Jira: status Done with resolution "Won't Do" reads as canceled)."""
        return self.reads and self.values is not None and self.values.unknown == "ignore"

    def describe(self) -> dict[str, str]:
        """One row of ``mapping show``."""
        values = ""
        if self.values is not None:
            # canonical=written|also read, e.g. SEV4=4|5; a shared remote value shows where
            # it reads as.
            parts = []
            for c, r in self.values.out.items():
                also = [x for x, cc in self.values.into.items() if cc == c and x != r]
                parts.append(f"{c}={'|'.join([r, *also])}")
            values = ", ".join(parts)
            if self.values.unknown != "error":
                rule = self.values.unknown
                values += (
                    f" (unknown: {rule}{' ' + self.values.default if self.values.default else ''})"
                )
        return {
            "canonical": self.canonical,
            "path": self.path,
            "direction": self.direction,
            "values": values,
            "transform": self.transform.name if self.transform else "",
            "template": self.template.source if self.template else "",
            "policy": self.policy,
            "when": self.when.source if self.when else "",
        }


@dataclass(frozen=True)
class Mapping:
    system: str
    instance: str
    object_type: str
    fields: tuple[FieldMapping, ...]
    when: Condition | None = None
    source: str = ""  # the file's text, stored with every accepted version
    path: str = ""
    description: str = ""
    withdraw_message: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.system, self.instance)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]

    def for_field(self, canonical: str) -> list[FieldMapping]:
        return [f for f in self.fields if f.canonical == canonical]

    @property
    def terminal_states(self) -> frozenset[str]:
        """The canonical states this system's mapping says end an incident."""
        out: set[str] = set()
        for f in self.for_field("state"):
            out |= set(f.terminal or DEFAULT_TERMINAL)
        return frozenset(out)


# -- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class MappingFileError(ValueError):
    """A mapping file is invalid; ``problems`` lists every problem, each with its line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_mapping(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingFileError(
            [Problem(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_mapping(text, name=path.name, path=str(path))


def parse_mapping(text: str, *, name: str = "<mapping>", path: str = "") -> Mapping:
    """Validate ``text`` (YAML) into a :class:`Mapping`, or raise with every problem."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingFileError([Problem(name, line, "", f"not valid YAML: {problem}")]) from exc
    if not isinstance(data, dict):
        raise MappingFileError(
            [Problem(name, 1, "", "expected a mapping with system, object_type and fields")]
        )
    problems: list[Problem] = []

    def report(location: Iterable[Any], message: str) -> None:
        parts = [str(p) for p in location]
        problems.append(Problem(name, _line_of(node, parts), ".".join(parts), message))

    # A canonical field maps through one spec or a list of them; validate both as lists and
    # report positions as the admin wrote them.
    single: set[str] = set()
    if isinstance(data.get("fields"), dict):
        data = dict(data)
        normalised: dict[Any, Any] = {}
        for k, v in data["fields"].items():
            if not isinstance(v, list):
                single.add(str(k))
                v = [v]
            normalised[k] = v
        data["fields"] = normalised
    try:
        model = MappingFileModel.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = list(error["loc"])
            if len(loc) >= 3 and loc[0] == "fields" and loc[1] in single and loc[2] == 0:
                del loc[2]
            report(loc, _pydantic_message(error))
        raise MappingFileError(problems) from None

    allowed_types = OBJECT_TYPES[model.system]
    if model.object_type not in allowed_types:
        report(
            ["object_type"],
            f"{model.system} maps {', '.join(allowed_types)}, not {model.object_type!r}",
        )
    when = None
    if model.when:
        try:
            when = parse_condition(model.when, fields=CANONICAL_FIELDS)
        except ConditionError as exc:
            report(["when"], str(exc))
    compiled: list[FieldMapping] = []
    for canonical, specs in model.fields.items():
        if canonical not in CANONICAL_FIELDS:
            report(
                ["fields", canonical],
                f"not a canonical field; fields: {', '.join(CANONICAL_FIELDS)}",
            )
            continue
        many = canonical not in single
        for index, raw in enumerate(specs):
            location = ["fields", canonical, *([index] if many else [])]
            try:
                spec = FieldFile.model_validate(raw)
            except ValidationError as exc:
                for error in exc.errors():
                    report([*location, *error["loc"]], _pydantic_message(error))
                continue
            result = _compile_field(canonical, spec, model.system, location, report)
            if result is not None:
                line = _line_of(node, [str(p) for p in location]) or 0
                compiled.append(FieldMapping(**{**result.__dict__, "line": line}))
    reads: dict[str, str] = {}
    for f in compiled:
        if f.reads and not f.refines:
            if f.canonical in reads:
                report(
                    ["fields", f.canonical],
                    f"read from two paths ({reads[f.canonical]} and {f.path}); "
                    "make one `direction: out`",
                )
            reads[f.canonical] = f.path
    if problems:
        raise MappingFileError(problems)
    return Mapping(
        system=model.system,
        instance=model.instance,
        object_type=model.object_type,
        fields=tuple(compiled),
        when=when,
        source=text,
        path=path,
        description=model.description,
        withdraw_message=model.withdraw_message or "",
    )


def _compile_field(
    canonical: str, spec: FieldFile, system: str, location: list[Any], report: Any
) -> FieldMapping | None:
    ok = True

    def bad(sub: list[Any], message: str) -> None:
        nonlocal ok
        ok = False
        report([*location, *sub], message)

    allowed = CANONICAL_FIELDS[canonical]
    values = None
    if spec.values is not None:
        out: dict[str, str] = {}
        into: dict[str, str] = {}
        shared: dict[str, list[str]] = {}
        for key, remote in spec.values.items():
            if allowed is not None and key not in allowed:
                bad(["values"], f"{key!r} is not a canonical {canonical} ({', '.join(allowed)})")
                continue
            remotes = [remote] if isinstance(remote, str) else list(remote)
            if not remotes:
                bad(["values", key], "an empty list: give at least one remote value")
                continue
            out[key] = remotes[0]
            for r in remotes:
                shared.setdefault(r, []).append(key)
        for r, canonicals in shared.items():
            choice = spec.reverse.get(r)
            if len(canonicals) > 1 and spec.direction != "out" and choice is None:
                bad(
                    ["values"],
                    f"remote value {r!r} is shared by {', '.join(canonicals)}: name the one "
                    f"it reads as, e.g. reverse: {{{r!r}: {canonicals[0]}}}",
                )
            elif choice is not None and choice not in canonicals:
                bad(
                    ["reverse", r],
                    f"{choice!r} does not map to {r!r} (it is one of: {', '.join(canonicals)})",
                )
            elif len(canonicals) > 1 and choice is not None and out.get(choice) != r:
                # Reading r as `choice` and writing `choice` back must give r again, or the
                # two systems would flip the value back and forth.
                bad(
                    ["reverse", r],
                    f"{r!r} reads as {choice}, but {choice} writes {out.get(choice)!r}: "
                    f"list {r!r} first under {choice}, or read it as a value that writes {r!r}",
                )
            into[r] = choice or canonicals[0]
        for r in spec.reverse:
            if r not in shared:
                bad(["reverse", r], f"{r!r} is not a remote value in `values`")
        unknown, default = "error", ""
        if isinstance(spec.unknown, DefaultRule):
            unknown, default = "default", spec.unknown.default
            if default not in out:
                bad(
                    ["unknown", "default"],
                    f"{default!r} is not one of the mapped values ({', '.join(out)})",
                )
        else:
            unknown = spec.unknown
            if unknown == "ignore" and spec.direction != "in":
                bad(
                    ["unknown"],
                    "`ignore` is for a second reader that refines the main one: "
                    "use it with `direction: in`",
                )
            if unknown == "keep" and allowed is not None and spec.direction != "out":
                bad(
                    ["unknown"],
                    f"`keep` would put remote values into {canonical}, which only allows "
                    f"{', '.join(allowed)}; use error or default",
                )
        values = ValueMap(out=out, into=into, unknown=unknown, default=default)
    elif spec.reverse:
        bad(["reverse"], "`reverse` needs `values`")
    elif spec.unknown == "ignore":
        bad(["unknown"], "`ignore` needs `values`: it ignores the values they do not list")
    terminal: tuple[str, ...] = ()
    if spec.terminal is not None:
        if canonical != "state":
            bad(["terminal"], "only the state field names terminal states")
        states = CANONICAL_FIELDS["state"] or ()
        for state in spec.terminal:
            if state not in states:
                bad(["terminal"], f"{state!r} is not a canonical state ({', '.join(states)})")
        terminal = tuple(spec.terminal)
    transform = None
    if spec.transform is not None:
        try:
            transform = get_transform(spec.transform)
        except TransformError as exc:
            bad(["transform"], str(exc))
        else:
            if not transform.two_way and spec.direction == "both":
                bad(["transform"], f"{transform.name} is one-way; use `direction: in` or `out`")
    template = None
    if spec.template is not None:
        if spec.direction != "out":
            bad(["template"], "a template only writes (`direction: out`)")
        try:
            template = compile_template(spec.template, fields=CANONICAL_FIELDS)
        except TemplateError as exc:
            bad(["template"], str(exc))
    policy = spec.policy
    if policy != "latest" and not (policy.startswith("owner:") and policy[6:] in SYSTEMS):
        bad(["policy"], f"{policy!r}: use `latest` or `owner:<system>` ({', '.join(SYSTEMS)})")
    when = None
    if spec.when is not None:
        try:
            when = parse_condition(spec.when, fields=CANONICAL_FIELDS)
        except ConditionError as exc:
            bad(["when"], str(exc))
    if not ok:
        return None
    return FieldMapping(
        canonical=canonical,
        path=spec.path,
        direction=spec.direction,
        policy=policy,
        values=values,
        transform=transform,
        args=dict(spec.args),
        template=template,
        when=when,
        terminal=terminal,
    )


def _pydantic_message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/mapping.md for the keys)"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        return (
            f"{error['input']!r} is not allowed: {error['msg'].replace('Input should be ', 'use ')}"
        )
    return str(error["msg"])


def _line_of(node: yaml.Node | None, location: list[str]) -> int | None:
    line = None
    for key in location:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == key:
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            line = node.start_mark.line + 1
        else:
            break
    return line


__all__ = [
    "TRANSFORMS",
    "FieldMapping",
    "Mapping",
    "MappingError",
    "MappingFileError",
    "Problem",
    "ValueMap",
    "load_mapping",
    "parse_mapping",
]
