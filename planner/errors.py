"""One exception hierarchy; each error knows the exit status the CLI gives it."""

from __future__ import annotations


class PlannerError(Exception):
    """Base of every error the tool reports to a user."""

    exit_status = 1


class InputError(PlannerError):
    """Bad input: a file or option that cannot be read as what it claims to be."""

    exit_status = 2

    def __init__(self, source: str, line_no: int | None, reason: str) -> None:
        self.source = source
        self.line_no = line_no
        self.reason = reason
        where = f"{source}:{line_no}" if line_no is not None else source
        super().__init__(f"{where}: {reason}")


class MountinfoError(InputError):
    """A mountinfo line that does not follow proc(5)."""


class DumpError(InputError):
    """A dump, scenario or crit file that is not what its format says."""


class TargetError(InputError):
    """A target that names a mount or path the dump does not have."""


class PlanRefused(PlannerError):
    """No move-aside sequence the kernel would accept reaches every target."""


class PlanRejected(PlannerError):
    """A plan that does not do what it must (found by check)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class KernelError(PlannerError):
    """A syscall failed; carries the errno."""


class StepFailed(PlannerError):
    """A plan step failed while executing; the executor rolled back."""

    def __init__(self, index: int, step: object, errno: int, reason: str) -> None:
        self.index = index
        self.step = step
        self.errno = errno
        self.reason = reason
        super().__init__(f"step {index} failed: {reason}")


class NotPermitted(PlannerError):
    """The machine cannot do what was asked (no root and no user namespaces)."""
