"""What check knows about the yard: only what yard-create and earlier steps made exists in it, and
some filesystems cannot hold one. tests/namespace/test_yard_places.py shows the kernel agrees."""

import pytest

from planner.check import check_plan
from planner.errors import PlanRefused
from planner.plan import make_plan
from planner.steps import Step
from tests.helpers import SEED, targets_of, tree_of

YARD = "/.overmount-yard"
TARGETS = targets_of(("open", 122, "/sys/fs/cgroup/notes"))
PROC = "103 71 0:39 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw"


def bracket(yard: str = YARD, aside: str = YARD + "/0", back_from: str = YARD + "/0") -> list[Step]:
    return [
        Step("yard-create", path=yard),
        Step("move-aside", mount=128, src="/sys/fs/cgroup", to=aside),
        Step("open", mount=122, path="/sys/fs/cgroup/notes", target="t1"),
        Step("move-back", mount=128, src=back_from, to="/sys/fs/cgroup"),
        Step("yard-remove", path=yard),
    ]


def test_the_bracket_passes() -> None:
    assert check_plan(tree_of(*SEED), TARGETS, bracket()) == []


def test_a_move_into_a_slot_no_step_made_is_refused() -> None:
    steps = bracket()
    # 128 goes from slot 0 into slot 1, which nothing made: the kernel says ENOENT.
    steps.insert(2, Step("move-back", mount=128, src=YARD + "/0", to=YARD + "/1"))
    assert check_plan(tree_of(*SEED), TARGETS, steps) == [
        (f"step 2 (move-back 128): {YARD}/1 does not exist: nothing made it in the yard (yard-create makes an empty "
        "tmpfs; a move-aside or keeper-bind makes its own slot)")]


def test_a_move_aside_makes_its_slot_but_not_the_slot_s_parent() -> None:
    problems = check_plan(tree_of(*SEED), TARGETS, bracket(aside=YARD + "/0/inner", back_from=YARD + "/0/inner"))
    assert problems[0].startswith(f"step 1 (move-aside 128): {YARD}/0/inner does not exist")


def test_a_slot_made_by_an_earlier_step_can_be_used_again() -> None:
    steps = bracket()
    steps[3:3] = [Step("move-aside", mount=128, src="/sys/fs/cgroup", to=YARD + "/0")]
    steps.insert(3, Step("move-back", mount=128, src=YARD + "/0", to="/sys/fs/cgroup"))
    assert check_plan(tree_of(*SEED), TARGETS, steps) == []


def test_a_yard_on_proc_is_refused_by_check_and_by_the_planner() -> None:
    tree = tree_of(*SEED, PROC)
    problems = check_plan(tree, TARGETS, bracket(yard="/proc/yard", aside="/proc/yard/0", back_from="/proc/yard/0"))
    assert problems == [("step 0 (yard-create /proc/yard): yard /proc/yard would lie in mount 103 (proc) cannot hold "
                        "one: its directories are the kernel's own, no directory can be made there; choose --yard "
                        "on a writable filesystem (a tmpfs)")]
    with pytest.raises(PlanRefused, match="mount 103 \\(proc\\) cannot hold one"):
        make_plan(tree, TARGETS, yard="/proc/yard")


@pytest.mark.parametrize("fstype, reason", [("sysfs", "the kernel's own"), ("cgroup2", "a new cgroup"),
                                            ("configfs", "a new configuration item"), ("squashfs", "read-only")])
def test_other_filesystems_that_cannot_hold_a_yard(fstype: str, reason: str) -> None:
    tree = tree_of(*SEED, f"200 71 0:99 / /special rw - {fstype} x rw")
    with pytest.raises(PlanRefused, match=reason):
        make_plan(tree, TARGETS, yard="/special/yard")


def test_a_read_only_root_puts_the_default_yard_in_a_writable_tmpfs() -> None:
    """ChromeOS and Android mount / read-only: /.overmount-yard cannot be made there."""
    seed = ("71 72 253:1 / / ro,relatime - ext4 /dev/vda ro",
            "300 71 0:77 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755", *SEED[1:])
    tree = tree_of(*seed)
    plan = make_plan(tree, TARGETS)
    assert plan.yard == "/run/.overmount-yard"
    assert check_plan(tree, TARGETS, list(plan.steps)) == []
    with pytest.raises(PlanRefused, match="mount 71 \\(ext4\\) cannot hold one: it is mounted read-only"):
        make_plan(tree, TARGETS, yard=YARD)
