"""One command as a real process: wall time, CPU time and peak memory, its output drained as a pipe.

Every command of the side-by-side tables runs through `run_command`: standard output goes to a
pipe this process reads to the end (what `| less` or a restorer reading the plan does; text
output is part of what is timed), standard error to a file. Wall time runs from the fork to the
child being reaped; CPU time (user + system) and peak RSS come from that child's own rusage
(os.wait4), so nothing of this process or of other children is counted.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass


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
    """Run `argv` once; after `limit` seconds it is killed (by its pid) and reported unfinished."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env=None if env is None else {**os.environ, **env}, cwd=cwd)
        assert proc.stdout is not None
        out = proc.stdout.fileno()
        deadline = None if limit is None else start + limit
        got, stopped = 0, False
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _, _ = select.select([out], [], [], wait)
            if not ready:
                proc.kill()
                stopped = True
                deadline = None  # drain what is left, then reap
                continue
            chunk = os.read(out, 1 << 20)
            if not chunk:
                break
            got += len(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        proc.stdout.close()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, None if stopped else proc.returncode,
               got, text[-2000:])


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
