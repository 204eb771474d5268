"""Writing an output file (`-o FILE`) so that nobody else who can write near FILE gains by it.

The tool often runs as root and FILE often sits in a directory others can write to (/tmp, a
shared checkpoint directory), so what is found at FILE decides how it is written:

- nothing, or a regular file: the text goes to a new temporary file in FILE's directory, made
  by mkstemp (O_CREAT|O_EXCL|O_NOFOLLOW, an unpredictable name, mode 0600 until written), is
  flushed to disk, and is renamed over FILE. Readers see the old file or the whole new one;
  a planted `FILE.tmp` (symlink, FIFO, someone's file) is never opened. The new file is the
  caller's, with the mode a fresh file gets (0666 less the umask), whoever owned the old one.
- a character or block device, or a FIFO: written through, opened with O_NOFOLLOW, never
  replaced, so `-o /dev/null` leaves /dev/null a device.
- a symlink: followed only when it belongs to the caller or to root (/dev/stdout, /dev/fd/N);
  what it leads to is then written by the same rules (a regular file replaced by rename in its
  own directory, a device or FIFO written through). Someone else's symlink is refused: root
  writing through a link another user planted is how a root-owned file gets overwritten.
- a device or FIFO that belongs to someone other than the caller or root is refused too (a
  FIFO planted at FILE would otherwise block the caller and read what it writes).
- anything else (a directory, a socket), or a path that cannot be written: OutputError, exit 2.

Only FILE's last component is judged: the directories on its path are the caller's choice.
The check and the rename are not atomic, but a race can only make the new file replace what the
racer put at FILE; it never makes the caller write into something the racer chose.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile

from planner.errors import OutputError


def write_output(path: str | None, data: bytes) -> None:
    """`data` to FILE by the rules above, or to standard output for None or '-'."""
    if path is None or path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        _write(path, data)
    except OSError as err:
        raise OutputError(path, err.strerror or str(err)) from None


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


def _owner(st: os.stat_result) -> str:
    return f"uid {st.st_uid}, not the caller (uid {os.geteuid()}) or root"


def _write(path: str, data: bytes) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        _replace(path, data)
        return
    if stat.S_ISREG(st.st_mode):
        _replace(path, data)
    elif stat.S_ISLNK(st.st_mode):
        if not _trusted(st):
            raise OutputError(path, f"it is a symlink owned by {_owner(st)}: not followed (write to the file it names)")
        _through_link(path, data)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        if not _trusted(st):
            raise OutputError(path, f"it is a {_kind(st)} owned by {_owner(st)}: not written through")
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
        _write_fd(path, fd, data)
    else:
        raise OutputError(path, f"it is a {_kind(st)}")


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _through_link(path: str, data: bytes) -> None:
    """What a trusted symlink leads to, by the same rules; never a second link (O_PATH lands past them)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not real.startswith("/") or real.endswith(" (deleted)"):
                raise OutputError(path, f"the symlink leads to {real!r}, which has no path to replace")
            _replace(real, data)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            # Reopened through our own fd: the object the link led to, not whatever is there now.
            out = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            _write_fd(path, out, data)
        else:
            raise OutputError(path, f"the symlink leads to a {_kind(st)}")
    finally:
        os.close(fd)


def _write_fd(path: str, fd: int, data: bytes) -> None:
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a file since the lstat: never written in place
            raise OutputError(path, "it changed into a regular file while being opened")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _replace(path: str, data: bytes) -> None:
    """A new file, whole, renamed over `path` (which is absent or a regular file)."""
    directory, name = os.path.split(path)
    # mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW under a random name; the prefix keeps the name under NAME_MAX.
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:200]}.", suffix=".tmp", dir=directory or ".")
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
