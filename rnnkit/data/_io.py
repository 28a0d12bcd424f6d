"""Reading text files so that every later error can say ``path:line: why``.

Lines are split on ``\n`` only, never with ``str.splitlines``: that also breaks at U+0085 (NEL),
which is an ordinary character in Latin-1 files such as MR's ``rt-polarity.*``. A decode error
names the line, the byte offset in the file and the ``encoding=`` option. Every reader opens
its file through ``open_bytes``, so a folder or an unreadable path is one clear error for all.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

PathLike = str | os.PathLike


def open_bytes(path: PathLike):
    """``open(path, "rb")``, with the errors a person can act on: FileNotFoundError for a missing
    path, ValueError for a folder or a file that cannot be read (permissions...)."""
    # Checked before opening: on Linux open() raises IsADirectoryError, on Windows PermissionError.
    if Path(path).is_dir():
        raise ValueError(f"{path}: is a folder; give a file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """Return the decoded contents of ``path``; raise ValueError if it is empty or undecodable."""
    path = Path(path)
    with open_bytes(path) as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path}: file is empty (0 bytes)")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        line = data[start: end if end >= 0 else len(data)]
        shifted = UnicodeDecodeError(e.encoding, line, e.start - start, e.end - start, e.reason)
        raise _decode_error(path, data.count(b"\n", 0, e.start) + 1, start, line, shifted,
                            encoding) from None
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the first field
        text = text[1:]
    if not text.strip():
        raise ValueError(f"{path}: file contains only whitespace")
    return text


def iter_lines(path: PathLike, encoding: str = "utf-8", *, keep_ends: bool = False,
               start: tuple[int, int] | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with 1-based numbers, without the line terminator
    (``keep_ends=True``: with it, as the csv module wants its lines). ``start=(offset, number)``
    begins at the line that starts at byte ``offset`` (``line_offsets``), numbered ``number``.

    Streams the file (a 5 GB GloVe file is never held in memory): bytes are split at ``\n``
    and each line is decoded on its own, which is exact for UTF-8 and for single- and multi-byte
    encodings whose trail bytes never equal 0x0A (Latin-1, cp1252, GBK, Shift-JIS...). UTF-16/32
    files are decoded whole instead.
    """
    path = Path(path)
    with open_bytes(path) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path}: file is empty (0 bytes)")
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
        if codec.startswith(("utf-16", "utf-32")):
            if start is not None:
                raise ValueError(f"{path}: a {encoding} file cannot be read from a line midway; "
                                 "convert it to UTF-8 (e.g. iconv -f utf-16 -t utf-8)")
            lines = read_text(path, encoding).split("\n")
            last = lines.pop() if lines[-1] == "" else None
            for number, line in enumerate(lines, start=1):
                if keep_ends:
                    yield number, line + ("\n" if number < len(lines) or last is not None else "")
                else:
                    yield number, line[:-1] if line.endswith("\r") else line
            return
        content = start is not None  # a file's tail may be blank
        if start is not None:
            f.seek(start[0])
        for number, line in _file_lines(f, path, encoding, keep_ends, *(start or (0, 1))):
            content = content or bool(line.strip())
            yield number, line
    if not content:
        raise ValueError(f"{path}: file contains only whitespace")


ENCODING_HINT = "if the file uses another encoding, pass encoding=..., e.g. encoding='latin-1'"


