"""The only module that makes syscalls of its own (ctypes): the mount API, openat2, statx, setns,
pidfds, /proc reads through a pinned fd, sock_diag, and the namespace child everything runs in.

Every wrapper raises OSError(errno, "<call> <path>: <strerror>") on failure, so an
error says which call failed on what. Syscall numbers are x86_64's.

Anything that changes mounts must run inside `run_in_namespace`, which forks a
child that unshares its mount namespace (and a user namespace when needed) and
makes `/` recursively private before doing anything else: the caller's mount
namespace is never touched.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import pickle
import platform
import resource
import select
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from planner import msflags
from planner.errors import KernelError, NamespaceChildError, NotPermitted

# --- constants (include/uapi/linux/{sched,mount,fcntl,openat2,stat}.h) -----------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_PRIVATE = msflags.MS_PRIVATE
MS_REC = msflags.MS_REC
MS_SHARED = msflags.MS_SHARED
MS_SLAVE = msflags.MS_SLAVE
MS_UNBINDABLE = msflags.MS_UNBINDABLE

MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC

MOVE_MOUNT_F_SYMLINKS = 0x01
MOVE_MOUNT_F_AUTOMOUNTS = 0x02
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOVE_MOUNT_SET_GROUP = 0x100
MOVE_MOUNT_BENEATH = 0x200

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

STATX_TYPE = 0x1
STATX_MODE = 0x2
STATX_INO = 0x100
STATX_MNT_ID = 0x1000

SYS_STATX = 332
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

PROPAGATION_FLAGS = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE

# By soname: ctypes.util.find_library forks ldconfig (or, without it, gcc and ld found on PATH),
# which would run programs from the caller's PATH in the caller's namespace at import time.
LIBC = "libc.so.6"
_libc = ctypes.CDLL(LIBC, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1


def _syscall_proto(*argtypes: Any) -> Any:
    """syscall(2) with fixed argument types for one hot call: ctypes converts plain ints itself."""
    fn = _libc["syscall"]  # a new function object each time, so each gets its own argtypes
    fn.restype = ctypes.c_long
    fn.argtypes = (ctypes.c_long, *argtypes)
    return fn


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _b(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    if type(path) is str:
        return path.encode(_FS_ENCODING, _FS_ERRORS)  # what os.fsencode does, without its checks
    return os.fsencode(path)


def _fail(call: str, what: object) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call} {what}: {os.strerror(err)}")


def _syscall(nr: int, *args: object) -> int:
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    return int(ret)


def _fd_label(dfd: int, path: str | bytes) -> str:
    """How an error names dfd + path: the fd's own path when /proc tells it (error paths only)."""
    text = os.fsdecode(path)
    if dfd == AT_FDCWD:
        return repr(text)
    try:
        where = readlink_proc(f"self/fd/{dfd}")
    except OSError:
        where = f"fd {dfd}"
    return where + (f" + {text!r}" if text else "")


# --- plain calls ---------------------------------------------------------------------


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail("unshare", hex(flags))


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail("mount", f"{source!r} on {target!r} (flags {flags:#x})")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        raise _fail("umount2", repr(target))


def chroot(path: str) -> None:
    os.chroot(path)


def make_propagation(path: str, flag: int) -> None:
    """mount --make-{shared,private,slave,unbindable} (add MS_REC for the r- variants)."""
    if flag & ~(PROPAGATION_FLAGS | MS_REC) or not flag & PROPAGATION_FLAGS:
        raise ValueError(f"not a propagation flag: {flag:#x}")
    mount(None, path, None, flag, None)


# --- new mount API -------------------------------------------------------------------


def open_tree(dfd: int, path: str, flags: int) -> int:
    fd = _syscall(SYS_OPEN_TREE, ctypes.c_int(dfd), _b(path), ctypes.c_uint(flags))
    if fd < 0:
        raise _fail("open_tree", _fd_label(dfd, path))
    return fd


