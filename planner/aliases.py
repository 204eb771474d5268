"""One file through two mounts: targets that name the same file, and visible aliases of hidden sockets.

Two mounts of one filesystem (same major:minor) whose roots overlap show the
same directories: 123 and 129 in the seed both show /cgmanager of 0:18. A place
is therefore named by (major:minor, path inside the filesystem), whatever mount
a path reached it through.

A unix socket's identity is its file in the filesystem, not the mount it was
bound through, so a hidden `bind` target can be bound through a visible *alias*
mount with no move at all: same filesystem, the socket's directory inside the
alias's root, writable, not idmapped (the new inode's owner would be mapped
differently), and reached by the same path string, so that the socket's name,
the path given to bind(2), is unchanged. Never for open, chdir, root, mmap or
mount-source: there the mount itself is part of what is restored.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.mountinfo import Mount
from planner.paths import join, relative
from planner.simulate import visible
from planner.targets import Target
from planner.tree import MountTree

Place = tuple[str, str]  # (major:minor, path inside that filesystem)


def file_place(mount: Mount, rel: str) -> Place | None:
    """Where place `rel` inside `mount` lies in its filesystem; None when the mount's root is no
    path (nsfs 'mnt:[4026532659]') or was unlinked (then its paths name nothing comparable)."""
    if not mount.root.startswith("/") or mount.deleted:
        return None
    return mount.dev, join(mount.root, rel)


def target_place(tree: MountTree, target: Target) -> Place | None:
    mount = tree.by_id[target.mount]
    return file_place(mount, relative(target.path, mount.mountpoint))


def same_file(tree: MountTree, targets: Iterable[Target]) -> dict[str, tuple[str, ...]]:
    """For each target naming a file another target names too, the ids of the others: through
    another mount or by another path (two fds on one path are no news), and any two binds (one
    socket file cannot be bound twice)."""
    by_place: dict[Place, list[Target]] = {}
    for target in targets:
        place = target_place(tree, target)
        if place is not None:
            by_place.setdefault(place, []).append(target)
    out: dict[str, tuple[str, ...]] = {}
    for group in by_place.values():
        if len(group) < 2:
            continue
        for one in group:
            others = tuple(
                other.id for other in group
                if other is not one and ((other.mount, other.path) != (one.mount, one.path) or other.kind == one.kind == "bind")
            )
            if others:
                out[one.id] = others
    return out


def can_bind_in(mount: Mount) -> bool:
    """bind(2) creates the socket's inode through this mount: it must be writable and not idmapped."""
    options = mount.options.split(",")
    return "ro" not in options and "idmapped" not in options and "ro" not in mount.super_options.split(",")


def is_alias(tree: MountTree, target: Target, mount_id: int, rel: str) -> bool:
    """True when binding the target's socket at place `rel` inside mount `mount_id` makes the same
    socket file as binding it in the target's own mount: same file, a place strictly inside the
    alias (its directory is in the alias's root), and a mount bind(2) may create the inode through."""
    alias = tree.by_id.get(mount_id)
    if alias is None or mount_id == target.mount or not rel:
        return False
    place = target_place(tree, target)
    return place is not None and file_place(alias, rel) == place and can_bind_in(alias)


def visible_alias(tree: MountTree, target: Target) -> int | None:
    """The mount through which a hidden bind target's own path binds the same socket file in the
    dumped tree (no move needed), or None."""
    if target.kind != "bind":
        return None
    landing = visible(tree, target.path)
    rel = relative(target.path, landing.mountpoint)
    return landing.mount_id if is_alias(tree, target, landing.mount_id, rel) else None
