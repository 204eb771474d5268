"""The executor at scale, against two bare loops, in one throwaway mount namespace per size.

For a generated host of N mounts (N = 1e3, 1e4, 2e4), a tenth of them holding a hidden
target, all targets `open`, a forked child (kernel.run_in_namespace: unshare CLONE_NEWNS, `/`
made private recursively, before anything else) first sets RLIMIT_NOFILE to 1024, soft and hard,
as `ulimit -n 1024` does (the replica must keep its fds bounded), then builds the replica (timed:
µs per mount), then alternates, several times each:

- floor: the plan's move-aside / open / move-back steps as the fewest raw calls that do them,
  with no checking at all: move_mount(2) path to path through ctypes, open(2) and close(2), move_mount(2)
  back. The least any tool could spend.
- same syscalls: the very syscalls the executor issues for each of those steps (SAME_SYSCALLS
  below), in plain ctypes, arguments worked out beforehand, no bookkeeping; it reads the mount
  id (and, for open, the device and inode) out of each statx answer and compares it, as a
  hand-written C loop would:
    move-aside: openat2(from, O_PATH), statx(fd), move_mount(fd -> yard fd + slot), close(fd),
                statx(yard fd + slot)
    open:       openat2(path, O_RDONLY), statx(fd), fcntl(F_GETFL), close(fd)
    move-back:  openat2(from, O_PATH), statx(fd), openat2(to, O_PATH), move_mount(fd -> fd),
                close(to fd), close(from fd), statx(to)
- executor: planner.executor.operations.Executor.run_step on the same steps (yard-create, which makes the
  slot directories, and yard-remove timed apart), with all its checking and its journal.

Before timing, one untimed executor pass records, step by step, the syscalls it makes (its
kernel.*, os.* and fcntl calls); the bench stops with an error if they are not exactly
SAME_SYSCALLS, so the same-syscalls loop cannot drift from what the executor does.

overhead = executor / same syscalls: what the executor's own Python adds to the syscalls it
needs (the 1.5x target applies to this). exec/floor = executor / floor: that plus the price of
verifying every move and target with the kernel's own answers. Both over the move-aside, open
and move-back steps, best run of each. The bare loops get the yard and its slots made
beforehand, untimed. A full `run_plan` (replica snapshots before and after, tree comparison,
yard check) is timed in each round too, its best run kept: µs per step of the whole run.

The host's mount namespace is never touched: every mount call here runs in the child, which
also checks that its mount namespace is not its parent's.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
import resource
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.generate import generate
from planner import kernel, mountinfo
from planner.mountinfo import Mount
from planner.plan import make_plan
from planner.targets import Target
from planner.tree import MountTree

MOVE_OPS = ("move-aside", "open", "move-back")
SIZES = (1_000, 10_000, 20_000)  # mounts
HIDDEN = 0.10  # share of mounts holding a hidden target
NOFILE = 1024  # RLIMIT_NOFILE, soft and hard, in the namespace child

# What the executor does per step, syscall by syscall (checked against it before every measurement).
SAME_SYSCALLS: dict[str, tuple[str, ...]] = {
    "move-aside": ("openat2", "statx", "move_mount", "close", "statx"),
    "open": ("openat2", "statx", "fcntl", "close"),
    "move-back": ("openat2", "statx", "openat2", "move_mount", "close", "close", "statx"),
}
FLOOR_SYSCALLS: dict[str, tuple[str, ...]] = {
    "move-aside": ("move_mount",),
    "open": ("openat", "close"),
    "move-back": ("move_mount",),
}

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_AT_FDCWD = ctypes.c_int(kernel.AT_FDCWD)
_NO_FLAGS = ctypes.c_uint(0)
_SYS_MOVE_MOUNT = ctypes.c_long(kernel.SYS_MOVE_MOUNT)


def _proto(*argtypes: Any) -> Any:
    fn = _libc["syscall"]
    fn.restype = ctypes.c_long
    fn.argtypes = (ctypes.c_long, *argtypes)
    return fn


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2 = _proto(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t)
_statx = _proto(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
_move_mount = _proto(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS
_STATX_MASK = kernel.STATX_TYPE | kernel.STATX_MODE | kernel.STATX_INO | kernel.STATX_MNT_ID
_STATX_FIELDS = struct.Struct("<I24xH2xQ96xIIQ")  # mask, mode, ino, dev major, dev minor, mnt_id


@dataclass
class ExecRow:
    mounts: int
    hidden_targets: int
    steps: int
    moves: int
    reps: int
    nofile: tuple[int, int]  # RLIMIT_NOFILE (soft, hard) the replica was built and run under
    replica_s: float
    bare_us: dict[str, float]  # floor, per op: mean µs per step in its best run
    same_us: dict[str, float]  # same syscalls as the executor, per op
    exec_us: dict[str, float]  # executor, per op (yard-create and yard-remove included, per call)
    bare_per_step_us: float  # over move-aside + open + move-back
    same_per_step_us: float
    exec_per_step_us: float
    overhead: float  # exec / same syscalls over those steps: what the executor adds (target <= 1.5x)
    vs_floor: float  # exec / floor
    same_vs_floor: float  # same syscalls / floor: the price of the checks themselves
    yard_us: float  # executor yard-create (slot directories included) + yard-remove, best run
    full_run_s: float  # run_plan, verification included
    full_run_ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    syscalls: dict[str, list[str]] = field(default_factory=dict)  # what the executor issues per step, by op
    growth: dict[str, float | None] = field(default_factory=dict)  # replica / run time here over the next size down

    @property
    def replica_us_per_mount(self) -> float:
        return self.replica_s / self.mounts * 1e6

    @property
    def run_us_per_step(self) -> float:
        return self.full_run_s / self.steps * 1e6

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "replica_us_per_mount": self.replica_us_per_mount,
                "run_us_per_step": self.run_us_per_step}


# --- the floor ---------------------------------------------------------------------------------


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


@contextmanager
def _yard(yard: str, slots: list[str]) -> Iterator[int]:
    """The yard as the executor makes it (private tmpfs, slots made while detached), untimed; its fd."""
    made_yard = not os.path.exists(yard)
    if made_yard:
        os.mkdir(yard, 0o700)
    fd = kernel.new_tmpfs({"mode": "0700"})
    try:
        for slot in slots:
            os.mkdir(slot, 0o700, dir_fd=fd)
        kernel.attach(fd, kernel.AT_FDCWD, yard)
        try:
            kernel.mount_setattr(fd, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
            yield fd
        finally:
            os.close(fd)
            fd = -1
            kernel.umount2(yard, kernel.UMOUNT_NOFOLLOW)
    finally:
        if fd >= 0:
            os.close(fd)
        if made_yard:
            os.rmdir(yard)


def _bare_run(program: list[tuple[str, bytes, bytes]], yard: str, slots: list[str]) -> dict[str, float]:
    """One timed pass of the floor loop; the yard is set up and removed around it, untimed."""
    spent = dict.fromkeys(MOVE_OPS, 0.0)
    clock = time.perf_counter
    close, open_ = os.close, os.open
    with _yard(yard, slots):
        for op, a, b in program:
            start = clock()
            if op == "open":
                close(open_(a, os.O_RDONLY | os.O_CLOEXEC))  # under ulimit -n 1024: none kept
            else:
                _bare_move(a, b)
            spent[op] += clock() - start
    return spent


# --- the same syscalls as the executor ---------------------------------------------------------


def _same_program(steps: list[dict[str, Any]], replica: Any) -> list[tuple[Any, ...]]:
    """Per step, everything the loop needs worked out beforehand: relative paths, expected ids."""

    def rel(path: str) -> bytes:
        return os.fsencode(path.lstrip("/") or ".")

    program: list[tuple[Any, ...]] = []
    for step in steps:
        op = step["op"]
        if op == "move-aside":
            live = replica.dump_to_live[step["mount"]]
            program.append((op, rel(step["from"]), live, os.fsencode(step["to"].rpartition("/")[2]), None))
        elif op == "open":
            obj = replica.objects[step["target"]]
            program.append((op, rel(step["path"]), replica.dump_to_live[obj.mount], obj.ino, obj.dev))
        elif op == "move-back":
            live = replica.dump_to_live[step["mount"]]
            program.append((op, rel(step["from"]), live, rel(step["to"]), None))
    return program


def _fail(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


def _same_run(program: list[tuple[Any, ...]], yard: str, slots: list[str]) -> dict[str, float]:
    """One timed pass of the executor's syscalls, plain ctypes, no bookkeeping; yard made untimed."""
    spent = dict.fromkeys(MOVE_OPS, 0.0)
    how_path = _OpenHow(os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, 0, _RESOLVE)
    how_open = _OpenHow(os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0, _RESOLVE)
    size = ctypes.sizeof(_OpenHow)
    buf = (ctypes.c_char * 256)()
    unpack = _STATX_FIELDS.unpack_from
    fd_only = kernel.AT_EMPTY_PATH | kernel.AT_NO_AUTOMOUNT
    by_path = kernel.AT_SYMLINK_NOFOLLOW | kernel.AT_NO_AUTOMOUNT
    f_empty = kernel.MOVE_MOUNT_F_EMPTY_PATH
    both_empty = kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_T_EMPTY_PATH
    sys_openat2, sys_statx, sys_move = kernel.SYS_OPENAT2, kernel.SYS_STATX, kernel.SYS_MOVE_MOUNT
    close, getfl, f_getfl = os.close, fcntl.fcntl, fcntl.F_GETFL
    clock = time.perf_counter
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with _yard(yard, slots) as yfd:
            for op, path, live, other, dev in program:
                start = clock()
                if op == "open":
                    fd = _openat2(sys_openat2, root, path, how_open, size)
                    if fd < 0:
                        raise _fail("openat2")
                    if _statx(sys_statx, fd, b"", fd_only, _STATX_MASK, buf) < 0:
                        raise _fail("statx")
                    answer = unpack(buf)
                    held = getfl(fd, f_getfl)
                    close(fd)
                    if answer[5] != live or answer[2] != other or os.makedev(answer[3], answer[4]) != dev:
                        raise AssertionError(f"open {path!r}: mount {answer[5]} ino {answer[2]}")
                    if held & os.O_ACCMODE != os.O_RDONLY:
                        raise AssertionError(f"open {path!r}: flags {held:#o}")
                elif op == "move-aside":
                    fd = _openat2(sys_openat2, root, path, how_path, size)
                    if fd < 0:
                        raise _fail("openat2")
                    if _statx(sys_statx, fd, b"", fd_only, _STATX_MASK, buf) < 0:
                        raise _fail("statx")
                    if unpack(buf)[5] != live:
                        raise AssertionError(f"{path!r} is not mount {live}")
                    if _move_mount(sys_move, fd, b"", yfd, other, f_empty) < 0:
                        raise _fail("move_mount")
                    close(fd)
                    if _statx(sys_statx, yfd, other, by_path, _STATX_MASK, buf) < 0:
                        raise _fail("statx")
                    if unpack(buf)[5] != live:
                        raise AssertionError(f"slot {other!r} is not mount {live}")
                else:
                    fd = _openat2(sys_openat2, root, path, how_path, size)
                    if fd < 0:
                        raise _fail("openat2")
                    if _statx(sys_statx, fd, b"", fd_only, _STATX_MASK, buf) < 0:
                        raise _fail("statx")
                    if unpack(buf)[5] != live:
                        raise AssertionError(f"{path!r} is not mount {live}")
                    to = _openat2(sys_openat2, root, other, how_path, size)
                    if to < 0:
                        raise _fail("openat2")
                    if _move_mount(sys_move, fd, b"", to, b"", both_empty) < 0:
                        raise _fail("move_mount")
                    close(to)
                    close(fd)
                    if _statx(sys_statx, root, other, by_path, _STATX_MASK, buf) < 0:
                        raise _fail("statx")
                    if unpack(buf)[5] != live:
                        raise AssertionError(f"{other!r} is not mount {live}")
                spent[op] += clock() - start
    finally:
        os.close(root)
    return spent


