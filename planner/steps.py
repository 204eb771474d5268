"""Plan steps (overmount-plan/1): data only; executing one is someone else's job."""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.paths import unusable

FORMAT = "overmount-plan/1"

# Required fields by op, as DESIGN.md's plan contract states them.
REQUIRED: dict[str, tuple[str, ...]] = {
    "yard-create": ("path",),
    "yard-remove": ("path",),
    "move-aside": ("mount", "from", "to"),
    "move-back": ("mount", "from", "to"),
    "keeper-bind": ("mount", "from", "to"),
    "make-private": ("mount", "path"),
    "rejoin-group": ("mount", "from", "to"),
    "keeper-remove": ("mount", "path"),
    "open": ("target", "mount", "path"),
    "chdir": ("target", "mount", "path"),
    "root": ("target", "mount", "path"),
    "bind": ("target", "mount", "path"),
    "mmap": ("target", "mount", "path"),
    "mount-source": ("target", "mount", "path", "to"),
}
PATH_FIELDS = ("path", "from", "to")
TARGET_OPS = ("open", "chdir", "root", "bind", "mmap", "mount-source")
MOVE_OPS = ("move-aside", "move-back")


@dataclass(frozen=True)
class Step:
    op: str
    mount: int | None = None
    path: str | None = None
    src: str | None = None  # 'from' in JSON
    to: str | None = None
    target: str | None = None
    why: str = field(default="", compare=False)
    # bind only: the visible alias mount the socket's own path leads into (planner.aliases);
    # an extra field of the plan format, for people and executors that check the mount.
    via: int | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"op": self.op}
        for key in REQUIRED[self.op]:
            out[key] = self.src if key == "from" else getattr(self, key)
        if self.via is not None:
            out["via"] = self.via
        if self.why:
            out["why"] = self.why
        return out


def step_from_json(data: object) -> Step:
    """A step from its JSON object; ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a step must be a JSON object")  # noqa: TRY004 (bad data, not a bad call)
    op = data.get("op")
    if not isinstance(op, str) or op not in REQUIRED:  # a list here is unhashable: ask isinstance first
        raise ValueError(f"unknown op {_short(repr(op))}")
    for key in REQUIRED[op]:
        if key not in data:
            raise ValueError(f"{op} needs {key!r}")
        value = data[key]
        wanted: type = int if key == "mount" else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ValueError(f"{op}: {key!r} must be {'an integer' if wanted is int else 'a string'}")  # noqa: TRY004
        problem = unusable(value) if key in PATH_FIELDS and isinstance(value, str) else None
        if problem is not None:
            raise ValueError(f"{op}: {key!r} {problem}")
    why = data.get("why", "")
    via = data.get("via")
    if via is not None and (op != "bind" or not isinstance(via, int) or isinstance(via, bool)):
        raise ValueError(f"{op}: 'via' must be a mount id, and only a bind has one")
    return Step(
        op=op,
        mount=data.get("mount"),
        path=data.get("path"),
        src=data.get("from"),
        to=data.get("to"),
        target=data.get("target"),
        why=why if isinstance(why, str) else "",
        via=via,
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
