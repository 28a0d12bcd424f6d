"""Readers for line-oriented text: CSV/TSV, JSONL, ``label text`` lines, one-sentence-per-line
files, folders of documents, parallel text, and plain text for language models.

Each reader returns a list of examples (``examples.py``) and raises ValueError with
``path:line: why`` for anything it cannot read faithfully. Nothing is skipped or repaired silently.
The readers of the config's formats have a lazy form, ``iter_*``, that yields the same examples
as it reads a line (what ``data.streaming`` uses); ``read_*`` is the list of it, so each format
has one parser.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ._io import PathLike, iter_lines, show, short_list
from .examples import PairExample, TextExample
from .tokenize import Tokenizer

__all__ = ["read_delimited", "read_jsonl", "read_label_text", "read_lines", "read_folder",
           "read_parallel", "read_lm_text", "strip_markup", "iter_delimited", "iter_jsonl", "iter_label_text",
           "iter_parallel", "iter_lm_text"]

TokenizeFn = Callable[[str], list]
LABEL_TYPES = ("class", "float")


def _tokenizer(tokenizer: TokenizeFn | None) -> TokenizeFn:
    return tokenizer if tokenizer is not None else Tokenizer("whitespace")


def _check_label_type(label_type: str) -> None:
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}; got {label_type!r}")


def _label(value, label_type: str, where: str, column: str):
    """A raw label as the example stores it: a stripped class name or a finite float."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{where}: empty label in {column}")
    if label_type == "class":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{where}: class label in {column} must be a string or integer; got {value!r}")
        return str(value).strip()
    if isinstance(value, list):
        return [_label(v, "float", where, column) for v in value]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cannot read {column} value {value!r} as a number "
                         f"(label_type='float')") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {column} is {value!r}, not a finite number")
    return number


def _tokens(text, tokenize: TokenizeFn, where: str, column: str) -> list[str]:
    if isinstance(text, list):  # JSONL may hold pre-tokenised text
        if not all(isinstance(t, str) for t in text):
            raise ValueError(f"{where}: {column} must be a string or a list of strings")
        tokens = list(text)
    elif isinstance(text, str):
        tokens = _split(tokenize, text, where)
    else:
        raise ValueError(f"{where}: {column} must be a string or a list of strings; got {type(text).__name__}")
    if not tokens:
        raise _EmptyText(f"{where}: {column} is empty (no tokens), an example needs at least one")
    return tokens


def _split(tokenize: TokenizeFn, text: str, where: str) -> list:
    """``tokenize(text)``, its errors (a regex pattern that took too long) prefixed with ``where``."""
    try:
        return tokenize(text)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


class _EmptyText(ValueError):
    """An example with no tokens; readers with ``skip_empty`` catch it, the rest let it raise."""


def _skipping(skip_empty: bool, path: PathLike):
    """Collect skipped empty texts and report them in one warning (never silently)."""
    skipped: list[str] = []

    def guard(make):
        try:
            return make()
        except _EmptyText as e:
            if not skip_empty:
                raise ValueError(f"{e} (pass skip_empty=True to skip such examples, with a warning)") from None
            skipped.append(str(e).split(": ", 1)[0])
            return None

    def report():
        if skipped:
            lines = short_list([w.rsplit(":", 1)[-1] for w in skipped], limit=10)
            warnings.warn(f"{path}: skipped {len(skipped)} example(s) with empty text "
                          f"(skip_empty=True), at line(s) {lines}", stacklevel=3)
    return guard, report


def _not_empty(examples: list, path: PathLike) -> list:
    if not examples:
        raise ValueError(f"{path}: no examples found")
    return examples


def _none_empty(examples: Iterator, path: PathLike, what: str = "examples") -> Iterator:
    """``examples`` as they come; an error at the end if there were none."""
    found = False
    for example in examples:
        found = True
        yield example
    if not found:
        raise ValueError(f"{path}: no {what} found")


# ------------------------------------------------------------------------------ CSV / TSV

def read_delimited(path: PathLike, **options) -> list[TextExample]:
    """Read a CSV or TSV file whole: ``list(iter_delimited(path, **options))``."""
    return list(iter_delimited(path, **options))


