"""One socket file through two mounts, for real: binds through a visible alias, unlinked names, EROFS."""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from typing import Any

import pytest

from planner import kernel
from planner.execute import Executor, execute, execute_here
from planner.mountinfo import Mount
from planner.plan import make_plan
from planner.replica import Replica
from planner.targets import Target
from planner.tree import MountTree

pytestmark = pytest.mark.namespace

SOCK = "/sys/fs/cgroup/cgmanager/sock"


def _the_socket_after_the_plan(replica: Replica, ex: Executor, report: dict[str, Any]) -> dict[str, object]:
    """After every step (128 back on top): the socket file as hidden 123 holds it, and as 129 shows it."""
    hidden = kernel.statx_ids("sock", replica.handles[123])
    visible = kernel.statx_ids(SOCK)
    return {
        "hidden": (replica.key(hidden[0]), hidden[2], stat.S_ISSOCK(hidden[3])),
        "visible": (replica.key(visible[0]), visible[2]),
    }


def test_a_hidden_socket_bound_through_its_alias_is_the_hidden_mounts_socket(seed: list[Mount]) -> None:
    targets = [Target("sock", "bind", 123, SOCK), Target("cwd", "chdir", 123, "/sys/fs/cgroup/cgmanager")]
    plan = make_plan(MountTree(seed), targets)
    assert plan.steps[0].via == 129 and plan.moves == 1  # the cwd still needs 128 moved; the socket does not
    report = kernel.run_in_namespace(execute_here, seed, targets, [s.as_json() for s in plan.steps], frozenset(), None,
                                     _the_socket_after_the_plan)
    assert report["ok"] and report["tree_identical"] and report["yard_empty"], report
    sock = next(t for t in report["targets"] if t["id"] == "sock")
    assert (sock["got_mount"], sock["via"], sock["inode_ok"]) == (123, 129, True)
    assert "connect(2) there reached it" in sock["detail"]  # a connection by the name inside 123 was accepted
    seen = report["then"]
    # The same socket file (sock_diag's vfs inode, checked at the bind) through both mounts, after the plan.
    assert seen["hidden"][0] == 123 and seen["hidden"][2] and seen["visible"][0] == 129
    assert seen["hidden"][1] == seen["visible"][1]
    assert f"vfs ino {seen['hidden'][1]} " in sock["detail"]


def test_an_unlinked_name_is_bound_and_unlinked_before_the_live_one(seed: list[Mount]) -> None:
    targets = [Target("live", "bind", 129, SOCK), Target("old", "bind", 123, SOCK, unlinked=True)]
    plan = make_plan(MountTree(seed), targets)
    assert [s.target for s in plan.steps] == ["old", "live"]
    report = execute(seed, targets, [s.as_json() for s in plan.steps])
    assert report["ok"], report
    assert {t["id"]: t["ok"] for t in report["targets"]} == {"old": True, "live": True}


def _bind_through_a_read_only_alias() -> tuple[int, bool]:
    """A directory shown by a rw mount and by a ro bind of it: bind(2) through the ro one is EROFS."""
    top = tempfile.mkdtemp(prefix="overmount-alias-")
    kernel.mount("fs", top, "tmpfs", 0, None)
    os.makedirs(f"{top}/rw/d")
    os.mkdir(f"{top}/ro")
    kernel.mount(f"{top}/rw", f"{top}/ro", None, 0x1000, None)  # MS_BIND
    kernel.mount(None, f"{top}/ro", None, 0x1000 | 0x20 | 0x1, None)  # MS_BIND | MS_REMOUNT | MS_RDONLY
    refused = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(f"{top}/ro/d/s")
        except OSError as err:
            refused = err.errno or 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(f"{top}/rw/d/s")
        shown = stat.S_ISSOCK(os.stat(f"{top}/ro/d/s").st_mode)  # the file is there through both
    return refused, shown


def test_a_read_only_mount_cannot_bind_what_its_writable_twin_can() -> None:
    # Why an alias must be writable (and why the planner does not use 129 when it is ro).
    refused, shown = kernel.run_in_namespace(_bind_through_a_read_only_alias)
    assert refused == errno.EROFS and shown
