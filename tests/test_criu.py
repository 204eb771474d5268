"""crit-decoded CRIU 4.2 images to overmount-dump/1 (planner.criu)."""

from __future__ import annotations

import json
import quopri
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from planner.errors import DumpError, InputError
from planner.inputs.criu.crit_json import dump_from_crit
from planner.inputs.criu.entries import unix_name
from planner.inputs.dump_json import from_json
from planner.mountinfo import Mount, parse

DATA = Path(__file__).parent / "data" / "criu"
SEED = DATA / "seed-stack"
SOCKET = DATA / "socket-dir-covered"


def mounts_of(dump: dict[str, Any]) -> list[Mount]:
    return parse(dump["mountinfo"], "<dump>")


def by_id(mounts: list[Mount]) -> dict[int, Mount]:
    return {m.mount_id: m for m in mounts}


def topmost_at(mounts: list[Mount], path: str) -> Mount:
    """The mount a path walk from the root ends in (component by component, stacks followed)."""
    ids = by_id(mounts)
    cur = next(m for m in mounts if m.parent_id not in ids)
    parts = [p for p in path.split("/") if p]
    prefixes = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    for prefix in prefixes:
        while True:
            on_top = [m for m in mounts if m.parent_id == cur.mount_id and m.mountpoint == prefix]
            if not on_top:
                break
            cur = on_top[0]  # legacy side-by-side siblings: the earlier listed is on top
    return cur


# --- the real image sets ---------------------------------------------------------------------


@pytest.mark.parametrize("images", [SEED, SOCKET], ids=lambda p: p.name)
def test_mount_table_matches_mountinfo_at_dump(images: Path) -> None:
    dump = dump_from_crit(images)
    assert dump["format"] == "overmount-dump/1"
    got = mounts_of(dump)
    want = parse((images / "mountinfo-at-dump.txt").read_text(), "mountinfo-at-dump.txt")
    # Same mounts in the kernel's order: CRIU writes its list reversed, the converter undoes that.
    assert [m.mount_id for m in got] == [m.mount_id for m in want]
    for g, w in zip(got, want):
        assert (g.parent_id, g.major, g.minor, g.root, g.mountpoint) == (w.parent_id, w.major, w.minor, w.root, w.mountpoint)
        assert (g.shared, g.master, g.unbindable, g.deleted) == (w.shared, w.master, w.unbindable, w.deleted)
        assert g.options == w.options
        assert g.source == w.source
        assert g.super_options == w.super_options
        # crit does not carry the fstype of filesystems CRIU calls unsupported (ext4 here:
        # mnt_entry.fstype is 0 and fsname is only written for 'auto' mounts), nor
        # propagate_from:N; everything else above round-trips.
        if g.fstype == "unknown":
            assert w.fstype not in ("tmpfs", "proc")
        else:
            assert g.fstype == w.fstype


def test_unsupported_fstype_is_noted() -> None:
    dump = dump_from_crit(SEED)
    assert any("mount 63" in note and "unknown" in note for note in dump["notes"])
    # Nothing skipped but the root, which is the namespace's own (fs root_id names "/").
    assert [(s["id"], s["path"]) for s in dump["skipped"]] == [("root", "/")]


def test_socket_case_binds_in_the_hidden_mount() -> None:
    dump = dump_from_crit(SOCKET)
    binds = [t for t in dump["targets"] if t["kind"] == "bind"]
    assert binds == [{"id": "sk-13", "kind": "bind", "mount": 44, "path": "/omt/d/sock"}]
    mounts = by_id(mounts_of(dump))
    # 45 is a tmpfs on /omt/d inside 44: the path now leads into 45, the socket lives in 44.
    assert (mounts[45].parent_id, mounts[45].mountpoint) == (44, "/omt/d")
    assert topmost_at(mounts_of(dump), "/omt/d/sock").mount_id == 45


