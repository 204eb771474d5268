"""CRIU image entries -> mounts and targets (pure: entries in, an overmount-dump/1 dict out).

Whatever brought the entries (crit's JSON here, binary images or a checkpoint archive elsewhere),
this turns one task set's images into the dump: `mnt_entry`s into mountinfo lines in the kernel's
order, and the root task's (and its namespace mates') fds, cwd, root, mappings and bound unix
sockets into targets, or into `skipped` with the reason. See planner.inputs.criu for the fields.
"""

from __future__ import annotations

import os
import quopri
import re
from dataclasses import dataclass, field
from typing import Any

from planner.dump import DUMP_FORMAT
from planner.errors import DumpError
from planner.inputs.targets import TargetCollector
from planner.mountinfo import Mount, render_line
from planner.progress import Progress, every, quiet
from planner.targets import O_PATH, access_mode, file_type_of, is_accepted_connection

# images/mnt.proto `enum fstype` -> the kernel's name, as criu/filesystems.c spells it.
# AUTO (16) means "mounted by name": the name is in the entry's `fsname`.
FSTYPE_NAMES = {
    1: "proc",
    2: "sysfs",
    3: "devtmpfs",
    4: "binfmt_misc",
    5: "tmpfs",
    6: "devpts",
    7: "simfs",
    8: "pstore",
    9: "securityfs",
    10: "fusectl",
    11: "debugfs",
    12: "cgroup",
    13: "aufs",
    14: "mqueue",
    15: "fuse",
    17: "overlay",
    18: "autofs",
    19: "tracefs",
    23: "cgroup2",
}
FSTYPE_UNSUPPORTED = 0
FSTYPE_AUTO = 16

# <linux/mount.h> MS_* bits as CRIU stores them in mnt_entry.flags / sb_flags.
from planner.msflags import (
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_RDONLY,
    MS_RELATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)

# Per-mount options in the order fs/proc_namespace.c show_mnt_opts() prints them (after rw/ro).
_MNT_OPTS = (
    (MS_NOSUID, "nosuid"),
    (MS_NODEV, "nodev"),
    (MS_NOEXEC, "noexec"),
    (MS_NOATIME, "noatime"),
    (MS_NODIRATIME, "nodiratime"),
    (MS_RELATIME, "relatime"),
    (MS_NOSYMFOLLOW, "nosymfollow"),
)
# Superblock flags in the order show_sb_opts() prints them (after rw/ro); CRIU's
# parser keeps lazytime (and, through a typo, mand) in `options`, so they are only
# added here when the flag is set and the option text does not already hold them.
_SB_OPTS = (
    (MS_SYNCHRONOUS, "sync"),
    (MS_DIRSYNC, "dirsync"),
    (MS_MANDLOCK, "mand"),
    (MS_LAZYTIME, "lazytime"),
)

# criu/include/image.h VMA_* status bits (the names crit prints).
_VMA_BITS = {
    "VMA_AREA_REGULAR": 1 << 0,
    "VMA_AREA_STACK": 1 << 1,
    "VMA_AREA_VSYSCALL": 1 << 2,
    "VMA_AREA_VDSO": 1 << 3,
    "VMA_AREA_HEAP": 1 << 5,
    "VMA_FILE_PRIVATE": 1 << 6,
    "VMA_FILE_SHARED": 1 << 7,
    "VMA_ANON_SHARED": 1 << 8,
    "VMA_ANON_PRIVATE": 1 << 9,
    "VMA_AREA_SYSVIPC": 1 << 10,
    "VMA_AREA_SOCKET": 1 << 11,
    "VMA_AREA_VVAR": 1 << 12,
    "VMA_AREA_AIORING": 1 << 13,
    "VMA_AREA_MEMFD": 1 << 14,
    "VMA_AREA_SHSTK": 1 << 15,
    "VMA_AREA_UPROBES": 1 << 17,
    "VMA_UNSUPP": 1 << 31,
}
_VMA_FILE = _VMA_BITS["VMA_FILE_PRIVATE"] | _VMA_BITS["VMA_FILE_SHARED"]
# Mappings whose shmid is not a REG file id: SysV shm, memfd, sockets, AIO rings.
_VMA_NOT_REG = (
    _VMA_BITS["VMA_AREA_SYSVIPC"]
    | _VMA_BITS["VMA_AREA_MEMFD"]
    | _VMA_BITS["VMA_AREA_SOCKET"]
    | _VMA_BITS["VMA_AREA_AIORING"]
)

