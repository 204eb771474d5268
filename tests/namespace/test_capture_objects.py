"""capture, plan and run against live processes holding FIFOs, device nodes, a chroot root, and
one of everything: every fd, the cwd, the root, every mapping and socket lands in exactly one place.

Each child unshares a mount namespace of its own (never ours), mounts tmpfs "lower" on BASE,
makes its objects under BASE/d, then mounts tmpfs "upper" on BASE/d over all of them, reports
ready through a pipe and sleeps until it is killed (by its pid, by this test).
"""

from __future__ import annotations

import errno
import os
import stat
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner.errors import CaptureError
from planner.executor import execute
from planner.inputs.capture import capture_pid
from planner.inputs.dump_json import from_json
from planner.mountinfo import parse
from planner.plan import make_plan
from planner.tree import MountTree
from tests.namespace import test_capture
from tests.namespace.children import PRELUDE, Children

overmounted_child = test_capture.overmounted_child  # chrooted into the top of a mount, there

pytestmark = pytest.mark.namespace

CHILD = PRELUDE + textwrap.dedent(
    """
    base, ready_fd, holds = sys.argv[1], int(sys.argv[2]), set(sys.argv[3].split(","))
    everything = "all" in holds
    check(libc.unshare(0x20000), "unshare")
    check(libc.mount(None, b"/", None, 0x4000 | (1 << 18), None), "make / private")
    check(libc.mount(b"lower", base.encode(), b"tmpfs", 0, b"size=1m"), "mount lower")
    d = base + "/d"
    os.mkdir(d)
    held = []
    if "fifo" in holds or everything:
        os.mkfifo(d + "/ctl")
        os.mkfifo(d + "/events")
        held.append(os.open(d + "/ctl", os.O_RDWR))                    # its own channel: never waits
        held.append(os.open(d + "/events", os.O_RDONLY | os.O_NONBLOCK))
        held.append(os.open(d + "/ctl", os.O_WRONLY))                  # a reader is there: does not wait
    if "char" in holds or everything:
        os.mknod(d + "/null", 0o20666, os.makedev(1, 3))               # mknod c 1 3
        held.append(os.open(d + "/null", os.O_WRONLY))
    if everything:
        with open(d + "/file", "w") as f:
            f.write("file")
        held.append(os.open(d + "/file", os.O_RDONLY))
        os.mkdir(d + "/dir")
        held.append(os.open(d + "/dir", os.O_RDONLY | os.O_DIRECTORY))
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(d + "/sock")
        listening.listen()
        client = socket.socket(socket.AF_UNIX)
        client.connect(d + "/sock")
        accepted, _ = listening.accept()                               # connected: shares the listener's name
        gone_socket = socket.socket(socket.AF_UNIX)
        gone_socket.bind(d + "/skfile")
        gone_socket.close()                                            # its socket file stays
        held.append(os.open(d + "/skfile", os.O_PATH))                 # an O_PATH fd on a socket file
        os.symlink("file", d + "/link")
        held.append(os.open(d + "/link", os.O_PATH | os.O_NOFOLLOW))   # on the symlink itself
        pair = socket.socketpair()
        abstract = socket.socket(socket.AF_UNIX)
        abstract.bind("\\0overmount-abstract-%d" % os.getpid())
        tcp = socket.socket(socket.AF_INET)
        held += list(os.pipe())
        held.append(os.eventfd(0))
        held.append(os.memfd_create("overmount"))
        with open(base + "/gone", "w") as f:
            f.write("gone")
        held.append(os.open(base + "/gone", os.O_RDONLY))
        os.unlink(base + "/gone")
        held.append(os.open("/proc/self/ns/net", os.O_RDONLY))
        with open(d + "/mapped", "w+b") as f:
            f.write(b"m" * 8192)
            f.flush()
            mapped = mmap.mmap(f.fileno(), 8192)
            mapped_twice = mmap.mmap(f.fileno(), 4096, offset=4096)  # a second vma of the same file
        anonymous = mmap.mmap(-1, 4096)                                # in no map_files: not a file mapping
    if "chroot" in holds or everything:
        os.makedirs(d + "/jail/var")
        ns_root = os.open("/", os.O_PATH)
        os.chroot(d + "/jail")
        os.chdir("/var")
        jailed = socket.socket(socket.AF_UNIX)
        jailed.bind("/var/sock")                                       # its name is inside the jail
        jailed.listen()
    # The cover, from the namespace root (a chrooted process reaches it through an old fd).
    here = os.open(".", os.O_PATH)
    if "chroot" in holds or everything:
        os.fchdir(ns_root)
    else:
        os.chdir("/")
    check(libc.mount(b"upper", d.lstrip("/").encode(), b"tmpfs", 0, b"size=1m"), "mount upper")
    os.fchdir(here)
    os.close(here)
    os.write(ready_fd, b"ready\\n")
    os.close(ready_fd)
    while True:
        time.sleep(60)
    """
)