def iter_delimited(path: PathLike, *, text_column: str | int = "text",
                   label_column: str | int | None = "label", delimiter: str | None = None,
                   header: bool = True, quoting: bool | None = None, label_type: str = "class",
                   tokenizer: TokenizeFn | None = None, skip_empty: bool = False,
                   encoding: str = "utf-8") -> Iterator[TextExample]:
    """Read a CSV or TSV file with a text column and an optional label column, lazily.

    Args:
        text_column, label_column: column names (with ``header=True``) or 0-based indices.
            ``label_column=None`` reads unlabelled text (``label`` None).
        delimiter: ``","`` or ``"\\t"``...; None infers it from the suffix (.csv, .tsv).
        header: the first row names the columns.
        quoting: honour ``"``-quoted fields. None means yes for CSV, no for TSV: GLUE-style TSV
            files are unquoted and contain bare ``"`` inside text (ChnSentiCorp), which a quoting
            parser would silently merge across lines.
        label_type: ``"class"`` (label kept as a string) or ``"float"`` (regression target).
        tokenizer: str -> list[str]; default whitespace.
        skip_empty: skip rows whose text has no tokens (reported in one warning); by default
            they are an error (ChnSentiCorp_htl_all.csv has one, at line 6376).

    Yields ``TextExample(tokens, label, where)``.
    """
    _check_label_type(label_type)
    path = Path(path)
    if delimiter is None:
        delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
        if delimiter is None:
            raise ValueError(f"{path}: cannot infer the delimiter from suffix {path.suffix!r}; "
                             f"pass delimiter=',' or delimiter='\\t'")
    if quoting is None:
        quoting = delimiter != "\t"
    sep_name = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
    tokenize = _tokenizer(tokenizer)

    # lines with their ends, as csv wants them (a quoted field may hold a line break)
    lines = (line for _, line in iter_lines(path, encoding, keep_ends=True))
    reader = csv.reader(lines, delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE, strict=True)
    rows = _csv_rows(reader, path)
    first_line, first = next(rows, (1, None))
    if first is None:
        raise ValueError(f"{path}: no rows")
    if header:
        names = [n.strip() for n in first]
        text_i = _column_index(text_column, names, path, "text_column")
        label_i = None if label_column is None else _column_index(label_column, names, path, "label_column")
        width = len(names)
    else:
        rows = _chain([(first_line, first)], rows)
        width = len(first)
        names = [f"column {i}" for i in range(width)]
        for arg, col in (("text_column", text_column), ("label_column", label_column)):
            if col is not None and not (isinstance(col, int) and -width <= col < width):
                raise ValueError(f"{path}: with header=False, {arg} must be a column index in "
                                 f"[0, {width}); got {col!r}")
        text_i, label_i = text_column, label_column

    guard, report = _skipping(skip_empty, path)
    found = False
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != width:
            raise ValueError(f"{where}: expected {width} {sep_name}-separated columns, got {len(row)}: "
                             f"{show(delimiter.join(row))}")
        tokens = guard(lambda: _tokens(row[text_i], tokenize, where, f"column {names[text_i]!r}"))
        if tokens is None:
            continue
        label = None if label_i is None else _label(row[label_i], label_type, where,
                                                    f"column {names[label_i]!r}")
        found = True
        yield TextExample(tokens, label, where)
    report()
    if not found:
        raise ValueError(f"{path}: no examples found")


def _csv_rows(reader, path):
    """Yield ``(first line of the record, row)``; a quoted field may span several lines."""
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if row:  # the csv module returns [] for a blank line
                yield start, row
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None


def _chain(head, tail):
    yield from head
    yield from tail


def _column_index(column, names: list[str], path, arg: str) -> int:
    if isinstance(column, int) and not isinstance(column, bool):
        if not -len(names) <= column < len(names):
            raise ValueError(f"{path}:1: {arg}={column} is out of range for {len(names)} columns")
        return column
    if column not in names:
        raise ValueError(f"{path}:1: no column {column!r} in the header; columns are: {short_list(names)}")
    return names.index(column)


# ------------------------------------------------------------------------------ JSONL

def read_jsonl(path: PathLike, **options) -> list[TextExample]:
    """Read a JSONL file whole: ``list(iter_jsonl(path, **options))``."""
    return list(iter_jsonl(path, **options))