# crit's pretty names for unix_sk_entry type/state (lib/pycriu/images/pb2dict.py sk_maps).
_SK_TYPES = {"STREAM": 1, "DGRAM": 2, "RAW": 3, "SEQPACKET": 5, "PACKET": 10}
_SK_STATES = {
    "ESTABLISHED": 1,
    "SYN_SENT": 2,
    "SYN_RECV": 3,
    "FIN_WAIT1": 4,
    "FIN_WAIT2": 5,
    "TIME_WAIT": 6,
    "CLOSE": 7,
    "CLOSE_WAIT": 8,
    "LAST_ACK": 9,
    "LISTEN": 10,
}
@dataclass
class Image:
    """One decoded image: its entries, and where each entry starts in the file (for errors)."""

    source: str
    entries: list[dict[str, Any]]
    lines: list[int | None] = field(default_factory=list)

    def line(self, index: int) -> int | None:
        return self.lines[index] if index < len(self.lines) else None

    def fail(self, index: int | None, reason: str) -> DumpError:
        if index is None:
            return DumpError(self.source, None, reason)
        return DumpError(self.source, self.line(index), f"entry {index}: {reason}")


def int_field(image: Image, index: int, entry: dict[str, Any], key: str, default: int | None = None) -> int:
    """An integer field: crit --pretty prints hex fields as '0x..', dev fields as 'major:minor'."""
    if key not in entry:
        if default is not None:
            return default
        raise image.fail(index, f"missing field {key!r}")
    value = entry[key]
    if isinstance(value, bool):
        raise image.fail(index, f"{key} is a boolean, expected a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise image.fail(index, f"{key} is not a number: {value!r}")


def _str(image: Image, index: int, entry: dict[str, Any], key: str, default: str | None = None) -> str:
    if key not in entry:
        if default is not None:
            return default
        raise image.fail(index, f"missing field {key!r}")
    value = entry[key]
    if not isinstance(value, str):
        raise image.fail(index, f"{key} is not a string: {value!r}")
    return value


def _dev(image: Image, index: int, entry: dict[str, Any]) -> tuple[int, int]:
    """root_dev: 'major:minor' from --pretty, else the kernel's dev_t (major << 20 | minor)."""
    value = entry.get("root_dev")
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}:[0-9]{1,18}", value):
        major, minor = value.split(":")
        return int(major), int(minor)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value >> 20, value & 0xFFFFF
    if value is None:
        raise image.fail(index, "missing field 'root_dev'")
    raise image.fail(index, f"root_dev is neither 'major:minor' nor a number: {value!r}")


def _flag_bits(image: Image, index: int, value: Any, names: dict[str, int], what: str) -> int:
    """A flags field: an int, or crit's 'A | B | 0x40' rendering.

    Names this module does not know (a newer crit's) are ignored: only the bits
    named in `names` are ever tested.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise image.fail(index, f"{what} is not a flags value: {value!r}")
    bits = 0
    for part in value.split("|"):
        part = part.strip()
        if not part:
            continue
        if part in names:
            bits |= names[part]
            continue
        if re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}", part):
            bits |= int(part, 0)
        elif not re.fullmatch(r"[A-Z][A-Z0-9_]*", part):
            raise image.fail(index, f"{what}: not a flag name: {part!r}")
    return bits


def _enum(image: Image, index: int, value: Any, names: dict[str, int], what: str) -> int:
    """crit prints known enum values by name and others as numbers; -1 for a name not known here."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return names.get(value, -1)
    raise image.fail(index, f"{what} is neither a name nor a number: {value!r}")


def unix_name(encoded: str) -> bytes:
    """A unix_sk_entry name as crit prints it (quoted-printable, pb2dict 'unix_name' conv) to bytes.

    The kernel reports the address with the terminating NUL the binder passed,
    so b'/omt/d/sock\\0' is printed '/omt/d/sock=00'; abstract names start with NUL.
    """
    return quopri.decodestring(encoded.encode("utf-8", "surrogateescape"))


def _socket_path(raw: bytes) -> str | None:
    """The filesystem path of a unix socket name, or None for an abstract or empty one."""
    if not raw or raw[:1] == b"\0":
        return None
    return os.fsdecode(raw.split(b"\0", 1)[0])


# --- the mount table ------------------------------------------------------------------------


def _super_options(sb_flags: int, options: str) -> str:
    have = set(options.split(",")) if options else set()
    parts = ["ro" if sb_flags & MS_RDONLY else "rw"]
    parts += [name for bit, name in _SB_OPTS if sb_flags & bit and name not in have]
    if options:
        parts.append(options)
    return ",".join(parts)


