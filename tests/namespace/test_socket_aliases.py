"""One socket file through two mounts, for real: binds through a visible alias, unlinked names, EROFS."""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from planner import kernel
from planner.errors import PlanRefused
from planner.executor import execute, execute_here
from planner.executor.operations import Executor
from planner.inputs.capture import capture_pid
from planner.inputs.dump_json import from_json
from planner.mountinfo import Mount
from planner.plan import make_plan
from planner.replica import Replica
from planner.targets import Target
from planner.tree import MountTree
from tests.namespace.children import PRELUDE, Children

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


RESTARTED = PRELUDE + textwrap.dedent(
    """
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 1 << 18
    base, ready_fd, cover = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "covered"
    check(libc.unshare(CLONE_NEWNS), "unshare")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    check(libc.mount(b"data", base.encode(), b"tmpfs", 0, b"size=1m"), "mount data")
    os.mkdir(base + "/d")
    old = socket.socket(socket.AF_UNIX)
    old.bind(base + "/d/sock")
    old.listen()
    os.unlink(base + "/d/sock")  # as a daemon that restarts in place leaves its old socket
    new = socket.socket(socket.AF_UNIX)
    new.bind(base + "/d/sock")
    new.listen()
    if cover:
        check(libc.mount(b"upper", (base + "/d").encode(), b"tmpfs", 0, b"size=1m"), "mount upper")
    os.write(ready_fd, b"ready\\n")
    os.close(ready_fd)
    while True:
        time.sleep(60)
    """
)


@pytest.mark.parametrize("cover", ["open", "covered"])
def test_a_restarted_daemons_two_sockets_by_one_name(cover: str, tmp_path: Path) -> None:
    """capture marks the old name unlinked where it can see so; plan binds and unlinks it first, run
    verifies both. Under a cover nobody can tell which name is live: plan refuses, naming both."""
    children = Children()
    try:
        pid = children.start(RESTARTED, str(tmp_path), cover)
        captured = capture_pid(pid)
    finally:
        children.kill_all()
    dump = from_json(captured, "captured", "")
    binds = sorted((t for t in dump.targets if t.kind == "bind"), key=lambda t: t.id)
    assert len(binds) == 2 and binds[0].path == binds[1].path == f"{tmp_path}/d/sock"
    tree = MountTree(dump.mounts)
    if cover == "covered":
        assert not any(t.unlinked for t in binds)
        with pytest.raises(PlanRefused, match=f"targets {binds[0].id} and {binds[1].id} name the same socket file"):
            make_plan(tree, dump.targets)
        return
    old = next(t for t in binds if t.unlinked)  # its inode is not the one the name leads to today
    plan = make_plan(tree, dump.targets)
    assert next(s.target for s in plan.steps if s.op == "bind") == old.id
    report = execute(list(dump.mounts), list(dump.targets), [s.as_json() for s in plan.steps])
    assert report["ok"], report
