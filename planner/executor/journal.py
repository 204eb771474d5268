"""The rollback journal: what the executor has done that the tree must not keep, newest last
(moved-aside mounts, parents made private, keepers, yards, new bind mounts), and the records it
keeps of moves and yards. Undoing it is the executor's (mounts.py: rollback)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Aside:
    mount: int
    origin: str
    slot: str  # names the mount while it is out (no fd is kept: fds stay bounded however many are out)
    made: bool = False  # a slot made for this move outside any yard: removed when the mount comes back


@dataclass(slots=True)
class Yard:
    path: str
    fd: int  # the yard tmpfs's own mount fd (slots are named from it); -1 once closed
    made: list[str]  # directories the executor made for it (mkdir -p), outermost first; they go with it
    slots: dict[str, bool]  # slot name -> is a directory (not a file)
    live: int = -1  # its live mount id


@dataclass
class Journal:
    """What has been done that the tree must not keep, newest last."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def push(self, kind: str, item: Any) -> None:
        self.entries.append((kind, item))

    def pop(self, kind: str, match: Callable[[Any], bool]) -> Any | None:
        for i in range(len(self.entries) - 1, -1, -1):
            k, item = self.entries[i]
            if k == kind and match(item):
                del self.entries[i]
                return item
        return None

    def insert_before(self, kind: str, match: Callable[[Any], bool], entry: tuple[str, Any]) -> None:
        """Put `entry` just before the oldest entry of `kind` that matches (at the end if none)."""
        for i, (k, item) in enumerate(self.entries):
            if k == kind and match(item):
                self.entries.insert(i, entry)
                return
        self.entries.append(entry)

    def pop_aside(self, mount: object) -> Aside | None:
        """The move-aside of `mount`: in a plan's bracket order, the newest entry."""
        entries = self.entries
        if entries:
            kind, item = entries[-1]
            if kind == "aside" and item.mount == mount:
                entries.pop()
                return item  # type: ignore[no-any-return]
        found: Aside | None = self.pop("aside", lambda a: a.mount == mount)
        return found
