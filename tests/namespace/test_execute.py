"""The executor for real: replica, plan, verification, rollback, user namespace, propagation."""

from __future__ import annotations

import errno
import os
import pickle
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner import kernel
from planner.executor import execute, execute_here
from planner.mountinfo import Mount, parse
from planner.replica import build_replica
from planner.targets import Target

pytestmark = pytest.mark.namespace

YARD = "/.overmount-yard"
SEED_TARGETS = [
    Target("sock", "bind", 123, "/sys/fs/cgroup/cgmanager/sock"),
    Target("file", "open", 123, "/sys/fs/cgroup/cgmanager/state"),
    Target("cwd", "chdir", 123, "/sys/fs/cgroup/cgmanager"),
    Target("lib", "mmap", 123, "/sys/fs/cgroup/cgmanager/lib.so"),
    Target("src", "mount-source", 122, "/sys/fs/cgroup/shared", "/mnt"),
]


def seed_plan() -> list[dict[str, Any]]:
    """One bracket around every target: 128 covers 122 and, through it, 123."""
    steps: list[dict[str, Any]] = [
        {"op": "yard-create", "path": YARD},
        {"op": "move-aside", "mount": 128, "from": "/sys/fs/cgroup", "to": f"{YARD}/0"},
    ]
    for t in SEED_TARGETS:
        step = {"op": t.kind, "target": t.id, "mount": t.mount, "path": t.path}
        if t.to:
            step["to"] = t.to
        steps.append(step)
    steps += [
        {"op": "move-back", "mount": 128, "from": f"{YARD}/0", "to": "/sys/fs/cgroup"},
        {"op": "yard-remove", "path": YARD},
    ]
    return steps


def assert_all_targets_verified(report: dict[str, Any], targets: list[Target]) -> None:
    got = {t["id"]: t for t in report["targets"]}
    for t in targets:
        assert got[t.id]["ok"], got[t.id]
        assert got[t.id]["got_mount"] == t.mount and got[t.id]["inode_ok"]


def test_seed_plan_reaches_every_target_in_the_hidden_mounts(
    seed: list[Mount], seed_file_mounts: frozenset[int]
) -> None:
    report = execute(seed, SEED_TARGETS, seed_plan(), file_mounts=seed_file_mounts)
    assert report["ok"], report
    assert report["steps_run"] == len(seed_plan())
    assert_all_targets_verified(report, SEED_TARGETS)
    assert report["tree_identical"] and report["tree_diff"] == []
    assert report["yard_empty"] and report["failed_step"] is None and not report["rolled_back"]
    assert report["created_mounts"] == [{"target": "src", "to": "/mnt", "root": "/shared", "parent": 71}]


def test_without_the_move_the_path_reaches_the_covering_mount(
    seed: list[Mount],
) -> None:
    # chdir works (129 shares 123's superblock and directory) but lands in the wrong mount.
    steps = [
        {
            "op": "chdir",
            "target": "cwd",
            "mount": 123,
            "path": "/sys/fs/cgroup/cgmanager",
        }
    ]
    report = execute(seed, [t for t in SEED_TARGETS if t.id == "cwd"], steps)
    assert not report["ok"]
    assert report["targets"][0]["got_mount"] == 129 and report["targets"][0]["inode_ok"]
    assert report["failed_step"]["index"] == 0 and report["failed_step"]["errno"] is None
    assert report["tree_identical"]


def _fail_openat2_of(mocker: MockerFixture, path: str, err: int) -> None:
    """openat2 of `path` (relative to the replica root, as the executor asks) raises `err`."""
    real = kernel.openat2

    def openat2(dirfd: int, asked: str, flags: int, resolve: int = 0, mode: int = 0) -> int:
        if asked == path:
            raise OSError(err, "injected")
        return real(dirfd, asked, flags, resolve, mode)

    mocker.patch.object(kernel, "openat2", side_effect=openat2)


def test_a_failing_open_rolls_back(seed: list[Mount], mocker: MockerFixture) -> None:
    _fail_openat2_of(mocker, "sys/fs/cgroup/cgmanager/state", errno.EBUSY)
    report = execute(seed, SEED_TARGETS, seed_plan())
    assert not report["ok"] and report["rolled_back"]
    assert report["failed_step"]["index"] == 3 and report["failed_step"]["op"] == "open"
    assert report["failed_step"]["errno"] == errno.EBUSY
    assert report["tree_identical"] and report["yard_empty"] and report["unrestored"] == []
    assert report["steps_run"] == 3


