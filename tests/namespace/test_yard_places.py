"""The kernel agrees with check about the yard: a move into a slot nothing made fails, and the
filesystems check refuses to hold a yard refuse the yard's directory."""

from __future__ import annotations

import errno
import os

import pytest

from planner import kernel
from planner.check import NO_YARD
from planner.executor import execute
from planner.mountinfo import Mount
from planner.targets import Target

pytestmark = pytest.mark.namespace

YARD = "/.overmount-yard"


def test_a_move_into_a_slot_nothing_made_fails_in_the_kernel(seed: list[Mount], seed_file_mounts: frozenset[int]) -> None:
    steps = [
        {"op": "yard-create", "path": YARD},
        {"op": "move-aside", "mount": 128, "from": "/sys/fs/cgroup", "to": f"{YARD}/0"},
        {"op": "move-back", "mount": 128, "from": f"{YARD}/0", "to": f"{YARD}/1"},  # check refuses this step
    ]
    report = execute(seed, [Target("t1", "open", 122, "/sys/fs/cgroup/notes")], steps, file_mounts=seed_file_mounts)
    failed = report["failed_step"]
    assert (failed["index"], failed["errno"]) == (2, errno.ENOENT), failed
    assert report["rolled_back"] and report["tree_identical"] and report["yard_empty"]


def _make_a_yard_directory_in(scratch: str) -> dict[str, str]:
    """In a namespace child: a fresh mount of each filesystem, and mkdir of a yard in it."""
    kernel.mount("scratch", scratch, "tmpfs", 0)
    kernel.make_propagation(scratch, kernel.MS_PRIVATE)
    got = {}
    for fstype, data in (("proc", None), ("sysfs", None), ("devpts", "newinstance"), ("mqueue", None),
                         ("tmpfs (read-only)", "mode=0755")):
        where = f"{scratch}/{fstype.split()[0]}"
        os.mkdir(where)
        kernel.mount(fstype.split()[0], where, fstype.split()[0], 0x1 if "read-only" in fstype else 0, data)  # MS_RDONLY
        try:
            os.mkdir(f"{where}/.overmount-yard")
            got[fstype] = "made"
        except OSError as exc:
            got[fstype] = errno.errorcode[exc.errno]
    return got


def test_the_kernel_refuses_a_yard_directory_where_check_does(tmp_path) -> None:
    got = kernel.run_in_namespace(_make_a_yard_directory_in, str(tmp_path))
    assert set(got) - {"tmpfs (read-only)"} <= set(NO_YARD)
    assert got == {"proc": "ENOENT", "sysfs": "EPERM", "devpts": "EPERM", "mqueue": "EPERM",
                   "tmpfs (read-only)": "EROFS"}
