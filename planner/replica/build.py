"""Build a dumped mount tree for real, inside a throwaway mount namespace (the thin shell over spec.py):
superblocks filled through their fds, every mount a clone attached depth first through its parent's
own fd, propagation once a subtree is complete, then the chroot. See planner.replica for how."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from planner import kernel
from planner.errors import ReplicaError
from planner.mountinfo import Mount, parse
from planner.paths import depth_of, from_root, inside
from planner.progress import Progress, every, quiet
from planner.replica.shape import Key, TreeShape, shape_of
from planner.replica.spec import DumpTree, Node, dump_shape, file_mounts_of, group_order, object_kinds, sb_path
from planner.simulate import visible
from planner.targets import Target

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CLONE = kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC
_NO_CROSSING = (
    kernel.RESOLVE_NO_XDEV | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS | kernel.RESOLVE_BENEATH
)


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


# mknod(2) of a device needs CAP_MKNOD in the initial user namespace: in a user namespace the
# replica puts a regular file in its place and says so.
STAND_IN = "a regular file stands in for the {0}: mknod of a device needs CAP_MKNOD in the initial user namespace"


def _populate(sb_fd: int, root: Node) -> dict[str, str]:
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
    need = object_kinds(tree, targets, file_mounts_of(tree, targets, file_mounts))
    groups, group_master, group_dev = group_order(tree)

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
    tree: DumpTree, need: dict[str, Node], sbs: int, progress: Progress
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
            sb_dir[m.dev] = _park_superblock(sbs, str(len(sb_dir)), need.get(m.dev, Node()), dev_of, m.dev, stand_ins)
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
    sbs: int, name: str, names: Node, dev_of: dict[str, int], dev: str, stand_ins: dict[tuple[str, str], str]
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
