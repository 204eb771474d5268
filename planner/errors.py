"""One exception hierarchy; each error knows the exit status the CLI gives it.

Two signals stay inside their modules, never reaching a user as themselves: simulate.SimError
(a step check's symbolic namespace refuses) and the executor's Mismatch (a step ran but the
kernel's answer is not the plan's); each is reported as a problem or a failed step.
"""

from __future__ import annotations

from typing import Any


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


class OutputError(InputError):
    """FILE cannot be written (safely): exit 2, nothing written anywhere."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, None, f"cannot write: {reason}")


class CaptureError(InputError):
    """The process cannot be read: no such pid, not a live process, or no permission."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"pid {pid}", None, reason)


class ProcessExited(PlannerError):
    """The process exited while it was being read: what was read is not a whole dump (exit 1)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"pid {pid}: the process exited during the capture; no dump was written (a part of one "
                         "would pass for the whole)")


class RecoverRefused(InputError):
    """The namespace named cannot be, or must not be, worked on."""


class PlanRefused(PlannerError):
    """No move-aside sequence the kernel would accept reaches every target."""


class PlanRejected(PlannerError):
    """A plan that does not do what it must (found by check)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class KernelError(PlannerError):
    """A syscall failed; carries the errno."""


class NamespaceChildError(KernelError):
    """The namespace child raised something that could not be sent back as itself."""

    def __init__(self, type_name: str, message: str, child_traceback: str) -> None:
        self.type_name = type_name
        self.message = message
        self.child_traceback = child_traceback
        super().__init__(f"in the namespace child: {type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            NamespaceChildError,
            (self.type_name, self.message, self.child_traceback),
        )


class ReplicaError(PlannerError):
    """The dump cannot be built as a replica (or the built replica differs from it)."""


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
