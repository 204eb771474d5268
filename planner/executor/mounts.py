"""The replica's mounts as steps change them: yards and their slots, moves by fd, keepers holding a
peer group, and the yard's last check. The step handlers (operations.py, targets.py) and the
rollback (rollback.py) are built on these."""

from __future__ import annotations

import errno as errno_mod
import os

from planner import kernel
from planner.executor.journal import Journal, Yard
from planner.executor.paths import RESOLVE, Mismatch, Resolver
from planner.mountinfo import Mount
from planner.paths import from_root, inside
from planner.replica import Replica

MOVE = kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_T_EMPTY_PATH
O_PATH = os.O_PATH | os.O_NOFOLLOW


class Mounts(Resolver):
    """What the executor has made and moved in the replica, and the primitives that make and move it."""

    def __init__(self, replica: Replica) -> None:
        super().__init__(replica)
        self.journal = Journal()
        # parent dump id -> (keeper live id, its path, fd): fd is the detached keeper's own while it
        # waits for its yard (the yard's own mount is bracketed before the yard exists), else -1.
        self.keepers: dict[int, tuple[int, str, int]] = {}
        self.waiting: dict[str, list[int]] = {}  # yard path -> mounts whose keepers wait for it
        self.yards: dict[str, Yard] = {}  # the yards this executor attached and has not removed, by path
        self.created: dict[int, dict[str, object]] = {}  # live id -> mount made by a mount-source step
        self.yard_paths: list[str] = []
        self.planned_slots: dict[str, list[str]] = {}  # yard path -> slot names the plan moves mounts into


    @staticmethod
    def _close_yard(yard: Yard) -> None:
        if yard.fd >= 0:
            fd, yard.fd = yard.fd, -1
            os.close(fd)

    def _slot(self, dest: str) -> tuple[Yard | None, str]:
        """The yard `dest` is a slot of (and the slot's name), or None when it is no such slot."""
        head, _, name = dest.rpartition("/")
        yard = self.yards.get(head)
        if yard is None or yard.fd < 0 or name == "":
            return None, name
        return yard, name

    @staticmethod
    def _make_slot(yard: Yard, name: str, is_dir: bool) -> None:
        """A slot of the right kind: a file mount (a file-on-file bind) can only sit on a file."""
        have = yard.slots.get(name)
        if have is not None:
            if have:
                os.rmdir(name, dir_fd=yard.fd)
            else:
                os.unlink(name, dir_fd=yard.fd)
            del yard.slots[name]
        if is_dir:
            os.mkdir(name, 0o700, dir_fd=yard.fd)
        else:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=yard.fd))
        yard.slots[name] = is_dir

    def _move(self, fd: int, dest: str) -> None:
        to = self.resolve(dest, os.O_PATH)
        try:
            self._move_fd(fd, to, "", MOVE)
        finally:
            os.close(to)

    def _move_fd(self, fd: int, to_fd: int, to_path: str, flags: int) -> None:
        try:
            kernel.move_mount(fd, "", to_fd, to_path, flags)
        except OSError as exc:
            if exc.errno == errno_mod.EINVAL:
                raise OSError(exc.errno, f"{exc.strerror}{self._why_einval(fd)}") from exc
            raise

    def _why_einval(self, fd: int) -> str:
        """The do_move_mount (fs/namespace.c) reasons for EINVAL we can see from here."""
        table = {m.mount_id: m for m in self.replica.live_table()}
        mnt = table.get(kernel.statx_mount_id(fd)[0])
        if mnt is None:
            return ""
        parent = table.get(mnt.parent_id)
        if parent is not None and parent.shared is not None:
            return (
                f" (mount {self.replica.key(mnt.mount_id)}'s parent {self.replica.key(parent.mount_id)} is shared: "
                "moving a mount residing under a shared mount is unsupported; keep its group with a keeper and "
                "make it private first)"
            )
        return ""

    def _mismatch(self, path: str, live: int, mount: object) -> Mismatch:
        return Mismatch(f"{path} names mount {self.replica.key(live)}, the step says {mount}")

    def _open_mount(self, path: str, mount: int) -> tuple[int, int, int]:
        """(fd, live id, mode) of the mount whose root `path` names, which must be `mount`.

        The fd is both what is checked and what then moves: nothing can come in between.
        """
        fd = kernel.openat2(self.root_fd, from_root(path), O_PATH, RESOLVE)
        try:
            live, _, _, mode = kernel.statx_ids(fd)
            if live != self.replica.dump_to_live.get(mount):
                raise self._mismatch(path, live, mount)
        except BaseException:
            os.close(fd)
            raise
        return fd, live, mode

    def _attach(self, detached: int, dest: str) -> None:
        to = self.resolve(dest, os.O_PATH)
        try:
            kernel.attach(detached, to)
        finally:
            os.close(to)

    def _rejoin(self, mount: int, parent_fd: int) -> None:
        keeper = self.keepers.get(mount)
        if keeper is None:
            raise Mismatch(f"no keeper holds mount {mount}'s peer group")
        live, path, waiting = keeper
        if waiting >= 0:  # still detached, waiting for its yard (a rollback before the yard was made)
            kernel.move_mount(waiting, "", parent_fd, "", MOVE | kernel.MOVE_MOUNT_SET_GROUP)
            return
        fd = self.resolve(path)
        try:
            if kernel.statx_ids(fd)[0] != live:
                raise Mismatch(f"{path} is no longer the keeper of mount {mount}")
            kernel.move_mount(fd, "", parent_fd, "", MOVE | kernel.MOVE_MOUNT_SET_GROUP)
        finally:
            os.close(fd)

    def _unmount(self, path: str, live: int, what: str) -> None:
        """Unmount what `path` names, only if the kernel says it is mount `live` (`what`, for the error)."""
        got = self.mount_id_at(path)
        if got != live:
            raise Mismatch(f"{path} is mount {self.replica.key(got)}, not {what}")
        kernel.umount2(path, kernel.UMOUNT_NOFOLLOW)

    def _remove_keeper(self, mount: int) -> None:
        live, path, waiting = self.keepers[mount]
        if waiting >= 0:  # never attached: closing its fd is all it takes
            os.close(waiting)
            del self.keepers[mount]
            for mounts in self.waiting.values():
                if mount in mounts:
                    mounts.remove(mount)
            return
        self._unmount(path, live, f"the keeper of mount {mount}")
        del self.keepers[mount]
        try:
            self.remove_dir(path)
        except OSError:
            pass

    # --- the end -------------------------------------------------------------------------

    def yard_empty(self, table: list[Mount]) -> bool:
        for path in self.yard_paths:
            if any(inside(m.mountpoint, path) is not None for m in table):
                return False
            try:
                fd = self.resolve(path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):  # never made, or no directory could be
                continue
            try:
                if os.listdir(fd):
                    return False
            finally:
                os.close(fd)
        return True
