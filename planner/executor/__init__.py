"""The executor: run a plan for real against a replica of the dump, verify every target, roll back on failure.

Everything happens in a forked child with its own mount namespace
(kernel.run_in_namespace): the caller's mounts are never touched.

Paths in steps are resolved from the replica's root with openat2
RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; '.' and '..'
components are refused. A path names the topmost mount there, and each step
that names a mount checks that the kernel agrees (live mount id mapped back to
the dump's). Targets are checked with the kernel's own answers: statx
STATX_MNT_ID (the same id fdinfo's mnt_id gives), sock_diag, /proc/self/maps
and map_files, mountinfo.

The hot steps are kept to the syscalls their checks need (see `Executor.prepare`):
- move-aside: openat2 `from` (O_PATH), statx on that fd (mount id: the step's
  mount? and file or directory), move_mount by that fd into the slot, named
  relative to the yard's own mount fd, statx of the slot (is the mount there now);
- move-back: openat2 `from`, statx on it, openat2 `to`, move_mount fd to fd,
  close both, statx of `to` (is the mount there now);
- open: openat2 the path, statx on the new fd (mount id, device and inode).
Slot directories are made once, at yard-create, in the yard's tmpfs before it is
attached, and go away with it at yard-remove; mountinfo is read only at the start
and the end (and to explain a failure).

Parts: run.py a run from start to end (execute, execute_here, run_plan); operations.py the
Executor and its op table (yard, moves, keepers); targets.py the target steps and their checks;
mounts.py the mounts the steps move; rollback.py undoing them; journal.py what the rollback undoes;
paths.py resolution in the replica; report.py the Report records and the reporter that hears a run.

The report (Report.as_json, what `execute` returns and run --json prints):
  ok, steps_run, failed_step {index, op, errno, errno_name, reason, step} | None,
  rolled_back, unrestored [{mount, should_be_at, now_at, errno, reason}],
  targets [{id, kind, expected_mount, got_mount, inode_ok, ok, step, detail,
            file_type (what the kernel says was reached, where the op checks it), type_ok,
            stand_in (why the replica made a stand-in for the dump's object, or None)}],
  tree_identical, tree_diff [str], yard_empty, created_mounts [{target, to, root, parent}]
  (where each new bind mount is after the plan: it must be where the dump has `to`).
"""

from planner.executor.run import execute, execute_here, run_plan

__all__ = ["execute", "execute_here", "run_plan"]
