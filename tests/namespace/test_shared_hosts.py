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

import os
import signal
from typing import Any

import pytest

from planner import kernel
from planner.dump import load
from planner.execute import Executor, _named_by_handle
from planner.plan import make_plan
from planner.replica import build_replica
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
    replica = build_replica(mounts, targets, None, file_mounts, handles_for=_named_by_handle(mounts, steps))
    watchers = {kind: _watcher(kind) for kind in ("peer", "slave")}
    try:
        def tables() -> dict[str, str]:
            return {kind: kernel.read_proc(f"{pid}/mountinfo") for kind, pid in watchers.items()}

        before = tables()
        root_line = {kind: next(line for line in text.splitlines() if line.split()[4] == "/")
                     for kind, text in {**before, "ours": kernel.own_mountinfo()}.items()}
        ours = replica.snapshot()
        ex = Executor(replica, targets)
        ex.prepare(steps)
        changed: list[str] = []
        for index, step in enumerate(steps):
            ex.run_step(index, step)
            for kind, text in tables().items():
                if text != before[kind]:
                    new = sorted(set(text.splitlines()) - set(before[kind].splitlines()))
                    changed.append(f"after step {index} ({step['op']}) the {kind} sees {new}")
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
            "targets_ok": all(r["ok"] for r in ex.results.values()) and len(ex.results) == len(targets),
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
        ex.prepare([{"op": "yard-create", "path": "/.overmount-yard"}])
        ex.run_step(0, {"op": "yard-create", "path": "/.overmount-yard"})
        return {kind: "/.overmount-yard" in {line.split()[4] for line in kernel.read_proc(f"{pid}/mountinfo").splitlines()}
                for kind, pid in watchers.items()}
    finally:
        _end(watchers)


def test_the_watchers_would_see_a_yard_made_under_the_shared_root() -> None:
    dump = load(SCENARIO)
    assert kernel.run_in_namespace(_yard_without_bracket, list(dump.mounts)) == {"peer": True, "slave": True}
