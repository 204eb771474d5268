"""The rollback: when a step fails, undo the journal (journal.py) newest first with the same
primitives the steps used (mounts.py): parked mounts go home, parents rejoin their groups, keepers
and yards go, new bind mounts are unmounted; what cannot be undone is listed, never hidden."""

from __future__ import annotations

import errno as errno_mod
import os
from typing import Any

from planner import kernel
from planner.executor.journal import Yard
from planner.executor.mounts import Mounts
from planner.executor.paths import Mismatch


class Rollback(Mounts):
    """Undoes what the steps did, from the journal."""

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

    def _unmount_yard(self, yard: Yard) -> None:
        try:
            kernel.umount2(yard.path, kernel.UMOUNT_NOFOLLOW)
        except OSError as exc:
            # Busy: someone holds an fd or a cwd in it. Once empty, a private yard can go lazily:
            # nothing propagates from it, and the holder keeps a detached tmpfs no path reaches.
            if exc.errno != errno_mod.EBUSY or yard.live < 0 or self.mount_id_at(yard.path) != yard.live:
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
