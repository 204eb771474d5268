"""The executor: runs a plan's steps against a built replica, one handler per op through the op table
check shares (planner.steps.REQUIRED): the yard, the moves and the keepers here, the target steps in
targets.py, over the mounts and rollback of mounts.py and the paths of paths.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

from planner import kernel
from planner.executor.journal import Aside, Yard
from planner.executor.mounts import MOVE, O_PATH
from planner.executor.paths import RESOLVE, Mismatch, clean
from planner.executor.report import BaseReporter
from planner.executor.rollback import Rollback
from planner.executor.targets import Targets
from planner.paths import from_root
from planner.replica import Replica
from planner.steps import TARGET_OPS, Step, arguments, handlers_for
from planner.targets import Target

_SLOT_OPS = ("move-aside", "keeper-bind")  # the steps that put a mount into a yard slot


class Executor(Targets, Rollback):
    """Runs steps against a built replica, in this process (already inside the namespace)."""

    def __init__(self, replica: Replica, targets: Iterable[Target], reporter: BaseReporter | None = None) -> None:
        super().__init__(replica, targets, reporter or BaseReporter())
        self.ops: dict[str, Callable[..., None]] = handlers_for({
            "yard-create": self.yard_create,
            "yard-remove": self.yard_remove,
            "move-aside": self.move_aside,
            "move-back": self.move_back,
            "keeper-bind": self.keeper_bind,
            "make-private": self.make_private,
            "rejoin-group": self.rejoin_group,
            "keeper-remove": self.keeper_remove,
            "open": self.open,
            "chdir": self.chdir,
            "root": self.root,
            "bind": self.bind,
            "mmap": self.mmap,
            "mount-source": self.mount_source,
        }, "the executor")
        assert all(op in self.ops for op in TARGET_OPS)

    def prepare(self, steps: Iterable[Step]) -> None:
        """Read the plan ahead: its yards, and the slot each will need, made once at yard-create.

        Optional: without it a slot is made when a mount first moves into it.
        """
        steps = list(steps)
        self.yard_paths = [s.path for s in steps if s.op == "yard-create" and s.path is not None]
        slots: dict[str, dict[str, None]] = {path: {} for path in self.yard_paths}
        for s in steps:
            if s.op in _SLOT_OPS and s.to is not None:
                head, _, name = s.to.rpartition("/")
                if head in slots and name not in ("", ".", ".."):
                    slots[head][name] = None
        self.planned_slots = {path: list(names) for path, names in slots.items()}

    def run_step(self, index: int, step: Step) -> None:
        """One step, by its op's handler; MissingField when it lacks a field its op requires."""
        action = self.ops.get(step.op)
        if action is None:
            raise Mismatch(f"unknown op {step.op!r}")
        action(index, *arguments(step))

    def yard_create(self, index: int, path: str) -> None:
        path = clean(path, "yard")
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
                self.remove_quietly(directory)
            raise
        yard = Yard(path, fd, made, slots)
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

    def yard_remove(self, index: int, path: str) -> None:
        path = clean(path, "yard")
        yard = self.yards.get(path)
        got = self.mount_id_at(path)
        if yard is None or got != yard.live:
            raise Mismatch(f"{path} is mount {self.replica.key(got)}, not a yard this plan created")
        self._close_yard(yard)  # an open fd on the yard would make it busy
        kernel.umount2(path, kernel.UMOUNT_NOFOLLOW)  # its slots go with its tmpfs
        self.journal.pop("yard", lambda item: item is yard)
        del self.yards[path]
        for directory in reversed(yard.made):
            self.remove_dir(directory)

    def move_aside(self, index: int, mount: int, src: str, dest: str) -> None:
        src, dest = clean(src, "from"), clean(dest, "to")
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
        self.journal.push("aside", Aside(mount, src, dest, made))
        # The kernel's answer, after the move: the slot shows the mount that moved.
        got = kernel.statx_ids(from_root(dest), self.root_fd)[0] if yard is None else kernel.statx_ids(name, yard.fd)[0]
        if got != live:
            raise Mismatch(f"after the move {dest} names mount {self.replica.key(got)}, not {mount}")

    def move_back(self, index: int, mount: int, src: str, dest: str) -> None:
        src, dest = clean(src, "from"), clean(dest, "to")
        rel = from_root(dest)
        fd, live, mode = self._open_mount(src, mount)
        try:
            to = kernel.openat2(self.root_fd, rel, O_PATH, RESOLVE)
            try:
                self._move_fd(fd, to, "", MOVE)
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

    def keeper_bind(self, index: int, mount: int, src: str, dest: str) -> None:
        src, dest = clean(src, "from"), clean(dest, "to")
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

    def make_private(self, index: int, mount: int, path: str) -> None:
        path = clean(path, "path")
        fd = self.named(mount, path, allow_stacked=True)
        try:
            kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
        finally:
            os.close(fd)
        self.journal.push("private", (mount, path))

    def rejoin_group(self, index: int, mount: int, src: str, dest: str) -> None:
        src, dest = clean(src, "from"), clean(dest, "to")
        keeper = self.keepers.get(mount)
        got = self.mount_id_at(src)
        if keeper is None or got != keeper[0]:
            raise Mismatch(f"{src} is mount {self.replica.key(got)}, not the keeper of mount {mount}")
        parent = self.named(mount, dest, allow_stacked=True)
        try:
            self._rejoin(mount, parent)
        finally:
            os.close(parent)
        self.journal.pop("private", lambda item: item[0] == mount)

    def keeper_remove(self, index: int, mount: int, path: str) -> None:
        path = clean(path, "path")
        keeper = self.keepers.get(mount)
        if keeper is None or keeper[1] != path:
            raise Mismatch(f"no keeper of mount {mount} at {path}")
        self._remove_keeper(mount)
        self.journal.pop("keeper", lambda m: m == mount)
