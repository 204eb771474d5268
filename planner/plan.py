"""A plan, and make_plan: the one entry point that analyses the targets, refuses what no strategy can
do, runs the strategy chosen by name (planner/strategies/) and judges the end state as check does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.analysis import analyze
from planner.bulk import collector_paused
from planner.check import final_problems
from planner.errors import PlanRefused
from planner.progress import Progress, quiet
from planner.steps import FORMAT, Step
from planner.strategies import WHOLE_TABLE, Planned, Request, move_aside
from planner.strategies.order import refuse_duplicate_binds
from planner.targets import Target
from planner.tree import MountTree

DEFAULT_YARD = move_aside.DEFAULT_YARD
# Each strategy by the name make_plan takes: Request in, Planned out.
STRATEGIES: dict[str, Callable[[Request], Planned]] = {
    "move-aside": move_aside.plan,
}


@dataclass(frozen=True)
class Plan:
    yard: str
    steps: tuple[Step, ...]
    lower_bound: int
    naive_moves: int
    # Targets that are not hidden and whose step reaches them at their own path (not through
    # the yard): no move is needed for them. Renderings for people may summarise their steps;
    # the plan (and its JSON) keeps every one.
    in_place: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()  # the targets that are hidden
    lower_bound_with_aliases: int | None = None  # None: the same as lower_bound (no alias serves a target)

    @property
    def moves(self) -> int:
        """Move-asides in the plan; each has its move-back."""
        return sum(1 for step in self.steps if step.op == "move-aside")

    def as_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "yard": self.yard,
            "steps": [step.as_json() for step in self.steps],
            "moves": self.moves,
            "lower_bound": self.lower_bound,
            "lower_bound_with_aliases": self.least_moves,
            "naive_moves": self.naive_moves,
        }

    @property
    def least_moves(self) -> int:
        """The lower bound this plan can meet: with hidden bind targets bound through visible aliases."""
        return self.lower_bound if self.lower_bound_with_aliases is None else self.lower_bound_with_aliases


def make_plan(
    tree: MountTree,
    targets: list[Target] | tuple[Target, ...],
    yard: str | None = None,
    kernel: tuple[int, int] = (6, 18),
    locked: frozenset[int] = frozenset(),
    progress: Progress = quiet,
    strategy: str = "move-aside",
) -> Plan:
    """The plan for `targets`, or PlanRefused saying why none the kernel would accept exists.

    yard: where covering mounts are parked; None for the strategy's default (move-aside: DEFAULT_YARD,
    or in a forest whose / is not listed or cannot hold a yard, a listed tmpfs instead).

    kernel: the kernel the plan is for (the CLI passes the running one); locked: mounts locked
    to their parent in a user namespace (the dump's locked_mounts), which no move may take.
    progress hears how many targets are reached so far. strategy: one of STRATEGIES.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    with collector_paused():
        return _make_plan(tree, targets, yard, kernel, locked, progress, STRATEGIES[strategy])


def _make_plan(
    tree: MountTree, targets: list[Target] | tuple[Target, ...], yard: str | None, kernel: tuple[int, int],
    locked: frozenset[int], progress: Progress, strategy: Callable[[Request], Planned],
) -> Plan:
    analysis = analyze(tree, targets)
    for finding in analysis.targets:
        if finding.unlisted:  # a forest whose trees' places relative to each other are unknown
            other, top = finding.unlisted[0]
            home = tree.top_of(finding.target.mount)
            raise PlanRefused(
                f"target {finding.target.id}: reaching {finding.target.path} depends on mounts the table does not "
                f"list: mount {tree.unlisted_parent[home.mount_id]} (mount {home.mount_id} at {home.mountpoint} hangs "
                f"from it) and mount {other} (mount {top.mount_id} at {top.mountpoint} hangs from it); which lies over "
                f"the other is unknown; {WHOLE_TABLE}"
            )
    refuse_duplicate_binds(analysis)
    planned = strategy(Request(tree, analysis, yard, kernel, locked, progress))
    in_view = {f.target.id: f.target for f in analysis.targets if not f.hidden}
    in_place = frozenset(
        s.target for s in planned.steps
        if s.target in in_view and (s.path, s.to) == (in_view[s.target].path, in_view[s.target].to)
    )
    hidden = frozenset(f.target.id for f in analysis.targets if f.hidden)
    plan = Plan(planned.yard, planned.steps, analysis.lower_bound, analysis.naive_moves, in_place, hidden,
                analysis.lower_bound_with_aliases)
    # Every step already went through check's apply_step as it was emitted, so what check_plan
    # would add is its verdict on the end state; running all steps again would only repeat the
    # same simulation.
    problems = final_problems(planned.session, None, targets)
    if problems:
        raise PlanRefused("no valid plan: " + "; ".join(problems))
    return plan
