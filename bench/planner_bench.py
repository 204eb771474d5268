"""The pure core on generated hosts: parse, tree, analysis, plan; time, peak memory, moves.

Timings are the best of a few repetitions (the machine is shared and noisy), each
started after a full gc.collect() and with the garbage collector left on, as a
user's run has it. Wall time is what the targets are judged on; CPU time of the
same phases is kept in the JSON to tell load from work. Peak memory comes from a
separate run under tracemalloc (which slows everything down, so it is never timed).

Phases, as `overmount analyze` and `overmount plan` run them:
  parse     mountinfo text -> Mount records (planner.mountinfo.parse)
  tree      records -> MountTree (ids, parents, children by mountpoint)
  analysis  analyze(tree, targets) and its whole-tree hidden-mount list
            (what `overmount analyze` prints)
  plan      make_plan(tree, targets): its own analysis of the targets, the
            planning walk, and a final symbolic check_plan of the result
            (check is also timed alone, to show its share)
  total     parse + tree + plan: text in, checked plan out (`overmount plan`)
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.generate import GeneratedHost, generate
from planner import mountinfo
from planner.analysis import Analysis, analyze
from planner.check import check_plan
from planner.plan import make_plan
from planner.tree import MountTree

PHASES = ("parse", "tree", "analysis", "plan", "check")


@dataclass
class PlannerRow:
    mounts: int
    hidden_pct: float
    targets: int
    holders: int  # mounts holding a hidden target
    hidden_targets: int
    hidden_mounts: int
    reps: int
    wall: dict[str, float]  # phase -> best seconds
    cpu: dict[str, float]
    total: float  # parse + tree + plan, wall
    total_cpu: float
    peak_mib: float
    moves: int
    lower_bound: int
    naive: int
    steps: int
    one_bracket_serves: bool
    shapes: dict[str, int] = field(default_factory=dict)
    growth: dict[str, float | None] = field(default_factory=dict)  # phase -> time here / time at a tenth the mounts

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def one_bracket_serves(tree: MountTree, analysis: Analysis) -> bool:
    """No target's own chain runs through a mount some target needs moved (as tests/test_properties.py has it).

    Then every covering mount can stay out for all targets: one bracket, and
    the planner should move exactly the lower bound.
    """
    movers = {m for finding in analysis.targets for m in finding.needed_movers}
    return not any(m.mount_id in movers for f in analysis.targets for m in tree.chain(f.target.mount))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _whole_analysis(tree: MountTree, host: GeneratedHost) -> Analysis:
    analysis = analyze(tree, host.targets)
    analysis.hidden_mounts  # noqa: B018 - the whole-tree pass is computed on first use; make it happen here
    return analysis


def _one_run(host: GeneratedHost) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU seconds of each phase, for one run from the text."""
    wall, cpu = {}, {}
    mounts, wall["parse"], cpu["parse"] = _timed(lambda: mountinfo.parse(host.mountinfo, "<generated>"))
    tree, wall["tree"], cpu["tree"] = _timed(lambda: MountTree(mounts, "<generated>"))
    _, wall["analysis"], cpu["analysis"] = _timed(lambda: _whole_analysis(tree, host))
    plan, wall["plan"], cpu["plan"] = _timed(lambda: make_plan(tree, host.targets))
    problems, wall["check"], cpu["check"] = _timed(lambda: check_plan(tree, host.targets, list(plan.steps)))
    if problems:
        raise AssertionError(f"check_plan rejects the plan for {host.mounts} mounts: {problems[:3]}")
    return wall, cpu


def measure_case(host: GeneratedHost, reps: int) -> PlannerRow:
    wall = dict.fromkeys(PHASES, float("inf"))
    cpu = dict.fromkeys(PHASES, float("inf"))
    totals, totals_cpu = [], []
    for _ in range(reps):
        gc.collect()
        run_wall, run_cpu = _one_run(host)
        for phase in PHASES:
            wall[phase] = min(wall[phase], run_wall[phase])
            cpu[phase] = min(cpu[phase], run_cpu[phase])
        # The total is judged per run (all phases of one run), not as a sum of bests from different runs.
        totals.append(run_wall["parse"] + run_wall["tree"] + run_wall["plan"])
        totals_cpu.append(run_cpu["parse"] + run_cpu["tree"] + run_cpu["plan"])
    gc.collect()

    # Outcome and structure, once, untimed.
    tree = MountTree(mountinfo.parse(host.mountinfo, "<generated>"), "<generated>")
    analysis = analyze(tree, host.targets)
    plan = make_plan(tree, host.targets)
    row = PlannerRow(
        mounts=host.mounts,
        hidden_pct=host.hidden_fraction * 100,
        targets=len(host.targets),
        holders=host.holders,
        hidden_targets=sum(1 for f in analysis.targets if f.hidden),
        hidden_mounts=len(analysis.hidden_mounts),
        reps=reps,
        wall=wall,
        cpu=cpu,
        total=min(totals),
        total_cpu=min(totals_cpu),
        peak_mib=0.0,
        moves=plan.moves,
        lower_bound=plan.least_moves,  # with aliases: what a plan can meet
        naive=plan.naive_moves,
        steps=len(plan.steps),
        one_bracket_serves=one_bracket_serves(tree, analysis),
        shapes=dict(host.shapes),
    )
    del tree, analysis, plan
    row.peak_mib = peak_memory(host) / 2**20
    return row


def peak_memory(host: GeneratedHost) -> int:
    """Peak bytes traced over parse -> tree -> analysis -> plan (the generated input itself excluded)."""
    gc.collect()
    tracemalloc.start()
    try:
        tree = MountTree(mountinfo.parse(host.mountinfo, "<generated>"), "<generated>")
        _whole_analysis(tree, host)
        make_plan(tree, host.targets)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def add_growth(rows: list[PlannerRow]) -> None:
    """Per hidden share, each phase's time over its time at a tenth the mounts (10 = linear)."""
    by_key = {(r.hidden_pct, r.mounts): r for r in rows}
    for row in rows:
        smaller = by_key.get((row.hidden_pct, row.mounts // 10))
        for phase in (*PHASES, "total"):
            if smaller is None:
                row.growth[phase] = None
                continue
            now = row.total if phase == "total" else row.wall[phase]
            before = smaller.total if phase == "total" else smaller.wall[phase]
            row.growth[phase] = now / before if before > 0 else None


def run(sizes: tuple[int, ...], fractions: tuple[float, ...], log: Callable[[str], None]) -> list[PlannerRow]:
    rows = []
    for fraction in fractions:
        for mounts in sizes:
            host = generate(mounts, fraction)
            reps = 3 if mounts >= 100_000 else 5 if mounts >= 10_000 else 20
            log(f"  planner: {mounts} mounts, {len(host.targets)} hidden targets ({reps} runs) ...")
            rows.append(measure_case(host, reps))
    add_growth(rows)
    return rows
