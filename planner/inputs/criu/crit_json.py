"""A source of CRIU image entries: `crit decode` JSON (a dump directory, files by kind, or one
mountpoints image on standard input). Reads files; the entries go to entries.py."""

from __future__ import annotations

import os
from typing import Any

from planner.dump import Dump
from planner.errors import DumpError
from planner.inputs.criu import CRIT_DECODE, MAGICS
from planner.inputs.criu.entries import Image, ImageSet, dump_from_images
from planner.inputs.criu.layout import images_by_kind, images_of_directory
from planner.inputs.dump_json import from_json
from planner.inputs.source import Source, decode, json_element_lines, load_json, read_limited
from planner.progress import Progress, quiet


def image_from_text(text: str, source: str, kind: str) -> Image:
    """One image from crit's JSON: {"magic": ..., "entries": [...]}, read by the one JSON loader."""
    doc = load_json(text, source)
    if not isinstance(doc, dict):
        raise DumpError(source, 1, "crit decode output is an object with 'magic' and 'entries'")
    magic = doc.get("magic")
    want = MAGICS[kind]
    if magic != want:
        raise DumpError(source, 1, f"magic is {magic!r}, expected {want!r} (a {kind} image)")
    entries = doc.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DumpError(source, 1, "'entries' must be a list of objects")
    # Where each entry's '{' is: errors name that line.
    return Image(source, entries, list(json_element_lines(text, "entries", named_by=None)))


def read_image(path: str, kind: str) -> Image:
    try:
        with open(path, "rb") as handle:
            raw = read_limited(handle, path)
    except OSError as exc:
        raise DumpError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if raw.lstrip()[:1] != b"{":
        # A CRIU image starts with binary magic numbers; crit's JSON with '{'.
        raise DumpError(path, 1, f"not crit JSON (a binary image?): decode it with `crit decode --pretty -i IMAGE.img -o {kind}-N.json`")
    return image_from_text(decode(raw, path), path, kind)


def images_in(directory: str) -> ImageSet:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise DumpError(directory, None, f"cannot list: {exc.strerror or exc}") from None
    hint = (f": binary .img files here, {CRIT_DECODE}" if any(n.endswith(".img") for n in names) else
            " (a directory as DUMP is a CRIU dump decoded by crit)")
    return images_of_directory(directory, names, ".json", read_image, f"no mountpoints-N.json{hint}")


def dump_from_crit(paths: dict[str, str] | str | os.PathLike[str], progress: Progress = quiet) -> dict[str, Any]:
    """An overmount-dump/1 dict from crit-decoded JSON images (a directory, or paths by kind)."""
    images = images_by_kind(paths, read_image) if isinstance(paths, dict) else images_in(os.fspath(paths))
    return dump_from_images(images, progress)


def read_directory(source: Source, progress: Progress = quiet) -> Dump:
    return from_json(dump_from_crit(source.path, progress), source.name, "", progress)


def read_mountpoints(source: Source, progress: Progress = quiet) -> Dump:
    """A lone `crit decode` mountpoints image (a file, or standard input): the table, no targets."""
    image = image_from_text(source.text, source.name, "mountpoints")
    return from_json(dump_from_images(ImageSet(image, None, [], [])), source.name, source.text, progress)
