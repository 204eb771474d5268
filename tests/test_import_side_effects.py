"""Importing the tool runs nothing: no ldconfig, gcc or ld from PATH, no fork, in the caller's namespace.

ctypes.util.find_library("c") forks /sbin/ldconfig (and, without it, gcc and ld found on PATH) at
import time, before any namespace exists; kernel.py loads libc by its soname instead. An audit hook
in a fresh interpreter sees every process the imports would start.
"""

import json
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, sys
started = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "os.spawn"):
        started.append([event, repr(args)[:200]])
sys.addaudithook(hook)
import planner.cli, planner.kernel, planner.inputs.capture, planner.executor, planner.replica
print(json.dumps(started))
"""


def test_importing_every_module_starts_no_process() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_libc_is_loaded_by_soname() -> None:
    from planner import kernel

    assert kernel.LIBC == "libc.so.6"
    assert kernel._libc._name == "libc.so.6"
