"""Progress of long work on standard error: on a terminal, after a second; nothing anywhere else.

The pure core reports through a plain callable, `Progress`: (what it is doing, how far, out of
how many). It calls it now and then (at the start, every few thousand items, at the end), never
per item, and never prints. `on_stderr()` gives the command line one that draws click's progress
bar on standard error, but only when standard error is a terminal (a pipe, a file or a log gets
nothing: no bar, no label) and only once the command has run for `OVERMOUNT_PROGRESS_AFTER`
seconds (default 1): work that ends sooner shows nothing at all.

The namespace child of `run` reports its replica build and its steps on the same standard error:
the callable is made in the child (`on_stderr()` there), not passed to it.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

Progress = Callable[[str, int, int], None]  # (what is being done, how far, out of how many)

AFTER_VARIABLE = "OVERMOUNT_PROGRESS_AFTER"
_started = time.monotonic()  # the command's start: a second of any work, not of each part


def _after() -> float:
    raw = os.environ.get(AFTER_VARIABLE, "")
    try:
        return max(0.0, float(raw)) if raw else 1.0
    except ValueError:
        return 1.0


def quiet(_what: str, _done: int, _total: int) -> None:
    """The Progress that shows nothing."""


class _Bars:
    """One click progress bar per kind of work, drawn on a terminal once the delay has passed."""

    def __init__(self, stream: TextIO, after: float) -> None:
        self.stream = stream
        self.after = after
        self.what: str | None = None
        self.bar: Any = None  # click's ProgressBar, while one is drawn

    def __call__(self, what: str, done: int, total: int) -> None:
        if what != self.what:
            self.close()
            self.what = what
        if self.bar is None:
            if time.monotonic() - _started < self.after or done >= total:
                return  # not yet a second in, or already finished: nothing worth drawing
            import click

            self.bar = click.progressbar(length=max(total, 1), label=what, file=self.stream, show_pos=True,
                                         show_eta=total > 1, width=30)
            self.bar.__enter__()  # draws it, and hides the cursor
            atexit.register(self.close)  # an error or Ctrl-C must not leave the cursor hidden
        self.bar.update(done - self.bar.pos)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Take the bar off the line it was drawn on (what follows needs that line), cursor back."""
        if self.bar is not None:
            self.bar = None
            self.stream.write("\r\x1b[K\x1b[?25h")
            self.stream.flush()


def on_stderr(stream: TextIO | None = None) -> Progress:
    """Progress bars on `stream` (standard error) when it is a terminal; otherwise `quiet`."""
    stream = stream if stream is not None else sys.stderr
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # closed, or no stream at all
        terminal = False
    return _Bars(stream, _after()) if terminal else quiet


def every(total: int) -> int:
    """How many items between two reports: about a hundred reports over the whole work."""
    return max(1, total // 100)
