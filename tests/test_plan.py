"""The planner: order, batching, splits, propagation brackets and refusals."""

import pytest

from planner.check import check_plan
from planner.errors import PlanRefused
from planner.plan import make_plan
from planner.targets import Target
from tests.helpers import SEED, targets_of, tree_of

ROOT = "1 0 8:1 / / rw - ext4 /dev/vda rw"


def ops(plan) -> list[tuple]:
    return [(s.op, s.mount, s.src or s.path, s.to) for s in plan.steps]


def test_unhidden_target_gets_its_op_and_no_moves() -> None:
    tree = tree_of(*SEED)
    plan = make_plan(tree, targets_of(("open", 71, "/etc/hosts")))
    assert ops(plan) == [("open", 71, "/etc/hosts", None)]
    assert (plan.moves, plan.lower_bound, plan.naive_moves) == (0, 0, 0)


def test_stack_leaves_top_down_and_returns_bottom_up() -> None:
    tree = tree_of(ROOT, "5 1 0:43 / /a rw - tmpfs d rw", "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a rw - tmpfs b rw",
                   "4 3 0:42 / /a rw - tmpfs c rw")
    # 5 is a legacy shadow sibling of 2 on /a, listed first: on top of 2's whole stack.
    plan = make_plan(tree, targets_of(("open", 2, "/a/f")))
    assert [(op, m) for op, m, *_ in ops(plan) if op.startswith("move")] == [
        ("move-aside", 5), ("move-aside", 4), ("move-aside", 3), ("move-back", 3), ("move-back", 4), ("move-back", 5)]
    assert plan.moves == plan.lower_bound == 3


def test_covers_nearer_the_root_go_first() -> None:
    # 5 lies on top of 2 as its side-by-side sibling on /a (listed first), 4 covers 3 inside 2.
    tree = tree_of(ROOT, "5 1 0:43 / /a rw - tmpfs top rw", "2 1 0:40 / /a rw - tmpfs a rw",
                   "3 2 0:41 / /a/b/c rw - tmpfs c rw", "4 2 0:42 / /a/b rw - tmpfs b2 rw")
    plan = make_plan(tree, targets_of(("open", 3, "/a/b/c/f")))
    moves = [(m, path) for op, m, path, _ in ops(plan) if op == "move-aside"]
    assert moves == [(5, "/a"), (4, "/a/b")]


def test_shared_covers_leave_once_for_many_targets() -> None:
    tree = tree_of(*SEED)
    targets = targets_of(*[("open", 123, f"/sys/fs/cgroup/cgmanager/f{i}") for i in range(20)])
    plan = make_plan(tree, targets)
    assert (plan.moves, plan.lower_bound, plan.naive_moves) == (1, 1, 20)


def test_a_target_inside_a_moved_subtree_gets_its_own_bracket() -> None:
    # t1 in 2 needs cover 3 (its side-by-side sibling, listed first) moved; t2 lives in 4, a child
    # of 3, and needs 5 moved.
    tree = tree_of(ROOT, "3 1 0:41 / /a rw - tmpfs c rw", "2 1 0:40 / /a rw - tmpfs a rw",
                   "4 3 0:42 / /a/d rw - tmpfs d rw", "5 4 0:43 / /a/d rw - tmpfs e rw")
    targets = targets_of(("open", 2, "/a/f"), ("open", 4, "/a/d/g"))
    plan = make_plan(tree, targets)
    assert check_plan(tree, targets, list(plan.steps)) == []
    assert plan.moves == plan.lower_bound == 2
    first_op = next(i for i, s in enumerate(plan.steps) if s.target)
    # t2 runs while 3 is in place; 5 goes back or stays out, but 3 moves only after t2.
    order = [s.target or f"{s.op}:{s.mount}" for s in plan.steps]
    assert order.index("t2") < order.index("move-aside:3") < order.index("t1")
    assert first_op > 0


def test_a_cover_whose_parent_is_shared_is_bracketed_by_a_keeper() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw shared:5 - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw",
                   "6 1 0:40 / /peer rw shared:5 - tmpfs a rw")
    targets = targets_of(("open", 2, "/a/b/f"))
    plan = make_plan(tree, targets)
    assert [s.op for s in plan.steps] == [
        "yard-create", "keeper-bind", "make-private", "move-aside", "open", "move-back", "rejoin-group", "keeper-remove", "yard-remove"]
    assert ops(plan)[1] == ("keeper-bind", 2, "/a", "/.overmount-yard/0")
    assert ops(plan)[6] == ("rejoin-group", 2, "/.overmount-yard/0", "/a")
    assert check_plan(tree, targets, list(plan.steps)) == []


