"""A run from start to end: the replica built in a throwaway namespace, the plan's steps through the
executor, the rollback when one fails, and the last checks (the tree as dumped, the yard empty, each
new bind mount where the dump has it) into a Report."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from planner import kernel
from planner.executor.operations import Executor
from planner.executor.report import BaseReporter, FailedStep, ProgressReporter, Report, TargetResult
from planner.mountinfo import Mount
from planner.progress import on_stderr, quiet
from planner.replica import Replica, TreeShape, build_replica
from planner.steps import MissingField, Step, step_from_json
from planner.targets import Target


def as_steps(steps: Iterable[object]) -> list[Step]:
    """Steps as the executor takes them: Step records, or their JSON objects (ValueError when one is not a step)."""
    return [s if isinstance(s, Step) else step_from_json(dict(s) if isinstance(s, Mapping) else s) for s in steps]


def run_plan(
    replica: Replica, targets: Iterable[Target], steps: list[Step], reporter: BaseReporter | None = None
) -> tuple[Report, Executor]:
    """Run steps against a replica built in this namespace; the report, and the executor for probing."""
    targets = list(targets)
    reporter = reporter or BaseReporter()
    ex = Executor(replica, targets, reporter)
    ex.prepare(steps)
    before: TreeShape = replica.snapshot()
    failed: FailedStep | None = None
    steps_run = 0
    reporter.starting(steps)
    for index, step in enumerate(steps):
        try:
            ex.run_step(index, step)
        except Exception as exc:  # noqa: BLE001 - any failure of a step is reported and rolled back
            err = exc.errno if isinstance(exc, OSError) else None
            reason = f"missing field {exc.key!r}" if isinstance(exc, MissingField) else str(exc)
            failed = FailedStep(index, step, err, reason)
            reporter.step_failed(failed)
            break
        steps_run += 1
        reporter.step_done(index, step)
    unrestored = ex.rollback() if failed is not None else []
    table = replica.live_table()
    if failed is None:
        ex.verify_created(table)
    after = replica.snapshot(table)
    # The binds mount-source steps made belong in the tree only when the run succeeded: after a
    # rollback every mount the dump does not have counts as a difference.
    made = [f"live:{live}" for live in ex.created] if failed is None else []
    tree = replica.tree
    report = Report(
        targets=[ex.results.get(t.id) or TargetResult.not_reached(t.id, t.kind, t.mount) for t in targets],
        steps_run=steps_run,
        failed_step=failed,
        rolled_back=failed is not None,
        tree_diff=before.diff(after.without(made)),
        yard_empty=ex.yard_empty(table),
        unrestored=unrestored,
        created_mounts=list(ex.created.values()),
        # A forest: what the table does not list is one private tmpfs at / in the replica.
        stand_in=None if tree.stand_in is None else {
            "tops": [top.mount_id for top in tree.tops],
            "unlisted_parents": sorted(set(tree.unlisted_parent.values())),
        },
    )
    reporter.ending(report)
    return report, ex


def named_by_handle(mounts: list[Mount], steps: list[Step]) -> set[int]:
    """Mounts the executor may have to name by its own handle: the plan keeps their peer group, and
    a mount stacked on their root means no path names them (see Resolver.named); and the hidden
    mount of a bind through an alias, where the socket file is looked up after the bind."""
    bracketed = {s.mount for s in steps if s.op in ("keeper-bind", "make-private", "rejoin-group")}
    by_id = {m.mount_id: m for m in mounts}
    aliased = {s.mount for s in steps if s.op == "bind" and s.via is not None}
    return {
        m.parent_id
        for m in mounts
        if m.parent_id in bracketed and m.parent_id != m.mount_id and m.parent_id in by_id
        and by_id[m.parent_id].mountpoint == m.mountpoint
    } | {m for m in aliased if isinstance(m, int) and m in by_id}


def execute_here(
    mounts: list[Mount],
    targets: list[Target],
    steps: Iterable[object],
    file_mounts: Collection[int] = frozenset(),
    scratch_dir: str | None = None,
    then: Callable[[Replica, Executor, dict[str, Any]], Any] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Build the replica and run the plan in *this* process, which must already be in a throwaway namespace.

    show_progress: progress bars on this process's standard error, when that is a terminal."""
    plan = as_steps(steps)
    kernel.raise_fd_limit()  # in this child only: a deep tree holds one fd per level while it is built
    progress = on_stderr() if show_progress else quiet
    replica = build_replica(mounts, targets, scratch_dir, file_mounts, handles_for=named_by_handle(mounts, plan),
                            progress=progress)
    report, ex = run_plan(replica, targets, plan, ProgressReporter(progress))
    out = report.as_json()
    if then is not None:
        out["then"] = then(replica, ex, out)
    return out


def execute(
    mounts: list[Mount],
    targets: list[Target],
    steps: Iterable[object],
    *,
    file_mounts: Collection[int] = (),
    user_ns: bool | None = None,
    scratch_dir: str | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Replica + plan + verification in a throwaway mount namespace; the report (Report.as_json).

    steps: Step records or their JSON objects. user_ns: True to go through a user namespace even as
    root; None (default) does so only when not root. Raises ReplicaError when the dump cannot be
    built. show_progress: the namespace child draws progress on standard error when it is a terminal.
    """
    return kernel.run_in_namespace(
        execute_here,
        list(mounts),
        list(targets),
        as_steps(steps),
        frozenset(file_mounts),
        scratch_dir,
        None,
        show_progress,
        user_ns=user_ns,
    )
