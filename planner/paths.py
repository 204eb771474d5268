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
    if start == end:
        return out
    rest = relative(end, start).split("/")[1:]
    current = start
    for part in rest:
        current = current + "/" + part if current != "/" else "/" + part
        out.append(current)
    return out
