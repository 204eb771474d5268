"""Real hosts: a process chrooted into a plain directory, and an unprivileged capture of oneself.

Every process here is one this test started; each is ended by its pid.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner import kernel
from planner.inputs.capture import capture_pid
from planner.mountinfo import parse
from tests.conftest import REPO
from tests.namespace.children import PRELUDE, Children

pytestmark = pytest.mark.namespace

# In a private mount namespace of its own: BASE/jail is a plain directory (of whatever mount holds
# BASE); tmpfs "lower" on jail/srv holds what the process uses, then it chroots into jail and a
# tmpfs "upper" covers /srv/d. Its mountinfo lists only what lies below its root: a forest. Then
# it becomes uid 65534 (dumpable again), so that an unprivileged capture of it can be tried too.
CHROOTED = PRELUDE + textwrap.dedent(
    """
    base, ready_fd = sys.argv[1], int(sys.argv[2])
    check(libc.unshare(0x20000), "unshare CLONE_NEWNS")
    check(libc.mount(None, b"/", None, 0x4000 | (1 << 18), None), "make / rprivate")
    jail = base + "/jail"
    os.makedirs(jail + "/srv")
    check(libc.mount(b"lower", (jail + "/srv").encode(), b"tmpfs", 0, b"size=1m,mode=0777"), "mount lower")
    os.chroot(jail)
    os.makedirs("/srv/d/cwd")
    with open("/srv/d/file", "w") as f:
        f.write("hidden")
    with open("/in-root.txt", "w") as f:
        f.write("in the chroot's own directory, in a mount it does not list")
    held = [open("/srv/d/file"), open("/in-root.txt")]
    os.chdir("/srv/d/cwd")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("/srv/d/sock")
    sock.listen()
    with open("/srv/d/mapped", "w+b") as f:
        f.write(b"m" * 4096)
        f.flush()
        mapping = mmap.mmap(f.fileno(), 4096)
    check(libc.mount(b"upper", b"/srv/d", b"tmpfs", 0, b"size=1m"), "mount upper")
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    check(libc.prctl(4, 1, 0, 0, 0), "PR_SET_DUMPABLE")  # a uid change cleared it
    os.write(ready_fd, b"ready\\n")
    os.close(ready_fd)
    while True:
        time.sleep(60)
    """
)
HIDDEN = {"/srv/d/file": "open", "/srv/d/cwd": "chdir", "/srv/d/sock": "bind", "/srv/d/mapped": "mmap"}


@pytest.fixture
def chrooted_child(tmp_path: Path) -> Iterator[int]:
    children = Children()
    try:
        yield children.start(CHROOTED, str(tmp_path), "")
    finally:
        children.kill_all()


def overmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO, check=False)


def analyze_plan_run(dump: Path, *extra: str) -> dict[str, Any]:
    """analyze, plan and run as a user runs them: each must exit 0; run's report."""
    analyzed = overmount("analyze", str(dump), *extra)
    assert analyzed.returncode == 0, analyzed.stderr
    plan_file = dump.with_suffix(".plan.json")
    planned = overmount("plan", str(dump), *extra, "--format", "json", "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    ran = overmount("run", str(dump), *extra, "--plan", str(plan_file), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    assert report["ok"] and report["tree_identical"] and report["yard_empty"]
    report["analysis"], report["plan"] = analyzed.stdout, json.loads(plan_file.read_text())
    return report


def test_the_table_of_a_process_chrooted_into_a_plain_directory(chrooted_child: int, tmp_path: Path) -> None:
    """/proc/PID/mountinfo as the kernel writes it for the chrooted process: a forest that every command
    reads; the hidden objects are planned and verified in the replica."""
    with open(f"/proc/{chrooted_child}/mountinfo", encoding="utf-8") as handle:
        text = handle.read()
    table = parse(text)
    by_point = {m.mountpoint: m for m in table}
    assert sorted(by_point) == ["/srv", "/srv/d"]  # relative to its root; the mount holding it is not listed
    lower, upper = by_point["/srv"], by_point["/srv/d"]
    assert lower.parent_id not in {m.mount_id for m in table} and upper.parent_id == lower.mount_id
    table_file = tmp_path / "chrooted.mountinfo"
    table_file.write_text(text)
    options = [f"--target={lower.mount_id}:{path}:{kind}" for path, kind in HIDDEN.items()]
    report = analyze_plan_run(table_file, *options)
    assert report["analysis"].splitlines()[-1] == (
        f"a forest: 1 tree, whose top hangs from mount {lower.parent_id}, not in the table")
    assert report["plan"]["yard"] == "/srv/.overmount-yard" and report["plan"]["moves"] == 1
    assert report["stand_in"] == {"tops": [lower.mount_id], "unlisted_parents": [lower.parent_id]}
    assert all(t["ok"] and t["got_mount"] == lower.mount_id for t in report["targets"])


def test_capture_of_a_chrooted_process_as_root_and_unprivileged(chrooted_child: int, tmp_path: Path) -> None:
    """As root, capture reads the namespace's own table (setns); unprivileged it cannot, and gets the
    process's view, a forest. Either dump is read by every command, and the hidden objects verify."""
    as_root = tmp_path / "root-dump.json"
    captured = overmount("capture", "--pid", str(chrooted_child), "-o", str(as_root))
    assert captured.returncode == 0, captured.stderr
    dump = json.loads(as_root.read_text())
    hidden = [t for t in dump["targets"] if t["path"].endswith(tuple(HIDDEN))]
    assert {t["kind"] for t in hidden} == set(HIDDEN.values())  # and the fd Python's mmap keeps: an open
    report = analyze_plan_run(as_root)
    assert all(t["ok"] for t in report["targets"])

    unprivileged = _capture_as_nobody(chrooted_child)
    assert "error" not in unprivileged, unprivileged
    targets = {t["path"]: t for t in unprivileged["targets"]}
    lower = next(m for m in parse(unprivileged["mountinfo"]) if m.mountpoint == "/srv")
    for path, kind in HIDDEN.items():
        if kind != "mmap":  # map_files does not read without CAP_CHECKPOINT_RESTORE: skipped, with why
            assert (targets[path]["kind"], targets[path]["mount"]) == (kind, lower.mount_id), unprivileged
    [in_root] = [s for s in unprivileged["skipped"] if s["path"] == "/in-root.txt"]
    assert in_root["mount"] == lower.parent_id
    assert "holds the process's root directory but is not in its mountinfo" in in_root["reason"]
    forest = tmp_path / "nobody-dump.json"
    forest.write_text(json.dumps(unprivileged))
    report = analyze_plan_run(forest)
    assert report["stand_in"]["tops"] == [lower.mount_id]
    assert all(t["ok"] for t in report["targets"])


def _capture_as_nobody(pid: int) -> dict[str, Any]:
    # As root first: pyroute2 and the modules it imports lazily are loaded while they can be (this
    # interpreter lives under /root, which uid 65534 cannot read).
    capture_pid(os.getpid())
    kernel.unix_socket_diag((), fresh=True)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            result: dict[str, Any] = capture_pid(pid)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            os.write(write_end, json.dumps(result).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out: dict[str, Any] = json.loads(pipe.read())
    os.waitpid(child, 0)
    return out


def test_an_unprivileged_capture_of_oneself_skips_what_it_cannot_read() -> None:
    """As uid 65534, a process captures itself: map_files does not read without CAP_CHECKPOINT_RESTORE,
    so each mapped file is skipped once, with why, and the rest is captured."""
    capture_pid(os.getpid())  # as root first: pyroute2 and friends are imported while they can be
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, capture ourselves, report through the pipe
        code = 0
        try:
            os.close(read_end)
            with open(__file__, "rb") as source:
                held = mmap.mmap(source.fileno(), 0, prot=mmap.PROT_READ)  # a file mapping of our own
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            result: dict[str, Any] = {"dump": capture_pid(os.getpid()), "uid": os.getuid()}
            held.close()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}"}
            code = 1
        finally:
            os.write(write_end, json.dumps(result).encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result["uid"] == 65534
    dump = result["dump"]
    mapped = [s for s in dump["skipped"] if s["kind"] == "mmap"]
    assert mapped and all("Operation not permitted" in s["reason"] and "CAP_CHECKPOINT_RESTORE" in s["reason"]
                          for s in mapped)
    this_file = [s for s in mapped if s["path"] == os.path.realpath(__file__)]
    assert len(this_file) == 1  # skipped once, not once per mapping
    assert len({s["path"] for s in mapped}) == len(mapped)
    assert any(t["kind"] == "open" for t in dump["targets"])  # its fds still read