def test_socket_case_other_targets() -> None:
    targets = {t["id"]: t for t in dump_from_crit(SOCKET)["targets"]}
    # reg_file_entry.mode and flags: /dev/null is a char device, opened read-only.
    assert targets["fd0"] == {"id": "fd0", "kind": "open", "mount": 63, "path": "/dev/null",
                              "file_type": "char", "access": "read-only"}
    # fds 1 and 2 share one open file (file id 12): one open, as CRIU does it.
    assert targets["fd1"]["path"] == "/holder.out" and "fd2" not in targets
    assert targets["cwd"] == {"id": "cwd", "kind": "chdir", "mount": 63, "path": "/"}
    maps = [t for t in targets.values() if t["kind"] == "mmap"]
    assert len(maps) == 10  # ten distinct files mapped, many vmas each
    assert targets["map-6"] == {"id": "map-6", "kind": "mmap", "mount": 64, "path": "/usr/lib/x86_64-linux-gnu/libc.so.6"}
    assert len({t["id"] for t in targets.values()}) == len(targets)


def test_seed_case_b_hidden_under_c() -> None:
    dump = dump_from_crit(SEED)
    mounts = mounts_of(dump)
    ids = by_id(mounts)
    order = [m.mount_id for m in mounts]
    # A=45 on /omt/sys/fs/cgroup carries B=46 on .../cgmanager; C=47 stacks on A's mountpoint
    # (child of A, same path) and carries D=48 on .../cgmanager.
    assert (ids[46].parent_id, ids[46].mountpoint) == (45, "/omt/sys/fs/cgroup/cgmanager")
    assert (ids[47].parent_id, ids[47].mountpoint) == (45, "/omt/sys/fs/cgroup")
    assert (ids[48].parent_id, ids[48].mountpoint) == (47, "/omt/sys/fs/cgroup/cgmanager")
    assert order.index(45) < order.index(46) < order.index(47) < order.index(48)
    assert topmost_at(mounts, "/omt/sys/fs/cgroup").mount_id == 47
    assert topmost_at(mounts, "/omt/sys/fs/cgroup/cgmanager").mount_id == 48
    assert 46 not in {topmost_at(mounts, m.mountpoint).mount_id for m in mounts}


def test_paths_dict_equals_directory() -> None:
    paths = {
        "mountpoints": str(SOCKET / "mountpoints-10.json"),
        "files": str(SOCKET / "files.json"),
        "fdinfo": str(SOCKET / "fdinfo-2.json"),
        "fs": str(SOCKET / "fs-1.json"),
        "mm": str(SOCKET / "mm-1.json"),
    }
    assert dump_from_crit(paths) == dump_from_crit(SOCKET)
    only_mounts = dump_from_crit({"mountpoints": paths["mountpoints"]})
    assert only_mounts["mountinfo"] == dump_from_crit(SOCKET)["mountinfo"]
    assert only_mounts["targets"] == []


def test_directory_without_pstree_uses_the_single_files(tmp_path: Path) -> None:
    for name in ("mountpoints-10.json", "files.json", "fdinfo-2.json", "fs-1.json", "mm-1.json"):
        shutil.copy(SOCKET / name, tmp_path / name)
    assert dump_from_crit(tmp_path)["targets"] == dump_from_crit(SOCKET)["targets"]


def test_unix_name_decoding() -> None:
    assert unix_name("/omt/d/sock=00") == b"/omt/d/sock\0"
    raw = b"/a b=c\xc3\xa9/" + b"x" * 100 + b"\0"
    assert unix_name(quopri.encodestring(raw).decode()) == raw


# --- synthetic images: fields the real samples lack ------------------------------------------


def image(magic: str, entries: list[dict[str, Any]]) -> str:
    return json.dumps({"magic": magic, "entries": entries}, indent=4)


def mnt(mnt_id: int, parent: int, mountpoint: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fstype": 5,
        "mnt_id": mnt_id,
        "root_dev": f"0:{mnt_id}",
        "parent_mnt_id": parent,
        "flags": "0x200000",
        "root": "/",
        "mountpoint": mountpoint,
        "source": f"src{mnt_id}",
        "options": "size=4k",
        "shared_id": 0,
        "master_id": 0,
        "sb_flags": "0x0",
    }
    entry.update(extra)
    return entry


