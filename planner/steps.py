"""Plan steps (overmount-plan/1) and the op table: data only; executing one is someone else's job.

REQUIRED is the one op table: each op and its required fields, in the order the op's handlers take
them. check (symbolically) and the executor (for real) each give every op a handler through
`handlers_for`, which refuses a table that misses an op or has one more; `arguments` hands a
handler its fields. Target ops take the step itself (their object is named by its `target`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

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


class MissingField(ValueError):
    """A step without a field its op requires (a Step built by hand; step_from_json refuses them)."""

    def __init__(self, op: str, key: str) -> None:
        self.key = key
        super().__init__(f"{op} needs {key!r}")


def _getter(op: str) -> Callable[[Step], tuple[object, ...]]:
    """The op's required fields of a step, in REQUIRED's order, by one C call (the executor asks per step)."""
    attrs = tuple("src" if key == "from" else key for key in REQUIRED[op])
    if len(attrs) == 1:
        one = operator.attrgetter(attrs[0])
        return lambda step: (one(step),)
    return operator.attrgetter(*attrs)


_GETTERS = {op: _getter(op) for op in REQUIRED}
_TARGET_OPS = frozenset(TARGET_OPS)


def arguments(step: Step) -> tuple[object, ...]:
    """What the op's handler takes after its context: the step's required fields, in REQUIRED's
    order ('from' is `src`); for a target op, the step itself. MissingField when one is None."""
    getter = _GETTERS.get(step.op)
    if getter is None:
        return ()
    values = getter(step)
    if None in values:
        raise MissingField(step.op, REQUIRED[step.op][values.index(None)])
    return (step,) if step.op in _TARGET_OPS else values


Handler = TypeVar("Handler", bound=Callable[..., object])


def handlers_for(handlers: Mapping[str, Handler], who: str) -> dict[str, Handler]:
    """`handlers` as an op table, once it has a handler for every op of REQUIRED and for no other."""
    missing, extra = REQUIRED.keys() - handlers.keys(), handlers.keys() - REQUIRED.keys()
    if missing or extra:
        raise AssertionError(f"{who}'s op table: missing {sorted(missing)}, unknown {sorted(extra)}")
    return dict(handlers)


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
