"""The mountinfo parser against real tables, the kernel's escapes, and bad lines others test with."""

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import mountinfo
from planner.errors import MountinfoError
from tests.conftest import SAMPLES

REAL = sorted(glob.glob(os.path.join(SAMPLES, "real", "*.txt")))


def read(path: str) -> str:
    # Bytes, not text mode: a raw '\r' inside a mount point must not end a line.
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8")


@pytest.mark.parametrize("path", REAL, ids=os.path.basename)
def test_real_tables_round_trip(path: str) -> None:
    text = read(path)
    mounts = mountinfo.parse(text, path)
    assert len(mounts) == text.count("\n")
    assert mountinfo.render(mounts) == text


def test_every_field_of_a_line() -> None:
    line = "36 35 98:0 /mnt\\0401 /mnt/a\\011b rw,noatime master:1 shared:7 unbindable - ext3 /dev/ro\\134ot rw,errors=continue"
    m = mountinfo.parse_line(line)
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (36, 35, 98, 0)
    assert m.root == "/mnt 1"
    assert m.mountpoint == "/mnt/a\tb"
    assert m.options == "rw,noatime"
    assert m.optional == ("master:1", "shared:7", "unbindable")
    assert (m.shared, m.master, m.unbindable) == (7, 1, True)
    assert (m.fstype, m.source, m.super_options) == ("ext3", "/dev/ro\\ot", "rw,errors=continue")
    assert mountinfo.render_line(m) == line


def test_newline_escape_and_propagate_from() -> None:
    m = mountinfo.parse_line("5 1 0:3 / /a\\012b rw propagate_from:4 master:9 - tmpfs t rw")
    assert m.mountpoint == "/a\nb"
    assert (m.propagate_from, m.master, m.shared) == (4, 9, None)


def test_deleted_root_and_a_mountpoint_named_deleted() -> None:
    # An unlinked root shows as PATH//deleted (dentry_path()); a mount point never gets a suffix,
    # so "\\040(deleted)" there is part of a real name.
    m = mountinfo.parse_line("5 1 0:3 /x//deleted /mnt/a\\040(deleted) rw - tmpfs t rw")
    assert m.deleted and m.root == "/x//deleted"
    assert m.mountpoint == "/mnt/a (deleted)"
    assert mountinfo.render_line(m).split(" ")[3:5] == ["/x//deleted", "/mnt/a\\040(deleted)"]


def test_many_optional_fields() -> None:
    tags = " ".join(f"x{i}:{i}" for i in range(50))
    m = mountinfo.parse_line(f"5 1 0:3 / /a rw shared:2 {tags} - tmpfs t rw")
    assert len(m.optional) == 51 and m.shared == 2


def test_raw_carriage_return_is_part_of_the_path() -> None:
    mounts = mountinfo.parse(read(os.path.join(SAMPLES, "real", "01-util-linux-fedora-autofs-stacked.txt")))
    assert mounts[-1].mountpoint == "/mnt/test/foo\rbar"


@pytest.mark.parametrize(
    "name, expected_lines",
    [("07-moby-sys-invalid-lines.txt", [1, 2, 3, 4]), ("11-k8s-mount-utils-bad-devno-lines.txt", [1, 2, 3, 4, 5])],
)
def test_lines_others_refuse_are_refused_with_their_line(name: str, expected_lines: list[int]) -> None:
    path = os.path.join(SAMPLES, "bad-lines", name)
    refused = []
    for number, line in enumerate(read(path).split("\n"), 1):
        if not line:
            continue
        with pytest.raises(MountinfoError) as caught:
            mountinfo.parse_line(line, path, number)
        assert str(caught.value).startswith(f"{path}:{number}: ")
        refused.append(number)
    assert refused == expected_lines


def test_tricky_valid_lines_parse() -> None:
    lines = [l for l in read(os.path.join(SAMPLES, "bad-lines", "08-moby-sys-tricky-valid-lines.txt")).split("\n") if l]
    parsed = [mountinfo.parse_line(l) for l in lines]
    assert parsed[1].super_options == "rw,unc=buggy but we cope"
    assert parsed[3].optional == ("shared:123", "extra:tag", "what:ever", "key:value")
    assert parsed[4].source == "" and parsed[4].super_options == "rw"


def test_empty_source_parses() -> None:
    mounts = mountinfo.parse(read(os.path.join(SAMPLES, "bad-lines", "20-util-linux-empty-source.txt")))
    assert mounts[-1].source == "" and mounts[-1].shared == 212


