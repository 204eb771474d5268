"""build_replica against the real kernel: the built tree must be the dumped one."""

from __future__ import annotations

import errno
import os

import pytest

from planner import kernel
from planner.mountinfo import Mount, parse
from planner.replica import ReplicaError, build_replica
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
