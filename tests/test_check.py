"""check must accept a right plan and reject each way a plan can be wrong."""

import pytest

from planner.check import _OPS as check_ops
from planner.check import check_plan
from planner.plan import make_plan
from planner.simulate import Landing, Namespace
from planner.steps import REQUIRED, MissingField, Step, arguments, handlers_for, step_from_json
from planner.targets import Target
from tests.helpers import SEED, targets_of, tree_of

TREE = tree_of(*SEED)
TARGETS = targets_of(("bind", 123, "/sys/fs/cgroup/cgmanager/sock"), ("open", 122, "/sys/fs/cgroup/notes"))
YARD = "/.overmount-yard"


def good() -> list[Step]:
    return [
        Step("yard-create", path=YARD),
        Step("move-aside", mount=128, src="/sys/fs/cgroup", to=YARD + "/0"),
        Step("bind", mount=123, path="/sys/fs/cgroup/cgmanager/sock", target="t1"),
        Step("open", mount=122, path="/sys/fs/cgroup/notes", target="t2"),
        Step("move-back", mount=128, src=YARD + "/0", to="/sys/fs/cgroup"),
        Step("yard-remove", path=YARD),
    ]


def test_a_hand_written_plan_passes() -> None:
    assert check_plan(TREE, TARGETS, good()) == []


def test_the_planner_writes_the_same_plan_with_the_socket_bound_through_its_alias() -> None:
    # 129 shows 123's directory of 0:18 at the same path: the socket is bound through it, no move.
    plan = make_plan(TREE, TARGETS)
    bind = Step("bind", mount=123, path="/sys/fs/cgroup/cgmanager/sock", target="t1", via=129)
    expected = [bind] + [s for s in good() if s.op != "bind"]
    assert [s.as_json() | {"why": ""} for s in plan.steps] == [s.as_json() | {"why": ""} for s in expected]
    assert (plan.moves, plan.lower_bound, plan.least_moves, plan.naive_moves) == (1, 1, 1, 2)
    assert check_plan(TREE, TARGETS, expected) == []


def test_op_while_still_hidden() -> None:
    steps = good()
    steps.insert(1, steps.pop(3))  # open before the move
    problems = check_plan(TREE, TARGETS, steps)
    assert problems == ["step 1 (open t2): /sys/fs/cgroup/notes leads into mount 128, not mount 122: still hidden"]


def test_missing_move_back() -> None:
    steps = [s for s in good() if s.op != "move-back"]
    problems = check_plan(TREE, TARGETS, steps)
    assert problems == ["step 4 (yard-remove /.overmount-yard): yard /.overmount-yard still holds mount 128"]


def test_missing_move_back_and_yard_kept() -> None:
    steps = [s for s in good() if s.op not in ("move-back", "yard-remove")]
    problems = check_plan(TREE, TARGETS, steps)
    assert "tree not restored: mount 128 on mount 122, on its root became mount 128 on yard" in problems[0]
    assert problems[-1] == "yard left mounted: /.overmount-yard"


def test_source_path_naming_another_mount() -> None:
    steps = good()
    steps[1] = Step("move-aside", mount=122, src="/sys/fs/cgroup", to=YARD + "/0")
    assert check_plan(TREE, TARGETS, steps) == ["step 1 (move-aside 122): source /sys/fs/cgroup names mount 128, not mount 122"]


def test_wrong_order_of_a_stack() -> None:
    # Moving 123's path before 128 names 129, the mount on top there.
    steps = good()
    steps[1] = Step("move-aside", mount=123, src="/sys/fs/cgroup/cgmanager", to=YARD + "/0")
    assert check_plan(TREE, TARGETS, steps)[0].startswith("step 1 (move-aside 123): source /sys/fs/cgroup/cgmanager names mount 129")


def test_move_back_to_the_wrong_place() -> None:
    steps = good()
    steps[4] = Step("move-back", mount=128, src=YARD + "/0", to="/sys")
    problems = check_plan(TREE, TARGETS, steps)
    assert problems == ["tree not restored: mount 128 on mount 122, on its root became mount 128 on mount 107, on its root"]