def _mount_options(flags: int) -> str:
    parts = ["ro" if flags & MS_RDONLY else "rw"]
    parts += [name for bit, name in _MNT_OPTS if flags & bit]
    return ",".join(parts)


def _mount_from_entry(image: Image, index: int, entry: dict[str, Any], notes: list[str]) -> Mount:
    mnt_id = int_field(image, index, entry, "mnt_id")
    parent = int_field(image, index, entry, "parent_mnt_id")
    major, minor = _dev(image, index, entry)
    flags = int_field(image, index, entry, "flags")
    sb_flags = int_field(image, index, entry, "sb_flags", 0)
    root = _str(image, index, entry, "root")
    if entry.get("deleted") and not root.endswith("//deleted"):
        root += "//deleted"  # how the kernel's mountinfo shows an unlinked root (dentry_path())
    mountpoint = _str(image, index, entry, "mountpoint")
    source = _str(image, index, entry, "source")
    options = _str(image, index, entry, "options")
    if not mountpoint.startswith("/"):
        raise image.fail(index, f"mount {mnt_id}: mountpoint is not absolute: {mountpoint!r}")

    code = int_field(image, index, entry, "fstype")
    fsname = entry.get("fsname")
    if code == FSTYPE_AUTO or (code == FSTYPE_UNSUPPORTED and fsname):
        fstype = fsname if isinstance(fsname, str) and fsname else "unknown"
    elif code == FSTYPE_UNSUPPORTED:
        fstype = "unknown"
        notes.append(f"mount {mnt_id}: CRIU does not record the filesystem type of an 'unsupported' fs; written as 'unknown'")
    else:
        fstype = FSTYPE_NAMES.get(code, "unknown")
        if code not in FSTYPE_NAMES:
            notes.append(f"mount {mnt_id}: fstype {code} is not in CRIU 4.2's mnt.proto; written as 'unknown'")

    optional: list[str] = []
    shared = int_field(image, index, entry, "shared_id", 0)
    master = int_field(image, index, entry, "master_id", 0)
    if shared:
        optional.append(f"shared:{shared}")
    # CRIU sets master_id to -1 (stored as uint32) when the master is the dump root's own master.
    if 0 < master < 1 << 31:
        optional.append(f"master:{master}")
    elif master:
        notes.append(f"mount {mnt_id}: slave of a peer group outside the dump (master_id {master}); master:N not written")
    if flags & MS_UNBINDABLE:
        optional.append("unbindable")

    if entry.get("ext_mount") and "ext_key" not in entry:
        # Images older than ext_key stored the external mount's key in `root`.
        notes.append(f"mount {mnt_id}: external mount from an old image; root {root!r} is CRIU's key, not a path")
    if entry.get("internal_sharing"):
        notes.append(f"mount {mnt_id}: external mount re-shared inside the namespace (internal_sharing)")
    if entry.get("with_plugin"):
        notes.append(f"mount {mnt_id}: restored by a CRIU plugin")

    return Mount(
        mount_id=mnt_id,
        parent_id=parent,
        major=major,
        minor=minor,
        root=root,
        mountpoint=mountpoint,
        options=_mount_options(flags),
        optional=tuple(optional),
        fstype=fstype,
        source=source,
        super_options=_super_options(sb_flags, options),
        line_no=image.line(index) or 0,
    )


def _order_mounts(image: Image, mounts: list[Mount]) -> list[Mount]:
    """Mountinfo order, then parents before children.

    CRIU's parse_mountinfo() prepends each line to its list, and dump_mnt_ns()
    writes that list: the image holds the mounts in reverse mountinfo order, so
    reversing it restores the kernel's order, which decides stacking for legacy
    side-by-side siblings (of two mounts with one parent on one mountpoint, the
    earlier listed is on top). Mount ids are recycled, so a higher
    id does not mean a later mount; the file order is the better witness. A mount
    moved under a newer parent can precede it in mountinfo; those are moved after
    their parent.
    """
    kernel_order = list(reversed(mounts))
    by_id: dict[int, Mount] = {}
    for m in kernel_order:
        if m.mount_id in by_id:
            raise DumpError(image.source, m.line_no or None, f"mount id {m.mount_id} appears twice")
        by_id[m.mount_id] = m
    placed: set[int] = set()
    out: list[Mount] = []
    for m in kernel_order:
        chain: list[Mount] = []
        cur: Mount | None = m
        seen: set[int] = set()
        while cur is not None and cur.mount_id not in placed:
            if cur.mount_id in seen:
                raise DumpError(image.source, cur.line_no or None, f"mount {cur.mount_id} is in a parent cycle")
            seen.add(cur.mount_id)
            chain.append(cur)
            parent = by_id.get(cur.parent_id)
            cur = parent if parent is not None and parent.mount_id != cur.mount_id else None
        for item in reversed(chain):
            placed.add(item.mount_id)
            out.append(item)
    return out


