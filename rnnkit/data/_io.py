"""Reading text files so that every later error can say ``path:line: why``.

Files are decoded in one go (the largest data set here is 14 MB) because a decode error then
carries the exact byte offset, from which the 1-based line number follows. Lines are split on
``\\n`` only, never with ``str.splitlines``: that also breaks at U+0085 (NEL), which is an ordinary
character in Latin-1 files such as MR's ``rt-polarity.*``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PathLike = str | os.PathLike


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """Return the decoded contents of ``path``; raise ValueError if it is empty or undecodable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if not data:
        raise ValueError(f"{path}: file is empty (0 bytes)")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: cannot decode byte 0x{data[e.start]:02x} at byte offset {e.start} "
            f"(column {column}) as {encoding}: {e.reason}; if the file uses another encoding, "
            f"pass encoding=..., e.g. encoding='latin-1'") from None
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the first field
        text = text[1:]
    if not text.strip():
        raise ValueError(f"{path}: file contains only whitespace")
    return text


def iter_lines(path: PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with 1-based numbers, without the line terminator."""
    text = read_text(path, encoding)
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline does not start another line
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith("\r") else line


def show(line: str, limit: int = 80) -> str:
    """A line as it appears in error messages: repr'd (tabs visible) and cut to ``limit``."""
    return repr(line) if len(line) <= limit else repr(line[:limit]) + "..."


def short_list(items, limit: int = 20) -> str:
    """``a, b, c`` or ``a, b, ... (57 in all)`` for error messages."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