def reg(file_id: int, name: str, mnt_id: int, **extra: Any) -> dict[str, Any]:
    body = {"id": file_id, "flags": "", "pos": 0, "name": name, "mnt_id": mnt_id, **extra}
    return {"type": "REG", "id": file_id, "reg": body}


def usk(file_id: int, name: bytes, mnt_id: int | None = 10, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": file_id, "ino": 1000 + file_id, "type": "STREAM", "state": "LISTEN"}
    body["name"] = quopri.encodestring(name).decode()
    if mnt_id is not None:
        body["mnt_id"] = mnt_id
    body.update(extra)
    return {"type": "UNIXSK", "id": file_id, "usk": body}


def write_set(tmp_path: Path, mounts: list[dict[str, Any]], files: list[dict[str, Any]] | None = None, **images: str) -> dict[str, str]:
    paths = {"mountpoints": tmp_path / "mountpoints-1.json"}
    paths["mountpoints"].write_text(image("MNTS", list(reversed(mounts))))
    if files is not None:
        paths["files"] = tmp_path / "files.json"
        paths["files"].write_text(image("FILES", files))
    for kind, text in images.items():
        paths[kind] = tmp_path / f"{kind}.json"
        paths[kind].write_text(text)
    return {k: str(v) for k, v in paths.items()}


BASE = [mnt(1, 0, "/", fstype=0, root="/rootfs"), mnt(10, 1, "/srv"), mnt(11, 10, "/srv/d")]


def test_flags_propagation_and_fsname(tmp_path: Path) -> None:
    entries = [
        *BASE,
        mnt(12, 10, "/srv/ro", flags="0x20000f", shared_id=7, sb_flags="0x11"),
        mnt(13, 10, "/srv/slave", flags=0x400 | 0x800, master_id=7, shared_id=9),
        mnt(14, 10, "/srv/auto", fstype=16, fsname="ext4", flags=hex(1 << 17 | 1 << 21)),
        mnt(15, 10, "/srv/gone", deleted=True, root_dev=(8 << 20) | 3),
        mnt(16, 10, "/srv/cg", fstype=23, options=""),
    ]
    got = by_id(mounts_of(dump_from_crit(write_set(tmp_path, entries))))
    assert got[1].fstype == "unknown" and got[1].root == "/rootfs"
    assert got[12].options == "ro,nosuid,nodev,noexec,relatime"
    assert got[12].optional == ("shared:7",)
    assert got[12].super_options == "ro,sync,size=4k"
    assert got[13].options == "rw,noatime,nodiratime"
    assert got[13].optional == ("shared:9", "master:7")
    assert got[14].fstype == "ext4" and got[14].unbindable
    assert got[15].deleted and (got[15].major, got[15].minor) == (8, 3)
    assert (got[16].fstype, got[16].super_options) == ("cgroup2", "rw")


def test_mount_moved_under_a_newer_parent_comes_after_it(tmp_path: Path) -> None:
    # Kernel order 1, 20, 21 where 20 was moved under 21 afterwards: 20 must follow its parent.
    entries = [mnt(1, 0, "/"), mnt(20, 21, "/b/a"), mnt(21, 1, "/b")]
    order = [m.mount_id for m in mounts_of(dump_from_crit(write_set(tmp_path, entries)))]
    assert order == [1, 21, 20]


def test_sockets_named_relative_abstract_accepted(tmp_path: Path) -> None:
    files = [
        usk(1, b"/srv/d/s1\0"),
        usk(2, b"\0abstract"),
        usk(3, b"/srv/d/s1\0", state="ESTABLISHED"),  # accepted: carries its listener's name
        usk(4, b"rel.sock\0", name_dir="/srv/d"),
        usk(5, b"rel2.sock\0"),
        usk(6, b"/srv/x=y \xc3\xa9\0", type="DGRAM", state="CLOSE"),
        usk(7, b"/srv/d/s7\0", mnt_id=None),
        usk(8, b"/srv/d/s8\0", mnt_id=99),
        usk(9, b"/srv/d/s9\0", deleted=True),
        usk(10, b""),
    ]
    dump = dump_from_crit(write_set(tmp_path, BASE, files))
    targets = {t["id"]: t for t in dump["targets"]}
    skipped = {s["id"]: s for s in dump["skipped"]}
    assert targets["sk-1"] == {"id": "sk-1", "kind": "bind", "mount": 10, "path": "/srv/d/s1"}
    assert targets["sk-4"]["path"] == "/srv/d/rel.sock"
    assert targets["sk-6"]["path"] == "/srv/x=y \u00e9"
    assert targets["sk-9"] == {"id": "sk-9", "kind": "bind", "mount": 10, "path": "/srv/d/s9", "unlinked": True}
    assert any("sk-9" in note and "unlinked" in note for note in dump["notes"])
    assert "sk-2" not in targets and "sk-2" not in skipped
    assert "sk-3" not in targets and "sk-10" not in targets
    assert "relative" in skipped["sk-5"]["reason"]
    assert "no mount id" in skipped["sk-7"]["reason"]
    assert "mount 99 is not in" in skipped["sk-8"]["reason"]


def test_fds_cwd_maps_and_what_is_skipped(tmp_path: Path) -> None:
    files = [
        reg(1, "/srv/d/file", 10),
        reg(2, "/srv/d", 10, mode=16877),
        reg(3, "/srv/lib.so", 10),
        reg(4, "/elsewhere/f", 55),
        reg(5, "/srv/ext", 10, ext=True),
        reg(6, "/other/place", 10),
        {"type": "MEMFD", "id": 7, "memfd": {"id": 7}},
    ]
    fdinfo = image(
        "FDINFO",
        [
            {"id": 1, "flags": 0, "type": "REG", "fd": 3},
            {"id": 1, "flags": 0, "type": "REG", "fd": 4},
            {"id": 4, "flags": 0, "type": "REG", "fd": 5},
            {"id": 5, "flags": 0, "type": "REG", "fd": 6},
            {"id": 6, "flags": 0, "type": "REG", "fd": 7},
            {"id": 7, "flags": 0, "type": "MEMFD", "fd": 8},
        ],
    )
    fs = image("FS", [{"cwd_id": 2, "root_id": 2}])
    vma = {"start": "0x1000", "end": "0x2000", "pgoff": 0, "prot": "PROT_READ", "flags": "MAP_PRIVATE", "fd": -1}
    mm = image(
        "MM",
        [
            {
                "exe_file_id": 3,
                "vmas": [
                    {**vma, "shmid": 3, "status": "VMA_AREA_REGULAR | VMA_FILE_PRIVATE"},
                    {**vma, "shmid": 3, "status": 1 | 1 << 6},  # crit without --pretty: a number
                    {**vma, "shmid": 7, "status": "VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD"},
                    {**vma, "shmid": 0, "status": "VMA_AREA_REGULAR | VMA_ANON_PRIVATE"},
                ],
            }
        ],
    )
    dump = dump_from_crit(write_set(tmp_path, BASE, files, fdinfo=fdinfo, fs=fs, mm=mm))
    assert dump["targets"] == [
        {"id": "fd3", "kind": "open", "mount": 10, "path": "/srv/d/file", "access": "read-only"},
        {"id": "cwd", "kind": "chdir", "mount": 10, "path": "/srv/d"},
        {"id": "root", "kind": "root", "mount": 10, "path": "/srv/d"},  # fs root_id: chrooted into /srv/d
        {"id": "map-3", "kind": "mmap", "mount": 10, "path": "/srv/lib.so"},
    ]
    reasons = {s["id"]: s["reason"] for s in dump["skipped"]}
    assert set(reasons) == {"fd5", "fd6", "fd7", "fd8"}
    assert reasons["fd8"] == "a MEMFD fd: nothing reopened by a path of the mount table (CRIU restores it itself)"
    assert "mount 55 is not in" in reasons["fd5"]
    assert "external" in reasons["fd6"]
    assert "not under mount 10" in reasons["fd7"]


def test_fifos_and_devices_keep_their_type_and_access(tmp_path: Path) -> None:
    """CRIU keeps a FIFO's path and flags in a REG entry of the FIFO's id (criu/fifo.c); a char
    device opened by path is a REG entry whose mode says so (reg_file_entry.mode)."""
    files = [
        reg(1, "/srv/d/ctl", 10, mode=stat.S_IFIFO | 0o644, flags="O_RDWR | O_LARGEFILE"),
        {"type": "FIFO", "id": 1, "fifo": {"id": 1, "pipe_id": 4242}},
        reg(2, "/srv/d/events", 10, mode=stat.S_IFIFO | 0o644, flags="O_NONBLOCK"),
        {"type": "FIFO", "id": 2, "fifo": {"id": 2, "pipe_id": 4243}},
        reg(3, "/srv/d/null", 10, mode=stat.S_IFCHR | 0o666, flags="O_WRONLY"),
        reg(4, "/srv/d/dir", 10, mode=stat.S_IFDIR | 0o755, flags="O_DIRECTORY"),
        reg(5, "/srv/d/sock", 10, mode=stat.S_IFSOCK | 0o755, flags="0x200000"),  # O_PATH: crit has no name for it
    ]
    fdinfo = image(
        "FDINFO",
        [
            {"id": 1, "flags": 0, "type": "FIFO", "fd": 3},
            {"id": 2, "flags": 0, "type": "FIFO", "fd": 4},
            {"id": 3, "flags": 0, "type": "REG", "fd": 5},
            {"id": 4, "flags": 0, "type": "REG", "fd": 6},
            {"id": 5, "flags": 0, "type": "REG", "fd": 7},
            {"id": 6, "flags": 0, "type": "PIPE", "fd": 8},
        ],
    )
    dump = dump_from_crit(write_set(tmp_path, BASE, files, fdinfo=fdinfo))
    got = {t["id"]: (t["path"], t.get("file_type"), t.get("access")) for t in dump["targets"]}
    assert got == {
        "fd3": ("/srv/d/ctl", "fifo", "read-write"),
        "fd4": ("/srv/d/events", "fifo", "read-only"),
        "fd5": ("/srv/d/null", "char", "write-only"),
        "fd6": ("/srv/d/dir", "directory", "read-only"),
        "fd7": ("/srv/d/sock", "socket", "path"),
    }
    assert [s["id"] for s in dump["skipped"]] == ["fd8"]  # a pipe: nothing to reopen by path
    from_json(dump, "crit", "")  # and the dump reader takes every one of them


def test_multi_task_directory(tmp_path: Path) -> None:
    for name in ("mountpoints-10.json", "files.json", "fdinfo-2.json", "fs-1.json", "mm-1.json", "inventory.json"):
        shutil.copy(SOCKET / name, tmp_path / name)
    (tmp_path / "pstree.json").write_text(image("PSTREE", [{"pid": 1, "ppid": 0, "threads": [1]}, {"pid": 7, "ppid": 1, "threads": [7]}]))
    ids = json.loads((SOCKET / "ids-1.json").read_text())
    (tmp_path / "ids-1.json").write_text(json.dumps(ids))
    (tmp_path / "ids-7.json").write_text(json.dumps(ids))  # shares the fd table (files_id 2)
    fs7 = image("FS", [{"cwd_id": 14, "root_id": 15}])
    (tmp_path / "fs-7.json").write_text(fs7)
    dump = dump_from_crit(tmp_path)
    ids_seen = [t["id"] for t in dump["targets"]]
    assert "cwd" in ids_seen and "cwd@7" in ids_seen
    assert "fd0@7" not in ids_seen  # one fd table, read once


# --- bad input ---------------------------------------------------------------------------------


def test_not_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mountpoints-10.json"
    path.write_text('{\n  "magic": "MNTS",\n  "entries": [\n    {"mnt_id": 1,,}\n  ]\n}\n')
    with pytest.raises(DumpError) as exc:
        dump_from_crit({"mountpoints": str(path)})
    assert exc.value.source == str(path) and exc.value.line_no == 4
    assert str(exc.value).startswith(f"{path}:4: ")


def test_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match=r"files\.json:1: magic is 'FILES', expected 'MNTS'"):
        dump_from_crit({"mountpoints": str(SOCKET / "files.json")})


