"""build_replica against the real kernel: the built tree must be the dumped one."""

from __future__ import annotations

import errno
import os

import pytest

from planner import kernel, msflags
from planner.errors import ReplicaError
from planner.mountinfo import Mount, parse
from planner.replica import build_replica, check_replicable
from planner.targets import Target

pytestmark = pytest.mark.namespace


def _build_and_look(
    mounts: list[Mount],
    targets: tuple[Target, ...] = (),
    file_mounts: frozenset[int] = frozenset(),
) -> dict[str, object]:
    def inside() -> dict[str, object]:
        replica = build_replica(mounts, targets, file_mounts=file_mounts)
        table = replica.live_table()
        out: dict[str, object] = {
            "diff": replica.expected.diff(replica.snapshot()),
            "visible_mounts": len(table),
            "unknown": [m.mount_id for m in table if m.mount_id not in replica.live_to_dump],
            "stacked": {
                replica.key(m.mount_id): replica.key(m.parent_id) for m in table if m.mountpoint == "/sys/fs/cgroup"
            },
            "dev_null_is_file": os.path.isfile("/dev/null") if os.path.exists("/dev") else None,
        }
        for t in targets:
            try:
                os.stat(t.path, follow_symlinks=False)
                out[t.id] = "reachable"
            except OSError as exc:
                out[t.id] = errno.errorcode[exc.errno]
        return out

    return kernel.run_in_namespace(inside)


def test_seed_replica_equals_the_dump(seed: list[Mount], seed_file_mounts: frozenset[int]) -> None:
    targets = [
        Target("sock", "bind", 123, "/sys/fs/cgroup/cgmanager/sock"),
        Target("notes", "open", 122, "/sys/fs/cgroup/notes.txt"),
    ]
    out = _build_and_look(seed, tuple(targets), seed_file_mounts)
    assert out["diff"] == []
    # Only the replica is visible from inside: no superblock, scratch or anchor mount.
    assert out["visible_mounts"] == len(seed) and out["unknown"] == []
    # 128 stacks on 122 (parent and child on one mountpoint).
    assert out["stacked"] == {122: 108, 128: 122}
    assert out["dev_null_is_file"] is True
    # Objects made in the hidden mounts cannot be reached by path: 128 covers 122 and 123.
    assert out["notes"] == "ENOENT"
    assert out["sock"] == "ENOENT"


def test_propagation_relations_are_reproduced(propagation_dump: list[Mount]) -> None:
    def inside() -> tuple[list[str], object]:
        replica = build_replica(propagation_dump)
        return replica.expected.diff(replica.snapshot()), replica.snapshot().as_json()

    diff, shape = kernel.run_in_namespace(inside)
    assert diff == []
    assert shape["peer_groups"] == [[20, 21], [22, 23], [24, 25]]  # type: ignore[index]
    assert {"master": [20, 21], "slaves": [26]} in shape["slaves"]  # type: ignore[index]


def test_master_outside_the_dump_and_unbindable() -> None:
    mounts = parse(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:60 / /a rw master:99 - tmpfs a rw\n"
        "3 1 0:60 /sub /b rw master:99 - tmpfs a rw\n"
        "4 1 0:61 / /u rw unbindable - tmpfs u rw\n"
        "5 1 0:62 / /s rw shared:4 master:98 - tmpfs s rw\n"
    )

    def inside() -> list[str]:
        replica = build_replica(mounts)
        return replica.expected.diff(replica.snapshot())

    assert kernel.run_in_namespace(inside) == []


def test_legacy_shadow_siblings_are_refused() -> None:
    mounts = parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:60 / /a rw - tmpfs a rw\n3 1 0:61 / /a rw - tmpfs b rw\n")
    with pytest.raises(ReplicaError, match="legacy shadow"):
        kernel.run_in_namespace(build_replica, mounts)


def test_a_forest_is_built_on_a_stand_in_root() -> None:
    """Two tops whose parent 1 is not listed (a chrooted process's table): they hang from a private
    tmpfs standing in for mount 1, and the built tree equals the dump, stand-in included."""
    mounts = parse("2 1 0:60 / /a rw - tmpfs a rw\n3 1 0:61 / /b rw shared:7 - tmpfs b rw\n4 3 0:62 / /b/c rw - tmpfs c rw\n")

    def inside() -> tuple[list[str], dict[str, object], list[str]]:
        replica = build_replica(mounts)
        table = replica.live_table()
        return replica.expected.diff(replica.snapshot()), replica.snapshot().as_json(), [m.mountpoint for m in table]

    diff, shape, mountpoints = kernel.run_in_namespace(inside)
    assert diff == []
    assert shape["mounts"]["2"]["parent"] == 0 and shape["mounts"]["3"]["parent"] == 0  # type: ignore[index]
    assert sorted(mountpoints) == ["/", "/a", "/b", "/b/c"]


