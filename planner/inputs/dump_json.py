"""overmount-dump/1 JSON (what capture writes): a mountinfo table as text, its targets, and which
mounts are file mounts or locked."""

from __future__ import annotations

from typing import Any

from planner import mountinfo
from planner.dump import DUMP_FORMAT, Dump
from planner.errors import DumpError
from planner.inputs.source import Source, json_element_lines, key_line, short
from planner.inputs.targets import targets_from_json
from planner.progress import Progress, quiet
from planner.steps import FORMAT as PLAN_FORMAT


def read(source: Source, progress: Progress = quiet) -> Dump:
    return from_json(source.json_object(), source.name, source.text, progress)


def mount_ids(data: dict[str, Any], key: str, source: str, text: str) -> frozenset[int]:
    """A list of mount ids under `key` (file_mounts, locked_mounts); empty when absent."""
    raw = data.get(key)
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise DumpError(source, key_line(text, key), f"{key} must be a list of mount ids")
    return frozenset(raw)


def mountinfo_text(raw: object, source: str, line: int | None) -> str:
    if not isinstance(raw, str):
        raise DumpError(source, line, "'mountinfo' missing or not a string")
    return raw


def from_json(data: dict[str, Any], source: str, text: str, progress: Progress = quiet) -> Dump:
    """A dump from its decoded JSON object; `text`, when given, is what line numbers are counted in."""
    if data.get("format") != DUMP_FORMAT:
        hint = ""
        if data.get("format") == PLAN_FORMAT:  # the arguments swapped, or a plan for a dump
            hint = ": that is a plan; give the dump it was made for (overmount check DUMP PLAN, overmount run DUMP --plan PLAN)"
        raise DumpError(source, key_line(text, "format"),
                        f"format must be {DUMP_FORMAT!r}, got {short(repr(data.get('format')))}{hint}")
    info = mountinfo_text(data.get("mountinfo"), source, key_line(text, "mountinfo"))
    # The embedded table's own line numbers name its lines, for parse and tree errors alike.
    table = f"{source} (mountinfo)"
    mounts = tuple(mountinfo.parse(info, table, progress=progress))
    targets = targets_from_json(data.get("targets", []), source, text, json_element_lines(text, "targets"))
    return Dump(source, info, mounts, targets, mount_ids(data, "file_mounts", source, text),
                mount_ids(data, "locked_mounts", source, text), table_source=table)
