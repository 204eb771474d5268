"""Which format a dump is in, by one table: each way a dump comes in, how it is recognised, and the
module that reads it. The first row that recognises the source reads it; the last one takes any text.

To add a format: a module with `read(source, progress) -> Dump`, and a row here in its place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from planner.dump import Dump
from planner.errors import DumpError
from planner.inputs import dump_json, mountinfo_text, scenario
from planner.inputs.criu import CRIT_DECODE, MAGICS
from planner.inputs.source import Source
from planner.inputs.targets import with_target_options
from planner.progress import Progress, quiet


class Format(NamedTuple):  # a tuple, not a dataclass: every start of the tool makes this table
    name: str
    recognises: Callable[[Source], bool]
    read: Callable[[Source, Progress], Dump]


def _binary_image(source: Source, _progress: Progress) -> Dump:
    raise DumpError(source.name, None, f"a binary CRIU image: {CRIT_DECODE}, then give the directory as DUMP")


# The CRIU reader is imported when a CRIU dump comes in: at every start it would cost a tenth of it.
def _crit_directory(source: Source, progress: Progress) -> Dump:
    from planner.inputs.criu import crit_json

    return crit_json.read_directory(source, progress)


def _crit_mountpoints(source: Source, progress: Progress) -> Dump:
    from planner.inputs.criu import crit_json

    return crit_json.read_mountpoints(source, progress)


def _is_crit_mountpoints(source: Source) -> bool:
    return source.looks_like_json() and source.json_object().get("magic") == MAGICS["mountpoints"]


FORMATS: tuple[Format, ...] = (
    Format("crit JSON directory", lambda s: s.is_dir, _crit_directory),
    Format("binary CRIU image", lambda s: s.name.endswith(".img") and not s.data.isascii(), _binary_image),
    Format("scenario TOML", lambda s: s.name.endswith(".toml") or (s.stdin and scenario.looks_like_toml(s.text)),
           scenario.read),
    Format("crit JSON mountpoints image", _is_crit_mountpoints, _crit_mountpoints),
    Format("overmount-dump/1 JSON", lambda s: s.looks_like_json(), dump_json.read),
    Format("mountinfo", lambda s: True, mountinfo_text.read),
)


def load(path: str, target_options: Iterable[str] = (), progress: Progress = quiet) -> Dump:
    """Read any supported dump; --target options add targets (ids t1, t2, ... after the dump's).

    progress hears how far the mount table is read."""
    source = Source.open(path)
    reader = next(f for f in FORMATS if f.recognises(source))
    return with_target_options(reader.read(source, progress), target_options)