def iter_jsonl(path: PathLike, *, text_field: str = "text", label_field: str | None = "label",
               label_type: str = "class", tokenizer: TokenizeFn | None = None,
               skip_empty: bool = False, encoding: str = "utf-8") -> Iterator[TextExample]:
    """Read one JSON object per line, lazily. ``text_field`` holds a string (tokenised) or a list of
    tokens; ``label_field`` a class name/int or a number (``label_type="float"``), or None for
    unlabelled input. Blank lines are allowed (many writers end with one). ``skip_empty`` as in
    ``read_delimited``."""
    _check_label_type(label_type)
    tokenize = _tokenizer(tokenizer)
    guard, report = _skipping(skip_empty, path)
    found = False
    for line_no, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno}): {show(line)}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for name in (text_field, label_field):
            if name is not None and name not in record:
                raise ValueError(f"{where}: missing field {name!r}; fields are: {short_list(record)}")
        tokens = guard(lambda: _tokens(record[text_field], tokenize, where, f"field {text_field!r}"))
        if tokens is None:
            continue
        label = None if label_field is None else _label(record[label_field], label_type, where,
                                                        f"field {label_field!r}")
        found = True
        yield TextExample(tokens, label, where)
    report()
    if not found:
        raise ValueError(f"{path}: no examples found")


# ------------------------------------------------------------------------------ line files

def read_label_text(path: PathLike, **options) -> list[TextExample]:
    """Read a ``label text`` file whole: ``list(iter_label_text(path, **options))``."""
    return list(iter_label_text(path, **options))


def iter_label_text(path: PathLike, *, label_type: str = "class", tokenizer: TokenizeFn | None = None,
                    encoding: str = "utf-8") -> Iterator[TextExample]:
    """Read ``label<space>text`` lines (SST-2 sentence level: ``1 a stirring , funny ...``) lazily."""
    _check_label_type(label_type)
    tokenize = _tokenizer(tokenizer)

    def examples():
        for line_no, line in iter_lines(path, encoding):
            where = f"{path}:{line_no}"
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{where}: expected 'label text', got {show(line)}")
            label = _label(parts[0], label_type, where, "the label (first field)")
            yield TextExample(_tokens(parts[1], tokenize, where, "the text"), label, where)
    return _none_empty(examples(), path)


def read_lines(path: PathLike, *, label: str | float | None = None, tokenizer: TokenizeFn | None = None,
               encoding: str = "utf-8") -> list[TextExample]:
    """One example per line, all with the same ``label`` (MR's ``rt-polarity.pos`` / ``.neg``;
    sentences for a sentence-level language model with ``label=None``). A blank line is an error."""
    tokenize = _tokenizer(tokenizer)
    examples = [TextExample(_tokens(line, tokenize, f"{path}:{n}", "the line"), label, f"{path}:{n}")
                for n, line in iter_lines(path, encoding)]
    return _not_empty(examples, path)


_MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,200}>")


def strip_markup(text: str) -> str:
    """HTML tags (the ``<br />`` of IMDB reviews) become spaces and entities (``&amp;``) their
    characters, so that neither turns into words."""
    return html.unescape(_MARKUP.sub(" ", text))


