"""CoNLL column files (CoNLL-2003 NER, MSRA ``char<TAB>tag``) and CoNLL-U (Universal Dependencies).

``iter_conll`` / ``iter_conllu`` yield ``TaggedExample(tokens, tags, where)`` per sentence as
they read (what ``data.streaming`` uses); ``read_conll`` / ``read_conllu`` are the lists of the
same. ``where`` is the sentence's first line. Sentences end at blank lines; every malformed line
is an error naming ``path:line``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ._io import PathLike, iter_lines, show
from .examples import TaggedExample

__all__ = ["read_conll", "read_conllu", "iter_conll", "iter_conllu", "CONLLU_TAGS"]


def read_conll(path: PathLike, **options) -> list[TaggedExample]:
    """Read a CoNLL column file whole: ``list(iter_conll(path, **options))``."""
    return list(iter_conll(path, **options))


def iter_conll(path: PathLike, *, token_column: int = 0, tag_column: int | None = -1,
               num_columns: int | None = None, separator: str | None = None,
               docstart: str | None = "-DOCSTART-", encoding: str = "utf-8") -> Iterator[TaggedExample]:
    """Read a CoNLL column file lazily, one sentence at a time: one token per line, columns
    separated, a blank line between sentences.

    Args:
        token_column, tag_column: 0-based (negative counts from the end) column of the token and
            the tag; ``tag_column=None`` reads unlabelled tokens (``tags`` None).
        num_columns: the exact number of columns on every token line; None takes it from the
            first token line (so a later line with a different count is still an error).
        separator: ``"\\t"``, ``" "``...; None means a tab if the first token line has one,
            otherwise runs of spaces (CoNLL-2003 uses single spaces, MSRA tabs).
        docstart: a token that marks a document boundary (``-DOCSTART- -X- -X- O``); such lines
            end the current sentence and are not tokens. None treats them as ordinary lines.

    Yields one ``TaggedExample`` per sentence; a file without any is an error (raised once it is
    read to its end).
    """
    tokens: list[str] = []
    tags: list[str] = []
    start, found = 0, False

    def flush():
        sentence = None
        if tokens:
            sentence = TaggedExample(list(tokens), list(tags) if tag_column is not None else None,
                                     f"{path}:{start}")
        tokens.clear()
        tags.clear()
        return sentence

    for line_no, line in iter_lines(path, encoding):
        if not line.strip():
            if (sentence := flush()) is not None:
                found = True
                yield sentence
            continue
        if separator is None:
            separator = "\t" if "\t" in line else " "
        # split(None) collapses runs of spaces; a tab-separated file keeps empty fields visible.
        fields = line.split("\t") if separator == "\t" else line.split(None if separator == " " else separator)
        if docstart is not None and fields[0] == docstart:
            if (sentence := flush()) is not None:
                found = True
                yield sentence
            continue
        if num_columns is None:
            num_columns = len(fields)
            for name, col in (("token_column", token_column), ("tag_column", tag_column)):
                if col is not None and not -num_columns <= col < num_columns:
                    raise ValueError(f"{path}:{line_no}: {name}={col} is out of range: the line has "
                                     f"{num_columns} column(s): {show(line)}")
            if tag_column is not None and num_columns < 2:
                raise ValueError(f"{path}:{line_no}: expected a token and a tag column, got 1 column: "
                                 f"{show(line)} (pass tag_column=None for unlabelled tokens)")
        sep_name = "tab" if separator == "\t" else "space" if separator == " " else repr(separator)
        if len(fields) != num_columns:
            raise ValueError(f"{path}:{line_no}: expected {num_columns} {sep_name}-separated columns, "
                             f"got {len(fields)}: {show(line)}")
        # split(None) never gives an empty field; a tab or another separator can
        if separator != " " and any(not f.strip() for f in fields):
            raise ValueError(f"{path}:{line_no}: empty column in {show(line)}")
        if not tokens:
            start = line_no
        tokens.append(fields[token_column])
        if tag_column is not None:
            tags.append(fields[tag_column])
    if (sentence := flush()) is not None:
        found = True
        yield sentence
    if not found:
        raise ValueError(f"{path}: no sentences found")


# ------------------------------------------------------------------------------ CoNLL-U

CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
CONLLU_TAGS = {"upos": 3, "xpos": 4, "deprel": 7}

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.([1-9][0-9]*)")


def read_conllu(path: PathLike, **options) -> list[TaggedExample]:
    """Read a CoNLL-U file whole: ``list(iter_conllu(path, **options))``."""
    return list(iter_conllu(path, **options))


def iter_conllu(path: PathLike, *, tag: str | None = "upos", lowercase: bool = False,
                encoding: str = "utf-8") -> Iterator[TaggedExample]:
    """Read a CoNLL-U file (10 tab-separated columns) lazily, one sentence at a time, as tagged
    syntactic words.

    Args:
        tag: which column is the tag: ``"upos"``, ``"xpos"`` or ``"deprel"``; None for no tags.
        lowercase: lowercase the word forms.

    Syntactic words (integer IDs) become tokens. Multi-word token lines (``1-2  didn't``) give
    the surface form only; the words they cover follow as their own lines and are what is
    tagged, so the range line is checked (it must cover the next IDs) and then not used. Empty
    nodes (``8.1``, enhanced dependencies) are not words of the sentence and are checked and not
    used either. Comments (``# text = ...``) are ignored. IDs must run 1, 2, 3... in each sentence.
    """
    if tag is not None and tag not in CONLLU_TAGS:
        raise ValueError(f"tag must be one of {', '.join(CONLLU_TAGS)} or None; got {tag!r}")
    tag_i = CONLLU_TAGS.get(tag)
    words: list[str] = []
    tags: list[str] = []
    state = {"start": 0, "range_end": 0, "range_line": 0, "found": False}  # start = first data line

    def flush():
        if state["range_end"] > len(words):
            raise ValueError(f"{path}:{state['range_line']}: sentence ends at word {len(words)} inside "
                             f"a multi-word token that covers words up to {state['range_end']}")
        if state["start"] and not words:
            raise ValueError(f"{path}:{state['start']}: sentence has no words (only empty nodes)")
        sentence = None
        if words:
            sentence = TaggedExample(list(words), list(tags) if tag is not None else None,
                                     f"{path}:{state['start']}")
            state["found"] = True
        words.clear()
        tags.clear()
        state.update(start=0, range_end=0)
        return sentence

    for line_no, line in iter_lines(path, encoding):
        where = f"{path}:{line_no}"
        if not line.strip():
            if (sentence := flush()) is not None:
                yield sentence
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ValueError(f"{where}: expected 10 tab-separated columns (CoNLL-U), got {len(fields)}: "
                             f"{show(line)}")
        id_ = fields[0]
        if not state["start"]:
            state["start"] = line_no
        if _WORD_ID.fullmatch(id_):
            if int(id_) != len(words) + 1:
                raise ValueError(f"{where}: expected word ID {len(words) + 1}, got {id_}: {show(line)}")
            if not fields[1]:
                raise ValueError(f"{where}: empty FORM: {show(line)}")
            words.append(fields[1].lower() if lowercase else fields[1])
            if tag_i is not None:
                value = fields[tag_i]
                if value in ("", "_"):
                    raise ValueError(f"{where}: {CONLLU_COLUMNS[tag_i]} is {value!r} (not annotated) "
                                     f"for word {id_}; choose another tag= column: {show(line)}")
                tags.append(value)
        elif m := _RANGE_ID.fullmatch(id_):
            first, last = int(m.group(1)), int(m.group(2))
            if first != len(words) + 1 or last <= first:
                raise ValueError(f"{where}: multi-word token range {id_} must start at the next word "
                                 f"ID {len(words) + 1} and end after it: {show(line)}")
            state["range_end"], state["range_line"] = last, line_no
        elif m := _EMPTY_ID.fullmatch(id_):
            if int(m.group(1)) != len(words):
                raise ValueError(f"{where}: empty node {id_} must follow word {m.group(1)}; the last "
                                 f"word is {len(words)}: {show(line)}")
        else:
            raise ValueError(f"{where}: ID {id_!r} is not a word ID (3), a range (3-4) or an empty "
                             f"node (3.1): {show(line)}")
    if (sentence := flush()) is not None:
        yield sentence
    if not state["found"]:
        raise ValueError(f"{path}: no sentences found")
