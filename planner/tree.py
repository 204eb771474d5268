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
    """

    def __init__(self, mounts: Iterable[Mount], source: str = "<dump>") -> None:
        with collector_paused():
            self._build(mounts, source)

    def _build(self, mounts: Iterable[Mount], source: str) -> None:
        self.source = source
        self.mounts: list[Mount] = list(mounts)
        self.by_id: dict[int, Mount] = {}
        self.order: dict[int, int] = {}
        for index, mount in enumerate(self.mounts):
            if mount.mount_id in self.by_id:
                first = self.by_id[mount.mount_id].line_no
                raise DumpError(source, mount.line_no, f"duplicate mount id {mount.mount_id} (first on line {first})")
            self.by_id[mount.mount_id] = mount
            self.order[mount.mount_id] = index
        if not self.mounts:
            raise DumpError(source, None, "empty mount table")
        roots = [m for m in self.mounts if m.parent_id not in self.by_id or m.parent_id == m.mount_id]
        if len(roots) != 1:
            if not roots:
                raise DumpError(source, self.mounts[0].line_no, "no root mount: every parent id is in the table (a cycle)")
            raise DumpError(
                source,
                roots[1].line_no,
                f"two root mounts ({roots[0].mount_id} and {roots[1].mount_id}): "
                + (f"mount {roots[1].mount_id} is its own parent" if roots[1].parent_id == roots[1].mount_id
                   else f"parent {roots[1].parent_id} is not in the table"),
            )
        self.root = roots[0]
        if self.root.mountpoint != "/":
            # mountinfo shows paths from the process's root, so the root mount is always at /.
            raise DumpError(source, self.root.line_no, f"root mount {self.root.mount_id} is at {self.root.mountpoint}, not /")
        # Ids in tuples, not Mounts in lists: the GC stops tracking a tuple of ints, and on a
        # 1e5-mount host a list per place cost more in collections than the build itself.
        self.children_at: dict[tuple[int, str], tuple[int, ...]] = {}
        crowded: dict[tuple[int, str], list[int]] = {}  # places holding several mounts, while building
        self.children: dict[int, list[Mount]] = defaultdict(list)
        for mount in self.mounts:
            if mount is self.root:
                continue
            parent = self.by_id[mount.parent_id]
            if not is_under(mount.mountpoint, parent.mountpoint):
                raise DumpError(
                    source,
                    mount.line_no,
                    f"mount {mount.mount_id} at {mount.mountpoint} is not under its parent {parent.mount_id} at {parent.mountpoint}",
                )
            place = (parent.mount_id, mount.mountpoint)
            if place not in self.children_at:
                self.children_at[place] = (mount.mount_id,)
            else:
                crowded.setdefault(place, list(self.children_at[place])).append(mount.mount_id)
            self.children[parent.mount_id].append(mount)
        for place, ids in crowded.items():
            self.children_at[place] = tuple(reversed(ids))  # bottom first: the earliest listed is on top
        self.top_down = self._parents_first()

    def _parents_first(self) -> list[Mount]:
        ordered = [self.root]
        index = 0
        while index < len(ordered):
            # get(), not [], so that the defaultdict stores no empty list for each leaf mount:
            # on a big host that is most mounts, and each list is one more object for the GC to scan.
            ordered.extend(self.children.get(ordered[index].mount_id, ()))
            index += 1
        if len(ordered) != len(self.mounts):
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
        for child_id in self.children_at.get((mount.mount_id, mount.mountpoint), ()):
            child = self.by_id[child_id]
            out.append(child)
            out.extend(self.stack_on(child))
        return out
