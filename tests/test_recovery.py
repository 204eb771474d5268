"""recovery_plan: from a plan and the table a crash left, the steps that put it back (pure).

The tables are what the kernel shows at each point of the plan for a shared / (1) with a cover
3 on /x: ids 50 and up are the yard, keepers and so on, as a live namespace numbers them.
"""

from planner import mountinfo
from planner.plan import make_plan
from planner.recovery import recovery_plan
from tests.helpers import targets_of, tree_of

DUMP = ("1 0 8:1 / / rw shared:1 - ext4 /dev/vda rw", "3 1 0:41 / /x rw shared:3 - tmpfs b rw")
PLAN = list(make_plan(tree_of(*DUMP), targets_of(("open", 1, "/x/f"))).steps)
YARD = "/.overmount-yard"


def table(*lines: str) -> list[mountinfo.Mount]:
    return mountinfo.parse("\n".join(lines) + "\n", "<live>")


def ops(recovery: object) -> list[tuple[object, ...]]:
    return [(s.op, s.mount, s.src or s.path, s.to) for s in recovery.steps]  # type: ignore[attr-defined]


def test_the_plan_brackets_the_shared_root_first() -> None:
    assert [(s.op, s.mount) for s in PLAN][:4] == [("keeper-bind", 1), ("make-private", 1), ("yard-create", None),
                                                   ("move-aside", 3)]


def test_a_parked_cover_goes_home_then_the_root_rejoins_and_the_yard_goes() -> None:
    # Killed after the move-aside: / private, its keeper in slot 0, the cover in slot 1.
    left = table("1 0 8:1 / / rw - ext4 /dev/vda rw", "50 1 0:60 / /.overmount-yard rw - tmpfs none rw",
                 "51 50 8:1 / /.overmount-yard/0 rw shared:1 - ext4 /dev/vda rw",
                 "3 50 0:41 / /.overmount-yard/1 rw shared:3 - tmpfs b rw")
    recovery = recovery_plan(PLAN, left)
    assert ops(recovery) == [
        ("move-back", 3, f"{YARD}/1", "/x"),
        ("rejoin-group", 1, f"{YARD}/0", "/"),
        ("keeper-remove", 51, f"{YARD}/0", None),
        ("yard-remove", None, YARD, None),
    ]
    assert recovery.lost == ()


def test_a_root_still_in_its_group_needs_no_rejoin() -> None:
    # Killed after rejoin-group, before keeper-remove: / is shared again.
    left = table("1 0 8:1 / / rw shared:1 - ext4 /dev/vda rw", "50 1 0:60 / /.overmount-yard rw - tmpfs none rw",
                 "51 50 8:1 / /.overmount-yard/0 rw shared:1 - ext4 /dev/vda rw", "3 1 0:41 / /x rw shared:3 - tmpfs b rw")
    assert ops(recovery_plan(PLAN, left)) == [("keeper-remove", 51, f"{YARD}/0", None), ("yard-remove", None, YARD, None)]


def test_nothing_left_nothing_to_do() -> None:
    assert recovery_plan(PLAN, table(*DUMP)).steps == ()


def test_what_cannot_be_put_back_is_said() -> None:
    # A mount the plan did not park is in the yard: the yard stays; and / went private while its
    # keeper waited, detached, for the yard: nothing holds its group any more.
    stranger = table("1 0 8:1 / / rw - ext4 /dev/vda rw", "50 1 0:60 / /.overmount-yard rw - tmpfs none rw",
                     "52 50 0:70 / /.overmount-yard/9 rw - tmpfs x rw", "3 1 0:41 / /x rw shared:3 - tmpfs b rw")
    recovery = recovery_plan(PLAN, stranger)
    assert recovery.steps == ()
    assert recovery.lost[0] == f"yard {YARD} holds mount 52 at {YARD}/9, which the plan did not put there: left in place"
    assert "mount 1 at / is private, and no keeper of its peer group is in a yard" in recovery.lost[1]
    no_yard = recovery_plan(PLAN, table("1 0 8:1 / / rw - ext4 /dev/vda rw", "3 1 0:41 / /x rw shared:3 - tmpfs b rw"))
    assert no_yard.lost == () and "may never have run here" in no_yard.notes[0]  # no sign the plan ran here
