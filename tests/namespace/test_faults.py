"""Faults in the middle of steps, and the kernel's own: whatever fails, the tree comes back.

Injected: every call planner.kernel makes into the kernel (openat2, statx, move_mount,
open_tree, mount_setattr, umount2, mount, fsopen, fsconfig, fsmount, the /proc reads, sock_diag)
goes through a counter; the N-th call of step k raises an errno, for every step k and every N
(a first, clean run counts the calls each step makes). So the attach after open_tree in
keeper-bind, the attach after the clone in mount-source, yard-create's mount_setattr after its
attach and the statx checks after each move all fail in turn. pytest-mock only raises the
error; every other call, before and after, is the real one.

Real: the kernel's own refusals, provoked between two steps: EBUSY on a yard someone holds
open, EINVAL from a parent made shared behind the plan's back, ENOENT from a directory
removed in between.

After each fault, either the run went through (the executor treats some errors as answers,
e.g. ENOENT from the lookup that asks whether the yard's directory exists) and the kernel
confirmed every target and the tree, or it names step k, has rolled back, nothing is left
unrestored, the yard is gone, and the tree equals the dump with no mount the dump does not
have: the binds mount-source steps made are undone like everything else.

`make stress` runs every call of every step of every runnable scenario; `make test` does that
for the scenarios that between them have every kind of step, and one call per step elsewhere.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner import kernel
from planner.dump import Dump
from planner.executor import execute_here
from planner.executor.operations import Executor
from planner.inputs import load
from planner.plan import make_plan
from planner.progress import Progress
from planner.tree import MountTree
from tests.conftest import SCENARIOS
from tests.reliability import record

pytestmark = pytest.mark.namespace

ERRNOS = (errno.EBUSY, errno.EINVAL, errno.EPERM, errno.ENOENT, errno.EIO)
# The functions of planner.kernel that each make one call into the kernel; the others
# (attach, clone_mount, new_tmpfs, statx_mount_id, read_proc, ...) go through these.
SYSCALLS = ("openat2", "statx_ids", "move_mount", "open_tree", "mount_setattr", "umount2", "mount",
            "fsopen", "fsconfig", "fsmount", "proc_open", "unix_socket_diag")
# Between them these have every kind of step: bind, open, chdir (01), mmap (05), mount-source (06),
# keeper-bind, make-private, rejoin-group, keeper-remove (16), root (22), and the yard and the moves.
EVERY_CALL = ("01-seed-lxd-cgroup", "05-mmap-under-overmount", "06-hidden-bind-source", "16-shared-parent-with-peer",
              "22-chroot-root-under-overmount")


def runnable() -> dict[str, tuple[list[dict[str, Any]], Dump]]:
    cases = {}
    for path in SCENARIOS:
        dump = load(path)
        tree = MountTree(dump.mounts, dump.source)
        if "refuse" in dump.expect:
            continue  # no plan to run (tests/test_scenarios.py checks the refusal)
        if any(len(kids) > 1 for kids in tree.children_at.values()):
            continue  # legacy shadow siblings cannot be replicated (see test_end_to_end)
        steps = [s.as_json() for s in make_plan(tree, dump.targets).steps]
        cases[os.path.basename(path)[:-5]] = (steps, dump)
    return cases


CASES = runnable()


class Faults:
    """Counts the kernel calls of each step and fails the chosen one (in the namespace child,
    which inherits the patches); runs a hook before a step to provoke the kernel's own fault."""

    def __init__(
        self,
        fail: tuple[int, int] | None = None,
        err: int = errno.EIO,
        before: dict[int, Callable[[Executor], None]] | None = None,
        rollback_failures: int = 0,
    ) -> None:
        self.fail = fail  # (step index, N): the N-th kernel call of that step raises `err`
        self.err = err
        self.before = before or {}
        self.rollback_failures = rollback_failures  # then the rollback's first moves fail with EIO
        self.step = -1
        self.calls = 0
        self.trace: list[tuple[int, str]] = []
        self.fired: str | None = None

    def install(self, patch: Callable[[object, str, Any], object]) -> None:
        """Put the counters in place with `patch(owner, name, new)` (pytest-mock's or monkeypatch's)."""
        real_run_step = Executor.run_step

        def run_step(ex: Executor, index: int, step: Any) -> None:
            hook = self.before.get(index)
            if hook is not None:
                hook(ex)
            self.step, self.calls = index, 0
            try:
                real_run_step(ex, index, step)
            finally:
                self.step = -1  # after the plan (rollback, checks) nothing fails unless asked

        patch(Executor, "run_step", run_step)
        for name in SYSCALLS:
            patch(kernel, name, self._wrap(name, getattr(kernel, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.step >= 0:
                self.calls += 1
                self.trace.append((self.step, name))
                if (self.step, self.calls) == self.fail and self.fired is None:
                    self.fired = name
                    raise OSError(self.err, f"injected into {name}")
            elif self.fired and self.rollback_failures and name == "move_mount":
                self.rollback_failures -= 1
                raise OSError(errno.EIO, "injected into the rollback")
            return real(*args, **kwargs)

        return call

    def run(self, mocker: MockerFixture, name: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The plan of scenario `name` (or `steps`) with these faults; the report, plus what the child saw."""
        self.install(mocker.patch.object)
        return self.run_installed(name, steps)

    def run_installed(self, name: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        plan, dump = CASES[name]

        def then(replica: Any, ex: Executor, report: dict[str, Any]) -> dict[str, Any]:
            held = getattr(ex, "held_by_test", [])
            return {
                "trace": self.trace,
                "fired": self.fired,
                "mounts": sorted(replica.snapshot().mounts, key=str),
                "dumped": sorted(replica.expected.mounts, key=str),  # the dump's, and a forest's stand-in
                "held_fds_work": all(os.fstat(fd) is not None for fd in held),
                "held_mounts_gone": all(kernel.statx_ids(fd)[0] not in {m.mount_id for m in replica.live_table()}
                                        for fd in held),
            }

        return kernel.run_in_namespace(
            execute_here, list(dump.mounts), list(dump.targets), steps or plan, dump.file_mounts, None, then
        )


@functools.cache
def calls_per_step(name: str) -> tuple[tuple[str, ...], ...]:
    """The kernel calls each step of the scenario's plan makes when nothing fails."""
    plan, _ = CASES[name]
    faults = Faults()
    with pytest.MonkeyPatch.context() as patched:  # not pytest-mock's fixture: the answer is cached across tests
        faults.install(patched.setattr)
        report = faults.run_installed(name)
    assert report["ok"], report
    return tuple(tuple(call for k, call in report["then"]["trace"] if k == index) for index in range(len(plan)))


def fault_points(every_call: bool) -> list[Any]:
    """(scenario, step) pairs; N is chosen inside the test, once the calls are counted."""
    return [pytest.param(name, k, every_call or name in EVERY_CALL, id=f"{name}-step{k}-{steps[k]['op']}")
            for name, (steps, _) in CASES.items() for k in range(len(steps))]


def check_outcome(report: dict[str, Any], k: int) -> str:
    """'absorbed' (the run went through, verified) or 'rolled back' (step k failed, the tree is back)."""
    if report["ok"]:
        return "absorbed"
    failed = report["failed_step"]
    assert failed is not None and failed["index"] == k, failed
    assert report["rolled_back"] and report["unrestored"] == [], report["unrestored"]
    assert report["tree_identical"], report["tree_diff"]
    assert report["yard_empty"]
    # What the kernel's table holds after the rollback: the dump's mounts, not one more.
    assert report["then"]["mounts"] == report["then"]["dumped"]
    return "rolled back"


def fault_calls(name: str, k: int, every_call: bool, mocker: MockerFixture, every_errno: bool = False) -> list[str]:
    """Fail each chosen call of step k in turn (all, or one), with one errno or each; the outcomes."""
    mocker.stopall()  # counting needs the real calls underneath
    calls = calls_per_step(name)[k]
    assert calls, f"step {k} makes no kernel call"
    chosen = range(1, len(calls) + 1) if every_call else [len(calls) - k % len(calls)]
    outcomes = []
    for n in chosen:
        for err in ERRNOS if every_errno else [ERRNOS[(k + n) % len(ERRNOS)]]:
            mocker.stopall()
            report = Faults(fail=(k, n), err=err).run(mocker, name)
            assert report["then"]["fired"] == calls[n - 1], (n, report["then"]["fired"], calls)
            outcomes.append(check_outcome(report, k))
    return outcomes


@pytest.mark.parametrize("name, k, every_call", fault_points(every_call=False))
def test_a_fault_at_a_call_of_a_step_rolls_back_to_the_same_tree(
    name: str, k: int, every_call: bool, mocker: MockerFixture
) -> None:
    fault_calls(name, k, every_call, mocker)


@pytest.mark.stress
def test_every_call_of_every_step_stress(mocker: MockerFixture, progress: Progress) -> None:
    started = time.monotonic()
    summary: dict[str, Any] = {"scenarios": len(CASES), "steps": 0, "points": 0, "errnos": len(ERRNOS), "runs": 0,
                               "absorbed": 0, "rolled_back": 0, "points_by_op": {}, "points_by_call": {}}
    total = sum(len(steps) for steps, _ in CASES.values())
    for name, (steps, _) in CASES.items():
        for k, step in enumerate(steps):
            progress("faults at every call of every step", summary["steps"], total)
            outcomes = fault_calls(name, k, True, mocker, every_errno=True)
            calls = calls_per_step(name)[k]
            summary["steps"] += 1
            summary["points"] += len(calls)
            summary["runs"] += len(outcomes)
            summary["absorbed"] += outcomes.count("absorbed")
            summary["rolled_back"] += outcomes.count("rolled back")
            summary["points_by_op"][step["op"]] = summary["points_by_op"].get(step["op"], 0) + len(calls)
            for call in calls:
                summary["points_by_call"][call] = summary["points_by_call"].get(call, 0) + 1
    progress("faults at every call of every step", total, total)
    summary["seconds"] = round(time.monotonic() - started, 1)
    record("faults", summary)


def test_the_sample_has_every_kind_of_step() -> None:
    every = {s["op"] for steps, _ in CASES.values() for s in steps}
    assert {s["op"] for name in EVERY_CALL for s in CASES[name][0]} == every
    assert every >= {"yard-create", "yard-remove", "move-aside", "move-back", "keeper-bind", "make-private",
                     "rejoin-group", "keeper-remove", "open", "chdir", "root", "bind", "mmap", "mount-source"}


def test_a_failing_mount_source_is_undone_with_the_binds_before_it(mocker: MockerFixture) -> None:
    """The audit's case: scenario 06 fails at its move-back after both binds were made;
    the rollback unmounts them, and the comparison would see them if it did not."""
    steps, _ = CASES["06-hidden-bind-source"]
    k = next(i for i, s in enumerate(steps) if s["op"] == "move-back")
    report = Faults(fail=(k, 1), err=errno.EBUSY).run(mocker, "06-hidden-bind-source")
    assert [t["ok"] for t in report["targets"]] == [True, True]  # both binds were made and verified
    assert check_outcome(report, k) == "rolled back"


def test_a_lookup_failing_while_the_yard_is_made_removes_nothing_it_did_not_make(mocker: MockerFixture) -> None:
    """The stress run's find: ENOENT from the lookup of /srv (there, a mount point) while yard-create
    makes /srv/.overmount-yard, so it took /srv for missing, "made" it (mkdir said EEXIST), and
    yard-remove tried to remove /srv as well: EBUSY, and a run that had reached everything failed."""
    name = "25-chrooted-process-forest"
    calls = calls_per_step(name)[0]
    assert (CASES[name][0][0]["op"], CASES[name][0][0]["path"]) == ("yard-create", "/srv/.overmount-yard")
    assert calls[:3] == ("openat2", "openat2", "openat2")  # the yard's path (missing), /srv, /srv again for mkdir
    report = Faults(fail=(0, 2), err=errno.ENOENT).run(mocker, name)
    assert report["ok"], report["failed_step"]
    assert report["tree_identical"] and report["yard_empty"]


# --- a step fails, then the rollback's own move fails too ---------------------------------


def _rollback_cases() -> list[Any]:
    out = []
    for name, (steps, _) in CASES.items():
        asides = [k for k, s in enumerate(steps) if s["op"] == "move-aside"]
        later = [k for k, s in enumerate(steps)
                 if s["op"] in ("open", "chdir", "root", "bind", "mmap") and asides and k > asides[0]]
        if later:
            out.append(pytest.param(name, later[0], id=name))
    return out


@pytest.mark.parametrize("name, k", _rollback_cases())
def test_a_failing_rollback_says_where_each_mount_is(name: str, k: int, mocker: MockerFixture) -> None:
    """Step k fails, then the rollback's first move fails too: nothing is lost track of."""
    steps, _ = CASES[name]
    report = Faults(fail=(k, 1), err=errno.EBUSY, rollback_failures=1).run(mocker, name)
    assert not report["ok"] and report["failed_step"]["index"] == k
    stranded = [u for u in report["unrestored"] if u["what"] == "aside"]
    assert len(stranded) == 1, report["unrestored"]
    [lost] = stranded
    assert lost["errno"] == errno.EIO
    aside = next(s for s in reversed(steps[:k]) if s["op"] == "move-aside" and s["mount"] == lost["mount"])
    assert (lost["should_be_at"], lost["now_at"]) == (aside["from"], aside["to"])
    assert not report["tree_identical"]


# --- the kernel's own faults ---------------------------------------------------------------


def _step_index(name: str, op: str, **fields: Any) -> int:
    steps, _ = CASES[name]
    return next(k for k, s in enumerate(steps) if s["op"] == op and all(s.get(f) == v for f, v in fields.items()))


def test_a_yard_someone_holds_open_is_busy_and_still_goes(mocker: MockerFixture) -> None:
    """EBUSY from umount2: an fd on the yard. The step fails; the rollback detaches the empty
    yard lazily, and the fd's holder keeps a tmpfs no path reaches any more."""
    k = _step_index("01-seed-lxd-cgroup", "yard-remove")
    yard = CASES["01-seed-lxd-cgroup"][0][k]["path"]

    def hold_the_yard(ex: Executor) -> None:
        ex.held_by_test = [ex.resolve(yard, os.O_RDONLY | os.O_DIRECTORY)]  # type: ignore[attr-defined]

    report = Faults(before={k: hold_the_yard}).run(mocker, "01-seed-lxd-cgroup")
    failed = report["failed_step"]
    assert (failed["index"], failed["errno"]) == (k, errno.EBUSY), failed
    assert check_outcome(report, k) == "rolled back"
    assert report["then"]["held_fds_work"] and report["then"]["held_mounts_gone"]


def test_a_parent_made_shared_behind_the_plans_back_is_einval(mocker: MockerFixture) -> None:
    """EINVAL from move_mount: between two moves someone makes the next mount's parent shared.
    The mounts already moved go back; the only difference left is the one the executor did
    not make (the parent's new peer group), and no mount the dump does not have remains."""
    name = "08-covers-at-two-levels"  # 33 moves aside, then 32, whose parent 31 is at /data/projects/web
    k = _step_index(name, "move-aside", mount=32)
    assert any(s["op"] == "move-aside" for s in CASES[name][0][:k])  # something to roll back

    def share_the_parent(ex: Executor) -> None:
        fd = ex.resolve("/data/projects/web")
        try:
            kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_SHARED)
        finally:
            os.close(fd)

    report = Faults(before={k: share_the_parent}).run(mocker, name)
    failed = report["failed_step"]
    assert (failed["index"], failed["errno"]) == (k, errno.EINVAL), failed
    assert "parent 31 is shared" in failed["reason"]
    assert report["rolled_back"] and report["unrestored"] == [] and report["yard_empty"]
    assert report["tree_diff"] == ["peer_groups: [] only here, [{31}] only there"]
    assert report["then"]["mounts"] == report["then"]["dumped"]


@pytest.mark.parametrize("name, op, gone", [
    pytest.param("01-seed-lxd-cgroup", "move-aside", "slot", id="a-yard-slot-removed"),
    pytest.param("06-hidden-bind-source", "mount-source", "to", id="a-bind-destination-removed"),
    pytest.param("02-open-file-dir-overmounted", "open", "path", id="a-target-removed"),
])
def test_a_directory_removed_in_between_is_enoent(name: str, op: str, gone: str, mocker: MockerFixture) -> None:
    """ENOENT from the kernel: what a step needs was removed just before it (the mount-source
    case fails after its clone was made, before it is attached)."""
    k = _step_index(name, op)
    step = CASES[name][0][k]
    where = step[{"slot": "to", "to": "to", "path": "path"}[gone]]

    def remove_it(ex: Executor) -> None:
        parent, _, leaf = where.rpartition("/")
        fd = ex.resolve(parent or "/", os.O_PATH | os.O_DIRECTORY)
        try:
            os.unlink(leaf, dir_fd=fd) if op == "open" else os.rmdir(leaf, dir_fd=fd)
        finally:
            os.close(fd)

    report = Faults(before={k: remove_it}).run(mocker, name)
    failed = report["failed_step"]
    assert (failed["index"], failed["errno"]) == (k, errno.ENOENT), failed
    assert check_outcome(report, k) == "rolled back"
