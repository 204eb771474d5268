"""What a run found, as records (the CLI prints them as JSON, render.run_report_text for people), and
the reporter that hears the run as it goes, as resolvelib's BaseReporter hears a resolution: the
executor calls it and never builds a report inline; progress bars are one reporter."""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass, field
from typing import Any

from planner.progress import Progress, every, quiet
from planner.steps import Step


@dataclass(slots=True)  # one per target, made as the target is checked
class TargetResult:
    """The kernel's answer for one target: the mount it reached (a dump id, or "live:N" for one the
    dump does not have), whether the inode and type are the dump's, and the step that reached it."""

    id: str
    kind: str
    expected_mount: int
    got_mount: int | str | None
    inode_ok: bool
    ok: bool
    step: int | None
    detail: str
    file_type: str | None  # what the kernel says was reached, where the op checks it
    type_ok: bool
    stand_in: str | None  # why the replica made a stand-in for the dump's object
    via: object = None  # a bind through a visible alias mount: that mount

    @classmethod
    def not_reached(cls, target_id: str, kind: str, mount: int) -> TargetResult:
        return cls(target_id, kind, mount, None, False, False, None, "no step reached it", None, False, None)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id, "kind": self.kind, "expected_mount": self.expected_mount, "got_mount": self.got_mount,
            "inode_ok": self.inode_ok, "ok": self.ok, "step": self.step, "detail": self.detail,
            "file_type": self.file_type, "type_ok": self.type_ok, "stand_in": self.stand_in,
        }
        if self.via is not None:
            out["via"] = self.via
        return out


@dataclass(frozen=True)
class FailedStep:
    index: int
    step: Step
    errno: int | None
    reason: str

    def as_json(self) -> dict[str, object]:
        name = errno_mod.errorcode.get(self.errno) if self.errno is not None else None
        return {"index": self.index, "op": self.step.op, "errno": self.errno, "errno_name": name,
                "reason": self.reason, "step": self.step.as_json()}


@dataclass
class Report:
    """A run: every target's result, the step that failed (and whether the rollback undid it all),
    whether the tree is as dumped and the yard empty, and where each new bind mount is."""

    targets: list[TargetResult]
    steps_run: int
    failed_step: FailedStep | None
    rolled_back: bool
    tree_diff: list[str]
    yard_empty: bool
    unrestored: list[dict[str, object]] = field(default_factory=list)
    created_mounts: list[dict[str, object]] = field(default_factory=list)
    stand_in: dict[str, object] | None = None  # a forest: the tops and the unlisted mounts they hang from

    @property
    def ok(self) -> bool:
        return self.failed_step is None and not self.tree_diff and self.yard_empty and all(t.ok for t in self.targets)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "targets": [t.as_json() for t in self.targets],
            "steps_run": self.steps_run,
            "failed_step": None if self.failed_step is None else self.failed_step.as_json(),
            "rolled_back": self.rolled_back,
            "tree_identical": not self.tree_diff,
            "tree_diff": self.tree_diff,
            "yard_empty": self.yard_empty,
            "unrestored": self.unrestored,
            "created_mounts": self.created_mounts,
        }
        if self.stand_in is not None:
            out["stand_in"] = self.stand_in
        return out


class BaseReporter:
    """Hears a run as it goes; every method does nothing here. Subclass what you want to hear."""

    def starting(self, steps: list[Step]) -> None:
        """Before the first step."""

    def step_done(self, index: int, step: Step) -> None:
        """A step ran and its checks passed."""

    def target_checked(self, result: TargetResult) -> None:
        """The kernel answered for a target (ok or not)."""

    def step_failed(self, failed: FailedStep) -> None:
        """A step failed; the rollback comes next."""

    def ending(self, report: Report) -> None:
        """After the rollback (if any) and the last checks."""


class ProgressReporter(BaseReporter):
    """Progress of the steps, for a bar on standard error (planner.progress)."""

    def __init__(self, progress: Progress = quiet) -> None:
        self.progress = progress
        self.total = 0
        self.every = 1

    def starting(self, steps: list[Step]) -> None:
        self.total, self.every = len(steps), every(len(steps))
        self.progress("running the plan", 0, self.total)

    def step_done(self, index: int, step: Step) -> None:
        if (index + 1) % self.every == 0:
            self.progress("running the plan", index + 1, self.total)

    def ending(self, report: Report) -> None:
        self.progress("running the plan", self.total, self.total)
