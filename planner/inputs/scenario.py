"""Scenario TOML (scenarios/*.toml): a mountinfo table, [[targets]], and what a test expects."""

from __future__ import annotations

import re
import tomllib

from planner import mountinfo
from planner.dump import Dump
from planner.errors import DumpError
from planner.inputs.dump_json import mount_ids, mountinfo_text
from planner.inputs.source import Source, key_line, short
from planner.inputs.targets import targets_from_json, toml_target_lines
from planner.progress import Progress, quiet


def read(source: Source, progress: Progress = quiet) -> Dump:
    return from_toml(source.text, source.name, progress)


def looks_like_toml(text: str) -> bool:
    """Standard input has no file name: a mountinfo line starts with a mount id, a scenario with a key."""
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            return not line[0].isdigit() and not line.startswith("{")
    return False


def from_toml(text: str, source: str, progress: Progress = quiet) -> Dump:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # Python 3.11's message ends "(at line N, column M)"; lineno only exists from 3.14.
        at = re.search(r"\(at line (\d+), column \d+\)$", str(err))
        reason = re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", str(err))
        raise DumpError(source, int(at.group(1)) if at else None, f"not valid TOML: {reason}") from None
    except (ValueError, RecursionError) as err:
        raise DumpError(source, None, f"not usable TOML: {short(str(err))}") from None
    start = key_line(text, "mountinfo")
    info = mountinfo_text(data.get("mountinfo"), source, start)
    # A multi-line TOML string starting right after `mountinfo = """` begins on the next line.
    first = (start or 0) + 1
    mounts = tuple(mountinfo.parse(info, source, first, progress))
    raw_targets = data.get("targets", [])
    lines = toml_target_lines(text) if isinstance(raw_targets, list) else []
    targets = targets_from_json(raw_targets, source, text, lines, "an array of tables ([[targets]])")
    expect = data.get("expect", {})
    return Dump(source, info, mounts, targets, mount_ids(data, "file_mounts", source, text),
                mount_ids(data, "locked_mounts", source, text), str(data.get("title", "")),
                expect if isinstance(expect, dict) else {})
