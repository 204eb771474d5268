"""MountTree: a dumped mount table as a tree, indexed for path resolution."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from planner.bulk import collector_paused
from planner.errors import DumpError
from planner.mountinfo import Mount
from planner.paths import is_under


class MountTree:
    """Mounts by id, children by (parent, mountpoint) in stacking order, bottom first.

    `children_at` holds mount ids (tuples), `children` the Mount records (listing order).

    Mounts on one mountpoint of one parent are legacy side-by-side siblings (kernels
    3.14 to 4.10 attached a propagated copy *behind* the mount already there): path
    lookup returns the one mounted first, which mountinfo lists first, so the
    earlier listed is on top and `children_at` holds such a place in reverse
    listing order. Modern kernels stack instead: the upper mount's parent is the
    lower one, same mountpoint (and a tucked propagated copy becomes the parent of
    the mount that was there).

    A table need not be one tree. /proc/PID/mountinfo of a process chrooted into a
    plain directory lists only the mounts below its root, relative to it; filtered
    tables and excerpts look the same. Their *tops* (mounts whose parent is not
    listed) then hang from a stand-in `root`: a mount at / with id `stand_in` (no id of
    the table) standing for what the table does not list, each top at its own
    mountpoint with its parent id rewritten to the stand-in; `unlisted_parent` keeps
    the id the table named. Tops hanging from one unlisted mount are siblings on it;
    how tops of different unlisted mounts lie relative to each other is unknown
    (`unlisted_on` says where that matters). A table whose one top is at / is a plain tree.
    """

    def __init__(self, mounts: Iterable[Mount], source: str = "<dump>") -> None:
        with collector_paused():
            self._build(mounts, source)

    def _build(self, mounts: Iterable[Mount], source: str) -> None:
        self.source = source
        self.mounts: list[Mount] = list(mounts)
        self.by_id: dict[int, Mount] = {mount.mount_id: mount for mount in self.mounts}
        if len(self.by_id) != len(self.mounts):
            seen: dict[int, Mount] = {}
            for mount in self.mounts:
                first = seen.setdefault(mount.mount_id, mount)
                if first is not mount:
                    raise DumpError(source, mount.line_no, f"duplicate mount id {mount.mount_id} (first on line {first.line_no})")
        self.order: dict[int, int] = {mount.mount_id: index for index, mount in enumerate(self.mounts)}
        if not self.mounts:
            raise DumpError(source, None, "empty mount table")
        tops = [m for m in self.mounts if m.parent_id not in self.by_id or m.parent_id == m.mount_id]
        for top in tops:
            if top.parent_id == top.mount_id and top.mountpoint != "/":
                # The kernel prints a mount as its own parent only for the namespace's root mount.
                raise DumpError(source, top.line_no, f"mount {top.mount_id} is its own parent, which only a root mount at / can be")
        if not tops:
            raise DumpError(source, self.mounts[0].line_no, "no root mount: every parent id is in the table (a cycle)")
        self.stand_in: int | None = None
        self.unlisted_parent: dict[int, int] = {}  # top -> the parent id the table names (not listed)
        if len(tops) == 1 and tops[0].mountpoint == "/":
            self.root = tops[0]
        else:
            self._plant_forest(tops)
        # Ids in tuples, not Mounts in lists: the GC stops tracking a tuple of ints, and on a
        # 1e5-mount host a list per place cost more in collections than the build itself.
        self.children_at: dict[tuple[int, str], tuple[int, ...]] = {}
        crowded: dict[tuple[int, str], list[int]] = {}  # places holding several mounts, while building
        self.children: dict[int, list[Mount]] = defaultdict(list)
        by_id, children_at, children = self.by_id, self.children_at, self.children
        for mount in self.mounts:
            if mount is self.root:
                continue
            parent = by_id[mount.parent_id]
            if not is_under(mount.mountpoint, parent.mountpoint):
                raise DumpError(
                    source,
                    mount.line_no,
                    f"mount {mount.mount_id} at {mount.mountpoint} is not under its parent {parent.mount_id} at {parent.mountpoint}",
                )
            place = (parent.mount_id, mount.mountpoint)
            if place not in children_at:
                children_at[place] = (mount.mount_id,)
            else:
                crowded.setdefault(place, list(children_at[place])).append(mount.mount_id)
            children[parent.mount_id].append(mount)
        for place, ids in crowded.items():
            self.children_at[place] = tuple(reversed(ids))  # bottom first: the earliest listed is on top
        self.top_down = self._parents_first()

    def _plant_forest(self, tops: list[Mount]) -> None:
        stand_in = 0 if 0 not in self.by_id else max(self.by_id) + 1
        self.stand_in = stand_in
        # 0:0 is no device the kernel hands out (anonymous minors start at 1).
        self.root = Mount(stand_in, stand_in, 0, 0, "/", "/", "rw", (), "none", "(not listed)", "rw")
        self.by_id[stand_in] = self.root
        index = {id(m): i for i, m in enumerate(self.mounts)}
        for top in tops:
            self.unlisted_parent[top.mount_id] = top.parent_id
            on_stand_in = top._replace(parent_id=stand_in)
            self.mounts[index[id(top)]] = self.by_id[top.mount_id] = on_stand_in

    @property
    def tops(self) -> list[Mount]:
        """The mounts whose parent the table does not list: the forest's trees (the root, in one tree)."""
        if self.stand_in is None:
            return [self.root]
        return self.children.get(self.stand_in, [])

    def listed(self, mount_id: int) -> bool:
        """A mount of the table (not the stand-in for what it does not list)."""
        return mount_id in self.by_id and mount_id != self.stand_in

    def top_of(self, mount_id: int) -> Mount:
        """The top of the tree `mount_id` belongs to."""
        mount = self.by_id[mount_id]
        if self.stand_in is None:
            return self.root
        while mount.parent_id != self.stand_in and mount is not self.root:
            mount = self.by_id[mount.parent_id]
        return mount

    def unlisted_on(self, path: str, home: int) -> list[tuple[int, Mount]]:
        """(unlisted mount, top hanging from it) for each top on `path` (at it or at a prefix of it)
        that hangs from another unlisted mount than `home`'s top: whether it lies over the path or
        under it depends on mounts the table does not list. Empty in a plain tree."""
        if self.stand_in is None:
            return []
        own = self.unlisted_parent.get(self.top_of(home).mount_id)
        found = []
        parts = [p for p in path.split("/") if p]
        prefix = "/"
        for depth in range(len(parts) + 1):
            if depth:
                prefix = prefix.rstrip("/") + "/" + parts[depth - 1]
            for top_id in self.children_at.get((self.stand_in, prefix), ()):
                unlisted = self.unlisted_parent[top_id]
                if unlisted != own:
                    found.append((unlisted, self.by_id[top_id]))
        return found

    def _parents_first(self) -> list[Mount]:
        ordered = [self.root]
        index = 0
        while index < len(ordered):
            # get(), not [], so that the defaultdict stores no empty list for each leaf mount:
            # on a big host that is most mounts, and each list is one more object for the GC to scan.
            ordered.extend(self.children.get(ordered[index].mount_id, ()))
            index += 1
        if len(ordered) != len(self.by_id):
            reached = {m.mount_id for m in ordered}
            stray = next(m for m in self.mounts if m.mount_id not in reached)
            raise DumpError(self.source, stray.line_no, f"mount {stray.mount_id} is in a parent cycle, unreachable from the root")
        return ordered

    def chain(self, mount_id: int) -> list[Mount]:
        """The mounts from the root down to `mount_id`."""
        out = []
        mount = self.by_id[mount_id]
        while mount is not self.root:
            out.append(mount)
            mount = self.by_id[mount.parent_id]
        out.append(self.root)
        out.reverse()
        return out

    def is_legacy_below(self, lower: Mount, upper: Mount) -> bool:
        """True when `upper` lies on top of its side-by-side sibling `lower`: it is listed earlier."""
        return self.order[upper.mount_id] < self.order[lower.mount_id]

    def stack_on(self, mount: Mount) -> list[Mount]:
        """Mounts stacked on `mount`'s root, bottom-up, each followed by its own stack."""
        out: list[Mount] = []
        # A loop, not recursion: a stack is as deep as the dump says (a thousand mounts on one path).
        pending = list(reversed(self.children_at.get((mount.mount_id, mount.mountpoint), ())))
        while pending:
            child = self.by_id[pending.pop()]
            out.append(child)
            pending.extend(reversed(self.children_at.get((child.mount_id, child.mountpoint), ())))
        return out