def _fail_moves_out_of_the_yard(mocker: MockerFixture, times: int) -> None:
    """move_mount raises EBUSY for a mount sitting in the yard slot, `times` times."""
    real = kernel.move_mount
    left = [times]

    def move_mount(from_dfd: int, from_path: str, to_dfd: int, to_path: str, flags: int) -> None:
        in_yard = from_dfd >= 0 and kernel.readlink_proc(f"self/fd/{from_dfd}") == f"{YARD}/0"
        if left[0] and in_yard and not flags & kernel.MOVE_MOUNT_SET_GROUP:
            left[0] -= 1
            raise OSError(errno.EBUSY, "injected")
        real(from_dfd, from_path, to_dfd, to_path, flags)

    mocker.patch.object(kernel, "move_mount", side_effect=move_mount)


def test_a_failing_move_back_is_retried_by_the_rollback(seed: list[Mount], mocker: MockerFixture) -> None:
    _fail_moves_out_of_the_yard(mocker, times=1)
    steps = seed_plan()
    report = execute(seed, SEED_TARGETS, steps)
    assert not report["ok"] and report["rolled_back"]
    assert report["failed_step"]["op"] == "move-back" and report["failed_step"]["index"] == len(steps) - 2
    assert report["failed_step"]["errno"] == errno.EBUSY
    assert report["tree_identical"] and report["yard_empty"] and report["unrestored"] == []


def test_a_rollback_that_cannot_restore_says_where_the_mount_is(seed: list[Mount], mocker: MockerFixture) -> None:
    _fail_moves_out_of_the_yard(mocker, times=2)
    report = execute(seed, SEED_TARGETS, seed_plan())
    assert not report["ok"] and not report["tree_identical"]
    [lost] = [u for u in report["unrestored"] if u["what"] == "aside"]
    assert lost["mount"] == 128 and lost["should_be_at"] == "/sys/fs/cgroup"
    assert lost["now_at"] == f"{YARD}/0" and lost["errno"] == errno.EBUSY


