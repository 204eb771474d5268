"""Target steps through the yard, and mount-sources bound into a parked cover, run for real."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings

from planner import mountinfo
from planner.analysis import analyze
from planner.check import check_plan
from planner.errors import PlanRefused, ReplicaError
from planner.executor import execute
from planner.plan import make_plan
from planner.targets import Target
from planner.tree import MountTree
from tests import test_check
from tests.test_properties import Spec, cases, through_the_yard

pytestmark = pytest.mark.namespace

RIDER_TEXT = """\
1 0 8:1 / / rw - ext4 /dev/vda rw
2 1 0:40 / /a rw - tmpfs a rw
3 2 0:41 / /a rw - tmpfs c rw
4 3 0:42 / /a/d rw - tmpfs d rw
"""


def assert_verified(report: dict[str, Any], targets: list[Target]) -> None:
    assert report["ok"] and report["failed_step"] is None, report
    assert report["tree_identical"] and report["yard_empty"]
    got = {t["id"]: t for t in report["targets"]}
    for target in targets:
        assert (got[target.id]["got_mount"], got[target.id]["inode_ok"], got[target.id]["ok"]) == (target.mount, True, True)


def test_open_chdir_mmap_and_mount_source_through_the_yard() -> None:
    mounts = mountinfo.parse(RIDER_TEXT)
    targets = test_check.RIDER_TARGETS
    steps = test_check.rider_plan()
    assert check_plan(MountTree(mounts), targets, steps) == []
    report = execute(mounts, targets, [s.as_json() for s in steps])
    assert_verified(report, targets)
    # The kernel's answers in the yard: the fds and the cwd are in mount 4, at the dumped inode.
    assert [t["step"] for t in report["targets"] if t["id"] in ("t2", "t3", "t4")] == [4, 5, 6]
    assert report["created_mounts"] == [{"target": "t5", "to": "/mnt", "root": "/src", "parent": 1}]


def test_a_mount_source_bound_into_the_parked_cover_comes_back_with_it() -> None:
    mounts = mountinfo.parse(RIDER_TEXT)
    targets = test_check.COVERED_TO
    plan = make_plan(MountTree(mounts), targets)
    assert plan.steps[2].to == "/.overmount-yard/0/dest"
    report = execute(mounts, targets, [s.as_json() for s in plan.steps])
    assert_verified(report, targets)
    # Where the kernel has the new mount after the plan: on 3 (back on /a), at /a/dest.
    assert report["created_mounts"] == [{"target": "t1", "to": "/a/dest", "root": "/src", "parent": 3}]


def replicable(specs: list[Spec], targets: list[Target]) -> bool:
    """No legacy side-by-side siblings: no kernel since 4.11 builds them (see test_kernel_rules);
    no file opened at a mount's own mount point: the replica would have to guess which mounts of
    the stack there are files (a dump says so in file_mounts)."""
    places = [(s.parent_id, s.mountpoint) for s in specs]
    homes = {s.mount_id: s.mountpoint for s in specs}
    at_mountpoint = any(t.kind in ("open", "mmap") and t.path == homes[t.mount] for t in targets)
    return len(places) == len(set(places)) and not at_mountpoint


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases(shadows=False))
def test_random_plans_rewritten_through_the_yard_verify_in_a_namespace(case: tuple[list[Spec], str, list[Target]]) -> None:
    specs, text, targets = case
    tree = MountTree(mountinfo.parse(text, "<generated>"), "<generated>")
    analyze(tree, targets)
    try:
        plan = make_plan(tree, targets)
    except PlanRefused:
        reject()
    steps, moved = through_the_yard(tree, targets, list(plan.steps))
    if not moved or not replicable(specs, targets):
        reject()
    assert check_plan(tree, targets, steps) == []
    try:
        report = execute(tree.mounts, targets, [s.as_json() for s in steps])
    except ReplicaError:  # e.g. one path a target's file and another's directory: nothing to build
        reject()
    assert_verified(report, targets)
