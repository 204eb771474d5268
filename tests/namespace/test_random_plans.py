"""Random plans run for real: random trees (no legacy siblings, which no kernel today can
build, and no mount stacked on the root, where the planner's path rule and the kernel's walk
from the process root differ), planned, judged by tests/oracle.py, then run by the executor in
a throwaway namespace against a replica. The kernel's verdict must be the oracle's: every planned plan runs and
verifies; a plan broken on purpose (which `run --plan` would have refused after `check`) fails
exactly when the oracle, judging the namespace the replica holds, says it is invalid.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from planner import mountinfo
from planner.errors import PlanRefused, ReplicaError
from planner.executor import execute
from planner.plan import make_plan
from planner.progress import Progress
from planner.replica import check_replicable
from planner.targets import Target
from planner.tree import MountTree
from tests import oracle
from tests.conftest import counted
from tests.reliability import record
from tests.test_oracle import broken_plans, records_of_specs, shared_parent_cases
from tests.test_properties import Spec, cases, line_of

pytestmark = pytest.mark.namespace

DEFAULT_EXAMPLES = 40  # per kind of tree
STRESS_EXAMPLES = 400  # per kind of tree


def _tag(spec: Spec, name: str) -> int | None:
    return next((int(o.split(":")[1]) for o in spec.optional if o.startswith(name + ":")), None)


@st.composite
def buildable(draw: Any, trees: st.SearchStrategy[tuple[list[Spec], str, list[Target]]]) -> tuple[list[Spec], str, list[Target]]:
    """A generated case made into one a kernel can hold: no peer group its own master (directly
    or through another), peers agreeing on their master; targets the replica cannot create
    (a file where the tree needs a directory) left out."""
    specs, _, targets = draw(trees)
    masters: dict[int, int | None] = {}
    for spec in specs:
        shared, master = _tag(spec, "shared"), _tag(spec, "master")
        if shared is not None:
            masters.setdefault(shared, master if master is not None and master < shared else None)
    for spec in specs:
        shared, master = _tag(spec, "shared"), _tag(spec, "master")
        keep = masters[shared] if shared is not None else master
        spec.optional = [o for o in spec.optional if not o.startswith("master:")] + ([f"master:{keep}"] if keep is not None else [])
    text = "".join(line_of(s) + "\n" for s in specs)
    mounts = mountinfo.parse(text, "<generated>")
    kept: list[Target] = []
    for target in targets:
        try:
            check_replicable(mounts, [*kept, target])
        except ReplicaError:
            continue
        kept.append(target)
    return specs, text, kept


KINDS_OF_TREES = {
    "propagation-stacked": lambda: buildable(cases(propagation=True, shadows=False)),
    "shared-parents": lambda: buildable(shared_parent_cases()),
}


def run_case(specs: list[Spec], text: str, targets: list[Target], counts: Counter[str], broken_per_plan: int) -> None:
    counts["trees"] += 1
    ids = {s.mount_id for s in specs}
    if any(s.mountpoint == "/" and s.parent_id in ids for s in specs):
        # A mount stacked on the namespace root: the planner's rule walks onto it, the kernel's
        # walk from the process root does not (see the README's notes); not run here.
        counts["stacked_on_the_root"] += 1
        event("not run: a mount stacked on the root")
        return
    mounts = mountinfo.parse(text, "<generated>")
    records = records_of_specs(specs)
    try:
        plan = make_plan(MountTree(mounts, "<generated>"), targets)
    except PlanRefused:
        counts["refused"] += 1
        return
    steps = [s.as_json() for s in plan.steps]
    assert oracle.judge(records, targets, steps) == []
    try:
        report = execute(mounts, targets, steps)
    except ReplicaError as err:  # e.g. a file target on a path the tree needs as a directory
        counts["not_replicable"] += 1
        event(f"not replicable: {str(err).split(':')[0]}")
        return
    counts["plans_run"] += 1
    counts["steps_run"] += report["steps_run"]
    assert report["ok"], (report, text, targets, steps)
    chooser = random.Random(text)
    for label, broken in chooser.sample(list(broken_plans(steps)), k=min(broken_per_plan, len(list(broken_plans(steps))))):
        verdict = oracle.judge(records, targets, broken, unlisted_peers=False)  # the replica holds nothing else
        report = execute(mounts, targets, broken)
        counts["broken_run"] += 1
        assert report["ok"] == (verdict == []), (label, verdict, report, text, targets, broken)
        if report["ok"]:
            counts["broken_ok"] += 1
        elif report["failed_step"] is None:
            counts["broken_failed_at_the_end"] += 1  # every step ran; the tree or a target is wrong
        else:
            # The journal undoes what the executor did; a dropped or crossed move-back changes the
            # tree in ways it does not hold, and the report then says what differs.
            counts["broken_failed_at_a_step"] += 1
            counts["broken_rolled_back_to_the_dump"] += report["tree_identical"] and report["unrestored"] == []


def run_random(kind: str, examples: int, broken_per_plan: int, tick: Callable[[], None] = lambda: None) -> Counter[str]:
    counts: Counter[str] = Counter()

    # No shrinking: each example forks namespaces, and the assertion already shows the whole case.
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(KINDS_OF_TREES[kind]())
    def body(case: tuple[list[Spec], str, list[Target]]) -> None:
        tick()
        run_case(*case, counts, broken_per_plan)

    body()
    return counts


@pytest.mark.parametrize("kind", list(KINDS_OF_TREES))
def test_random_plans_run_for_real_as_the_oracle_says(kind: str) -> None:
    counts = run_random(kind, DEFAULT_EXAMPLES, broken_per_plan=1)
    assert counts["plans_run"] > 0


@pytest.mark.stress
def test_random_plans_run_for_real_as_the_oracle_says_stress(progress: Progress) -> None:
    summary: dict[str, Any] = {}
    for kind in KINDS_OF_TREES:
        started = time.monotonic()
        tick = counted(progress, f"random plans in a namespace, {kind}", STRESS_EXAMPLES)
        summary[kind] = {**run_random(kind, STRESS_EXAMPLES, broken_per_plan=3, tick=tick),
                         "seconds": round(time.monotonic() - started, 1)}
    record("random_plans_in_a_namespace", summary)