def clone_mount(fd: int) -> int:
    """A detached, non-recursive copy of the mount `fd` is on (a bind mount not yet attached).

    A copy of a shared mount joins its peer group, and of a slave its master (clone_mnt()).
    """
    return open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)


_sys_move_mount = _syscall_proto(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)


def move_mount(from_dfd: int, from_path: str, to_dfd: int, to_path: str, flags: int) -> None:
    if _sys_move_mount(SYS_MOVE_MOUNT, from_dfd, _b(from_path), to_dfd, _b(to_path), flags) < 0:
        raise _fail(
            "move_mount",
            f"{_fd_label(from_dfd, from_path)} to {_fd_label(to_dfd, to_path)}",
        )


def attach(mount_fd: int, to_dfd: int, to_path: str = "") -> None:
    """Attach a detached mount (an open_tree clone or fsmount fd) at to_dfd/to_path."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | (MOVE_MOUNT_T_EMPTY_PATH if to_path == "" else 0)
    move_mount(mount_fd, "", to_dfd, to_path, flags)


def fsopen(fsname: str, flags: int = FSOPEN_CLOEXEC) -> int:
    fd = _syscall(SYS_FSOPEN, _b(fsname), ctypes.c_uint(flags))
    if fd < 0:
        raise _fail("fsopen", repr(fsname))
    return fd


def fsconfig(fs_fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    ret = _syscall(
        SYS_FSCONFIG,
        ctypes.c_int(fs_fd),
        ctypes.c_uint(cmd),
        _b(key),
        _b(value),
        ctypes.c_int(aux),
    )
    if ret < 0:
        raise _fail("fsconfig", f"fd {fs_fd} cmd {cmd} {key!r}")


def fsmount(fs_fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    fd = _syscall(
        SYS_FSMOUNT,
        ctypes.c_int(fs_fd),
        ctypes.c_uint(flags),
        ctypes.c_uint(attr_flags),
    )
    if fd < 0:
        raise _fail("fsmount", f"fd {fs_fd}")
    return fd


def new_tmpfs(options: dict[str, str] | None = None) -> int:
    """A fresh tmpfs superblock as a detached mount fd (private, reachable only through the fd)."""
    fs_fd = fsopen("tmpfs")
    try:
        for key, value in (options or {"mode": "0755"}).items():
            fsconfig(fs_fd, FSCONFIG_SET_STRING, key, value)
        fsconfig(fs_fd, FSCONFIG_CMD_CREATE)
        return fsmount(fs_fd)
    finally:
        os.close(fs_fd)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(
    dfd: int,
    path: str,
    flags: int,
    attr_set: int = 0,
    attr_clr: int = 0,
    propagation: int = 0,
) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    ret = _syscall(
        SYS_MOUNT_SETATTR,
        ctypes.c_int(dfd),
        _b(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if ret < 0:
        raise _fail("mount_setattr", _fd_label(dfd, path))


# --- lookups -------------------------------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_OPEN_HOW_SIZE = ctypes.sizeof(_OpenHow)
_sys_openat2 = _syscall_proto(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t)
# open_how structs by (flags, mode, resolve): built once, never written again (the kernel only reads them).
_open_hows: dict[tuple[int, int, int], _OpenHow] = {}


def openat2(dirfd: int, path: str, flags: int, resolve: int = 0, mode: int = 0) -> int:
    key = (flags, mode, resolve)
    how = _open_hows.get(key)
    if how is None:
        how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
        if len(_open_hows) < 64:
            _open_hows[key] = how
    fd: int = _sys_openat2(SYS_OPENAT2, dirfd, _b(path), how, _OPEN_HOW_SIZE)
    if fd < 0:
        raise _fail("openat2", _fd_label(dirfd, path))
    return fd


# struct statx (include/uapi/linux/stat.h): stx_mask @0, stx_mode @28, stx_ino @32,
# stx_dev_major @136, stx_dev_minor @140, stx_mnt_id @144; 256 bytes in all.
_STATX_SIZE = 256
_StatxBuf = ctypes.c_char * _STATX_SIZE
_STATX_FIELDS = struct.Struct("<I24xH2xQ96xIIQ")
_STATX_MASK = STATX_TYPE | STATX_MODE | STATX_INO | STATX_MNT_ID
_sys_statx = _syscall_proto(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)


def statx_ids(where: str | int, dirfd: int = AT_FDCWD, follow: bool = False) -> tuple[int, int, int, int]:
    """(mount id, st_dev, inode, st_mode) of a path (relative to dirfd) or of an fd: one statx(2).

    A path is not followed at its last component unless `follow`; automounts are never
    triggered. The mount id is STATX_MNT_ID, the id /proc/PID/mountinfo and fdinfo show.
    """
    buf = _StatxBuf()  # per call: the GIL is released during the call, a shared buffer would race
    if isinstance(where, int):
        dfd, path, flags = where, b"", AT_EMPTY_PATH | AT_NO_AUTOMOUNT
    else:
        dfd = dirfd
        path = where.encode(_FS_ENCODING, _FS_ERRORS) if isinstance(where, str) else os.fsencode(where)
        flags = AT_NO_AUTOMOUNT if follow else AT_NO_AUTOMOUNT | AT_SYMLINK_NOFOLLOW
    if _sys_statx(SYS_STATX, dfd, path, flags, _STATX_MASK, buf) < 0:
        raise _fail("statx", _fd_label(dfd, path))
    mask, mode, ino, dev_major, dev_minor, mnt_id = _STATX_FIELDS.unpack_from(buf)
    if not mask & STATX_MNT_ID:
        raise OSError(
            errno_mod.ENOSYS,
            f"statx {_fd_label(dfd, path)}: kernel gave no STATX_MNT_ID",
        )
    return mnt_id, os.makedev(dev_major, dev_minor), ino, mode


AT_STATX_DONT_SYNC = 0x4000
STATX_NLINK = 0x4
_CACHED_FIELDS = struct.Struct("<I12xI8xH2xQ88xIIIIQ")  # mask, nlink, mode, ino, rdev, dev, mnt_id


@dataclass(frozen=True)
class CachedStat:
    """What statx(2) reports with AT_STATX_DONT_SYNC: the kernel's own copy of an inode's attributes."""

    mode: int
    ino: int
    dev: int
    rdev: int
    nlink: int
    mnt_id: int


def statx_cached(where: str | int, dirfd: int = AT_FDCWD, follow: bool = True) -> CachedStat:
    """statx(2) of a path (relative to dirfd) or of an fd, answered from what the kernel holds.

    AT_STATX_DONT_SYNC: a network or FUSE filesystem is not asked to refresh the attributes
    (an unresponsive FUSE server would keep a plain stat(2) in D state, deaf even to SIGKILL).
    The file type, inode and mount id never change, so the cached ones are the real ones.
    """
    buf = _StatxBuf()
    if isinstance(where, int):
        dfd, path, flags = where, b"", AT_EMPTY_PATH
    else:
        dfd, path, flags = dirfd, os.fsencode(where), 0 if follow else AT_SYMLINK_NOFOLLOW
    flags |= AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC
    if _sys_statx(SYS_STATX, dfd, path, flags, _STATX_MASK | STATX_NLINK, buf) < 0:
        raise _fail("statx", _fd_label(dfd, path))
    mask, nlink, mode, ino, rdev_major, rdev_minor, dev_major, dev_minor, mnt_id = _CACHED_FIELDS.unpack_from(buf)
    if not mask & STATX_MNT_ID:
        raise OSError(errno_mod.ENOSYS, f"statx {_fd_label(dfd, path)}: kernel gave no STATX_MNT_ID")
    return CachedStat(mode, ino, os.makedev(dev_major, dev_minor), os.makedev(rdev_major, rdev_minor), nlink, mnt_id)


SYS_PIDFD_OPEN = 434


def pidfd_open(pid: int) -> int:
    """A pidfd on process `pid`: it names that process, never another that reuses the number."""
    fd = _syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
    if fd < 0:
        raise _fail("pidfd_open", pid)
    os.set_inheritable(fd, False)
    return fd


def pidfd_exited(pidfd: int) -> bool:
    """True once the process has exited: a zombie not yet reaped counts as exited (the pidfd is readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def statx_mount_id(where: str | int, dirfd: int = AT_FDCWD, follow: bool = False) -> tuple[int, int, int]:
    """(mount id, st_dev, inode) of a path (relative to dirfd) or of an fd, by statx(STATX_MNT_ID)."""
    mnt_id, dev, ino, _ = statx_ids(where, dirfd, follow)
    return mnt_id, dev, ino


# /proc is read through a directory fd once the caller chroots away from it.
_proc_fd: int | None = None


def pin_proc() -> int:
    """Keep an fd on /proc so fdinfo and mountinfo stay readable after a chroot."""
    global _proc_fd
    if _proc_fd is None:
        _proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return _proc_fd


def proc_open(rel: str, flags: int = os.O_RDONLY) -> int:
    if _proc_fd is not None:
        return os.open(rel, flags | os.O_CLOEXEC, dir_fd=_proc_fd)
    return os.open("/proc/" + rel, flags | os.O_CLOEXEC)


def read_proc(rel: str) -> str:
    fd = proc_open(rel)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "surrogateescape")
    finally:
        os.close(fd)