def test_missing_target() -> None:
    steps = [s for s in good() if s.target != "t2"]
    assert check_plan(TREE, TARGETS, steps) == ["targets never reached: t2"]


def test_step_that_does_not_match_its_target() -> None:
    steps = good()
    steps[3] = Step("chdir", mount=122, path="/sys/fs/cgroup/notes", target="t2")
    assert "does not match target t2" in check_plan(TREE, TARGETS, steps)[0]
    steps[3] = Step("open", mount=123, path="/sys/fs/cgroup/notes", target="t2")
    assert "does not match target t2" in check_plan(TREE, TARGETS, steps)[0]


def test_a_step_that_reaches_another_place_of_the_right_mount() -> None:
    steps = good()
    steps[3] = Step("open", mount=122, path="/sys/fs/cgroup/other", target="t2")
    assert check_plan(TREE, TARGETS, steps) == ["step 3 (open t2): /sys/fs/cgroup/other leads to /other inside mount 122, not to /notes"]


def test_move_under_a_shared_parent_is_refused_like_the_kernel() -> None:
    tree = tree_of("1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:40 / /a rw shared:5 - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")
    steps = [Step("yard-create", path=YARD), Step("move-aside", mount=3, src="/a/b", to=YARD + "/0")]
    assert check_plan(tree, [], steps) == ["step 1 (move-aside 3): the kernel would refuse (EINVAL): mount 3's parent mount 2 is shared"]


