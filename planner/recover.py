"""`overmount recover`: put back what a plan stopped part way left in its yard, in a namespace the
user names (a process's, by pid, or an nsfs file), with real syscalls (thin shell over recovery.py).

It never acts on the namespace overmount itself runs in unless told to (own_namespace): a slip of
--pid must not touch the namespace one is in. Every step names its mount by path, and the kernel's
own mount id at that path must be the one the table showed (statx STATX_MNT_ID) before it acts.
"""

from __future__ import annotations

import os
from typing import Any

from planner import kernel
from planner.errors import PlannerError, RecoverRefused
from planner.mountinfo import parse
from planner.paths import from_root, is_clean
from planner.recovery import recovery_plan
from planner.steps import Step

_RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS
_MOVE = kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_T_EMPTY_PATH


def recover(
    steps: list[Step], *, pid: int | None = None, ns_path: str | None = None,
    dry_run: bool = False, own_namespace: bool = False, source: str = "the plan",
) -> dict[str, Any]:
    """Recover in the mount namespace of `pid` (paths from its root) or of the nsfs file `ns_path`
    (paths from the namespace's root); the report. `source` names the plan in messages."""
    where = f"pid {pid}" if pid is not None else str(ns_path)
    for index, step in enumerate(steps):
        for path in (step.path, step.src, step.to):
            if path is not None and not is_clean(path):
                raise RecoverRefused(source, None, f"step {index}: path {path!r} must be absolute with no '.', "
                                     "'..' or empty parts")
    try:
        ns_fd = os.open(f"/proc/{pid}/ns/mnt" if pid is not None else str(ns_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RecoverRefused(where, None, f"cannot open its mount namespace: {exc.strerror}") from None
    root_fd = -1
    try:
        if os.fstat(ns_fd).st_ino == os.stat("/proc/self/ns/mnt").st_ino and not dry_run and not own_namespace:
            raise RecoverRefused(where, None, "that is overmount's own mount namespace; recover acts there only "
                                 "with --own-namespace (see what it would do with --dry-run)")
        if pid is not None:
            try:
                root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise RecoverRefused(where, None, f"cannot open its root: {exc.strerror}") from None

        def enter() -> None:
            kernel.enter_namespace(ns_fd, root_fd)

        report: dict[str, Any] = kernel.run_in_namespace(_recover_here, list(steps), dry_run, where, enter=enter)
        return report
    except OSError as exc:
        raise RecoverRefused(where, None, f"cannot enter its mount namespace: {exc.strerror or exc}") from None
    finally:
        os.close(ns_fd)
        if root_fd >= 0:
            os.close(root_fd)


def _recover_here(plan: list[Step], dry_run: bool, where: str) -> dict[str, Any]:
    """In the namespace being recovered: its table, the steps, and (unless a dry run) doing them."""
    table = parse(kernel.own_mountinfo(), f"{where} (mountinfo)")
    recovery = recovery_plan(plan, table, f"{where} (mountinfo)")
    report: dict[str, Any] = {
        "ok": not recovery.lost,
        "dry_run": dry_run,
        "steps": [s.as_json() for s in recovery.steps],
        "steps_run": 0,
        "failed_step": None,
        "lost": list(recovery.lost),
        "notes": list(recovery.notes),
    }
    if dry_run:
        return report
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, step in enumerate(recovery.steps):
            try:
                _do(root, step)
            except (OSError, PlannerError) as exc:
                report["ok"] = False
                report["failed_step"] = {"index": index, "step": step.as_json(), "reason": str(exc)}
                break
            report["steps_run"] = index + 1
    finally:
        os.close(root)
    return report


def _open_mount(root: int, path: str, live: int | None) -> int:
    """O_PATH fd on the mount whose root `path` names, which must be mount `live` of the table."""
    fd = kernel.openat2(root, from_root(path), os.O_PATH | os.O_NOFOLLOW, _RESOLVE)
    got = kernel.statx_ids(fd)[0]
    if got != live:
        os.close(fd)
        raise PlannerError(f"{path} is mount {got} now, not {live}: the namespace changed; nothing more is done")
    return fd


def _do(root: int, step: Step) -> None:
    assert step.mount is not None or step.op == "yard-remove"
    if step.op == "move-back":
        assert step.src is not None and step.to is not None
        fd = _open_mount(root, step.src, step.mount)
        try:
            to = kernel.openat2(root, from_root(step.to), os.O_PATH | os.O_NOFOLLOW, _RESOLVE)
            try:
                kernel.move_mount(fd, "", to, "", _MOVE)
            finally:
                os.close(to)
        finally:
            os.close(fd)
    elif step.op == "rejoin-group":
        assert step.src is not None and step.to is not None
        keeper = kernel.openat2(root, from_root(step.src), os.O_PATH | os.O_NOFOLLOW, _RESOLVE)
        try:
            parent = _open_mount(root, step.to, step.mount)
            try:
                kernel.move_mount(keeper, "", parent, "", _MOVE | kernel.MOVE_MOUNT_SET_GROUP)
            finally:
                os.close(parent)
        finally:
            os.close(keeper)
    elif step.op in ("keeper-remove", "yard-remove"):
        assert step.path is not None
        fd = kernel.openat2(root, from_root(step.path), os.O_PATH | os.O_NOFOLLOW, _RESOLVE)
        try:
            live = kernel.statx_ids(fd)[0]
        finally:
            os.close(fd)
        if step.mount is not None and live != step.mount:
            raise PlannerError(f"{step.path} is mount {live} now, not {step.mount}: the namespace changed")
        kernel.umount2(step.path, kernel.UMOUNT_NOFOLLOW)
    else:  # pragma: no cover - recovery_plan makes no other op
        raise PlannerError(f"recover does not do {step.op}")
