"""Small builders for tests: a tree from mountinfo lines, targets from tuples."""

from planner import mountinfo
from planner.targets import Target
from planner.tree import MountTree


def tree_of(*lines: str) -> MountTree:
    return MountTree(mountinfo.parse("\n".join(lines)), "<test>")


def targets_of(*specs: tuple) -> list[Target]:
    return [Target(f"t{i + 1}", *spec) for i, spec in enumerate(specs)]


# The 2015 thread's /sys/fs/cgroup: 122 carries 123, then 128 stacks on 122 and carries 129.
SEED = (
    "71 72 253:1 / / rw - ext4 /dev/vda rw",
    "107 71 0:40 / /sys rw - sysfs sysfs rw",
    "122 107 0:41 / /sys/fs/cgroup rw - tmpfs cgroup rw",
    "123 122 0:18 /cgmanager /sys/fs/cgroup/cgmanager rw - tmpfs none rw",
    "128 122 0:42 / /sys/fs/cgroup rw - tmpfs none rw",
    "129 128 0:18 /cgmanager /sys/fs/cgroup/cgmanager rw - tmpfs none rw",
)