# --- the executor ------------------------------------------------------------------------------


def _executor_run(replica: Any, targets: list[Target], steps: list[dict[str, Any]]) -> dict[str, float]:
    from planner.executor.operations import Executor
    from planner.executor.run import as_steps

    ex = Executor(replica, targets)
    plan = as_steps(steps)
    ex.prepare(plan)
    spent: dict[str, float] = {}
    clock = time.perf_counter
    try:
        for index, step in enumerate(plan):
            start = clock()
            ex.run_step(index, step)
            spent[step.op] = spent.get(step.op, 0.0) + clock() - start
        wrong = [r for r in ex.results.values() if not r.ok]
        if wrong or len(ex.results) != len(targets):
            raise AssertionError(f"executor reached {len(ex.results) - len(wrong)} of {len(targets)} targets")
    finally:
        os.close(ex.root_fd)
    return spent


# The calls through which the executor reaches the kernel, by the syscall each makes.
_TRACED_KERNEL = {
    "openat2": "openat2",
    "statx_ids": "statx",
    "statx_mount_id": "statx",
    "fdinfo_mount_id": "fdinfo",
    "read_proc": "read_proc",
    "move_mount": "move_mount",
    "attach": "move_mount",
    "umount2": "umount2",
    "mount_setattr": "mount_setattr",
    "open_tree": "open_tree",
    "new_tmpfs": "fsmount",
}
_TRACED_OS = ("close", "open", "mkdir", "rmdir", "unlink", "fstat", "stat", "lstat", "listdir", "dup", "fchdir")
_TRACED_FCNTL = ("fcntl",)


