"""A mount tree as relations, in dump ids: each mount's parent, mountpoint, root and device, and its
peer groups, masters and unbindable flag. What the replica must come out as, what the executor's
run must leave, and the difference between two, one line each (pure)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from planner.mountinfo import Mount

Key = int | str  # a dump mount id, or "live:N" for a mount the dump does not have


@dataclass(frozen=True)
class MountShape:
    parent: Key | None
    mountpoint: str
    root: str
    dev: str


@dataclass(frozen=True)
class TreeShape:
    """A mount tree in dump ids: structure plus propagation as relations, not kernel numbers.

    `slaves` holds one (members of the master group, its slaves) pair per master
    group; members is empty for a master outside the tree.
    """

    mounts: Mapping[Key, MountShape]
    peer_groups: frozenset[frozenset[Key]]
    slaves: frozenset[tuple[frozenset[Key], frozenset[Key]]]
    unbindable: frozenset[Key]

    def without(self, keys: Collection[Key]) -> TreeShape:
        drop = set(keys)
        return TreeShape(
            mounts={k: v for k, v in self.mounts.items() if k not in drop},
            peer_groups=frozenset(g - drop for g in self.peer_groups if g - drop),
            slaves=frozenset((m - drop, s - drop) for m, s in self.slaves if s - drop),
            unbindable=self.unbindable - drop,
        )

    def diff(self, other: TreeShape) -> list[str]:
        """What differs from `other`, one line per difference (empty when equal)."""
        out = []
        for key in sorted(set(self.mounts) | set(other.mounts), key=str):
            a, b = self.mounts.get(key), other.mounts.get(key)
            if a != b:
                out.append(f"mount {key}: {_describe(a)} != {_describe(b)}")
        for name in ("peer_groups", "slaves", "unbindable"):
            a_rel, b_rel = getattr(self, name), getattr(other, name)
            if a_rel != b_rel:
                out.append(f"{name}: {_fmt(a_rel - b_rel)} only here, {_fmt(b_rel - a_rel)} only there")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "mounts": {
                str(k): {
                    "parent": v.parent,
                    "mountpoint": v.mountpoint,
                    "root": v.root,
                    "dev": v.dev,
                }
                for k, v in sorted(self.mounts.items(), key=lambda kv: str(kv[0]))
            },
            "peer_groups": sorted(sorted(g, key=str) for g in self.peer_groups),
            "slaves": sorted(
                ({"master": sorted(m, key=str), "slaves": sorted(s, key=str)} for m, s in self.slaves),
                key=str,
            ),
            "unbindable": sorted(self.unbindable, key=str),
        }


def _describe(shape: MountShape | None) -> str:
    if shape is None:
        return "absent"
    return f"parent {shape.parent} on {shape.mountpoint} root {shape.root} dev {shape.dev}"


def _fmt(rel: frozenset[object]) -> str:
    def one(item: object) -> str:
        if isinstance(item, frozenset):
            return "{" + ",".join(sorted(map(str, item))) + "}"
        if isinstance(item, tuple):
            return "->".join(one(x) for x in item)
        return str(item)

    return "[" + " ".join(sorted(one(x) for x in rel)) + "]" if rel else "[]"


def shape_of(
    mounts: Iterable[Mount],
    key: Callable[[int], Key],
    root_text: Callable[[Mount], str],
    dev_text: Callable[[Mount], str],
) -> TreeShape:
    table = list(mounts)
    ids = {m.mount_id for m in table}
    shapes: dict[Key, MountShape] = {}
    groups: dict[int, set[Key]] = {}
    slaves_of: dict[int, set[Key]] = {}
    unbindable = set()
    for m in table:
        k = key(m.mount_id)
        parent = key(m.parent_id) if m.parent_id in ids and m.parent_id != m.mount_id else None
        shapes[k] = MountShape(parent, m.mountpoint, root_text(m), dev_text(m))
        if m.shared is not None:
            groups.setdefault(m.shared, set()).add(k)
        if m.master is not None:
            slaves_of.setdefault(m.master, set()).add(k)
        if m.unbindable:
            unbindable.add(k)
    return TreeShape(
        mounts=shapes,
        peer_groups=frozenset(frozenset(g) for g in groups.values()),
        slaves=frozenset((frozenset(groups.get(g, ())), frozenset(s)) for g, s in slaves_of.items()),
        unbindable=frozenset(unbindable),
    )
