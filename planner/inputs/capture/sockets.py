"""A process's unix sockets, read through netlink sock_diag from its own network namespace: a socket
bound to a path is a bind target in the mount holding its file; any other is skipped with why.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

from planner import kernel
from planner.inputs.capture.objects import Capture
from planner.kernel import UnixSocket
from planner.paths import is_under
from planner.targets import is_accepted_connection


def _diag_in_netns(pid: int, inodes: set[int]) -> dict[int, UnixSocket]:
    """sock_diag answers for the caller's network namespace: ask from the process's one.

    A network namespace is per thread, so a short-lived thread joins the
    process's and makes the netlink socket there; our own threads never move.
    """
    theirs = os.stat(f"/proc/{pid}/ns/net")
    ours = os.stat("/proc/self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return kernel.unix_socket_diag(inodes, fresh=True)

    def in_their_netns() -> dict[int, UnixSocket]:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            kernel.setns(fd, kernel.CLONE_NEWNET)
        finally:
            os.close(fd)
        return kernel.unix_socket_diag(inodes, fresh=True)

    # A fresh worker thread per call: it ends after this one job, taking its netns along.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sock_diag-netns-{pid}") as pool:
        return pool.submit(in_their_netns).result()


def _socket_mount(cap: Capture, sock: UnixSocket, path: str) -> tuple[int | None, str | None]:
    """The mount holding the socket file: same device, mountpoint above the path.

    Several mounts of one filesystem can qualify (bind mounts at nested paths,
    a stack of binds). The one the path leads into today is taken when its inode
    there is the socket's; otherwise it is ruled out (that is the covering case)
    and the deepest remaining candidate, the lowest of a stack, is taken, with a note.
    """
    assert sock.vfs_dev is not None
    order = {m.mount_id: i for i, m in enumerate(cap.mounts)}
    candidates = [m for m in cap.mounts if (m.major, m.minor) == sock.vfs_dev and is_under(path, m.mountpoint)]
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


def _socket_protocol(cap: Capture, fd: int) -> str:
    """The protocol sockfs names for a socket fd (TCP, UDP, NETLINK, UNIX, ...)."""
    try:
        name = os.getxattr(f"{cap.proc}/fd/{fd}", "system.sockprotoname")
    except OSError:
        return "unknown"
    return name.rstrip(b"\0").decode("ascii", "replace") or "unknown"


def _socket_path(cap: Capture, sock: UnixSocket, name: str) -> str:
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
            fd = cap.open_in_root(name, root_fd=start)
        except OSError:
            continue
        try:
            st = kernel.statx_cached(fd)
        finally:
            os.close(fd)
        if (os.major(st.dev), os.minor(st.dev), st.ino) == (*(sock.vfs_dev or (-1, -1)), sock.vfs_ino):
            return path
    possible = [p for p in (name, inside)
                if any((m.major, m.minor) == sock.vfs_dev and is_under(p, m.mountpoint) for m in cap.mounts)]
    if len(possible) > 1:
        cap.notes.append(f"sk-{sock.inode}: bound as {name} by a process now chrooted into {cap.chroot}, and no path "
                         f"leads to the socket file to tell whether before or after the chroot: taken as {name}")
    return possible[0] if possible else name


def unix_sockets(cap: Capture, sockets: dict[int, list[int]]) -> None:
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
        if is_accepted_connection(sock.sock_type, sock.state):
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


def _name_unlinked(cap: Capture, sock: UnixSocket, path: str, mount: int) -> bool:
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
