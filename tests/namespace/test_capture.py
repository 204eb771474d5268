"""capture_pid against a real process that overmounted its own open file, cwd, socket and mapping.

The child unshares a mount namespace of its own (never ours), builds

    BASE        tmpfs "lower"   holds d/file (open), d/cwd (cwd), d/sock (listening),
                                d/mapped (mmapped, fd closed), fsrc, fdst
    BASE/fdst   bind of BASE/fsrc (a file mount)
    BASE/d      tmpfs "upper"   covers d/ and everything above

also an open file that was unlinked (gone) and one really named "odd (deleted)",
then reports ready through a pipe and sleeps until it is killed. Variants: in
our network namespace, in a new one (sock_diag must be asked from there), and
chrooted into BASE (the table and paths are then its namespace's, from the
namespace root, as CRIU dumps them; its root is a target).
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner.errors import CaptureError, InputError
from planner.inputs.capture import capture_pid
from planner.mountinfo import parse
from tests.namespace.children import PRELUDE, Children

pytestmark = pytest.mark.namespace

CHILD = PRELUDE + textwrap.dedent(
    """
    CLONE_NEWNS, CLONE_NEWNET = 0x20000, 0x40000000
    MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
    base, ready_fd, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    check(libc.unshare(CLONE_NEWNS | (CLONE_NEWNET if mode == "netns" else 0)), "unshare")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    if mode == "rshared":  # what systemd leaves: every mount shared (in this namespace's own groups)
        check(libc.mount(None, b"/", None, MS_REC | (1 << 20), None), "make / rshared")
    check(libc.mount(b"lower", base.encode(), b"tmpfs", 0, b"size=1m"), "mount lower")
    top = base
    if mode == "chroot":
        os.chroot(base)
        top = ""
    os.makedirs(top + "/d/cwd")
    with open(top + "/d/file", "w") as f:
        f.write("hidden file")
    held = [open(top + "/d/file")]
    for name in ("gone", "odd (deleted)"):
        with open(top + "/" + name, "w") as f:
            f.write(name)
        held.append(open(top + "/" + name))
    os.unlink(top + "/gone")
    os.chdir(top + "/d/cwd")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(top + "/d/sock")
    sock.listen()
    with open(top + "/d/mapped", "w+b") as f:
        f.write(b"m" * 4096)
        f.flush()
        mapping = mmap.mmap(f.fileno(), 4096)
    for name in ("fsrc", "fdst"):
        open(top + "/" + name, "w").close()
    check(libc.mount((top + "/fsrc").encode(), (top + "/fdst").encode(), None, MS_BIND, None), "bind file")
    check(libc.mount(b"upper", (top + "/d").encode(), b"tmpfs", 0, b"size=1m"), "mount upper")
    os.write(ready_fd, b"ready\\n")
    os.close(ready_fd)
    while True:
        time.sleep(60)
    """
)


@pytest.fixture(params=["plain", "netns", "chroot"])
def overmounted_child(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """(pid, base, the variant)."""
    mode = request.param
    base = tmp_path / "base"
    base.mkdir()
    children = Children()
    try:
        yield children.start(CHILD, str(base), mode), str(base), mode
    finally:
        children.kill_all()


def test_capture_finds_every_target_in_the_hidden_mount(overmounted_child: tuple[int, str, str]) -> None:
    with open("/proc/self/mountinfo") as handle:
        ours_before = handle.read()
    pid, top, mode = overmounted_child

    dump = capture_pid(pid)

    # The table from the root of the process's mount namespace, as nsenter(1) reads it there.
    from_ns_root = subprocess.run(
        ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "cat", "/proc/self/mountinfo"], capture_output=True, text=True, check=True
    ).stdout
    assert dump["mountinfo"] == from_ns_root
    if mode != "chroot":
        with open(f"/proc/{pid}/mountinfo") as handle:
            assert dump["mountinfo"] == handle.read()
    assert dump["format"] == "overmount-dump/1"
    assert dump["pid"] == pid
    mounts = parse(dump["mountinfo"])
    lower = next(m for m in mounts if m.mountpoint == top and m.source == "lower")
    upper = next(m for m in mounts if m.mountpoint == top + "/d" and m.source == "upper")
    assert upper.parent_id == lower.mount_id

    by_path: dict[str, dict[str, Any]] = {t["path"]: t for t in dump["targets"]}
    expected = {
        top + "/d/file": "open",
        top + "/d/cwd": "chdir",
        top + "/d/sock": "bind",
        top + "/d/mapped": "mmap",
    }
    for path, kind in expected.items():
        assert path in by_path, f"{kind} target {path} missing: {dump['targets']} skipped {dump['skipped']}"
        target = by_path[path]
        assert target["kind"] == kind
        # The object lives in the covered tmpfs, not in the one its path leads to now.
        assert target["mount"] == lower.mount_id != upper.mount_id
    assert by_path[top + "/d/cwd"]["id"] == "cwd"
    assert by_path[top + "/d/file"]["id"].startswith("fd")
    assert by_path[top + "/d/sock"]["id"].startswith("sk-")
    assert by_path[top + "/d/mapped"]["id"].startswith("map-")
    assert len({t["id"] for t in dump["targets"]}) == len(dump["targets"])

    # A real name ending in " (deleted)" stays a target; an unlinked file is skipped, with why.
    assert by_path[top + "/odd (deleted)"]["mount"] == lower.mount_id
    gone = [s for s in dump["skipped"] if s["path"] == top + "/gone"]
    assert len(gone) == 1 and gone[0]["reason"].startswith("deleted")
    assert top + "/gone" not in by_path

    fdst = next(m for m in mounts if m.mountpoint == top + "/fdst")
    assert fdst.mount_id in dump["file_mounts"]
    assert lower.mount_id not in dump["file_mounts"]

    # The root: a target where the process chrooted (the top of mount lower), else the namespace's own.
    if mode == "chroot":
        assert by_path[top] == {"id": "root", "kind": "root", "mount": lower.mount_id, "path": top}
    else:
        [root] = [s for s in dump["skipped"] if s["id"] == "root"]
        assert root["reason"].startswith("the root of its mount namespace")

    with open("/proc/self/mountinfo") as handle:
        assert handle.read() == ours_before


def test_no_such_process() -> None:
    pid = 1
    while os.path.exists(f"/proc/{pid}"):
        pid += 7919
    with pytest.raises(CaptureError) as exc:
        capture_pid(pid)
    assert isinstance(exc.value, InputError) and exc.value.exit_status == 2
    assert str(exc.value) == f"pid {pid}: no such process"
    with pytest.raises(CaptureError, match="not a process id"):
        capture_pid(0)
