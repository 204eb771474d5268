"""The target steps, done as a restorer does them and checked by the kernel's own answers: open
(openat2, then statx of the fd: mount, device, inode, type; access mode and device number), chdir,
root (chroot and back), bind (bind(2) at the socket's name, then sock_diag and statx), mmap
(/proc/self/maps and map_files) and mount-source (open_tree clone attached at `to`, its mountinfo
line). Each answer becomes a TargetResult; one that is not the dump's fails the step."""

from __future__ import annotations

import ctypes
import fcntl
import functools
import mmap
import os
import socket
import stat
from collections.abc import Iterable

from planner import kernel
from planner.executor.mounts import Mounts
from planner.executor.paths import RESOLVE, Mismatch, clean, split
from planner.executor.report import BaseReporter, TargetResult
from planner.mountinfo import Mount
from planner.paths import from_root, inside
from planner.replica import Key, Replica, TargetObject, sb_path
from planner.steps import Step
from planner.targets import Target, access_mode, file_type_of

_DEVICES = (stat.S_IFCHR, stat.S_IFBLK)
_NOT_OPENED = (*_DEVICES, stat.S_IFSOCK)  # open(2) would run a driver, or cannot open it at all
_SUN_PATH_MAX = 107  # sizeof(sun_path) - 1 for the NUL
_ACCESS_FLAGS = {"read-only": os.O_RDONLY, "write-only": os.O_WRONLY, "read-write": os.O_RDWR, "path": os.O_PATH}


@functools.cache  # a few distinct modes, asked once per target
def _type_name(mode: int) -> str:
    return file_type_of(mode) or ("symlink" if stat.S_ISLNK(mode) else f"type {stat.S_IFMT(mode):o}")