def test_dotdot_in_a_plan_path_is_refused() -> None:
    steps = good()
    steps[1] = Step("move-aside", mount=128, src="/sys/fs/../fs/cgroup", to=YARD + "/0")
    assert "must be absolute with no '.', '..'" in check_plan(TREE, TARGETS, steps)[0]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"op": "move-aside", "mount": 1, "from": "/a"}, "move-aside needs 'to'"),
        ({"op": "teleport"}, "unknown op 'teleport'"),
        ({"op": "open", "target": "t1", "mount": "1", "path": "/a"}, "'mount' must be an integer"),
        ([], "a step must be a JSON object"),
    ],
)
def test_malformed_steps(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_from_json(raw)


# Through the yard: 3 covers 2 (stacked on its root) and carries 4; while 3 is parked, 4 is reached
# in the yard, the same mount and the same inode. Only bind must use the target's own path.
RIDER = tree_of("1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a rw - tmpfs c rw",
                "4 3 0:42 / /a/d rw - tmpfs d rw")
RIDER_TARGETS = targets_of(("open", 2, "/a/f"), ("open", 4, "/a/d/g"), ("chdir", 4, "/a/d"), ("mmap", 4, "/a/d/lib.so"),
                           ("mount-source", 4, "/a/d/src", "/mnt"), ("bind", 4, "/a/d/sock"))
PARKED = YARD + "/0"


def rider_plan(**instead: Step) -> list[Step]:
    through = [
        Step("open", mount=4, path=PARKED + "/d/g", target="t2"),
        Step("chdir", mount=4, path=PARKED + "/d", target="t3"),
        Step("mmap", mount=4, path=PARKED + "/d/lib.so", target="t4"),
        Step("mount-source", mount=4, path=PARKED + "/d/src", to="/mnt", target="t5"),
    ]
    steps = [
        Step("bind", mount=4, path="/a/d/sock", target="t6"),
        Step("yard-create", path=YARD),
        Step("move-aside", mount=3, src="/a", to=PARKED),
        Step("open", mount=2, path="/a/f", target="t1"),
        *through,
        Step("move-back", mount=3, src=PARKED, to="/a"),
        Step("yard-remove", path=YARD),
    ]
    return [instead.get(s.target or "", s) for s in steps]


def test_target_steps_through_the_yard_pass() -> None:
    assert check_plan(RIDER, RIDER_TARGETS, rider_plan()) == []


def test_a_bind_through_the_yard_is_refused() -> None:
    steps = rider_plan(t6=Step("bind", mount=4, path=PARKED + "/d/sock", target="t6"))
    steps.insert(4, steps.pop(0))  # while 3 is parked
    assert check_plan(RIDER, RIDER_TARGETS, steps) == [
        ("step 4 (bind t6): bind of t6 at /.overmount-yard/0/d/sock: bind(2) names the socket by its path, "
         "so the step must use /a/d/sock, the name the dump has")]


def test_a_yard_path_to_another_place_or_mount_is_refused() -> None:
    wrong_place = rider_plan(t2=Step("open", mount=4, path=PARKED + "/g", target="t2"))
    assert check_plan(RIDER, RIDER_TARGETS, wrong_place) == [
        "step 4 (open t2): /.overmount-yard/0/g leads into mount 3, not mount 4"]
    in_place = rider_plan(t1=Step("open", mount=2, path=PARKED + "/f", target="t1"))
    assert check_plan(RIDER, RIDER_TARGETS, in_place) == [
        "step 3 (open t1): /.overmount-yard/0/f leads into mount 3, not mount 2"]


# A mount-source whose source 2 needs 3 moved, and whose `to` lies in 3: bound onto its place in
# the parked 3, the new mount goes back with it.
COVERED_TO = targets_of(("mount-source", 2, "/a/src", "/a/dest"))


def test_a_mount_source_onto_its_place_in_a_parked_cover_passes() -> None:
    steps = [Step("yard-create", path=YARD), Step("move-aside", mount=3, src="/a", to=PARKED),
             Step("mount-source", mount=2, path="/a/src", to=PARKED + "/dest", target="t1"),
             Step("move-back", mount=3, src=PARKED, to="/a"), Step("yard-remove", path=YARD)]
    assert check_plan(RIDER, COVERED_TO, steps) == []
    steps[2] = Step("mount-source", mount=2, path="/a/src", to="/a/dest", target="t1")
    assert check_plan(RIDER, COVERED_TO, steps) == [
        ("step 2 (mount-source t1): /a/dest leads into mount 2 now, but /a/dest leads into mount 3 in the dumped tree: "
         "the new bind mount would not end up where the dump has it (while that mount is moved aside, bind onto its "
         "place in the yard)")]


def test_a_mount_source_after_its_place_went_back_is_refused() -> None:
    steps = [Step("yard-create", path=YARD), Step("move-aside", mount=3, src="/a", to=PARKED),
             Step("move-back", mount=3, src=PARKED, to="/a"),
             Step("mount-source", mount=2, path="/a/src", to=PARKED + "/dest", target="t1")]
    assert check_plan(RIDER, COVERED_TO, steps)[0].startswith("step 3 (mount-source t1): /a/src leads into mount 3, not mount 2")


# One socket file through two mounts: 123 and 129 show /cgmanager of 0:18 at the same path.
SOCK = "/sys/fs/cgroup/cgmanager/sock"


def bind_first(**fields: object) -> list[Step]:
    steps = good()
    steps.insert(0, steps.pop(2))
    steps[0] = Step("bind", mount=123, path=SOCK, target="t1", **fields)  # type: ignore[arg-type]
    return steps


def test_a_bind_through_an_alias_passes_with_or_without_via() -> None:
    assert check_plan(TREE, TARGETS, bind_first()) == []  # what the kernel does decides
    assert check_plan(TREE, TARGETS, bind_first(via=129)) == []
    assert check_plan(TREE, TARGETS, bind_first(via=131)) == [
        "step 0 (bind t1): /sys/fs/cgroup/cgmanager/sock leads into mount 129, not through mount 131 as the step says"]


@pytest.mark.parametrize("options", ["ro,relatime", "rw,relatime,idmapped"])
def test_a_read_only_or_idmapped_mount_is_no_alias(options: str) -> None:
    tree = tree_of(*SEED[:-1], SEED[-1].replace(" rw - tmpfs", f" {options} - tmpfs"))
    assert check_plan(tree, TARGETS, bind_first()) == [
        ("step 0 (bind t1): /sys/fs/cgroup/cgmanager/sock leads into mount 129, not mount 123 or a writable, not "
        "idmapped mount showing the same file: still hidden")]
    plan = make_plan(tree, TARGETS)
    assert plan.moves == plan.least_moves == plan.lower_bound == 1 and plan.steps[0].op == "yard-create"


def test_a_second_live_bind_of_one_socket_file_is_refused_like_the_kernel() -> None:
    targets = [*TARGETS, Target("t3", "bind", 129, SOCK)]
    steps = [*good(), Step("bind", mount=129, path=SOCK, target="t3")]
    assert check_plan(TREE, targets, steps) == [
        "step 6 (bind t3): the kernel would refuse (EADDRINUSE): /sys/fs/cgroup/cgmanager/sock names the socket file t1 is bound to"]
    unlinked = [*TARGETS[:1], Target("t3", "bind", 129, SOCK, unlinked=True), TARGETS[1]]
    steps.insert(0, steps.pop())  # the unlinked name first: bound, then unlinked again
    assert check_plan(TREE, unlinked, steps) == []


def test_a_bind_onto_a_shared_mount_is_refused_like_a_move_there() -> None:
    # /srv is shared with a peer: the kernel copies a new bind on /srv/x into /peer (tests/namespace).
    tree = tree_of("1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:40 / /srv rw shared:5 - tmpfs a rw",
                   "3 1 0:40 / /peer rw shared:5 - tmpfs a rw")
    targets = targets_of(("mount-source", 1, "/data", "/srv/x"))
    steps = [Step("mount-source", mount=1, path="/data", to="/srv/x", target="t1")]
    assert check_plan(tree, targets, steps) == [
        ("step 0 (mount-source t1): /srv/x leads into mount 2, which is shared: the new bind mount would propagate "
         "copies to its peers")]


def test_a_bind_of_a_shared_mount_joins_its_group_so_a_bind_onto_it_is_refused() -> None:
    tree = tree_of("1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:40 / /srv rw shared:5 - tmpfs a rw")
    targets = targets_of(("mount-source", 2, "/srv", "/mnt"), ("mount-source", 1, "/data", "/mnt"))
    steps = [Step("mount-source", mount=2, path="/srv", to="/mnt", target="t1"),
             Step("mount-source", mount=1, path="/data", to="/mnt", target="t2")]
    assert "leads into bind mount of t1, which is shared" in check_plan(tree, targets, steps)[0]


# A strategy that builds the tree starts with mounts not yet attached; the end state is judged
# against the tree as dumped, whatever the namespace started with.
BUILT = tree_of("1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:40 / /a rw - tmpfs a rw", "3 2 0:41 / /a/b rw - tmpfs b rw")


def test_a_namespace_can_start_with_mounts_not_yet_attached() -> None:
    ns = Namespace(BUILT, unattached=(2,))
    assert ns.walk("/a/b/f").mount == 1 and ns.parent[2] is None and not ns.is_as_dumped()
    assert ns.walk("/x", along=[1, 2]) == Landing(1, "/x", "/")  # nothing on the way: no obstacle
    ns.attach(2, "/a")  # 2 carries 3 with it, as a detached subtree does
    assert ns.walk("/a/b/f") == Landing(3, "/f", "/a/b") and ns.is_as_dumped()
    assert Namespace.as_dumped(ns).shape() == ns.shape()


def test_check_judges_the_end_against_the_dumped_tree_not_the_start() -> None:
    # No step attaches mount 2: the tree ends as it started, which is not as dumped (3 still hangs
    # from 2, as dumped, in the detached subtree).
    problems = check_plan(BUILT, [], [], unattached=(2,))
    assert problems == ["tree not restored: mount 2 on mount 1, at /a inside it became mount 2 (absent)"]
    assert check_plan(BUILT, [], []) == []


def test_check_and_the_executor_share_one_op_table() -> None:
    assert set(check_ops) == set(REQUIRED)
    with pytest.raises(AssertionError, match=r"missing \['yard-remove'\], unknown \['teleport'\]"):
        handlers_for({**{op: print for op in REQUIRED if op != "yard-remove"}, "teleport": print}, "a test")
    assert arguments(Step("move-back", mount=3, src="/y/0", to="/a/b")) == (3, "/y/0", "/a/b")
    with pytest.raises(MissingField, match="move-back needs 'to'"):
        arguments(Step("move-back", mount=3, src="/y/0"))
    assert "move-back needs 'to'" in check_plan(BUILT, [], [Step("move-back", mount=3, src="/a/b")])[0]
