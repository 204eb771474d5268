"""Dump formats in and out: overmount-dump/1 JSON, scenario TOML, bare mountinfo, crit JSON."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from planner import limits, mountinfo
from planner.errors import DumpError, TargetError
from planner.mountinfo import Mount
from planner.progress import Progress, quiet
from planner.targets import ACCESS_MODES, FILE_TYPES, KINDS, Target, object_problem

DUMP_FORMAT = "overmount-dump/1"


@dataclass(frozen=True)
class Dump:
    source: str
    mountinfo: str
    mounts: tuple[Mount, ...]
    targets: tuple[Target, ...]
    file_mounts: frozenset[int] = frozenset()
    # Mounts locked to their parent (inherited into a user namespace): no move can take them apart.
    locked_mounts: frozenset[int] = frozenset()
    title: str = ""
    expect: dict[str, Any] = field(default_factory=dict, compare=False)
    table_source: str = ""  # what the mount table's line numbers belong to, when not `source`

    @property
    def table_name(self) -> str:
        return self.table_source or self.source

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": DUMP_FORMAT,
            "mountinfo": self.mountinfo,
            "targets": [t.as_json() for t in self.targets],
        }
        if self.file_mounts:
            out["file_mounts"] = sorted(self.file_mounts)
        if self.locked_mounts:
            out["locked_mounts"] = sorted(self.locked_mounts)
        return out


def line_of(text: str, needle: str, nth: int = 0) -> int | None:
    """The line of the nth occurrence of `needle` in `text`, or None."""
    at = -1
    for _ in range(nth + 1):
        at = text.find(needle, at + 1)
        if at < 0:
            return None
    return text.count("\n", 0, at) + 1


def key_line(text: str, key: str) -> int | None:
    """The line where a top-level key is set: `"key":` in JSON, `key =` or `[[key]]` in TOML."""
    found = re.search(rf'(?m)"{key}"\s*:|^\s*{key}\s*=|^\s*\[\[{key}\]\]', text)
    return None if found is None else text.count("\n", 0, found.start()) + 1


class LineCounter:
    """Line numbers of offsets into one text, asked in increasing order: each newline is counted
    once (counting from the start for every element made a 40,000-step plan take 93 s)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.line = 1

    def line_of(self, offset: int) -> int:
        if offset < self.at:  # asked out of order: count again from the start
            self.at, self.line = 0, 1
        self.line += self.text.count("\n", self.at, offset)
        self.at = offset
        return self.line


def json_element_lines(text: str, key: str, named_by: str | None = "id") -> list[int]:
    """The line of each element of the array under `"key":` (empty when not found): where the
    element starts, or for an object the line of its `named_by` key, the line people look for.

    The elements are read by the JSON decoder itself (in C) and each newline is counted once."""
    found = re.search(rf'"{key}"\s*:\s*\[', text)
    if found is None:
        return []
    decoder = json.JSONDecoder()
    lines: list[int] = []
    counter = LineCounter(text)
    at = found.end()
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return lines
        try:
            _, end = decoder.raw_decode(text, at)
        except ValueError:
            return lines
        named = text.find(f'"{named_by}"', at, end) if named_by is not None and text[at] == "{" else -1
        lines.append(counter.line_of(named if named >= 0 else at))
        at = end


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DumpError(source, data.count(b"\n", 0, err.start) + 1, "not valid UTF-8") from None


def read_input(path: str) -> tuple[str, bytes]:
    """(name for messages, bytes) of a file, or of standard input for '-'; no more than the limit."""
    if path == "-":
        return "<stdin>", read_limited(sys.stdin.buffer, "<stdin>")
    try:
        with open(path, "rb") as handle:
            return path, read_limited(handle, path)
    except OSError as err:
        raise DumpError(path, None, f"cannot read: {err.strerror}") from None


def read_limited(handle: BinaryIO, source: str) -> bytes:
    """At most limits.INPUT_BYTES of a stream; DumpError past it (without reading the rest)."""
    limit = limits.INPUT_BYTES.value
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise DumpError(source, None, limits.INPUT_BYTES.refusal("more bytes"))
    return data


