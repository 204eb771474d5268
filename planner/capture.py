"""Capture a live process as an overmount-dump/1 dict: its mount table and restore targets.

Reads /proc/PID (mountinfo, fd, fdinfo, cwd, root, map_files) and unix sockets
through netlink sock_diag (pyroute2 DiagSocket). Needs root, or at least ptrace
access to the process plus CAP_SYS_ADMIN for map_files and a foreign netns.

Each target's mount is the one the object lives in, read from the kernel
(fdinfo ``mnt_id:`` of the process's fd, or of our own O_PATH fd on the
/proc magic link), never by resolving its path today: under an overmount
the path leads into the covering mount. Paths are the process's own view
(relative to its root, as its /proc/PID/mountinfo is).

The dump dict: ``format``, ``mountinfo`` (verbatim), ``targets`` (ids ``fdN``,
``cwd``, ``map-<start address>``, ``sk-<socket inode>``) and extra fields:
``pid``; ``file_mounts`` (ids of mounts whose root is a regular file, as far as
their mountpoint is reachable today); ``skipped`` (``{"id", "kind", "path",
"mount", "reason"}``: deleted files, paths outside the process root, ...);
``notes`` (guesses the capture had to make).

The capture is not atomic: a process that keeps running can change between reads.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from planner.errors import InputError
from planner.mountinfo import Mount, parse

FORMAT = "overmount-dump/1"

_DELETED = " (deleted)"
CLONE_NEWNET = 0x40000000
SYS_OPENAT2 = 437  # x86_64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
SOCK_STREAM, SOCK_SEQPACKET = 1, 5
TCP_ESTABLISHED = 1


class CaptureError(InputError):
    """The process cannot be read: no such pid, no permission, or it exited meanwhile."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"pid {pid}", None, reason)


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