def test_shared_parent_on_an_old_kernel_is_refused() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw shared:5 - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")
    with pytest.raises(PlanRefused, match=r"parent 2 is shared; .*MOVE_MOUNT_SET_GROUP \(Linux 5.15\+\), planning for 5.10"):
        make_plan(tree, targets_of(("open", 2, "/a/b/f")), kernel=(5, 10))


def test_shared_parent_that_no_path_names_is_refused() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw shared:5 - tmpfs a rw", "3 2 0:41 / /a rw - tmpfs b rw")
    with pytest.raises(PlanRefused, match="parent 2 is shared, and no path names it"):
        make_plan(tree, targets_of(("open", 2, "/a/f")))


def test_slave_parent_needs_no_keeper() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw master:5 - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")
    plan = make_plan(tree, targets_of(("open", 2, "/a/b/f")))
    assert "keeper-bind" not in [s.op for s in plan.steps]


SHARED_ROOT = ("1 0 8:1 / / rw shared:1 - ext4 /dev/vda rw", "2 1 0:40 / /a rw shared:2 - tmpfs a rw",
               "3 1 0:41 / /x rw shared:3 - tmpfs b rw", "4 1 0:42 / /run rw master:9 - tmpfs run rw")


def test_a_yard_under_a_shared_mount_brackets_that_mount_first() -> None:
    """Every mount shared, as systemd leaves a host: the yard's own mount keeps its group through a
    keeper bound before it goes private, the yard is made private under it, and it rejoins last."""
    tree = tree_of(*SHARED_ROOT)
    targets = targets_of(("open", 1, "/x/f"))
    plan = make_plan(tree, targets)
    assert ops(plan) == [
        ("keeper-bind", 1, "/", "/.overmount-yard/0"),
        ("make-private", 1, "/", None),
        ("yard-create", None, "/.overmount-yard", None),
        # 3's parent is 1, already private: no second bracket.
        ("move-aside", 3, "/x", "/.overmount-yard/1"),
        ("open", 1, "/x/f", None),
        ("move-back", 3, "/.overmount-yard/1", "/x"),
        ("rejoin-group", 1, "/.overmount-yard/0", "/"),
        ("keeper-remove", 1, "/.overmount-yard/0", None),
        ("yard-remove", None, "/.overmount-yard", None),
    ]
    assert check_plan(tree, targets, list(plan.steps)) == []
    # A yard in a slave-only mount needs no bracket: a slave sends nothing to its master's group.
    plan = make_plan(tree, targets, yard="/run/yard")
    assert [(s.op, s.mount) for s in plan.steps][:3] == [("yard-create", None), ("keeper-bind", 1), ("make-private", 1)]
    assert check_plan(tree, targets, list(plan.steps)) == []


def test_a_shared_yard_mount_that_cannot_be_bracketed_is_refused_with_why() -> None:
    targets = targets_of(("open", 1, "/x/f"))
    with pytest.raises(PlanRefused, match=r"yard /.overmount-yard: the mount it lies in, 1, is shared; putting it back "
                                          r"in its peer group needs MOVE_MOUNT_SET_GROUP \(Linux 5.15\+\)"):
        make_plan(tree_of(*SHARED_ROOT), targets, kernel=(5, 10))
    unbindable = tree_of("1 0 8:1 / / rw shared:1 unbindable - ext4 /dev/vda rw", *SHARED_ROOT[1:])
    with pytest.raises(PlanRefused, match="the mount it lies in, 1, is shared and unbindable"):
        make_plan(unbindable, targets)


def test_check_refuses_a_yard_made_under_a_shared_mount_or_a_keeper_bound_too_late() -> None:
    tree = tree_of(*SHARED_ROOT)
    targets = targets_of(("open", 1, "/x/f"))
    plan = list(make_plan(tree, targets).steps)
    unbracketed = [s for s in plan if s.mount != 1]
    assert check_plan(tree, targets, unbracketed)[0].startswith(
        "step 0 (yard-create /.overmount-yard): yard /.overmount-yard lands in mount 1, which is shared: copies would propagate")
    late = [plan[1], plan[0], *plan[2:]]  # make-private before the keeper: the group is lost
    assert any("tree not restored: mount 1" in p for p in check_plan(tree, targets, late))


