"""Targets as inputs bring them: a dump's target objects, --target options, and the one collector
that CRIU images and live capture turn what a process holds into (a target, or a skipped entry
saying why it cannot be one)."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable

from planner.dump import Dump
from planner.errors import DumpError, TargetError
from planner.inputs.source import LineCounter, key_line, short
from planner.mountinfo import Mount
from planner.paths import is_under
from planner.targets import ACCESS_MODES, FILE_TYPES, KINDS, Target, object_problem


def target_from_json(raw: object, source: str, line: int | None, index: int) -> Target:
    if not isinstance(raw, dict):
        raise TargetError(source, line, f"target {index} is not an object")
    for key, kind in (("id", str), ("kind", str), ("mount", int), ("path", str)):
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TargetError(source, line, f"target {index}: {key!r} missing or not {'an integer' if kind is int else 'a string'}")
    if raw["kind"] not in KINDS:
        raise TargetError(source, line, f"target {raw['id']}: unknown kind {short(repr(raw['kind']))} (one of {', '.join(KINDS)})")
    to = raw.get("to")
    if to is not None and not isinstance(to, str):
        raise TargetError(source, line, f"target {raw['id']}: 'to' must be a string")
    for key in ("path", "to"):
        value = raw.get(key)
        if isinstance(value, str) and "\0" in value:
            raise TargetError(source, line, f"target {raw['id']}: NUL byte in {key}")
    fields: dict[str, str | None] = {}
    choices: tuple[tuple[str, tuple[str, ...] | None], ...] = (("file_type", FILE_TYPES), ("access", ACCESS_MODES), ("rdev", None))
    for key, allowed in choices:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or (allowed is not None and value not in allowed)):
            one_of = f"one of {', '.join(allowed)}" if allowed is not None else "a string"
            raise TargetError(source, line, f"target {raw['id']}: {key} must be {one_of}, got {short(repr(value))}")
        fields[key] = value
    problem = object_problem(raw["kind"], fields["file_type"], fields["access"], fields["rdev"])
    if problem:
        raise TargetError(source, line, f"target {raw['id']}: {problem}")
    unlinked = raw.get("unlinked", False)
    if not isinstance(unlinked, bool):
        raise TargetError(source, line, f"target {raw['id']}: unlinked must be true or false, got {short(repr(unlinked))}")
    return Target(raw["id"], raw["kind"], raw["mount"], raw["path"], to, line, origin=source,
                  file_type=fields["file_type"], access=fields["access"], rdev=fields["rdev"], unlinked=unlinked)


def targets_from_json(raw: object, source: str, text: str, lines: list[int | None] | list[int],
                      shape: str = "a list") -> tuple[Target, ...]:
    """The `targets` list of a dump or scenario; `lines` holds where each element is named."""
    if not isinstance(raw, list):
        raise DumpError(source, key_line(text, "targets"), f"'targets' must be {shape}")
    return tuple(target_from_json(t, source, lines[i] if i < len(lines) else None, i) for i, t in enumerate(raw))


def toml_target_lines(text: str) -> list[int | None]:
    """The line of each [[targets]] table's `id =` (or of the table header when it has none)."""
    lines: list[int | None] = []
    counter = LineCounter(text)
    for header in re.finditer(r"(?m)^\s*\[\[targets\]\]", text):
        following = re.compile(r"(?m)^\s*(id\s*=|\[)").search(text, header.end())
        at = following.start() if following is not None and following.group(1).startswith("id") else header.start()
        lines.append(counter.line_of(at))
    return lines


