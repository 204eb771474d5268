"""A systemd host, where every mount is shared: nothing the plan does may reach a peer or a slave.

The replica of scenario 24 is built in a throwaway namespace; then two more namespaces are made
from it, as systemd and container runtimes make them: a *peer* of / (unshare(CLONE_NEWNS) from a
shared /: each copy joins its original's peer group) and a *slave* of / (the same, then
`mount --make-rslave /`, as PrivateTmp= or a container started with rslave). The plan runs step
by step, and after every step both namespaces' mountinfo must be exactly what it was: no yard,
no keeper, no moved mount, not even for the length of one step. Controls show the watchers would
see it: a mount made under / after the plan reaches both, and a yard made without the bracket does.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from planner import kernel
from planner.executor.operations import Executor
from planner.executor.run import as_steps, named_by_handle
from planner.inputs import load
from planner.mountinfo import parse
from planner.plan import make_plan
from planner.replica import build_replica
from planner.steps import Step
from planner.tree import MountTree
from tests.conftest import REPO

pytestmark = pytest.mark.namespace

SCENARIO = os.path.join(REPO, "scenarios", "24-systemd-every-mount-shared.toml")


def _watcher(kind: str) -> int:
    """A child in a mount namespace unshared from this one (a peer of every shared mount here), made
    rslave for kind "slave"; it waits until killed (by its pid: see _end)."""
    ready_r, ready_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            kernel.die_with_parent(parent)
            os.close(ready_r)
            kernel.unshare(kernel.CLONE_NEWNS)
            if kind == "slave":
                kernel.make_propagation("/", kernel.MS_REC | kernel.MS_SLAVE)
            os.write(ready_w, b"1")
            while True:
                signal.pause()
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise RuntimeError(f"the {kind} namespace could not be made")
    finally:
        os.close(ready_r)
    return pid


def _end(watchers: dict[str, int]) -> None:
    for pid in watchers.values():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _watch_the_plan(mounts: list[Any], targets: list[Any], steps: list[dict[str, Any]], file_mounts: Any) -> dict[str, Any]:
    """In the namespace child: replica, watchers, the plan step by step; what each watcher saw."""
    plan = as_steps(steps)
    replica = build_replica(mounts, targets, None, file_mounts, handles_for=named_by_handle(mounts, plan))
    watchers = {kind: _watcher(kind) for kind in ("peer", "slave")}
    try:
        def tables() -> dict[str, str]:
            return {kind: kernel.read_proc(f"{pid}/mountinfo") for kind, pid in watchers.items()}

        before = tables()
        root_line = {kind: next(line for line in text.splitlines() if line.split()[4] == "/")
                     for kind, text in {**before, "ours": kernel.own_mountinfo()}.items()}
        ours = replica.snapshot()
        ex = Executor(replica, targets)
        ex.prepare(plan)
        changed: list[str] = []
        for index, step in enumerate(plan):
            ex.run_step(index, step)
            for kind, text in tables().items():
                if text != before[kind]:
                    new = sorted(set(text.splitlines()) - set(before[kind].splitlines()))
                    changed.append(f"after step {index} ({step.op}) the {kind} sees {new}")
        tree_diff = ours.diff(replica.snapshot())
        # Control: / is back in its group, so a mount made under it now reaches both.
        os.mkdir("/control-probe")
        probe = kernel.new_tmpfs()
        kernel.attach(probe, kernel.AT_FDCWD, "/control-probe")
        os.close(probe)
        reached = {kind: "/control-probe" in {line.split()[4] for line in text.splitlines()}
                   for kind, text in tables().items()}
        return {
            "changed": changed,
            "root_line": root_line,
            "targets_ok": all(r.ok for r in ex.results.values()) and len(ex.results) == len(targets),
            "tree_diff": tree_diff,
            "control_reached": reached,
        }
    finally:
        _end(watchers)


def test_nothing_the_plan_does_reaches_a_peer_or_a_slave_namespace_of_root() -> None:
    dump = load(SCENARIO)
    tree = MountTree(dump.mounts, dump.source)
    plan = make_plan(tree, dump.targets)
    steps = [s.as_json() for s in plan.steps]
    assert [s["op"] for s in steps[:3]] == ["keeper-bind", "make-private", "yard-create"]  # / is bracketed first
    seen = kernel.run_in_namespace(_watch_the_plan, list(dump.mounts), list(dump.targets), steps, dump.file_mounts)
    # The watchers are what they should be: a peer of / and a slave of its peer group (the kernel's
    # group number, whatever it is here).
    [group] = [tag.split(":")[1] for tag in seen["root_line"]["ours"].split() if tag.startswith("shared:")]
    assert f" shared:{group} " in seen["root_line"]["peer"] and f" master:{group} " in seen["root_line"]["slave"]
    assert seen["changed"] == []
    assert seen["targets_ok"] and seen["tree_diff"] == []
    assert seen["control_reached"] == {"peer": True, "slave": True}


def _yard_without_bracket(mounts: list[Any]) -> dict[str, Any]:
    """The watchers would see a plan that propagates: a yard made right under the shared /."""
    replica = build_replica(mounts)
    watchers = {kind: _watcher(kind) for kind in ("peer", "slave")}
    try:
        ex = Executor(replica, [])
        yard = Step("yard-create", path="/.overmount-yard")
        ex.prepare([yard])
        ex.run_step(0, yard)
        return {kind: "/.overmount-yard" in {line.split()[4] for line in kernel.read_proc(f"{pid}/mountinfo").splitlines()}
                for kind, pid in watchers.items()}
    finally:
        _end(watchers)


def test_the_watchers_would_see_a_yard_made_under_the_shared_root() -> None:
    dump = load(SCENARIO)
    assert kernel.run_in_namespace(_yard_without_bracket, list(dump.mounts)) == {"peer": True, "slave": True}


# --- the two kernel facts the yard's design rests on, shown on this kernel ------------------------


def _into_a_detached_tree(top: str) -> dict[str, str]:
    """A mount attached in the namespace, then a fresh clone, moved into a detached tmpfs (a yard
    held only by its fd): what move_mount answers for each."""
    kernel.mount("scratch", top, "tmpfs", 0, "mode=0755")
    os.mkdir(f"{top}/cover")
    kernel.mount("cover", f"{top}/cover", "tmpfs", 0, None)
    yard = kernel.new_tmpfs()
    os.mkdir("attached", dir_fd=yard)
    os.mkdir("clone", dir_fd=yard)
    out = {}
    for shared in (False, True):
        kernel.make_propagation(top, kernel.MS_SHARED if shared else kernel.MS_PRIVATE)
        kernel.make_propagation(f"{top}/cover", kernel.MS_PRIVATE)
        try:
            kernel.move_mount(kernel.AT_FDCWD, f"{top}/cover", yard, "attached", 0)
            out[f"attached, parent {'shared' if shared else 'private'}"] = "moved"
        except OSError as exc:
            out[f"attached, parent {'shared' if shared else 'private'}"] = errno.errorcode[exc.errno or 0]
    clone = kernel.open_tree(kernel.AT_FDCWD, f"{top}/cover", kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC)
    kernel.attach(clone, yard, "clone")
    out["detached clone"] = "moved"
    return out


def test_an_attached_mount_cannot_be_moved_into_a_detached_yard(tmp_path: Path) -> None:
    """Why the yard is a path: a move-aside moves an attached mount, and into a detached tree the
    kernel refuses that (EINVAL), whatever the propagation of its parent."""
    assert kernel.run_in_namespace(_into_a_detached_tree, str(tmp_path)) == {
        "attached, parent private": "EINVAL", "attached, parent shared": "EINVAL", "detached clone": "moved"}


def _unmount_after_rejoin(top: str) -> dict[str, bool]:
    """Y is shared with a peer Y2 that has its own mount at d. Y goes private (a keeper keeps its
    group), a yard is mounted on Y/d, Y rejoins, the yard is unmounted: is Y2's own mount still there?"""
    kernel.mount("scratch", top, "tmpfs", 0, "mode=0755")
    for name in ("y", "y2"):
        os.mkdir(f"{top}/{name}")
    kernel.mount("y", f"{top}/y", "tmpfs", 0, None)
    kernel.make_propagation(f"{top}/y", kernel.MS_SHARED)
    kernel.mount(f"{top}/y", f"{top}/y2", None, 0x1000, None)  # MS_BIND: y2 joins y's peer group
    os.mkdir(f"{top}/y/d")
    kernel.make_propagation(f"{top}/y2", kernel.MS_PRIVATE)
    kernel.mount("peer-own", f"{top}/y2/d", "tmpfs", 0, None)  # the peer's own mount at d
    kernel.move_mount(kernel.AT_FDCWD, f"{top}/y", kernel.AT_FDCWD, f"{top}/y2", kernel.MOVE_MOUNT_SET_GROUP)
    keeper = kernel.open_tree(kernel.AT_FDCWD, f"{top}/y", kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC)
    kernel.make_propagation(f"{top}/y", kernel.MS_PRIVATE)
    kernel.mount("yard", f"{top}/y/d", "tmpfs", 0, None)
    copies_of_the_yard = len([m for m in mountinfo_now() if m.source == "yard"]) - 1  # y is private: none
    kernel.move_mount(keeper, "", kernel.AT_FDCWD, f"{top}/y", kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_SET_GROUP)
    kernel.umount2(f"{top}/y/d")
    sources = {m.source for m in mountinfo_now()}
    return {"peer saw the yard": copies_of_the_yard > 0, "peer's own mount survives": "peer-own" in sources}


def mountinfo_now() -> list[Any]:
    return parse(kernel.own_mountinfo(), "/proc/self/mountinfo")


def test_unmounting_the_yard_after_its_mount_rejoined_reaches_a_peers_mount_at_that_place(tmp_path: Path) -> None:
    """Why the yard's directory must be made for the plan when its mount is bracketed: the yard goes
    after its mount rejoined (its keeper lives in it), and that unmount propagates to the peers."""
    seen = kernel.run_in_namespace(_unmount_after_rejoin, str(tmp_path))
    assert seen == {"peer saw the yard": False, "peer's own mount survives": False}
