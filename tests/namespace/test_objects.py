"""What a process holds besides files and directories, for real: FIFOs, device nodes, socket
files and its root in the replica and the executor; unbindable mounts built and compared."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner import kernel
from planner.check import check_plan
from planner.errors import PlannerError, ReplicaError
from planner.executor import execute
from planner.inputs import load
from planner.mountinfo import parse
from planner.plan import make_plan
from planner.replica import build_replica
from planner.steps import Step
from planner.targets import Target
from planner.tree import MountTree
from tests.conftest import REPO

pytestmark = pytest.mark.namespace

YARD = "/.overmount-yard"
# /srv (20) holds everything; 21 covers /srv/d; 22 is unbindable.
TABLE = (
    "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
    "20 1 0:50 / /srv rw - tmpfs lower rw\n"
    "21 20 0:51 / /srv/d rw - tmpfs upper rw\n"
    "22 1 0:52 / /u rw unbindable - tmpfs u rw\n"
)
OBJECTS = [
    Target("fifo-rw", "open", 20, "/srv/d/ctl", file_type="fifo", access="read-write"),
    Target("fifo-r", "open", 20, "/srv/d/events", file_type="fifo", access="read-only"),
    Target("fifo-w", "open", 20, "/srv/d/log", file_type="fifo", access="write-only"),
    Target("null", "open", 20, "/srv/d/null", file_type="char", access="write-only", rdev="1:3"),
    Target("loop", "open", 20, "/srv/d/loop", file_type="block", access="read-only", rdev="7:0"),
    Target("dir", "open", 20, "/srv/d/dir", file_type="directory", access="read-only"),
    Target("skfile", "open", 20, "/srv/d/skfile", file_type="socket", access="path"),
    Target("file", "open", 20, "/srv/d/file", file_type="regular", access="read-write"),
    Target("root", "root", 20, "/srv/d/jail"),
    # bound after the root step: the executor's own root must be back for bind(2)'s path
    Target("sock", "bind", 20, "/srv/d/jail/sock"),
]
TYPES = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK, "directory": stat.S_IFDIR,
         "socket": stat.S_IFSOCK, "regular": stat.S_IFREG}


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A FIFO opened the blocking way would wait forever: fail the test instead."""

    def hung(*_: object) -> None:
        raise TimeoutError("blocked: an open(2) of a FIFO waited for its other end")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def plan_steps(targets: list[Target], table: str = TABLE) -> list[dict[str, Any]]:
    mounts = parse(table)
    plan = make_plan(MountTree(mounts, "t"), targets)
    return [s.as_json() for s in plan.steps]


def test_the_replica_makes_each_object_of_its_own_type() -> None:
    mounts = parse(TABLE)

    def inside() -> dict[str, tuple[int, int, str | None]]:
        replica = build_replica(mounts, OBJECTS)
        out = {}
        for t in OBJECTS:
            obj = replica.objects[t.id]
            out[t.id] = (stat.S_IFMT(obj.mode), obj.rdev, obj.stand_in)
        return out

    made = kernel.run_in_namespace(inside)
    for t in OBJECTS:
        mode, rdev, stand_in = made[t.id]
        if t.kind in ("root",):
            assert mode == stat.S_IFDIR
        elif t.kind == "bind":
            assert mode == stat.S_IFDIR  # the socket's directory: bind(2) makes the socket itself
        else:
            assert t.file_type is not None
            assert mode == TYPES[t.file_type], t.id
            assert stand_in is None
        if t.rdev:
            assert (os.major(rdev), os.minor(rdev)) == tuple(int(x) for x in t.rdev.split(":"))


def test_every_object_is_reached_opened_as_held_and_verified(no_hang: None) -> None:
    report = execute(parse(TABLE), OBJECTS, plan_steps(OBJECTS))
    assert report["ok"] and report["tree_identical"] and report["yard_empty"], report
    got = {t["id"]: t for t in report["targets"]}
    for t in OBJECTS:
        assert (got[t.id]["got_mount"], got[t.id]["inode_ok"], got[t.id]["type_ok"]) == (20, True, True), got[t.id]
        if t.file_type:
            assert got[t.id]["file_type"] == t.file_type
    # The FIFOs as the process held them (fcntl F_GETFL of the executor's own fd), none waited.
    assert got["fifo-rw"]["detail"].endswith("fifo, read-write")
    assert got["fifo-r"]["detail"].endswith("fifo, read-only")
    assert got["fifo-w"]["detail"].endswith("fifo, write-only")
    # A device node and a socket file are reached with O_PATH: no driver runs.
    assert got["null"]["detail"].endswith("char, path")
    assert got["skfile"]["detail"].endswith("socket, path")
    assert got["root"]["detail"].startswith("root ino")


def test_in_a_user_namespace_a_stand_in_takes_a_device_node_s_place(no_hang: None) -> None:
    report = execute(parse(TABLE), OBJECTS, plan_steps(OBJECTS), user_ns=True)
    assert report["ok"], report
    got = {t["id"]: t for t in report["targets"]}
    for name, device in (("null", "char device 1:3"), ("loop", "block device 7:0")):
        assert got[name]["file_type"] == "regular" and got[name]["type_ok"]
        assert f"stands in for the {device}" in got[name]["stand_in"]
        assert "CAP_MKNOD" in got[name]["stand_in"]
    # mkfifo and a socket inode need no privilege: the real thing, there too.
    assert (got["fifo-r"]["file_type"], got["fifo-r"]["stand_in"]) == ("fifo", None)
    assert (got["skfile"]["file_type"], got["skfile"]["stand_in"]) == ("socket", None)
    assert (got["root"]["ok"], got["sock"]["ok"]) == (True, True)