def decode_lines(stream: Iterable[bytes], name, encoding: str = "utf-8",
                 hint: str = ENCODING_HINT, *, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of a binary stream (an open file, ``sys.stdin.buffer``), decoded
    as ``iter_lines`` does: a leading byte-order mark dropped, ``\n`` / ``\r\n`` removed (kept
    with ``keep_ends``), and undecodable bytes an error naming ``name:line``, ending with
    ``hint``. Empty input yields nothing. Not for UTF-16/32, whose bytes cannot be split at ``\n``."""
    return _decoded(stream, name, encoding, hint, keep_ends)


def _decoded(stream: Iterable[bytes], name, encoding: str, hint: str, keep_ends: bool, first: int = 1,
             offset: int = 0) -> Iterator[tuple[int, str]]:
    """``decode_lines``, numbering from line ``first`` at byte ``offset``."""
    for number, raw in enumerate(stream, start=first):
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as e:
            raise _decode_error(name, number, offset, raw, e, encoding, hint) from None
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        offset += len(raw)
        if not keep_ends:
            line = line[:-1] if line.endswith("\n") else line
            line = line[:-1] if line.endswith("\r") else line
        yield number, line


_BLOCK = 1 << 16  # bytes of lines decoded at once by iter_lines


def _file_lines(f, path, encoding: str, keep_ends: bool, offset: int = 0,
                first: int = 1) -> Iterator[tuple[int, str]]:
    """``decode_lines`` of a file, decoding blocks of ~64 KB of whole lines at once (a
    per-line ``decode`` costs more than the parsing of a CoNLL line). A block that does not
    decode, or whose text does not split into its lines again, is decoded line by line, which
    names the line of the error. Numbers lines from ``first``, at byte ``offset``."""
    number = first - 1
    while raws := f.readlines(_BLOCK):
        data = b"".join(raws)
        try:
            lines = data.decode(encoding).split("\n")
        except UnicodeDecodeError:
            lines = None
        if lines is not None and lines[-1] == "":
            lines.pop()
        if lines is None or len(lines) != len(raws):
            yield from _decoded(raws, path, encoding, ENCODING_HINT, keep_ends, number + 1, offset)
        else:
            if number == 0 and lines and lines[0].startswith("\ufeff"):
                lines[0] = lines[0][1:]
            last = len(lines) - 1
            for i, line in enumerate(lines):
                if keep_ends:
                    yield number + i + 1, line + "\n" if i < last or raws[-1].endswith(b"\n") else line
                else:
                    yield number + i + 1, line[:-1] if line.endswith("\r") else line
        number += len(raws)
        offset += len(data)


def line_offsets(path: PathLike, every: int) -> list[int]:
    """Byte offsets of lines 1, 1 + every, 1 + 2 * every, ... of a file (``\n``-separated):
    where ``iter_lines(start=...)`` can begin. A scan of the bytes, without decoding."""
    offsets, number, offset = [], 0, 0
    with open_bytes(path) as f:
        for raw in f:
            if number % every == 0:
                offsets.append(offset)
            number += 1
            offset += len(raw)
    return offsets


def _decode_error(path, line: int, line_offset: int, raw: bytes, e: UnicodeDecodeError,
                  encoding: str, hint: str = ENCODING_HINT) -> ValueError:
    return ValueError(
        f"{path}:{line}: cannot decode byte 0x{raw[e.start]:02x} at byte offset {line_offset + e.start} "
        f"(column {e.start + 1}) as {encoding}: {e.reason}; {hint}")


def show(line: str, limit: int = 80) -> str:
    """A line as it appears in error messages: repr'd (tabs visible) and cut to ``limit``."""
    return repr(line) if len(line) <= limit else repr(line[:limit]) + "..."


def short_list(items, limit: int = 20) -> str:
    """``a, b, c`` or ``a, b, ... (57 in all)`` for error messages."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"


def iter_manifest(manifest: PathLike, encoding: str = "utf-8") -> Iterator[tuple[str, dict, Path]]:
    """(where, object, path) per non-blank line of a JSONL manifest whose every line names a file
    by ``"path"`` (relative to the manifest's folder); a line that is not such an object is an
    error naming ``manifest:line``."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ValueError(f"{manifest}: no such manifest file")
    for n, line in iter_lines(manifest, encoding):
        if not line.strip():
            continue
        where = f"{manifest}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
            raise ValueError(f'{where}: a manifest line is a JSON object with "path" (a string); '
                             f"got {line.strip()[:80]!r}")
        yield where, obj, manifest.parent / obj["path"]
