"""Fixtures for tests that need the kernel: a throwaway mount namespace per call.

Every test here checks that the host's own mount table is the same before and
after it (the executor must never touch the caller's namespace). They are
skipped only when this machine cannot make a mount namespace at all, and then
with the reason; under CI (the CI environment variable) or --require-kernel
they fail instead, so a CI run never passes on the pure tests alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyroute2  # type: ignore[import-untyped]  # noqa: F401 - imported once here, not in every forked namespace child
import pytest

from planner import kernel
from planner.mountinfo import Mount, parse
from tests.conftest import kernel_required

CAN_NAMESPACE, WHY_NOT = kernel.can_make_namespaces()

# The 2015 LXD container of reference/criu-overmount-confusion-2015.txt, verbatim.
SEED_MOUNTINFO = """\
71 72 253:1 /var/lib/lxd/lxc/mig/rootfs / rw,relatime - ext4 /dev/disk/by-uuid/6c5a78e0-95fa-49a8-aa91-a8093d295e58 rw,data=ordered
102 71 0:37 / /dev rw,relatime - tmpfs none rw,size=100k,mode=755
103 71 0:39 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
104 105 0:39 /sys/net /proc/sys/net rw,nosuid,nodev,noexec,relatime - proc proc rw
105 103 0:39 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
106 103 0:39 /sysrq-trigger /proc/sysrq-trigger ro,nosuid,nodev,noexec,relatime - proc proc rw
107 71 0:40 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
108 107 0:40 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs rw
109 108 0:40 / /sys/devices/virtual/net rw,relatime - sysfs sysfs rw
110 109 0:40 /devices/virtual/net /sys/devices/virtual/net rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
111 108 0:6 / /sys/kernel/debug rw,relatime - debugfs none rw
112 108 0:10 / /sys/kernel/security rw,relatime - securityfs none rw
113 108 0:23 / /sys/fs/pstore rw,relatime - pstore none rw
114 102 0:5 /console /dev/console rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
115 102 0:5 /full /dev/full rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
116 102 0:5 /null /dev/null rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
117 102 0:5 /random /dev/random rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
118 102 0:5 /tty /dev/tty rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
119 102 0:5 /urandom /dev/urandom rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
120 102 0:5 /zero /dev/zero rw,relatime - devtmpfs udev rw,size=989132k,nr_inodes=247283,mode=755
121 105 0:3 /sys/fs/binfmt_misc /proc/sys/fs/binfmt_misc rw,relatime - proc proc rw
122 108 0:41 / /sys/fs/cgroup rw,relatime - tmpfs cgroup rw,size=12k,mode=755
123 122 0:18 /cgmanager /sys/fs/cgroup/cgmanager rw,relatime - tmpfs none rw,size=4k,mode=755
124 103 0:36 /proc/cpuinfo /proc/cpuinfo rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
125 103 0:36 /proc/meminfo /proc/meminfo rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
126 103 0:36 /proc/stat /proc/stat rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
127 103 0:36 /proc/uptime /proc/uptime rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
128 122 0:42 / /sys/fs/cgroup rw,relatime - tmpfs none rw,size=4k,mode=755
129 128 0:18 /cgmanager /sys/fs/cgroup/cgmanager rw,relatime - tmpfs none rw,size=4k,mode=755
130 128 0:36 /cgroup/blkio /sys/fs/cgroup/blkio rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
131 128 0:36 /cgroup/cpu /sys/fs/cgroup/cpu rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
132 128 0:36 /cgroup/cpuacct /sys/fs/cgroup/cpuacct rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
133 128 0:36 /cgroup/cpuset /sys/fs/cgroup/cpuset rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
134 128 0:36 /cgroup/devices /sys/fs/cgroup/devices rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
135 128 0:36 /cgroup/freezer /sys/fs/cgroup/freezer rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
136 128 0:36 /cgroup/hugetlb /sys/fs/cgroup/hugetlb rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
137 128 0:36 /cgroup/memory /sys/fs/cgroup/memory rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
138 128 0:36 /cgroup/name=systemd /sys/fs/cgroup/systemd rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
139 128 0:36 /cgroup/net_cls /sys/fs/cgroup/net_cls rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
140 128 0:36 /cgroup/net_prio /sys/fs/cgroup/net_prio rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
141 128 0:36 /cgroup/perf_event /sys/fs/cgroup/perf_event rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
73 102 0:43 / /dev/pts rw,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
"""
# Single-file bind mounts of the seed (device nodes and lxcfs files).
SEED_FILE_MOUNTS = frozenset({114, 115, 116, 117, 118, 119, 120, 124, 125, 126, 127})

# A shared parent (20, peer group 5) with a peer elsewhere (21) and a slave (26), as the
# kernel shows it after: mount --make-shared /srv; bind to /mnt/peer and /mnt/slave;
# make /mnt/slave a slave; tmpfs on /srv/data/cache, then a cover on /srv/data.
PROPAGATION_MOUNTINFO = """\
1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw
20 1 0:50 / /srv rw,relatime shared:5 - tmpfs srv rw
21 1 0:50 / /mnt/peer rw,relatime shared:5 - tmpfs srv rw
26 1 0:50 / /mnt/slave rw,relatime master:5 - tmpfs srv rw
22 20 0:51 / /srv/data/cache rw,relatime shared:6 - tmpfs cache rw
23 21 0:51 / /mnt/peer/data/cache rw,relatime shared:6 - tmpfs cache rw
27 26 0:51 / /mnt/slave/data/cache rw,relatime master:6 - tmpfs cache rw
24 20 0:52 / /srv/data rw,relatime shared:7 - tmpfs cover rw
25 21 0:52 / /mnt/peer/data rw,relatime shared:7 - tmpfs cover rw
28 26 0:52 / /mnt/slave/data rw,relatime master:7 - tmpfs cover rw
"""


@pytest.fixture(autouse=True)
def host_mounts_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip when no namespace can be made (fail under CI or --require-kernel); fail when the
    host's mount table changed."""
    if not CAN_NAMESPACE:
        if kernel_required(request.config):
            pytest.fail(f"this run requires the kernel (CI is set or --require-kernel was given), but no mount "
                        f"namespace can be made here: {WHY_NOT}", pytrace=False)
        pytest.skip(f"cannot make a mount namespace here: {WHY_NOT}")
    before = _host_mountinfo()
    yield
    assert _host_mountinfo() == before, "the host's mount namespace changed"


def _host_mountinfo() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


@pytest.fixture
def seed() -> list[Mount]:
    return parse(SEED_MOUNTINFO, "seed")


@pytest.fixture
def propagation_dump() -> list[Mount]:
    return parse(PROPAGATION_MOUNTINFO, "propagation")


@pytest.fixture
def seed_file_mounts() -> frozenset[int]:
    return SEED_FILE_MOUNTS
