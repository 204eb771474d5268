"""A restorer killed with -9 part way through a plan, for real, and `overmount recover` putting back
what it left in the yard.

The *holder* (a process this test starts) makes a throwaway mount namespace, builds the replica
of scenario 24 (a systemd host: every mount shared, peers and slaves) and forks the *restorer*,
which runs the plan's first steps with real syscalls and waits. The test kills the restorer with
SIGKILL; the holder keeps the namespace alive. `overmount recover PLAN --pid HOLDER` must then
leave the namespace's mount table exactly as it was before the plan: every mount, parent, place,
option and peer group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from planner.inputs import load
from planner.plan import make_plan
from planner.tree import MountTree
from tests.conftest import REPO

pytestmark = pytest.mark.namespace

SCENARIO = os.path.join(REPO, "scenarios", "24-systemd-every-mount-shared.toml")

HOLDER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from planner import kernel
    from planner.inputs import load
    from planner.executor.operations import Executor
    from planner.executor.run import as_steps, named_by_handle
    from planner.replica import build_replica

    scenario, plan_file, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dump = load(scenario)
    with open(plan_file) as handle:
        steps = as_steps(json.load(handle)["steps"])
    kernel.enter_private_namespace()  # this process's own throwaway namespace
    mounts, targets = list(dump.mounts), list(dump.targets)
    replica = build_replica(mounts, targets, None, dump.file_mounts, handles_for=named_by_handle(mounts, steps))
    before = kernel.own_mountinfo()
    restorer = os.fork()
    if restorer == 0:
        ex = Executor(replica, targets)
        ex.prepare(steps)
        for index in range(stop_after):
            ex.run_step(index, steps[index])
        print(json.dumps({"restorer": os.getpid(), "before": before, "mid": kernel.own_mountinfo()}), flush=True)
        while True:
            time.sleep(60)  # until killed with SIGKILL, mid-plan
    _, status = os.waitpid(restorer, 0)
    print(json.dumps({"restorer_ended_by": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}), flush=True)
    sys.stdin.read()  # keeps the namespace alive until the test closes our stdin
    """
)


def _lines(table: str) -> list[str]:
    return sorted(table.splitlines())


def _crash_and_recover(stop_after: int, tmp_path: Path) -> dict[str, Any]:
    dump = load(SCENARIO)
    plan = make_plan(MountTree(dump.mounts, dump.source), dump.targets)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.as_json()))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, SCENARIO, str(plan_file), str(stop_after)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline()
        if not line:
            pytest.fail(f"holder failed: {holder.stderr.read() if holder.stderr else ''}")
        state = json.loads(line)
        os.kill(state["restorer"], signal.SIGKILL)  # the restorer: killed mid-plan
        assert json.loads(holder.stdout.readline()) == {"restorer_ended_by": signal.SIGKILL}
        recovered = subprocess.run([sys.executable, "-m", "planner", "recover", str(plan_file), "--pid", str(holder.pid)],
                                   capture_output=True, text=True, cwd=REPO, check=False)
        with open(f"/proc/{holder.pid}/mountinfo", encoding="utf-8") as handle:
            after = handle.read()
        return {"plan": [s.as_json() for s in plan.steps], "state": state, "after": after, "recovered": recovered}
    finally:
        if holder.poll() is None:
            holder.stdin.close()  # type: ignore[union-attr]
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        for stream in (holder.stdout, holder.stderr):
            if stream:
                stream.close()


@pytest.mark.parametrize("stop_after", [3, 8, 13], ids=["yard-made", "both-covers-parked", "root-still-private"])
def test_recover_after_kill_9_puts_the_tree_back(stop_after: int, tmp_path: Path) -> None:
    out = _crash_and_recover(stop_after, tmp_path)
    state, recovered = out["state"], out["recovered"]
    assert _lines(state["mid"]) != _lines(state["before"]), "the crash must leave something to recover"
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert _lines(out["after"]) == _lines(state["before"])
    lines = recovered.stdout.splitlines()
    assert lines[-1].startswith("ok:") and all(not line.startswith(("LOST", "NOT")) for line in lines)
    ops = [line.split()[1] for line in lines if line.startswith("ran ")]
    assert ops[-1] == "yard-remove" and ops[-3:-1] == ["rejoin-group", "keeper-remove"]  # / rejoins last
    if stop_after == 8:
        assert ops[:2] == ["move-back", "move-back"]


def test_a_crash_before_the_yard_took_the_keeper_is_reported(tmp_path: Path) -> None:
    """Killed between / going private and the yard taking its keeper (held by the dead process's fd):
    nothing is parked, and / cannot rejoin its group; recover says so instead of guessing."""
    out = _crash_and_recover(2, tmp_path)
    recovered = out["recovered"]
    assert recovered.returncode == 0, recovered.stderr
    assert "nothing to recover" in recovered.stdout
    assert "mount" in recovered.stdout and "is private, and no keeper of its peer group is in a yard" in recovered.stdout
    before, after = _lines(out["state"]["before"]), _lines(out["after"])
    [was] = [line for line in before if line.split()[4] == "/"]
    [now] = [line for line in after if line.split()[4] == "/"]
    assert " shared:" in was and " shared:" not in now  # the one thing lost: /'s peer group
    assert [line for line in before if line != was] == [line for line in after if line != now]


def test_recover_refuses_the_namespace_it_runs_in(tmp_path: Path) -> None:
    dump = load(SCENARIO)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(make_plan(MountTree(dump.mounts, dump.source), dump.targets).as_json()))

    def recover(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "planner", "recover", str(plan_file), *extra],
                              capture_output=True, text=True, cwd=REPO, check=False)

    refused = recover("--pid", str(os.getpid()))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        (f"overmount: pid {os.getpid()}: that is overmount's own mount namespace; recover acts there only "
         "with --own-namespace (see what it would do with --dry-run)")]
    by_path = recover("--ns", "/proc/self/ns/mnt")  # the recover process's own: refused just the same
    assert by_path.returncode == 2 and "own mount namespace" in by_path.stderr
    looked = recover("--pid", str(os.getpid()), "--dry-run")
    assert looked.returncode == 0 and "nothing to recover" in looked.stdout
    assert recover().returncode == 2 and recover("--pid", "1", "--ns", "/x").returncode == 2