def mounts_from_image(image: Image, notes: list[str], progress: Progress = quiet) -> list[Mount]:
    total = len(image.entries)
    every_so_often = every(total)
    mounts = []
    for index, entry in enumerate(image.entries):
        if index % every_so_often == 0:
            progress("reading the CRIU mount table", index, total)
        mounts.append(_mount_from_entry(image, index, entry, notes))
    progress("reading the CRIU mount table", total, total)
    if not mounts:
        raise DumpError(image.source, None, "no mount entries")
    return _order_mounts(image, mounts)


# --- targets --------------------------------------------------------------------------------

# reg_file_entry.flags as crit prints them (pb2dict's rfile_flags_map); O_PATH has no name there.
_OPEN_FLAGS = {"O_WRONLY": 0o1, "O_RDWR": 0o2, "O_PATH": O_PATH}


@dataclass
class _Files:
    """files.img: REG entries (name, mnt_id) and UNIXSK entries by file id."""

    image: Image
    reg: dict[int, tuple[int, dict[str, Any]]]
    usk: dict[int, tuple[int, dict[str, Any]]]

    @classmethod
    def from_image(cls, image: Image) -> _Files:
        reg: dict[int, tuple[int, dict[str, Any]]] = {}
        usk: dict[int, tuple[int, dict[str, Any]]] = {}
        for index, entry in enumerate(image.entries):
            kind = entry.get("type")
            if kind not in ("REG", "UNIXSK", 1, 5):
                continue
            file_id = int_field(image, index, entry, "id")
            key = "reg" if kind in ("REG", 1) else "usk"
            body = entry.get(key)
            if not isinstance(body, dict):
                raise image.fail(index, f"file {file_id}: type {kind} without a {key!r} object")
            (reg if key == "reg" else usk)[file_id] = (index, body)
        return cls(image, reg, usk)

    def reg_path(self, file_id: int) -> tuple[str, int, dict[str, Any]] | None:
        found = self.reg.get(file_id)
        if found is None:
            return None
        index, body = found
        return _str(self.image, index, body, "name"), int_field(self.image, index, body, "mnt_id", -1), body


def _add_reg(col: TargetCollector, files: _Files, file_id: int, target_id: str, kind: str) -> None:
    found = files.reg_path(file_id)
    if found is None:
        col.skip(target_id, kind, None, None, f"file id {file_id} is not a REG entry in {files.image.source}")
        return
    name, mnt_id, body = found
    if body.get("ext"):
        col.skip(target_id, kind, name, mnt_id, "external file (--external file[...]): CRIU inherits it, no path to open")
        return
    if kind == "root" and name == "/":
        col.skip(target_id, kind, name, mnt_id, "the root of its mount namespace: the restored namespace gives it, no chroot")
        return
    if kind != "open":
        col.add(target_id, kind, mnt_id, name)
        return
    # An fd: what it is (st_mode, reg_file_entry.mode) and how it was opened (its flags).
    index = files.reg[file_id][0]
    mode = body.get("mode")
    file_type = file_type_of(mode) if isinstance(mode, int) and not isinstance(mode, bool) else None
    access: str | None = None
    if "flags" in body:
        flags = _flag_bits(files.image, index, body["flags"], _OPEN_FLAGS, "reg flags")
        access = access_mode(flags)
    if file_type == "socket" and access != "path":
        access = None  # not a combination the kernel makes; the dump reader would refuse it
    col.add(target_id, kind, mnt_id, name, file_type=file_type, access=access)


def _add_socket(col: TargetCollector, files: _Files, file_id: int, target_id: str) -> None:
    index, body = files.usk[file_id]
    image = files.image
    encoded = _str(image, index, body, "name", "")
    path = _socket_path(unix_name(encoded))
    if path is None:
        return  # unnamed or abstract: nothing in the filesystem to reach
    mnt_id = int_field(image, index, body, "mnt_id", -1)
    sk_type = _enum(image, index, body.get("type", 0), _SK_TYPES, "socket type")
    state = _enum(image, index, body.get("state", 0), _SK_STATES, "socket state")
    if is_accepted_connection(sk_type, state):
        # An accepted connection reports its listener's name; CRIU does not bind it (sk-unix.c).
        return
    if not path.startswith("/"):
        name_dir = body.get("name_dir")
        if isinstance(name_dir, str) and name_dir.startswith("/"):
            path = name_dir.rstrip("/") + "/" + path
        else:
            col.skip(target_id, "bind", path, mnt_id, "relative socket name and no name_dir")
            return
    unlinked = bool(body.get("deleted"))
    if unlinked:
        col.notes.append(f"{target_id}: the socket file was unlinked; CRIU binds it at {path} and unlinks it again")
    col.add(target_id, "bind", mnt_id, path, unlinked=unlinked or None)


