"""One command as a real process: wall time, CPU time and peak memory, its output drained as a pipe.

Every command of the side-by-side tables runs through `run_command`: standard output goes to a
pipe this process reads to the end (what `| less` or a restorer reading the plan does; text
output is part of what is timed), standard error to a file. A small launcher (`python -S`, a few
MB) forks and execs the command and reports its wall time (fork to reaped), CPU time (user +
system) and peak RSS from the command's own rusage (os.wait4). The launcher is there because a
child's peak RSS counts what it had before exec, and a child forked from this process would
start with this process's own high-water mark (the big tables it generated).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

_LAUNCH = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the command
    peak_mib: float  # its peak resident set
    status: int | None  # exit status; None when it was stopped at the time limit
    out_bytes: int
    err: str

    @property
    def finished(self) -> bool:
        return self.status is not None


def run_command(argv: Sequence[str], limit: float | None = None, env: dict[str, str] | None = None,
                cwd: str | None = None) -> Run:
    """Run `argv` once; after `limit` seconds it is killed (its own process group, which this
    function made) and reported unfinished."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as usage:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCH, usage.name, *argv], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env},
                                cwd=cwd, start_new_session=True)
        assert proc.stdout is not None
        out = proc.stdout.fileno()
        deadline = None if limit is None else started + limit
        got, stopped = 0, False
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _, _ = select.select([out], [], [], wait)
            if not ready:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command: nothing else is in it
                stopped = True
                deadline = None  # drain what is left, then reap
                continue
            chunk = os.read(out, 1 << 20)
            if not chunk:
                break
            got += len(chunk)
        proc.wait()
        proc.stdout.close()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        fields = usage.read().split()
    if stopped or len(fields) != 4:
        return Run(time.perf_counter() - started, 0.0, 0.0, None, got, text[-2000:])
    status, wall, cpu, peak_kib = fields
    return Run(float(wall), float(cpu), int(peak_kib) / 1024, int(status), got, text[-2000:])


def best_of(argv: Sequence[str], runs: int, limit: float | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> Run:
    """The fastest of `runs` runs (the machine is shared: the least disturbed one), with the highest
    peak memory seen; a run stopped at the time limit ends the series."""
    best: Run | None = None
    peak = 0.0
    for _ in range(runs):
        run = run_command(argv, limit, env, cwd)
        peak = max(peak, run.peak_mib)
        if best is None or not run.finished or run.wall < best.wall:
            best = run
        if not run.finished:
            break
    assert best is not None
    best.peak_mib = peak
    return best