def readlink_proc(rel: str) -> str:
    if _proc_fd is not None:
        return os.readlink(rel, dir_fd=_proc_fd)
    return os.readlink("/proc/" + rel)


def fdinfo(rel: str) -> dict[str, str]:
    """The `key: value` lines of an fdinfo file under /proc (pos, flags, mnt_id, ino, ...):
    "self/fdinfo/FD" for one of ours, "PID/fdinfo/FD" for another process's."""
    out: dict[str, str] = {}
    for line in read_proc(rel).splitlines():
        key, colon, value = line.partition(":")
        if colon and key not in out:
            out[key] = value.strip()
    return out


def fdinfo_mount_id(fd: int) -> int:
    """fdinfo's `mnt_id:` of our fd `fd` (every fd has one, O_PATH ones included)."""
    found = fdinfo(f"self/fdinfo/{fd}").get("mnt_id")
    if found is None:
        raise OSError(errno_mod.ENOENT, f"fdinfo of fd {fd}: no mnt_id line")
    return int(found)


def own_mountinfo() -> str:
    return read_proc("self/mountinfo")


# --- unix sockets through sock_diag ------------------------------------------------------


def split_kernel_dev(kdev: int) -> tuple[int, int]:
    """(major, minor) of the kernel's internal dev_t (major << 20 | minor), as sock_diag reports it."""
    return kdev >> 20, kdev & 0xFFFFF


