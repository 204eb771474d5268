"""What one process holds, read from /proc/PID and the kernel: every fd, its cwd and root, every file
mapping, and which mounts are file mounts, each a target in the mount it really lives in or a
skipped entry saying why not (unix sockets: sockets.py). Per process: the table it is read against
comes from table.py, once per mount namespace.
"""

from __future__ import annotations

import errno
import os
import stat

from planner import kernel
from planner.errors import CaptureError, ProcessExited
from planner.inputs.capture.table import Table, read_proc_file
from planner.inputs.targets import TargetCollector
from planner.kernel import CachedStat
from planner.mountinfo import Mount
from planner.paths import from_root
from planner.targets import access_mode, file_type_of

_DELETED = " (deleted)"
# Only what the dentry cache already holds: a lookup that would ask the filesystem (a FUSE or
# NFS server, possibly dead) fails with EAGAIN instead (openat2(2) RESOLVE_CACHED, Linux 5.12).
IN_ROOT = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS | kernel.RESOLVE_CACHED
NEEDS_THE_FILESYSTEM = "answering needs its filesystem (the kernel's caches do not hold it), which capture never asks"


class Capture(TargetCollector):
    """One process being captured: the table it is read against (table.py), where its paths are
    looked up from, and what is collected (targets, skipped, notes)."""

    def __init__(self, pid: int, mounts: list[Mount], table: Table, pidfd: int) -> None:
        super().__init__(mounts, self.unlisted_reason, table.notes)
        self.pid = pid
        self.proc = f"/proc/{pid}"
        self.mounts = mounts
        self.view = table.view
        self.root_fd = table.root_fd
        # The process root in the table's view when the table is the namespace's and the process
        # is chrooted (socket names are relative to the root it had when it bound them).
        self.chroot = table.chroot
        self.process_root_fd = -1  # O_PATH on /proc/PID/root, when chroot is set
        self.root_mount: int | None = None  # the mount holding the process's root directory
        self.pidfd = pidfd  # held from the start: it names this process, never a later one with its number

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

    def open_in_root(self, path: str, flags: int = os.O_PATH | os.O_NOFOLLOW, root_fd: int | None = None) -> int:
        """An fd on `path` inside the process root (or `root_fd`), found in the dentry cache alone
        (EAGAIN otherwise): RESOLVE_IN_ROOT keeps absolute symlinks inside it."""
        return kernel.openat2(self.root_fd if root_fd is None else root_fd, from_root(path), flags, IN_ROOT)

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


def open_files(cap: Capture) -> dict[int, list[int]]:
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
            info = kernel.fdinfo(f"{cap.pid}/fdinfo/{fd}")
            mnt_id = int(info["mnt_id"]) if "mnt_id" in info else None
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
        access = access_mode(int(info.get("flags", "0"), 8))  # fdinfo prints flags in octal
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


def fs_link(cap: Capture, name: str, kind: str, text: str | None = None) -> None:
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


def process_root(cap: Capture, root_text: str, namespace_view: bool) -> None:
    """The process root: a target when it is not its mount namespace's root (a chroot)."""
    if root_text == "/":
        cap.skip("root", "root", "/", None, "the root of its mount namespace: the restored namespace gives it, no chroot")
    elif not namespace_view:
        cap.skip("root", "root", root_text, None, "chrooted, but the table is the process's own view (relative to "
                 "its root), where its root has no path: the namespace's table could not be read")
    else:
        fs_link(cap, "root", "root", root_text)


def mappings(cap: Capture) -> None:
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
                maps = mapped_paths(cap)
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


def mapped_paths(cap: Capture) -> dict[str, str]:
    """{"start-end": path} of the file-backed mappings in /proc/PID/maps, paths in the process's view."""
    try:
        text = read_proc_file(cap.pid, f"{cap.proc}/maps")
    except CaptureError:
        return {}
    out = {}
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            out[fields[0]] = cap.view.of(fields[5]) or fields[5]
    return out


def file_mounts(cap: Capture) -> list[int]:
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
