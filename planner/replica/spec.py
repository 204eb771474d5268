"""What a replica of a dump must hold, worked out without a syscall: the dump as a tree the replica can
build (modern kernel rules), where each mount's root lies in its superblock, which mounts are file
mounts, every name each superblock needs and what it is, and the order peer groups are made in.
check_replicable says whether build.py would refuse a dump (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from planner.errors import DumpError, ReplicaError
from planner.mountinfo import Mount
from planner.paths import components, inside, is_clean, join
from planner.replica.shape import TreeShape, shape_of
from planner.simulate import visible
from planner.targets import Target
from planner.tree import MountTree


def sb_path(root: str) -> str:
    """Where a mount's root lives in its replica superblock, as the kernel will print it.

    Roots that are no path (nsfs 'mnt:[4026532659]') or climb ('/..' in a cgroup
    namespace view) get a stand-in directory of the same name shape.
    """
    if not root.startswith("/"):
        root = "/" + root.replace("/", "_")
    parts = ["%2e%2e" if p == ".." else "%2e" if p == "." else p for p in components(root)]
    return "/" + "/".join(parts)


def dump_shape(mounts: Iterable[Mount]) -> TreeShape:
    return shape_of(mounts, lambda i: i, lambda m: sb_path(m.root), lambda m: m.dev)


class DumpTree(MountTree):
    """The dump's MountTree, as the replica can build it (modern kernel rules), plus where a
    path leads and where it lies inside a mount's filesystem."""

    def __init__(self, mounts: list[Mount]) -> None:
        try:
            super().__init__(mounts, "<dump>")
        except DumpError as err:
            raise ReplicaError(f"the replica needs one well-formed tree: {err.reason}") from None
        for (parent, mountpoint), ids in self.children_at.items():
            if len(ids) > 1:
                raise ReplicaError(
                    f"mounts {ids[0]} and {ids[1]} are siblings on the same mountpoint {mountpoint} "
                    f"(parent {parent}): a legacy shadow mount from an old kernel; a modern kernel stacks "
                    f"mounts as parent and child, so this tree cannot be built here "
                    "(overmount plan and check still judge it, symbolically)"
                )
        self.at: dict[tuple[int, str], Mount] = {place: self.by_id[ids[0]] for place, ids in self.children_at.items()}

    def inside(self, m: Mount, path: str, what: str) -> str:
        """`path` (absolute in the namespace) as a path in m's superblock."""
        rel = inside(path, m.mountpoint)
        if rel is None:
            raise ReplicaError(f"{what} {path} is not under mount {m.mount_id}'s mountpoint {m.mountpoint}")
        return join(sb_path(m.root), "/" + rel if rel else "")


def file_mounts_of(tree: DumpTree, targets: Iterable[Target], declared: Collection[int]) -> set[int]:
    """Mounts whose root is a file: the declared ones, plus what the dump itself implies.

    A file target (open, mmap; anything but a directory) at a mount's own mountpoint makes that mount, or a
    child of its mount mounted right there, a file mount; a mount stacked on a file
    mount, or carrying one stacked on it, is one too.
    """
    files = {m for m in declared if m in tree.by_id}
    for t in targets:
        home = tree.by_id.get(t.mount)
        if t.kind not in ("open", "mmap") or t.file_type == "directory" or home is None:
            continue
        if t.path == home.mountpoint and home is not tree.root:
            files.add(home.mount_id)
        child = tree.at.get((home.mount_id, t.path))
        if child is not None and child.mountpoint != home.mountpoint:
            files.add(child.mount_id)
    grown = True
    while grown:
        grown = False
        for m in tree.top_down:
            if m is tree.root or m.mount_id in files:
                continue
            parent = tree.by_id[m.parent_id]
            on_file = parent.mount_id in files and parent.mountpoint == m.mountpoint
            under_file = any(
                c.mount_id in files and c.mountpoint == m.mountpoint for c in tree.children.get(m.mount_id, ())
            )
            if on_file or under_file:
                files.add(m.mount_id)
                grown = True
    return files


# What the replica makes at a path of a superblock: "dir", "file" (a regular file, or any
# non-directory when nothing more is known: a file mount's root or mountpoint), "fifo",
# "socket", "char M:m", "block M:m", or "absent" (a socket's own name: bind(2) makes it).
_SPECIFIC = ("fifo", "socket", "char", "block", "regular")


def object_spec(t: Target) -> str:
    """What the replica makes for target `t`'s own object."""
    if t.kind in ("chdir", "root", "mount-source") or t.file_type == "directory":
        return "dir"
    if t.kind == "bind":
        return "absent"
    if t.file_type in ("char", "block"):
        return f"{t.file_type} {t.rdev or '0:0'}"
    if t.file_type in ("fifo", "socket"):
        return t.file_type
    return "file"


def _refine(have: str, want: str) -> str | None:
    """The one object that is both (a plain "file" is any non-directory); None when none is."""
    if have == want:
        return have
    if have == "file" and want.split(" ")[0] in _SPECIFIC:
        return want
    if want == "file" and have.split(" ")[0] in _SPECIFIC:
        return have
    return None


