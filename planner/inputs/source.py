"""A dump's source as bytes, text and JSON: the size limit, UTF-8, the one JSON loader, and the line
numbers that errors name. Every input format reads through here (pure but for reading the file)."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, BinaryIO

from planner import limits
from planner.errors import DumpError


def short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def read_limited(handle: BinaryIO, source: str) -> bytes:
    """At most limits.INPUT_BYTES of a stream; DumpError past it (without reading the rest)."""
    limit = limits.INPUT_BYTES.value
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise DumpError(source, None, limits.INPUT_BYTES.refusal("more bytes"))
    return data


def read_input(path: str) -> tuple[str, bytes]:
    """(name for messages, bytes) of a file, or of standard input for '-'; no more than the limit."""
    if path == "-":
        return "<stdin>", read_limited(sys.stdin.buffer, "<stdin>")
    try:
        with open(path, "rb") as handle:
            return path, read_limited(handle, path)
    except OSError as err:
        raise DumpError(path, None, f"cannot read: {err.strerror}") from None


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DumpError(source, data.count(b"\n", 0, err.start) + 1, "not valid UTF-8") from None


def load_json(text: str, source: str) -> object:
    """The one JSON loader: a syntax error names its line, and what json cannot hold (numbers past
    int()'s digit limit, nesting past the recursion limit) is a DumpError too, never a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DumpError(source, err.lineno, f"not valid JSON: {err.msg}") from None
    except (ValueError, RecursionError) as err:
        raise DumpError(source, None, f"not usable JSON: {short(str(err))}") from None


class Source:
    """What DUMP names: a directory, or a file's (or standard input's) bytes, read once.

    `text` and `json_object` are worked out when first asked for, so that a format that only looks
    at the bytes (or at the path) does not pay for decoding; once decoded the bytes are dropped
    (no second copy while a big table is parsed)."""

    def __init__(self, path: str, name: str, data: bytes = b"", is_dir: bool = False) -> None:
        self.path = path  # as given: '-' for standard input
        self.name = name  # for messages
        self.data = data
        self.is_dir = is_dir
        self._text: str | None = None
        self._json: dict[str, Any] | None = None

    @classmethod
    def open(cls, path: str) -> Source:
        if path != "-" and os.path.isdir(path):
            return cls(path, path, is_dir=True)
        name, data = read_input(path)
        return cls(path, name, data)

    @property
    def stdin(self) -> bool:
        return self.path == "-"

    @property
    def text(self) -> str:
        if self._text is None:
            text = decode(self.data, self.name)
            self.data = b""
            if "\0" in text:
                raise DumpError(self.name, line_of(text, "\0"), "NUL byte in input")
            self._text = text
        return self._text

    def looks_like_json(self) -> bool:
        return self.text.lstrip().startswith("{")

    def json_object(self) -> dict[str, Any]:
        """The text as one JSON object (DumpError when it is not JSON, or not an object)."""
        if self._json is None:
            raw = load_json(self.text, self.name)
            if not isinstance(raw, dict):
                raise DumpError(self.name, 1, "expected a JSON object")
            self._json = raw
        return self._json


def line_of(text: str, needle: str, nth: int = 0) -> int | None:
    """The line of the nth occurrence of `needle` in `text`, or None."""
    at = -1
    for _ in range(nth + 1):
        at = text.find(needle, at + 1)
        if at < 0:
            return None
    return text.count("\n", 0, at) + 1


def key_line(text: str, key: str) -> int | None:
    """The line where a top-level key is set: `"key":` in JSON, `key =` or `[[key]]` in TOML."""
    found = re.search(rf'(?m)"{key}"\s*:|^\s*{key}\s*=|^\s*\[\[{key}\]\]', text)
    return None if found is None else text.count("\n", 0, found.start()) + 1


class LineCounter:
    """Line numbers of offsets into one text, asked in increasing order: each newline is counted
    once (counting from the start for every element made a 40,000-step plan take 93 s)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.line = 1

    def line_of(self, offset: int) -> int:
        if offset < self.at:  # asked out of order: count again from the start
            self.at, self.line = 0, 1
        self.line += self.text.count("\n", self.at, offset)
        self.at = offset
        return self.line


def json_element_lines(text: str, key: str, named_by: str | None = "id") -> list[int]:
    """The line of each element of the array under `"key":` (empty when not found): where the
    element starts, or for an object the line of its `named_by` key, the line people look for.

    The elements are read by the JSON decoder itself (in C) and each newline is counted once."""
    found = re.search(rf'"{key}"\s*:\s*\[', text)
    if found is None:
        return []
    decoder = json.JSONDecoder()
    lines: list[int] = []
    counter = LineCounter(text)
    at = found.end()
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return lines
        try:
            _, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return lines
        named = text.find(f'"{named_by}"', at, end) if named_by is not None and text[at] == "{" else -1
        lines.append(counter.line_of(named if named >= 0 else at))
        at = end
