"""Dump formats in and out: overmount-dump/1 JSON, scenario TOML, bare mountinfo, crit JSON."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any

from planner import mountinfo
from planner.errors import DumpError, TargetError
from planner.mountinfo import Mount
from planner.targets import KINDS, Target

DUMP_FORMAT = "overmount-dump/1"


@dataclass(frozen=True)
class Dump:
    source: str
    mountinfo: str
    mounts: tuple[Mount, ...]
    targets: tuple[Target, ...]
    file_mounts: frozenset[int] = frozenset()
    title: str = ""
    expect: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": DUMP_FORMAT,
            "mountinfo": self.mountinfo,
            "targets": [t.as_json() for t in self.targets],
        }
        if self.file_mounts:
            out["file_mounts"] = sorted(self.file_mounts)
        return out


def line_of(text: str, needle: str) -> int | None:
    at = text.find(needle)
    return None if at < 0 else text.count("\n", 0, at) + 1


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DumpError(source, data.count(b"\n", 0, err.start) + 1, "not valid UTF-8") from None


def read_input(path: str) -> tuple[str, bytes]:
    """(name for messages, bytes) of a file, or of standard input for '-'."""
    if path == "-":
        return "<stdin>", sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return path, handle.read()
    except OSError as err:
        raise DumpError(path, None, f"cannot read: {err.strerror}") from None


def _target(raw: object, source: str, text: str, index: int) -> Target:
    guess = line_of(text, f'"{raw.get("id")}"') if isinstance(raw, dict) else None
    if not isinstance(raw, dict):
        raise TargetError(source, guess, f"target {index} is not an object")
    line = guess
    for key, kind in (("id", str), ("kind", str), ("mount", int), ("path", str)):
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TargetError(source, line, f"target {index}: {key!r} missing or not {'an integer' if kind is int else 'a string'}")
    if raw["kind"] not in KINDS:
        raise TargetError(source, line, f"target {raw['id']}: unknown kind {raw['kind']!r} (one of {', '.join(KINDS)})")
    to = raw.get("to")
    if to is not None and not isinstance(to, str):
        raise TargetError(source, line, f"target {raw['id']}: 'to' must be a string")
    for key in ("path", "to"):
        value = raw.get(key)
        if isinstance(value, str) and "\0" in value:
            raise TargetError(source, line, f"target {raw['id']}: NUL byte in {key}")
    return Target(raw["id"], raw["kind"], raw["mount"], raw["path"], to, line)


def _file_mounts(raw: object, source: str) -> frozenset[int]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise DumpError(source, None, "file_mounts must be a list of mount ids")
    return frozenset(raw)


def _mountinfo_text(raw: object, source: str, line: int | None) -> str:
    if not isinstance(raw, str):
        raise DumpError(source, line, "'mountinfo' missing or not a string")
    return raw


def from_json(data: dict[str, Any], source: str, text: str) -> Dump:
    if data.get("format") != DUMP_FORMAT:
        raise DumpError(source, line_of(text, '"format"'), f"format must be {DUMP_FORMAT!r}, got {data.get('format')!r}")
    info = _mountinfo_text(data.get("mountinfo"), source, line_of(text, '"mountinfo"'))
    # Errors inside the embedded table name its own line numbers.
    mounts = tuple(mountinfo.parse(info, f"{source} (mountinfo)"))
    targets = data.get("targets", [])
    if not isinstance(targets, list):
        raise DumpError(source, line_of(text, '"targets"'), "'targets' must be a list")
    return Dump(source, info, mounts, tuple(_target(t, source, text, i) for i, t in enumerate(targets)),
                _file_mounts(data.get("file_mounts"), source))


def from_toml(text: str, source: str) -> Dump:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DumpError(source, getattr(err, "lineno", None), f"not valid TOML: {str(err).split(' (at')[0]}") from None
    start = line_of(text, "mountinfo")
    info = _mountinfo_text(data.get("mountinfo"), source, start)
    # A multi-line TOML string starting right after `mountinfo = """` begins on the next line.
    first = (start or 0) + 1
    mounts = tuple(mountinfo.parse(info, source, first))
    targets = data.get("targets", [])
    if not isinstance(targets, list):
        raise DumpError(source, line_of(text, "[[targets]]"), "'targets' must be an array of tables")
    parsed = []
    for index, raw in enumerate(targets):
        target = _target(raw, source, text, index)
        parsed.append(Target(target.id, target.kind, target.mount, target.path, target.to, line_of(text, f'"{target.id}"')))
    expect = data.get("expect", {})
    return Dump(source, info, mounts, tuple(parsed), _file_mounts(data.get("file_mounts"), source),
                str(data.get("title", "")), expect if isinstance(expect, dict) else {})


def parse_target_option(option: str, index: int) -> Target:
    """MOUNT:PATH[:KIND], KIND one of the target kinds; mount-source takes its destination as KIND=TO."""
    where = f"--target {option}"
    mount_text, _, rest = option.partition(":")
    if not mount_text.isdigit() or not rest:
        raise TargetError(where, None, "expected MOUNT:PATH[:KIND], MOUNT a mount id")
    kind, to = "open", None
    path = rest
    head, colon, tail = rest.rpartition(":")
    if colon and (tail in KINDS or tail.startswith("mount-source=")):
        path = head
        kind, _, to_text = tail.partition("=")
        to = to_text or None
    return Target(f"t{index}", kind, int(mount_text), path, to, origin=where)


def load(path: str, target_options: tuple[str, ...] | list[str] = ()) -> Dump:
    """Read any supported dump; --target options add targets (ids t1, t2, ... after the dump's)."""
    if path != "-" and os.path.isdir(path):
        from planner import criu

        dump = from_json(criu.dump_from_crit(path), path, "")
    else:
        source, data = read_input(path)
        text = decode(data, source)
        if "\0" in text:
            raise DumpError(source, line_of(text, "\0"), "NUL byte in input")
        stripped = text.lstrip()
        if source.endswith(".toml"):
            dump = from_toml(text, source)
        elif stripped.startswith("{"):
            try:
                data_json = json.loads(text)
            except json.JSONDecodeError as err:
                raise DumpError(source, err.lineno, f"not valid JSON: {err.msg}") from None
            if not isinstance(data_json, dict):
                raise DumpError(source, 1, "expected a JSON object")
            if data_json.get("magic") == "MNTS":
                from planner import criu

                dump = from_json(criu.dump_from_crit({"mountpoints": path}), source, text)
            else:
                dump = from_json(data_json, source, text)
        else:
            mounts = tuple(mountinfo.parse(text, source))
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
        dump = Dump(dump.source, dump.mountinfo, dump.mounts, dump.targets + tuple(extra), dump.file_mounts, dump.title, dump.expect)
    return dump