def load_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DumpError(source, err.lineno, f"not valid JSON: {err.msg}") from None
    except (ValueError, RecursionError) as err:  # numbers past int()'s digit limit, absurd nesting
        raise DumpError(source, None, f"not usable JSON: {_short(str(err))}") from None


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _target(raw: object, source: str, line: int | None, index: int) -> Target:
    if not isinstance(raw, dict):
        raise TargetError(source, line, f"target {index} is not an object")
    for key, kind in (("id", str), ("kind", str), ("mount", int), ("path", str)):
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TargetError(source, line, f"target {index}: {key!r} missing or not {'an integer' if kind is int else 'a string'}")
    if raw["kind"] not in KINDS:
        raise TargetError(source, line, f"target {raw['id']}: unknown kind {_short(repr(raw['kind']))} (one of {', '.join(KINDS)})")
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
            raise TargetError(source, line, f"target {raw['id']}: {key} must be {one_of}, got {_short(repr(value))}")
        fields[key] = value
    problem = object_problem(raw["kind"], fields["file_type"], fields["access"], fields["rdev"])
    if problem:
        raise TargetError(source, line, f"target {raw['id']}: {problem}")
    unlinked = raw.get("unlinked", False)
    if not isinstance(unlinked, bool):
        raise TargetError(source, line, f"target {raw['id']}: unlinked must be true or false, got {_short(repr(unlinked))}")
    return Target(raw["id"], raw["kind"], raw["mount"], raw["path"], to, line, origin=source,
                  file_type=fields["file_type"], access=fields["access"], rdev=fields["rdev"], unlinked=unlinked)


def _toml_target_lines(text: str) -> list[int | None]:
    """The line of each [[targets]] table's `id =` (or of the table header when it has none)."""
    lines: list[int | None] = []
    counter = LineCounter(text)
    for header in re.finditer(r"(?m)^\s*\[\[targets\]\]", text):
        following = re.compile(r"(?m)^\s*(id\s*=|\[)").search(text, header.end())
        at = following.start() if following is not None and following.group(1).startswith("id") else header.start()
        lines.append(counter.line_of(at))
    return lines


def _targets(raw: object, source: str, text: str, lines: list[int | None], shape: str = "a list") -> tuple[Target, ...]:
    if not isinstance(raw, list):
        raise DumpError(source, key_line(text, "targets"), f"'targets' must be {shape}")
    return tuple(_target(t, source, lines[i] if i < len(lines) else None, i) for i, t in enumerate(raw))


def _mount_ids(data: dict[str, Any], key: str, source: str, text: str) -> frozenset[int]:
    raw = data.get(key)
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise DumpError(source, key_line(text, key), f"{key} must be a list of mount ids")
    return frozenset(raw)


def _mountinfo_text(raw: object, source: str, line: int | None) -> str:
    if not isinstance(raw, str):
        raise DumpError(source, line, "'mountinfo' missing or not a string")
    return raw


def from_json(data: dict[str, Any], source: str, text: str, progress: Progress = quiet) -> Dump:
    if data.get("format") != DUMP_FORMAT:
        hint = ""
        if data.get("format") == "overmount-plan/1":  # the arguments swapped, or a plan for a dump
            hint = ": that is a plan; give the dump it was made for (overmount check DUMP PLAN, overmount run DUMP --plan PLAN)"
        raise DumpError(source, key_line(text, "format"),
                        f"format must be {DUMP_FORMAT!r}, got {_short(repr(data.get('format')))}{hint}")
    info = _mountinfo_text(data.get("mountinfo"), source, key_line(text, "mountinfo"))
    # The embedded table's own line numbers name its lines, for parse and tree errors alike.
    table = f"{source} (mountinfo)"
    mounts = tuple(mountinfo.parse(info, table, progress=progress))
    targets = _targets(data.get("targets", []), source, text, list(json_element_lines(text, "targets")))
    return Dump(source, info, mounts, targets, _mount_ids(data, "file_mounts", source, text),
                _mount_ids(data, "locked_mounts", source, text), table_source=table)