def parse_target_option(option: str, index: int) -> Target:
    """MOUNT:PATH[:KIND], KIND one of the target kinds; mount-source takes its destination as KIND=TO.

    PATH may hold colons (/run/user/1000/bus:1, by-path device names): what follows the last
    colon is KIND only when it is one of the kinds (or mount-source=TO, whose TO may hold colons
    too). A word there that looks like a mistyped kind is refused rather than taken as part of
    the path, which would plan the wrong operation; a path that really ends so says its kind.
    """
    where = f"--target {option}"
    mount_text, _, rest = option.partition(":")
    if not (mount_text.isascii() and mount_text.isdigit() and len(mount_text) <= 18) or not rest:
        raise TargetError(where, None, "expected MOUNT:PATH[:KIND], MOUNT a mount id")
    path, kind, to = rest, "open", None
    head, source_kind, to_text = rest.partition(":mount-source=")
    if source_kind:
        path, kind, to = head, "mount-source", to_text or None
    else:
        head, colon, tail = rest.rpartition(":")
        if colon and tail in KINDS:
            path, kind = head, tail
        elif colon and "/" not in tail:
            near = difflib.get_close_matches(tail.lower(), KINDS, n=1, cutoff=0.75)
            if near:
                raise TargetError(where, None, f"unknown kind {tail!r}: did you mean {near[0]}? (kinds: {', '.join(KINDS)}; "
                                                f"a path that ends in ':{tail}' says its kind: {mount_text}:{rest}:open)")
    if kind == "mount-source" and to is None:
        raise TargetError(where, None, "mount-source needs where the bind goes: MOUNT:PATH:mount-source=TO")
    return Target(f"t{index}", kind, int(mount_text), path, to, origin=where)


def with_target_options(dump: Dump, options: Iterable[str]) -> Dump:
    """The dump with --target options added: ids t1, t2, ... after the dump's own (never one it has)."""
    options = list(options)
    if not options:
        return dump
    taken = {t.id for t in dump.targets}
    extra = []
    number = len(dump.targets)
    for option in options:
        number += 1
        while f"t{number}" in taken:
            number += 1
        extra.append(parse_target_option(option, number))
    return dataclasses.replace(dump, targets=dump.targets + tuple(extra))


class TargetCollector:
    """What a process held, as a dump's `targets` and `skipped` entries: every object ends in exactly
    one of them. A target must have an absolute path in a mount of the table, under its mountpoint;
    anything else is skipped with the reason. `unlisted(mount)` says why a mount id is not in the
    table, in the words of the input (CRIU recorded none; the process opened it in another namespace).
    An id already collected is not collected again (fds sharing one open file, one socket twice)."""

    def __init__(self, mounts: Iterable[Mount], unlisted: Callable[[int | None], str], notes: list[str] | None = None) -> None:
        self.by_id = {m.mount_id: m for m in mounts}
        self.unlisted = unlisted
        self.targets: list[dict[str, object]] = []
        self.skipped: list[dict[str, object]] = []
        self.notes: list[str] = notes if notes is not None else []
        self.seen_ids: set[str] = set()

    def add(self, target_id: str, kind: str, mount: int | None, path: str | None, **extra: object) -> None:
        """A target, or a skipped entry saying why it cannot be one. `extra`: file_type, access, rdev,
        unlinked (dump fields) and fds (the fds that hold a socket); None values are left out."""
        if target_id in self.seen_ids:
            return
        reason = self.refusal(mount, path)
        if reason is not None:
            self.skip(target_id, kind, path, mount, reason, fds=extra.get("fds"))
            return
        self.seen_ids.add(target_id)
        target: dict[str, object] = {"id": target_id, "kind": kind, "mount": mount, "path": path}
        target.update((k, v) for k, v in extra.items() if v is not None)
        self.targets.append(target)

    def refusal(self, mount: int | None, path: str | None) -> str | None:
        if path is None or not path.startswith("/"):
            return f"no absolute path ({path!r})"
        where = self.by_id.get(mount) if mount is not None else None
        if where is None:
            return self.unlisted(mount)
        if not is_under(path, where.mountpoint):
            return f"path is not under mount {mount}'s mountpoint {where.mountpoint}"
        return None

    def skip(self, target_id: str, kind: str, path: str | None, mount: int | None, reason: str, **extra: object) -> None:
        self.seen_ids.add(target_id)
        entry: dict[str, object] = {"id": target_id, "kind": kind, "path": path, "mount": mount, "reason": reason}
        entry.update((k, v) for k, v in extra.items() if v is not None)
        self.skipped.append(entry)
