"""A symbolic mount namespace: the kernel's path walk and mount moves, over a dumped tree.

Used by the planner (to choose moves) and by check (to verify any plan). Mounts
are keyed by their dump id; mounts the plan creates (the yard, keepers, new bind
mounts) get negative ids. Children are indexed by (parent, path relative to the
parent's mountpoint), so a move carries a whole subtree for free.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from planner.paths import is_under, join, relative
from planner.tree import MountTree


class SimError(Exception):
    """A step the kernel would refuse, or that does not do what it says."""


@dataclass
class SimMount:
    id: int
    parent: int | None
    rel: str  # mountpoint relative to the parent's mountpoint
    group: int | None  # peer group when shared
    master: int | None  # the group this mount is a slave of
    dev: str
    root: str
    label: str


@dataclass(frozen=True)
class Landing:
    """Where a walk of a path ends: in `mount`, at `rel` inside it (\"\" = its root)."""

    mount: int
    rel: str
    base: str  # the absolute path at which the walk entered `mount`


class Namespace:
    def __init__(self, tree: MountTree) -> None:
        self.mounts: dict[int, SimMount] = {}
        self.children: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.root = tree.root.mount_id
        for mount in tree.mounts:
            is_root = mount is tree.root
            parent = None if is_root else tree.by_id[mount.parent_id]
            rel = "" if parent is None else relative(mount.mountpoint, parent.mountpoint)
            self.mounts[mount.mount_id] = SimMount(
                mount.mount_id, None if parent is None else parent.mount_id, rel, mount.shared, mount.master,
                mount.dev, mount.root, f"mount {mount.mount_id}",
            )
            if parent is not None:
                self.children[(parent.mount_id, rel)].append(mount.mount_id)
        self.root_path = tree.root.mountpoint
        self._next_id = -1

    def new_id(self) -> int:
        self._next_id -= 1
        return self._next_id + 1

    def walk(self, path: str) -> Landing:
        """The kernel's walk from the root: at each prefix, step onto the topmost mount there."""
        if not is_under(path, self.root_path):
            raise SimError(f"{path} is outside the namespace root {self.root_path}")
        mount, base = self.root, self.root_path
        rel = ""
        parts = relative(path, self.root_path).split("/")[1:] if path != self.root_path else []
        while True:
            stack = self.children.get((mount, rel))
            while stack:
                mount, base, rel = stack[-1], join(base, rel), ""
                stack = self.children.get((mount, ""))
            if not parts:
                return Landing(mount, rel, base)
            rel = rel + "/" + parts.pop(0)

    def mount_path(self, mount_id: int) -> str | None:
        """Absolute path of a mount's root, or None when it is not reachable from the root."""
        parts = []
        current = mount_id
        while current != self.root:
            node = self.mounts[current]
            if node.parent is None:
                return None
            parts.append(node.rel)
            current = node.parent
        return join(self.root_path, "".join(reversed(parts)))

    def detach(self, mount_id: int) -> None:
        node = self.mounts[mount_id]
        assert node.parent is not None
        self.children[(node.parent, node.rel)].remove(mount_id)
        if not self.children[(node.parent, node.rel)]:
            del self.children[(node.parent, node.rel)]
        node.parent = None

    def attach(self, mount_id: int, path: str) -> Landing:
        """Attach on top of whatever `path` leads to now, as mount(2) and move_mount(2) do."""
        landing = self.walk(path)
        node = self.mounts[mount_id]
        node.parent, node.rel = landing.mount, landing.rel
        self.children[(landing.mount, landing.rel)].append(mount_id)
        return landing

    def mount_at(self, path: str) -> int:
        """The mount whose root `path` names, as `mount --move PATH` needs; SimError if none."""
        landing = self.walk(path)
        if landing.rel:
            raise SimError(f"{path} is not a mount point (it leads inside {self.mounts[landing.mount].label})")
        return landing.mount

    def in_subtree(self, mount_id: int, top: int) -> bool:
        current: int | None = mount_id
        while current is not None:
            if current == top:
                return True
            current = self.mounts[current].parent
        return False

    def top_of(self, mount_id: int) -> int:
        """The mount a walk ends on at `mount_id`'s root: the top of its stack."""
        stack = self.children.get((mount_id, ""))
        while stack:
            mount_id = stack[-1]
            stack = self.children.get((mount_id, ""))
        return mount_id

    def shape(self) -> dict[int, tuple[int | None, str, int | None, int | None]]:
        """What must come back identical: each mount's parent, place and propagation.

        Legacy shadow siblings (two mounts on one place of one parent, the later
        on top) are taken as the stack path resolution sees: since Linux 4.11 no
        move or mount creates side-by-side mounts, so a moved-back upper sibling
        lands on the top of the lower one's stack, and the walk is unchanged.
        """
        out: dict[int, tuple[int | None, str, int | None, int | None]] = {}
        root = self.mounts[self.root]
        out[self.root] = (None, "", root.group, root.master)
        for (parent, rel), ids in self.children.items():
            for position, mount_id in enumerate(ids):
                node = self.mounts[mount_id]
                if position == 0:
                    out[mount_id] = (parent, rel, node.group, node.master)
                else:
                    out[mount_id] = (self.top_of(ids[position - 1]), "", node.group, node.master)
        return out
