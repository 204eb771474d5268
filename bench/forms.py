"""One generated host written in every form `overmount plan` reads, as users bring them.

- mountinfo: the table as /proc/PID/mountinfo prints it, the targets as
  `--target MOUNT:PATH:KIND` options on the command line;
- dump JSON: what `overmount capture` writes (its keys in its order, indent 2);
- scenario TOML: a `scenarios/` file (title, the table in a literal string, one
  [[targets]] table per target);
- CRIU: a directory of `crit decode --pretty` JSON. The images are built from the
  host (the mount table in the reverse order CRIU writes it, a REG file per open
  or mapped file, a listening unix socket per bound name, the first cwd as the
  task's and the other directories as directory fds), encoded to binary images
  by `crit encode` and decoded again by `crit decode --pretty`, so what is read
  is what crit writes. crit takes seconds at 1e5 mounts: the directories are
  kept in bench/.cache, keyed by the host.

The CRIU form names targets as the CRIU reader does (fdN, map-N, sk-N, cwd) and
turns every chdir but the first into an open directory fd (one task has one
cwd): the same objects in the same mounts, so the same moves.
"""

from __future__ import annotations

import hashlib
import json
import os
import quopri
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.generate import GeneratedHost
from planner import mountinfo
from planner.inputs.criu.entries import FSTYPE_NAMES

CACHE = Path(__file__).resolve().parent / ".cache"
FORMS = ("mountinfo", "dump JSON", "scenario TOML", "CRIU JSON")

# The sample dump this bench copies its task images from (pid 1, mnt_ns_id 10, files_id 2).
CRIU_SAMPLE = Path("/work/shared/criu-images/socket-dir-covered")
_FSTYPE_CODES = {name: code for code, name in FSTYPE_NAMES.items()}
_FSTYPE_UNSUPPORTED, _FSTYPE_AUTO = 0, 16
_DISK_FILESYSTEMS = ("ext4", "xfs", "btrfs", "vfat")  # CRIU writes these as 'unsupported' (0), no name
_MS_FLAGS = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8, "noatime": 0x400, "nodiratime": 0x800,
             "relatime": 0x200000}
_S_IFREG, _S_IFDIR = 0o100644, 0o40755


def target_options(host: GeneratedHost) -> list[str]:
    """`--target MOUNT:PATH:KIND` for each target, as a user would type them."""
    out = []
    for t in host.targets:
        out += ["--target", f"{t.mount}:{t.path}:{t.kind}"]
    return out


def dump_json(host: GeneratedHost) -> str:
    """What capture writes: its keys in its order, json.dumps(indent=2) and a newline."""
    return json.dumps({
        "format": "overmount-dump/1",
        "mountinfo": host.mountinfo,
        "targets": [t.as_json() for t in host.targets],
        "pid": 1,
        "file_mounts": [],
        "skipped": [],
        "notes": [],
    }, indent=2) + "\n"


def scenario_toml(host: GeneratedHost) -> str:
    lines = [f'title = "generated host: {host.mounts} mounts, {len(host.targets)} targets"',
             f"mountinfo = '''\n{host.mountinfo}'''"]
    for t in host.targets:
        lines += ["", "[[targets]]", f"id = {json.dumps(t.id)}", f"kind = {json.dumps(t.kind)}", f"mount = {t.mount}",
                  f"path = {json.dumps(t.path)}"]
    return "\n".join(lines) + "\n"


# --- CRIU -------------------------------------------------------------------------------------


def _sample(name: str) -> dict[str, Any]:
    with open(CRIU_SAMPLE / name) as handle:
        return json.load(handle)  # type: ignore[no-any-return]


def _mnt_entry(line: str) -> dict[str, Any]:
    m = mountinfo.parse_line(line)
    flags = 0
    for option in m.options.split(","):
        flags |= _MS_FLAGS.get(option, 0)
    code = _FSTYPE_CODES.get(m.fstype)
    entry: dict[str, Any] = {
        "fstype": code if code is not None else _FSTYPE_UNSUPPORTED if m.fstype in _DISK_FILESYSTEMS else _FSTYPE_AUTO,
        "mnt_id": m.mount_id, "root_dev": m.dev, "parent_mnt_id": m.parent_id, "flags": hex(flags), "root": m.root,
        "mountpoint": m.mountpoint, "source": m.source,
        # CRIU keeps the superblock's options without the leading rw/ro (that is sb_flags).
        "options": m.super_options.partition(",")[2] if m.super_options.startswith(("rw", "ro")) else m.super_options,
        "shared_id": m.shared or 0, "master_id": m.master or 0,
        "sb_flags": "0x1" if m.super_options.split(",")[0] == "ro" else "0x0",
    }
    if code is None and m.fstype not in _DISK_FILESYSTEMS:
        entry["fsname"] = m.fstype
    return entry