def test_unprivileged_through_a_user_namespace(seed: list[Mount], seed_file_mounts: frozenset[int]) -> None:
    """As nobody (65534): the executor makes its own user namespace and still verifies everything."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            # Nobody cannot read modules under /root (pyenv): open sock_diag, which imports
            # lazily, while still root; the executor's namespace child inherits it.
            kernel.warm_unix_socket_diag()
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            # setuid cleared 'dumpable', which would leave /proc/self/uid_map owned by root.
            import ctypes

            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            out: object = (
                os.geteuid(),
                execute(
                    seed,
                    SEED_TARGETS,
                    seed_plan(),
                    file_mounts=seed_file_mounts,
                    user_ns=True,
                ),
            )
        except BaseException as exc:  # noqa: BLE001 - back to the test
            out = repr(exc)
            code = 1
        finally:
            os.write(wfd, pickle.dumps(out))
            os._exit(code)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 1 << 16):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    out = pickle.loads(data)
    assert isinstance(out, tuple), out
    uid, report = out
    assert uid == 65534
    assert report["ok"], report
    assert_all_targets_verified(report, SEED_TARGETS)
    assert report["tree_identical"] and report["yard_empty"]


PROPAGATION_TARGETS = [
    Target("report", "open", 20, "/srv/data/report.txt"),
    Target("sock", "bind", 22, "/srv/data/cache/sock"),
]


def propagation_plan(with_keeper: bool = True) -> list[dict[str, Any]]:
    keep = [
        {"op": "keeper-bind", "mount": 20, "from": "/srv", "to": f"{YARD}/k20"},
        {"op": "make-private", "mount": 20, "path": "/srv"},
    ]
    rejoin = [
        {"op": "rejoin-group", "mount": 20, "from": f"{YARD}/k20", "to": "/srv"},
        {"op": "keeper-remove", "mount": 20, "path": f"{YARD}/k20"},
    ]
    return [
        {"op": "yard-create", "path": YARD},
        *(keep if with_keeper else []),
        {"op": "move-aside", "mount": 24, "from": "/srv/data", "to": f"{YARD}/0"},
        {"op": "open", "target": "report", "mount": 20, "path": "/srv/data/report.txt"},
        {"op": "bind", "target": "sock", "mount": 22, "path": "/srv/data/cache/sock"},
        {"op": "move-back", "mount": 24, "from": f"{YARD}/0", "to": "/srv/data"},
        *(rejoin if with_keeper else []),
        {"op": "yard-remove", "path": YARD},
    ]


def _new_mount_spreads(replica: Any, *_: object) -> dict[str, list[object]]:
    """Mount a tmpfs under the shared parent /srv: under which mounts do copies appear, and how related?"""
    os.mkdir("/srv/new")
    fd = kernel.new_tmpfs()
    kernel.attach(fd, kernel.AT_FDCWD, "/srv/new")
    os.close(fd)
    new = [m for m in replica.live_table() if m.mountpoint.endswith("/new")]
    [first] = [m for m in new if m.mountpoint == "/srv/new"]
    return {
        "peers_under": sorted(
            replica.key(m.parent_id) for m in new if m.shared is not None and m.shared == first.shared
        ),
        "slaves_under": sorted(
            replica.key(m.parent_id) for m in new if m.master is not None and m.master == first.shared
        ),
    }


def test_propagation_preserving_move_aside(propagation_dump: list[Mount]) -> None:
    report = kernel.run_in_namespace(
        execute_here,
        propagation_dump,
        PROPAGATION_TARGETS,
        propagation_plan(),
        (),
        None,
        _new_mount_spreads,
    )
    assert report["ok"], report
    assert_all_targets_verified(report, PROPAGATION_TARGETS)
    assert report["tree_identical"] and report["yard_empty"]
    # After the restore, a new mount under 20 still reaches its peer 21 and its slave 26,
    # exactly as it does in a replica nobody touched.
    untouched = kernel.run_in_namespace(lambda: _new_mount_spreads(build_replica(propagation_dump)))
    assert report["then"] == untouched == {"peers_under": [20, 21], "slaves_under": [26]}


def test_moving_from_under_a_shared_parent_without_a_keeper_fails_and_rolls_back(
    propagation_dump: list[Mount],
) -> None:
    report = execute(propagation_dump, PROPAGATION_TARGETS, propagation_plan(with_keeper=False))
    assert not report["ok"] and report["rolled_back"]
    # fs/namespace.c: moving a mount residing under a shared mount is unsupported.
    assert report["failed_step"]["op"] == "move-aside" and report["failed_step"]["errno"] == errno.EINVAL
    assert report["tree_identical"] and report["yard_empty"]


def test_rollback_after_make_private_restores_the_peer_group(
    propagation_dump: list[Mount], mocker: MockerFixture
) -> None:
    _fail_openat2_of(mocker, "srv/data/report.txt", errno.EACCES)
    report = execute(propagation_dump, PROPAGATION_TARGETS, propagation_plan())
    assert report["rolled_back"] and report["failed_step"]["op"] == "open"
    assert report["failed_step"]["errno"] == errno.EACCES
    # 24 went back, 20 rejoined group 5 through the keeper, the keeper and the yard are gone.
    assert report["tree_identical"], report["tree_diff"]
    assert report["yard_empty"] and report["unrestored"] == []


def test_dropping_the_rejoin_shows_as_a_changed_tree(
    propagation_dump: list[Mount],
) -> None:
    steps = [s for s in propagation_plan() if s["op"] != "rejoin-group"]
    report = execute(propagation_dump, PROPAGATION_TARGETS, steps)
    assert not report["ok"] and report["failed_step"] is None
    assert not report["tree_identical"]
    assert any(line.startswith("peer_groups") for line in report["tree_diff"]), report["tree_diff"]


def test_plan_paths_may_not_climb(seed: list[Mount]) -> None:
    steps = [
        {
            "op": "move-aside",
            "mount": 128,
            "from": "/sys/fs/../fs/cgroup",
            "to": f"{YARD}/0",
        }
    ]
    report = execute(seed, [], steps)
    assert not report["ok"] and "'..'" in report["failed_step"]["reason"]
    assert report["tree_identical"]


STACKED_SHARED = """\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
10 1 0:50 / /x rw shared:3 - tmpfs a rw
11 1 0:50 / /peer rw shared:3 - tmpfs a rw
12 10 0:51 / /x rw shared:4 - tmpfs c rw
13 11 0:51 / /peer rw shared:4 - tmpfs c rw
"""


def test_a_shared_parent_under_its_own_stacked_cover_isnamed_by_handle() -> None:
    """/x reaches 12, stacked on the shared 10: keeper-bind and make-private of 10 cannot go by path."""
    dump = parse(STACKED_SHARED, "stacked-shared")
    targets = [Target("f", "open", 10, "/x/f.txt")]
    steps = [
        {"op": "yard-create", "path": YARD},
        {"op": "keeper-bind", "mount": 10, "from": "/x", "to": f"{YARD}/k10"},
        {"op": "make-private", "mount": 10, "path": "/x"},
        {"op": "move-aside", "mount": 12, "from": "/x", "to": f"{YARD}/0"},
        {"op": "open", "target": "f", "mount": 10, "path": "/x/f.txt"},
        {"op": "move-back", "mount": 12, "from": f"{YARD}/0", "to": "/x"},
        {"op": "rejoin-group", "mount": 10, "from": f"{YARD}/k10", "to": "/x"},
        {"op": "keeper-remove", "mount": 10, "path": f"{YARD}/k10"},
        {"op": "yard-remove", "path": YARD},
    ]
    report = execute(dump, targets, steps)
    assert report["ok"], report
    assert report["tree_identical"] and report["yard_empty"]
    # A move still has to name the topmost mount: 10 cannot be moved by /x.
    wrong = [{"op": "move-aside", "mount": 10, "from": "/x", "to": "/elsewhere"}]
    report = execute(dump, [], wrong)
    assert "names mount 12, the step says 10" in report["failed_step"]["reason"]


def test_a_file_mount_moves_aside_into_a_file_slot() -> None:
    """82 is a file bind stacked on the file bind 81; neither is declared: the targets imply it."""
    dump = parse(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "81 1 8:2 /resolv.conf /etc/resolv.conf rw - ext4 /dev/sdb1 rw\n"
        "82 81 8:2 /hook/resolv.conf /etc/resolv.conf rw - ext4 /dev/sdb1 rw\n",
        "file-binds",
    )
    targets = [Target("conf", "open", 81, "/etc/resolv.conf")]
    steps = [
        {"op": "yard-create", "path": YARD},
        {"op": "move-aside", "mount": 82, "from": "/etc/resolv.conf", "to": f"{YARD}/0"},
        {"op": "open", "target": "conf", "mount": 81, "path": "/etc/resolv.conf"},
        {"op": "move-back", "mount": 82, "from": f"{YARD}/0", "to": "/etc/resolv.conf"},
        {"op": "yard-remove", "path": YARD},
    ]
    report = execute(dump, targets, steps)
    assert report["ok"], report
    assert_all_targets_verified(report, targets)


def test_the_run_report_escapes_control_characters_from_the_dump(tmp_path) -> None:
    """`run` on a dump whose paths hold OSC and CSI sequences: reached for real, printed escaped."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_hostile_text import DUMP, assert_printable

    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(DUMP))
    done = subprocess.run([sys.executable, "-m", "planner", "run", str(dump)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert_printable(done.stdout)
    assert "target t\\x1b[2J1 (open): ok, the file the replica made in mount 21" in done.stdout
    # a failing step's reason names the path too
    plan = json.loads(subprocess.run([sys.executable, "-m", "planner", "plan", str(dump), "--format", "json"],
                                     cwd=REPO, capture_output=True, text=True, check=True).stdout)
    plan["steps"].insert(2, {"op": "open", "target": "t\x1b[2J1", "mount": 21, "path": "/srv/\x1b]0;owned\x07/f\x1b[2J"})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-m", "planner", "run", str(dump), "--plan", str(tmp_path / "plan.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert_printable(done.stdout + done.stderr)


def test_two_binds_onto_one_place_stack_and_both_verify(propagation_dump: list[Mount]) -> None:
    """The second bind onto /opt/x lands on the first, as the kernel attaches on top; both sit
    where the dump's /opt/x leads (the random plans of test_random_plans found this refused)."""
    targets = [Target("one", "mount-source", 1, "/mnt", "/opt/x"), Target("two", "mount-source", 1, "/opt/src", "/opt/x")]
    steps = [{"op": t.kind, "target": t.id, "mount": t.mount, "path": t.path, "to": t.to} for t in targets]
    report = execute(propagation_dump, targets, steps)
    assert report["ok"], report
    assert_all_targets_verified(report, targets)


def test_a_bind_onto_a_shared_mount_is_copied_to_its_peers(propagation_dump: list[Mount]) -> None:
    """Why check refuses a mount-source whose `to` lies in a shared mount: the kernel copies the new
    bind into every peer and slave, mounts nobody asked for."""
    targets = [Target("src", "mount-source", 1, "/mnt", "/srv/data/x")]
    steps = [{"op": "mount-source", "target": "src", "mount": 1, "path": "/mnt", "to": "/srv/data/x"}]

    def copies(replica: Any, *_: object) -> list[object]:
        return sorted(replica.key(m.parent_id) for m in replica.live_table() if m.mountpoint.endswith("/data/x"))

    report = kernel.run_in_namespace(execute_here, propagation_dump, targets, steps, (), None, copies)
    assert report["then"] == [24, 25, 28]  # the bind in 24 (shared:7), copies in its peer 25 and its slave 28
    assert not report["ok"] and any("live:" in line for line in report["tree_diff"])
