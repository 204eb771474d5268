"""Run a plan for real against a replica of the dump, verify every target, roll back on failure.

Everything happens in a forked child with its own mount namespace
(kernel.run_in_namespace): the caller's mounts are never touched.

Paths in steps are resolved from the replica's root with openat2
RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; '.' and '..'
components are refused. A path names the topmost mount there, and each step
that names a mount checks that the kernel agrees (live mount id mapped back to
the dump's). Targets are checked with the kernel's own answers: statx
STATX_MNT_ID (the same id fdinfo's mnt_id gives), sock_diag, /proc/self/maps
and map_files, mountinfo.

The hot steps are kept to the syscalls their checks need (see `Executor.prepare`):
- move-aside: openat2 `from` (O_PATH), statx on that fd (mount id: the step's
  mount? and file or directory), move_mount by that fd into the slot, named
  relative to the yard's own mount fd, statx of the slot (is the mount there now);
- move-back: openat2 `from`, statx on it, openat2 `to`, move_mount fd to fd,
  close both, statx of `to` (is the mount there now);
- open: openat2 the path, statx on the new fd (mount id, device and inode).
Slot directories are made once, at yard-create, in the yard's tmpfs before it is
attached, and go away with it at yard-remove; mountinfo is read only at the start
and the end (and to explain a failure).

Report (a plain dict, see `execute`):
  ok, steps_run, failed_step {index, op, errno, errno_name, reason, step} | None,
  rolled_back, unrestored [{mount, should_be_at, now_at, errno, reason}],
  targets [{id, kind, expected_mount, got_mount, inode_ok, ok, step, detail,
            file_type (what the kernel says was reached, where the op checks it), type_ok,
            stand_in (why the replica made a stand-in for the dump's object, or None)}],
  tree_identical, tree_diff [str], yard_empty, created_mounts [{target, to, root, parent}]
  (where each new bind mount is after the plan: it must be where the dump has `to`).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import functools
import mmap
import os
import socket
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from planner import kernel
from planner.mountinfo import Mount
from planner.paths import from_root, is_clean
from planner.progress import Progress, every, on_stderr, quiet
from planner.render import kinds_summary, plural, printable
from planner.replica import (
    Key,
    Replica,
    TargetObject,
    TreeShape,
    build_replica,
    sb_path,
    under,
)
from planner.targets import Target, file_type_of

_RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS
_MOVE = kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_T_EMPTY_PATH
_O_PATH = os.O_PATH | os.O_NOFOLLOW
_SLOT_OPS = ("move-aside", "keeper-bind")  # the steps that put a mount into a yard slot
_DEVICES = (stat.S_IFCHR, stat.S_IFBLK)
_NOT_OPENED = (*_DEVICES, stat.S_IFSOCK)  # open(2) would run a driver, or cannot open it at all
_SUN_PATH_MAX = 107  # sizeof(sun_path) - 1 for the NUL


class Mismatch(Exception):
    """A step ran but the kernel's answer is not what the plan promised."""


@dataclass(slots=True)
class _Aside:
    mount: int
    origin: str
    slot: str  # names the mount while it is out (no fd is kept: fds stay bounded however many are out)
    made: bool = False  # a slot made for this move outside any yard: removed when the mount comes back


@dataclass(slots=True)
class _Yard:
    path: str
    fd: int  # the yard tmpfs's own mount fd (slots are named from it); -1 once closed
    made: list[str]  # directories the executor made for it (mkdir -p), outermost first; they go with it
    slots: dict[str, bool]  # slot name -> is a directory (not a file)
    live: int = -1  # its live mount id


@dataclass
class _Journal:
    """What has been done that the tree must not keep, newest last."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def push(self, kind: str, item: Any) -> None:
        self.entries.append((kind, item))

    def pop(self, kind: str, match: Callable[[Any], bool]) -> Any | None:
        for i in range(len(self.entries) - 1, -1, -1):
            k, item = self.entries[i]
            if k == kind and match(item):
                del self.entries[i]
                return item
        return None

    def insert_before(self, kind: str, match: Callable[[Any], bool], entry: tuple[str, Any]) -> None:
        """Put `entry` just before the oldest entry of `kind` that matches (at the end if none)."""
        for i, (k, item) in enumerate(self.entries):
            if k == kind and match(item):
                self.entries.insert(i, entry)
                return
        self.entries.append(entry)

    def pop_aside(self, mount: object) -> _Aside | None:
        """The move-aside of `mount`: in a plan's bracket order, the newest entry."""
        entries = self.entries
        if entries:
            kind, item = entries[-1]
            if kind == "aside" and item.mount == mount:
                entries.pop()
                return item  # type: ignore[no-any-return]
        found: _Aside | None = self.pop("aside", lambda a: a.mount == mount)
        return found


