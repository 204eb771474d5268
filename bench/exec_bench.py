"""The executor against a bare loop of the same syscalls, in one throwaway mount namespace.

For a plan with N hidden targets (N = 10, 100, 1000) on a generated host whose
targets are all `open`, a forked child (kernel.run_in_namespace: unshare
CLONE_NEWNS, `/` made private recursively, before anything else) builds the
replica, then alternates, a few times each:

- bare: the plan's move-aside / open / move-back steps as raw calls and
  nothing else: move_mount(2) by path through ctypes, open(2), move_mount(2)
  back. Yard and slot directories are made beforehand, untimed; opened fds are
  kept, as the executor keeps them.
- executor: planner.execute.Executor.run_step on the same steps (yard-create
  and yard-remove included, timed apart), with all its checking (openat2 path
  resolution, statx/fdinfo mount ids, inode checks, slot mkdir/rmdir).

Overhead = executor time / bare time over the same move-aside, open and
move-back steps (best run of each). A full `run_plan` (replica snapshots before
and after, tree comparison, yard check) is timed once as well.

The host's mount namespace is never touched: every mount call here runs in the
child, which also checks that its mount namespace is not its parent's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.generate import generate
from planner import kernel, mountinfo
from planner.mountinfo import Mount
from planner.plan import make_plan
from planner.targets import Target
from planner.tree import MountTree

MOVE_OPS = ("move-aside", "open", "move-back")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_AT_FDCWD = ctypes.c_int(kernel.AT_FDCWD)
_NO_FLAGS = ctypes.c_uint(0)
_SYS_MOVE_MOUNT = ctypes.c_long(kernel.SYS_MOVE_MOUNT)


@dataclass
class ExecRow:
    hidden_targets: int
    mounts: int
    steps: int
    moves: int
    reps: int
    replica_s: float
    bare_us: dict[str, float]  # per op: mean µs per step in the best bare run
    exec_us: dict[str, float]  # per op: mean µs per step in the best executor run
    bare_per_step_us: float  # over move-aside + open + move-back
    exec_per_step_us: float
    overhead: float  # exec / bare over those steps
    yard_us: float  # executor yard-create + yard-remove, best run
    full_run_per_step_us: float  # run_plan, verification included, per plan step
    full_run_ok: bool
    counts: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _bare_move(src: bytes, dst: bytes) -> None:
    if _libc.syscall(_SYS_MOVE_MOUNT, _AT_FDCWD, src, _AT_FDCWD, dst, _NO_FLAGS) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_mount {src!r} -> {dst!r}: {os.strerror(err)}")


def _bare_program(steps: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    program = []
    for step in steps:
        if step["op"] in ("move-aside", "move-back"):
            program.append((step["op"], os.fsencode(step["from"]), os.fsencode(step["to"])))
        elif step["op"] == "open":
            program.append(("open", os.fsencode(step["path"]), b""))
    return program


def _bare_run(program: list[tuple[str, bytes, bytes]], yard: str, slots: list[str]) -> dict[str, float]:
    """One timed pass of the bare loop; the yard is set up and removed around it, untimed."""
    made_yard = not os.path.exists(yard)
    if made_yard:
        os.mkdir(yard, 0o700)
    fd = kernel.new_tmpfs({"mode": "0700"})
    try:
        kernel.attach(fd, kernel.AT_FDCWD, yard)
        kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
    finally:
        os.close(fd)
    for slot in slots:
        os.mkdir(slot, 0o700)
    spent = dict.fromkeys(MOVE_OPS, 0.0)
    kept = []
    clock = time.perf_counter
    try:
        for op, a, b in program:
            start = clock()
            if op == "open":
                kept.append(os.open(a, os.O_RDONLY | os.O_CLOEXEC))
            else:
                _bare_move(a, b)
            spent[op] += clock() - start
    finally:
        for held in kept:
            os.close(held)
        kernel.umount2(yard, kernel.UMOUNT_NOFOLLOW)
        if made_yard:
            os.rmdir(yard)
    return spent


def _executor_run(replica: Any, targets: list[Target], steps: list[dict[str, Any]]) -> dict[str, float]:
    from planner.execute import Executor

    ex = Executor(replica, targets)
    ex.yard_paths = [s["path"] for s in steps if s["op"] == "yard-create"]
    spent: dict[str, float] = {}
    clock = time.perf_counter
    try:
        for index, step in enumerate(steps):
            start = clock()
            ex.run_step(index, step)
            spent[step["op"]] = spent.get(step["op"], 0.0) + clock() - start
        wrong = [r for r in ex.results.values() if not r["ok"]]
        if wrong or len(ex.results) != len(targets):
            raise AssertionError(f"executor reached {len(ex.results) - len(wrong)} of {len(targets)} targets")
    finally:
        for held in ex.kept:
            if isinstance(held, int):
                os.close(held)
        os.close(ex.root_fd)
    return spent


def _in_namespace(parent_ns: str, mounts: list[Mount], targets: list[Target], steps: list[dict[str, Any]],
                  reps: int) -> dict[str, Any]:
    """Runs in the namespace child (kernel.run_in_namespace has unshared and made / rprivate)."""
    if os.readlink("/proc/self/ns/mnt") == parent_ns:
        raise RuntimeError("refusing to mount: this process is still in its parent's mount namespace")
    from planner.execute import run_plan
    from planner.replica import build_replica

    # The replica keeps a handle per mount; a few thousand mounts need more than 1024 fds.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    start = time.perf_counter()
    replica = build_replica(mounts, targets)
    replica_s = time.perf_counter() - start

    yard = next(s["path"] for s in steps if s["op"] == "yard-create")
    slots = sorted({s["to"] for s in steps if s["op"] == "move-aside"})
    program = _bare_program(steps)
    best_bare: dict[str, float] | None = None
    best_exec: dict[str, float] | None = None
    for _ in range(reps):
        bare = _bare_run(program, yard, slots)
        if best_bare is None or sum(bare.values()) < sum(best_bare.values()):
            best_bare = bare
        done = _executor_run(replica, targets, steps)
        if best_exec is None or sum(done[op] for op in MOVE_OPS) < sum(best_exec[op] for op in MOVE_OPS):
            best_exec = done
    start = time.perf_counter()
    report, _ = run_plan(replica, targets, steps)
    full_s = time.perf_counter() - start
    return {"replica_s": replica_s, "bare": best_bare, "exec": best_exec, "full_s": full_s, "full_ok": report["ok"],
            "failed_step": report["failed_step"]}


def measure(hidden_targets: int, reps: int) -> ExecRow:
    # A quarter of the mounts hold a target: the replica keeps a few fds per mount, and the
    # fd limit here (20000) caps it at a few thousand mounts.
    host = generate(4 * hidden_targets, 0.25, propagation="private")
    # Every target an open, so that the bare loop does what the executor does.
    targets = [Target(t.id, "open", t.mount, t.path) for t in host.targets]
    mounts = mountinfo.parse(host.mountinfo, "<generated>")
    plan = make_plan(MountTree(mounts, "<generated>"), targets)
    steps = [step.as_json() for step in plan.steps]
    counts: dict[str, int] = {}
    for step in steps:
        counts[str(step["op"])] = counts.get(str(step["op"]), 0) + 1
    parent_ns = os.readlink("/proc/self/ns/mnt")
    got = kernel.run_in_namespace(_in_namespace, parent_ns, mounts, targets, steps, reps)
    if not got["full_ok"]:
        raise AssertionError(f"run_plan failed: {got['failed_step']}")
    bare, done = got["bare"], got["exec"]
    n_moves = sum(counts.get(op, 0) for op in MOVE_OPS)
    bare_total = sum(bare[op] for op in MOVE_OPS)
    exec_total = sum(done[op] for op in MOVE_OPS)
    return ExecRow(
        hidden_targets=len(targets),
        mounts=host.mounts,
        steps=len(steps),
        moves=plan.moves,
        reps=reps,
        replica_s=got["replica_s"],
        bare_us={op: bare[op] / counts[op] * 1e6 for op in MOVE_OPS},
        exec_us={op: done[op] / counts[op] * 1e6 for op in done},
        bare_per_step_us=bare_total / n_moves * 1e6,
        exec_per_step_us=exec_total / n_moves * 1e6,
        overhead=exec_total / bare_total,
        yard_us=(done.get("yard-create", 0.0) + done.get("yard-remove", 0.0)) * 1e6,
        full_run_per_step_us=got["full_s"] / len(steps) * 1e6,
        full_run_ok=got["full_ok"],
        counts=counts,
    )


def run(sizes: tuple[int, ...], log: Callable[[str], None]) -> tuple[list[ExecRow], str | None]:
    """The rows, or why the execution bench could not run here."""
    able, why = kernel.can_make_namespaces()
    if not able:
        return [], why
    rows = []
    for hidden in sizes:
        reps = 3 if hidden >= 1000 else 5
        log(f"  executor: {hidden} hidden targets ({reps} runs each, bare and executor) ...")
        rows.append(measure(hidden, reps))
    return rows, None
