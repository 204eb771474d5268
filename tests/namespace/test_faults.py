"""Fault injection at every step of every scenario's plan: the executor rolls back and says what failed.

pytest-mock wraps the syscall layer (planner.kernel): during step k the first
call that does the step's real work raises the injected errno. The executor runs
in a forked child, which inherits the patched module.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner import kernel
from planner.dump import load
from planner.execute import Executor, execute
from planner.plan import make_plan
from planner.tree import MountTree
from tests.conftest import SCENARIOS

pytestmark = pytest.mark.namespace

ERRNOS = (errno.EBUSY, errno.EINVAL, errno.EPERM, errno.ENOENT)
# The calls that change the tree; target steps (open, chdir, root, bind, mmap) fail where they resolve their path.
MUTATING = ("move_mount", "attach", "mount", "umount2", "mount_setattr", "open_tree")
TARGET_OPS = ("open", "chdir", "root", "bind", "mmap")


def runnable() -> list[tuple[str, list[dict[str, Any]], Any]]:
    cases = []
    for path in SCENARIOS:
        dump = load(path)
        tree = MountTree(dump.mounts, dump.source)
        if "refuse" in dump.expect:
            continue  # no plan to run (tests/test_scenarios.py checks the refusal)
        if any(len(kids) > 1 for kids in tree.children_at.values()):
            continue  # legacy shadow siblings cannot be replicated (see test_end_to_end)
        steps = [s.as_json() for s in make_plan(tree, dump.targets).steps]
        cases.append((os.path.basename(path)[:-5], steps, dump))
    return cases


CASES = runnable()


def inject(mocker: MockerFixture, fail_at: int, err: int, op: str, rollback_failures: int = 0) -> None:
    state = {"index": -1, "fired": False, "rollback_left": rollback_failures}
    real_run_step = Executor.run_step

    def run_step(self: Executor, index: int, step: Any) -> None:
        state["index"] = index
        try:
            real_run_step(self, index, step)
        finally:
            state["index"] = -1  # after the plan (rollback, checks) nothing fails unless asked

    mocker.patch.object(Executor, "run_step", run_step)
    wanted = ("openat2",) if op in TARGET_OPS else MUTATING
    for name in set(MUTATING) | {"openat2"}:
        real = getattr(kernel, name)

        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            if state["index"] == fail_at and not state["fired"] and _name in wanted:
                state["fired"] = True
                raise OSError(err, f"injected into {_name}")
            if state["fired"] and state["index"] == -1 and state["rollback_left"] and _name == "move_mount":
                state["rollback_left"] -= 1
                raise OSError(errno.EIO, "injected into the rollback")
            return _real(*args, **kwargs)

        mocker.patch.object(kernel, name, side_effect=wrapper)


def matrix(all_errnos: bool) -> list[Any]:
    params = []
    for name, steps, _ in CASES:
        for k, step in enumerate(steps):
            chosen = ERRNOS if all_errnos else (ERRNOS[k % len(ERRNOS)],)
            params.extend(pytest.param(name, k, err, id=f"{name}-step{k}-{errno.errorcode[err]}") for err in chosen)
    return params


def _case(name: str) -> tuple[list[dict[str, Any]], Any]:
    _, steps, dump = next(c for c in CASES if c[0] == name)
    return steps, dump


def check_rolled_back(report: dict[str, Any], k: int, err: int, step: dict[str, Any]) -> None:
    failed = report["failed_step"]
    assert not report["ok"] and report["rolled_back"]
    assert (failed["index"], failed["op"], failed["errno"]) == (k, step["op"], err), failed
    assert report["unrestored"] == []
    assert report["tree_identical"], report.get("tree_diff")
    assert report["yard_empty"]


def fail_step_and_check(name: str, k: int, err: int, mocker: MockerFixture) -> None:
    steps, dump = _case(name)
    inject(mocker, k, err, steps[k]["op"])
    report = execute(list(dump.mounts), list(dump.targets), steps, file_mounts=dump.file_mounts)
    check_rolled_back(report, k, err, steps[k])


@pytest.mark.parametrize("name, k, err", matrix(all_errnos=False))
def test_a_failing_step_rolls_back_to_the_same_tree(name: str, k: int, err: int, mocker: MockerFixture) -> None:
    fail_step_and_check(name, k, err, mocker)


@pytest.mark.stress
@pytest.mark.parametrize("name, k, err", matrix(all_errnos=True))
def test_every_errno_at_every_step(name: str, k: int, err: int, mocker: MockerFixture) -> None:
    fail_step_and_check(name, k, err, mocker)


def _rollback_cases() -> list[Any]:
    out = []
    for name, steps, _ in CASES:
        asides = [k for k, s in enumerate(steps) if s["op"] == "move-aside"]
        targets = [k for k, s in enumerate(steps) if s["op"] in TARGET_OPS]
        later = [k for k in targets if asides and k > asides[0]]
        if later:
            out.append(pytest.param(name, later[0], id=name))
    return out


@pytest.mark.parametrize("name, k", _rollback_cases())
def test_a_failing_rollback_says_where_each_mount_is(name: str, k: int, mocker: MockerFixture) -> None:
    """Step k fails, then the rollback's first move fails too: nothing is lost track of."""
    steps, dump = _case(name)
    inject(mocker, k, errno.EBUSY, steps[k]["op"], rollback_failures=1)
    report = execute(list(dump.mounts), list(dump.targets), steps, file_mounts=dump.file_mounts)
    assert not report["ok"] and report["failed_step"]["index"] == k
    stranded = [u for u in report["unrestored"] if u["what"] == "aside"]
    assert len(stranded) == 1, report["unrestored"]
    [lost] = stranded
    assert lost["errno"] == errno.EIO
    aside = next(s for s in reversed(steps[:k]) if s["op"] == "move-aside" and s["mount"] == lost["mount"])
    assert (lost["should_be_at"], lost["now_at"]) == (aside["from"], aside["to"])
    assert not report["tree_identical"]
