"""Live capture: a process read as an overmount-dump/1 dict, its mount table and restore targets.

In parts a process tree or a host scan can reuse: table.py reads a mount namespace's table (once
per namespace), objects.py what one process holds, sockets.py its unix sockets through sock_diag,
process.py one process from start to end (capture_pid). Its openat2, statx, setns, pidfd, fdinfo
and sock_diag calls go through planner.kernel; the rest is Python's own os and socket modules.

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

from planner.inputs.capture.process import capture_pid

__all__ = ["capture_pid"]
