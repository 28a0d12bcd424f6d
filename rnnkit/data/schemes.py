"""Span tagging schemes: which one a file uses, and the same spans written in another.

    IOB1   I-X inside a chunk; B-X only where a chunk follows a chunk of the same type
    IOB2   B-X begins every chunk, I-X continues it                       (a.k.a. BIO)
    IOBES  B-X begin, I-X inside, E-X end, S-X a one-token chunk          (a.k.a. BIOES)

The three write the same spans; a model learns one. Data in the wild comes in any of them
(CoNLL-2003 is IOB1, most later sets IOB2), and a CRF constrained to ``bio`` transitions gives
every IOB1 chunk start (``O -> I-X``) a cost of 1e4: the model cannot learn, silently. So
readers say which scheme they read (``detect``), examples are rewritten in the model's scheme
on reading (``convert``), a file that breaks the scheme it claims is refused at its line
(``check``), and predictions can be written back in the input's scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["SCHEMES", "span_tags", "detect", "violation", "check", "spans", "write", "convert"]

SCHEMES = ("iob1", "iob2", "iobes")
_PREFIXED = re.compile(r"^([BIES])-(.+)$")


def _parse(tag: str) -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``("O", None)``; anything else -> ``("?", None)``."""
    if tag == "O":
        return "O", None
    m = _PREFIXED.match(tag)
    return (m.group(1), m.group(2)) if m else ("?", None)


def span_tags(tags: Iterable[str]) -> bool:
    """Every tag is ``O`` or a prefixed ``B-/I-/E-/S-TYPE``, and some tag is prefixed (a set of
    POS tags such as ``NOUN`` or ``B`` alone is not a span tag set)."""
    prefixed = False
    for tag in tags:
        prefix, _ = _parse(tag)
        if prefix == "?":
            return False
        prefixed |= prefix != "O"
    return prefixed


def detect(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme the tag sequences are written in: ``iobes`` if any E-/S- tag occurs; ``iob1``
    if chunks start with I- (after O, at the sentence start, or after another type) and never
    with a B- that IOB1 would not write; else ``iob2`` -- also when both kinds of start occur:
    that is IOB2 with some I- starts, the usual noise of hand-tagged files, which ``violation``
    then names."""
    i_start = b_start = False
    for tags in sequences:
        prev_type = None  # type of the chunk the previous token is in, None after O
        for tag in tags:
            prefix, kind = _parse(tag)
            if prefix in ("E", "S"):
                return "iobes"
            if prefix == "I" and kind != prev_type:
                i_start = True
            if prefix == "B" and kind != prev_type:
                b_start = True
            prev_type = kind
    return "iob1" if i_start and not b_start else "iob2"


def violation(tags: Sequence[str], scheme: str) -> str | None:
    """Why ``tags`` are not valid ``scheme``, or None."""
    prev_prefix, prev_type = "O", None
    for i, tag in enumerate(tags):
        prefix, kind = _parse(tag)
        if prefix == "?":
            return f"token {i + 1}: tag {tag!r} is neither O nor B-/I-/E-/S-TYPE"
        if scheme != "iobes" and prefix in ("E", "S"):
            return f"token {i + 1}: tag {tag!r} is an IOBES tag in a file read as {scheme.upper()}"
        inside = prev_prefix in ("B", "I") and prev_type == kind
        if scheme == "iob2" and prefix == "I" and not inside:
            after = "the sentence start" if i == 0 else repr(tags[i - 1])
            return (f"token {i + 1}: {tag!r} follows {after}, so it starts a chunk: IOB2 starts every "
                    f"chunk with B- (this looks like IOB1)")
        if scheme == "iob1" and prefix == "B" and not inside:
            return (f"token {i + 1}: {tag!r} follows {repr(tags[i - 1]) if i else 'the sentence start'}: "
                    f"IOB1 uses B- only between two adjacent chunks of one type (this looks like IOB2)")
        if scheme == "iobes":
            if prefix in ("I", "E") and not (prev_prefix in ("B", "I") and prev_type == kind):
                return f"token {i + 1}: {tag!r} continues no open {kind} chunk (IOBES opens one with B-{kind})"
            if prev_prefix in ("B", "I") and not (prefix in ("I", "E") and kind == prev_type):
                return f"token {i}: {tags[i - 1]!r} opens a chunk that {tag!r} does not continue or end"
        prev_prefix, prev_type = prefix, kind
    if scheme == "iobes" and prev_prefix in ("B", "I"):
        return f"token {len(tags)}: {tags[-1]!r} leaves its chunk open at the end of the sentence"
    return None


def check(tags: Sequence[str], scheme: str, where: str) -> None:
    """Raise ``ValueError("where: why")`` unless ``tags`` are a valid ``scheme`` path."""
    why = violation(tags, scheme)
    if why is not None:
        raise ValueError(f"{where}: {why}; set data.tag_scheme to the file's scheme "
                         f"({', '.join(SCHEMES)}) or auto")


def spans(tags: Sequence[str], scheme: str) -> list[tuple[int, int, str]]:
    """The chunks ``(start, end_exclusive, type)`` of a valid ``scheme`` tag sequence."""
    out: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate(tags):
        prefix, t = _parse(tag)
        begins = prefix in ("B", "S") or (prefix == "I" and t != kind)
        if start is not None and (prefix == "O" or begins):
            out.append((start, i, kind))
            start, kind = None, None
        if prefix != "O" and start is None:
            start, kind = i, t
        if prefix in ("E", "S"):
            out.append((start, i + 1, kind))
            start, kind = None, None
    if start is not None:
        out.append((start, len(tags), kind))
    return out


def write(chunks: list[tuple[int, int, str]], length: int, scheme: str) -> list[str]:
    """``length`` tags that write ``chunks`` in ``scheme``."""
    tags = ["O"] * length
    prev_end, prev_type = None, None
    for start, end, kind in chunks:
        for i in range(start, end):
            tags[i] = f"I-{kind}"
        if scheme == "iob2" or (scheme == "iob1" and prev_end == start and prev_type == kind):
            tags[start] = f"B-{kind}"
        elif scheme == "iobes":
            if end - start == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start], tags[end - 1] = f"B-{kind}", f"E-{kind}"
        prev_end, prev_type = end, kind
    return tags


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """The same chunks, written in ``target`` instead of ``source``."""
    if source == target:
        return list(tags)
    return write(spans(tags, source), len(tags), target)