def _executor_syscalls(replica: Any, targets: list[Target], steps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """One untimed executor pass with its kernel.* and os.* calls counted: each op's syscalls, per step.

    Raises AssertionError when two steps of one op differ, or differ from SAME_SYSCALLS.
    """
    seen: list[str] = []
    depth = [0]
    saved: list[tuple[Any, str, Any]] = []

    def traced(module: Any, attr: str, name: str) -> None:
        real = getattr(module, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                seen.append(name)
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1

        saved.append((module, attr, real))
        setattr(module, attr, wrapper)

    for attr, name in _TRACED_KERNEL.items():
        traced(kernel, attr, name)
    for attr in _TRACED_OS:
        traced(os, attr, attr)
    for attr in _TRACED_FCNTL:
        traced(fcntl, attr, attr)
    per_op: dict[str, list[str]] = {}
    try:
        from planner.executor.operations import Executor
        from planner.executor.run import as_steps

        ex = Executor(replica, targets)
        plan = as_steps(steps)
        ex.prepare(plan)
        try:
            for index, step in enumerate(plan):
                del seen[:]
                ex.run_step(index, step)
                op = step.op
                if op not in MOVE_OPS:
                    continue
                if op in per_op and per_op[op] != seen:
                    raise AssertionError(f"{op} steps differ: {per_op[op]} and, at step {index}, {seen}")
                per_op[op] = list(seen)
        finally:
            os.close(ex.root_fd)
    finally:
        for module, attr, real in reversed(saved):
            setattr(module, attr, real)
    for op, calls in per_op.items():
        if tuple(calls) != SAME_SYSCALLS[op]:
            raise AssertionError(
                f"the executor's {op} makes {calls}, the same-syscalls loop {list(SAME_SYSCALLS[op])}: update the loop"
            )
    return per_op


# --- the child ----------------------------------------------------------------------------------


def _in_namespace(parent_ns: str, mounts: list[Mount], targets: list[Target], steps: list[dict[str, Any]],
                  reps: int) -> dict[str, Any]:
    """Runs in the namespace child (kernel.run_in_namespace has unshared and made / rprivate)."""
    try:
        return _measure_here(parent_ns, mounts, targets, steps, reps)
    except Exception:  # noqa: BLE001 - the parent gets the exception but not where it happened: say where
        raise RuntimeError(traceback.format_exc()) from None


def _measure_here(parent_ns: str, mounts: list[Mount], targets: list[Target], steps: list[dict[str, Any]],
                  reps: int) -> dict[str, Any]:
    if os.readlink("/proc/self/ns/mnt") == parent_ns:
        raise RuntimeError("refusing to mount: this process is still in its parent's mount namespace")
    from planner.executor.run import as_steps, named_by_handle, run_plan
    from planner.replica import build_replica

    # `ulimit -n 1024`, soft and hard: the replica and the executor must keep their fds bounded.
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    start = time.perf_counter()
    replica = build_replica(mounts, targets, handles_for=named_by_handle(mounts, as_steps(steps)))
    replica_s = time.perf_counter() - start

    yard = next(s["path"] for s in steps if s["op"] == "yard-create")
    slots = list(dict.fromkeys(s["to"].rpartition("/")[2] for s in steps if s["op"] == "move-aside"))
    syscalls = _executor_syscalls(replica, targets, steps)
    floor = _bare_program(steps)
    same = _same_program(steps, replica)
    best: dict[str, dict[str, float] | None] = {"bare": None, "same": None, "exec": None}

    def keep(kind: str, got: dict[str, float]) -> None:
        have = best[kind]
        if have is None or sum(got[op] for op in MOVE_OPS) < sum(have[op] for op in MOVE_OPS):
            best[kind] = got

    full_s = float("inf")
    for _ in range(reps):
        keep("bare", _bare_run(floor, yard, slots))
        keep("same", _same_run(same, yard, slots))
        keep("exec", _executor_run(replica, targets, steps))
        start = time.perf_counter()
        report, _ = run_plan(replica, targets, as_steps(steps))
        full_s = min(full_s, time.perf_counter() - start)
        if not report.ok:
            break
    failed = report.failed_step
    return {"replica_s": replica_s, "bare": best["bare"], "same": best["same"], "exec": best["exec"],
            "full_s": full_s, "full_ok": report.ok, "failed_step": failed.as_json() if failed else None, "syscalls": syscalls,
            "nofile": nofile}


def measure(mounts_wanted: int, reps: int) -> ExecRow:
    host = generate(mounts_wanted, HIDDEN, propagation="private")
    # Every target an open, so that the bare loops do what the executor does.
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
    bare, same, done = got["bare"], got["same"], got["exec"]
    n_moves = sum(counts.get(op, 0) for op in MOVE_OPS)
    bare_total = sum(bare[op] for op in MOVE_OPS)
    same_total = sum(same[op] for op in MOVE_OPS)
    exec_total = sum(done[op] for op in MOVE_OPS)
    yard_s = done.get("yard-create", 0.0) + done.get("yard-remove", 0.0)
    return ExecRow(
        mounts=host.mounts,
        hidden_targets=len(targets),
        steps=len(steps),
        moves=plan.moves,
        reps=reps,
        nofile=tuple(got["nofile"]),  # type: ignore[arg-type]
        replica_s=got["replica_s"],
        bare_us={op: bare[op] / counts[op] * 1e6 for op in MOVE_OPS},
        same_us={op: same[op] / counts[op] * 1e6 for op in MOVE_OPS},
        exec_us={op: done[op] / counts[op] * 1e6 for op in done},
        bare_per_step_us=bare_total / n_moves * 1e6,
        same_per_step_us=same_total / n_moves * 1e6,
        exec_per_step_us=exec_total / n_moves * 1e6,
        overhead=exec_total / same_total,
        vs_floor=exec_total / bare_total,
        same_vs_floor=same_total / bare_total,
        yard_us=yard_s * 1e6,
        full_run_s=got["full_s"],
        full_run_ok=got["full_ok"],
        counts=counts,
        syscalls=got["syscalls"],
    )


def add_growth(rows: list[ExecRow]) -> None:
    """Replica build and full run time here over the size before (x10 mounts: 10 is linear)."""
    for smaller, row in itertools.pairwise(rows):
        row.growth = {"mounts_factor": row.mounts / smaller.mounts, "replica": row.replica_s / smaller.replica_s,
                      "run": row.full_run_s / smaller.full_run_s}


def run(sizes: tuple[int, ...], log: Callable[[str], None]) -> tuple[list[ExecRow], str | None]:
    """The rows, or why the execution bench could not run here."""
    able, why = kernel.can_make_namespaces()
    if not able:
        return [], why
    rows = []
    for mounts in sizes:
        reps = 7 if mounts <= 1_000 else 3
        log(f"  executor: {mounts:,} mounts, ulimit -n {NOFILE} ({reps} runs each: floor, same syscalls, executor)")
        rows.append(measure(mounts, reps))
    add_growth(rows)
    return rows, None