def test_a_backslash_without_three_octal_digits_is_kept_as_libmount_keeps_it() -> None:
    m = mountinfo.parse_line("1 0 8:1 /x\\y /a\\888\\04\\\\134 rw - ext4 /dev/s\\da rw")
    assert (m.root, m.mountpoint, m.source) == ("/x\\y", "/a\\888\\04\\\\", "/dev/s\\da")


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1 0 8:1 / /a\\000 rw - ext4 /dev/sda rw", "decodes to NUL"),
        ("1 0 8:1 / /a\\057b rw - ext4 /dev/sda rw", "decodes to '/'"),
        ("1 0 8:1 /\\057 /a rw - ext4 /dev/sda rw", "bad escape in root"),
        ("1 0 8:1 / /a rw - ext4 /dev/sda\\000 rw", "bad escape in source"),
        ("1 0 8:1 / /a\\777 rw - ext4 /dev/sda rw", "no byte"),
        ("1 0 8:1  /a rw - ext4 /dev/sda rw", "empty root field"),
        ("1 0 8:1 / /a  - ext4 /dev/sda rw", "empty mount options field"),
        ("x 0 8:1 / / rw - ext4 /dev/sda rw", "mount id is not a number"),
        ("1 0 8:1 / relative rw - ext4 /dev/sda rw", "not an absolute path"),
        ("1 0 8:1 / / rw  - ext4 /dev/sda rw", "empty optional field"),
        ("1 0 8:1 / /\0 rw - ext4 /dev/sda rw", "NUL"),
        ("1 0 8:1 / / rw -  x rw", "empty filesystem type"),
    ],
)
def test_malformed_lines(line: str, reason: str) -> None:
    with pytest.raises(MountinfoError, match=reason):
        mountinfo.parse_line(line, "f", 7)


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="util-linux findmnt is not installed")
@pytest.mark.parametrize("path", REAL, ids=os.path.basename)
def test_findmnt_reads_the_same_fields(path: str) -> None:
    columns = "ID,PARENT,MAJ:MIN,FSROOT,TARGET,SOURCE,FSTYPE,VFS-OPTIONS,FS-OPTIONS,OPT-FIELDS"
    out = subprocess.run(["findmnt", "--tab-file", path, "-J", "-l", "--nofsroot", "-o", columns], capture_output=True, check=True)
    theirs = {fs["id"]: fs for fs in json.loads(out.stdout)["filesystems"]}
    ours = mountinfo.parse(read(path), path)
    assert sorted(theirs) == sorted(m.mount_id for m in ours)
    for m in ours:
        fs = theirs[m.mount_id]
        assert (fs["parent"] or 0) == m.parent_id  # findmnt prints a parent id 0 as null
        assert fs["maj:min"] == m.dev
        assert fs["fsroot"] == m.root
        assert fs["target"] == m.mountpoint
        if m.source != "/dev/root":  # libmount swaps /dev/root for this machine's own root device
            assert (fs["source"] or "") == m.source
        assert fs["fstype"] == m.fstype
        assert fs["vfs-options"] == m.options
        assert (fs["opt-fields"] or "") == " ".join(m.optional)
        assert fs["fs-options"] == m.super_options


# --- the plain-line fast path says what parse_line says ------------------------------------------

# Field texts near the edges of what _PLAIN_LINE takes: escapes, empty fields, '.', '..', other
# optional fields, the separator's look-alikes, a NUL, a raw carriage return.
_NUMBERS = st.sampled_from(["1", "0", "007", "123456789012345678", "1234567890123456789", "x", "", "²", "-1"])
_PATHS = st.sampled_from(["/", "/a", "/a/b", "/a b", "/a\\040b", "/a/.", "/a/../b", "//a", "/a/", "/\\134", "/a\rb",
                          "rel", "", "/\0", "net:[4026532659]", "/x//deleted", "-", "/" + "n" * 300])
_WORDS = st.sampled_from(["rw", "rw,relatime", "-", "", "ro,nosuid", "a\\b", "tmpfs", "ext4", "/dev/sda", "x y"])
_TAGS = st.lists(st.sampled_from(["shared:1", "shared:2", "master:1", "master:3", "propagate_from:4", "unbindable",
                                  "shared:x", "master:", "other:tag", "-", ""]), max_size=3)


@st.composite
def _lines(draw: st.DrawFn) -> str:
    head = [draw(_NUMBERS), draw(_NUMBERS), f"{draw(_NUMBERS)}:{draw(_NUMBERS)}", draw(_PATHS), draw(_PATHS), draw(_WORDS)]
    return " ".join([*head, *draw(_TAGS), "-", draw(_WORDS), draw(_WORDS), draw(_WORDS)])


def _outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except MountinfoError as err:
        return str(err)


@settings(max_examples=400, deadline=None, database=None)
@given(lines=st.lists(st.one_of(_lines(), st.just(""), st.just("  ")), min_size=1, max_size=4))
def test_plain_lines_parse_as_parse_line_reads_them(lines: list[str]) -> None:
    """parse() takes most lines from one regular expression; each line must come out as parse_line
    makes it, field for field and line number for line number, or fail with parse_line's message."""
    expected: list[mountinfo.Mount] = []
    for number, line in enumerate(lines, 3):
        if line.strip(" "):
            got = _outcome(mountinfo.parse_line, line, "t", number)
            if isinstance(got, str):
                assert _outcome(mountinfo.parse, "\n".join(lines), "t", 3) == got
                return
            expected.append(got)  # type: ignore[arg-type]
    parsed = mountinfo.parse("\n".join(lines), "t", 3)
    assert [(m, m.line_no) for m in parsed] == [(m, m.line_no) for m in expected]
