"""Capture a live process as an overmount-dump/1 dict: its mount table and restore targets.

Reads /proc/PID (mountinfo, fd, fdinfo, cwd, root, map_files) and unix sockets
through netlink sock_diag (pyroute2 DiagSocket). Needs root, or at least ptrace
access to the process plus CAP_SYS_ADMIN for map_files and a foreign netns.

Each target's mount is the one the object lives in, read from the kernel
(fdinfo ``mnt_id:`` of the process's fd, or of our own O_PATH fd on the
/proc magic link), never by resolving its path today: under an overmount
the path leads into the covering mount. Paths are the process's own view
(relative to its root, as its /proc/PID/mountinfo is), except for a chrooted
process: then the table is its mount namespace's, read from the namespace's
root through setns(2) in a forked child, and every path is in that view (as
CRIU dumps them), so that its root is a target too.

Every fd, the cwd, the root, every file mapping and every socket ends in exactly
one place: ``targets`` (ids ``fdN``: regular files, directories, FIFOs, char and
block devices, O_PATH fds on socket files, each with ``file_type``, ``access`` and
for a device ``rdev``; ``cwd``; ``root``; ``map-<start address>``, one per mapped
file; ``sk-<socket inode>`` with the ``fds`` that hold it) or ``skipped``
(``{"id", "kind", "path", "mount", "reason"}``, plus ``fds`` for a socket):
anonymous pipes and inodes, namespace files, memfds, deleted files, symlinks held
with O_PATH, paths outside the process root, objects in mounts of another mount
namespace, sockets of other families, unbound, abstract or connected unix sockets,
mappings of devices. Extra fields: ``pid``; ``file_mounts`` (ids of mounts whose
root is a regular file, as far as their mountpoint is reachable today); ``notes``
(guesses the capture had to make).

The capture is not atomic: a process that keeps running can change between reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from planner import kernel
from planner.errors import InputError, PlannerError
from planner.kernel import CachedStat
from planner.mountinfo import Mount, parse
from planner.targets import file_type_of

FORMAT = "overmount-dump/1"

_DELETED = " (deleted)"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
SYS_OPENAT2 = 437  # x86_64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# Only what the dentry cache already holds: a lookup that would ask the filesystem (a FUSE or
# NFS server, possibly dead) fails with EAGAIN instead (openat2(2), Linux 5.12).
RESOLVE_CACHED = 0x20
_IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_CACHED
NEEDS_THE_FILESYSTEM = "answering needs its filesystem (the kernel's caches do not hold it), which capture never asks"
SOCK_STREAM, SOCK_SEQPACKET = 1, 5
TCP_ESTABLISHED = 1


class CaptureError(InputError):
    """The process cannot be read: no such pid, not a live process, or no permission."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"pid {pid}", None, reason)


class ProcessExited(PlannerError):
    """The process exited while it was being read: what was read is not a whole dump (exit 1)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"pid {pid}: the process exited during the capture; no dump was written (a part of one "
                         "would pass for the whole)")


# --- small /proc and syscall helpers --------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2): with RESOLVE_IN_ROOT, absolute symlinks stay inside the process's root."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"openat2 {path}: {os.strerror(err)}")
    return int(fd)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _fdinfo(path: str) -> dict[str, str]:
    """The `key: value` lines of an fdinfo file (pos, flags, mnt_id, ino, ...)."""
    out = {}
    with open(path, encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, colon, value = line.partition(":")
            if colon and key not in out:
                out[key] = value.strip()
    return out


def _mnt_id(info: dict[str, str]) -> int | None:
    """fdinfo's `mnt_id:` (every fd has one, O_PATH ones included)."""
    return int(info["mnt_id"]) if "mnt_id" in info else None


def _own_fd_mnt_id(fd: int) -> int | None:
    return _mnt_id(_fdinfo(f"/proc/self/fdinfo/{fd}"))


def _is_under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


@dataclass
class _View:
    """Turns our readlink() of /proc/PID/... links into paths in the process's own view.

    A /proc magic link reads back d_path() relative to the *reader's* root (or to
    the root of the process's mount namespace when it is not ours), while
    /proc/PID/mountinfo is relative to the process's root. readlink of
    /proc/PID/root, read the same way, is the prefix to take off.
    """

    root: str

    def of(self, link_text: str) -> str | None:
        if self.root == "/":
            return link_text
        if link_text == self.root:
            return "/"
        if link_text.startswith(self.root + "/"):
            return link_text[len(self.root) :]
        return None


