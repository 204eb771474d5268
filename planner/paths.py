"""Absolute path helpers over strings: component-wise prefixes, never the filesystem."""

from __future__ import annotations


def is_clean(path: str) -> bool:
    """Absolute, no '.', '..' or empty components, no trailing slash (except '/')."""
    if not path.startswith("/"):
        return False
    if path == "/":
        return True
    # Substring tests, not a split: the executor checks every step's paths with this.
    return not ("//" in path or "/./" in path or "/../" in path or path.endswith(("/", "/.", "/..")))


PATH_MAX = 4096  # bytes, with the terminating NUL (include/uapi/linux/limits.h)
NAME_MAX = 255  # bytes per component


def unusable(path: str) -> str | None:
    """Why no syscall could take `path` as given, or None.

    A str path stands for bytes: UTF-8, with undecodable bytes carried as the surrogates
    U+DC80..U+DCFF (surrogateescape, as os.fsencode reads them). Any other lone surrogate
    (JSON's "\\ud800") stands for no byte at all. Past PATH_MAX or NAME_MAX the kernel says
    ENAMETOOLONG; a NUL would end the C string early.
    """
    if len(path) <= NAME_MAX and path.isascii() and "\0" not in path:
        return None  # the common case, without encoding (mountinfo parsing checks every mount point)
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate {path[err.start]!r} that stands for no byte"
    if b"\0" in raw:
        return "holds a NUL byte"
    if len(raw) >= PATH_MAX:
        return f"is {len(raw)} bytes long, over PATH_MAX ({PATH_MAX} with its NUL)"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"has a {len(longest)}-byte component, over NAME_MAX ({NAME_MAX})"
    return None


def from_root(path: str) -> str:
    """A clean absolute path as the *at() calls take it from a root directory fd."""
    return path.lstrip("/") or "."


def is_under(path: str, top: str) -> bool:
    """True when `top` is `path` or one of its ancestors, component-wise."""
    return top == "/" or path == top or path.startswith(top + "/")


def relative(path: str, top: str) -> str:
    """`path` inside `top`, as '' or '/a/b'; `path` must be under `top`."""
    return "" if path == top else path[len(top) :] if top != "/" else path


def join(top: str, rel: str) -> str:
    if not rel:
        return top
    return rel if top == "/" else top + rel


def prefixes(path: str, start: str, end: str) -> list[str]:
    """The prefixes of `path` from `start` to `end` inclusive (start under end under path)."""
    out = [start]
    if start != end:
        at = 0 if start == "/" else len(start)
        while (at := end.find("/", at + 1)) > 0:
            out.append(end[:at])
        out.append(end)
    return out


def components(path: str) -> list[str]:
    """The names of a path, root first ('/' has none)."""
    return [p for p in path.split("/") if p]


def depth_of(path: str) -> int:
    """How many names deep a clean absolute path is ('/' is 0)."""
    return 0 if path == "/" else path.count("/")


def inside(path: str, top: str) -> str | None:
    """`path` inside `top` as *at() calls take it from top's fd: '' when equal, 'a/b' below; None
    when not under it."""
    return relative(path, top).lstrip("/") if is_under(path, top) else None
