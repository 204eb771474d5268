"""Capture one live process as an overmount-dump/1 dict: a pidfd held throughout, its table
(table.py), its objects (objects.py) and sockets (sockets.py), and the proof it was alive to the end."""

from __future__ import annotations

import errno
import os
from typing import Any

from planner import kernel
from planner.dump import DUMP_FORMAT
from planner.errors import CaptureError, ProcessExited
from planner.inputs.capture import objects, sockets
from planner.inputs.capture.table import read_table
from planner.mountinfo import parse


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
    table = read_table(pid, root_text)
    process_root_fd = -1
    try:
        cap = objects.Capture(pid, parse(table.text, f"{proc}/mountinfo"), table, pidfd)
        if table.chroot is not None:
            cap.process_root_fd = process_root_fd = os.open(f"{proc}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        cap.root_mount = kernel.fdinfo_mount_id(table.root_fd)
        held_sockets = objects.open_files(cap)
        objects.fs_link(cap, "cwd", "chdir")
        objects.process_root(cap, root_text, table.chroot is not None)
        objects.mappings(cap)
        sockets.unix_sockets(cap, held_sockets)
        file_mounts = objects.file_mounts(cap)
        cap.alive()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH) and kernel.pidfd_exited(pidfd):
            raise ProcessExited(pid) from None
        where = f" ({exc.filename})" if exc.filename else ""
        raise CaptureError(pid, f"{exc.strerror or exc}{where}") from None
    finally:
        os.close(table.root_fd)
        if process_root_fd >= 0:
            os.close(process_root_fd)
    return {
        "format": DUMP_FORMAT,
        "mountinfo": table.text,
        "targets": cap.targets,
        "pid": pid,
        "file_mounts": file_mounts,
        "skipped": cap.skipped,
        "notes": cap.notes,
    }
