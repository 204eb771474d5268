"""Generated mount tables shaped like big real hosts, with a chosen share of mounts holding hidden targets.

A Kubernetes node with snaps, seen from a namespace its runtime made rslave
(every mount a slave of the host's peer group, as `master:N`), or private:

- base: ext4 root, /proc (binfmt_misc autofs with binfmt_misc stacked on it, as
  systemd leaves it), /sys, /dev, /run, /boot, /var on its own disk;
- siblings by the thousand: kubelet pod volumes (projected service-account
  token, secret and configmap tmpfs under
  /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~<kind>/<name>), snap
  squashfs loops on /snap/<name>/<rev> (some mounted twice: a stack), CRI
  sandbox shm tmpfs and overlay rootfs under /run/containerd, nsfs binds on
  /run/netns/cni-<uid>;
- hidden targets, one per holding mount, three ways real hosts make them:
  * volumes cover: a tmpfs mounted later on a pod's volumes/ directory hides
    every volume mount below it (1 to 3 secrets, each with an open target);
    one move serves all of that pod's targets;
  * directory cover: a tmpfs mounted over data/ inside a memory emptyDir
    tmpfs that holds a bound unix socket or a cwd there;
  * stacked cover: a secret tmpfs mounted twice more on its own mountpoint
    (stack of two), hiding a certificate the process mmapped or opened.

No target lives inside a mount another target needs moved, so one
move-aside/move-back bracket serves every target: the planner should reach
the lower bound (one move per covering mount) on every generated case.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from planner.targets import Target

SNAPS = ("core20", "core22", "core24", "snapd", "lxd", "firefox", "gnome-42-2204", "gtk-common-themes", "bare", "microk8s")
SECRETS = ("default-token", "tls", "webhook-certs", "registry-creds", "etcd-client", "metrics-certs")
CONFIGMAPS = ("kube-root-ca.crt", "config", "nginx-conf", "scripts")
KINDS_OPEN = ("open", "mmap")


@dataclass
class GeneratedHost:
    mounts: int
    hidden_fraction: float
    propagation: str
    mountinfo: str
    targets: list[Target]
    holders: int  # mounts that hold a hidden target
    shapes: dict[str, int] = field(default_factory=dict)  # hidden units by shape
    covers: int = 0  # mounts the generator placed to hide something (stacks count each layer)


class _Builder:
    """Allocates ids, devices and peer groups; writes mountinfo lines in mount order."""

    def __init__(self, rng: random.Random, propagation: str) -> None:
        self.rng = rng
        self.propagation = propagation
        self.lines: list[str] = []
        self.next_id = 29
        self.next_anon = 50  # 0:N anonymous superblocks (tmpfs, overlay)
        self.next_loop = 0
        self.next_group = 2
        self.next_ns = 4026532000
        self.snaps: set[str] = set()  # each revision mounted once (twice on purpose only as a stack)

    def uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def suffix(self) -> str:
        return "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))

    def anon(self) -> str:
        self.next_anon += 1
        return f"0:{self.next_anon}"

    def loop(self) -> str:
        self.next_loop += 1
        return f"7:{self.next_loop}"

    def add(self, parent: int, dev: str, mountpoint: str, fstype: str, source: str, opts: str = "rw,relatime",
            super_opts: str = "rw", root: str = "/") -> int:
        mount_id = self.next_id
        self.next_id += 1
        optional = ""
        if self.propagation == "rslave" and parent != 1:
            optional = f" master:{self.next_group}"
            self.next_group += 1
        self.lines.append(f"{mount_id} {parent} {dev} {root} {mountpoint} {opts}{optional} - {fstype} {source} {super_opts}")
        return mount_id

    def tmpfs(self, parent: int, mountpoint: str, size: str = "rw,size=16384k,inode64") -> int:
        return self.add(parent, self.anon(), mountpoint, "tmpfs", "tmpfs", "rw,relatime", size)


@dataclass
class _Base:
    root: int
    var: int
    run: int


def _base(b: _Builder) -> _Base:
    root = b.add(1, "253:1", "/", "ext4", "/dev/vda1", super_opts="rw,errors=remount-ro")
    sys_ = b.add(root, "0:21", "/sys", "sysfs", "sysfs", "rw,nosuid,nodev,noexec,relatime")
    b.add(sys_, "0:7", "/sys/kernel/security", "securityfs", "securityfs", "rw,nosuid,nodev,noexec,relatime")
    b.add(sys_, "0:26", "/sys/fs/cgroup", "cgroup2", "cgroup2", "rw,nosuid,nodev,noexec,relatime", "rw,nsdelegate")
    b.add(sys_, "0:30", "/sys/fs/bpf", "bpf", "bpf", "rw,nosuid,nodev,noexec,relatime", "rw,mode=700")
    proc = b.add(root, "0:22", "/proc", "proc", "proc", "rw,nosuid,nodev,noexec,relatime")
    # systemd's automount point with the real filesystem stacked on it: a stack on every such host.
    autofs = b.add(proc, "0:40", "/proc/sys/fs/binfmt_misc", "autofs", "systemd-1", super_opts="rw,fd=29,pgrp=1,timeout=0,minproto=5,maxproto=5,direct")
    b.add(autofs, "0:41", "/proc/sys/fs/binfmt_misc", "binfmt_misc", "binfmt_misc", "rw,nosuid,nodev,noexec,relatime")
    dev = b.add(root, "0:5", "/dev", "devtmpfs", "udev", "rw,nosuid,relatime", "rw,size=16202540k,mode=755,inode64")
    b.add(dev, "0:23", "/dev/shm", "tmpfs", "tmpfs", "rw,nosuid,nodev", "rw,inode64")
    b.add(dev, "0:24", "/dev/pts", "devpts", "devpts", "rw,nosuid,noexec,relatime", "rw,gid=5,mode=620,ptmxmode=000")
    run = b.add(root, "0:25", "/run", "tmpfs", "tmpfs", "rw,nosuid,nodev,noexec,relatime", "rw,size=6486096k,mode=755,inode64")
    b.add(run, "0:27", "/run/lock", "tmpfs", "tmpfs", "rw,nosuid,nodev,noexec,relatime", "rw,size=5120k,inode64")
    b.add(run, "0:28", "/run/user/1000", "tmpfs", "tmpfs", "rw,nosuid,nodev,relatime", "rw,size=3243044k,mode=700,uid=1000,gid=1000,inode64")
    boot = b.add(root, "259:2", "/boot", "ext4", "/dev/nvme0n1p2", super_opts="rw")
    b.add(boot, "259:1", "/boot/efi", "vfat", "/dev/nvme0n1p1", super_opts="rw,fmask=0077,dmask=0077")
    var = b.add(root, "253:2", "/var", "xfs", "/dev/mapper/vg0-var", super_opts="rw,attr2,inode64,logbufs=8,noquota")
    return _Base(root, var, run)


# --- units: a few mounts each; the hidden ones return their targets ----------------------------

Unit = Callable[[_Builder, _Base, list[Target]], None]


def _pod_dir(b: _Builder) -> str:
    return f"/var/lib/kubelet/pods/{b.uid()}/volumes"


def plain_pod(b: _Builder, base: _Base, targets: list[Target], secrets: int = 1, configmap: bool = False) -> None:
    volumes = _pod_dir(b)
    b.tmpfs(base.var, f"{volumes}/kubernetes.io~projected/kube-api-access-{b.suffix()}")
    for i in range(secrets):
        b.tmpfs(base.var, f"{volumes}/kubernetes.io~secret/{SECRETS[i % len(SECRETS)]}-{b.suffix()}")
    if configmap:
        b.tmpfs(base.var, f"{volumes}/kubernetes.io~configmap/{b.rng.choice(CONFIGMAPS)}")


def snap(b: _Builder, base: _Base, targets: list[Target], twice: bool = False) -> None:
    path = f"/snap/{b.rng.choice(SNAPS)}/{b.rng.randrange(100, 30000)}"
    while path in b.snaps:
        path = f"/snap/{b.rng.choice(SNAPS)}/{b.rng.randrange(100, 30000)}"
    b.snaps.add(path)
    dev = b.loop()
    lower = b.add(base.root, dev, path, "squashfs", f"/dev/loop{dev[2:]}", "ro,nodev,relatime", "ro,errors=continue,threads=single")
    if twice:  # snapd re-mounting a revision: the second sits on the first
        b.add(lower, dev, path, "squashfs", f"/dev/loop{dev[2:]}", "ro,nodev,relatime", "ro,errors=continue,threads=single")


def sandbox(b: _Builder, base: _Base, targets: list[Target]) -> None:
    sid = f"{b.rng.getrandbits(256):064x}"
    b.add(base.run, b.anon(), f"/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{sid}/shm", "tmpfs", "shm",
          "rw,nosuid,nodev,noexec,relatime", "rw,size=65536k,inode64")
    b.add(base.run, b.anon(), f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{sid}/rootfs", "overlay", "overlay",
          "rw,relatime", f"rw,lowerdir=/var/lib/containerd/snapshots/{b.next_id}/fs,upperdir=/var/lib/containerd/snapshots/{b.next_id + 1}/fs,workdir=/var/lib/containerd/snapshots/{b.next_id + 1}/work")


def netns(b: _Builder, base: _Base, targets: list[Target]) -> None:
    b.next_ns += 1
    b.add(base.run, "0:4", f"/run/netns/cni-{b.uid()}", "nsfs", "nsfs", "rw", "rw", root=f"net:[{b.next_ns}]")


def _target(targets: list[Target], kind: str, mount: int, path: str) -> None:
    targets.append(Target(f"t{len(targets) + 1}", kind, mount, path))


def volumes_cover(b: _Builder, base: _Base, targets: list[Target], holders: int) -> None:
    """Secrets holding open certificates, then a tmpfs on the pod's volumes/ hides them all."""
    volumes = _pod_dir(b)
    b.tmpfs(base.var, f"{volumes}/kubernetes.io~projected/kube-api-access-{b.suffix()}")  # hidden too, no target
    for i in range(holders):
        path = f"{volumes}/kubernetes.io~secret/{SECRETS[i % len(SECRETS)]}-{b.suffix()}"
        secret = b.tmpfs(base.var, path)
        _target(targets, KINDS_OPEN[i % 2], secret, f"{path}/..2024_05_01_12_00_00.{b.rng.randrange(10**9)}/tls.crt")
    b.tmpfs(base.var, volumes)


