"""The dump: a mount table and the targets to reach in it, as every input format reads it
(planner.inputs) and as capture writes it (overmount-dump/1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.mountinfo import Mount
from planner.targets import Target

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