@pytest.fixture
def holding(tmp_path: Path) -> Iterator[Callable[[str], tuple[int, str]]]:
    """Start a child holding `what` (fifo, char, chroot, all); (pid, base). Killed by pid after."""
    children = Children()

    def start(what: str) -> tuple[int, str]:
        base = tmp_path / f"base-{len(children.started)}"
        base.mkdir()
        return children.start(CHILD, str(base), what), str(base)

    try:
        yield start
    finally:
        children.kill_all()


def mounts_of(dump: dict[str, Any], base: str) -> tuple[int, int]:
    mounts = parse(dump["mountinfo"])
    lower = next(m for m in mounts if m.mountpoint == base and m.source == "lower")
    upper = next(m for m in mounts if m.mountpoint == base + "/d" and m.source == "upper")
    assert upper.parent_id == lower.mount_id
    return lower.mount_id, upper.mount_id


def plan_and_run(dump: dict[str, Any]) -> dict[str, Any]:
    """`overmount plan` and `run` on the captured dump, in-process; every target must be verified."""
    loaded = from_json(dump, "capture", "")
    plan = make_plan(MountTree(loaded.mounts, "capture"), loaded.targets)
    report = execute(list(loaded.mounts), list(loaded.targets), plan.steps, file_mounts=loaded.file_mounts)
    assert report["ok"] and report["tree_identical"] and report["yard_empty"], report
    return {t["id"]: t for t in report["targets"]}


def test_fifos_are_captured_with_how_they_were_opened_and_restored_so(holding: Any) -> None:
    pid, base = holding("fifo")
    dump = capture_pid(pid)
    lower, _ = mounts_of(dump, base)
    fifos = sorted(
        ((t["path"], t["access"], t["mount"]) for t in dump["targets"] if t.get("file_type") == "fifo"),
    )
    assert fifos == [
        (base + "/d/ctl", "read-write", lower),
        (base + "/d/ctl", "write-only", lower),
        (base + "/d/events", "read-only", lower),
    ]
    results = plan_and_run(dump)
    for t in dump["targets"]:
        if t.get("file_type") == "fifo":
            got = results[t["id"]]
            assert (got["got_mount"], got["file_type"], got["ok"]) == (lower, "fifo", True)
            assert got["detail"].endswith(f"fifo, {t['access']}")  # reopened the way it was held


def test_a_char_device_node_is_captured_and_restored(holding: Any) -> None:
    pid, base = holding("char")
    dump = capture_pid(pid)
    lower, _ = mounts_of(dump, base)
    [null] = [t for t in dump["targets"] if t["path"] == base + "/d/null"]
    assert null == {"id": null["id"], "kind": "open", "mount": lower, "path": base + "/d/null",
                    "file_type": "char", "access": "write-only", "rdev": "1:3"}
    got = plan_and_run(dump)[null["id"]]
    assert (got["got_mount"], got["file_type"], got["type_ok"], got["stand_in"]) == (lower, "char", True, None)


def test_a_chroot_root_under_an_overmount_is_captured_and_restored(holding: Any) -> None:
    pid, base = holding("chroot")
    assert os.readlink(f"/proc/{pid}/root") == base + "/d/jail"
    with open(f"/proc/{pid}/mountinfo") as handle:
        assert handle.read() == ""  # its own view: nothing lies below its root, the cover is outside it
    dump = capture_pid(pid)
    lower, upper = mounts_of(dump, base)
    by_id = {t["id"]: t for t in dump["targets"]}
    assert by_id["root"] == {"id": "root", "kind": "root", "mount": lower, "path": base + "/d/jail"}
    assert by_id["cwd"] == {"id": "cwd", "kind": "chdir", "mount": lower, "path": base + "/d/jail/var"}
    # bound after the chroot as /var/sock: found through the process's root, in the namespace's view
    [sock] = [t for t in dump["targets"] if t["kind"] == "bind"]
    assert (sock["path"], sock["mount"]) == (base + "/d/jail/var/sock", lower)
    assert any("chrooted into" in note for note in dump["notes"])
    results = plan_and_run(dump)
    assert (results["root"]["got_mount"], results["root"]["ok"]) == (lower, True)
    assert (results["cwd"]["got_mount"], results["cwd"]["ok"]) == (lower, True)
    assert (results[sock["id"]]["got_mount"], results[sock["id"]]["ok"]) == (lower, True)
    loaded = from_json(dump, "capture", "")
    moves = [s for s in make_plan(MountTree(loaded.mounts, "c"), loaded.targets).steps if s.op == "move-aside"]
    assert [s.mount for s in moves] == [upper]


