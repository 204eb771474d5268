"""The shell rendering, run for real by /bin/sh in a throwaway namespace, against a tree the test mounts.

Inside the namespace a tmpfs on a scratch directory holds the seed's shape: tmpfs A on srv with a
file and a directory in it, covered by a second tmpfs C stacked on srv. The plan is made from the
namespace's own /proc/self/mountinfo (the real table, host mounts included, all private here), then
rendered with --format shell and run by `sh`. The kernel's mount table before and after decides.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from planner import kernel
from planner.mountinfo import parse
from planner.plan import make_plan
from planner.render import plan_shell
from planner.targets import Target
from planner.tree import MountTree

pytestmark = pytest.mark.namespace

Table = dict[int, tuple[int, str, str, str]]


def _table() -> Table:
    return {m.mount_id: (m.parent_id, m.mountpoint, m.root, m.dev) for m in parse(kernel.own_mountinfo())}


def _mount_id(path: str) -> int:
    return kernel.statx_mount_id(path, follow=True)[0]


def _run_script(scratch: str, yard: str, break_dest: bool, name: str) -> dict[str, Any]:
    """In the namespace child: build the tree, plan, render, run the script; what the kernel shows."""
    kernel.mount("scratch", scratch, "tmpfs", 0, "mode=0755")
    kernel.make_propagation(scratch, kernel.MS_PRIVATE)
    srv, dest = f"{scratch}/{name}", f"{scratch}/dest"
    for directory in (srv, dest, f"{scratch}/keepme"):
        os.mkdir(directory)
    kernel.mount("lower", srv, "tmpfs", 0)  # A: holds what the targets need
    os.mkdir(f"{srv}/sub")
    with open(f"{srv}/notes", "w", encoding="utf-8") as handle:
        handle.write("in A\n")
    lower = _mount_id(srv)
    kernel.mount("cover", srv, "tmpfs", 0)  # C, stacked on A: hides notes and sub
    targets = [Target("t1", "open", lower, f"{srv}/notes"), Target("t2", "mount-source", lower, f"{srv}/sub", dest)]
    before = _table()
    tree = MountTree(parse(kernel.own_mountinfo()), "/proc/self/mountinfo")
    plan = make_plan(tree, targets, yard=yard)
    script = f"{scratch}/plan.sh"
    text = plan_shell(plan, "test")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(text)
    if break_dest:
        os.rmdir(dest)  # the mount-source bind fails mid-way, after the cover was parked
    done = subprocess.run(["sh", script], capture_output=True, text=True, timeout=60, check=False)
    after = _table()
    return {
        "status": done.returncode,
        "stderr": done.stderr,
        "before": before,
        "after": after,
        "exists": {n: os.path.lexists(f"{scratch}/{n}") for n in ("keepme", "new")},
        "script_printable": all(line.isprintable() for line in text.splitlines()),
        "at_dest": _mount_id(dest) if os.path.exists(dest) else None,
        "notes": open(f"{srv}/notes", encoding="utf-8").read() if os.path.exists(f"{srv}/notes") else None,
        "moves": plan.moves,
        "lower": lower,
    }


def _in_namespace(tmp_path: Any, yard: str, break_dest: bool = False, name: str = "srv") -> dict[str, Any]:
    return kernel.run_in_namespace(_run_script, str(tmp_path), yard.replace("SCRATCH", str(tmp_path)), break_dest, name)


def test_the_script_restores_the_tree_and_leaves_a_yard_directory_that_was_there(tmp_path) -> None:
    got = _in_namespace(tmp_path, "SCRATCH/keepme")
    assert got["status"] == 0, got["stderr"]
    assert got["moves"] == 1
    new = {k: v for k, v in got["after"].items() if k not in got["before"]}
    assert {k: v for k, v in got["after"].items() if k in got["before"]} == got["before"]  # nothing moved for good
    assert [(v[1], v[2]) for v in new.values()] == [(f"{tmp_path}/dest", "/sub")]  # the mount-source bind
    assert got["exists"]["keepme"]  # the review's `--yard /srv/keepme`: rmdir removed it
    assert got["notes"] is None  # the cover is back on srv: notes is hidden again


def test_the_script_removes_the_parents_it_made_and_only_those(tmp_path) -> None:
    got = _in_namespace(tmp_path, "SCRATCH/new/deep/yard")
    assert got["status"] == 0, got["stderr"]
    assert not got["exists"]["new"]  # mkdir -p left new/deep behind
    assert got["exists"]["keepme"]


def test_a_failing_command_puts_the_parked_cover_back(tmp_path) -> None:
    got = _in_namespace(tmp_path, "SCRATCH/new/deep/yard", break_dest=True)
    assert got["status"] != 0
    assert "putting parked mounts back" in got["stderr"]
    assert got["after"] == got["before"]  # the cover left the yard; the yard's tmpfs is gone
    assert not got["exists"]["new"]
    assert got["notes"] is None


def test_a_path_with_a_newline_an_escape_and_quotes_is_reached_and_printed_as_plain_text(tmp_path) -> None:
    # printf %b builds such a path in the script: the script's own text has no control character.
    name = "s r'v\n\x1b]0;owned\x07\\x\udcff"
    got = _in_namespace(tmp_path, "SCRATCH/new/yard", name=name)
    assert got["status"] == 0, got["stderr"]
    assert got["script_printable"]
    assert {k: v for k, v in got["after"].items() if k in got["before"]} == got["before"]
    assert [v[1] for k, v in got["after"].items() if k not in got["before"]] == [f"{tmp_path}/dest"]