@dataclass(frozen=True)
class UnixSocket:
    """A unix socket as sock_diag reports it: type, state, the name it was bound to (None when
    unbound; an abstract name without its leading NUL), and the socket file's device (major, minor)
    and inode (None for an abstract or unbound one)."""

    inode: int
    sock_type: int
    state: int
    name: str | None
    vfs_dev: tuple[int, int] | None
    vfs_ino: int | None

    @property
    def vfs_st_dev(self) -> int | None:
        """The socket file's device as stat(2) gives st_dev."""
        return None if self.vfs_dev is None else os.makedev(*self.vfs_dev)


_diag: Any = None


def warm_unix_socket_diag() -> None:
    """Open the sock_diag netlink socket now (pyroute2 imports lazily; later a chroot hides its modules)."""
    global _diag
    if _diag is None:
        from pyroute2 import DiagSocket  # type: ignore[import-untyped]

        diag = DiagSocket()
        diag.bind()
        _diag = diag
        unix_socket_diag(())


def unix_socket_diag(inodes: Iterable[int], fresh: bool = False) -> dict[int, UnixSocket]:
    """{socket inode: what sock_diag says of it} for the unix sockets asked, in the caller's network
    namespace (a thread's own: see capture). fresh: through a new netlink socket made here and now,
    not the one warm_unix_socket_diag keeps (which belongs to the namespace it was made in)."""
    if not fresh:
        warm_unix_socket_diag()
        return _unix_sockets(_diag, set(inodes))
    from pyroute2 import DiagSocket

    with DiagSocket() as diag:
        diag.bind()
        return _unix_sockets(diag, set(inodes))