def _sockets(pid: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        st = os.stat(f"/proc/{pid}/fd/{name}")
        if stat.S_ISSOCK(st.st_mode) and os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:["):
            out.setdefault(st.st_ino, []).append(int(name))
    return out


def test_one_of_each_lands_in_exactly_one_place(holding: Any) -> None:
    pid, base = holding("all")
    dump = capture_pid(pid)
    lower, _ = mounts_of(dump, base)
    entries = [("target", e) for e in dump["targets"]] + [("skipped", e) for e in dump["skipped"]]
    assert all(e["reason"] for kind, e in entries if kind == "skipped")

    # Every fd of /proc/PID/fd: one entry, by fd (fdN) or as one of a socket's fds.
    fds = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
    placed: dict[int, list[str]] = {fd: [] for fd in fds}
    for kind, e in entries:
        if e["id"].startswith("fd"):
            placed[int(e["id"][2:])].append(kind)
        for fd in e.get("fds", []):
            placed[fd].append(kind)
    assert {fd: len(where) for fd, where in placed.items()} == {fd: 1 for fd in fds}, placed
    # The cwd and the root: one entry each.
    assert [kind for kind, e in entries if e["id"] == "cwd"] == ["target"]
    assert [kind for kind, e in entries if e["id"] == "root"] == ["target"]
    # Every file mapping (map_files, one entry per file however many vmas) and every socket.
    files: dict[tuple[int, int], set[str]] = {}
    for name in os.listdir(f"/proc/{pid}/map_files"):
        st = os.stat(f"/proc/{pid}/map_files/{name}")
        files.setdefault((st.st_dev, st.st_ino), set()).add("map-" + name.split("-")[0])
    map_ids = [e["id"] for _, e in entries if e["id"].startswith("map-")]
    assert sorted(len(ids & set(map_ids)) for ids in files.values()) == [1] * len(files)
    assert len(map_ids) == len(files)
    assert sorted(int(e["id"][3:]) for _, e in entries if e["id"].startswith("sk-")) == sorted(_sockets(pid))

    by_path = {e["path"]: (kind, e) for kind, e in entries if e.get("path")}
    reasons = [e["reason"] for kind, e in entries if kind == "skipped"]

    def target(path: str) -> dict[str, Any]:
        kind, e = by_path[base + path]
        assert kind == "target" and e["mount"] == lower, e
        return e

    assert (target("/d/ctl")["file_type"], target("/d/events")["access"]) == ("fifo", "read-only")
    assert (target("/d/null")["file_type"], target("/d/null")["rdev"]) == ("char", "1:3")
    assert (target("/d/file")["file_type"], target("/d/dir")["file_type"]) == ("regular", "directory")
    assert (target("/d/skfile")["file_type"], target("/d/skfile")["access"]) == ("socket", "path")
    assert target("/d/mapped")["kind"] == "mmap"
    assert target("/d/jail")["kind"] == "root"
    assert target("/d/jail/var")["kind"] == "chdir"
    binds = [e for kind, e in entries if kind == "target" and e["kind"] == "bind"]
    # One bound before the chroot (a namespace path), one after (relative to the jail).
    assert sorted((b["path"], b["mount"]) for b in binds) == [(base + "/d/jail/var/sock", lower), (base + "/d/sock", lower)]
    for why in ("anonymous pipe", "anonymous inode anon_inode:[eventfd]", "memfd (memfd_create)", "deleted: unlinked",
                "namespace file net:", "an O_PATH fd on a symlink itself", "a TCP socket: not a unix one",
                "unbound unix socket", "abstract unix name", "connected stream socket"):
        assert any(r.startswith(why) for r in reasons), (why, reasons)
    assert by_path[f"@overmount-abstract-{pid}"][0] == "skipped"

    results = plan_and_run(dump)
    for e in dump["targets"]:
        if e["path"].startswith(base + "/d/"):
            assert (results[e["id"]]["got_mount"], results[e["id"]]["ok"]) == (lower, True), results[e["id"]]


def _setns_refused(fd: int, nstype: int) -> None:
    raise PermissionError(errno.EPERM, "setns: Operation not permitted")


@pytest.mark.parametrize("overmounted_child", ["chroot"], indirect=True)
def test_without_setns_a_chrooted_process_is_captured_in_its_own_view(
    overmounted_child: tuple[int, str, str], mocker: MockerFixture
) -> None:
    """Fault: setns(2) refused (an unprivileged caller). The table is then /proc/PID/mountinfo, paths
    are relative to the process root, and the root is skipped with the reason, not dropped."""
    pid, _, _ = overmounted_child
    mocker.patch("planner.kernel.setns", _setns_refused)
    dump = capture_pid(pid)
    with open(f"/proc/{pid}/mountinfo") as handle:
        assert dump["mountinfo"] == handle.read()
    assert {t["path"] for t in dump["targets"]} >= {"/d/file", "/d/cwd", "/d/sock"}
    [root] = [s for s in dump["skipped"] if s["id"] == "root"]
    assert root["reason"].startswith("chrooted, but the table is the process's own view")
    assert any("cannot be read (setns: Operation not permitted; setns(2) needs CAP_SYS_ADMIN" in note for note in dump["notes"])


def test_without_setns_a_process_chrooted_where_no_mount_lies_says_so(holding: Any, mocker: MockerFixture) -> None:
    pid, base = holding("chroot")
    mocker.patch("planner.kernel.setns", _setns_refused)
    with pytest.raises(CaptureError, match=f"chrooted into {base}/d/jail, where no mount lies below its root"):
        capture_pid(pid)
