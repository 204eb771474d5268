"""The domain guide's kernel rules, shown with this kernel, and the planner's answers next to them."""

from __future__ import annotations

import os
import tempfile

import pytest

from planner import kernel, mountinfo
from planner.analysis import analyze
from planner.mountinfo import Mount
from planner.simulate import Namespace
from planner.targets import Target
from planner.tree import MountTree

pytestmark = pytest.mark.namespace


def _propagated_behind_a_mount() -> dict[str, object]:
    """The sequence that left side-by-side siblings on kernels 3.14 to 4.10, run on this kernel.

    P is shared, S a slave copy of it. B is mounted on S/x first (a slave's own mount does not
    propagate back); then A on P/x, whose copy propagates to S/x where B already sits. Old kernels
    attached that copy beside B, behind it; since 4.11 the copy is tucked beneath B (it becomes B's
    parent). Either way a lookup of S/x must end in B, the mount made first. The table is read from
    inside a chroot into the scratch tmpfs, so it lists only these mounts, relative to it.
    """
    top = tempfile.mkdtemp(prefix="overmount-siblings-")
    kernel.mount("scratch", top, "tmpfs", 0, "mode=0755")
    os.makedirs(f"{top}/p")
    os.makedirs(f"{top}/s")
    kernel.mount("P", f"{top}/p", "tmpfs", 0, None)
    kernel.make_propagation(f"{top}/p", kernel.MS_SHARED)
    os.mkdir(f"{top}/p/x")
    kernel.mount(f"{top}/p", f"{top}/s", None, 0x1000, None)  # MS_BIND: S joins P's peer group
    kernel.make_propagation(f"{top}/s", kernel.MS_SLAVE)
    kernel.mount("B", f"{top}/s/x", "tmpfs", 0, None)
    with open(f"{top}/s/x/made-first", "w", encoding="utf-8"):
        pass
    b_id = kernel.statx_mount_id(f"{top}/s/x")[0]
    kernel.mount("A", f"{top}/p/x", "tmpfs", 0, None)
    kernel.pin_proc()
    os.chroot(top)
    os.chdir("/")
    return {
        "mountinfo": kernel.own_mountinfo(),
        "b": b_id,
        "lookup": kernel.statx_mount_id("/s/x")[0],
        "files": sorted(os.listdir("/s/x")),
    }


def _as_an_old_kernel_listed_it(mounts: list[Mount], tucked: Mount, above: Mount) -> list[Mount]:
    """The same table as a 3.14-4.10 kernel wrote it: the copy beside the mount, not beneath it."""
    return [m._replace(parent_id=tucked.parent_id) if m is above else m for m in mounts]


def test_a_copy_propagated_behind_a_mount_leaves_the_mount_made_first_on_top() -> None:
    seen = kernel.run_in_namespace(_propagated_behind_a_mount)
    mounts = mountinfo.parse(str(seen["mountinfo"]), "namespace")
    by_id = {m.mount_id: m for m in mounts}
    b = by_id[int(seen["b"])]  # type: ignore[call-overload]
    copy = by_id[b.parent_id]
    # The kernel: the lookup ends in B, the mount made first, which mountinfo lists first.
    assert seen["lookup"] == b.mount_id and seen["files"] == ["made-first"]
    assert copy.mountpoint == b.mountpoint == "/s/x" and copy.master is not None  # tucked beneath B (4.11+)
    assert mounts.index(b) < mounts.index(copy)

    # The planner reads this kernel's table alike: a stack, B on top, the copy hidden under it.
    modern = MountTree(mounts, "namespace")
    assert Namespace(modern).walk("/s/x/f").mount == b.mount_id
    assert analyze(modern).mount_covers[copy.mount_id][0].mount == b.mount_id

    # The legacy listing of the same sequence: two siblings of S on /s/x, B listed first and on top.
    legacy = MountTree(_as_an_old_kernel_listed_it(mounts, copy, b), "legacy")
    assert legacy.children_at[(copy.parent_id, "/s/x")] == (copy.mount_id, b.mount_id)  # bottom first
    assert Namespace(legacy).walk("/s/x/f").mount == b.mount_id
    findings = analyze(legacy, [Target("t1", "open", copy.mount_id, "/s/x/f"), Target("t2", "open", b.mount_id, "/s/x/g")])
    assert [c.mount for c in findings.targets[0].covers] == [b.mount_id] and not findings.targets[1].hidden
    assert findings.targets[0].movers == (b.mount_id,)


def _mounted_beneath() -> list[str]:
    top = tempfile.mkdtemp(prefix="overmount-beneath-")
    kernel.mount("scratch", top, "tmpfs", 0, None)
    os.mkdir(f"{top}/x")
    kernel.mount("B", f"{top}/x", "tmpfs", 0, None)
    under = kernel.new_tmpfs()
    kernel.move_mount(under, "", kernel.AT_FDCWD, f"{top}/x", kernel.MOVE_MOUNT_F_EMPTY_PATH | kernel.MOVE_MOUNT_BENEATH)
    return [line for line in kernel.own_mountinfo().splitlines() if f" {top}/x " in line]


def test_mounting_beneath_tucks_too_so_no_sibling_can_be_built_here() -> None:
    # The other way this kernel puts a mount under one already there (MOVE_MOUNT_BENEATH, 6.5+)
    # also makes parent and child, never siblings: the replica cannot build a legacy tree.
    b, beneath = mountinfo.parse("\n".join(kernel.run_in_namespace(_mounted_beneath)))
    assert b.source == "B" and b.parent_id == beneath.mount_id and b.mountpoint == beneath.mountpoint
