"""No escapes: a symlink planted on a target's path inside the replica is refused, never followed."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from pytest_mock import MockerFixture

from planner.executor import execute
from planner.executor import run as execute_module
from planner.mountinfo import Mount
from planner.replica import Replica, build_replica
from tests.namespace.test_execute import SEED_TARGETS, seed_plan

pytestmark = pytest.mark.namespace


def plant(mocker: MockerFixture, mount: int, directory: str, name: str, points_to: str) -> None:
    """After the replica is built (inside the namespace), swap `name` in `mount` for a symlink."""

    def build_then_plant(*args: Any, **kwargs: Any) -> Replica:
        kwargs["handles_for"] = {*kwargs.get("handles_for", ()), mount}
        replica = build_replica(*args, **kwargs)
        inside = os.open(directory, os.O_PATH | os.O_DIRECTORY, dir_fd=replica.handles[mount])
        try:
            try:
                os.unlink(name, dir_fd=inside)
            except IsADirectoryError:
                os.rmdir(name, dir_fd=inside)
            os.symlink(points_to, name, dir_fd=inside)
        finally:
            os.close(inside)
        return replica

    mocker.patch.object(execute_module, "build_replica", side_effect=build_then_plant)


@pytest.mark.parametrize(
    "target_id, directory, name, points_to",
    [
        ("file", ".", "state", "/etc/passwd"),  # the file itself, to a path outside the tree
        ("file", ".", "state", "../../../../proc/self/environ"),  # climbing out, relative
        ("src", ".", "shared", "/"),  # a bind mount's source directory, swapped for a link to the root
    ],
)
def test_a_planted_symlink_is_refused(
    seed: list[Mount], mocker: MockerFixture, target_id: str, directory: str, name: str, points_to: str
) -> None:
    plant(mocker, 123 if target_id == "file" else 122, directory, name, points_to)
    report = execute(seed, SEED_TARGETS, seed_plan())
    assert not report["ok"] and report["rolled_back"]
    failed = report["failed_step"]
    # ELOOP from RESOLVE_NO_SYMLINKS, or ENOTDIR where O_NOFOLLOW|O_DIRECTORY meets the link itself.
    assert failed["errno"] in (errno.ELOOP, errno.ENOTDIR), failed
    assert report["created_mounts"] == []
    got = {t["id"]: t for t in report["targets"]}[target_id]
    assert not got["ok"]
    assert report["tree_identical"] and report["yard_empty"]


def test_the_replica_refuses_to_build_in_the_callers_namespace() -> None:
    with open("/proc/self/mountinfo") as handle:
        before = handle.read()
    with pytest.raises(RuntimeError, match="throwaway mount namespace"):
        build_replica([Mount(1, 0, 8, 1, "/", "/", "rw", (), "ext4", "/dev/vda", "rw")])
    with open("/proc/self/mountinfo") as handle:
        assert handle.read() == before
