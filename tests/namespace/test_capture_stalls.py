"""capture against a dead filesystem and a dying process, for real.

- A process holding a file and its cwd on a FUSE filesystem that has stopped answering
  (tests/namespace/fuse_stall.py, a raw /dev/fuse server in a private mount namespace): a stat
  of /proc/PID/fd/N there blocks in D state for good, SIGKILL or not. capture must finish.
- A process that exits during the capture: a zombie its parent has not reaped still has a
  /proc/PID, which is how the review's truncated dumps got exit 0. capture must say so, exit 1,
  and write nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner.errors import PlannerError, ProcessExited
from planner.inputs.capture import capture_pid, objects, sockets
from tests.conftest import REPO

pytestmark = pytest.mark.namespace
HAS_FUSE = os.path.exists("/dev/fuse")


@pytest.fixture
def stalled_fuse(tmp_path: Any) -> Iterator[tuple[int, str]]:
    """(pid, FUSE mount point) of a process whose file and cwd are on a FUSE mount that no longer answers.

    Always released at the end: the server answers what is pending with EIO (or, killed, its
    /dev/fuse fd closes and the kernel aborts the connection), which frees anything still waiting.
    """
    if not HAS_FUSE:
        pytest.skip("no /dev/fuse on this machine")
    helper = subprocess.Popen([sys.executable, "-m", "tests.namespace.fuse_stall", str(tmp_path)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    try:
        ready = helper.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        yield int(ready[1]), f"{tmp_path}/fuse"
    finally:
        try:
            helper.stdin.write("release\n")
            helper.stdin.close()
            helper.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            helper.kill()
            helper.wait(timeout=20)


def test_capture_never_waits_on_a_fuse_server_that_stopped_answering(stalled_fuse: tuple[int, str], tmp_path: Any) -> None:
    pid, mountpoint = stalled_fuse
    # Proof the stand-in blocks as the review saw: stat(2) of the fd sleeps in the FUSE request.
    probe = subprocess.Popen(["stat", "-L", f"/proc/{pid}/fd/4"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with open(f"/proc/{probe.pid}/stack", encoding="ascii") as handle:
            assert probe.poll() is None and "request_wait_answer" in handle.read()
        probe.send_signal(signal.SIGKILL)
        time.sleep(0.3)
        with open(f"/proc/{probe.pid}/status", encoding="ascii") as handle:
            assert "State:\tD" in handle.read()  # killed, and still waiting: only the server can free it
    finally:
        probe.kill()  # freed when the fixture releases the server
    out = tmp_path / "dump.json"
    done = subprocess.run([sys.executable, "-m", "planner", "capture", "--pid", str(pid), "-o", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    dump = json.loads(out.read_text())
    fuse_mount = next(int(line.split()[0]) for line in dump["mountinfo"].splitlines() if line.split()[4] == mountpoint)
    by_id = {t["id"]: t for t in dump["targets"]}
    assert by_id["fd4"] == {"id": "fd4", "kind": "open", "mount": fuse_mount, "path": f"{mountpoint}/file",
                            "file_type": "regular", "access": "read-only"}
    assert by_id["cwd"] == {"id": "cwd", "kind": "chdir", "mount": fuse_mount, "path": mountpoint}


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _kill_and_leave_a_zombie(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, then wait until it is a zombie, without reaping it (the review's case)."""
    process.send_signal(signal.SIGKILL)
    for _ in range(200):
        with open(f"/proc/{process.pid}/stat", encoding="ascii") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.01)
    raise AssertionError("never became a zombie")


@pytest.mark.parametrize("when", ["open_files", "fs_link", "mappings", "unix_sockets", "file_mounts"])
def test_a_process_that_exits_during_the_capture_is_exit_1_and_no_dump(
    child: subprocess.Popen[bytes], mocker: MockerFixture, when: str
) -> None:
    module = sockets if when == "unix_sockets" else objects
    real = getattr(module, when)

    def exit_first(*args: Any) -> Any:
        _kill_and_leave_a_zombie(child)  # the fault: the process dies here, its /proc/PID stays
        return real(*args)

    mocker.patch.object(module, when, side_effect=exit_first)
    with pytest.raises(ProcessExited) as raised:
        capture_pid(child.pid)
    assert raised.value.exit_status == 1
    assert "exited during the capture; no dump was written" in str(raised.value)


def test_a_zombie_is_no_live_process(child: subprocess.Popen[bytes]) -> None:
    _kill_and_leave_a_zombie(child)
    with pytest.raises(PlannerError, match="not a live process: it has exited") as raised:
        capture_pid(child.pid)
    assert raised.value.exit_status == 2


def test_the_command_writes_no_dump_when_the_process_exits(child: subprocess.Popen[bytes], tmp_path: Any) -> None:
    """The real command, a process that exits on its own while it is read: exit 1, -o FILE untouched."""
    out = tmp_path / "dump.json"
    script = (
        "import os, sys, signal, time\n"
        "from planner.inputs.capture import objects\n"
        "real = objects.fs_link\n"
        "def dying(*args):\n"
        f"    os.kill({child.pid}, signal.SIGKILL)\n"
        f"    while open('/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z': time.sleep(0.01)\n"
        "    return real(*args)\n"
        "objects.fs_link = dying\n"
        f"sys.argv = ['overmount', 'capture', '--pid', '{child.pid}', '-o', {str(out)!r}]\n"
        "from planner.cli import main; main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"overmount: pid {child.pid}: the process exited during the capture; no dump was written " \
                          "(a part of one would pass for the whole)\n"
    assert not out.exists()
    assert child.poll() == -signal.SIGKILL  # it really was a zombie until now