@dataclass(slots=True)
class Node:
    """One name in a replica superblock: what to make there (see object_spec), and the names below it.

    A tree of names, not a dict of full paths: a target 2,000 directories deep costs 2,000
    nodes, not 2,000 ancestor strings of up to 4 KB each (the review's 203 KB dump took 53 s
    and 257 MB that way).
    """

    kind: str = "dir"
    children: dict[str, Node] = field(default_factory=dict)


def object_kinds(tree: DumpTree, targets: Iterable[Target], file_mounts: Collection[int]) -> dict[str, Node]:
    """Per dump device: the root of the names to make in its superblock."""
    need: dict[str, Node] = {}

    def want(dev: str, path: str, kind: str, why: str) -> None:
        node = need.setdefault(dev, Node())
        parts = components(path)
        for depth, name in enumerate(parts):
            if node.kind != "dir":
                ancestor = "/" + "/".join(parts[:depth])
                raise ReplicaError(f"{why}: {ancestor} on device {dev} must be a directory and a {node.kind}")
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = Node(kind if depth == len(parts) - 1 else "dir")
                if depth == len(parts) - 1:
                    return
            node = child
        both = _refine(node.kind, kind)
        if both is None:
            raise ReplicaError(f"{why}: {path} on device {dev} must be a {kind} and a {node.kind}")
        node.kind = both

    for m in tree.top_down:
        kind = "file" if m.mount_id in file_mounts else "dir"
        want(m.dev, sb_path(m.root), kind, f"root of mount {m.mount_id}")
        if m is not tree.root:
            parent = tree.by_id[m.parent_id]
            want(
                parent.dev,
                tree.inside(parent, m.mountpoint, "mountpoint"),
                kind,
                f"mountpoint of mount {m.mount_id}",
            )
    for t in targets:
        home = tree.by_id.get(t.mount)
        if home is None:
            raise ReplicaError(f"target {t.id} names mount {t.mount}, which the dump does not have")
        _check_clean(t.path, f"target {t.id}")
        if t.kind not in ("open", "mmap", "chdir", "root", "mount-source", "bind"):
            raise ReplicaError(f"target {t.id} has unknown kind {t.kind!r}")
        want(home.dev, tree.inside(home, t.path, f"target {t.id}"), object_spec(t), f"target {t.id}")
        if t.kind == "mount-source":
            if t.to is None:
                raise ReplicaError(f"target {t.id} (mount-source) has no 'to'")
            _check_clean(t.to, f"target {t.id}'s to")
            dest = visible(tree, t.to)
            want(
                dest.dev,
                tree.inside(dest, t.to, f"target {t.id}'s to"),
                "dir",
                f"target {t.id}'s to",
            )
    return need


def _check_clean(path: str, what: str) -> None:
    if not is_clean(path):
        raise ReplicaError(f"{what}: {path!r} must be absolute with no '.', '..' or empty components")


# mknod(2) of a device needs CAP_MKNOD in the initial user namespace: in a user namespace the
# replica puts a regular file in its place and says so.


def group_order(
    tree: DumpTree,
) -> tuple[list[int], dict[int, int | None], dict[int, str]]:
    """Peer groups masters first, each group's master group, each group's device.

    Worked out from the whole table, in any listing order: a group's master is what its
    members say (they must agree); a group only named as some slave's master, with no member
    in the table, has its master outside (None). A slave may be listed before the members of
    its master group, and that group may itself be a slave.
    """
    members_master: dict[int, int | None] = {}  # group -> master, as its members say
    named_master: set[int] = set()  # groups some slave names as its master
    dev_of: dict[int, str] = {}
    for m in tree.top_down:
        for g in (m.shared, m.master):
            if g is None:
                continue
            if dev_of.setdefault(g, m.dev) != m.dev:
                raise ReplicaError(
                    f"peer group {g} spans devices {dev_of[g]} and {m.dev} (mount {m.mount_id}); "
                    "peers and their slaves share one superblock"
                )
        if m.shared is not None:
            have = members_master.setdefault(m.shared, m.master)
            if have != m.master:
                raise ReplicaError(f"peers of group {m.shared} disagree on their master ({have} and {m.master})")
        if m.master is not None:
            named_master.add(m.master)
    master_of = {g: members_master.get(g) for g in members_master.keys() | named_master}
    order: list[int] = []
    done: set[int] = set()
    for g in sorted(master_of):
        # Up the chain of masters to a group already placed (a loop: chains can be long).
        chain: list[int] = []
        on_chain: set[int] = set()
        up: int | None = g
        while up is not None and up not in done:
            if up in on_chain:
                raise ReplicaError(f"peer group {up} is its own master (a propagation cycle)")
            chain.append(up)
            on_chain.add(up)
            up = master_of[up]
        for group in reversed(chain):
            done.add(group)
            order.append(group)
    return order, master_of, dev_of


def check_replicable(mounts: list[Mount], targets: Iterable[Target] = (), file_mounts: Collection[int] = frozenset()) -> None:
    """ReplicaError when build_replica would refuse the dump, found without any syscall."""
    targets = list(targets)
    tree = DumpTree(mounts)
    object_kinds(tree, targets, file_mounts_of(tree, targets, file_mounts))
    group_order(tree)