def _fdinfo_mnt_id(path: str) -> int | None:
    """The `mnt_id:` line of an fdinfo file (every fd has one, O_PATH ones included)."""
    with open(path, encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key == "mnt_id":
                return int(value.strip())
    return None


def _own_fd_mnt_id(fd: int) -> int | None:
    return _fdinfo_mnt_id(f"/proc/self/fdinfo/{fd}")


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
    targets: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    by_id: dict[int, Mount] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {m.mount_id: m for m in self.mounts}

    def add(self, target_id: str, kind: str, mount: int | None, path: str) -> None:
        where = self.by_id.get(mount) if mount is not None else None
        if where is None:
            self.skip(
                target_id,
                kind,
                path,
                mount,
                f"mount {mount} is not in the process's mount table (opened in another mount namespace, e.g. before an unshare)",
            )
        elif not _is_under(path, where.mountpoint):
            self.skip(target_id, kind, path, mount, f"path is not under mount {mount}'s mountpoint {where.mountpoint}")
        else:
            self.targets.append({"id": target_id, "kind": kind, "mount": mount, "path": path})

    def skip(self, target_id: str, kind: str, path: str | None, mount: int | None, reason: str) -> None:
        self.skipped.append({"id": target_id, "kind": kind, "path": path, "mount": mount, "reason": reason})

    def alive(self) -> None:
        if not os.path.exists(self.proc):
            raise CaptureError(self.pid, "the process exited during the capture")

    def path_of(self, link_text: str, st: os.stat_result) -> tuple[str | None, str | None]:
        """(path in the process's view, or None; why it is not a target, or None)."""
        deleted = False
        if link_text.endswith(_DELETED):
            bare = link_text[: -len(_DELETED)]
            # d_path() marks an unlinked dentry with this suffix; a file may also really be named so.
            deleted = st.st_nlink == 0 or not self.same_inode_at(self.view.of(link_text), st)
            if deleted:
                link_text = bare
        path = self.view.of(link_text)
        if path is None:
            return link_text, f"outside the process's root {self.view.root}"
        if not path.startswith("/"):
            return path, f"not a path: {path!r}"
        if deleted:
            return path, "deleted: unlinked while open, no path reaches it"
        return path, None

    def open_in_root(self, path: str, flags: int = os.O_PATH | os.O_NOFOLLOW) -> int:
        return _openat2(self.root_fd, path.lstrip("/") or ".", flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

    def same_inode_at(self, path: str | None, st: os.stat_result) -> bool:
        if path is None:
            return False
        try:
            fd = self.open_in_root(path)
        except OSError:
            return False
        try:
            now = os.fstat(fd)
        finally:
            os.close(fd)
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


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


def _open_files(cap: _Capture) -> dict[int, list[int]]:
    """Regular files and directories held by fds -> open targets; returns socket inode -> fds."""
    fd_dir = f"{cap.proc}/fd"
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        raise CaptureError(cap.pid, f"permission denied listing {fd_dir}") from None
    except FileNotFoundError:
        raise CaptureError(cap.pid, "the process exited during the capture") from None
    sockets: dict[int, list[int]] = {}
    for fd in sorted(int(n) for n in names if n.isdigit()):
        link = f"{fd_dir}/{fd}"
        try:
            text = os.readlink(link)
            st = os.stat(link)  # follows the magic link to the open file itself
            mnt_id = _fdinfo_mnt_id(f"{cap.proc}/fdinfo/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if text.startswith("socket:["):
            sockets.setdefault(st.st_ino, []).append(fd)
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue  # devices, pipes, anon inodes: not opened by a path we plan for
        path, why = cap.path_of(text, st)
        if why:
            cap.skip(f"fd{fd}", "open", path, mnt_id, why)
        else:
            assert path is not None
            cap.add(f"fd{fd}", "open", mnt_id, path)
    return sockets


def _cwd(cap: _Capture) -> None:
    link = f"{cap.proc}/cwd"
    try:
        text = os.readlink(link)
        fd = os.open(link, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        cap.alive()
        return
    try:
        st = os.fstat(fd)
        mnt_id = _own_fd_mnt_id(fd)
    finally:
        os.close(fd)
    path, why = cap.path_of(text, st)
    if why:
        cap.skip("cwd", "chdir", path, mnt_id, why)
    else:
        assert path is not None
        cap.add("cwd", "chdir", mnt_id, path)


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
    for name in sorted(names, key=lambda n: int(n.split("-")[0], 16)):
        link = f"{map_dir}/{name}"
        try:
            text = os.readlink(link)
            fd = os.open(link, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # unmapped meanwhile
        try:
            st = os.fstat(fd)
            mnt_id = _own_fd_mnt_id(fd)
        finally:
            os.close(fd)
        key = (mnt_id, st.st_dev, st.st_ino)
        if key in seen or not stat.S_ISREG(st.st_mode):
            continue
        seen.add(key)
        target_id = "map-" + name.split("-")[0]
        path, why = cap.path_of(text, st)
        if why:
            cap.skip(target_id, "mmap", path, mnt_id, why)
        else:
            assert path is not None
            cap.add(target_id, "mmap", mnt_id, path)


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
    try:
        fd = cap.open_in_root(path)
        try:
            st = os.fstat(fd)
            if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) == (*sock.vfs_dev, sock.vfs_ino):
                today = _own_fd_mnt_id(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    if today is not None and any(m.mount_id == today for m in candidates):
        return today, None
    try:
        fd = cap.open_in_root(os.path.dirname(path))
        try:
            leads_to = _own_fd_mnt_id(fd)
        finally:
            os.close(fd)
    except OSError:
        leads_to = None
    rest = [m for m in candidates if m.mount_id != leads_to] or candidates
    best = max(rest, key=lambda m: (len(m.mountpoint), -order[m.mount_id]))
    cap.notes.append(
        f"sk-{sock.inode}: mounts {', '.join(str(m.mount_id) for m in candidates)} of one filesystem all lie above "
        f"{path}; chose {best.mount_id} (deepest, lowest in its stack, not where the path leads today)"
    )
    return best.mount_id, None


def _unix_sockets(cap: _Capture, sockets: dict[int, list[int]]) -> None:
    if not sockets:
        return
    try:
        found = _diag_in_netns(cap.pid, set(sockets))
    except (OSError, ImportError) as exc:
        cap.skip("sockets", "bind", None, None, f"sock_diag unavailable: {exc}")
        return
    for inode in sorted(found):
        sock = found[inode]
        target_id = f"sk-{inode}"
        if sock.vfs_dev is None or not sock.name:
            continue  # unbound or abstract: nothing in the filesystem (pyroute2 drops the NUL)
        if sock.sock_type in (SOCK_STREAM, SOCK_SEQPACKET) and sock.state == TCP_ESTABLISHED:
            # An accepted connection carries its listener's name and inode; CRIU
            # does not re-bind connected stream sockets either (criu/sk-unix.c).
            cap.skip(target_id, "bind", sock.name, None, "connected stream socket: shares its listener's name, not bound again")
            continue
        # The name is the text given to bind(): a process that chrooted after binding
        # keeps its old view, and no mount of the socket's device may lie above it here.
        if not sock.name.startswith("/"):
            cap.skip(target_id, "bind", sock.name, None, "bound by a relative path: the directory it was bound in is unknown")
            continue
        mount, why = _socket_mount(cap, sock, sock.name)
        if why:
            cap.skip(target_id, "bind", sock.name, mount, why)
        else:
            cap.add(target_id, "bind", mount, sock.name)


def _file_mounts(cap: _Capture) -> list[int]:
    """Mounts whose root is a regular file (a file bind mount), seen through their mountpoint.

    A mountpoint names the topmost mount there, so a covered file mount is not found.
    """
    out = []
    for m in cap.mounts:
        if m.deleted:
            continue
        try:
            fd = cap.open_in_root(m.mountpoint)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _own_fd_mnt_id(fd) == m.mount_id:
                out.append(m.mount_id)
        finally:
            os.close(fd)
    return out


# --- entry point ----------------------------------------------------------------------------


def capture_pid(pid: int) -> dict[str, Any]:
    """The overmount-dump/1 dict of a live process: mountinfo verbatim plus its targets."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise CaptureError(pid, "not a process id")
    proc = f"/proc/{pid}"
    mountinfo = _read_proc(pid, f"{proc}/mountinfo")
    if not mountinfo:
        raise CaptureError(pid, "empty mountinfo (a zombie, or a kernel thread)")
    mounts = parse(mountinfo, f"{proc}/mountinfo")
    try:
        root_text = os.readlink(f"{proc}/root")
        root_fd = os.open(f"{proc}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise CaptureError(pid, "no such process") from None
    except PermissionError:
        raise CaptureError(pid, f"permission denied reading {proc}/root (needs root or ptrace access)") from None
    try:
        cap = _Capture(pid, proc, mounts, _View(root_text), root_fd)
        sockets = _open_files(cap)
        _cwd(cap)
        _mappings(cap)
        _unix_sockets(cap, sockets)
        file_mounts = _file_mounts(cap)
        cap.alive()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH) and not os.path.exists(proc):
            raise CaptureError(pid, "the process exited during the capture") from None
        where = f" ({exc.filename})" if exc.filename else ""
        raise CaptureError(pid, f"{exc.strerror or exc}{where}") from None
    finally:
        os.close(root_fd)
    return {
        "format": FORMAT,
        "mountinfo": mountinfo,
        "targets": cap.targets,
        "pid": pid,
        "file_mounts": file_mounts,
        "skipped": cap.skipped,
        "notes": cap.notes,
    }