def criu_images(host: GeneratedHost) -> dict[str, dict[str, Any]]:
    """The images of a one-task dump of `host`, as dicts in crit's JSON shape (before crit)."""
    fown = {"uid": 0, "euid": 0, "signum": 0, "pid_type": 0, "pid": 0}
    files: list[dict[str, Any]] = []
    fds: list[dict[str, Any]] = []
    vmas: list[dict[str, Any]] = []
    usk_template = next(e for e in _sample("files.json")["entries"] if e["type"] == "UNIXSK")["usk"]
    cwd_id: int | None = None

    def reg(path: str, mount: int, mode: int) -> int:
        file_id = len(files) + 1
        files.append({"type": "REG", "id": file_id, "reg": {"id": file_id, "flags": 0, "pos": 0, "fown": fown,
                                                             "name": path, "mnt_id": mount, "size": 4096,
                                                             "mode": mode}})
        return file_id

    for t in host.targets:
        if t.kind == "mmap":
            file_id = reg(t.path, t.mount, _S_IFREG)
            start = 0x7F0000000000 + 0x1000 * len(vmas)
            vmas.append({"start": hex(start), "end": hex(start + 0x1000), "pgoff": 0, "shmid": file_id,
                         "prot": "PROT_READ", "flags": "MAP_PRIVATE",
                         "status": "VMA_AREA_REGULAR | VMA_FILE_PRIVATE", "fd": -1, "fdflags": "0x0"})
        elif t.kind == "bind":
            file_id = len(files) + 1
            name = quopri.encodestring(os.fsencode(t.path) + b"\0").decode().replace("=\n", "")
            files.append({"type": "UNIXSK", "id": file_id,
                          "usk": {**usk_template, "id": file_id, "ino": 100_000 + file_id, "name": name,
                                  "mnt_id": t.mount}})
            fds.append({"id": file_id, "flags": 0, "type": "UNIXSK", "fd": 3 + len(fds)})
        elif t.kind == "chdir" and cwd_id is None:
            cwd_id = reg(t.path, t.mount, _S_IFDIR)
        else:  # open, or a directory held open by fd
            file_id = reg(t.path, t.mount, _S_IFDIR if t.kind == "chdir" else _S_IFREG)
            fds.append({"id": file_id, "flags": 0, "type": "REG", "fd": 3 + len(fds)})
    root_id = reg("/", host_root(host), _S_IFDIR)
    mm = _sample("mm-1.json")
    mm["entries"][0]["vmas"] = vmas
    # CRIU writes the table in reverse mountinfo order (parse_mountinfo prepends each line).
    entries = [_mnt_entry(line) for line in reversed(host.mountinfo.splitlines())]
    return {
        "mountpoints-10": {"magic": "MNTS", "entries": entries},
        "files": {"magic": "FILES", "entries": files},
        "fdinfo-2": {"magic": "FDINFO", "entries": fds},
        "fs-1": {"magic": "FS", "entries": [{"cwd_id": cwd_id if cwd_id is not None else root_id, "root_id": root_id,
                                             "umask": 18}]},
        "mm-1": mm,
        "pstree": _sample("pstree.json"),
        "ids-1": _sample("ids-1.json"),
        "inventory": _sample("inventory.json"),
    }


def host_root(host: GeneratedHost) -> int:
    return int(host.mountinfo.split(" ", 1)[0])


def criu_dir(host: GeneratedHost) -> Path:
    """A directory of crit-decoded JSON for `host` (made once through crit encode/decode, then cached)."""
    key = hashlib.sha256(host.mountinfo.encode() + json.dumps([t.as_json() for t in host.targets]).encode())
    out = CACHE / f"criu-{host.mounts}-{key.hexdigest()[:12]}"
    if (out / "mountpoints-10.json").exists():
        return out
    crit = shutil.which("crit")
    if crit is None:
        raise RuntimeError("crit is not installed (it comes with CRIU: apt install criu)")
    CACHE.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE))
    try:
        for name, image in criu_images(host).items():
            raw, img = work / f"{name}.raw.json", work / f"{name}.img"
            raw.write_text(json.dumps(image))
            subprocess.run([crit, "encode", "-i", raw, "-o", img], check=True)
            subprocess.run([crit, "decode", "--pretty", "-i", img, "-o", work / f"{name}.json"], check=True)
            raw.unlink()
            img.unlink()
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def write_forms(host: GeneratedHost, directory: Path) -> dict[str, list[str]]:
    """Each form's input in `directory`: form -> the arguments `overmount plan` takes for it."""
    table = directory / f"mountinfo-{host.mounts}"
    table.write_text(host.mountinfo)
    dump = directory / f"dump-{host.mounts}.json"
    dump.write_text(dump_json(host))
    scenario = directory / f"scenario-{host.mounts}.toml"
    scenario.write_text(scenario_toml(host))
    return {
        "mountinfo": [str(table), *target_options(host)],
        "dump JSON": [str(dump)],
        "scenario TOML": [str(scenario)],
        "CRIU JSON": [str(criu_dir(host))],
    }