def test_a_wrong_type_is_caught_and_rolled_back(mocker: MockerFixture, no_hang: None) -> None:
    """Fault: the replica makes a regular file where the dump has a FIFO; verification must say so."""

    def plain_file(path: str, mode: int = 0o666, *, dir_fd: int | None = None) -> None:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode, dir_fd=dir_fd))

    mocker.patch("planner.replica.build.os.mkfifo", plain_file)
    fifo = [t for t in OBJECTS if t.id == "fifo-r"]
    report = execute(parse(TABLE), fifo, plan_steps(fifo))
    assert not report["ok"] and report["rolled_back"] and report["tree_identical"]
    assert report["failed_step"]["reason"] == "target fifo-r: reached a regular, the dump has a fifo"
    [result] = report["targets"]
    assert (result["got_mount"], result["inode_ok"], result["type_ok"]) == (20, True, False)


def test_a_root_step_without_the_move_reaches_the_cover_and_is_refused() -> None:
    root = [Target("root", "root", 20, "/srv/d/jail")]
    steps = [Step("root", mount=20, path="/srv/d/jail", target="root")]
    tree = MountTree(parse(TABLE), "t")
    assert check_plan(tree, root, steps) == ["step 0 (root root): /srv/d/jail leads into mount 21, not mount 20: still hidden"]
    report = execute(parse(TABLE), root, [s.as_json() for s in steps])
    # The cover has no jail: the chroot fails there, the executor's own root is untouched.
    assert not report["ok"] and report["failed_step"]["errno_name"] == "ENOENT"
    assert report["tree_identical"]


def test_the_chroot_scenario_runs() -> None:
    dump = load(os.path.join(REPO, "scenarios", "22-chroot-root-under-overmount.toml"))
    steps = [s.as_json() for s in make_plan(MountTree(dump.mounts, dump.source), dump.targets).steps]
    report = execute(list(dump.mounts), list(dump.targets), steps)
    assert report["ok"], report
    assert {t["id"]: (t["got_mount"], t["ok"]) for t in report["targets"]} == {"root": (27, True), "cwd": (27, True)}


# --- unbindable ------------------------------------------------------------------------------


def test_the_replica_builds_unbindable_and_the_comparison_sees_it(mocker: MockerFixture) -> None:
    mounts = parse(TABLE)

    def inside() -> tuple[list[str], bool]:
        replica = build_replica(mounts)
        live = {replica.key(m.mount_id): m for m in replica.live_table()}
        return replica.expected.diff(replica.snapshot()), live[22].unbindable

    diff, unbindable = kernel.run_in_namespace(inside)
    assert diff == [] and unbindable
    # Fault: the replica skips MS_UNBINDABLE. The comparison with the dump must refuse it.
    real = kernel.mount_setattr

    def no_unbindable(fd: int, path: str, flags: int, **attrs: Any) -> None:
        if attrs.get("propagation") != kernel.MS_UNBINDABLE:
            real(fd, path, flags, **attrs)

    mocker.patch("planner.replica.build.kernel.mount_setattr", no_unbindable)
    with pytest.raises(ReplicaError, match=r"unbindable: \[22\] only here, \[\] only there"):
        kernel.run_in_namespace(build_replica, mounts)


def test_a_plan_that_makes_an_unbindable_mount_private_fails_the_tree_comparison() -> None:
    """make-private clears MNT_UNBINDABLE: check says so, and the kernel's tree after the run does too."""
    steps = [Step("make-private", mount=22, path="/u")]
    tree = MountTree(parse(TABLE), "t")
    assert check_plan(tree, [], steps) == ["tree not restored: mount 22 is no longer unbindable"]
    report = execute(parse(TABLE), [], [s.as_json() for s in steps])
    assert not report["tree_identical"]
    assert report["tree_diff"] == ["unbindable: [22] only here, [] only there"]


def test_a_bind_from_an_unbindable_mount_is_refused_and_the_kernel_agrees() -> None:
    """Scenario 23: the planner refuses; a hand plan is refused by check; forced, the kernel says EINVAL."""
    dump = load(os.path.join(REPO, "scenarios", "23-bind-source-in-unbindable-mount.toml"))
    tree = MountTree(dump.mounts, dump.source)
    reason = "the kernel would refuse (EINVAL) to bind from mount 28: it is unbindable"
    with pytest.raises(PlannerError, match=r"\(EINVAL\) to bind from mount 28: it is unbindable"):
        make_plan(tree, dump.targets)
    [target] = dump.targets
    hand = [
        Step("yard-create", path=YARD),
        Step("move-aside", mount=50, src="/srv/export/www", to=f"{YARD}/0"),
        Step("mount-source", mount=28, path=target.path, to=target.to, target=target.id),
        Step("move-back", mount=50, src=f"{YARD}/0", to="/srv/export/www"),
        Step("yard-remove", path=YARD),
    ]
    assert check_plan(tree, dump.targets, hand) == [f"step 2 (mount-source t1): {reason}"]
    report = execute(list(dump.mounts), list(dump.targets), [s.as_json() for s in hand])
    assert report["failed_step"]["index"] == 2 and report["failed_step"]["errno_name"] == "EINVAL"
    assert report["rolled_back"] and report["tree_identical"] and report["yard_empty"]
