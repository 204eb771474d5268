"""A process's mount table, as capture reads it: per mount namespace, not per process.

/proc/PID/mountinfo is relative to the process's root. For a chrooted process the table is its
mount namespace's, read from the namespace's root by a forked child that joins it with setns(2)
(as CRIU dumps it); `View` turns /proc magic links into paths of that table's view. A tree or
host scan reads each namespace's table once here and the processes' objects with objects.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass, field

from planner import kernel
from planner.errors import CaptureError


@dataclass
class View:
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
class Table:
    """The mount table a capture works in, and the root its paths are looked up from."""

    text: str  # mountinfo text
    root_fd: int  # O_PATH on the root the table's paths start at
    view: View
    chroot: str | None  # the process's root in the table's view, when the table is its namespace's
    notes: list[str] = field(default_factory=list)


def read_table(pid: int, root_text: str) -> Table:
    """The table of process `pid`, whose root reads back as `root_text`: its namespace's, from the
    namespace root, when it is chrooted and setns is allowed; else /proc/PID/mountinfo."""
    proc = f"/proc/{pid}"
    notes = []
    if root_text != "/":
        try:
            text, root_fd = namespace_table(pid)
            notes.append(f"pid {pid} is chrooted into {root_text}: the mount table and every path are its mount "
                         "namespace's, from the namespace root (as CRIU dumps them); its root is target 'root'")
            return Table(text, root_fd, View("/"), root_text, notes)
        except OSError as exc:
            notes.append(f"pid {pid} is chrooted into {root_text}, and its namespace's own table cannot be read "
                         f"({exc.strerror or exc}; setns(2) needs CAP_SYS_ADMIN over the namespace): the table and "
                         "paths are the process's view, relative to its root")
    text = read_proc_file(pid, f"{proc}/mountinfo")
    if not text and root_text != "/":
        raise CaptureError(pid, f"chrooted into {root_text}, where no mount lies below its root, and its "
                           f"namespace's table cannot be read: {notes[-1]}")
    if not text:
        raise CaptureError(pid, "empty mountinfo (a zombie, or a kernel thread)")
    try:
        root_fd = os.open(f"{proc}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise CaptureError(pid, "no such process") from None
    except PermissionError:
        raise CaptureError(pid, f"permission denied reading {proc}/root (needs root or ptrace access)") from None
    return Table(text, root_fd, View(root_text), None, notes)


def read_proc_file(pid: int, path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        raise CaptureError(pid, "no such process") from None
    except PermissionError:
        raise CaptureError(pid, f"permission denied reading {path} (needs root or ptrace access)") from None
    except OSError as exc:
        raise CaptureError(pid, f"cannot read {path}: {exc.strerror or exc}") from None



def namespace_table(pid: int) -> tuple[str, int]:
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
                    kernel.setns(ns_fd, kernel.CLONE_NEWNS)
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
