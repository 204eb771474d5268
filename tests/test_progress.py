"""Progress on standard error: bars on a terminal (a real pty here), nothing at all anywhere else.

OVERMOUNT_PROGRESS_AFTER=0 makes progress show from the first report, so these tests do not
depend on how long anything takes; the commands are the real ones, as processes. The namespace
child of `run` draws its own progress: tests/namespace/test_progress_run.py.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from planner import progress
from tests.conftest import REPO

# Past the thresholds at which the reader and the planner report (every 4,096 lines, every 1% of targets).
MOUNTS = 20_000


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table of MOUNTS mounts: pods of a secret tmpfs under /var, every tenth covered, with a target."""
    lines = ["1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 8:2 / /var rw - xfs /dev/vdb rw"]
    targets = []
    mount_id = 3
    while len(lines) < MOUNTS:
        pod = f"/var/lib/kubelet/pods/p{mount_id}/volumes"
        lines.append(f"{mount_id} 2 0:{mount_id} / {pod}/secret rw - tmpfs tmpfs rw")
        if mount_id % 10 == 3:
            targets.append({"id": f"t{mount_id}", "kind": "open", "mount": mount_id, "path": f"{pod}/secret/tls.crt"})
            lines.append(f"{mount_id + 1} 2 0:{mount_id + 1} / {pod} rw - tmpfs tmpfs rw")
            mount_id += 1
        mount_id += 1
    path = tmp_path_factory.mktemp("progress") / "dump.json"
    path.write_text(json.dumps({"format": "overmount-dump/1", "mountinfo": "\n".join(lines) + "\n", "targets": targets}))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, progress.AFTER_VARIABLE: "0"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "planner", *args]


def run_on_a_terminal(args: list[str]) -> tuple[int, bytes, bytes]:
    """(exit status, standard output, what the terminal on standard error showed)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, cwd=REPO, env=_env())
    finally:
        os.close(slave)
    assert proc.stdout is not None
    out, shown = b"", b""
    open_fds = {proc.stdout.fileno(): "out", master: "tty"}
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 120)
        assert ready, "the command printed nothing for two minutes"
        for fd in ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:  # EIO: the terminal's last writer is gone
                chunk = b""
            if not chunk:
                del open_fds[fd]
            elif open_fds[fd] == "out":
                out += chunk
            else:
                shown += chunk
    os.close(master)
    return proc.wait(), out, shown


def test_nothing_on_standard_error_when_it_is_not_a_terminal(big_dump: Path) -> None:
    done = subprocess.run(_command("plan", str(big_dump)), capture_output=True, cwd=REPO, env=_env(), check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no bar, no label, not even the one line click prints for a pipe
    assert done.stdout.startswith(b"plan for ")


def test_bars_on_a_terminal_and_the_output_unchanged(big_dump: Path) -> None:
    status, out, shown = run_on_a_terminal(_command("plan", str(big_dump)))
    assert status == 0
    text = shown.decode()
    assert "reading the mount table" in text and "planning the targets" in text
    assert f"/{len(json.loads(big_dump.read_text())['targets'])}" in text  # how far, out of how many
    # Each bar is taken off its line at the end, and the cursor click hid is shown again.
    assert text.endswith("\r\x1b[K\x1b[?25h")
    alone = subprocess.run(_command("plan", str(big_dump)), capture_output=True, cwd=REPO, env=_env(), check=True)
    assert out == alone.stdout  # standard output is the plan, the same with or without a terminal


@pytest.mark.parametrize("command", ["analyze", "check"])
def test_the_other_long_commands_show_theirs(big_dump: Path, tmp_path: Path, command: str) -> None:
    args = [command, str(big_dump)]
    if command == "check":
        plan = tmp_path / "plan.json"
        subprocess.run(_command("plan", str(big_dump), "--format", "json", "-o", str(plan)), cwd=REPO, check=True)
        args.append(str(plan))
    status, _, shown = run_on_a_terminal(_command(*args))
    assert status == 0
    wanted = {"analyze": ("finding hidden mounts", "writing the tree"), "check": ("checking the plan",)}[command]
    assert all(label in shown.decode() for label in wanted), shown[-400:]


def test_on_stderr_is_quiet_off_a_terminal_and_draws_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    reading, writing = os.pipe()
    with os.fdopen(writing, "w") as pipe:
        assert progress.on_stderr(pipe) is progress.quiet
    os.close(reading)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setenv(progress.AFTER_VARIABLE, "0")
        bars = progress.on_stderr(terminal)
        assert bars is not progress.quiet
        bars("counting", 3, 10)
        bars("counting", 10, 10)
    chunks = []  # every write the bar made: one read may return only the first of them
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other end is closed and all it wrote has been read
            break
        if not chunk:
            break
        chunks.append(chunk)
    shown = b"".join(chunks).decode()
    os.close(master)
    assert "counting" in shown and "3/10" in shown and shown.endswith("\r\x1b[K\x1b[?25h")