# Paths already found clean: a plan names each move's home and slot twice (out and back).
_clean_paths: set[str] = set()


def _clean(path: object, what: str) -> str:
    """The same rule as check's: absolute, and no '.', '..' or empty components (paths must not climb)."""
    if type(path) is str and path in _clean_paths:
        return path
    if not isinstance(path, str) or not is_clean(path):
        raise Mismatch(f"{what} {path!r} must be absolute with no '.', '..' or empty components (paths must not climb)")
    if len(_clean_paths) < 100_000:
        _clean_paths.add(path)
    return path


def _mount_from_to(step: Mapping[str, Any]) -> tuple[int, str, str]:
    return step["mount"], _clean(step["from"], "from"), _clean(step["to"], "to")


def _split(path: str) -> tuple[str, str]:
    head, _, name = path.rstrip("/").rpartition("/")
    return head or "/", name


class Executor:
    """Runs steps against a built replica, in this process (already inside the namespace)."""

    def __init__(self, replica: Replica, targets: Iterable[Target]) -> None:
        self.replica = replica
        self.targets = {t.id: t for t in targets}
        self.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.journal = _Journal()
        self.results: dict[str, dict[str, object]] = {}
        # parent dump id -> (keeper live id, its path, fd): fd is the detached keeper's own while it
        # waits for its yard (the yard's own mount is bracketed before the yard exists), else -1.
        self.keepers: dict[int, tuple[int, str, int]] = {}
        self.waiting: dict[str, list[int]] = {}  # yard path -> mounts whose keepers wait for it
        self.yards: dict[str, _Yard] = {}  # the yards this executor attached and has not removed, by path
        self.created: dict[int, dict[str, object]] = {}  # live id -> mount made by a mount-source step
        self.yard_paths: list[str] = []
        self.planned_slots: dict[str, list[str]] = {}  # yard path -> slot names the plan moves mounts into
        self.ops: dict[str, Callable[[int, Mapping[str, Any]], None]] = {
            op: getattr(self, method) for op, method in _OPS.items()
        }

    def prepare(self, steps: Iterable[Mapping[str, Any]]) -> None:
        """Read the plan ahead: its yards, and the slot each will need, made once at yard-create.

        Optional: without it a slot is made when a mount first moves into it.
        """
        steps = list(steps)
        self.yard_paths = [s["path"] for s in steps if s.get("op") == "yard-create" and isinstance(s.get("path"), str)]
        slots: dict[str, dict[str, None]] = {path: {} for path in self.yard_paths}
        for s in steps:
            to = s.get("to")
            if s.get("op") in _SLOT_OPS and isinstance(to, str):
                head, _, name = to.rpartition("/")
                if head in slots and name not in ("", ".", ".."):
                    slots[head][name] = None
        self.planned_slots = {path: list(names) for path, names in slots.items()}

    # --- resolution -------------------------------------------------------------------

    def resolve(self, path: str, flags: int = os.O_PATH) -> int:
        rel = _clean(path, "path").lstrip("/") or "."
        return kernel.openat2(self.root_fd, rel, flags | os.O_NOFOLLOW, _RESOLVE)

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
        if allow_stacked and mount in self.replica.handles and self._stacked_under(mount, got):
            return os.dup(self.replica.handles[mount])
        raise Mismatch(f"{path} names mount {got}, the step says {mount}")

    def _stacked_under(self, lower: int, top: int | str) -> bool:
        table = {m.mount_id: m for m in self.replica.live_table()}
        live_lower = self.replica.dump_to_live.get(lower)
        cur = table.get(self.replica.dump_to_live[top]) if isinstance(top, int) else None
        while cur is not None and cur.mount_id != live_lower:
            parent = table.get(cur.parent_id)
            if parent is None or parent.mountpoint != cur.mountpoint:
                return False
            cur = parent
        return cur is not None

    def make_dir(self, path: str, directory: bool = True) -> bool:
        """mkdir (or create an empty file) where `path` resolves; False when it already existed."""
        head, name = _split(path)
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
                current = _split(current)[0]
        made: list[str] = []
        try:
            for directory in reversed(missing):
                # Only what mkdir made is ours to remove: a directory that is there after all
                # (EEXIST: the lookup's ENOENT raced, or was injected) may be a mount point or the dump's.
                if self.make_dir(directory):
                    made.append(directory)
        except BaseException:
            for directory in reversed(made):
                self._remove_quietly(directory)
            raise
        return made

    def remove_dir(self, path: str, directory: bool = True) -> None:
        head, name = _split(path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        try:
            if directory:
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def where_is(self, live_id: int) -> str | None:
        for m in self.replica.live_table():
            if m.mount_id == live_id:
                return m.mountpoint
        return None

    # --- steps ------------------------------------------------------------------------

    def run_step(self, index: int, step: Mapping[str, Any]) -> None:
        op = step.get("op")
        action = self.ops.get(op) if isinstance(op, str) else None
        if action is None:
            raise Mismatch(f"unknown op {op!r}")
        action(index, step)

    def op_yard_create(self, index: int, step: Mapping[str, Any]) -> None:
        path = _clean(step["path"], "yard")
        if path in self.yards:
            raise Mismatch(f"yard {path} is already there")
        waiting = self.waiting.get(path, [])
        made = self.make_dirs(path)
        if waiting and path not in made:
            # The yard's mount rejoins its group before the yard goes (its keeper lives in the yard), so
            # the yard's unmount propagates to the peers' and slaves' mounts at this place: none is
            # there only if the directory is made now.
            raise Mismatch(f"yard {path} exists already, in a shared mount: removing the yard would unmount what "
                           "its peers and slaves have mounted there; choose a yard path that does not exist")
        try:
            fd = kernel.new_tmpfs({"mode": "0700"})
            try:
                # Every slot the plan names, made while the yard is still detached: no mkdir per move.
                slots = {}
                for name in self.planned_slots.get(path, ()):
                    os.mkdir(name, 0o700, dir_fd=fd)
                    slots[name] = True
                spot = self.resolve(path, os.O_PATH | os.O_DIRECTORY)
                try:
                    kernel.attach(fd, spot)
                finally:
                    os.close(spot)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            for directory in reversed(made):
                self._remove_quietly(directory)
            raise
        yard = _Yard(path, fd, made, slots)
        self.yards[path] = yard
        # Older in the journal than the keepers waiting for it: a rollback undoes their parent's
        # make-private (rejoin, from the keeper), then the keeper, then the yard.
        self.journal.insert_before("keeper", lambda mount: mount in waiting, ("yard", yard))
        # check refuses a yard under a shared mount (attaching there would already copy it to the
        # peers); private, nothing moved into the yard later propagates anywhere either.
        kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
        yard.live = kernel.statx_ids(fd)[0]
        for mount in self.waiting.pop(path, []):
            live, slot, keeper = self.keepers[mount]
            name = slot.rpartition("/")[2]
            if name not in yard.slots:
                self._make_slot(yard, name, True)
            kernel.attach(keeper, fd, name)  # into the private yard: nothing propagates
            os.close(keeper)
            self.keepers[mount] = (live, slot, -1)

    def op_yard_remove(self, index: int, step: Mapping[str, Any]) -> None:
        path = _clean(step["path"], "yard")
        yard = self.yards.get(path)
        got = self._mount_id_at(path)
        if yard is None or got != yard.live:
            raise Mismatch(f"{path} is mount {self.replica.key(got)}, not a yard this plan created")
        self._close_yard(yard)  # an open fd on the yard would make it busy
        kernel.umount2(path, kernel.UMOUNT_NOFOLLOW)  # its slots go with its tmpfs
        self.journal.pop("yard", lambda item: item is yard)
        del self.yards[path]
        for directory in reversed(yard.made):
            self.remove_dir(directory)

    @staticmethod
    def _close_yard(yard: _Yard) -> None:
        if yard.fd >= 0:
            fd, yard.fd = yard.fd, -1
            os.close(fd)

    def _remove_quietly(self, path: str) -> None:
        try:
            self.remove_dir(path)
        except OSError:
            pass

    def _slot(self, dest: str) -> tuple[_Yard | None, str]:
        """The yard `dest` is a slot of (and the slot's name), or None when it is no such slot."""
        head, _, name = dest.rpartition("/")
        yard = self.yards.get(head)
        if yard is None or yard.fd < 0 or name == "":
            return None, name
        return yard, name

    @staticmethod
    def _make_slot(yard: _Yard, name: str, is_dir: bool) -> None:
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
            self._move_fd(fd, to, "", _MOVE)
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
        fd = kernel.openat2(self.root_fd, from_root(path), _O_PATH, _RESOLVE)
        try:
            live, _, _, mode = kernel.statx_ids(fd)
            if live != self.replica.dump_to_live.get(mount):
                raise self._mismatch(path, live, mount)
        except BaseException:
            os.close(fd)
            raise
        return fd, live, mode

    def op_move_aside(self, index: int, step: Mapping[str, Any]) -> None:
        mount, src, dest = _mount_from_to(step)
        fd, live, mode = self._open_mount(src, mount)
        try:
            # A file mount (a file-on-file bind) can only sit on a file: its slot is one.
            is_dir = stat.S_ISDIR(mode)
            yard, name = self._slot(dest)
            made = False
            if yard is None:  # not a slot of a yard this executor made: by path, as any destination
                made = self.make_dir(dest, directory=is_dir)
                self._move(fd, dest)
            else:
                if yard.slots.get(name) is not is_dir:
                    self._make_slot(yard, name, is_dir)
                self._move_fd(fd, yard.fd, name, kernel.MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(fd)
        self.journal.push("aside", _Aside(mount, src, dest, made))
        # The kernel's answer, after the move: the slot shows the mount that moved.
        got = kernel.statx_ids(from_root(dest), self.root_fd)[0] if yard is None else kernel.statx_ids(name, yard.fd)[0]
        if got != live:
            raise Mismatch(f"after the move {dest} names mount {self.replica.key(got)}, not {mount}")

    def op_move_back(self, index: int, step: Mapping[str, Any]) -> None:
        mount, src, dest = _mount_from_to(step)
        rel = from_root(dest)
        fd, live, mode = self._open_mount(src, mount)
        try:
            to = kernel.openat2(self.root_fd, rel, _O_PATH, _RESOLVE)
            try:
                self._move_fd(fd, to, "", _MOVE)
            finally:
                os.close(to)
        finally:
            os.close(fd)
        aside = self.journal.pop_aside(mount)
        if aside is not None and aside.made and aside.slot == src:
            try:
                self.remove_dir(src, directory=stat.S_ISDIR(mode))
            except OSError:
                pass  # a slot left behind shows up as a yard that is not empty
        # The kernel's answer, after the move: `to` shows the mount that moved. (`to` was just
        # resolved by openat2 without symlinks; only what is mounted at its end has changed.)
        got = kernel.statx_ids(rel, self.root_fd)[0]
        if got != live:
            raise Mismatch(f"after the move {dest} names mount {self.replica.key(got)}, not {mount}")

    def op_keeper_bind(self, index: int, step: Mapping[str, Any]) -> None:
        mount, src, dest = _mount_from_to(step)
        parent = self.named(mount, src, allow_stacked=True)
        try:
            keeper = kernel.clone_mount(parent)  # joins the parent's peer group
        finally:
            os.close(parent)
        yard, _, name = dest.rpartition("/")
        try:
            live = kernel.statx_mount_id(keeper)[0]  # before attaching: once attached, it is journaled at once
            if yard in self.yard_paths and yard not in self.yards and name:
                # Its yard is not made yet (the yard's own mount is being bracketed): the keeper
                # waits, detached and held by its fd, and joins the yard as it is made.
                self.keepers[mount] = (live, dest, keeper)
                self.waiting.setdefault(yard, []).append(mount)
                self.journal.push("keeper", mount)
                return
            self.make_dir(dest)
            self._attach(keeper, dest)
        except BaseException:
            os.close(keeper)
            raise
        os.close(keeper)  # attached, the keeper is named by its path; an open fd would make it busy
        self.keepers[mount] = (live, dest, -1)
        self.journal.push("keeper", mount)

    def _attach(self, detached: int, dest: str) -> None:
        to = self.resolve(dest, os.O_PATH)
        try:
            kernel.attach(detached, to)
        finally:
            os.close(to)

    def op_make_private(self, index: int, step: Mapping[str, Any]) -> None:
        mount, path = step["mount"], _clean(step["path"], "path")
        fd = self.named(mount, path, allow_stacked=True)
        try:
            kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
        finally:
            os.close(fd)
        self.journal.push("private", (mount, path))

    def _rejoin(self, mount: int, parent_fd: int) -> None:
        keeper = self.keepers.get(mount)
        if keeper is None:
            raise Mismatch(f"no keeper holds mount {mount}'s peer group")
        live, path, waiting = keeper
        if waiting >= 0:  # still detached, waiting for its yard (a rollback before the yard was made)
            kernel.move_mount(waiting, "", parent_fd, "", _MOVE | kernel.MOVE_MOUNT_SET_GROUP)
            return
        fd = self.resolve(path)
        try:
            if kernel.statx_ids(fd)[0] != live:
                raise Mismatch(f"{path} is no longer the keeper of mount {mount}")
            kernel.move_mount(fd, "", parent_fd, "", _MOVE | kernel.MOVE_MOUNT_SET_GROUP)
        finally:
            os.close(fd)

    def op_rejoin_group(self, index: int, step: Mapping[str, Any]) -> None:
        mount, src, dest = _mount_from_to(step)
        keeper = self.keepers.get(mount)
        got = self._mount_id_at(src)
        if keeper is None or got != keeper[0]:
            raise Mismatch(f"{src} is mount {self.replica.key(got)}, not the keeper of mount {mount}")
        parent = self.named(mount, dest, allow_stacked=True)
        try:
            self._rejoin(mount, parent)
        finally:
            os.close(parent)
        self.journal.pop("private", lambda item: item[0] == mount)

    def _mount_id_at(self, path: str) -> int:
        """The live id of the mount `path` leads into, resolved without following symlinks."""
        fd = self.resolve(path)
        try:
            return kernel.statx_ids(fd)[0]
        finally:
            os.close(fd)

    def _unmount(self, path: str, live: int, what: str) -> None:
        """Unmount what `path` names, only if the kernel says it is mount `live` (`what`, for the error)."""
        got = self._mount_id_at(path)
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

    def op_keeper_remove(self, index: int, step: Mapping[str, Any]) -> None:
        mount, path = step["mount"], _clean(step["path"], "path")
        keeper = self.keepers.get(mount)
        if keeper is None or keeper[1] != path:
            raise Mismatch(f"no keeper of mount {mount} at {path}")
        self._remove_keeper(mount)
        self.journal.pop("keeper", lambda m: m == mount)

    # --- targets -----------------------------------------------------------------------

    def _object(self, step: Mapping[str, Any]) -> tuple[TargetObject, str]:
        """The step's target and the path it reaches it by.

        The path may differ from the dump's (through the yard, where the target's mount rides
        in a parked one): what is checked is the mount and inode the kernel reaches. Not for
        bind, whose path is the socket's name.
        """
        obj = self.replica.objects.get(step.get("target", ""))
        if obj is None:
            raise Mismatch(f"step names target {step.get('target')!r}, which the dump does not have")
        if step["op"] != obj.kind:
            raise Mismatch(f"target {obj.id} is a {obj.kind}, the step does {step['op']}")
        path = step["path"]
        if path == obj.path:  # obj.path was checked clean when the replica was built
            return obj, path
        _clean(path, "path")
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
        self.results[obj.id] = {
            "id": obj.id,
            "kind": obj.kind,
            "expected_mount": obj.mount,
            "got_mount": got,
            "inode_ok": inode_ok,
            "ok": ok,
            "step": index,
            "detail": detail,
            "file_type": got_type,
            "type_ok": type_problem is None,
            "stand_in": obj.stand_in,
        }
        if via is not None:  # a bind through a visible alias mount (planner.aliases)
            self.results[obj.id]["via"] = via
        if not ok:
            if got != obj.mount:
                raise Mismatch(f"target {obj.id} reached mount {got} (expected {obj.mount})")
            if not inode_ok:
                raise Mismatch(f"target {obj.id}: inode or device differ ({detail})")
            raise Mismatch(f"target {obj.id}: {type_problem}")

    def op_open(self, index: int, step: Mapping[str, Any]) -> None:
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
            fake = kernel.openat2(self.root_fd, rel, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW, _RESOLVE)
            flags |= os.O_NONBLOCK
        try:
            fd = kernel.openat2(self.root_fd, rel, flags | os.O_NOFOLLOW, _RESOLVE)
        finally:
            if fake >= 0:
                os.close(fake)
        try:
            live, dev, ino, mode = kernel.statx_ids(fd)  # the open file's mount, device, inode and type: one call
            problem = None
            held = fcntl.fcntl(fd, fcntl.F_GETFL)
            if flags & os.O_PATH == 0 and held & os.O_ACCMODE != flags & os.O_ACCMODE:
                problem = f"opened {_access_name(held)}, the dump held it {obj.access}"
            if made in _DEVICES and (rdev := os.fstat(fd).st_rdev) != obj.rdev:
                problem = f"device {_dev_text(rdev)}, the replica made {_dev_text(obj.rdev)}"
        finally:
            # Verified, it is closed: a restored process holds its own, and the executor keeps no
            # fd per target (a plan with thousands of targets runs under `ulimit -n 1024`).
            os.close(fd)
        detail = f"ino {ino}, {_type_name(mode)}, {_access_name(held)}" if obj.access else f"ino {ino}, {_type_name(mode)}"
        self._record(index, obj, self.replica.key(live), ino == obj.ino and dev == obj.dev, detail, mode, problem)

    def op_chdir(self, index: int, step: Mapping[str, Any]) -> None:
        obj, path = self._object(step)
        fd = self.resolve(path, os.O_PATH | os.O_DIRECTORY)
        try:
            os.fchdir(fd)
        finally:
            os.close(fd)
        mnt, dev, ino, mode = kernel.statx_ids(".")
        self._record(index, obj, self.replica.key(mnt), (ino, dev) == (obj.ino, obj.dev), f"cwd ino {ino}", mode)

    def op_root(self, index: int, step: Mapping[str, Any]) -> None:
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

    def op_bind(self, index: int, step: Mapping[str, Any]) -> None:
        obj, _ = self._object(step)
        head, name = _split(obj.path)
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
            via = step.get("via")
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
        head, name = _split(under(obj.path, home.mountpoint) or "")
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
        head, name = _split(path)
        parent = self.resolve(head, os.O_PATH | os.O_DIRECTORY)
        try:
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def op_mmap(self, index: int, step: Mapping[str, Any]) -> None:
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

    def op_mount_source(self, index: int, step: Mapping[str, Any]) -> None:
        obj, path = self._object(step)
        dest = _clean(step["to"], "to")
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
        rel = under(obj.path, source_mount.mountpoint) or ""
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
                result["ok"] = False
                result["detail"] = f"{result['detail']}; after the plan the new mount is {where}, the dump has it on mount {obj.to_mount} at {obj.to}"

    # --- rollback -----------------------------------------------------------------------

    def rollback(self) -> list[dict[str, object]]:
        """Undo, newest first, everything the tree must not keep; what cannot be undone is listed."""
        unrestored: list[dict[str, object]] = []
        while self.journal.entries:
            kind, item = self.journal.entries.pop()
            try:
                self._undo(kind, item)
            except (OSError, Mismatch) as exc:
                unrestored.append(self._unrestored(kind, item, exc))
        return unrestored

    def _undo(self, kind: str, item: Any) -> None:
        if kind == "aside":
            fd, _, _ = self._open_mount(item.slot, item.mount)
            try:
                self._move(fd, item.origin)
            finally:
                os.close(fd)
        elif kind == "private":
            mount, path = item
            fd = self.named(mount, path, allow_stacked=True)
            try:
                self._rejoin(mount, fd)
            finally:
                os.close(fd)
        elif kind == "keeper":
            self._remove_keeper(item)
        elif kind == "yard":
            self._close_yard(item)
            self._unmount_yard(item)
            self.yards.pop(item.path, None)
            for directory in reversed(item.made):
                self.remove_dir(directory)
        elif kind == "created":
            live, dest = item
            # Made in a parked mount, it may have travelled since: unmount it where it is now.
            self._unmount(self.where_is(live) or dest, live, "the one the plan made")

    def _unmount_yard(self, yard: _Yard) -> None:
        try:
            kernel.umount2(yard.path, kernel.UMOUNT_NOFOLLOW)
        except OSError as exc:
            # Busy: someone holds an fd or a cwd in it. Once empty, a private yard can go lazily:
            # nothing propagates from it, and the holder keeps a detached tmpfs no path reaches.
            if exc.errno != errno_mod.EBUSY or yard.live < 0 or self._mount_id_at(yard.path) != yard.live:
                raise
            if any(m.parent_id == yard.live for m in self.replica.live_table()):
                raise OSError(exc.errno, f"{exc.strerror} (the yard still holds mounts)") from exc
            kernel.umount2(yard.path, kernel.UMOUNT_NOFOLLOW | kernel.MNT_DETACH)

    def _unrestored(self, kind: str, item: Any, exc: BaseException) -> dict[str, object]:
        err = exc.errno if isinstance(exc, OSError) else None
        out: dict[str, object] = {"what": kind, "errno": err, "reason": str(exc)}
        if kind == "aside":
            live = self.replica.dump_to_live.get(item.mount)
            out.update(
                mount=item.mount,
                should_be_at=item.origin,
                now_at=self.where_is(live) if live else None,
            )
        elif kind in ("private", "keeper"):
            mount = item[0] if kind == "private" else item
            out.update(mount=mount, reason=f"propagation of mount {mount} not restored: {exc}")
        elif kind == "yard":
            out.update(path=item.path)
        elif kind == "created":
            out.update(mount=f"live:{item[0]}", now_at=item[1])
        return out

    # --- the end -------------------------------------------------------------------------

    def yard_empty(self, table: list[Mount]) -> bool:
        for path in self.yard_paths:
            if any(under(m.mountpoint, path) is not None for m in table):
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


_OPS = {name[3:].replace("_", "-"): name for name in vars(Executor) if name.startswith("op_")}

_ACCESS_FLAGS = {"read-only": os.O_RDONLY, "write-only": os.O_WRONLY, "read-write": os.O_RDWR, "path": os.O_PATH}
@functools.cache  # a few distinct modes, asked once per target
def _type_name(mode: int) -> str:
    return file_type_of(mode) or ("symlink" if stat.S_ISLNK(mode) else f"type {stat.S_IFMT(mode):o}")


def _access_name(flags: int) -> str:
    if flags & os.O_PATH:
        return "path"
    return {os.O_RDONLY: "read-only", os.O_WRONLY: "write-only", os.O_RDWR: "read-write"}.get(flags & os.O_ACCMODE, "?")


def _dev_text(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def _errno_name(err: int | None) -> str | None:
    return errno_mod.errorcode.get(err) if err is not None else None


def _as_dict(step: object) -> dict[str, Any]:
    if isinstance(step, Mapping):
        return dict(step)
    as_json = getattr(step, "as_json", None)
    if as_json is None:
        raise TypeError(f"a step must be a dict or have as_json(): {step!r}")
    return dict(as_json())


def run_plan(
    replica: Replica, targets: Iterable[Target], steps: list[dict[str, Any]], progress: Progress = quiet
) -> tuple[dict[str, Any], Executor]:
    """Run steps against a replica built in this namespace; the report, and the executor for probing."""
    targets = list(targets)
    ex = Executor(replica, targets)
    ex.prepare(steps)
    before: TreeShape = replica.snapshot()
    failed: dict[str, Any] | None = None
    unrestored: list[dict[str, object]] = []
    steps_run = 0
    every_so_often = every(len(steps))
    for index, step in enumerate(steps):
        if index % every_so_often == 0:
            progress("running the plan", index, len(steps))
        try:
            ex.run_step(index, step)
        except Exception as exc:  # noqa: BLE001 - any failure of a step is reported and rolled back
            err = exc.errno if isinstance(exc, OSError) else None
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            failed = {
                "index": index,
                "op": step.get("op"),
                "errno": err,
                "errno_name": _errno_name(err),
                "reason": reason,
                "step": step,
            }
            break
        steps_run += 1
    progress("running the plan", len(steps), len(steps))
    rolled_back = False
    if failed is not None:
        unrestored = ex.rollback()
        rolled_back = True
    table = replica.live_table()
    if failed is None:
        ex.verify_created(table)
    after = replica.snapshot(table)
    # The binds mount-source steps made belong in the tree only when the run succeeded: after a
    # rollback every mount the dump does not have counts as a difference.
    made = [f"live:{live}" for live in ex.created] if failed is None else []
    diff = before.diff(after.without(made))
    yard_empty = ex.yard_empty(table)
    results = []
    for t in targets:
        res = ex.results.get(t.id)
        if res is None:
            res = {
                "id": t.id,
                "kind": t.kind,
                "expected_mount": t.mount,
                "got_mount": None,
                "inode_ok": False,
                "ok": False,
                "step": None,
                "detail": "no step reached it",
                "file_type": None,
                "type_ok": False,
                "stand_in": None,
            }
        results.append(res)
    report = {
        "ok": failed is None and not diff and yard_empty and all(r["ok"] for r in results),
        "targets": results,
        "steps_run": steps_run,
        "failed_step": failed,
        "rolled_back": rolled_back,
        "tree_identical": not diff,
        "tree_diff": diff,
        "yard_empty": yard_empty,
        "unrestored": unrestored,
        "created_mounts": list(ex.created.values()),
    }
    tree = replica.tree
    if tree.stand_in is not None:
        # A forest: what the table does not list is one private tmpfs at / in the replica.
        report["stand_in"] = {
            "tops": [top.mount_id for top in tree.tops],
            "unlisted_parents": sorted(set(tree.unlisted_parent.values())),
        }
    return report, ex


def _named_by_handle(mounts: list[Mount], steps: list[dict[str, Any]]) -> set[int]:
    """Mounts the executor may have to name by its own handle: the plan keeps their peer group, and
    a mount stacked on their root means no path names them (see Executor.named); and the hidden
    mount of a bind through an alias, where the socket file is looked up after the bind."""
    bracketed = {s.get("mount") for s in steps if s.get("op") in ("keeper-bind", "make-private", "rejoin-group")}
    by_id = {m.mount_id: m for m in mounts}
    aliased = {s.get("mount") for s in steps if s.get("op") == "bind" and s.get("via") is not None}
    return {
        m.parent_id
        for m in mounts
        if m.parent_id in bracketed and m.parent_id != m.mount_id and m.parent_id in by_id
        and by_id[m.parent_id].mountpoint == m.mountpoint
    } | {m for m in aliased if isinstance(m, int) and m in by_id}


def execute_here(
    mounts: list[Mount],
    targets: list[Target],
    steps: list[dict[str, Any]],
    file_mounts: Collection[int] = frozenset(),
    scratch_dir: str | None = None,
    then: Callable[[Replica, Executor, dict[str, Any]], Any] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Build the replica and run the plan in *this* process, which must already be in a throwaway namespace.

    show_progress: progress bars on this process's standard error, when that is a terminal."""
    plain = [_as_dict(s) for s in steps]
    kernel.raise_fd_limit()  # in this child only: a deep tree holds one fd per level while it is built
    progress = on_stderr() if show_progress else quiet
    replica = build_replica(mounts, targets, scratch_dir, file_mounts, handles_for=_named_by_handle(mounts, plain),
                            progress=progress)
    report, ex = run_plan(replica, targets, plain, progress)
    if then is not None:
        report["then"] = then(replica, ex, report)
    return report


def execute(
    mounts: list[Mount],
    targets: list[Target],
    steps: Iterable[object],
    *,
    file_mounts: Collection[int] = (),
    user_ns: bool | None = None,
    scratch_dir: str | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Replica + plan + verification in a throwaway mount namespace; the report dict.

    user_ns: True to go through a user namespace even as root; None (default)
    does so only when not root. Raises ReplicaError when the dump cannot be built.
    show_progress: the namespace child draws progress on standard error when it is a terminal.
    """
    plain_steps = [_as_dict(s) for s in steps]
    return kernel.run_in_namespace(
        execute_here,
        list(mounts),
        list(targets),
        plain_steps,
        frozenset(file_mounts),
        scratch_dir,
        None,
        show_progress,
        user_ns=user_ns,
    )


_NOUN_OF_TYPE = {"regular": "file", "directory": "directory", "fifo": "FIFO", "char": "char device",
                 "block": "block device", "socket": "socket"}
_NOUN_OF_KIND = {"open": "file", "chdir": "directory", "root": "directory", "bind": "socket", "mmap": "file",
                 "mount-source": "directory"}


def _target_line(t: Mapping[str, Any]) -> str:
    """One target's verdict in words a person can act on: where the kernel says it landed, and on what."""
    kind = t["kind"] if t.get("file_type") in (None, "regular", "directory") else f"{t['kind']} {t['file_type']}"
    head = f"target {t['id']} ({kind})"
    if t["step"] is None:
        return f"{head}: not reached (the run stopped before its step)"
    noun = _NOUN_OF_TYPE.get(t.get("file_type") or "", _NOUN_OF_KIND.get(t["kind"], "object"))
    got, want = t["got_mount"], t["expected_mount"]
    where = f"mount {got}" if isinstance(got, int) else f"a mount the dump does not have ({got})"
    if got != want:
        return f"{head}: WRONG, reached {where}, not mount {want} where the dump has it ({t['detail']})"
    if not t["inode_ok"]:
        return f"{head}: WRONG, in mount {want} but not the {noun} the replica made there ({t['detail']})"
    if not t.get("type_ok", True):
        return f"{head}: WRONG, in mount {want} but the object's type or access is not the dump's ({t['detail']})"
    made = "the new mount shows the directory" if t["kind"] == "mount-source" else f"the {noun}"
    via = f", bound through alias mount {t['via']} (the same file)" if t.get("via") is not None else ""
    return f"{head}: ok, {made} the replica made in mount {want}{via}"


def report_text(report: Mapping[str, Any], summarise: Collection[str] = ()) -> str:
    """The report for people: verdict, failing step, each target, the tree and the yard.

    Targets in `summarise` (those not hidden) that passed are counted in one line when there
    are two or more; a target that failed is always listed.
    """
    lines = [f"{'ok' if report['ok'] else 'FAILED'}: {plural(report['steps_run'], 'step')} run"]
    failed = report.get("failed_step")
    if failed:
        err = f"{failed['errno_name']} " if failed.get("errno_name") else ""
        lines.append(f"step {failed['index']} ({failed['op']}) failed: {err}{failed['reason']}")
        lines.append("rolled back" if report["rolled_back"] else "not rolled back")
    for lost in report.get("unrestored", []):
        where = f", now at {lost['now_at']}" if lost.get("now_at") else ""
        lines.append(f"NOT RESTORED: {lost.get('mount', lost.get('path'))}{where}: {lost['reason']}")
    quiet = [t for t in report["targets"] if t["id"] in summarise and t["ok"] and not t.get("stand_in")]
    if len(quiet) < 2:
        quiet = []
    for t in report["targets"]:
        if quiet and t in quiet:
            continue
        lines.append(_target_line(t))
        if t.get("stand_in"):
            lines.append(f"  stand-in: {t['stand_in']}")
    if quiet:
        kinds = kinds_summary(t["kind"] for t in quiet)
        lines.append(f"{len(quiet)} targets not hidden ({kinds}): ok, each in its own mount (--all lists them)")
    lines.append("tree identical" if report["tree_identical"] else "TREE CHANGED: " + "; ".join(report["tree_diff"]))
    lines.append("yard empty" if report["yard_empty"] else "YARD NOT EMPTY")
    stand_in = report.get("stand_in")
    if stand_in:
        unlisted = stand_in["unlisted_parents"]
        lines.append(
            f"a forest: mounts {', '.join(map(str, stand_in['tops']))} hang from "
            f"{'mount' if len(unlisted) == 1 else 'mounts'} {', '.join(map(str, unlisted))}, not in the table; "
            "the replica hangs them from one private tmpfs at / standing in for it"
        )
    # Paths, target ids and kernel messages naming paths come from the dump: no escape sequence passes.
    return "\n".join(printable(line) for line in lines) + "\n"
