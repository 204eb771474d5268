"""Real limits and real signals: `run` under `ulimit -n 1024` on a 20,000-mount host, Ctrl-C, kill -9.

Every process here is one this test started, and each is ended by its pid.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.generate import generate
from tests.conftest import REPO

pytestmark = pytest.mark.namespace


@pytest.fixture(scope="module")
def host_20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Kubernetes-like host: 20,000 mounts, 1% holding a hidden target (200)."""
    host = generate(20_000, 0.01, propagation="rslave")
    path = tmp_path_factory.mktemp("hosts") / "host-20k.json"
    dump = {"format": "overmount-dump/1", "mountinfo": host.mountinfo, "targets": [t.as_json() for t in host.targets]}
    path.write_text(json.dumps(dump))
    return path


def _fd_limit_1024() -> None:
    # Soft and hard: raising the soft limit to the hard one cannot help, only bounded fds can.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_run_on_20000_mounts_under_ulimit_n_1024(host_20k: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "planner", "run", str(host_20k), "--json"],
        capture_output=True, text=True, cwd=REPO, preexec_fn=_fd_limit_1024, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["ok"] and report["tree_identical"] and report["yard_empty"]
    assert len(report["targets"]) == 200 and all(t["ok"] for t in report["targets"])


def _namespace_child(pid: int) -> int | None:
    """The child of `pid` that lives in a mount namespace of its own (not, say, the ldconfig that
    ctypes.util.find_library runs at import)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            kids = [int(x) for x in handle.read().split()]
        ours = os.readlink(f"/proc/{pid}/ns/mnt")
    except FileNotFoundError:
        return None
    for kid in kids:
        try:
            if os.readlink(f"/proc/{kid}/ns/mnt") != ours:
                return kid
        except FileNotFoundError:
            continue
    return None


def _wait_for_child(pid: int, timeout: float = 30.0) -> int:
    """The namespace child of the overmount process `pid`, once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kid = _namespace_child(pid)
        if kid is not None:
            return kid
        time.sleep(0.01)
    raise AssertionError(f"overmount {pid} forked no namespace child within {timeout} s")


def test_ctrl_c_exits_130_with_one_line_and_ends_the_namespace_child(host_20k: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner", "run", str(host_20k)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )
    try:
        child = _wait_for_child(proc.pid)
        time.sleep(0.3)  # well into the replica build
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["overmount: interrupted"]
    assert stdout == ""
    assert not os.path.exists(f"/proc/{child}"), "the namespace child outlived overmount"


def test_sigint_to_overmount_alone_also_ends_its_child(host_20k: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner", "run", str(host_20k)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        child = _wait_for_child(proc.pid)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # only the parent: it must end the child itself
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and stderr.splitlines() == ["overmount: interrupted"]
    assert not os.path.exists(f"/proc/{child}")


# Run as its own process: it makes itself a child subreaper, so the orphaned namespace child is
# re-parented to it and its wait status shows how it ended.
KILL_9 = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys, time
    from tests.namespace.test_limits_and_signals import _wait_for_child
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    proc = subprocess.Popen([sys.executable, "-m", "planner", "run", sys.argv[1]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _wait_for_child(proc.pid)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, status = os.waitpid(child, 0)  # ours now: the subreaper inherits the orphan
    print(json.dumps({"signaled": os.WIFSIGNALED(status),
                      "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}))
    """
)


def test_kill_9_of_overmount_kills_the_namespace_child(host_20k: Path) -> None:
    out = subprocess.run([sys.executable, "-c", KILL_9, str(host_20k)], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"signaled": True, "signal": signal.SIGKILL}


# A parent that is already dead when the child asks for PR_SET_PDEATHSIG: the signal would never
# come, so die_with_parent must notice by itself. And a living parent: it must return.
ORPHAN = textwrap.dedent(
    """
    import ctypes, json, os, sys, time
    from planner import kernel
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    out = {}
    for case in ("parent died first", "parent alive"):
        middle = os.fork()
        if middle == 0:
            me = os.getpid()
            child = os.fork()
            if child == 0:
                if case == "parent died first":
                    while os.getppid() == me:  # until the middle process is gone
                        time.sleep(0.001)
                kernel.die_with_parent(me)
                os._exit(0)
            if case == "parent died first":
                os._exit(0)
            _, status = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        _, status = os.waitpid(middle, 0)
        if case == "parent died first":
            _, status = os.wait()  # the orphan, re-parented to us
        out[case] = os.waitstatus_to_exitcode(status)
    print(json.dumps(out))
    """
)


def test_die_with_parent_exits_when_the_parent_died_before_it_was_set() -> None:
    out = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"parent died first": 70, "parent alive": 0}
