"""Which images of a CRIU dump directory belong together, whatever form they are in (crit JSON
here; binary .img files or an unpacked checkpoint archive read the same way).

The root task is the first `pstree` entry; its `ids-PID` image names the mount namespace
(`mountpoints-<mnt_ns_id>`) and the fd table (`fdinfo-<files_id>`, or `fdinfo-PID` when
`inventory` says fdinfo_per_id is false). Other tasks in that mount namespace contribute their
targets too. Without pstree/ids, a directory holding exactly one image of each kind is used as is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from planner.errors import DumpError
from planner.inputs.criu.entries import Image, ImageSet, Task, int_field

ReadImage = Callable[[str, str], Image]  # (path, kind) -> the image's entries


def single(image: Image | None, index: int = 0) -> dict[str, Any] | None:
    if image is None or not image.entries:
        return None
    return image.entries[index]


def images_of_directory(directory: str, names: list[str], suffix: str, read: ReadImage, no_table: str) -> ImageSet:
    """The root task's images among `names` (the directory's files, images named KIND[-N]`suffix`),
    each read by `read`; `no_table` is the reason given when no mountpoints image is there."""
    numbered_name = re.compile(rf"^(mountpoints|fdinfo|fs|mm|ids)-([0-9]{{1,18}}){re.escape(suffix)}$")
    numbered: dict[str, dict[int, str]] = {}
    for name in names:
        match = numbered_name.match(name)
        if match:
            numbered.setdefault(match.group(1), {})[int(match.group(2))] = os.path.join(directory, name)
    notes: list[str] = []

    def opt(kind: str) -> Image | None:
        path = os.path.join(directory, kind + suffix)
        return read(path, kind) if os.path.exists(path) else None

    def only(kind: str) -> str | None:
        found = numbered.get(kind, {})
        return next(iter(found.values())) if len(found) == 1 else None

    if "mountpoints" not in numbered:
        raise DumpError(directory, None, no_table)
    files = opt("files")
    pstree = opt("pstree")
    inventory = single(opt("inventory"))
    per_id = True if inventory is None else bool(inventory.get("fdinfo_per_id", False))

    pids: list[int] = []
    if pstree is not None:
        for index, entry in enumerate(pstree.entries):
            pids.append(int_field(pstree, index, entry, "pid"))
    root_ns: int | None = None
    tasks: list[Task] = []
    seen_files: set[int] = set()
    if pids and pids[0] in numbered.get("ids", {}):
        for pid in pids:
            ids_path = numbered.get("ids", {}).get(pid)
            if ids_path is None:
                notes.append(f"task {pid}: no ids-{pid}{suffix}; its targets are not read")
                continue
            ids_image = read(ids_path, "ids")
            ids = single(ids_image)
            if ids is None:
                raise DumpError(ids_path, None, "no entries")
            mnt_ns = int_field(ids_image, 0, ids, "mnt_ns_id")
            if root_ns is None:
                root_ns = mnt_ns
            elif mnt_ns != root_ns:
                notes.append(f"task {pid}: in another mount namespace (mnt_ns_id {mnt_ns}); its targets are not read")
                continue
            files_id = int_field(ids_image, 0, ids, "files_id", pid)
            fd_key = files_id if per_id else pid
            fdinfo_path = numbered.get("fdinfo", {}).get(fd_key)
            fdinfo = None
            if fdinfo_path and fd_key not in seen_files:
                fdinfo = read(fdinfo_path, "fdinfo")
                seen_files.add(fd_key)
            fs_path = numbered.get("fs", {}).get(pid)
            mm_path = numbered.get("mm", {}).get(pid)
            tasks.append(
                Task(
                    pid=pid,
                    suffix="" if not tasks else f"@{pid}",
                    fdinfo=fdinfo,
                    fs=read(fs_path, "fs") if fs_path else None,
                    mm=read(mm_path, "mm") if mm_path else None,
                )
            )
        mnt_path = numbered["mountpoints"].get(root_ns) if root_ns is not None else None
        if mnt_path is None:
            raise DumpError(directory, None, f"no mountpoints-{root_ns}{suffix} for the root task's mount namespace")
    else:
        mnt_path = only("mountpoints")
        if mnt_path is None:
            raise DumpError(directory, None, f"several mountpoints-N{suffix} and no pstree{suffix}/ids-PID{suffix} to choose one")
        one = {kind: only(kind) for kind in ("fdinfo", "fs", "mm")}
        tasks.append(
            Task(
                pid=0,
                suffix="",
                fdinfo=read(one["fdinfo"], "fdinfo") if one["fdinfo"] else None,
                fs=read(one["fs"], "fs") if one["fs"] else None,
                mm=read(one["mm"], "mm") if one["mm"] else None,
            )
        )
        for kind in ("fdinfo", "fs", "mm"):
            if numbered.get(kind) and one[kind] is None:
                notes.append(f"several {kind}-N{suffix} and no pstree{suffix}/ids-PID{suffix}: none of them read")
    return ImageSet(read(mnt_path, "mountpoints"), files, tasks, notes)


def images_by_kind(paths: dict[str, str], read: ReadImage) -> ImageSet:
    """One task's images named by kind ({"mountpoints": ..., "files": ..., "fdinfo": ..., "fs": ..., "mm": ...})."""
    allowed = ("mountpoints", "files", "fdinfo", "fs", "mm")
    for key in paths:
        if key not in allowed:
            raise DumpError("<crit paths>", None, f"unknown image kind {key!r} (expected one of {', '.join(allowed)})")
    if "mountpoints" not in paths:
        raise DumpError("<crit paths>", None, "the 'mountpoints' image is required")

    def opt(kind: str) -> Image | None:
        return read(paths[kind], kind) if kind in paths else None

    task = Task(pid=0, suffix="", fdinfo=opt("fdinfo"), fs=opt("fs"), mm=opt("mm"))
    return ImageSet(read(paths["mountpoints"], "mountpoints"), opt("files"), [task], [])
