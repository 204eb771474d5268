"""A bare /proc/PID/mountinfo table as a dump: its mounts, no targets (they come from --target)."""

from __future__ import annotations

from planner import mountinfo
from planner.dump import Dump
from planner.inputs.source import Source
from planner.progress import Progress, quiet


def read(source: Source, progress: Progress = quiet) -> Dump:
    text = source.text
    return Dump(source.name, text, tuple(mountinfo.parse(text, source.name, progress=progress)), ())
