"""The README's routes end to end, for real: scenarios run, a live process captured, CRIU images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planner import kernel
from planner.errors import PlannerError
from planner.executor import execute, execute_here
from planner.inputs import load
from planner.inputs.dump_json import from_json
from planner.plan import make_plan
from planner.replica import build_replica
from planner.tree import MountTree
from tests.conftest import REPO, SCENARIOS
from tests.namespace import test_capture

overmounted_child = test_capture.overmounted_child  # the live process fixture, shared

pytestmark = pytest.mark.namespace


def has_legacy_siblings(tree: MountTree) -> bool:
    return any(len(kids) > 1 for kids in tree.children_at.values())


# Scenarios whose plan must be refused are checked for that in tests/test_scenarios.py.
PLANNED = [p for p in SCENARIOS if "refuse" not in load(p).expect]


@pytest.mark.parametrize("path", PLANNED, ids=[os.path.basename(p)[:-5] for p in PLANNED])
def test_every_scenario_runs_and_verifies_in_a_namespace(path: str) -> None:
    dump = load(path)
    tree = MountTree(dump.mounts, dump.source)
    plan = make_plan(tree, dump.targets)
    steps = [s.as_json() for s in plan.steps]
    if has_legacy_siblings(tree):
        # No kernel since 4.11 builds side-by-side mounts, so there is nothing to replicate.
        with pytest.raises(PlannerError, match="shadow"):
            execute(list(dump.mounts), list(dump.targets), steps, file_mounts=dump.file_mounts)
        return
    report = execute(list(dump.mounts), list(dump.targets), steps, file_mounts=dump.file_mounts)
    assert report["failed_step"] is None, report["failed_step"]
    assert report["ok"] and report["tree_identical"] and report["yard_empty"]
    assert report["steps_run"] == len(steps)
    by_id = {t["id"]: t for t in report["targets"]}
    for target in dump.targets:
        got = by_id[target.id]
        assert (got["expected_mount"], got["got_mount"], got["ok"]) == (target.mount, target.mount, True), got


def overmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO, check=False)


@pytest.mark.parametrize("overmounted_child", ["plain", "rshared"], indirect=True)
def test_capture_plan_run_of_a_live_process(overmounted_child: tuple[int, str, str], tmp_path: Path) -> None:
    """The three README commands against a process that overmounted its own objects."""
    pid, top, _ = overmounted_child
    dump_file = tmp_path / "dump.json"
    captured = overmount("capture", "--pid", str(pid), "-o", str(dump_file))
    assert captured.returncode == 0, captured.stderr
    plan_file = tmp_path / "plan.json"
    planned = overmount("plan", str(dump_file), "--format", "json", "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    ran = overmount("run", str(dump_file), "--plan", str(plan_file), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    assert report["ok"] and report["tree_identical"] and report["yard_empty"]
    dump = from_json(json.loads(dump_file.read_text()), str(dump_file), "")
    hidden = {t.id: t for t in dump.targets if t.path.startswith(top + "/d/")}
    assert {t.kind for t in hidden.values()} >= {"open", "chdir", "bind", "mmap"}
    by_id = {t["id"]: t for t in report["targets"]}
    for target in hidden.values():
        assert by_id[target.id]["got_mount"] == target.mount and by_id[target.id]["ok"], by_id[target.id]
    steps = json.loads(plan_file.read_text())["steps"]
    moves = [s for s in steps if s["op"] == "move-aside"]
    assert len(moves) == 1  # one cover, one bracket for all four
    mounts = MountTree(dump.mounts, dump.source)
    if mounts.root.shared is not None:  # rshared, as systemd leaves it: the yard's mount is bracketed first
        assert all(m.shared is not None for m in mounts.mounts)
        assert [(s["op"], s.get("mount")) for s in steps[:3]] == [
            ("keeper-bind", mounts.root.mount_id), ("make-private", mounts.root.mount_id), ("yard-create", None)]


def test_criu_socket_case_is_bound_in_the_hidden_directory() -> None:
    """CRIU 4.2 restores this socket into the covering tmpfs (exit 0); the plan puts it in mount 44."""
    images = os.path.join(REPO, "tests", "data", "criu", "socket-dir-covered")
    dump = load(images)
    socket = next(t for t in dump.targets if t.kind == "bind")
    assert (socket.path, socket.mount) == ("/omt/d/sock", 44)
    tree = MountTree(dump.mounts, dump.source)
    plan = make_plan(tree, dump.targets)
    assert [(s.op, s.mount) for s in plan.steps if s.op == "move-aside"] == [("move-aside", 45)]
    report = execute(list(dump.mounts), list(dump.targets), [s.as_json() for s in plan.steps], file_mounts=dump.file_mounts)
    got = next(t for t in report["targets"] if t["id"] == socket.id)
    assert (got["expected_mount"], got["got_mount"], got["ok"]) == (44, 44, True)
    assert report["ok"] and report["tree_identical"]


def _new_mount_spreads(parent_path: str) -> Any:
    """A probe for after the plan: mount a tmpfs under the shared parent at `parent_path`;
    which mounts get a copy, and is each copy a peer or a slave of the new mount?"""

    def probe(replica: Any, *_: object) -> list[tuple[str, str]]:
        where = parent_path.rstrip("/") + "/new-probe"
        os.mkdir(where)
        fd = kernel.new_tmpfs()
        kernel.attach(fd, kernel.AT_FDCWD, where)
        os.close(fd)
        new = [m for m in replica.live_table() if m.mountpoint.endswith("/new-probe")]
        [first] = [m for m in new if m.mountpoint == where]
        relation = {m.mount_id: "peer" if m.shared is not None and m.shared == first.shared
                    else "slave" if m.master is not None and m.master == first.shared else "unrelated" for m in new}
        return sorted((str(replica.key(m.parent_id)), relation[m.mount_id]) for m in new)

    return probe


PROPAGATION_SCENARIOS = [p for p in SCENARIOS if load(p).expect.get("propagation")]


@pytest.mark.parametrize("path", PROPAGATION_SCENARIOS, ids=[os.path.basename(p)[:-5] for p in PROPAGATION_SCENARIOS])
def test_after_the_plan_propagation_reaches_the_same_peers_and_slaves(path: str) -> None:
    dump = load(path)
    tree = MountTree(dump.mounts, dump.source)
    plan = make_plan(tree, dump.targets)
    keepers = [s for s in plan.steps if s.op == "keeper-bind"]
    assert keepers, "a propagation scenario whose plan needs no keeper tests nothing here"
    steps = [s.as_json() for s in plan.steps]
    for keeper in keepers:
        assert keeper.src is not None
        probe = _new_mount_spreads(keeper.src)
        report = kernel.run_in_namespace(
            execute_here, list(dump.mounts), list(dump.targets), steps, dump.file_mounts, None, probe
        )
        assert report["ok"] and report["tree_identical"], report
        untouched = kernel.run_in_namespace(
            lambda probe=probe: probe(build_replica(list(dump.mounts), list(dump.targets), None, dump.file_mounts))
        )
        assert report["then"] == untouched
        assert len(untouched) > 1, "the new mount must reach at least one peer or slave, or this shows nothing"
