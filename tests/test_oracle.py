"""Plans judged by a model that is not the planner: tests/oracle.py, a brute-force namespace.

- every plan the planner makes for a random tree is valid by the oracle's kernel rules, and so
  is the same plan with its target steps taken through the yard where they can be;
- `check` agrees with the oracle on plans broken on purpose (a step dropped, two steps
  swapped, a keeper bracket left out, move-backs crossed): it accepts exactly those the
  oracle accepts, so a rule dropped from check shows up as a disagreement;
- by brute force over every mount a path can name, the smallest set of mounts that must move
  for a target is `must_move` (and the only smallest one), `covered_by` is what alone would
  hide the target, and `lower_bound` is the size of their union.

The trees come from test_properties' generator (stacks, legacy shadow siblings, covers at
any level, peers and slaves); `make stress` runs many more of them.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import mountinfo
from planner.analysis import analyze
from planner.check import check_plan
from planner.errors import PlanRefused
from planner.inputs import load
from planner.plan import make_plan
from planner.progress import Progress
from planner.steps import step_from_json
from planner.targets import Target
from planner.tree import MountTree
from tests import oracle
from tests.conftest import SCENARIOS, counted
from tests.reliability import record
from tests.test_properties import (
    VARIANTS,
    Spec,
    cases,
    child_path,
    line_of,
    mount_tables,
    targets_for,
    through_the_yard,
    walk,
)

DEFAULT_EXAMPLES = 100  # per variant
STRESS_EXAMPLES = 2000  # per variant
FIXED = ("yard-create", "yard-remove")  # left in place: moving them only tests directory creation


@st.composite
def shared_parent_cases(draw: Any) -> tuple[list[Spec], str, list[Target]]:
    """A random private tree hung from a shared mount at /srv, with a peer at /peer and sometimes a
    slave at /slave, and a target in a hidden mount: covers on /srv's mount need the keeper bracket,
    which the plain generator seldom makes in a form a plan can handle (its shared parents mostly
    carry a stack)."""
    inner = draw(mount_tables(propagation=False, shadows=False))
    top = Spec(900, 0, (8, 1), "/", "/")
    for spec in inner:
        spec.mountpoint = "/srv" + spec.mountpoint.rstrip("/") if spec.mountpoint != "/" else "/srv"
    [hung] = [s for s in inner if s.parent_id not in {o.mount_id for o in inner}]
    hung.parent_id = top.mount_id
    hung.optional.append("shared:90")
    around = [Spec(901, top.mount_id, hung.dev, hung.root, "/peer", ["shared:90"])]
    if draw(st.booleans()):
        around.append(Spec(902, top.mount_id, hung.dev, hung.root, "/slave", ["master:90"]))
    specs = [top, *inner, *around]
    targets = draw(targets_for(specs))
    hidden = [s for s in inner if walk(specs, s.mountpoint) != s.mount_id]
    if hidden:
        home = draw(st.sampled_from(hidden))
        targets.append(Target(f"t{len(targets) + 1}", "open", home.mount_id, child_path(home.mountpoint, ["file"])))
    return specs, "".join(line_of(s) + "\n" for s in specs), targets


def records_of_specs(specs: list[Spec]) -> list[oracle.Record]:
    def tag(name: str, spec: Spec) -> int | None:
        return next((int(o.split(":")[1]) for o in spec.optional if o.startswith(name + ":")), None)

    return [oracle.Record(s.mount_id, s.parent_id, f"{s.dev[0]}:{s.dev[1]}", s.root, s.mountpoint,
                          tag("shared", s), tag("master", s)) for s in specs]


def broken_plans(steps: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The plan with one thing wrong, each way a hand edit or a planner bug could make it."""
    for k, step in enumerate(steps):
        if step["op"] not in FIXED:
            yield f"drop {k} ({step['op']})", steps[:k] + steps[k + 1:]
    for k in range(len(steps) - 1):
        if steps[k]["op"] not in FIXED and steps[k + 1]["op"] not in FIXED:
            yield f"swap {k} and {k + 1}", steps[:k] + [steps[k + 1], steps[k]] + steps[k + 2:]
    bracket = ("keeper-bind", "make-private", "rejoin-group", "keeper-remove")
    for parent in dict.fromkeys(s["mount"] for s in steps if s["op"] == "keeper-bind"):
        yield f"no keeper bracket for {parent}", [s for s in steps if not (s["op"] in bracket and s["mount"] == parent)]
    backs = [k for k, s in enumerate(steps) if s["op"] == "move-back"]
    for a, b in itertools.pairwise(backs):
        if steps[a]["to"] != steps[b]["to"]:
            crossed = [dict(s) for s in steps]
            crossed[a]["to"], crossed[b]["to"] = steps[b]["to"], steps[a]["to"]
            yield f"move-backs {a} and {b} crossed", crossed