def _unix_sockets(diag: Any, wanted: set[int]) -> dict[int, UnixSocket]:
    from pyroute2.netlink.diag import SS_ALL, UDIAG_SHOW_NAME, UDIAG_SHOW_VFS  # type: ignore[import-untyped]

    out: dict[int, UnixSocket] = {}
    for msg in diag.get_sock_stats(family=socket.AF_UNIX, states=SS_ALL, show=UDIAG_SHOW_NAME | UDIAG_SHOW_VFS):
        ino = msg["udiag_ino"]
        if ino not in wanted:
            continue
        name = msg.get_attr("UNIX_DIAG_NAME")
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        vfs = msg.get_attr("UNIX_DIAG_VFS")
        dev = vfs_ino = None
        if vfs is not None:
            dev, vfs_ino = split_kernel_dev(vfs["udiag_vfs_dev"]), vfs["udiag_vfs_ino"]
        out[ino] = UnixSocket(ino, msg["udiag_type"], msg["udiag_state"], name, dev, vfs_ino)
    return out


# --- the namespace child -------------------------------------------------------------------


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_private_namespace(user_ns: bool | None = None) -> None:
    """In the calling process (meant to be a fresh child): new mount namespace, `/` rprivate.

    A user namespace is added when not root, or when user_ns is True; the caller's
    uid and gid are mapped to 0 inside it.
    """
    uid, gid = os.geteuid(), os.getegid()
    with_user = user_ns is True or (user_ns is None and uid != 0)
    try:
        if with_user:
            unshare(CLONE_NEWUSER | CLONE_NEWNS)
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
            _write_file("/proc/self/gid_map", f"0 {gid} 1\n")
        else:
            unshare(CLONE_NEWNS)
    except OSError as err:
        if with_user:
            way_out = ("run as root, or where unprivileged user namespaces are allowed (user.max_user_namespaces above 0; "
                       "kernel.unprivileged_userns_clone=1 on Debian kernels; "
                       "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 23.10+)")
        else:
            way_out = "this root lacks CAP_SYS_ADMIN or unshare(2) is filtered (a container: --cap-add SYS_ADMIN)"
        what = "a user and mount namespace" if with_user else "a mount namespace"
        raise NotPermitted(f"cannot make {what} to work in ({os.strerror(err.errno) if err.errno else err}): {way_out}") from None
    # From here on nothing we mount or move can reach the caller's namespace.
    make_propagation("/", MS_REC | MS_PRIVATE)
    global _throwaway_namespace
    _throwaway_namespace = os.stat("/proc/self/ns/mnt").st_ino


_throwaway_namespace: int | None = None  # the mount namespace enter_private_namespace made, by inode


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _fail("setns", f"fd {fd} type {nstype:#x}")


def enter_namespace(ns_fd: int, root_fd: int = -1) -> None:
    """In the calling process (a fresh, single-threaded child): join the mount namespace `ns_fd`
    names, then, when `root_fd` is given, take that directory (a process's /proc/PID/root) as its
    root, so that paths are that process's. /proc is pinned first: the namespace may have none."""
    pin_proc()
    setns(ns_fd, CLONE_NEWNS)  # root and cwd become the namespace's root
    if root_fd >= 0:
        os.fchdir(root_fd)
        os.chroot(".")
        os.chdir("/")


