"""A symbolic mount namespace: the kernel's path walk and mount moves, over a dumped tree.

Used by the planner (to choose moves) and by check (to verify any plan). Mounts
are keyed by their dump id; mounts the plan creates (the yard, keepers, new bind
mounts) get negative ids. Children are indexed by (parent, path relative to the
parent's mountpoint), so a move carries a whole subtree for free.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import NamedTuple

from planner.mountinfo import Mount
from planner.paths import is_under, join, relative
from planner.tree import MountTree


class SimError(Exception):
    """A step the kernel would refuse, or that does not do what it says."""


class Landing(NamedTuple):  # a tuple: a plan of 1e4 targets makes 1e5 of these
    """Where a walk of a path ends: in `mount`, at `rel` inside it (\"\" = its root).

    A walk `along` a chain of mounts that leaves the chain ends where it leaves: `off_chain`, in the
    mount the path names there (the top of the stack the walk stepped onto), at its root."""

    mount: int
    rel: str
    base: str  # the absolute path at which the walk entered `mount`
    off_chain: bool = False


Children = dict[tuple[int, str], tuple[int, ...]]


class _Start(NamedTuple):
    root: int
    root_path: str
    parent: dict[int, int | None]
    rel: dict[int, str]
    group: dict[int, int | None]
    master: dict[int, int | None]
    children: Children
    crowded_roots: int  # roots with side-by-side siblings on them (Namespace._crowded)


# The dumped tree as a namespace holds it, per tree (a namespace may start with some mounts not yet
# attached, but what it is judged against is always this). make_plan builds two
# namespaces over one tree (the planner's, then check_plan's), and on a 1e5-mount tree
# working this out is most of their setup; each Namespace copies these dicts, whose values
# are immutable, so nothing is shared that a step could change. Weak keys: the entry goes
# with its tree (a MountTree is not changed after it is built).
_starts: weakref.WeakKeyDictionary[MountTree, _Start] = weakref.WeakKeyDictionary()


def _start_of(tree: MountTree) -> _Start:
    start = _starts.get(tree)
    if start is None:
        parents: dict[int, int | None] = {tree.root.mount_id: None}
        rels: dict[int, str] = {tree.root.mount_id: ""}
        children: Children = {}
        # From the tree's own index, which already groups mounts by place in stacking order.
        for (parent_id, mountpoint), ids in tree.children_at.items():
            above = tree.by_id[parent_id].mountpoint  # relative(mountpoint, above), inlined: 1e5 places
            rel = "" if mountpoint == above else mountpoint if above == "/" else mountpoint[len(above) :]
            children[(parent_id, rel)] = ids
            for mount_id in ids:
                parents[mount_id], rels[mount_id] = parent_id, rel
        groups: dict[int, int | None] = dict.fromkeys(tree.by_id)  # top_down: a forest's stand-in too
        masters = dict(groups)
        for mount in tree.mounts:
            if mount.optional:  # most mounts of a private namespace have none
                groups[mount.mount_id], masters[mount.mount_id] = mount.groups
        crowded = sum(1 for (_, rel), ids in children.items() if rel == "" and len(ids) > 1)
        start = _starts[tree] = _Start(tree.root.mount_id, tree.root.mountpoint, parents, rels, groups, masters,
                                       children, crowded)
    return start


class Namespace:
    """Mounts by id, each property in its own dict of plain values.

    Not one object per mount: a copy of a few dicts is the whole setup cost, and
    plain ints and strings give the garbage collector nothing to scan (on a 1e5-mount
    tree objects per mount cost more in collections than in building them).
    parent[m] is None for the root and for a mount not attached anywhere.
    """

    def __init__(self, tree: MountTree, unattached: Iterable[int] = ()) -> None:
        """The dumped tree, but for the mounts in `unattached`: those start detached (each keeps its
        own subtree), as a restorer that builds the tree mount by mount finds them."""
        self._begin(_start_of(tree))
        for mount_id in unattached:
            self.detach(mount_id)

    @classmethod
    def as_dumped(cls, ns: Namespace) -> Namespace:
        """A namespace holding `ns`'s tree as dumped: every mount attached where the dump has it."""
        fresh = cls.__new__(cls)
        fresh._begin(ns.start)
        return fresh

    def _begin(self, start: _Start) -> None:
        self.start = start
        self.parent = dict(start.parent)
        self.rel = dict(start.rel)  # mountpoint relative to the parent's mountpoint
        self.group = dict(start.group)  # peer group when shared
        self.master = dict(start.master)  # the group this mount is a slave of
        self.labels: dict[int, str] = {}  # names of the mounts the plan creates
        self.children: Children = dict(start.children)
        self.root = start.root
        self.root_path = start.root_path
        self._next_id = -1
        # The top of each stack on a mount's root, by the stack's bottom mount, and each stacked
        # mount's bottom: kept across the moves that take the top off or put one mount on top, so
        # a stack a thousand deep taken apart and put back costs a walk per move, not a climb.
        self._tops: dict[int, int] = {}
        self._bottom: dict[int, int] = {}
        # Roots with side-by-side siblings on them (legacy): stacks are then climbed, never kept.
        self._crowded = start.crowded_roots

    def add(self, label: str, group: int | None = None, master: int | None = None) -> int:
        """A new, unattached mount (yard, keeper, bind mount); its id is negative."""
        mount_id = self.new_id()
        self.parent[mount_id], self.rel[mount_id] = None, ""
        self.group[mount_id], self.master[mount_id] = group, master
        self.labels[mount_id] = label
        return mount_id

    def label(self, mount_id: int) -> str:
        return self.labels.get(mount_id) or f"mount {mount_id}"

    def new_id(self) -> int:
        self._next_id -= 1
        return self._next_id + 1

    def walk(self, path: str, along: list[int] | None = None) -> Landing:
        """The kernel's walk from the root: at each prefix, step onto the topmost mount there.

        along: a chain of mounts from the root down (the planner's: a target's mount and its
        ancestors); the walk steps only onto them, and where a stack holds another mount on top it
        stops there, off the chain (Landing.off_chain)."""
        if not is_under(path, self.root_path):
            raise SimError(f"{path} is outside the namespace root {self.root_path}")
        children = self.children
        rest = relative(path, self.root_path)  # "" or "/a/b"
        # The walk is in `mount`, at rest[start:end] inside it; it entered `mount` at rest[:start],
        # and has followed `along` `depth` mounts down.
        mount, start, end, depth = self.root, 0, 0, 0
        while True:
            stack = children.get((mount, rest[start:end]))
            if stack:
                if along is None:
                    mount, start = self.top_of(stack[-1]), end
                else:
                    while stack:
                        if depth + 1 < len(along) and stack[-1] == along[depth + 1]:
                            mount, start, depth = stack[-1], end, depth + 1
                            stack = children.get((mount, ""))
                        else:
                            return Landing(self.top_of(stack[-1]), "", join(self.root_path, rest[:end]), True)
            if end == len(rest):
                return Landing(mount, rest[start:], join(self.root_path, rest[:start]))
            end = rest.find("/", end + 1)
            if end < 0:
                end = len(rest)

    def mount_path(self, mount_id: int) -> str | None:
        """Absolute path of a mount's root, or None when it is not reachable from the root."""
        parts = []
        current = mount_id
        while current != self.root:
            parent = self.parent[current]
            if parent is None:
                return None
            parts.append(self.rel[current])
            current = parent
        return join(self.root_path, "".join(reversed(parts)))

    def path_to(self, mount_id: int, rel: str) -> str | None:
        """The path of place `rel` inside a mount as it hangs now (through the yard while it is
        parked there), or None when it hangs from nothing. The path may be covered: walk it to know."""
        top = self.mount_path(mount_id)
        return None if top is None else join(top, rel)

    def chain(self, mount_id: int) -> list[int] | None:
        """The mounts from the root down to `mount_id` as they stand now, or None when the
        mount does not hang from the root through dumped mounts (it rides in the yard)."""
        out = []
        current: int | None = mount_id
        while current is not None and current >= 0:
            out.append(current)
            if current == self.root:
                out.reverse()
                return out
            current = self.parent[current]
        return None

    def detach(self, mount_id: int) -> None:
        parent = self.parent[mount_id]
        assert parent is not None
        place = (parent, self.rel[mount_id])
        ids = self.children[place]
        if place[1] == "":  # it leaves a stack: the stack's top is now its parent, when that is all
            if len(ids) > 1 or self._crowded or (mount_id, "") in self.children:
                self._forget()
            else:
                bottom = self._bottom_of(mount_id)
                if self._tops.get(bottom) == mount_id:
                    self._tops[bottom] = parent
                self._bottom.pop(mount_id, None)
            self._count_crowded(len(ids), len(ids) - 1)
        left = tuple(other for other in ids if other != mount_id)
        if left:
            self.children[place] = left
        else:
            del self.children[place]
        self.parent[mount_id] = None

    def attach(self, mount_id: int, path: str) -> Landing:
        """Attach on top of whatever `path` leads to now, as mount(2) and move_mount(2) do."""
        landing = self.walk(path)
        self.attach_at(mount_id, landing)
        return landing

    def attach_at(self, mount_id: int, landing: Landing) -> None:
        """Attach where a walk just ended (a caller that has looked at the landing need not walk twice)."""
        place = (landing.mount, landing.rel)
        before = self.children.get(place, ())
        if landing.rel == "":  # it goes on top of a stack: the new top, when it carries none of its own
            if before or self._crowded or (mount_id, "") in self.children:
                self._forget()
            else:
                bottom = self._bottom_of(landing.mount)
                if self._tops.get(bottom) == landing.mount:
                    self._tops[bottom] = mount_id
                self._bottom[mount_id] = bottom
            self._count_crowded(len(before), len(before) + 1)
        self.parent[mount_id], self.rel[mount_id] = landing.mount, landing.rel
        self.children[place] = before + (mount_id,)

    def mount_at(self, path: str) -> int:
        """The mount whose root `path` names, as `mount --move PATH` needs; SimError if none."""
        landing = self.walk(path)
        if landing.rel:
            raise SimError(f"{path} is not a mount point (it leads inside {self.label(landing.mount)})")
        return landing.mount

    def in_subtree(self, mount_id: int, top: int) -> bool:
        current: int | None = mount_id
        if not self._crowded and mount_id != top and (mount_id, "") not in self.children:
            # The top of a stack: every mount of the stack lies under it, and the climb down to the
            # stack's bottom is skipped (it would cost the stack's height on every move).
            bottom = self._bottom_of(mount_id)
            if bottom != mount_id:
                if self._bottom_of(top) == bottom:
                    return True
                current = bottom
        while current is not None:
            if current == top:
                return True
            current = self.parent[current]
        return False

    def top_of(self, mount_id: int) -> int:
        """The mount a walk ends on at `mount_id`'s root: the top of its stack."""
        if (mount_id, "") not in self.children:
            return mount_id
        if self._crowded:
            return self._climb(mount_id)
        # One mount at most on each root: a stack is one line, the same top from any of its mounts.
        bottom = self._bottom_of(mount_id)
        top = self._tops.get(bottom)
        if top is None:
            top = self._tops[bottom] = self._climb(bottom)
        return top

    def _climb(self, mount_id: int) -> int:
        stack = self.children.get((mount_id, ""))
        while stack:
            mount_id = stack[-1]
            stack = self.children.get((mount_id, ""))
        return mount_id

    def _bottom_of(self, mount_id: int) -> int:
        """The mount at the bottom of the stack `mount_id` is in (itself when it is on no root)."""
        bottom = self._bottom.get(mount_id)
        if bottom is None:
            stacked = []
            bottom = mount_id
            while self.rel[bottom] == "" and (below := self.parent[bottom]) is not None:
                stacked.append(bottom)
                bottom = below
            for mount in stacked:
                self._bottom[mount] = bottom
        return bottom

    def _forget(self) -> None:
        self._tops.clear()
        self._bottom.clear()

    def _count_crowded(self, before: int, after: int) -> None:
        self._crowded += (after > 1) - (before > 1)

    def is_as_dumped(self) -> bool:
        """Every dumped mount where it was dumped, with its propagation, and nothing else attached.

        Plain dict comparisons, in C: a plan that restores the tree passes this without shape()
        having to be worked out for every mount (mounts the plan made and took away again stay
        in the dicts, detached, and are not compared)."""
        start = self.start
        return (self.children == start.children and start.parent.items() <= self.parent.items()
                and start.rel.items() <= self.rel.items() and start.group.items() <= self.group.items()
                and start.master.items() <= self.master.items())

    def shape(self) -> dict[int, tuple[int | None, str, int | None, int | None]]:
        """What must come back identical: each mount's parent, place and propagation.

        Legacy side-by-side siblings (two mounts on one place of one parent, the
        earlier listed on top) are taken as the stack path resolution sees: since Linux 4.11 no
        move or mount creates side-by-side mounts, so a moved-back upper sibling
        lands on the top of the lower one's stack, and the walk is unchanged.
        """
        out: dict[int, tuple[int | None, str, int | None, int | None]] = {}
        out[self.root] = (None, "", self.group[self.root], self.master[self.root])
        for (parent, rel), ids in self.children.items():
            for position, mount_id in enumerate(ids):
                if position == 0:
                    out[mount_id] = (parent, rel, self.group[mount_id], self.master[mount_id])
                else:
                    out[mount_id] = (self.top_of(ids[position - 1]), "", self.group[mount_id], self.master[mount_id])
        return out


# One namespace per tree that no step ever changes, for `visible`: its setup is a copy of the tree's
# start, made once, not per question.
_as_dumped: weakref.WeakKeyDictionary[MountTree, Namespace] = weakref.WeakKeyDictionary()


def visible(tree: MountTree, path: str) -> Mount:
    """The mount a walk of `path` ends in, in the tree as dumped (the same walk as every step's)."""
    ns = _as_dumped.get(tree)
    if ns is None:
        ns = _as_dumped[tree] = Namespace(tree)
    return tree.by_id[ns.walk(path).mount]
