"""Paths in the replica as the executor resolves them: from the replica's root, never following a
symlink or climbing ('.', '..' refused), naming the topmost mount there; and the directories the
executor makes and removes (mkdir -p of a yard removes only what it made)."""

from __future__ import annotations

import os

from planner import kernel
from planner.paths import is_clean
from planner.replica import Replica

RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS


class Mismatch(Exception):
    """A step ran but the kernel's answer is not what the plan promised."""


# Paths already found clean: a plan names each move's home and slot twice (out and back).
_clean_paths: set[str] = set()


def clean(path: object, what: str) -> str:
    """The same rule as check's: absolute, and no '.', '..' or empty components (paths must not climb)."""
    if type(path) is str and path in _clean_paths:
        return path
    if not isinstance(path, str) or not is_clean(path):
        raise Mismatch(f"{what} {path!r} must be absolute with no '.', '..' or empty components (paths must not climb)")
    if len(_clean_paths) < 100_000:
        _clean_paths.add(path)
    return path


def split(path: str) -> tuple[str, str]:
    head, _, name = path.rstrip("/").rpartition("/")
    return head or "/", name


class Resolver:
    """Resolves plan paths in a built replica, from this process's root (the replica's, after its chroot)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


    def resolve(self, path: str, flags: int = os.O_PATH) -> int:
        rel = clean(path, "path").lstrip("/") or "."
        return kernel.openat2(self.root_fd, rel, flags | os.O_NOFOLLOW, RESOLVE)

    def key_of_fd(self, fd: int) -> int | str:
        return self.replica.key(kernel.statx_mount_id(fd)[0])

    def named(self, mount: int, path: str, allow_stacked: bool) -> int:
        """An fd on mount `mount`'s root, which `path` must name.

        allow_stacked: the mount may sit under a stack of mounts on the same
        mountpoint (the path then reaches the top of the stack); the executor uses
        its own handle on it. Only for steps that do not move the mount.
        """
        fd = self.resolve(path)
        got = self.key_of_fd(fd)
        if got == mount:
            return fd
        os.close(fd)
        if allow_stacked and mount in self.replica.handles and self._in_live_stack_below(mount, got):
            return os.dup(self.replica.handles[mount])
        raise Mismatch(f"{path} names mount {got}, the step says {mount}")

    def _in_live_stack_below(self, lower: int, top: int | str) -> bool:
        table = {m.mount_id: m for m in self.replica.live_table()}
        live_lower = self.replica.dump_to_live.get(lower)
        cur = table.get(self.replica.dump_to_live[top]) if isinstance(top, int) else None
        while cur is not None and cur.mount_id != live_lower:
            parent = table.get(cur.parent_id)
            if parent is None or parent.mountpoint != cur.mountpoint:
                return False
            cur = parent
        return cur is not None

    def mount_id_at(self, path: str) -> int:
        """The live id of the mount `path` leads into, resolved without following symlinks."""
        fd = self.resolve(path)
        try:
            return kernel.statx_ids(fd)[0]
        finally:
            os.close(fd)

    def make_dir(self, path: str, directory: bool = True) -> bool:
        """mkdir (or create an empty file) where `path` resolves; False when it already existed."""
        head, name = split(path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        try:
            if directory:
                os.mkdir(name, 0o700, dir_fd=parent)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=parent))
            return True
        except FileExistsError:
            return False
        finally:
            os.close(parent)

    def make_dirs(self, path: str) -> list[str]:
        """mkdir -p `path`: the directories made, outermost first (the yard takes them away again)."""
        missing = []
        current = path
        while current != "/":
            try:
                os.close(self.resolve(current, os.O_PATH | os.O_DIRECTORY))
                break
            except FileNotFoundError:
                missing.append(current)
                current = split(current)[0]
        made: list[str] = []
        try:
            for directory in reversed(missing):
                # Only what mkdir made is ours to remove: a directory that is there after all
                # (EEXIST: the lookup's ENOENT raced, or was injected) may be a mount point or the dump's.
                if self.make_dir(directory):
                    made.append(directory)
        except BaseException:
            for directory in reversed(made):
                self.remove_quietly(directory)
            raise
        return made

    def remove_dir(self, path: str, directory: bool = True) -> None:
        head, name = split(path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        try:
            if directory:
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def remove_quietly(self, path: str) -> None:
        try:
            self.remove_dir(path)
        except OSError:
            pass

    def where_is(self, live_id: int) -> str | None:
        for m in self.replica.live_table():
            if m.mount_id == live_id:
                return m.mountpoint
        return None