def require_throwaway_namespace(what: str) -> None:
    """Refuse to go on unless this process is in the namespace enter_private_namespace made:
    the replica mounts over a scratch directory and chroots, which must never happen to a caller."""
    if _throwaway_namespace is None or os.stat("/proc/self/ns/mnt").st_ino != _throwaway_namespace:
        raise RuntimeError(f"{what} must run inside a throwaway mount namespace (use run_in_namespace)")


T = TypeVar("T")


def _send(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _child(fn: Callable[..., Any], args: tuple[Any, ...], enter: Callable[[], None], wfd: int) -> None:
    tb = ""
    try:
        enter()
        result: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as caught:  # noqa: BLE001 - everything goes back to the parent
        result = ("raise", caught)
        tb = traceback.format_exc()
    try:
        payload = pickle.dumps(result)
        pickle.loads(payload)
    except Exception:  # noqa: BLE001 - unpicklable result or exception
        if result[0] == "ok":
            name = type(result[1]).__name__
            failure = NamespaceChildError(
                "TypeError",
                f"the namespace function returned an unpicklable {name}",
                "",
            )
        else:
            failure = NamespaceChildError(type(result[1]).__name__, str(result[1]), tb)
        payload = pickle.dumps(("raise", failure))
    _send(wfd, payload)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (the usual soft 1024 is a default, not a need);
    (soft, hard) as they are now. The replica keeps its fds bounded anyway; this is headroom."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def die_with_parent(parent: int) -> None:
    """In a forked child: be killed (SIGKILL) when the process that forked it dies.

    PR_SET_PDEATHSIG only covers a death after the call, so the parent is checked once
    more afterwards: if it already died, the child was re-parented and exits at once.
    """
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise _fail("prctl", "PR_SET_PDEATHSIG")
    if os.getppid() != parent:
        os._exit(70)


def run_in_namespace(
    fn: Callable[..., T], *args: Any, user_ns: bool | None = None, enter: Callable[[], None] | None = None
) -> T:
    """fn(*args) in a forked child with its own private mount namespace; its value or exception comes back.

    enter: how the child gets its namespace instead (enter_namespace, for `recover`: a namespace the
    user named). fn, its arguments and its result must be picklable-compatible (the result and
    any exception travel back through a pipe). The child is always reaped, and dies with its parent.
    """
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            die_with_parent(parent)
            # Ctrl-C reaches the whole process group: the parent decides, and ends this child.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.close(rfd)
            _child(fn, args, enter or (lambda: enter_private_namespace(user_ns)), wfd)
        except BaseException:  # noqa: BLE001 - never return into the caller's stack
            code = 70
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        while chunk := os.read(rfd, 1 << 16):
            chunks.append(chunk)
    except BaseException:
        # Interrupted (Ctrl-C) or failing here: the child must not run on alone. Its namespace,
        # and every mount in it, goes with it.
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise KernelError(f"the namespace child {pid} died without an answer (wait status {status:#x})")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "raise":
        raise value
    return value  # type: ignore[no-any-return]


def can_make_namespaces() -> tuple[bool, str]:
    """Whether this machine lets us build a throwaway mount namespace, and why not."""
    if platform.machine() != "x86_64":
        return False, f"syscall numbers here are x86_64's; this is {platform.machine()}"

    def probe() -> bool:
        fd = new_tmpfs()
        tree = open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | OPEN_TREE_CLOEXEC)
        os.close(tree)
        os.close(fd)
        return True

    try:
        run_in_namespace(probe)
    except OSError as exc:
        return False, f"cannot make a private mount namespace with a tmpfs: {exc}"
    except (KernelError, NotPermitted) as exc:
        return False, str(exc)
    return True, "root" if os.geteuid() == 0 else "user namespaces"
