"""Parse and render /proc/PID/mountinfo (proc(5)); no I/O beyond a str."""

from __future__ import annotations

import re
from typing import NamedTuple

from planner import limits
from planner.bulk import collector_paused
from planner.errors import MountinfoError
from planner.paths import is_clean, unusable
from planner.progress import Progress, quiet

# The kernel escapes these four bytes in root, mountpoint and source (fs/proc_namespace.c mangle()).
_MANGLED = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}
# libmount's unmangle(): a backslash and three octal digits; any other backslash is kept as it is.
_ESCAPE = re.compile(r"\\([0-7]{3})")
_GROUP_TAGS = ("shared", "master", "propagate_from")  # fs/proc_namespace.c show_mountinfo()


class Mount(NamedTuple):
    """One mountinfo line, every field kept.

    A named tuple, not a frozen dataclass: as immutable and as compact (no __dict__), and made
    three times faster, which is a tenth of `overmount plan` on a 1e5-mount table. Two mounts
    are equal when every field is, their line numbers included.
    """

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    options: str
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: str
    line_no: int = 0

    @property
    def deleted(self) -> bool:
        """The mount's root was unlinked: the kernel prints root as PATH//deleted (dentry_path()).

        The mount point field never carries a ' (deleted)' suffix (it comes from __d_path(), not
        d_path()), so '/mnt/a\\040(deleted)' is a directory really named 'a (deleted)'.
        """
        return self.root.endswith("//deleted")

    @property
    def dev(self) -> str:
        return f"{self.major}:{self.minor}"

    def _tag(self, name: str) -> int | None:
        """The number of the optional field `name:N` (name given with its colon), or None."""
        for opt in self.optional:
            if opt.startswith(name):
                value = opt[len(name) :]
                if value.isascii() and value.isdigit():
                    return int(value)
        return None

    @property
    def shared(self) -> int | None:
        """Peer group id, when the mount is shared."""
        return self._tag("shared:")

    @property
    def master(self) -> int | None:
        """Peer group this mount receives propagation from, when it is a slave."""
        return self._tag("master:")

    @property
    def groups(self) -> tuple[int | None, int | None]:
        """(shared, master) in one look at the optional fields: what a namespace of 1e5 mounts asks each."""
        shared = master = None
        for opt in self.optional:
            tag, _, value = opt.partition(":")
            if value.isascii() and value.isdigit():
                if tag == "shared" and shared is None:
                    shared = int(value)
                elif tag == "master" and master is None:
                    master = int(value)
        return shared, master

    @property
    def propagate_from(self) -> int | None:
        return self._tag("propagate_from:")

    @property
    def unbindable(self) -> bool:
        return "unbindable" in self.optional