def directory_cover(b: _Builder, base: _Base, targets: list[Target]) -> None:
    """A memory emptyDir holding a bound socket (or a cwd) in data/, then a tmpfs over data/."""
    path = f"{_pod_dir(b)}/kubernetes.io~empty-dir/cache"
    cache = b.tmpfs(base.var, path)
    if b.rng.random() < 0.5:
        _target(targets, "bind", cache, f"{path}/data/app.sock")
    else:
        _target(targets, "chdir", cache, f"{path}/data/work")
    b.tmpfs(cache, f"{path}/data")


def stacked_cover(b: _Builder, base: _Base, targets: list[Target]) -> None:
    """A secret mounted twice more on its own mountpoint: a stack of two over the file held."""
    path = f"{_pod_dir(b)}/kubernetes.io~secret/{b.rng.choice(SECRETS)}-{b.suffix()}"
    secret = b.tmpfs(base.var, path)
    _target(targets, b.rng.choice(KINDS_OPEN), secret, f"{path}/ca.crt")
    first = b.tmpfs(secret, path)
    b.tmpfs(first, path)


def generate(mounts: int, hidden_fraction: float, seed: int = 1, propagation: str = "rslave") -> GeneratedHost:
    """A host of exactly `mounts` mounts, round(mounts * hidden_fraction) of them (at least 1) holding a hidden target."""
    rng = random.Random(f"{mounts}/{hidden_fraction}/{seed}")
    b = _Builder(rng, propagation)
    base = _base(b)
    want = max(1, round(mounts * hidden_fraction))
    # Plan the units first (sizes known), then emit them shuffled so hidden pods sit among plain ones.
    units: list[Callable[[list[Target]], None]] = []
    used = len(b.lines)
    shapes = {"volumes cover": 0, "directory cover": 0, "stacked cover": 0}
    placed = covers = turn = 0
    while placed < want:
        shape = ("volumes cover", "directory cover", "stacked cover", "volumes cover", "directory cover")[turn % 5]
        turn += 1
        if shape == "volumes cover":
            holders = min(want - placed, 1 + rng.randrange(3))
            units.append(partial(volumes_cover, b, base, holders=holders))
            used, placed, covers = used + holders + 2, placed + holders, covers + 1
        elif shape == "directory cover":
            units.append(partial(directory_cover, b, base))
            used, placed, covers = used + 2, placed + 1, covers + 1
        else:
            units.append(partial(stacked_cover, b, base))
            used, placed, covers = used + 3, placed + 1, covers + 2
        shapes[shape] += 1
    if used > mounts:
        raise ValueError(f"{mounts} mounts cannot hold {want} hidden targets with this layout (needs {used})")
    left = mounts - used
    fillers: list[tuple[int, Callable[[list[Target]], None]]] = [
        (2, partial(plain_pod, b, base, secrets=1)),
        (3, partial(plain_pod, b, base, secrets=2)),
        (3, partial(plain_pod, b, base, secrets=1, configmap=True)),
        (1, partial(snap, b, base)),
        (2, partial(snap, b, base, twice=True)),
        (2, partial(sandbox, b, base)),
        (1, partial(netns, b, base)),
    ]
    one_mount = [unit for size, unit in fillers if size == 1]
    weights = (30, 12, 8, 10, 2, 12, 8)
    while left > 0:
        size, unit = rng.choices(fillers, weights)[0]
        if size > left:
            size, unit = 1, rng.choice(one_mount)
        units.append(unit)
        left -= size
    rng.shuffle(units)
    targets: list[Target] = []
    for unit in units:
        unit(targets)
    assert len(b.lines) == mounts, (len(b.lines), mounts)
    return GeneratedHost(
        mounts=mounts,
        hidden_fraction=hidden_fraction,
        propagation=propagation,
        mountinfo="\n".join(b.lines) + "\n",
        targets=targets,
        holders=len({t.mount for t in targets}),
        shapes=shapes,
        covers=covers,
    )