def from_toml(text: str, source: str, progress: Progress = quiet) -> Dump:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # Python 3.11's message ends "(at line N, column M)"; lineno only exists from 3.14.
        at = re.search(r"\(at line (\d+), column \d+\)$", str(err))
        reason = re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", str(err))
        raise DumpError(source, int(at.group(1)) if at else None, f"not valid TOML: {reason}") from None
    except (ValueError, RecursionError) as err:
        raise DumpError(source, None, f"not usable TOML: {_short(str(err))}") from None
    start = key_line(text, "mountinfo")
    info = _mountinfo_text(data.get("mountinfo"), source, start)
    # A multi-line TOML string starting right after `mountinfo = """` begins on the next line.
    first = (start or 0) + 1
    mounts = tuple(mountinfo.parse(info, source, first, progress))
    raw_targets = data.get("targets", [])
    lines = _toml_target_lines(text) if isinstance(raw_targets, list) else []
    targets = _targets(raw_targets, source, text, lines, "an array of tables ([[targets]])")
    expect = data.get("expect", {})
    return Dump(source, info, mounts, targets, _mount_ids(data, "file_mounts", source, text),
                _mount_ids(data, "locked_mounts", source, text), str(data.get("title", "")),
                expect if isinstance(expect, dict) else {})


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


def _looks_like_toml(text: str) -> bool:
    """Standard input has no file name: a mountinfo line starts with a mount id, a scenario with a key."""
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            return not line[0].isdigit() and not line.startswith("{")
    return False


def _from_crit_mountpoints(text: str, source: str, path: str) -> Dump:
    """A lone `crit decode` mountpoints JSON; the CRIU reader takes files, so stdin goes through one."""
    from planner import criu

    if path != "-":
        return from_json(criu.dump_from_crit({"mountpoints": path}), source, text)
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "mountpoints.json")
        with open(copy, "w", encoding="utf-8") as handle:
            handle.write(text)
        return from_json(criu.dump_from_crit({"mountpoints": copy}), source, text)


def load(path: str, target_options: tuple[str, ...] | list[str] = (), progress: Progress = quiet) -> Dump:
    """Read any supported dump; --target options add targets (ids t1, t2, ... after the dump's).

    progress hears how far the mount table is read."""
    if path != "-" and os.path.isdir(path):
        from planner import criu

        dump = from_json(criu.dump_from_crit(path, progress), path, "", progress)
    else:
        source, data = read_input(path)
        if source.endswith(".img") and not data.isascii():
            from planner.criu import CRIT_DECODE

            raise DumpError(source, None, f"a binary CRIU image: {CRIT_DECODE}, then give the directory as DUMP")
        text = decode(data, source)
        del data  # the text holds it now: no second copy while the table is parsed
        if "\0" in text:
            raise DumpError(source, line_of(text, "\0"), "NUL byte in input")
        stripped = text.lstrip()
        if source.endswith(".toml") or (path == "-" and _looks_like_toml(text)):
            dump = from_toml(text, source, progress)
        elif stripped.startswith("{"):
            data_json = load_json(text, source)
            if not isinstance(data_json, dict):
                raise DumpError(source, 1, "expected a JSON object")
            if data_json.get("magic") == "MNTS":
                dump = _from_crit_mountpoints(text, source, path)
            else:
                dump = from_json(data_json, source, text, progress)
        else:
            mounts = tuple(mountinfo.parse(text, source, progress=progress))
            dump = Dump(source, text, mounts, ())
    if target_options:
        taken = {t.id for t in dump.targets}
        extra = []
        number = len(dump.targets)
        for option in target_options:
            number += 1
            while f"t{number}" in taken:
                number += 1
            extra.append(parse_target_option(option, number))
        dump = dataclasses.replace(dump, targets=dump.targets + tuple(extra))
    return dump
