"""One file through two mounts: the same-file and alias rules, case by case (the kernel's side is
in tests/namespace/test_socket_aliases.py)."""

import pytest

from planner.aliases import file_place, is_alias, same_file, visible_alias
from planner.analysis import analyze
from planner.targets import Target
from tests.helpers import SEED, tree_of

SOCK = "/sys/fs/cgroup/cgmanager/sock"
ROOT = "1 0 8:1 / / rw - ext4 /dev/vda rw"


def test_a_place_is_the_filesystem_and_the_path_inside_it() -> None:
    tree = tree_of(*SEED)
    assert file_place(tree.by_id[123], "/sock") == file_place(tree.by_id[129], "/sock") == ("0:18", "/cgmanager/sock")
    nsfs = tree_of(ROOT, "2 1 0:4 mnt:[4026532659] /run/ns rw - nsfs nsfs rw").by_id[2]
    unlinked = tree_of(ROOT, "2 1 0:40 /x//deleted /a rw - tmpfs t rw").by_id[2]
    assert file_place(nsfs, "") is None and file_place(unlinked, "/s") is None


def test_overlapping_roots_show_the_same_file() -> None:
    # 3 shows /data/in of 0:40 at /b; 2 shows / of it at /a: /a/data/in/s and /b/s are one file.
    tree = tree_of(ROOT, "2 1 0:40 / /a rw - tmpfs t rw", "3 1 0:40 /data/in /b rw - tmpfs t rw")
    targets = [Target("t1", "open", 2, "/a/data/in/s"), Target("t2", "open", 3, "/b/s"), Target("t3", "open", 3, "/b/x")]
    assert same_file(tree, targets) == {"t1": ("t2",), "t2": ("t1",)}


def test_two_fds_on_one_path_are_no_news_but_two_binds_are() -> None:
    tree = tree_of(*SEED)
    fds = [Target("fd0", "open", 123, SOCK), Target("fd1", "open", 123, SOCK)]
    assert same_file(tree, fds) == {}
    binds = [Target("old", "bind", 123, SOCK, unlinked=True), Target("new", "bind", 123, SOCK)]
    assert same_file(tree, binds) == {"old": ("new",), "new": ("old",)}
    findings = analyze(tree, binds).targets
    assert [f.same_file for f in findings] == [("new",), ("old",)]


def line_129(options: str = "rw,relatime", dev: str = "0:18", root: str = "/cgmanager", supers: str = "rw") -> str:
    return f"129 128 {dev} {root} /sys/fs/cgroup/cgmanager {options} - tmpfs none {supers}"


@pytest.mark.parametrize(
    ("line", "alias"),
    [
        (line_129(), 129),
        (line_129(options="ro,relatime"), None),  # bind(2) through it is EROFS
        (line_129(supers="ro,size=4k"), None),  # the filesystem itself is read-only
        (line_129(options="rw,relatime,idmapped"), None),  # the socket's owner would be mapped
        (line_129(dev="0:19"), None),  # another filesystem: another file
        (line_129(root="/other"), None),  # the same filesystem, another directory
    ],
)
def test_an_alias_is_writable_not_idmapped_and_shows_the_socket_directory(line: str, alias: int | None) -> None:
    tree = tree_of(*SEED[:-1], line)
    target = Target("t1", "bind", 123, SOCK)
    assert visible_alias(tree, target) == alias
    assert analyze(tree, [target]).targets[0].alias == alias


def test_a_mount_on_the_name_itself_is_no_alias() -> None:
    # 130 shows the socket file itself at its name: bind(2) there would find the name taken.
    tree = tree_of(*SEED, "130 129 0:18 /cgmanager/sock /sys/fs/cgroup/cgmanager/sock rw - tmpfs none rw")
    assert visible_alias(tree, Target("t1", "bind", 123, SOCK)) is None


def test_only_a_bind_has_an_alias() -> None:
    tree = tree_of(*SEED)
    for kind in ("open", "chdir", "root", "mmap"):
        target = Target("t1", kind, 123, "/sys/fs/cgroup/cgmanager")
        assert visible_alias(tree, target) is None and analyze(tree, [target]).targets[0].alias is None
    assert not is_alias(tree, Target("t1", "bind", 123, SOCK), 123, "/sock")  # its own mount is no alias
