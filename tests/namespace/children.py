"""Live processes for capture tests: Python children that build their own mount namespace.

A child runs `script` as `python -c script BASE READY_FD ARG`, builds what it holds,
writes "ready\n" to READY_FD and sleeps; it is killed by its pid, and only it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

# What every child script starts with: libc through ctypes, and a check that raises with errno.
PRELUDE = textwrap.dedent(
    """
    import ctypes, mmap, os, socket, sys, time

    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret, what):
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
    """
)


class Children:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, script: str, base: str, arg: str) -> int:
        """The pid of a child running `script`, once it said it is ready (the test fails if it does not)."""
        read_end, write_end = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-c", script, base, str(write_end), arg],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.started.append(child)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            line = ready.readline()
        if line != b"ready\n":
            child.wait(timeout=10)
            pytest.fail(f"child did not get ready: {child.stderr.read().decode() if child.stderr else ''}")
        return child.pid

    def kill_all(self) -> None:
        for child in self.started:  # only these children, by their pids
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            if child.stderr:
                child.stderr.close()
