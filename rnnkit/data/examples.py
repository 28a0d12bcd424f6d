"""The plain Python examples readers return. They hold strings and numbers, never ids or tensors;
``batching.Encoder`` maps them through vocabularies.

Every example records ``where`` it came from (``"dev.tsv:17"``), so a later error -- an unknown
label at evaluation, a sequence over ``max_length`` -- can point at the line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TextExample", "TaggedExample", "PairExample", "SeriesExample"]


@dataclass
class TextExample:
    """A token sequence with one label: a class name (str), a float target, or None (unlabelled)."""

    tokens: list[str]
    label: str | float | list[float] | None = None
    where: str = ""


@dataclass
class TaggedExample:
    """Tokens with one tag each (POS, NER); ``tags`` is None for unlabelled input."""

    tokens: list[str]
    tags: list[str] | None = None
    where: str = ""

    def __post_init__(self):
        if self.tags is not None and len(self.tags) != len(self.tokens):
            raise ValueError(f"{self.where}: {len(self.tokens)} tokens but {len(self.tags)} tags")


@dataclass
class PairExample:
    """A source and a target token sequence (translation, transliteration, summarisation)."""

    source: list[str]
    target: list[str]
    where: str = ""


@dataclass
class SeriesExample:
    """A numeric series ``values`` of shape (T, D) (float32) with a class name, float target or None."""

    values: np.ndarray
    label: str | float | None = None
    where: str = ""
