"""Restore targets: what a process must reach again at restore time."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

KINDS = ("open", "chdir", "root", "bind", "mmap", "mount-source")

# What the object at a target's path is (st_mode's type), when the dump says.
FILE_TYPES = ("regular", "directory", "fifo", "char", "block", "socket")
_TYPE_OF_MODE = {
    stat.S_IFREG: "regular",
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFSOCK: "socket",
}


def file_type_of(mode: int) -> str | None:
    """The file_type of an st_mode (None for a symlink or anything else no target can be)."""
    return _TYPE_OF_MODE.get(stat.S_IFMT(mode))


# How an open fd was opened (its O_ACCMODE, or O_PATH): a FIFO must be reopened the same way.
ACCESS_MODES = ("read-only", "write-only", "read-write", "path")
O_PATH = 0o10000000  # x86_64's (include/uapi/asm-generic/fcntl.h), as fdinfo and CRIU's images hold it


def access_mode(flags: int) -> str:
    """The access mode of an fd's open flags (fdinfo's, CRIU's reg_file_entry's, F_GETFL's). O_ACCMODE 3
    ("no access", open(2) for ioctls only) reads and writes as far as a restorer is concerned."""
    if flags & O_PATH:
        return "path"
    return ("read-only", "write-only", "read-write", "read-write")[flags & 3]

# The file types each kind can have: chdir, root and a bind-mount source are directories, a
# unix socket's name is a socket file, a mapping maps a regular file; an fd can hold any of them
# (a socket file only through O_PATH: open(2) of one fails with ENXIO).
TYPES_OF_KIND: dict[str, tuple[str, ...]] = {
    "open": FILE_TYPES,
    "chdir": ("directory",),
    "root": ("directory",),
    "bind": ("socket",),
    "mmap": ("regular",),
    "mount-source": ("directory",),
}


@dataclass(frozen=True)
class Target:
    """An object the dump saw in mount `mount` at absolute path `path`.

    A path alone is ambiguous under an overmount; the mount id decides.
    `to` is the bind mount's destination, for kind mount-source only.
    `file_type`, `access` and `rdev` (a device's "major:minor") are what the dump knows of
    the object and of the fd that held it; None when it does not say.
    `unlinked`: the name was unlinked after the object was made (a socket bound, then its file
    removed, as a restarting daemon leaves the old one): the restorer binds it and unlinks the
    name again, so another target may then bind the same file.
    """

    id: str
    kind: str
    mount: int
    path: str
    to: str | None = None
    line_no: int | None = field(default=None, compare=False)  # where the dump names it, for errors
    origin: str | None = field(default=None, compare=False)  # a --target option, when it came from one
    file_type: str | None = None
    access: str | None = None
    rdev: str | None = None
    unlinked: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "kind": self.kind, "mount": self.mount, "path": self.path}
        if self.to is not None:
            out["to"] = self.to
        for key in ("file_type", "access", "rdev"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.unlinked:
            out["unlinked"] = True
        return out


def object_problem(kind: str, file_type: str | None, access: str | None, rdev: str | None) -> str | None:
    """Why a target's object fields cannot go together (None when they can)."""
    if file_type is not None and file_type not in TYPES_OF_KIND.get(kind, FILE_TYPES):
        return f"a {kind} target cannot be a {file_type} (one of {', '.join(TYPES_OF_KIND[kind])})"
    if access is not None and kind != "open":
        return f"'access' belongs to open targets (an fd), not to a {kind}"
    if file_type == "socket" and kind == "open" and access not in (None, "path"):
        return "an fd on a socket file can only be an O_PATH one (access 'path'): open(2) of a socket gives ENXIO"
    if file_type == "directory" and access in ("write-only", "read-write"):
        return "a directory fd can only be read-only or O_PATH (access 'path'): open(2) for writing gives EISDIR"
    if rdev is not None and file_type not in ("char", "block"):
        return "'rdev' belongs to char and block devices"
    if rdev is not None and not _is_major_minor(rdev):
        return f"rdev must be MAJOR:MINOR, got {rdev!r}"
    return None


def _is_major_minor(text: str) -> bool:
    """The kernel's dev_t: a 12-bit major and a 20-bit minor."""
    major, colon, minor = text.partition(":")
    if not colon or not all(p.isascii() and p.isdigit() and len(p) <= 7 for p in (major, minor)):
        return False
    return int(major) < 1 << 12 and int(minor) < 1 << 20


# A unix socket's type and state as the kernel numbers them (include/linux/net.h, include/net/tcp_states.h):
# what sock_diag reports and CRIU's unix_sk_entry stores.
SOCK_STREAM, SOCK_SEQPACKET = 1, 5
TCP_ESTABLISHED = 1


def is_accepted_connection(sock_type: int, state: int) -> bool:
    """An accepted (or connected) stream socket reports its listener's name and inode; it is not bound
    again at restore (CRIU's sk-unix.c binds only the listener), so it is no bind target."""
    return sock_type in (SOCK_STREAM, SOCK_SEQPACKET) and state == TCP_ESTABLISHED