@dataclass
class _Capture:
    pid: int
    proc: str
    mounts: list[Mount]
    view: _View
    root_fd: int
    # The process root in the table's view when the table is the namespace's and the process
    # is chrooted (socket names are relative to the root it had when it bound them).
    chroot: str | None = None
    process_root_fd: int = -1  # O_PATH on /proc/PID/root, when chroot is set
    root_mount: int | None = None  # the mount holding the process's root directory
    pidfd: int = -1  # held from the start: it names this process, never a later one with its number
    targets: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    by_id: dict[int, Mount] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {m.mount_id: m for m in self.mounts}

    def add(self, target_id: str, kind: str, mount: int | None, path: str, **extra: object) -> None:
        """A target, or a skipped entry saying why it cannot be one. `extra`: file_type, access,
        rdev (dump fields), fds (the fds that hold a socket); None values are left out."""
        where = self.by_id.get(mount) if mount is not None else None
        if where is None:
            self.skip(
                target_id,
                kind,
                path,
                mount,
                self.unlisted_reason(mount),
                fds=extra.get("fds"),
            )
        elif not _is_under(path, where.mountpoint):
            self.skip(target_id, kind, path, mount, f"path is not under mount {mount}'s mountpoint {where.mountpoint}",
                      fds=extra.get("fds"))
        else:
            target: dict[str, object] = {"id": target_id, "kind": kind, "mount": mount, "path": path}
            target.update((k, v) for k, v in extra.items() if v is not None)
            self.targets.append(target)

    def unlisted_reason(self, mount: int | None) -> str:
        if mount is not None and mount == self.root_mount:
            # A chroot into a plain directory, seen from the process: mountinfo lists only what
            # lies below the root, relative to it; the mount holding the root itself is above it.
            return (f"in mount {mount}, which holds the process's root directory but is not in its mountinfo "
                    "(the root is a plain directory, as after chroot: only the mounts below it are listed)")
        if mount is not None and any(m.parent_id == mount for m in self.mounts):
            return f"in mount {mount}, which lies above the process's root: its mountinfo lists only mounts below the root"
        return (f"mount {mount} is not in the process's mount table "
                "(opened in another mount namespace, e.g. before an unshare)")

    def skip(self, target_id: str, kind: str, path: str | None, mount: int | None, reason: str,
             fds: object = None) -> None:
        entry: dict[str, object] = {"id": target_id, "kind": kind, "path": path, "mount": mount, "reason": reason}
        if fds is not None:
            entry["fds"] = fds
        self.skipped.append(entry)

    def alive(self) -> None:
        """ProcessExited unless the process is still running: a zombie has exited too."""
        if kernel.pidfd_exited(self.pidfd):
            raise ProcessExited(self.pid)

    def path_of(self, link_text: str, st: CachedStat) -> tuple[str | None, str | None]:
        """(path in the process's view, or None; why it is not a target, or None)."""
        deleted = False
        if link_text.endswith(_DELETED):
            bare = link_text[: -len(_DELETED)]
            # d_path() marks an unlinked dentry with this suffix; a file may also really be named so.
            same = None if st.nlink == 0 else self.same_inode_at(self.view.of(link_text), st)
            if same is None and st.nlink != 0:
                return self.view.of(bare) or bare, f"whether it was deleted: {NEEDS_THE_FILESYSTEM}"
            deleted = not same
            if deleted:
                link_text = bare
        path = self.view.of(link_text)
        if path is None:
            return link_text, f"outside the process's root {self.view.root}"
        if not path.startswith("/"):
            return path, f"not a path: {path!r}"
        if deleted and path.startswith("/memfd:"):
            return path, "memfd (memfd_create): an unlinked file of an internal mount, no path reaches it"
        if deleted:
            return path, "deleted: unlinked while open, no path reaches it"
        return path, None

    def open_in_root(self, path: str, flags: int = os.O_PATH | os.O_NOFOLLOW) -> int:
        """An fd on `path` inside the process root, found in the dentry cache alone (EAGAIN otherwise)."""
        return _openat2(self.root_fd, path.lstrip("/") or ".", flags, _IN_ROOT)

    def stat_in_root(self, path: str) -> CachedStat | None:
        """What the kernel holds for `path` inside the process root; None where the path does not lead
        anywhere, or where finding out would need the filesystem."""
        try:
            fd = self.open_in_root(path)
        except OSError:
            return None
        try:
            return kernel.statx_cached(fd)
        finally:
            os.close(fd)

    def same_inode_at(self, path: str | None, st: CachedStat) -> bool | None:
        """Whether `path` names the object `st` is; None when only its filesystem could tell."""
        if path is None:
            return False
        try:
            fd = self.open_in_root(path)
        except OSError as exc:
            return None if exc.errno == errno.EAGAIN else False
        try:
            now = kernel.statx_cached(fd)
        finally:
            os.close(fd)
        return (now.dev, now.ino) == (st.dev, st.ino)