def test_missing_field_names_the_entry_line(tmp_path: Path) -> None:
    entries = json.loads((SOCKET / "mountpoints-10.json").read_text())["entries"]
    del entries[2]["root"]
    path = tmp_path / "mountpoints-10.json"
    path.write_text(json.dumps({"magic": "MNTS", "entries": entries}, indent=4))
    with pytest.raises(DumpError) as exc:
        dump_from_crit({"mountpoints": str(path)})
    line = path.read_text().splitlines()[exc.value.line_no - 1]  # type: ignore[operator]
    assert line.strip() == "{" and "entry 2: missing field 'root'" in str(exc.value)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"root_dev": "zero"}, "root_dev is neither"),
        ({"flags": "MS_WHAT"}, "flags is not a number"),
        ({"mountpoint": "relative/path"}, "mountpoint is not absolute"),
        ({"fstype": True}, "fstype is a boolean"),
    ],
)
def test_bad_mount_fields(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    bad = mnt(2, 1, "/x")
    bad.update(entry)
    paths = write_set(tmp_path, [mnt(1, 0, "/"), bad])
    with pytest.raises(DumpError, match=message):
        dump_from_crit(paths)


def test_binary_image_and_other_bad_inputs(tmp_path: Path) -> None:
    binary = tmp_path / "mountpoints-10.img"
    binary.write_bytes(b"\x54\x50\x43\x56\x00\x00\x00\x00\x01\x02")
    with pytest.raises(DumpError, match="crit decode"):
        dump_from_crit({"mountpoints": str(binary)})
    with pytest.raises(DumpError, match=r"decode the images first: for i in \*\.img; do crit decode --pretty"):
        dump_from_crit(tmp_path)
    with pytest.raises(DumpError, match="'mountpoints' image is required"):
        dump_from_crit({"files": str(SOCKET / "files.json")})
    with pytest.raises(DumpError, match="unknown image kind 'pages'"):
        dump_from_crit({"mountpoints": str(SOCKET / "mountpoints-10.json"), "pages": "x"})
    with pytest.raises(DumpError, match="cannot read"):
        dump_from_crit({"mountpoints": str(tmp_path / "absent.json")})
    empty = tmp_path / "empty.json"
    empty.write_text(image("MNTS", []))
    with pytest.raises(DumpError, match="no mount entries"):
        dump_from_crit({"mountpoints": str(empty)})
    twice = write_set(tmp_path, [mnt(1, 0, "/"), mnt(2, 1, "/x"), mnt(2, 1, "/y")])
    with pytest.raises(DumpError, match="mount id 2 appears twice"):
        dump_from_crit(twice)


def test_fd_of_a_socket_missing_from_files(tmp_path: Path) -> None:
    fdinfo = image("FDINFO", [{"id": 9, "flags": 0, "type": "UNIXSK", "fd": 3}])
    with pytest.raises(DumpError, match=r"fdinfo\.json:\d+: entry 0: fd 3: unix socket 9"):
        dump_from_crit(write_set(tmp_path, BASE, [], fdinfo=fdinfo))


def test_errors_are_input_errors() -> None:
    assert issubclass(DumpError, InputError) and DumpError("f", 1, "r").exit_status == 2


def test_newer_crit_names_are_tolerated(tmp_path: Path) -> None:
    files = [reg(3, "/srv/lib.so", 10), usk(4, b"/srv/d/conn\0", state="SYN_SENT"), usk(5, b"/srv/d/q\0", state="SOME_NEW_STATE")]
    vma = {"start": "0x1000", "end": "0x2000", "pgoff": 0, "shmid": 3, "fd": -1}
    mm = image("MM", [{"vmas": [{**vma, "status": "VMA_AREA_REGULAR | VMA_FILE_PRIVATE | VMA_AREA_SOMETHING_NEW | 0x40000000"}]}])
    dump = dump_from_crit(write_set(tmp_path, BASE, files, mm=mm))
    assert [t["id"] for t in dump["targets"]] == ["map-3", "sk-4", "sk-5"]
    bad = image("MM", [{"vmas": [{**vma, "status": "VMA_FILE_PRIVATE | what is this"}]}])
    with pytest.raises(DumpError, match="not a flag name"):
        dump_from_crit(write_set(tmp_path, BASE, files, mm=bad))
