"""kernel.py against the real kernel, always inside a throwaway namespace."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from planner import kernel
from planner.errors import NamespaceChildError

pytestmark = pytest.mark.namespace


def _mount_api_smoke() -> dict[str, object]:
    out: dict[str, object] = {}
    scratch = kernel.new_tmpfs()
    os.mkdir("a", dir_fd=scratch)
    os.mkdir("a/b", dir_fd=scratch)
    os.symlink("/etc", "a/link", dir_fd=scratch)
    spot = "/tmp"
    kernel.attach(scratch, kernel.AT_FDCWD, spot)
    out["attached_same_id"] = (
        kernel.statx_mount_id(spot)[0] == kernel.fdinfo_mount_id(scratch) == kernel.statx_mount_id(scratch)[0]
    )

    # A clone of a subdirectory is a new mount whose root is that directory.
    clone = kernel.open_tree(scratch, "a", kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC)
    kernel.attach(clone, kernel.AT_FDCWD, "/tmp/a/b")
    out["clone_root_ino"] = kernel.statx_mount_id("/tmp/a/b")[2] == os.stat("/tmp/a").st_ino
    out["clone_is_new_mount"] = kernel.statx_mount_id("/tmp/a/b")[0] not in (
        0,
        kernel.statx_mount_id(spot)[0],
    )

    # openat2 refuses symlinks and keeps '..' inside the root.
    root = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
    try:
        kernel.openat2(root, "a/link", os.O_PATH, kernel.RESOLVE_NO_SYMLINKS)
    except OSError as exc:
        out["symlink_errno"] = exc.errno
    inner = kernel.openat2(root, "../../../a", os.O_PATH, kernel.RESOLVE_IN_ROOT)
    out["in_root_clamps"] = os.fstat(inner).st_ino == os.stat("/tmp/a").st_ino

    # Propagation flags through mount(2) and mount_setattr(2).
    kernel.make_propagation("/tmp", kernel.MS_SHARED)
    out["shared"] = "shared:" in _line_of(kernel.statx_mount_id(spot)[0])
    kernel.mount_setattr(scratch, "", kernel.AT_EMPTY_PATH, propagation=kernel.MS_PRIVATE)
    out["private_again"] = "shared:" not in _line_of(kernel.statx_mount_id(spot)[0])

    # A moved mount keeps its id; umount removes it.
    os.mkdir("/tmp/c")
    kernel.move_mount(clone, "", kernel.AT_FDCWD, "/tmp/c", kernel.MOVE_MOUNT_F_EMPTY_PATH)
    out["moved"] = kernel.statx_mount_id("/tmp/c")[0] == kernel.fdinfo_mount_id(clone)
    os.close(clone)
    kernel.umount2("/tmp/c")
    out["unmounted"] = kernel.statx_mount_id("/tmp/c")[0] == kernel.statx_mount_id(spot)[0]

    # sock_diag sees a bound socket's file, device in the kernel's major << 20 | minor.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("/tmp/a/sock")
    sock.listen()
    ino = os.fstat(sock.fileno()).st_ino
    found = kernel.unix_socket_diag([ino])[ino]
    st = os.stat("/tmp/a/sock")
    out["diag"] = (found.name, found.vfs_st_dev, found.vfs_ino) == ("/tmp/a/sock", st.st_dev, st.st_ino)
    return out


def _line_of(mnt_id: int) -> str:
    return next(ln for ln in kernel.own_mountinfo().splitlines() if ln.split()[0] == str(mnt_id))


def test_mount_api_in_a_namespace() -> None:
    out = kernel.run_in_namespace(_mount_api_smoke)
    assert out.pop("symlink_errno") == errno.ELOOP
    assert all(out.values()), out


def test_namespace_is_private_and_user_namespace_maps_root() -> None:
    def probe() -> tuple[int, bool]:
        return os.geteuid(), all("shared:" not in ln for ln in kernel.own_mountinfo().splitlines())

    assert kernel.run_in_namespace(probe, user_ns=True) == (0, True)
    assert kernel.run_in_namespace(probe)[1]


def test_child_errors_come_back() -> None:
    def fails() -> None:
        kernel.umount2("/definitely/not/a/mount")

    with pytest.raises(OSError) as caught:
        kernel.run_in_namespace(fails)
    assert caught.value.errno in (errno.ENOENT, errno.EINVAL)
    assert "umount2" in str(caught.value)

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}/{b}")

    def odd() -> None:
        raise Odd(1, 2)

    with pytest.raises(NamespaceChildError, match="Odd: 1/2"):
        kernel.run_in_namespace(odd)


def test_kernel_dev_encoding() -> None:
    assert kernel.split_kernel_dev(254 << 20 | 3) == (254, 3)
    assert kernel.UnixSocket(1, 1, 10, "/s", (254, 3), 7).vfs_st_dev == os.makedev(254, 3)
