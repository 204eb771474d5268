"""Restore targets: what a process must reach again at restore time."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("open", "chdir", "bind", "mmap", "mount-source")


@dataclass(frozen=True)
class Target:
    """An object the dump saw in mount `mount` at absolute path `path`.

    A path alone is ambiguous under an overmount; the mount id decides.
    `to` is the bind mount's destination, for kind mount-source only.
    """

    id: str
    kind: str
    mount: int
    path: str
    to: str | None = None
    line_no: int | None = field(default=None, compare=False)  # where the dump names it, for errors
    origin: str | None = field(default=None, compare=False)  # a --target option, when it came from one

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "kind": self.kind, "mount": self.mount, "path": self.path}
        if self.to is not None:
            out["to"] = self.to
        return out
