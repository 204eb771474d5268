"""Input limits a real host never reaches; past them the tool refuses with one line saying which
limit and how to raise it, instead of spending minutes and gigabytes on a hostile input.

Each can be raised (or lowered) through the environment variable named beside it.
- bytes per input file (a dump, plan, scenario, crit JSON file, standard input): 64 MiB. A
  100,000-mount host's mountinfo is about 15 MB; a capture of 15,000 open files about 2 MB.
- mounts per table: 200,000, twice the kernel's own default cap per mount namespace
  (fs.mount-max = 100,000).
- steps per plan: 1,000,000 (a plan holds about one step per target plus two per move).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    what: str
    variable: str
    default: int

    @property
    def value(self) -> int:
        raw = os.environ.get(self.variable, "")
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else self.default

    def refusal(self, seen: str) -> str:
        """The one-line reason: what was seen, the limit, and how to raise it."""
        return f"{seen}, over the limit of {self.value:,} {self.what} (set {self.variable} to raise it)"


INPUT_BYTES = Limit("bytes per input", "OVERMOUNT_MAX_INPUT_BYTES", 64 << 20)
MOUNTS = Limit("mounts per table", "OVERMOUNT_MAX_MOUNTS", 200_000)
STEPS = Limit("steps per plan", "OVERMOUNT_MAX_STEPS", 1_000_000)