def _read_proc(pid: int, path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        raise CaptureError(pid, "no such process") from None
    except PermissionError:
        raise CaptureError(pid, f"permission denied reading {path} (needs root or ptrace access)") from None
    except OSError as exc:
        raise CaptureError(pid, f"cannot read {path}: {exc.strerror or exc}") from None


# --- the targets ----------------------------------------------------------------------------


def _access(flags: int) -> str:
    """How an fd was opened, from fdinfo's flags: what a restorer must open it with again."""
    if flags & os.O_PATH:
        return "path"
    return {os.O_RDONLY: "read-only", os.O_WRONLY: "write-only", os.O_RDWR: "read-write"}.get(flags & os.O_ACCMODE, "read-write")


def _no_path_reason(text: str) -> str:
    """Why an fd whose link is not a path has nothing to reopen by path."""
    kind = text.split(":", 1)[0]
    if kind == "pipe":
        return f"anonymous pipe {text}: no name in any filesystem; the restorer makes a new pipe(2)"
    if kind == "anon_inode":
        return f"anonymous inode {text}: no name in any filesystem (eventfd, epoll, timerfd, signalfd, pidfd, ...)"
    if kind in ("mnt", "net", "uts", "ipc", "pid", "user", "cgroup", "time", "pid_for_children", "time_for_children"):
        return f"namespace file {text}: opened through /proc/PID/ns, not by a path of this mount table"
    return f"not a path: {text!r}"


def _open_files(cap: _Capture) -> dict[int, list[int]]:
    """Every fd: a file, directory, FIFO or device node -> an open target (with its file type and
    access mode); anything else -> skipped with the reason. Returns socket inode -> its fds."""
    fd_dir = f"{cap.proc}/fd"
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        raise CaptureError(cap.pid, f"permission denied listing {fd_dir}") from None
    except FileNotFoundError:
        raise ProcessExited(cap.pid) from None
    sockets: dict[int, list[int]] = {}
    for fd in sorted(int(n) for n in names if n.isdigit()):
        link = f"{fd_dir}/{fd}"
        target_id = f"fd{fd}"
        try:
            text = os.readlink(link)
            info = _fdinfo(f"{cap.proc}/fdinfo/{fd}")
            mnt_id = _mnt_id(info)
            st = kernel.statx_cached(link)  # the open file itself, from the kernel's copy of its inode
        except FileNotFoundError:
            continue  # closed meanwhile: not an fd of the process any more
        except OSError as exc:
            cap.skip(target_id, "open", None, None, f"cannot read the fd: {exc.strerror or exc}")
            continue
        if text.startswith("socket:["):
            sockets.setdefault(st.ino, []).append(fd)
            continue
        if not text.startswith("/"):
            cap.skip(target_id, "open", None, mnt_id, _no_path_reason(text))
            continue
        file_type = file_type_of(st.mode)
        access = _access(int(info.get("flags", "0"), 8))  # fdinfo prints flags in octal
        path, why = cap.path_of(text, st)
        if file_type is None:
            why = why or "an O_PATH fd on a symlink itself: nothing a restorer opens through it"
        elif file_type == "socket" and access != "path":
            why = why or "a socket file held as a file: only O_PATH can, and fdinfo says otherwise"
        if why:
            cap.skip(target_id, "open", path, mnt_id, why)
            continue
        assert path is not None
        rdev = f"{os.major(st.rdev)}:{os.minor(st.rdev)}" if file_type in ("char", "block") else None
        cap.add(target_id, "open", mnt_id, path, file_type=file_type, access=access, rdev=rdev)
    return sockets


def _fs_link(cap: _Capture, name: str, kind: str, text: str | None = None) -> None:
    """/proc/PID/cwd or /proc/PID/root -> a `kind` target with id `name`, or skipped with why."""
    link = f"{cap.proc}/{name}"
    try:
        text = os.readlink(link) if text is None else text
        st = kernel.statx_cached(link)
    except FileNotFoundError:
        cap.alive()
        return
    except OSError as exc:
        cap.skip(name, kind, None, None, f"cannot read {link}: {exc.strerror or exc}")
        return
    path, why = cap.path_of(text, st)
    if why:
        cap.skip(name, kind, path, st.mnt_id, why)
    else:
        assert path is not None
        cap.add(name, kind, st.mnt_id, path)


def _root(cap: _Capture, root_text: str, namespace_view: bool) -> None:
    """The process root: a target when it is not its mount namespace's root (a chroot)."""
    if root_text == "/":
        cap.skip("root", "root", "/", None, "the root of its mount namespace: the restored namespace gives it, no chroot")
    elif not namespace_view:
        cap.skip("root", "root", root_text, None, "chrooted, but the table is the process's own view (relative to "
                 "its root), where its root has no path: the namespace's table could not be read")
    else:
        _fs_link(cap, "root", "root", root_text)


def _mappings(cap: _Capture) -> None:
    """File-backed mappings from map_files: one O_PATH open per vma, one target per file."""
    map_dir = f"{cap.proc}/map_files"
    try:
        names = os.listdir(map_dir)
    except PermissionError as exc:
        # /proc/PID/maps has the path but no mount id, which is the whole point: skip.
        cap.skip("maps", "mmap", None, None, f"cannot list {map_dir}: {exc.strerror} (needs CAP_SYS_ADMIN)")
        return
    except FileNotFoundError:
        cap.alive()
        return
    seen: set[tuple[int | None, int, int]] = set()
    denied: set[str] = set()
    maps: dict[str, str] | None = None
    for name in sorted(names, key=lambda n: int(n.split("-")[0], 16)):
        link = f"{map_dir}/{name}"
        try:
            text = os.readlink(link)
            st = kernel.statx_cached(link)
        except FileNotFoundError:
            continue  # unmapped meanwhile
        except OSError as exc:
            # Unprivileged, the directory lists but its links do not read (they need
            # CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN): each file is skipped once, named from maps.
            if maps is None:
                maps = _mapped_paths(cap)
            named = maps.get(name)
            if (named or name) not in denied:
                denied.add(named or name)
                reason = f"cannot read {link}: {exc.strerror or exc}"
                if exc.errno == errno.EPERM:
                    reason += " (map_files needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; maps has no mount id)"
                cap.skip("map-" + name.split("-")[0], "mmap", named, None, reason)
            continue
        mnt_id = st.mnt_id
        key = (mnt_id, st.dev, st.ino)
        if key in seen:
            continue  # another vma of a file already listed: one target per file
        seen.add(key)
        target_id = "map-" + name.split("-")[0]
        path, why = cap.path_of(text, st)
        if not stat.S_ISREG(st.mode):
            kind = file_type_of(st.mode) or "special file"
            why = why or f"a mapping of a {kind} (a driver's memory): mapped again from the device, not planned as a file"
        if why:
            cap.skip(target_id, "mmap", path, mnt_id, why)
        else:
            assert path is not None
            cap.add(target_id, "mmap", mnt_id, path)


def _mapped_paths(cap: _Capture) -> dict[str, str]:
    """{"start-end": path} of the file-backed mappings in /proc/PID/maps, paths in the process's view."""
    try:
        text = _read_proc(cap.pid, f"{cap.proc}/maps")
    except CaptureError:
        return {}
    out = {}
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            out[fields[0]] = cap.view.of(fields[5]) or fields[5]
    return out


@dataclass(frozen=True)
class _UnixSocket:
    inode: int
    sock_type: int
    state: int
    name: str | None
    vfs_dev: tuple[int, int] | None
    vfs_ino: int | None


def _diag_unix(inodes: set[int]) -> dict[int, _UnixSocket]:
    from pyroute2 import DiagSocket  # type: ignore[import-untyped]
    from pyroute2.netlink.diag import SS_ALL, UDIAG_SHOW_NAME, UDIAG_SHOW_VFS  # type: ignore[import-untyped]

    out: dict[int, _UnixSocket] = {}
    with DiagSocket() as diag:
        diag.bind()
        for msg in diag.get_sock_stats(family=socket.AF_UNIX, states=SS_ALL, show=UDIAG_SHOW_NAME | UDIAG_SHOW_VFS):
            ino = msg["udiag_ino"]
            if ino not in inodes:
                continue
            name = msg.get_attr("UNIX_DIAG_NAME")
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            vfs = msg.get_attr("UNIX_DIAG_VFS")
            dev = ino_vfs = None
            if vfs is not None:
                kdev = vfs["udiag_vfs_dev"]  # the kernel's dev_t: major << 20 | minor
                dev, ino_vfs = (kdev >> 20, kdev & 0xFFFFF), vfs["udiag_vfs_ino"]
            out[ino] = _UnixSocket(ino, msg["udiag_type"], msg["udiag_state"], name, dev, ino_vfs)
    return out


def _diag_in_netns(pid: int, inodes: set[int]) -> dict[int, _UnixSocket]:
    """sock_diag answers for the caller's network namespace: ask from the process's one.

    A network namespace is per thread, so a short-lived thread joins the
    process's and makes the netlink socket there; our own threads never move.
    """
    theirs = os.stat(f"/proc/{pid}/ns/net")
    ours = os.stat("/proc/self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return _diag_unix(inodes)

    def in_their_netns() -> dict[int, _UnixSocket]:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        return _diag_unix(inodes)

    # A fresh worker thread per call: it ends after this one job, taking its netns along.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sock_diag-netns-{pid}") as pool:
        return pool.submit(in_their_netns).result()


def _socket_mount(cap: _Capture, sock: _UnixSocket, path: str) -> tuple[int | None, str | None]:
    """The mount holding the socket file: same device, mountpoint above the path.

    Several mounts of one filesystem can qualify (bind mounts at nested paths,
    a stack of binds). The one the path leads into today is taken when its inode
    there is the socket's; otherwise it is ruled out (that is the covering case)
    and the deepest remaining candidate, the lowest of a stack, is taken, with a note.
    """
    assert sock.vfs_dev is not None
    order = {m.mount_id: i for i, m in enumerate(cap.mounts)}
    candidates = [m for m in cap.mounts if (m.major, m.minor) == sock.vfs_dev and _is_under(path, m.mountpoint)]
    if not candidates:
        return None, f"no mount of device {sock.vfs_dev[0]}:{sock.vfs_dev[1]} lies above {path}"
    if len(candidates) == 1:
        return candidates[0].mount_id, None
    today = None
    st = cap.stat_in_root(path)
    if st is not None and (os.major(st.dev), os.minor(st.dev), st.ino) == (*sock.vfs_dev, sock.vfs_ino):
        today = st.mnt_id
    if today is not None and any(m.mount_id == today for m in candidates):
        return today, None
    parent = cap.stat_in_root(os.path.dirname(path))
    leads_to = parent.mnt_id if parent is not None else None
    rest = [m for m in candidates if m.mount_id != leads_to] or candidates
    best = max(rest, key=lambda m: (len(m.mountpoint), -order[m.mount_id]))
    cap.notes.append(
        f"sk-{sock.inode}: mounts {', '.join(str(m.mount_id) for m in candidates)} of one filesystem all lie above "
        f"{path}; chose {best.mount_id} (deepest, lowest in its stack, not where the path leads today)"
    )
    return best.mount_id, None


def _socket_protocol(cap: _Capture, fd: int) -> str:
    """The protocol sockfs names for a socket fd (TCP, UDP, NETLINK, UNIX, ...)."""
    try:
        name = os.getxattr(f"{cap.proc}/fd/{fd}", "system.sockprotoname")
    except OSError:
        return "unknown"
    return name.rstrip(b"\0").decode("ascii", "replace") or "unknown"


def _socket_path(cap: _Capture, sock: _UnixSocket, name: str) -> str:
    """The socket's path in the table's view. The name is the text given to bind(2), relative to
    the root the process had then: the namespace's (bound before a chroot), or its chroot's.

    The name is looked up both ways, inside the chroot through the process's root fd (which
    reaches the jail even where a cover hides it from the namespace root); the way that finds
    the socket's inode wins. Where neither does (a cover hides both), the ways on which a mount
    of the socket's device lies remain, the namespace's first (CRIU's sk-unix.c reads an absolute
    name so), with a note when both remain.
    """
    if cap.chroot is None:
        return name
    inside = cap.chroot.rstrip("/") + name
    for path, start in ((inside, cap.process_root_fd), (name, cap.root_fd)):
        try:
            fd = _openat2(start, name.lstrip("/"), os.O_PATH | os.O_NOFOLLOW, _IN_ROOT)
        except OSError:
            continue
        try:
            st = kernel.statx_cached(fd)
        finally:
            os.close(fd)
        if (os.major(st.dev), os.minor(st.dev), st.ino) == (*(sock.vfs_dev or (-1, -1)), sock.vfs_ino):
            return path
    possible = [p for p in (name, inside)
                if any((m.major, m.minor) == sock.vfs_dev and _is_under(p, m.mountpoint) for m in cap.mounts)]
    if len(possible) > 1:
        cap.notes.append(f"sk-{sock.inode}: bound as {name} by a process now chrooted into {cap.chroot}, and no path "
                         f"leads to the socket file to tell whether before or after the chroot: taken as {name}")
    return possible[0] if possible else name


def _unix_sockets(cap: _Capture, sockets: dict[int, list[int]]) -> None:
    """Every socket fd: a unix socket bound to a path -> a bind target; any other -> skipped, with why."""
    if not sockets:
        return
    try:
        found = _diag_in_netns(cap.pid, set(sockets))
    except (OSError, ImportError) as exc:
        why = (f"the Python package {exc.name} is not installed here: pip install {exc.name}"
               if isinstance(exc, ImportError) and exc.name else str(exc))
        for inode, fds in sorted(sockets.items()):
            cap.skip(f"sk-{inode}", "bind", None, None, f"sock_diag unavailable: {why}", fds=fds)
        return
    for inode, fds in sorted(sockets.items()):
        target_id = f"sk-{inode}"
        sock = found.get(inode)
        if sock is None:
            protocol = _socket_protocol(cap, fds[0])
            why = (f"a {protocol} socket: not a unix one, it has no name in the filesystem" if protocol != "UNIX"
                   else "a unix socket sock_diag does not report (closed meanwhile?)")
            cap.skip(target_id, "bind", None, None, why, fds=fds)
            continue
        if not sock.name:
            cap.skip(target_id, "bind", None, None, "unbound unix socket (socketpair, or never bound): no name in "
                     "the filesystem", fds=fds)
            continue
        if sock.vfs_dev is None:  # pyroute2 drops an abstract name's leading NUL; ss(8) shows it as '@'
            cap.skip(target_id, "bind", "@" + sock.name, None, "abstract unix name: in no filesystem, no path to reach",
                     fds=fds)
            continue
        if sock.sock_type in (SOCK_STREAM, SOCK_SEQPACKET) and sock.state == TCP_ESTABLISHED:
            # An accepted connection carries its listener's name and inode; CRIU
            # does not re-bind connected stream sockets either (criu/sk-unix.c).
            cap.skip(target_id, "bind", sock.name, None, "connected stream socket: shares its listener's name, not bound again",
                     fds=fds)
            continue
        # The name is the text given to bind(): a process that chrooted after binding
        # keeps its old view, and no mount of the socket's device may lie above it here.
        if not sock.name.startswith("/"):
            cap.skip(target_id, "bind", sock.name, None, "bound by a relative path: the directory it was bound in is unknown",
                     fds=fds)
            continue
        path = _socket_path(cap, sock, sock.name)
        mount, problem = _socket_mount(cap, sock, path)
        if problem:
            cap.skip(target_id, "bind", path, mount, problem, fds=fds)
            continue
        unlinked = mount is not None and _name_unlinked(cap, sock, path, mount)
        if unlinked:
            cap.notes.append(f"{target_id}: its name {path} was unlinked (it names another file now, or none): the "
                             "restorer binds it and unlinks it again")
        cap.add(target_id, "bind", mount, path, fds=fds, unlinked=unlinked or None)


def _name_unlinked(cap: _Capture, sock: _UnixSocket, path: str, mount: int) -> bool:
    """Whether the socket's name was unlinked (a restarted daemon leaves its old socket so, and binds
    a new one by the same name): the name's directory leads into the socket's own mount today, and
    the name there is no file or another one. False where a cover hides the directory (then nobody
    can tell) or where only the filesystem could answer."""
    parent = cap.stat_in_root(os.path.dirname(path))
    if parent is None or parent.mnt_id != mount:
        return False
    try:
        fd = cap.open_in_root(path)
    except OSError as exc:
        return exc.errno == errno.ENOENT
    try:
        st = kernel.statx_cached(fd)
    finally:
        os.close(fd)
    return (os.major(st.dev), os.minor(st.dev), st.ino) != (*sock.vfs_dev, sock.vfs_ino) if sock.vfs_dev else False


def _file_mounts(cap: _Capture) -> list[int]:
    """Mounts whose root is a regular file (a file bind mount), seen through their mountpoint.

    A mountpoint names the topmost mount there, so a covered file mount is not found.
    """
    out = []
    for m in cap.mounts:
        if m.deleted:
            continue
        st = cap.stat_in_root(m.mountpoint)
        if st is not None and stat.S_ISREG(st.mode) and st.mnt_id == m.mount_id:
            out.append(m.mount_id)
    return out


# --- entry point ----------------------------------------------------------------------------


def _from_namespace_root(pid: int) -> tuple[str, int]:
    """The process's mount table as its namespace's root sees it, and an O_PATH fd on that root.

    /proc/PID/mountinfo is relative to the process's root: a chrooted process's lists only the
    mounts below its root, and none of what covers its chroot directory. A forked child joins
    the process's mount namespace with setns(2), which sets its root to the namespace's root,
    opens both there and hands them back (SCM_RIGHTS). OSError when it cannot: setns needs
    CAP_SYS_ADMIN over the namespace and CAP_SYS_CHROOT.
    """
    with contextlib.ExitStack() as held:
        proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # ours: the namespace may have none
        held.callback(os.close, proc_fd)
        ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        held.callback(os.close, ns_fd)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        held.enter_context(ours)
        with theirs:
            child = os.fork()
            if child == 0:  # pragma: no cover - the child only makes syscalls, then _exit
                status = 1
                try:
                    _setns(ns_fd, CLONE_NEWNS)
                    root = os.open("/", os.O_PATH | os.O_DIRECTORY)
                    table = os.open("self/mountinfo", os.O_RDONLY, dir_fd=proc_fd)  # the table as its root sees it
                    socket.send_fds(theirs, [b"ok"], [root, table])
                    status = 0
                except BaseException as exc:  # noqa: BLE001 - the forked child reports any failure and exits
                    err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
                    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or "failed"
                    with contextlib.suppress(BaseException):
                        theirs.send(f"{err} {text}".encode("utf-8", "replace")[:1000])
                finally:
                    os._exit(status)
        try:
            message, fds, _, _ = socket.recv_fds(ours, 1024, 2)
        finally:
            os.waitpid(child, 0)
    if message != b"ok" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        code, _, text = message.decode("utf-8", "replace").partition(" ")
        raise OSError(int(code) if code.isdigit() else errno.EIO, text or "the helper child died")
    root_fd, table_fd = fds
    try:
        with os.fdopen(table_fd, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except BaseException:
        os.close(root_fd)
        raise
    return text, root_fd


def capture_pid(pid: int) -> dict[str, Any]:
    """The overmount-dump/1 dict of a live process: its mount table plus its targets.

    The table is /proc/PID/mountinfo verbatim, unless the process is chrooted: then it is
    the table of its mount namespace seen from the namespace's root (as CRIU dumps it), and
    every path is in that view, so that the root itself is a target with a path; when that
    cannot be read, /proc/PID/mountinfo (paths relative to the process root), with a note.

    A pidfd is held from the start. After the last read the process it names must still be
    running (not a zombie): then no read above can have been of another process that took
    its number, and none was cut short by its exit. Otherwise ProcessExited (exit 1), and no
    dump: a part of one would pass for the whole.

    Nothing here asks a filesystem anything (an unresponsive FUSE or NFS server would block
    the capture in D state, deaf even to SIGKILL): file types, inodes and mount ids come from
    fdinfo, readlink and statx with AT_STATX_DONT_SYNC; paths are looked up with openat2's
    RESOLVE_CACHED. An object only its filesystem could place is skipped, with that reason.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise CaptureError(pid, "not a process id")
    try:
        pidfd = kernel.pidfd_open(pid)
    except OSError as exc:
        raise CaptureError(pid, "no such process" if exc.errno == errno.ESRCH else exc.strerror or str(exc)) from None
    try:
        if kernel.pidfd_exited(pidfd):
            raise CaptureError(pid, "not a live process: it has exited (a zombie its parent has not reaped)")
        try:
            dump = _capture(pid, pidfd)
        except (CaptureError, OSError):
            if kernel.pidfd_exited(pidfd):
                raise ProcessExited(pid) from None
            raise
        if kernel.pidfd_exited(pidfd):  # the last read may have been its last moment
            raise ProcessExited(pid)
        return dump
    finally:
        os.close(pidfd)


def _capture(pid: int, pidfd: int) -> dict[str, Any]:
    proc = f"/proc/{pid}"
    try:
        root_text = os.readlink(f"{proc}/root")
    except (FileNotFoundError, ProcessLookupError):
        raise CaptureError(pid, "no such process") from None
    except PermissionError:
        raise CaptureError(pid, f"permission denied reading {proc}/root (needs root or ptrace access)") from None
    notes = []
    namespace_view = False
    process_root_fd = -1
    if root_text != "/":
        try:
            mountinfo, root_fd = _from_namespace_root(pid)
            namespace_view = True
            notes.append(f"pid {pid} is chrooted into {root_text}: the mount table and every path are its mount "
                         "namespace's, from the namespace root (as CRIU dumps them); its root is target 'root'")
        except OSError as exc:
            notes.append(f"pid {pid} is chrooted into {root_text}, and its namespace's own table cannot be read "
                         f"({exc.strerror or exc}; setns(2) needs CAP_SYS_ADMIN over the namespace): the table and "
                         "paths are the process's view, relative to its root")
    if not namespace_view:
        mountinfo = _read_proc(pid, f"{proc}/mountinfo")
        if not mountinfo and root_text != "/":
            raise CaptureError(pid, f"chrooted into {root_text}, where no mount lies below its root, and its "
                               f"namespace's table cannot be read: {notes[-1]}")
        if not mountinfo:
            raise CaptureError(pid, "empty mountinfo (a zombie, or a kernel thread)")
        try:
            root_fd = os.open(f"{proc}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise CaptureError(pid, "no such process") from None
        except PermissionError:
            raise CaptureError(pid, f"permission denied reading {proc}/root (needs root or ptrace access)") from None
    try:
        mounts = parse(mountinfo, f"{proc}/mountinfo")
        view = _View("/" if namespace_view else root_text)
        chroot = root_text if namespace_view else None
        cap = _Capture(pid, proc, mounts, view, root_fd, chroot, notes=notes, pidfd=pidfd)
        if chroot is not None:
            cap.process_root_fd = process_root_fd = os.open(f"{proc}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        cap.root_mount = _own_fd_mnt_id(root_fd)
        sockets = _open_files(cap)
        _fs_link(cap, "cwd", "chdir")
        _root(cap, root_text, namespace_view)
        _mappings(cap)
        _unix_sockets(cap, sockets)
        file_mounts = _file_mounts(cap)
        cap.alive()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH) and kernel.pidfd_exited(pidfd):
            raise ProcessExited(pid) from None
        where = f" ({exc.filename})" if exc.filename else ""
        raise CaptureError(pid, f"{exc.strerror or exc}{where}") from None
    finally:
        os.close(root_fd)
        if process_root_fd >= 0:
            os.close(process_root_fd)
    return {
        "format": FORMAT,
        "mountinfo": mountinfo,
        "targets": cap.targets,
        "pid": pid,
        "file_mounts": file_mounts,
        "skipped": cap.skipped,
        "notes": cap.notes,
    }
