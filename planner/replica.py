"""Build a dumped mount tree for real, inside a throwaway mount namespace.

`build_replica` must run in a namespace child (see kernel.run_in_namespace): it
attaches mounts and finally chroots into the replica's root, so the dump's
absolute paths (and a plan's, yard included) work verbatim.

How the tree is made:
- one fresh tmpfs superblock (fsopen/fsmount) per distinct major:minor of the
  dump; every directory a mount root, a mountpoint or a target needs is created
  through its fd, then it is parked on scratch/sb/N and named by path;
- every mount a clone (open_tree OPEN_TREE_CLONE) of its root path in its
  superblock, attached depth first through an O_PATH fd on its mountpoint opened
  from its parent's own fd (siblings deepest mountpoint first). So each mount
  lands on exactly the (parent, dentry) the dump names, whatever covers that path
  later, and stacks come out as parent and child;
- propagation per mount once its subtree is complete (nothing is attached below
  it afterwards, so nothing propagates): per peer group an *anchor* (a full-root
  clone of the superblock, made shared, on scratch/anchors/G) that members join
  with move_mount(MOVE_MOUNT_SET_GROUP); slaves join their master's group, then
  become slaves. Anchors of groups with members in the tree are unmounted (their
  peers keep the group); an anchor whose group has no member in the dump (a master
  outside the namespace) stays, outside the chroot.

Open fds stay bounded by the depth of the tree plus a few, not its size.

Nothing of the scaffolding stays reachable by path: the parked superblocks are
unmounted, the scratch tmpfs holding the replica's root and the kept anchors lies
outside the chroot.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from planner import kernel
from planner.errors import DumpError, ReplicaError
from planner.mountinfo import Mount, parse
from planner.paths import components, depth_of, from_root, inside, is_clean, join
from planner.progress import Progress, every, quiet
from planner.simulate import visible
from planner.targets import Target
from planner.tree import MountTree

Key = int | str  # a dump mount id, or "live:N" for a mount the dump does not have

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CLONE = kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC
_NO_CROSSING = (
    kernel.RESOLVE_NO_XDEV | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS | kernel.RESOLVE_BENEATH
)


def sb_path(root: str) -> str:
    """Where a mount's root lives in its replica superblock, as the kernel will print it.

    Roots that are no path (nsfs 'mnt:[4026532659]') or climb ('/..' in a cgroup
    namespace view) get a stand-in directory of the same name shape.
    """
    if not root.startswith("/"):
        root = "/" + root.replace("/", "_")
    parts = ["%2e%2e" if p == ".." else "%2e" if p == "." else p for p in components(root)]
    return "/" + "/".join(parts)


# --- the tree as relations ---------------------------------------------------------------


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


def dump_shape(mounts: Iterable[Mount]) -> TreeShape:
    return shape_of(mounts, lambda i: i, lambda m: sb_path(m.root), lambda m: m.dev)


# --- the dump as a tree --------------------------------------------------------------------


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


# --- what the replica holds ----------------------------------------------------------------


@dataclass(frozen=True)
class TargetObject:
    """A target as created: where it lives, and the inode the kernel must report for it."""

    id: str
    kind: str
    mount: int
    path: str
    dev: int  # st_dev of the target's superblock
    ino: int  # the file/dir itself; for bind the socket's parent directory
    to: str | None = None
    to_mount: int | None = None
    to_ino: int | None = None
    mode: int = 0  # st_mode of what was made (for bind: of the socket's directory)
    rdev: int = 0  # a device node's number as made
    access: str | None = None  # how the dump's fd held it (open targets)
    file_type: str | None = None  # what the dump says it is
    stand_in: str | None = None  # why a stand-in was made in its place, when one was
    unlinked: bool = False  # a socket name the dumped process had unlinked: unlinked again once bound


@dataclass
class Replica:
    tree: DumpTree
    dump_to_live: dict[int, int]
    live_to_dump: dict[int, int]
    dev_of: dict[str, int]  # dump major:minor -> st_dev of its replica superblock
    objects: dict[str, TargetObject]
    expected: TreeShape
    live_dev_to_dump: dict[str, str] = field(default_factory=dict)
    # fds on the roots of the mounts build_replica was asked to keep (handles_for), by dump id:
    # the executor's own handles, used only to name a mount its path cannot name (one stacked
    # under another).
    handles: dict[int, int] = field(default_factory=dict)

    def key(self, live_id: int) -> Key:
        return self.live_to_dump.get(live_id, f"live:{live_id}")

    def live_table(self) -> list[Mount]:
        return parse(kernel.own_mountinfo(), "/proc/self/mountinfo")

    def snapshot(self, table: list[Mount] | None = None) -> TreeShape:
        """The live tree (as this process sees it) in dump ids."""
        return shape_of(
            table if table is not None else self.live_table(),
            self.key,
            lambda m: m.root,
            lambda m: self.live_dev_to_dump.get(m.dev, f"live:{m.dev}"),
        )


# --- building ---------------------------------------------------------------------------------


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
class _Node:
    """One name in a replica superblock: what to make there (see object_spec), and the names below it.

    A tree of names, not a dict of full paths: a target 2,000 directories deep costs 2,000
    nodes, not 2,000 ancestor strings of up to 4 KB each (the review's 203 KB dump took 53 s
    and 257 MB that way).
    """

    kind: str = "dir"
    children: dict[str, _Node] = field(default_factory=dict)


def _object_kinds(tree: DumpTree, targets: Iterable[Target], file_mounts: Collection[int]) -> dict[str, _Node]:
    """Per dump device: the root of the names to make in its superblock."""
    need: dict[str, _Node] = {}

    def want(dev: str, path: str, kind: str, why: str) -> None:
        node = need.setdefault(dev, _Node())
        parts = components(path)
        for depth, name in enumerate(parts):
            if node.kind != "dir":
                ancestor = "/" + "/".join(parts[:depth])
                raise ReplicaError(f"{why}: {ancestor} on device {dev} must be a directory and a {node.kind}")
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(kind if depth == len(parts) - 1 else "dir")
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
STAND_IN = "a regular file stands in for the {0}: mknod of a device needs CAP_MKNOD in the initial user namespace"


def _populate(sb_fd: int, root: _Node) -> dict[str, str]:
    """Make every object of one superblock; the paths where a stand-in replaced a device, and why.

    Depth first, one directory fd at a time, each name made relative to its own directory (a
    path from the superblock's root would cost the kernel a walk as deep as the name).
    """
    stand_ins: dict[str, str] = {}
    here = os.open(".", _O_PATH_DIR, dir_fd=sb_fd)
    names: list[str] = []  # the directory `here` is, from the superblock's root
    pending = [iter(root.children.items())]
    try:
        while pending:
            entry = next(pending[-1], None)
            if entry is None:
                pending.pop()
                if names:
                    names.pop()
                    here = _enter(here, "..")
                continue
            name, node = entry
            if node.kind == "dir":
                os.mkdir(name, 0o755, dir_fd=here)
                if node.children:
                    here = _enter(here, name)
                    names.append(name)
                    pending.append(iter(node.children.items()))
            elif node.kind != "absent":
                why = _make_object(here, name, node.kind, "/" + "/".join([*names, name]))
                if why is not None:
                    stand_ins["/" + "/".join([*names, name])] = why
    finally:
        os.close(here)
    return stand_ins


def _enter(here: int, name: str) -> int:
    """An O_PATH fd on directory `name` of `here` (or its parent, for '..'), closing `here`."""
    try:
        return os.open(name, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=here)
    finally:
        os.close(here)


def _make_object(here: int, name: str, kind: str, path: str) -> str | None:
    """A non-directory object in directory `here`; why a stand-in replaced it, or None."""
    what = kind.split(" ")[0]
    if what == "fifo":
        os.mkfifo(name, 0o644, dir_fd=here)
        return None
    if what == "socket":
        # A socket inode with no socket bound to it: what an O_PATH fd on a socket file shows.
        os.mknod(name, stat.S_IFSOCK | 0o644, dir_fd=here)
        return None
    why = None
    if what in ("char", "block"):
        major, minor = (int(x) for x in kind.split(" ")[1].split(":"))
        try:
            os.mknod(name, (stat.S_IFCHR if what == "char" else stat.S_IFBLK) | 0o600, os.makedev(major, minor), dir_fd=here)
            return None
        except PermissionError:
            why = STAND_IN.format(f"{what} device {major}:{minor}")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=here)
    try:
        os.write(fd, f"overmount replica object {path}\n".encode())
    finally:
        os.close(fd)
    return why


def _propagation_of(fd: int, flag: int) -> None:
    kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=flag)


def _group_order(
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
    _object_kinds(tree, targets, file_mounts_of(tree, targets, file_mounts))
    _group_order(tree)


def build_replica(
    mounts: list[Mount],
    targets: Iterable[Target] = (),
    scratch_dir: str | None = None,
    file_mounts: Collection[int] = frozenset(),
    handles_for: Collection[int] = frozenset(),
    progress: Progress = quiet,
) -> Replica:
    """Build the dump inside this (already private, throwaway) mount namespace and chroot into it.

    scratch_dir is any existing directory; a private tmpfs is mounted over it in
    this namespace only (default: the temp directory). handles_for: dump ids of mounts
    to keep an O_PATH handle on (Replica.handles); no other fd outlives the build.

    Open fds stay bounded whatever the size of the dump (a 20,000-mount host runs
    under `ulimit -n 1024`): superblocks and anchors are parked on directories and
    named by path, and a mount's own fd lives only while its subtree is built.
    """
    targets = list(targets)
    tree = DumpTree(mounts)
    need = _object_kinds(tree, targets, file_mounts_of(tree, targets, file_mounts))
    groups, group_master, group_dev = _group_order(tree)

    kernel.require_throwaway_namespace("build_replica")
    scratch_dir = scratch_dir or tempfile.gettempdir()
    # Before the scratch tmpfs covers scratch_dir (the venv may live under /tmp) and the chroot
    # hides the rest: /proc stays readable through an fd, and sock_diag is opened now (pyroute2
    # imports its modules lazily).
    kernel.pin_proc()
    kernel.warm_unix_socket_diag()
    opened: list[int] = []
    handles: dict[int, int] = {}
    root_fd = -1
    try:
        scratch = kernel.new_tmpfs({"mode": "0700"})
        opened.append(scratch)
        for name in ("root", "anchors", "sb"):
            os.mkdir(name, 0o700 if name != "root" else 0o755, dir_fd=scratch)
        kernel.attach(scratch, kernel.AT_FDCWD, scratch_dir)

        # One fresh superblock per dump device, filled through its fd, then parked on a
        # directory of its own tmpfs (scratch/sb/N) and named by path from there on.
        sbs = kernel.new_tmpfs({"mode": "0700"})
        opened.append(sbs)
        kernel.attach(sbs, scratch, "sb")
        sb_dir, dev_of, stand_ins = _park_superblocks(tree, need, sbs, progress)

        def in_sb(dev: str, path: str) -> str:
            rel = from_root(path)
            return sb_dir[dev] if rel == "." else f"{sb_dir[dev]}/{rel}"

        objects = _target_objects(
            tree, targets, lambda dev, path: os.stat(in_sb(dev, path), dir_fd=sbs, follow_symlinks=False), dev_of, stand_ins
        )

        anchors = os.open("anchors", _O_PATH_DIR, dir_fd=scratch)
        opened.append(anchors)
        for g in groups:
            _make_anchor(anchors, str(g), kernel.open_tree(sbs, sb_dir[group_dev[g]], _CLONE), group_master[g])

        def clone(m: Mount) -> int:
            return kernel.open_tree(sbs, in_sb(m.dev, sb_path(m.root)), _CLONE)

        root_fd = clone(tree.root)
        kernel.attach(root_fd, scratch, "root")
        dump_to_live = _attach_below(tree, root_fd, clone, anchors, handles, set(handles_for), progress)

        os.close(opened.pop(opened.index(sbs)))
        _drop_scaffolding(tree, groups, scratch_dir)
        os.fchdir(root_fd)
        os.chroot(".")
        os.chdir("/")
    finally:
        for fd in opened:
            os.close(fd)
        if root_fd >= 0 and tree.root.mount_id not in handles:
            os.close(root_fd)

    live_dev_to_dump = {f"{os.major(d)}:{os.minor(d)}": dev for dev, d in dev_of.items()}
    replica = Replica(
        tree=tree,
        dump_to_live=dump_to_live,
        live_to_dump={v: k for k, v in dump_to_live.items()},
        dev_of=dev_of,
        objects=objects,
        expected=dump_shape(tree.top_down),
        live_dev_to_dump=live_dev_to_dump,
        handles=handles,
    )
    problems = replica.expected.diff(replica.snapshot())
    if problems:
        raise ReplicaError("the replica differs from the dump: " + "; ".join(problems))
    return replica


def _park_superblocks(
    tree: DumpTree, need: dict[str, _Node], sbs: int, progress: Progress
) -> tuple[dict[str, str], dict[str, int], dict[tuple[str, str], str]]:
    """One fresh superblock per dump device, holding every name the dump needs in it, parked on a
    directory of the `sbs` tmpfs: (its directory by device, its st_dev by device, the stand-ins made)."""
    sb_dir: dict[str, str] = {}
    dev_of: dict[str, int] = {}
    stand_ins: dict[tuple[str, str], str] = {}
    devices = len({m.dev for m in tree.top_down})
    every_so_often = every(devices)
    for m in tree.top_down:
        if m.dev not in sb_dir:
            sb_dir[m.dev] = _park_superblock(sbs, str(len(sb_dir)), need.get(m.dev, _Node()), dev_of, m.dev, stand_ins)
            if len(sb_dir) % every_so_often == 0:
                progress("making the replica's filesystems", len(sb_dir), devices)
    return sb_dir, dev_of, stand_ins


def _drop_scaffolding(tree: DumpTree, groups: list[int], scratch_dir: str) -> None:
    """Unmount the anchors of groups with members in the tree, and the parked superblocks."""
    with_members = {m.shared for m in tree.top_down if m.shared is not None}
    for g in reversed(groups):
        if g in with_members:
            # Unmounting one peer leaves the group, and the slaves it held, with the others.
            kernel.umount2(os.path.join(scratch_dir, "anchors", str(g)), kernel.UMOUNT_NOFOLLOW)
    # The parked superblocks go, all at once (their fd is closed); the replica's mounts keep theirs alive.
    kernel.umount2(os.path.join(scratch_dir, "sb"), kernel.MNT_DETACH | kernel.UMOUNT_NOFOLLOW)


def _park_superblock(
    sbs: int, name: str, names: _Node, dev_of: dict[str, int], dev: str, stand_ins: dict[tuple[str, str], str]
) -> str:
    fd = kernel.new_tmpfs()
    try:
        dev_of[dev] = kernel.statx_mount_id(fd)[1]
        for path, why in _populate(fd, names).items():
            stand_ins[(dev, path)] = why
        os.mkdir(name, 0o700, dir_fd=sbs)
        kernel.attach(fd, sbs, name)
    finally:
        os.close(fd)
    return name


def _make_anchor(anchors: int, name: str, anchor: int, master: int | None) -> None:
    """A shared full-root clone on anchors/NAME for members to join (a slave of `master`'s anchor)."""
    try:
        os.mkdir(name, 0o700, dir_fd=anchors)
        kernel.attach(anchor, anchors, name)
        if master is not None:
            _join_group(anchors, str(master), anchor)
            _propagation_of(anchor, kernel.MS_SLAVE)
        _propagation_of(anchor, kernel.MS_SHARED)
    finally:
        os.close(anchor)


def _join_group(anchors: int, group: str, member_fd: int) -> None:
    """MOVE_MOUNT_SET_GROUP from the anchor on anchors/GROUP (named by path) to the member's fd."""
    kernel.move_mount(
        anchors, group, member_fd, "", kernel.MOVE_MOUNT_T_EMPTY_PATH | kernel.MOVE_MOUNT_SET_GROUP
    )


def _attach_below(
    tree: DumpTree,
    root_fd: int,
    clone: Callable[[Mount], int],
    anchors: int,
    handles: dict[int, int],
    keep: set[int],
    progress: Progress = quiet,
) -> dict[int, int]:
    """Attach every mount below the root, depth first; {dump id: live id}.

    Each child is attached through an O_PATH fd on its mountpoint opened from its
    parent's own fd, so it lands on the (parent, dentry) the dump names even where a
    sibling covers that path (the seed case: 123 under 128). Siblings go deepest mountpoint
    first, so none is yet attached on the way to another's (RESOLVE_NO_XDEV refuses to
    cross one anyway), and a mount stacked on its parent's root goes last.

    A mount joins its peer group or master when its own subtree is complete: from then on
    nothing is attached below it, so nothing the build does propagates. Its fd is closed
    then too, so at most one fd per level of the tree is open.
    """
    root = tree.root
    dump_to_live = {root.mount_id: kernel.statx_mount_id(root_fd)[0]}
    stack: list[tuple[Mount, int, list[Mount]]] = [(root, root_fd, _attach_order(tree, root))]
    try:
        _depth_first(tree, stack, clone, anchors, handles, keep, dump_to_live, progress)
    except BaseException:
        for mount, fd, _ in stack:
            if mount is not root:
                os.close(fd)
        raise
    return dump_to_live


def _depth_first(
    tree: DumpTree,
    stack: list[tuple[Mount, int, list[Mount]]],
    clone: Callable[[Mount], int],
    anchors: int,
    handles: dict[int, int],
    keep: set[int],
    dump_to_live: dict[int, int],
    progress: Progress = quiet,
) -> None:
    root = tree.root
    total = len(tree.top_down)
    every_so_often = every(total)
    while stack:
        parent, parent_fd, kids = stack[-1]
        if not kids:
            stack.pop()
            _propagate(parent, parent_fd, anchors)
            if parent.mount_id in keep:
                handles[parent.mount_id] = parent_fd
            elif parent is not root:
                os.close(parent_fd)
            continue
        kid = kids.pop()
        rel = inside(kid.mountpoint, parent.mountpoint) or ""
        spot = kernel.openat2(parent_fd, rel, os.O_PATH | os.O_NOFOLLOW, _NO_CROSSING) if rel else -1
        try:
            kid_fd = clone(kid)
            try:
                kernel.attach(kid_fd, spot if rel else parent_fd)  # "" : stacked on the parent's root
                dump_to_live[kid.mount_id] = kernel.statx_mount_id(kid_fd)[0]
                if len(dump_to_live) % every_so_often == 0:
                    progress("attaching the replica's mounts", len(dump_to_live), total)
            except BaseException:
                os.close(kid_fd)
                raise
        finally:
            if rel:
                os.close(spot)
        stack.append((kid, kid_fd, _attach_order(tree, kid)))


def _attach_order(tree: DumpTree, parent: Mount) -> list[Mount]:
    """The parent's children as a stack to pop: deepest mountpoint first, stacked ones last."""
    kids = tree.children.get(parent.mount_id, [])
    return sorted(kids, key=lambda kid: depth_of(kid.mountpoint))


def _propagate(m: Mount, fd: int, anchors: int) -> None:
    if m.shared is not None:
        _join_group(anchors, str(m.shared), fd)  # a slave anchor passes its master on too
    elif m.master is not None:
        _join_group(anchors, str(m.master), fd)
        _propagation_of(fd, kernel.MS_SLAVE)
    if m.unbindable:
        _propagation_of(fd, kernel.MS_UNBINDABLE)


def _target_objects(
    tree: DumpTree,
    targets: list[Target],
    stat_in: Callable[[str, str], os.stat_result],
    dev_of: dict[str, int],
    stand_ins: Mapping[tuple[str, str], str],
) -> dict[str, TargetObject]:
    """Each target's object as created; stat_in(dev, path) stats a path of a dump device's superblock."""
    objects = {}
    for t in targets:
        m = tree.by_id[t.mount]
        inner = tree.inside(m, t.path, f"target {t.id}")
        looked = (inner.rsplit("/", 1)[0] or "/") if t.kind == "bind" else inner
        st = stat_in(m.dev, looked)
        to_mount = to_ino = None
        if t.kind == "mount-source" and t.to is not None:
            dest = visible(tree, t.to)
            to_mount = dest.mount_id
            to_ino = stat_in(dest.dev, tree.inside(dest, t.to, "to")).st_ino
        objects[t.id] = TargetObject(
            t.id, t.kind, t.mount, t.path, dev_of[m.dev], st.st_ino, t.to, to_mount, to_ino,
            mode=st.st_mode, rdev=st.st_rdev, access=t.access, file_type=t.file_type,
            stand_in=stand_ins.get((m.dev, inner)), unlinked=t.unlinked,
        )
    return objects
