"""`-o FILE` as the security review attacked it: planted temporaries, devices, FIFOs, symlinks.

Every case runs the real command (`python -m planner plan ... -o FILE`) against files made in a
temporary directory; the "someone else" of the review is uid 65534, which needs root to fake.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO

SEED = os.path.join(REPO, "scenarios", "01-seed-lxd-cgroup.toml")
OTHER_UID = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making files owned by another user needs root")


def plan_to(path: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner", "plan", SEED, "--format", "json", "-o", path],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def assert_refused(done: subprocess.CompletedProcess[str], path: str, fragment: str) -> None:
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert json.loads(done.stdout)["error"] == done.stderr[len("overmount: "):-1]  # --format json: the error as JSON
    assert done.stderr.startswith(f"overmount: {path}: cannot write: "), done.stderr
    assert fragment in done.stderr


def is_plan(text: str) -> bool:
    return text.startswith('{\n  "format": "overmount-plan/1"') and text.endswith("}\n")


def test_a_planted_tmp_symlink_is_never_followed(tmp_path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root's secret\n")
    out = tmp_path / "plan.json"
    os.symlink(victim, str(out) + ".tmp")
    done = plan_to(str(out))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "root's secret\n"
    assert is_plan(out.read_text())
    assert os.readlink(str(out) + ".tmp") == str(victim)  # left alone, not removed either


def test_a_planted_tmp_fifo_does_not_block(tmp_path) -> None:
    out = tmp_path / "plan.json"
    os.mkfifo(str(out) + ".tmp")
    done = plan_to(str(out), timeout=20)  # the old code opened FILE.tmp for writing: blocked for good
    assert done.returncode == 0, done.stderr
    assert is_plan(out.read_text())


@as_root
def test_someone_elses_planted_tmp_file_does_not_become_the_output(tmp_path) -> None:
    out = tmp_path / "plan.json"
    planted = tmp_path / "plan.json.tmp"
    planted.write_text("")
    os.chown(planted, OTHER_UID, OTHER_UID)
    os.chmod(planted, 0o666)
    assert plan_to(str(out)).returncode == 0
    st = os.stat(out)
    assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o022) == (os.geteuid(), 0)  # ours, not writable by others
    assert planted.read_text() == ""


@as_root
def test_an_existing_file_of_someone_else_is_replaced_whole_not_edited(tmp_path) -> None:
    out = tmp_path / "plan.json"
    out.write_text("old\n")
    os.chown(out, OTHER_UID, OTHER_UID)
    os.chmod(out, 0o666)
    before = os.stat(out).st_ino
    assert plan_to(str(out)).returncode == 0
    st = os.stat(out)
    assert st.st_ino != before and st.st_uid == os.geteuid() and not st.st_mode & 0o022
    assert is_plan(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left behind


@as_root
def test_a_null_device_stays_a_device(tmp_path) -> None:
    # A null device of our own, never the machine's /dev/null.
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    done = plan_to(str(null))
    assert done.returncode == 0, done.stderr
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_a_fifo_of_ours_is_written_through(tmp_path) -> None:
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    done = plan_to(str(fifo))
    reader.join(timeout=20)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert is_plan(got[0])


@as_root
def test_someone_elses_fifo_is_refused(tmp_path) -> None:
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    os.chown(fifo, OTHER_UID, OTHER_UID)
    assert_refused(plan_to(str(fifo), timeout=20), str(fifo), f"it is a FIFO owned by uid {OTHER_UID}")


@as_root
def test_someone_elses_symlink_is_neither_followed_nor_replaced(tmp_path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root's secret\n")
    link = tmp_path / "plan.json"
    os.symlink(victim, link)
    os.lchown(link, OTHER_UID, OTHER_UID)
    assert_refused(plan_to(str(link)), str(link), f"it is a symlink owned by uid {OTHER_UID}")
    assert victim.read_text() == "root's secret\n"
    assert os.readlink(link) == str(victim)


def test_our_own_symlink_leads_to_the_file_it_names(tmp_path) -> None:
    (tmp_path / "plans").mkdir()
    real = tmp_path / "plans" / "v1.json"
    real.write_text("old\n")
    link = tmp_path / "plan.json"
    os.symlink("plans/v1.json", link)
    assert plan_to(str(link)).returncode == 0
    assert os.readlink(link) == "plans/v1.json"
    assert is_plan(real.read_text())
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["v1.json"]


def test_a_directory_or_a_missing_directory_is_one_line_exit_2(tmp_path) -> None:
    assert_refused(plan_to(str(tmp_path)), str(tmp_path), "it is a directory")
    missing = str(tmp_path / "no" / "plan.json")
    assert_refused(plan_to(missing), missing, "No such file or directory")
    assert os.listdir(tmp_path) == []


def test_a_directory_nobody_may_write_is_one_line_exit_2() -> None:
    # sysfs refuses new files even to root: the same path as any unwritable directory.
    assert_refused(plan_to("/sys/kernel/plan.json"), "/sys/kernel/plan.json", "Permission denied")
