"""The effective mappings: the shipped defaults, overridden per (system, instance) by the
admin's files, and reloaded on change without ever replacing a working mapping by a broken one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mapping.spec import FieldMapping, Mapping, MappingFileError, Problem, load_mapping

log = logging.getLogger("itsm_sync.mapping")
DEFAULTS = Path(__file__).resolve().parent / "defaults"


def mapping_files(directory: str | Path | None) -> list[Path]:
    """The shipped defaults, then every ``*.yaml``/``*.yml`` in ``directory`` (sorted)."""
    files = sorted(DEFAULTS.glob("*.yaml"))
    if directory is not None:
        folder = Path(directory)
        if not folder.is_dir():
            raise MappingFileError([Problem(str(folder), None, "", "mapping directory not found")])
        files += sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    return files


@dataclass
class MappingSet:
    """Mappings by (system, instance); a later file for the same key replaces an earlier one."""

    mappings: dict[tuple[str, str], Mapping] = field(default_factory=dict)

    def get(self, system: str, instance: str = "default") -> Mapping:
        try:
            return self.mappings[(system, instance)]
        except KeyError:
            known = ", ".join(f"{s}/{i}" for s, i in sorted(self.mappings))
            raise KeyError(f"no mapping for {system}/{instance} (mappings: {known})") from None

    def __iter__(self) -> Iterator[Mapping]:
        return iter(self.mappings.values())

    def systems(self) -> list[tuple[str, str]]:
        return sorted(self.mappings)

    def terminal_states(self) -> frozenset[str]:
        """Canonical states that end an incident: every one that any mapping names terminal
        (an incident closed on one system is written closed on the others)."""
        out: set[str] = set()
        for mapping in self.mappings.values():
            out |= mapping.terminal_states
        return frozenset(out)


def load_mappings(directory: str | Path | None = None) -> MappingSet:
    """Validate every file; raise one :class:`MappingFileError` with every problem of every file."""
    problems = []
    result = MappingSet()
    for path in mapping_files(directory):
        try:
            mapping = load_mapping(path)
        except MappingFileError as exc:
            problems += exc.problems
            continue
        result.mappings[mapping.key] = mapping
    if problems:
        raise MappingFileError(problems)
    return result


# -- diff -------------------------------------------------------------------------------------


def _rows(mapping: Mapping | None) -> dict[tuple[str, str, str], dict[str, str]]:
    if mapping is None:
        return {}
    return {(f.canonical, f.path, f.direction): f.describe() for f in mapping.fields}


def diff_mappings(old: Mapping | None, new: Mapping | None) -> list[str]:
    """What changes for users, field by field, in words."""
    lines: list[str] = []
    if (
        old is not None
        and new is not None
        and (old.when and old.when.source) != (new.when and new.when.source)
    ):
        before = old.when.source if old.when else "(every incident)"
        after = new.when.source if new.when else "(every incident)"
        lines.append(f"which incidents: {before} -> {after}")
    before_rows, after_rows = _rows(old), _rows(new)
    for key in sorted(set(before_rows) | set(after_rows)):
        canonical, path, direction = key
        arrow = {"in": "<-", "out": "->", "both": "<->"}[direction]
        label = f"{canonical} {arrow} {path}"
        if key not in before_rows:
            lines.append(f"+ {label}: now mapped")
            continue
        if key not in after_rows:
            lines.append(f"- {label}: no longer mapped")
            continue
        a, b = before_rows[key], after_rows[key]
        for attr in ("values", "transform", "template", "policy", "when"):
            if a[attr] != b[attr]:
                lines.append(
                    f"~ {label}: {attr} {a[attr] or '(none)'!r} -> {b[attr] or '(none)'!r}"
                )
    return lines


# -- reloading --------------------------------------------------------------------------------


class Reloader:
    """Keeps a :class:`MappingSet` current: :meth:`check` reloads when a file changed (call it
    on SIGHUP or from :meth:`start`'s polling thread). A set that fails validation never
    replaces the working one; ``on_reject`` hears why, ``on_accept`` gets each changed mapping
    with its diff (to store the version with who/when)."""

    def __init__(
        self,
        directory: str | Path | None,
        *,
        on_accept: Callable[[Mapping, list[str]], None] | None = None,
        on_reject: Callable[[MappingFileError], None] | None = None,
    ) -> None:
        self.directory = directory
        self.on_accept = on_accept
        self.on_reject = on_reject
        self.current = load_mappings(directory)
        self._stamp = self._stamps()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamps(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for path in mapping_files(self.directory):
            try:
                stat = path.stat()
            except OSError:
                continue
            out.append((str(path), stat.st_mtime, stat.st_size))
        return tuple(out)

    def check(self, *, force: bool = False) -> bool:
        """Reload if a file changed (or ``force``); True when a new set was accepted."""
        with self._lock:
            try:
                stamp = self._stamps()
            except MappingFileError as exc:
                self._reject(exc)
                return False
            if stamp == self._stamp and not force:
                return False
            self._stamp = stamp
            try:
                fresh = load_mappings(self.directory)
            except MappingFileError as exc:
                self._reject(exc)
                return False
            old = self.current
            self.current = fresh
        for key, mapping in fresh.mappings.items():
            before = old.mappings.get(key)
            if before is None or before.source != mapping.source:
                changes = diff_mappings(before, mapping)
                log.info("mapping %s/%s accepted (%s)", *key, mapping.digest)
                if self.on_accept is not None:
                    self.on_accept(mapping, changes)
        return True

    def _reject(self, exc: MappingFileError) -> None:
        log.error("mapping change refused; the working mappings stay:\n%s", exc)
        if self.on_reject is not None:
            self.on_reject(exc)

    def start(self, interval: float = 2.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.check()

        self._thread = threading.Thread(target=loop, name="mapping-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = ["FieldMapping", "MappingSet", "Reloader", "diff_mappings", "load_mappings"]
