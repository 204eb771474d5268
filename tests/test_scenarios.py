"""Every scenario: parsed, analysed, planned and checked against what its author expected."""

import pytest

from planner import mountinfo
from planner.analysis import analyze
from planner.check import check_plan
from planner.errors import PlanRefused
from planner.inputs import load
from planner.plan import make_plan
from planner.tree import MountTree
from tests.conftest import SCENARIOS


def test_there_are_enough_scenarios() -> None:
    assert len(SCENARIOS) >= 12


def test_mountinfo_round_trips(scenario_path: str) -> None:
    dump = load(scenario_path)
    lines = [line for line in dump.mountinfo.split("\n") if line.strip()]
    assert mountinfo.render(list(dump.mounts)) == "".join(line + "\n" for line in lines)


def test_hidden_set_is_as_expected(scenario_path: str) -> None:
    dump = load(scenario_path)
    expect = dump.expect
    analysis = analyze(MountTree(dump.mounts, dump.source), dump.targets)
    assert analysis.hidden_mounts == sorted(expect["hidden_mounts"])
    for finding in analysis.targets:
        wanted = expect["targets"][finding.target.id]
        assert finding.hidden == wanted["hidden"], finding.target.id
        assert sorted(c.mount for c in finding.covers) == sorted(wanted["covered_by"]), finding.target.id
    assert analysis.lower_bound == expect["lower_bound"]


def test_plan_passes_check_at_the_lower_bound(scenario_path: str) -> None:
    dump = load(scenario_path)
    tree = MountTree(dump.mounts, dump.source)
    if "refuse" in dump.expect:
        with pytest.raises(PlanRefused, match=dump.expect["refuse"]):
            make_plan(tree, dump.targets, locked=dump.locked_mounts)
        return
    plan = make_plan(tree, dump.targets, locked=dump.locked_mounts)
    assert check_plan(tree, dump.targets, list(plan.steps)) == []
    assert plan.moves == dump.expect.get("moves", plan.lower_bound)
    assert plan.lower_bound == dump.expect["lower_bound"]
    reached = [s.target for s in plan.steps if s.target]
    assert sorted(reached) == sorted(t.id for t in dump.targets)