def _quote(text: str, limit: int = 80) -> str:
    """repr() of a field, cut short: a message stays one readable line whatever the input."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def unescape(text: str, what: str, source: str, line_no: int) -> str:
    """Decode the kernel's octal escapes the way libmount does, refusing what the kernel never writes.

    A backslash not followed by three octal digits (`\\888`, `\\x`) stays a backslash, as in
    libmount and findmnt. An escape of NUL or '/' is refused: no name holds either byte, so the
    kernel cannot have written it, and libmount would cut the path at the NUL or split the name
    in two. So is one past \\377, which is no byte at all (libmount wraps it around).
    """
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        value = int(match.group(1), 8)
        if value == 0 or value == ord("/") or value > 0o377:
            decoded = "NUL" if value == 0 else "'/'" if value == ord("/") else "no byte (past \\377)"
            raise MountinfoError(
                source, line_no, f"bad escape in {what}: \\{match.group(1)} decodes to {decoded}, which the kernel never writes: {_quote(text)}"
            )
        return chr(value)

    return _ESCAPE.sub(one, text)


_MANGLE = str.maketrans(_MANGLED)


def escape(text: str) -> str:
    if " " in text or "\t" in text or "\n" in text or "\\" in text:  # rare: a scan each, in C
        return text.translate(_MANGLE)
    return text


def _int_field(text: str, what: str, source: str, line_no: int) -> int:
    if not text.isdigit() or not text.isascii():
        raise MountinfoError(source, line_no, f"{what} is not a number: {_quote(text)}")
    if len(text) > 18:  # ids and device numbers are at most 64-bit
        raise MountinfoError(source, line_no, f"{what} is too large: {_quote(text)}")
    return int(text)


def _refuse_own_master(optional: tuple[str, ...], source: str, line_no: int) -> None:
    shared = next((opt for opt in optional if opt.startswith("shared:")), None)
    if shared is not None and "master:" + shared[len("shared:"):] in optional:
        # A slave's master is another peer group: making a mount a slave takes it out of its own.
        raise MountinfoError(source, line_no, f"{shared} and master of the same group: the kernel writes no mount that "
                             "is a slave of its own peers")


def parse_line(line: str, source: str = "<mountinfo>", line_no: int = 1, same: dict[str, str] | None = None) -> Mount:
    """One mountinfo line; `same` keeps one copy of each repeated field text across lines."""
    if same is None:
        same = {}
    if "\0" in line:
        raise MountinfoError(source, line_no, "NUL byte in line")
    fields = line.split(" ")
    if len(fields) < 10:
        raise MountinfoError(source, line_no, f"too few fields ({len(fields)}; proc(5) needs at least 10)")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise MountinfoError(source, line_no, "no ' - ' separator before the filesystem type") from None
    tail = fields[sep + 1 :]
    if len(tail) < 3:
        raise MountinfoError(source, line_no, "missing filesystem type, source or super options after ' - '")
    mount_id = _int_field(fields[0], "mount id", source, line_no)
    parent_id = _int_field(fields[1], "parent id", source, line_no)
    major_text, colon, minor_text = fields[2].partition(":")
    if not colon:
        raise MountinfoError(source, line_no, f"major:minor expected, got {_quote(fields[2])}")
    major = _int_field(major_text, "major", source, line_no)
    minor = _int_field(minor_text, "minor", source, line_no)
    # root need not be a path: nsfs shows 'mnt:[4026532659]'.
    if not fields[4].startswith("/"):
        raise MountinfoError(source, line_no, f"mount point is not an absolute path: {_quote(fields[4])}")
    mountpoint = unescape(fields[4], "mount point", source, line_no)
    # libmount refuses both (a line the kernel cannot write: root is at least '/', options at least 'rw').
    if not fields[3]:
        raise MountinfoError(source, line_no, "empty root field (two spaces after major:minor)")
    if not fields[5]:
        raise MountinfoError(source, line_no, "empty mount options field (two spaces after the mount point)")
    if not is_clean(mountpoint):
        # __d_path() of a mounted dentry: no '.', '..', empty components or trailing '/'.
        raise MountinfoError(source, line_no, f"mount point {_quote(mountpoint)} has '.', '..' or empty components (the kernel never writes them)")
    root = unescape(fields[3], "root", source, line_no)
    for what, path in (("mount point", mountpoint), ("root", root)):
        problem = unusable(path)
        if problem is not None:
            raise MountinfoError(source, line_no, f"{what} {_quote(path)} {problem}")
    optional = tuple(fields[6:sep])
    for opt in optional:
        if not opt:
            raise MountinfoError(source, line_no, "empty optional field (two spaces before ' - ')")
        tag, colon, value = opt.partition(":")
        if colon and tag in _GROUP_TAGS and not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise MountinfoError(source, line_no, f"{tag} is not a peer group number: {_quote(opt)} (the kernel writes a decimal id)")
    _refuse_own_master(optional, source, line_no)
    if not tail[0]:
        raise MountinfoError(source, line_no, "empty filesystem type")
    return Mount(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=same.setdefault(root, root),
        mountpoint=mountpoint,
        options=same.setdefault(fields[5], fields[5]),
        optional=optional,
        fstype=same.setdefault(tail[0], tail[0]),
        source=same.setdefault(src := unescape(tail[1], "source", source, line_no), src),
        # Super options are the filesystem's own text and may hold spaces (moby/sys keeps them).
        super_options=same.setdefault(sup := " ".join(tail[2:]), sup),
        line_no=line_no,
    )


# A line as the kernel writes it for most mounts: no escapes, no empty field, only propagation
# tags among the optional fields. parse() takes such a line straight from the match (whose
# groups are parse_line's fields); every other line, blank, escaped, unusual or wrong, goes
# through parse_line, which reads it field by field and says what is wrong with it.
_PLAIN_LINE = re.compile(
    r"^([0-9]{1,18}) ([0-9]{1,18}) ([0-9]{1,18}):([0-9]{1,18}) ([^ \\\0\n]+) (/[^ \\\0\n]*) ([^ \0\n]+) "
    r"((?:(?:shared|master|propagate_from):[0-9]{1,18} |unbindable )*)- ([^ \0\n]+) ([^ \\\0\n]+) ([^\0\n]+)$",
    re.MULTILINE,
)


class _Reader:
    """Mounts of one table in file order, line numbers counted, repeated field texts kept once."""

    def __init__(self, source: str, first_line: int, progress: Progress) -> None:
        self.progress = progress
        self.source = source
        self.line_no = first_line
        self.mounts: list[Mount] = []
        self.limit = limits.MOUNTS.value
        self.same: dict[str, str] = {}

    def plain(self, text: str, at: int) -> int:
        """The plain lines (_PLAIN_LINE) from offset `at` on, up to the first other line: what
        parse_line would make of each, with fewer questions asked. Returns where that line starts."""
        mounts, same, source_name = self.mounts, self.same.setdefault, self.source
        for line in _PLAIN_LINE.finditer(text, at):
            if line.start() != at:
                break
            mount_id, parent_id, major, minor, root, mountpoint, options, tags, fstype, source, super_options = line.groups()
            if not is_clean(mountpoint) or unusable(mountpoint) is not None or unusable(root) is not None:
                parse_line(line.group(), source_name, self.line_no)  # raises, in parse_line's own words
            optional = tuple(tags.split()) if tags else ()
            if len(optional) > 1:
                _refuse_own_master(optional, source_name, self.line_no)
            if len(mounts) == self.limit:
                self.refuse_more()
            mounts.append(Mount(
                int(mount_id), int(parent_id), int(major), int(minor), same(root, root), mountpoint,
                same(options, options), optional, same(fstype, fstype), same(source, source),
                same(super_options, super_options), self.line_no,
            ))
            self.line_no += 1
            at = line.end() + 1
            if not self.line_no & 0xFFF:
                self.progress("reading the mount table", at, len(text))
        return at

    def careful(self, text: str, at: int) -> int:
        """The line starting at offset `at`, through parse_line (skipped if blank); where the next starts."""
        end = text.find("\n", at)
        if end < 0:
            end = len(text)
        line = text[at:end]
        if line.strip(" "):
            if len(self.mounts) == self.limit:
                self.refuse_more()
            self.mounts.append(parse_line(line, self.source, self.line_no, self.same))
        self.line_no += 1
        return end + 1

    def refuse_more(self) -> None:
        raise MountinfoError(self.source, self.line_no, limits.MOUNTS.refusal(f"mount {self.limit + 1:,}"))


def parse(text: str, source: str = "<mountinfo>", first_line: int = 1, progress: Progress = quiet) -> list[Mount]:
    """Every mount of a mountinfo text, in file order; blank lines are skipped.

    Lines end at '\\n' only: a raw '\\r' is part of a path (the kernel does not escape it).
    Lines are taken one at a time (no list of every line), and the fields that repeat from
    mount to mount (options, fstype, source, super options, root) are kept once: a 50 MB table
    costs a few times its size, not twenty-six. Plain lines (_PLAIN_LINE), most of any real
    table, are read from one regular expression's match: a 1e5-mount table in half the time.
    """
    reader = _Reader(source, first_line, progress)
    at = 0
    with collector_paused():
        while at < len(text):
            at = reader.careful(text, reader.plain(text, at))
    progress("reading the mount table", len(text), len(text))
    return reader.mounts


def render_line(mount: Mount) -> str:
    mountpoint = escape(mount.mountpoint)
    head = [
        str(mount.mount_id),
        str(mount.parent_id),
        mount.dev,
        escape(mount.root),
        mountpoint,
        mount.options,
        *mount.optional,
        "-",
        mount.fstype,
        escape(mount.source),
        mount.super_options,
    ]
    return " ".join(head)


def render(mounts: list[Mount]) -> str:
    return "".join(render_line(m) + "\n" for m in mounts)