def _slave_listed_before_its_master_group(scratch: str) -> str:
    """The kernel's own table for: group A shared; B a slave of A and shared itself; C a slave of
    B's group, created (so listed) before B. C's bind comes first; SET_GROUP joins it later."""
    kernel.mount("scratch", scratch, "tmpfs", 0)
    kernel.make_propagation(scratch, kernel.MS_PRIVATE)
    for name in ("a", "c", "b"):
        os.mkdir(f"{scratch}/{name}")
    kernel.mount("prop", f"{scratch}/a", "tmpfs", 0)
    kernel.mount(f"{scratch}/a", f"{scratch}/c", None, msflags.MS_BIND)  # C first: the lower id
    kernel.mount(f"{scratch}/a", f"{scratch}/b", None, msflags.MS_BIND)
    kernel.make_propagation(f"{scratch}/a", kernel.MS_SHARED)
    set_group = kernel.MOVE_MOUNT_SET_GROUP
    kernel.move_mount(kernel.AT_FDCWD, f"{scratch}/a", kernel.AT_FDCWD, f"{scratch}/b", set_group)
    kernel.make_propagation(f"{scratch}/b", kernel.MS_SLAVE)
    kernel.make_propagation(f"{scratch}/b", kernel.MS_SHARED)  # shared:B master:A
    kernel.move_mount(kernel.AT_FDCWD, f"{scratch}/b", kernel.AT_FDCWD, f"{scratch}/c", set_group)
    kernel.make_propagation(f"{scratch}/c", kernel.MS_SLAVE)  # master:B
    return kernel.own_mountinfo()


def test_a_slave_listed_before_its_master_group_that_is_itself_a_slave(tmp_path) -> None:
    table = parse(kernel.run_in_namespace(_slave_listed_before_its_master_group, str(tmp_path)))
    ours = [m for m in table if m.mountpoint.startswith(f"{tmp_path}/")]
    a, c, b = ours  # as the kernel lists them
    assert (c.shared, c.master) == (None, b.shared) and (b.shared, b.master) == (b.shared, a.shared)
    assert b.shared is not None and a.shared is not None

    def inside() -> list[str]:
        replica = build_replica(table)  # was "peers of group B disagree on their master"
        return replica.expected.diff(replica.snapshot())

    assert kernel.run_in_namespace(inside) == []


def test_run_takes_a_stack_of_a_thousand_mounts_on_one_path() -> None:
    """Was a RecursionError (tree building recursed once per stacked mount)."""
    from planner.executor import execute
    from planner.plan import make_plan
    from planner.tree import MountTree
    from tests.test_deep_input import stacked

    mounts = parse(stacked(1000))
    targets = [Target("t1", "open", 2, "/srv/f")]
    plan = make_plan(MountTree(mounts), targets)
    report = execute(mounts, targets, list(plan.steps))
    assert report["ok"] and report["steps_run"] == 2003, report["failed_step"]


def test_run_takes_fifty_targets_two_thousand_directories_deep() -> None:
    """The review's 203 KB dump (53 s, 257 MB): each directory is now made once, by name, from its parent."""
    from planner.executor import execute
    from planner.plan import make_plan
    from planner.tree import MountTree

    mounts = parse(ROOT_AND_COVERED_SRV)
    targets = [Target(f"t{k}", "open", 2, f"/srv/b{k}" + "/a" * 2000 + "/f") for k in range(50)]
    plan = make_plan(MountTree(mounts), targets)
    report = execute(mounts, targets, list(plan.steps))
    assert report["ok"], report["failed_step"]
    assert all(t["ok"] for t in report["targets"])


ROOT_AND_COVERED_SRV = (
    "1 0 8:1 / / rw - ext4 /dev/vda rw\n2 1 0:20 / /srv rw - tmpfs srv rw\n3 2 0:21 / /srv rw - tmpfs cover rw\n"
)


def test_a_file_target_on_a_superblock_root_is_refused_before_any_syscall() -> None:
    # open(2) of /cgroup wants a file, but mount 25 is the root of its superblock, a directory
    # (before: the replica got as far as move_mount, which said EINVAL).
    dump = parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n25 1 0:43 / /cgroup rw - tmpfs t rw\n", "root-file")
    with pytest.raises(ReplicaError, match="must be a file and a dir"):
        check_replicable(dump, [Target("t1", "open", 25, "/cgroup")])