def test_a_yard_inside_a_mount_that_must_move_is_refused() -> None:
    # The kernel refuses to move a mount into its own subtree (ELOOP).
    tree = tree_of(ROOT, "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a rw - tmpfs b rw")
    with pytest.raises(PlanRefused, match="yard /a/yard would lie in mount 3, which must move for t1"):
        make_plan(tree, targets_of(("open", 2, "/a/f")), yard="/a/yard")


def test_a_legacy_sibling_that_came_back_is_reached_where_it_now_lies() -> None:
    # 2 and 3 are shadow siblings on /a (3 listed first, on top); t1 needs 3 out, t3 needs both out,
    # and 3 comes back stacked on 2, where t2 (in 3) must then be reached.
    tree = tree_of(ROOT, "3 1 0:41 / /a rw - tmpfs b rw", "2 1 0:40 / /a rw - tmpfs a rw")
    targets = targets_of(("open", 2, "/a/f"), ("open", 3, "/a/g"), ("open", 1, "/a/x"))
    plan = make_plan(tree, targets)
    assert check_plan(tree, targets, list(plan.steps)) == []
    assert plan.moves == plan.lower_bound == 2


def test_a_mountpoint_named_deleted_is_an_ordinary_path() -> None:
    # "\\040(deleted)" is part of the name (the kernel adds no suffix to mount points): 3 lies
    # on /mnt/a (deleted), beside 2 on /mnt/a, and covers nothing of 2.
    tree = tree_of(ROOT, "2 1 0:40 / /mnt/a rw - tmpfs a rw", "3 1 0:41 / /mnt/a\\040(deleted) rw - tmpfs b rw")
    plan = make_plan(tree, targets_of(("open", 2, "/mnt/a/f"), ("open", 3, "/mnt/a (deleted)/f")))
    assert plan.moves == 0


def test_custom_yard_is_used() -> None:
    plan = make_plan(tree_of(*SEED), targets_of(("open", 123, "/sys/fs/cgroup/cgmanager/f")), yard="/run/yard")
    assert plan.steps[0].path == "/run/yard" and plan.steps[1].to == "/run/yard/0"


def test_a_shared_unbindable_parent_gets_no_keeper() -> None:
    # The kernel never shows both, but a dump may: no keeper could be bound to hold the group.
    tree = tree_of(ROOT, "2 1 0:40 / /a rw shared:5 unbindable - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")
    with pytest.raises(PlanRefused, match="parent 2 is shared and unbindable: no keeper"):
        make_plan(tree, targets_of(("open", 2, "/a/b/f")))


def test_a_locked_cover_is_refused_and_check_rejects_moving_it() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")
    targets = targets_of(("open", 2, "/a/b/f"))
    with pytest.raises(PlanRefused, match="mount 3 is locked to its parent"):
        make_plan(tree, targets, locked=frozenset({3}))
    steps = list(make_plan(tree, targets).steps)
    assert check_plan(tree, targets, steps, frozenset({3})) == [
        "step 1 (move-aside 3): the kernel would refuse (EINVAL): mount 3 is locked to its parent (inherited into a user namespace)"]


def test_a_mount_source_from_an_unbindable_mount_is_refused() -> None:
    tree = tree_of(ROOT, "2 1 0:40 / /a rw unbindable - tmpfs a rw")
    with pytest.raises(PlanRefused, match=r"would refuse \(EINVAL\) to bind from mount 2: it is unbindable"):
        make_plan(tree, targets_of(("mount-source", 2, "/a/src", "/mnt")))


# 3 covers 2 (stacked on its root) and carries 4 at /a/d.
RIDER = (ROOT, "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a rw - tmpfs c rw", "4 3 0:42 / /a/d rw - tmpfs d rw")