def read_folder(root: PathLike, *, labels: Sequence[str] | None = None, pattern: str = "*.txt",
                tokenizer: TokenizeFn | None = None, markup: bool = False,
                encoding: str = "utf-8") -> list[TextExample]:
    """One example per file, labelled by its folder: ``root/<label>/*.txt`` (the aclImdb layout).

    ``labels``: the label folders to read (others, such as aclImdb's ``unsup/``, are left
    alone); each must exist and hold a matching file. None reads every sub-folder.
    ``markup``: strip HTML tags and entities (``strip_markup``). Files are read in sorted
    order; a file's lines are joined with spaces."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (a folder of label folders: ROOT/<label>/{pattern})")
    tokenize = _tokenizer(tokenizer)
    if labels is None:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    else:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels {list(labels)} name a folder twice")
        folders = [root / label for label in labels]
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        for folder in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no folder for label {folder.name!r} "
                                        f"(folders in {root}: {short_list(present) or 'none'})")
    examples = []
    for label_dir in folders:
        files = sorted(label_dir.glob(pattern))
        if labels is not None and not files:
            raise ValueError(f"{label_dir}: no files matching {pattern!r} for label {label_dir.name!r}")
        for file in files:
            text = " ".join(line for _, line in iter_lines(file, encoding))
            if markup:
                text = strip_markup(text)
            examples.append(TextExample(_tokens(text, tokenize, f"{file}:1", "the file"),
                                        label_dir.name, f"{file}:1"))
    if not examples:
        raise ValueError(f"{root}: no files matching {pattern!r} in its label folders")
    return examples


# ------------------------------------------------------------------------------ parallel text

def read_parallel(path: PathLike, **options) -> list[PairExample]:
    """Read parallel text whole: ``list(iter_parallel(path, **options))``."""
    return list(iter_parallel(path, **options))


def iter_parallel(path: PathLike, *, source_column: int = 0, target_column: int = 1,
                  num_columns: int | None = None, tokenizer: TokenizeFn | None = None,
                  source_tokenizer: TokenizeFn | None = None,
                  target_tokenizer: TokenizeFn | None = None,
                  encoding: str = "utf-8") -> Iterator[PairExample]:
    """Read ``source<TAB>target`` lines lazily (the fra-eng format: ``english<TAB>french[<TAB>attribution]``).

    ``source_column`` / ``target_column`` pick the direction (swap them to translate the other
    way). ``num_columns`` fixes the exact column count; by default a line needs at least enough
    columns for both sides and any further columns (attribution) are ignored.
    ``tokenizer`` applies to both sides unless ``source_tokenizer`` / ``target_tokenizer`` is given.
    """
    need = max(source_column, target_column) + 1
    if min(source_column, target_column) < 0 or source_column == target_column:
        raise ValueError(f"source_column and target_column must be distinct indices >= 0; "
                         f"got {source_column}, {target_column}")
    tokenize_src = source_tokenizer or _tokenizer(tokenizer)
    tokenize_tgt = target_tokenizer or _tokenizer(tokenizer)

    def examples():
        for line_no, line in iter_lines(path, encoding):
            where = f"{path}:{line_no}"
            fields = line.split("\t")
            if (num_columns is not None and len(fields) != num_columns) or len(fields) < need:
                expected = num_columns if num_columns is not None else f"at least {need}"
                raise ValueError(f"{where}: expected {expected} tab-separated columns, got {len(fields)}: "
                                 f"{show(line)}")
            source = _tokens(fields[source_column], tokenize_src, where, f"source column {source_column}")
            target = _tokens(fields[target_column], tokenize_tgt, where, f"target column {target_column}")
            yield PairExample(source, target, where)
    return _none_empty(examples(), path)


# ------------------------------------------------------------------------------ language models

def read_lm_text(path: PathLike, **options) -> list[str]:
    """Read plain text whole as one token stream: the lines of ``iter_lm_text(path, **options)``
    joined."""
    return [token for line in iter_lm_text(path, **options) for token in line]


def iter_lm_text(path: PathLike, *, tokenizer: TokenizeFn | None = None, eos: str | None = "<eos>",
                 skip_blank: bool = True, encoding: str = "utf-8",
                 start: tuple[int, int] | None = None) -> Iterator[list[str]]:
    """Read plain text lazily for a language model: the tokens each line adds to the one token
    stream (an empty list adds nothing), one list per line. ``start=(byte offset, line number)``
    begins at that line (``iter_lines``), for reading a stream from several places at once.

    Each line is tokenised (default: whitespace words; ``Tokenizer("char")`` for characters) and
    followed by ``eos`` (PTB convention). For a character model that should predict line breaks
    pass ``eos="\\n"``; ``eos=None`` joins lines with nothing. Blank lines are paragraph breaks:
    with ``skip_blank=True`` they add nothing, otherwise they add one ``eos``.
    """
    tokenize = _tokenizer(tokenizer)
    found = start is not None  # a tail may hold no tokens
    for line_no, line in iter_lines(path, encoding, start=start):
        if not line.strip():
            tokens = [eos] if not skip_blank and eos is not None else []
        else:
            tokens = _split(tokenize, line, f"{path}:{line_no}") + ([eos] if eos is not None else [])
        found = found or bool(tokens)
        yield tokens
    if not found:
        raise ValueError(f"{path}: no tokens found")
