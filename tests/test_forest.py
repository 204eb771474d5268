"""Forests: tables whose mounts form several trees, or whose top mount is not at /.

A chrooted process's /proc/PID/mountinfo, a filtered table or an excerpt: the
parents of the tops are not listed. Analyse what is there, plan what listed
mounts serve, refuse (exit 1, naming it) only what depends on an unlisted mount.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.analysis import analyze
from planner.check import check_plan
from planner.errors import DumpError, PlanRefused
from planner.plan import make_plan
from planner.render import analysis_json, analysis_text
from planner.steps import Step
from tests.conftest import REPO
from tests.helpers import targets_of, tree_of

# What /proc/PID/mountinfo shows for a process chrooted into /srv/jail, a plain directory of
# mount 84: the mounts below its root, relative to it; 84 itself is not listed.
CHROOT = (
    "85 84 0:40 / /srv rw,relatime - tmpfs lower rw",
    "86 84 0:41 / /proc rw,relatime - proc proc rw",
    "87 85 0:42 / /srv/d rw,relatime - tmpfs upper rw",
)
# A filtered table (tmpfs only) of a host: the parents (/ is 1, /dev is 22) are not listed.
FILTERED = (
    "30 22 0:23 / /dev/shm rw - tmpfs tmpfs rw",
    "40 1 0:25 / /run rw shared:5 - tmpfs tmpfs rw",
    "41 40 0:27 / /run/lock rw shared:6 - tmpfs tmpfs rw",
    "21 1 0:5 / /dev rw - devtmpfs udev rw",
)


def test_tops_hang_from_a_stand_in_that_keeps_their_listed_parents() -> None:
    tree = tree_of(*CHROOT)
    assert tree.stand_in == 0 and tree.root.mount_id == 0 and tree.root.mountpoint == "/"
    assert [m.mount_id for m in tree.tops] == [85, 86]
    assert tree.unlisted_parent == {85: 84, 86: 84}
    assert [m.mount_id for m in tree.chain(87)] == [0, 85, 87]
    assert len(tree.mounts) == 3 and not tree.listed(0) and tree.listed(87)
    # One tree whose top is at / stays a plain tree.
    plain = tree_of("62 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw", "63 62 0:5 / /dev rw - devtmpfs d rw")
    assert plain.stand_in is None and plain.root.mount_id == 62 and plain.unlisted_parent == {}


def test_the_stand_in_id_is_no_id_of_the_table() -> None:
    tree = tree_of("0 7 0:40 / /a rw - tmpfs a rw", "5 7 0:41 / /b rw - tmpfs b rw")
    assert tree.stand_in == 6 and tree.listed(0)


def test_a_hidden_target_in_a_chroot_table_is_planned_with_a_yard_in_a_listed_tmpfs() -> None:
    tree = tree_of(*CHROOT)
    targets = targets_of(("open", 85, "/srv/d/file"))
    [finding] = analyze(tree, targets).targets
    assert [c.mount for c in finding.covers] == [87] and finding.unlisted == ()
    plan = make_plan(tree, targets)
    # The default /.overmount-yard would lie in mount 84, which is not listed: a listed tmpfs instead.
    assert plan.yard == "/srv/.overmount-yard"
    assert [(s.op, s.mount) for s in plan.steps if s.op.startswith("move")] == [("move-aside", 87), ("move-back", 87)]
    assert check_plan(tree, targets, list(plan.steps)) == []


def test_a_yard_in_an_unlisted_mount_is_refused_naming_it() -> None:
    tree = tree_of(*CHROOT)
    targets = targets_of(("open", 85, "/srv/d/file"))
    with pytest.raises(PlanRefused, match=r"yard /y would lie in mount 84 the table does not list: whether it is shared"):
        make_plan(tree, targets, yard="/y")
    steps = [Step("yard-create", path="/y"), Step("move-aside", mount=87, src="/srv/d", to="/y/0")]
    [problem] = check_plan(tree, targets, steps)
    assert problem.startswith("step 0 (yard-create /y): yard /y lands in a mount the table does not list")


def test_targets_in_trees_of_one_unlisted_mount_are_judged_as_siblings() -> None:
    # 90 is mounted on 84 at /srv/d after 85 (at /srv, a prefix): 85 covers it, both hang from 84.
    tree = tree_of(*CHROOT, "90 84 0:43 / /srv/d/e rw - tmpfs e rw")
    analysis = analyze(tree, targets_of(("open", 90, "/srv/d/e/f")))
    assert analysis.mount_covers[90][0].mount == 85
    assert 90 in analysis.hidden_mounts
    # Moving 85 means moving a mount whose parent is not listed: refused, naming the parent.
    with pytest.raises(PlanRefused, match=r"target t1: mount 85 at /srv must move, and its parent, mount 84, is not in the table"):
        make_plan(tree, targets_of(("open", 90, "/srv/d/e/f")))


def test_only_targets_whose_reach_depends_on_an_unlisted_mount_are_refused() -> None:
    tree = tree_of(*FILTERED)
    targets = targets_of(("open", 21, "/dev/null"), ("open", 41, "/run/lock/f"))
    analysis = analyze(tree, targets)
    assert all(not f.hidden and not f.unlisted for f in analysis.targets)
    plan = make_plan(tree, targets)
    assert [s.op for s in plan.steps] == ["open", "open"]
    # /dev/shm (30) hangs from 22, /dev (21) from 1: which lies over the other is unknown.
    for target in (("open", 21, "/dev/shm/x"), ("open", 30, "/dev/shm/y")):
        [finding] = analyze(tree, targets_of(target)).targets
        assert finding.unlisted
        with pytest.raises(PlanRefused, match=r"target t1: reaching /dev/shm/. depends on mounts the table does not list: "
                                              r"mount (22|1) \(mount (30|21) at /dev(/shm)? hangs from it\) and mount (1|22)"):
            make_plan(tree, targets_of(target))


def test_analysis_prints_the_forest_as_findmnt_does() -> None:
    tree = tree_of(*FILTERED)
    text = analysis_text(analyze(tree, targets_of(("open", 30, "/dev/shm/y"))))
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:] if not line.lstrip().startswith("*") and line.strip()][:4] == [
        "/dev/shm", "/run", "└─/run/lock", "/dev"]
    assert "[UNKNOWN, depends on mount 1 (not listed; it holds 21 at /dev)]" in text
    assert lines[-1] == "a forest: 3 trees, whose tops hang from mounts 1, 22, not in the table"
    data = analysis_json(analyze(tree, targets_of(("open", 30, "/dev/shm/y"))))
    assert data["forest"] == [{"top": 30, "unlisted_parent": 22}, {"top": 40, "unlisted_parent": 1},
                              {"top": 21, "unlisted_parent": 1}]
    assert {m["id"]: m["parent"] for m in data["mounts"]} == {30: 22, 40: 1, 41: 40, 21: 1}
    assert data["targets"][0]["depends_on_unlisted"] == [1]


def test_duplicate_ids_and_a_self_parent_off_root_stay_bad_input() -> None:
    with pytest.raises(DumpError, match="duplicate mount id 85"):
        tree_of(*CHROOT, "85 84 0:49 / /x rw - tmpfs x rw")
    with pytest.raises(DumpError, match="mount 9 is its own parent, which only a root mount at / can be"):
        tree_of(*CHROOT, "9 9 0:49 / /x rw - tmpfs x rw")


def test_the_commands_on_a_forest(tmp_path: Path) -> None:
    """analyze, plan and check as real processes: exit 0, and exit 1 naming the unlisted mount."""
    table = tmp_path / "chroot.mountinfo"
    table.write_text("\n".join(CHROOT) + "\n")

    def overmount(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO, check=False)

    analyzed = overmount("analyze", str(table), "--target", "85:/srv/d/file")
    assert analyzed.returncode == 0, analyzed.stderr
    assert analyzed.stdout.splitlines()[-1] == "a forest: 2 trees, whose tops hang from mount 84, not in the table"
    plan_file = tmp_path / "plan.json"
    planned = overmount("plan", str(table), "--target", "85:/srv/d/file", "--format", "json", "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    assert json.loads(plan_file.read_text())["yard"] == "/srv/.overmount-yard"
    checked = overmount("check", str(table), str(plan_file), "--target", "85:/srv/d/file")
    assert checked.returncode == 0 and checked.stdout.startswith("ok:"), checked.stderr
    filtered = tmp_path / "filtered.mountinfo"
    filtered.write_text("\n".join(FILTERED) + "\n")
    refused = overmount("plan", str(filtered), "--target", "30:/dev/shm/y")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        ("overmount: target t1: reaching /dev/shm/y depends on mounts the table does not list: mount 22 (mount 30 "
         "at /dev/shm hangs from it) and mount 1 (mount 21 at /dev hangs from it); which lies over the other is "
         "unknown; give the table as the mount namespace's root sees it (overmount capture as root reads it so, as "
         "does nsenter -m -t PID cat /proc/self/mountinfo)")]
