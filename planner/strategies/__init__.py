"""Planning strategies, side by side: each turns the analysed targets into steps, applying every step
to a symbolic namespace (planner.check) as it goes. planner.plan.make_plan chooses one by name.

- move_aside.py  move the covers into a private yard, reach the targets, move them back
- order.py       the order targets are reached in, shared by every strategy
"""

from __future__ import annotations

from typing import NamedTuple

from planner.analysis import Analysis
from planner.check import Session
from planner.progress import Progress, quiet
from planner.steps import Step
from planner.tree import MountTree

# The way out when a forest leaves something unknown: the table of the namespace root lists it all.
WHOLE_TABLE = ("give the table as the mount namespace's root sees it (overmount capture as root reads it so, as "
               "does nsenter -m -t PID cat /proc/self/mountinfo)")


class Request(NamedTuple):  # NamedTuples, not dataclasses: every start of the tool imports them
    """What a strategy plans for: the tree, the analysed targets, and the caller's choices."""

    tree: MountTree
    analysis: Analysis
    yard: str | None = None  # None: the strategy's own default (where it needs a yard at all)
    kernel: tuple[int, int] = (6, 18)  # the kernel the plan is for
    locked: frozenset[int] = frozenset()  # mounts locked to their parent: no move may take them
    progress: Progress = quiet


class Planned(NamedTuple):
    """A strategy's answer: its steps, the yard they use, and the namespace as the last step left it
    (so that the end state is judged without simulating every step again)."""

    yard: str
    steps: tuple[Step, ...]
    session: Session