def judge_case(records: list[oracle.Record], text: str, targets: list[Target], counts: Counter[str]) -> None:
    counts["trees"] += 1
    tree = MountTree(mountinfo.parse(text, "<generated>"), "<generated>")
    analysis = analyze(tree, targets)
    must_move: set[int] = set()
    for finding in analysis.targets:
        target = finding.target
        counts["targets"] += 1
        smallest = oracle.minimal_movers(records, target)
        assert smallest == [frozenset(finding.movers)], (smallest, finding.movers, text, target)
        assert len(set(finding.movers)) == len(finding.movers)
        assert {c.mount for c in finding.covers} == oracle.lone_covers(records, target), (finding.covers, text, target)
        must_move |= smallest[0]
    assert analysis.lower_bound == len(must_move)
    try:
        plan = make_plan(tree, targets)
    except PlanRefused:
        counts["refused"] += 1
        return
    counts["plans"] += 1
    counts["plans_with_keepers"] += any(s.op == "keeper-bind" for s in plan.steps)
    steps = [s.as_json() for s in plan.steps]
    assert oracle.judge(records, targets, steps) == [], (oracle.judge(records, targets, steps), text, targets, steps)
    # The same plan with the target steps that can go through the yard moved there (the kernel
    # reaches the same mount and inode in a parked cover): still valid.
    rewritten, moved = through_the_yard(tree, targets, list(plan.steps))
    if moved:
        counts["plans_through_the_yard"] += 1
        through = [s.as_json() for s in rewritten]
        assert oracle.judge(records, targets, through) == [], (oracle.judge(records, targets, through), text, through)
    for label, broken in broken_plans(steps):
        counts["broken"] += 1
        verdict = oracle.judge(records, targets, broken)
        by_check = check_plan(tree, targets, [step_from_json(s) for s in broken])
        counts["broken_valid" if not verdict else "broken_invalid"] += 1
        assert (verdict == []) == (by_check == []), (label, verdict, by_check, text, targets, broken)


# The property variants, and trees whose covers sit on shared parents.
ORACLE_VARIANTS = {**{name: lambda p=p, s=s: cases(propagation=p, shadows=s) for name, (p, s) in VARIANTS.items()},
                   "shared-parents": shared_parent_cases}


def run_oracle(examples: int, variant: str, tick: Callable[[], None] = lambda: None) -> Counter[str]:
    counts: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ORACLE_VARIANTS[variant]())
    def body(case: tuple[list[Spec], str, list[Target]]) -> None:
        tick()
        specs, text, targets = case
        judge_case(records_of_specs(specs), text, targets, counts)

    body()
    return counts


@pytest.mark.parametrize("variant", list(ORACLE_VARIANTS))
def test_the_oracle_accepts_every_plan_and_agrees_with_check(variant: str) -> None:
    counts = run_oracle(DEFAULT_EXAMPLES, variant)
    assert counts["plans"] > 0 and counts["broken_invalid"] > 0


@pytest.mark.stress
def test_the_oracle_accepts_every_plan_and_agrees_with_check_stress(progress: Progress) -> None:
    summary: dict[str, Any] = {}
    for variant in ORACLE_VARIANTS:
        started = time.monotonic()
        counts = run_oracle(STRESS_EXAMPLES, variant, counted(progress, f"oracle, {variant}", STRESS_EXAMPLES))
        summary[variant] = {**counts, "seconds": round(time.monotonic() - started, 1)}
    summary["total"] = {key: sum(v.get(key, 0) for v in summary.values()) for key in next(iter(summary.values()))}
    record("oracle", summary)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.rsplit("/", 1)[1][:-5] for p in SCENARIOS])
def test_scenario_plans_broken_every_way_check_agrees_with_the_oracle(path: str) -> None:
    dump = load(path)
    tree = MountTree(dump.mounts, dump.source)
    records = oracle.records_of_mounts(dump.mounts)
    try:
        plan = make_plan(tree, dump.targets, locked=dump.locked_mounts)
    except PlanRefused:
        assert "refuse" in dump.expect
        return
    steps = [s.as_json() for s in plan.steps]
    assert oracle.judge(records, dump.targets, steps, dump.locked_mounts) == []
    for label, broken in broken_plans(steps):
        verdict = oracle.judge(records, dump.targets, broken, dump.locked_mounts)
        by_check = check_plan(tree, dump.targets, [step_from_json(s) for s in broken], dump.locked_mounts)
        assert (verdict == []) == (by_check == []), (label, verdict, by_check)