@dataclass
class Task:
    pid: int
    suffix: str
    fdinfo: Image | None
    fs: Image | None
    mm: Image | None


def _collect_task(col: TargetCollector, files: _Files | None, task: Task) -> None:
    if files is None:
        if task.fdinfo or task.fs or task.mm:
            col.notes.append("files.json was not given: fds, cwd and mappings cannot be resolved to paths")
        return
    sfx = task.suffix
    if task.fdinfo is not None:
        image = task.fdinfo
        opened: set[int] = set()
        for index, entry in enumerate(image.entries):
            kind = entry.get("type")
            file_id = int_field(image, index, entry, "id")
            fd = int_field(image, index, entry, "fd")
            if kind in ("REG", 1, "FIFO", 3):
                # fds sharing a file id share one struct file: CRIU opens it once and dups it.
                # A FIFO's path and flags are in a REG entry of the same id (criu/fifo.c).
                if file_id not in opened:
                    opened.add(file_id)
                    _add_reg(col, files, file_id, f"fd{fd}{sfx}", "open")
            elif kind in ("UNIXSK", 5):
                if file_id not in files.usk:
                    raise image.fail(index, f"fd {fd}: unix socket {file_id} is not in {files.image.source}")
                _add_socket(col, files, file_id, f"sk-{file_id}")
            else:
                col.skip(f"fd{fd}{sfx}", "open", None, None,
                         f"a {kind} fd: nothing reopened by a path of the mount table (CRIU restores it itself)")
    if task.fs is not None:
        image = task.fs
        for index, entry in enumerate(image.entries):
            _add_reg(col, files, int_field(image, index, entry, "cwd_id"), f"cwd{sfx}", "chdir")
            if "root_id" in entry:
                _add_reg(col, files, int_field(image, index, entry, "root_id"), f"root{sfx}", "root")
            break
    if task.mm is not None:
        image = task.mm
        for index, entry in enumerate(image.entries):
            vmas = entry.get("vmas", [])
            if not isinstance(vmas, list):
                raise image.fail(index, "vmas is not a list")
            for vma in vmas:
                if not isinstance(vma, dict):
                    raise image.fail(index, "a vma is not an object")
                status = _flag_bits(image, index, vma.get("status", 0), _VMA_BITS, "vma status")
                if not status & _VMA_FILE or status & _VMA_NOT_REG:
                    continue
                file_id = int_field(image, index, vma, "shmid")
                _add_reg(col, files, file_id, f"map-{file_id}", "mmap")


def _all_sockets(col: TargetCollector, files: _Files) -> None:
    # Bound sockets only reached through SCM_RIGHTS in flight, or whose fd table
    # was not given, are still re-bound by CRIU at restore.
    for file_id in sorted(files.usk):
        _add_socket(col, files, file_id, f"sk-{file_id}")


@dataclass
class ImageSet:
    """One task set's images, as a source found them: the mount table, files.img, the tasks whose
    fds, cwd and mappings are read, and notes on what the source could not use."""

    mountpoints: Image
    files: Image | None
    tasks: list[Task]
    notes: list[str] = field(default_factory=list)


def unlisted_reason(mount: int | None) -> str:
    if mount is None or mount < 0:
        return "CRIU recorded no mount id"
    return f"mount {mount} is not in this mount namespace's table"


def dump_from_images(images: ImageSet, progress: Progress = quiet) -> dict[str, Any]:
    """An overmount-dump/1 dict (plus `skipped` and `notes`) from one task set's images."""
    notes = list(images.notes)
    mounts = mounts_from_image(images.mountpoints, notes, progress)
    col = TargetCollector(mounts, unlisted_reason, notes)
    files = _Files.from_image(images.files) if images.files is not None else None
    for task in images.tasks:
        _collect_task(col, files, task)
    if files is not None:
        _all_sockets(col, files)
    return {
        "format": DUMP_FORMAT,
        "mountinfo": "".join(render_line(m) + "\n" for m in mounts),
        "targets": col.targets,
        "skipped": col.skipped,
        "notes": list(dict.fromkeys(col.notes)),
    }