def test_a_mount_source_whose_to_lies_in_the_cover_binds_onto_its_place_in_the_yard() -> None:
    tree = tree_of(*RIDER)
    targets = targets_of(("mount-source", 2, "/a/src", "/a/dest"))
    plan = make_plan(tree, targets)
    assert ops(plan) == [("yard-create", None, "/.overmount-yard", None), ("move-aside", 3, "/a", "/.overmount-yard/0"),
                         ("mount-source", 2, "/a/src", "/.overmount-yard/0/dest"),
                         ("move-back", 3, "/.overmount-yard/0", "/a"), ("yard-remove", None, "/.overmount-yard", None)]
    assert "the new mount is made at /.overmount-yard/0/dest and goes back with it" in plan.steps[2].why
    assert check_plan(tree, targets, list(plan.steps)) == []


def test_a_mount_source_onto_the_root_of_the_cover_it_needs_moved_is_refused() -> None:
    with pytest.raises(PlanRefused, match=r"target t1: /a is the root of mount 3, which is moved aside for the source; .*open_tree"):
        make_plan(tree_of(*RIDER), targets_of(("mount-source", 2, "/a/src", "/a")))


def test_a_target_whose_mount_rides_in_a_parked_cover_is_reached_in_the_yard() -> None:
    # t2's bind covers /a/e, t1's path: t1 goes first and moves 3 aside; t2's source in 4 rides in
    # 3 and its `to` lies in 3, so both are reached in the yard instead of moving 3 twice.
    tree = tree_of(*RIDER)
    targets = targets_of(("mount-source", 4, "/a/d/src", "/a/e"), ("chdir", 2, "/a/e"))
    plan = make_plan(tree, targets)
    assert [(s.op, s.path, s.to) for s in plan.steps if s.target] == [
        ("chdir", "/a/e", None), ("mount-source", "/.overmount-yard/0/d/src", "/.overmount-yard/0/e")]
    assert "mount 4 rides in mount 3, which is parked in the yard" in plan.steps[3].why
    assert plan.moves == plan.lower_bound == 1
    assert check_plan(tree, targets, list(plan.steps)) == []


def test_a_mount_source_waits_for_the_targets_on_its_to() -> None:
    # The new mount on /a/x would cover /a/x/f: t2 is opened first though listed second.
    tree = tree_of(ROOT, "2 1 0:40 / /a rw - tmpfs a rw", "3 1 0:41 / /b rw - tmpfs b rw", "4 3 0:42 / /b rw - tmpfs c rw")
    targets = targets_of(("mount-source", 3, "/b/src", "/a/x"), ("open", 2, "/a/x/f"))
    plan = make_plan(tree, targets)
    assert [s.target for s in plan.steps if s.target] == ["t2", "t1"]
    assert check_plan(tree, targets, list(plan.steps)) == []


SOCK = "/sys/fs/cgroup/cgmanager/sock"


def test_a_hidden_socket_is_bound_through_a_visible_alias_and_nothing_else_is() -> None:
    # 129 shows 123's /cgmanager of 0:18 at the same path: the socket needs no move; the file
    # opened and the cwd in 123 do (there the mount itself is what is restored).
    tree = tree_of(*SEED)
    plan = make_plan(tree, targets_of(("bind", 123, SOCK)))
    assert ops(plan) == [("bind", 123, SOCK, None)] and plan.steps[0].via == 129
    assert (plan.moves, plan.lower_bound, plan.least_moves) == (0, 1, 0)
    for kind in ("open", "chdir", "mmap"):
        other = make_plan(tree, targets_of((kind, 123, "/sys/fs/cgroup/cgmanager/x")))
        assert (other.moves, other.least_moves) == (1, 1) and all(s.via is None for s in other.steps)


def test_two_live_names_of_one_socket_file_are_refused_naming_both() -> None:
    tree = tree_of(*SEED)
    with pytest.raises(PlanRefused, match=r"targets t1 and t2 name the same socket file \(0:18 /cgmanager/sock\), "
                                          r"/sys/fs/cgroup/cgmanager/sock in mount 123 and .* in mount 129: only one"):
        make_plan(tree, targets_of(("bind", 123, SOCK), ("bind", 129, SOCK)))


def test_an_unlinked_name_of_the_same_socket_is_bound_first() -> None:
    tree = tree_of(*SEED)
    targets = [Target("live", "bind", 129, SOCK), Target("old", "bind", 123, SOCK, unlinked=True)]
    plan = make_plan(tree, targets)
    assert [s.target for s in plan.steps] == ["old", "live"] and plan.moves == 0
    assert check_plan(tree, targets, list(plan.steps)) == []
