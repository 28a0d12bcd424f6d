"""Tokenisers: text in, a list of string tokens out.

A ``Tokenizer`` is a small, JSON-serialisable recipe (``to_dict`` / ``from_dict``) so that a
checkpoint can rebuild exactly the tokenisation its vocabulary was fitted on.

Levels:

* ``"whitespace"`` -- ``str.split()``: runs of any Unicode whitespace separate tokens (PTB, SST,
  pre-tokenised text).
* ``"regex"`` -- every match of ``pattern`` is a token; the default pattern keeps runs of word
  characters and splits off each punctuation mark: ``"Don't!" -> ["Don", "'", "t", "!"]``.
  Patterns are compiled with the ``regex`` package (a superset of ``re``'s syntax) and every
  match runs under a time limit of ``REGEX_TIMEOUT`` seconds per text: a pattern comes from a
  config or a checkpoint, i.e. from elsewhere, and one that backtracks catastrophically
  (``(a|a)+$`` on 30 ``a``s and a ``!``) would otherwise hang training or ``rnnkit predict``.
  Past the limit, a ValueError names the pattern and the text. Any pattern is accepted; the
  limit, not a restricted syntax, is the safeguard.
* ``"char"`` -- every character is a token; whitespace is kept unless ``keep_spaces=False``
  (a character language model must see the spaces it has to predict).
* ``"cjk"`` -- each Chinese/Japanese character (Han, kana, CJK punctuation, full-width forms) is
  its own token; runs of other non-space characters (Latin words, numbers) stay whole:
  ``"15寸笔记本很好用" -> ["15", "寸", "笔", "记", "本", "很", "好", "用"]``.
"""

from __future__ import annotations

import re

from ._io import show

__all__ = ["Tokenizer", "LEVELS"]

LEVELS = ("whitespace", "regex", "char", "cjk")

DEFAULT_PATTERN = r"\w+|[^\w\s]"
REGEX_TIMEOUT = 1.0  # seconds one text may take to tokenise with level="regex"

# Han (incl. extension A and compatibility ideographs), hiragana, katakana, CJK symbols and
# punctuation, full-width and half-width forms.
_CJK = (r"\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
        r"\uf900-\ufaff\uff00-\uffef")
_CJK_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_DIGIT_RE = re.compile(r"\d")


class Tokenizer:
    """Split text into tokens.

    Args:
        level: one of ``whitespace``, ``regex``, ``char``, ``cjk`` (see the module docstring).
        pattern: the token regex for ``level="regex"`` (default ``\\w+|[^\\w\\s]``), compiled
            with the ``regex`` package and matched under ``REGEX_TIMEOUT`` (module docstring).
        lowercase: apply ``str.lower()`` before splitting.
        normalize_digits: replace every digit with ``0`` (``"1984" -> "0000"``), so numbers share
            vocabulary entries.
        keep_spaces: for ``level="char"``, keep whitespace characters as tokens.

    ``tokenizer(text) -> list[str]``.
    """

    def __init__(self, level: str = "whitespace", *, pattern: str | None = None,
                 lowercase: bool = False, normalize_digits: bool = False,
                 keep_spaces: bool = True):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        if pattern is not None and level != "regex":
            raise ValueError(f"pattern is only used with level='regex'; got level={level!r}")
        self.level = level
        self.pattern = pattern
        self.lowercase = bool(lowercase)
        self.normalize_digits = bool(normalize_digits)
        self.keep_spaces = bool(keep_spaces)
        self._regex = None
        if level != "regex":
            return
        import regex  # rnnkit[train]; imported here so that the layers and heads do not need it

        try:
            self._regex = regex.compile(pattern or DEFAULT_PATTERN)
        except regex.error as e:
            raise ValueError(f"pattern is not a valid regular expression: {e}; got {pattern!r}") from None

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        if self.normalize_digits:
            text = _DIGIT_RE.sub("0", text)
        if self.level == "whitespace":
            return text.split()
        if self.level == "regex":
            try:
                return self._regex.findall(text, timeout=REGEX_TIMEOUT)
            except TimeoutError:
                raise ValueError(
                    f"tokenizer pattern {self._regex.pattern!r} took longer than {REGEX_TIMEOUT:g} s on "
                    f"{show(text)}: the pattern backtracks catastrophically; simplify it (no nested "
                    f"or overlapping repeats such as (a+)+ or (a|a)+)") from None
        if self.level == "char":
            return list(text) if self.keep_spaces else [c for c in text if not c.isspace()]
        return _CJK_RE.findall(text)

    def to_dict(self) -> dict:
        return {"level": self.level, "pattern": self.pattern, "lowercase": self.lowercase,
                "normalize_digits": self.normalize_digits, "keep_spaces": self.keep_spaces}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        return cls(d["level"], pattern=d.get("pattern"), lowercase=d.get("lowercase", False),
                   normalize_digits=d.get("normalize_digits", False),
                   keep_spaces=d.get("keep_spaces", True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"Tokenizer({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()