def _dev_text(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


class Targets(Mounts):
    """The target steps and their verification, over the mounts the other steps moved."""

    def __init__(self, replica: Replica, targets: Iterable[Target], reporter: BaseReporter) -> None:
        super().__init__(replica)
        self.targets = {t.id: t for t in targets}
        self.results: dict[str, TargetResult] = {}
        self.reporter = reporter

    def _object(self, step: Step) -> tuple[TargetObject, str]:
        """The step's target and the path it reaches it by.

        The path may differ from the dump's (through the yard, where the target's mount rides
        in a parked one): what is checked is the mount and inode the kernel reaches. Not for
        bind, whose path is the socket's name.
        """
        obj = self.replica.objects.get(step.target or "")
        if obj is None:
            raise Mismatch(f"step names target {step.target!r}, which the dump does not have")
        if step.op != obj.kind:
            raise Mismatch(f"target {obj.id} is a {obj.kind}, the step does {step.op}")
        path = str(step.path)
        if path == obj.path:  # obj.path was checked clean when the replica was built
            return obj, path
        clean(path, "path")
        if obj.kind == "bind":
            raise Mismatch(f"target {obj.id} is the socket named {obj.path}; the step binds {path}")
        return obj, path

    def _record(
        self,
        index: int,
        obj: TargetObject,
        got: int | str | None,
        inode_ok: bool,
        detail: str = "",
        got_mode: int | None = None,
        type_problem: str | None = None,
        via: object = None,
    ) -> None:
        """Keep the kernel's answer for a target; Mismatch when mount, inode or type differ.

        got_mode: st_mode of what was reached, when the op checks the object's type (the
        dump's, or a stand-in's where the replica could not make the real thing);
        type_problem: anything else about the object that is wrong (access mode, device number).
        """
        got_type = None if got_mode is None else _type_name(got_mode)
        if got_type is not None and type_problem is None:
            # The dump's type, unless a stand-in had to take its place; then the stand-in's.
            want = _type_name(obj.mode) if obj.stand_in or obj.file_type is None else obj.file_type
            if got_type != want:
                type_problem = f"reached a {got_type}, the dump has a {want}"
        ok = got == obj.mount and inode_ok and type_problem is None
        self.results[obj.id] = TargetResult(
            obj.id, obj.kind, obj.mount, got, inode_ok, ok, index, detail, got_type, type_problem is None, obj.stand_in,
            via=via,  # a bind through a visible alias mount (planner.aliases)
        )
        self.reporter.target_checked(self.results[obj.id])
        if not ok:
            if got != obj.mount:
                raise Mismatch(f"target {obj.id} reached mount {got} (expected {obj.mount})")
            if not inode_ok:
                raise Mismatch(f"target {obj.id}: inode or device differ ({detail})")
            raise Mismatch(f"target {obj.id}: {type_problem}")

    def open(self, index: int, step: Step) -> None:
        obj, path = self._object(step)
        rel = from_root(path)
        made = stat.S_IFMT(obj.mode)
        flags = _ACCESS_FLAGS[obj.access or "read-only"]
        if made in _NOT_OPENED or (made == stat.S_IFDIR and flags != os.O_PATH):
            # A device is reached with O_PATH: open(2) would run its driver (the replica's node
            # carries the dump's real number: a watchdog would arm, a tty become a controlling
            # terminal), and a socket file cannot be opened at all. A directory is read-only.
            flags = os.O_PATH if made != stat.S_IFDIR else os.O_RDONLY | os.O_DIRECTORY
        fake = -1
        if made == stat.S_IFIFO and flags != os.O_PATH:
            # open(2) of a FIFO read-only or write-only waits for the other end (fs/pipe.c
            # fifo_open). As CRIU's fifo.c does, a "fake" O_RDWR opener is there first; and
            # O_NONBLOCK, so that nothing here can ever wait.
            fake = kernel.openat2(self.root_fd, rel, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW, RESOLVE)
            flags |= os.O_NONBLOCK
        try:
            fd = kernel.openat2(self.root_fd, rel, flags | os.O_NOFOLLOW, RESOLVE)
        finally:
            if fake >= 0:
                os.close(fake)
        try:
            live, dev, ino, mode = kernel.statx_ids(fd)  # the open file's mount, device, inode and type: one call
            problem = None
            held = fcntl.fcntl(fd, fcntl.F_GETFL)
            if flags & os.O_PATH == 0 and held & os.O_ACCMODE != flags & os.O_ACCMODE:
                problem = f"opened {access_mode(held)}, the dump held it {obj.access}"
            if made in _DEVICES and (rdev := os.fstat(fd).st_rdev) != obj.rdev:
                problem = f"device {_dev_text(rdev)}, the replica made {_dev_text(obj.rdev)}"
        finally:
            # Verified, it is closed: a restored process holds its own, and the executor keeps no
            # fd per target (a plan with thousands of targets runs under `ulimit -n 1024`).
            os.close(fd)
        detail = f"ino {ino}, {_type_name(mode)}, {access_mode(held)}" if obj.access else f"ino {ino}, {_type_name(mode)}"
        self._record(index, obj, self.replica.key(live), ino == obj.ino and dev == obj.dev, detail, mode, problem)

    def chdir(self, index: int, step: Step) -> None:
        obj, path = self._object(step)
        fd = self.resolve(path, os.O_PATH | os.O_DIRECTORY)
        try:
            os.fchdir(fd)
        finally:
            os.close(fd)
        mnt, dev, ino, mode = kernel.statx_ids(".")
        self._record(index, obj, self.replica.key(mnt), (ino, dev) == (obj.ino, obj.dev), f"cwd ino {ino}", mode)

    def root(self, index: int, step: Step) -> None:
        """chroot into the target as a restorer does (CRIU's restore_fs: fchdir, chroot(".")),
        read the new root's mount and inode, then take the executor's own root and cwd back:
        later steps resolve names from it (bind(2) takes the socket's path as it is)."""
        obj, path = self._object(step)
        fd = self.resolve(path, os.O_PATH | os.O_DIRECTORY)
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fchdir(fd)
            os.chroot(".")
            try:
                mnt, dev, ino, mode = kernel.statx_ids("/")
            finally:
                os.fchdir(self.root_fd)
                os.chroot(".")
                os.fchdir(here)
        finally:
            os.close(fd)
            os.close(here)
        self._record(index, obj, self.replica.key(mnt), (ino, dev) == (obj.ino, obj.dev), f"root ino {ino}", mode)

    def bind(self, index: int, step: Step) -> None:
        obj, _ = self._object(step)
        head, name = split(obj.path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # closed once verified, as open's fd
            try:
                parent_mnt, parent_dev, parent_ino = kernel.statx_mount_id(parent)
                if (parent_ino, parent_dev) != (obj.ino, obj.dev):
                    self._record(index, obj, self.replica.key(parent_mnt), False, f"socket directory ino {parent_ino}")
                bound = obj.path
                if len(os.fsencode(obj.path)) <= _SUN_PATH_MAX:
                    sock.bind(obj.path)  # the name a restored process will see, resolved as it would be
                else:
                    bound = name
                    here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        os.fchdir(parent)
                        sock.bind(name)
                    finally:
                        os.fchdir(here)
                        os.close(here)
                sock.listen()
                file_mnt, file_dev, file_ino = kernel.statx_mount_id(name, dirfd=parent)
            finally:
                os.close(parent)
            sock_ino = os.fstat(sock.fileno()).st_ino
            diag = kernel.unix_socket_diag([sock_ino]).get(sock_ino)
            if diag is None:
                raise Mismatch(f"sock_diag does not know socket inode {sock_ino}")
            diag_name, vfs_dev, vfs_ino = diag.name, diag.vfs_st_dev, diag.vfs_ino
            inode_ok = (vfs_dev, vfs_ino) == (obj.dev, file_ino) and file_dev == obj.dev and diag_name == bound
            detail = f"sock_diag name {diag_name!r} vfs ino {vfs_ino} dev {vfs_dev}; file ino {file_ino}"
            got = self.replica.key(file_mnt)
            via = step.via
            if via is not None:
                # Bound through a visible alias: the file the socket made must be the one the hidden
                # mount holds, at the target's place in it (looked up from the executor's handle on its
                # root, as a restored process holding that mount would).
                if got != via:
                    raise Mismatch(f"target {obj.id}: {obj.path} was bound in mount {got}, the step says through {via}")
                got, seen_ok, seen = self._seen_in_own_mount(obj, sock, (vfs_dev, vfs_ino))
                inode_ok = inode_ok and seen_ok
                detail += f"; bound through mount {via}, {seen}"
            self._record(index, obj, got, inode_ok, detail, via=via)
        if obj.unlinked:
            # The dumped process had unlinked this name: so does the restorer (CRIU's sk-unix.c),
            # which leaves the file free for the live name bound after it.
            self._unlink_in_place(obj.path)

    def _seen_in_own_mount(
        self, obj: TargetObject, listener: socket.socket, vfs: tuple[int | None, int | None]
    ) -> tuple[Key, bool, str]:
        """(mount, ok, text): the socket as the target's own (hidden) mount holds it, found from that
        mount's root through the executor's handle: the kernel's mount id and inode of the file
        there, and a connection made by that name that `listener` accepts."""
        home = self.replica.tree.by_id[obj.mount]
        head, name = split(inside(obj.path, home.mountpoint) or "")
        parent = kernel.openat2(self.replica.handles[obj.mount], head.lstrip("/") or ".", os.O_PATH | os.O_DIRECTORY,
                                kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_BENEATH)
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            mnt, dev, ino = kernel.statx_mount_id(name, dirfd=parent)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                os.fchdir(parent)  # connect(2) by the name inside the hidden mount, from its directory
                try:
                    client.connect(name)
                finally:
                    os.fchdir(here)
                listener.setblocking(False)
                accepted, _ = listener.accept()  # the connection reached this very socket
                accepted.close()
        finally:
            os.close(here)
            os.close(parent)
        ok = (dev, ino) == vfs and self.replica.key(mnt) == obj.mount
        return self.replica.key(mnt), ok, f"in mount {self.replica.key(mnt)} it is ino {ino} dev {dev}, and connect(2) there reached it"

    def _unlink_in_place(self, path: str) -> None:
        head, name = split(path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        try:
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def mmap(self, index: int, step: Step) -> None:
        obj, path = self._object(step)
        fd = self.resolve(path, os.O_RDONLY)
        try:
            fd_mnt, _, _, fd_mode = kernel.statx_ids(fd)
            mapped = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)  # the mapping keeps the file; from here on only it answers
        with mapped:  # unmapped once verified, as open's fd is closed
            view = ctypes.c_char.from_buffer(mapped)
            start = ctypes.addressof(view)
            del view
            line = next(
                (ln for ln in kernel.read_proc("self/maps").splitlines() if int(ln.split("-", 1)[0], 16) == start),
                None,
            )
            if line is None:
                raise Mismatch(f"no /proc/self/maps line starts at {start:#x}")
            fields = line.split()
            got: int | str = self.replica.key(fd_mnt)
            source = "statx of the mapped fd"
            try:
                # map_files needs CAP_SYS_ADMIN in the initial user namespace; the fd's answer stands otherwise.
                mf = kernel.proc_open(f"self/map_files/{fields[0]}", os.O_PATH)
            except OSError:
                pass
            else:
                try:
                    got, source = self.replica.key(kernel.statx_ids(mf)[0]), "map_files"
                finally:
                    os.close(mf)
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        ino = int(fields[4])
        inode_ok = (ino, os.makedev(major, minor)) == (obj.ino, obj.dev)
        self._record(
            index,
            obj,
            got,
            inode_ok,
            f"maps ino {ino} dev {major}:{minor}; mount from {source}",
            fd_mode,
        )

    def mount_source(self, index: int, step: Step) -> None:
        obj, path = self._object(step)
        dest = clean(step.to, "to")
        src = self.resolve(path, os.O_PATH | os.O_DIRECTORY)
        try:
            src_mnt, src_dev, src_ino = kernel.statx_mount_id(src)
            clone = kernel.clone_mount(src)
        finally:
            os.close(src)
        try:
            live = kernel.statx_mount_id(clone)[0]  # before attaching: once attached, it is journaled at once
            to = self.resolve(dest, os.O_PATH | os.O_DIRECTORY)
            try:
                to_mnt, _, to_ino = kernel.statx_mount_id(to)
                kernel.attach(clone, to)
                self.journal.push("created", (live, dest))
            finally:
                os.close(to)
        finally:
            os.close(clone)
        line = next((m for m in self.replica.live_table() if m.mount_id == live), None)
        source_mount = self.replica.tree.by_id[obj.mount]
        rel = inside(obj.path, source_mount.mountpoint) or ""
        want_root = sb_path(source_mount.root).rstrip("/") + ("/" + rel if rel else "") or "/"
        self.created[live] = {
            "target": obj.id,
            "to": dest,
            "root": line.root if line else None,
            "parent": self.replica.key(to_mnt),
        }
        got = self.replica.key(src_mnt)
        # `to` may be its place inside a parked mount (the new mount then goes back with it):
        # the mount and the directory are what must be the dump's. An earlier target's bind on
        # the same `to` is looked through: the new mount lies on its root, at the same place.
        on = self._below_binds(to_mnt)
        inode_ok = (
            (src_ino, src_dev) == (obj.ino, obj.dev)
            and line is not None
            and line.root == want_root
            and line.parent_id == to_mnt
            and self.replica.key(on) == obj.to_mount
            and (on != to_mnt or to_ino == obj.to_ino)
        )
        detail = f"new mount root {line.root if line else None} (want {want_root}) on mount {self.replica.key(on)}"
        self._record(index, obj, got, inode_ok, detail)

    def _below_binds(self, live: int, table: list[Mount] | None = None) -> int:
        """`live`, or, when it is a bind mount a mount-source made, the mount under it (repeatedly)."""
        if live not in self.created:
            return live
        lines = {m.mount_id: m for m in (table if table is not None else self.replica.live_table())}
        while live in self.created and live in lines:
            live = lines[live].parent_id
        return live

    def verify_created(self, table: list[Mount]) -> None:
        """After the last step, each new bind mount must hang where the dump has `to`: made in a
        parked mount's place, it must have come back with it."""
        lines = {m.mount_id: m for m in table}
        for live, made in self.created.items():
            obj = self.replica.objects[str(made["target"])]
            line = lines.get(live)
            parent = self.replica.key(self._below_binds(line.parent_id, table)) if line is not None else None
            made.update(to=line.mountpoint if line is not None else None, parent=parent)
            if line is not None and (parent, line.mountpoint) == (obj.to_mount, obj.to):
                continue
            result = self.results.get(obj.id)
            if result is not None:
                where = f"on mount {parent} at {line.mountpoint}" if line is not None else "gone"
                result.ok = False
                result.detail = f"{result.detail}; after the plan the new mount is {where}, the dump has it on mount {obj.to_mount} at {obj.to}"
