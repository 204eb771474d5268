"""`run` on a terminal: its namespace child draws the replica's build and the steps on the same
standard error; off a terminal nothing. The real command, in a real throwaway namespace."""

from __future__ import annotations

import os
import subprocess

import pytest

from planner import progress
from tests.conftest import REPO
from tests.test_progress import _command, run_on_a_terminal

pytestmark = pytest.mark.namespace

SEED = os.path.join(REPO, "scenarios", "01-seed-lxd-cgroup.toml")


def test_run_shows_the_replica_and_the_steps_on_a_terminal() -> None:
    status, out, shown = run_on_a_terminal(_command("run", SEED))
    assert status == 0, out
    text = shown.decode()
    for label in ("making the replica's filesystems", "attaching the replica's mounts", "running the plan"):
        assert label in text, text[-600:]
    assert text.endswith("\r\x1b[K\x1b[?25h")
    assert out.startswith(b"ok: ")


def test_run_says_nothing_on_standard_error_off_a_terminal() -> None:
    done = subprocess.run(_command("run", SEED), capture_output=True, cwd=REPO, check=False,
                          env={**os.environ, progress.AFTER_VARIABLE: "0"})
    assert done.returncode == 0 and done.stderr == b"", done.stderr
