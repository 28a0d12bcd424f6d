"""From examples to id lists: the one step that applies vocabularies and length limits.

``Encoder`` turns each example into an *item*, a dict of plain lists / arrays with the batch
keys of docs/contracts.md; ``batching.collate`` pads items into tensors. Encoding the whole data
set up front (``encode_all``) means an unknown label or an over-long sequence is reported before
training starts, with the ``path:line`` of the example.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from .examples import PairExample, SeriesExample, TaggedExample, TextExample
from .vocab import Vocab

__all__ = ["Encoder"]


class Encoder:
    """Map examples to items (dicts of lists) through vocabularies.

    Args:
        vocab: token vocabulary for ``inputs`` (text, tags, pairs, LM); None for series.
        label_vocab: class or tag vocabulary (``Vocab.for_labels``); unknown labels raise,
            naming the label, the example's ``path:line`` and the known labels. None for float
            targets (regression) or unlabelled data.
        char_vocab: if given, items get ``chars``: the character ids of each input token.
        target_vocab: token vocabulary of the target side of ``PairExample``s; it needs
            ``<bos>`` and ``<eos>``. Defaults to ``vocab`` (a shared vocabulary).
        max_length: longest allowed input (tokens or time steps), None for no limit.
        max_target_length: longest allowed target, counted without BOS/EOS.
        truncate: cut sequences longer than the limits instead of raising. Truncations are
            counted in ``truncated_`` (the ``where`` of each) and reported by ``encode_all``.
        lm: encode ``TextExample``s as sentence-level language modelling:
            ``inputs = <bos> w1 .. wn``, ``labels = w1 .. wn <eos>`` (inputs shifted by one).
        generate: encode ``TextExample``s for a conditioned generator: ``targets = <bos> w1 ..
            wn <eos>`` and ``condition`` = the label (a class id through ``label_vocab``, or a
            float vector); no ``inputs``.

    Items: ``{"inputs": list[int] | ndarray (T, D), "labels": int | float | list, "chars":
    list[list[int]], "targets": list[int], "condition": int | list[float]}`` -- only the keys
    the example provides.
    """

    def __init__(self, *, vocab: Vocab | None = None, label_vocab: Vocab | None = None,
                 char_vocab: Vocab | None = None, target_vocab: Vocab | None = None,
                 max_length: int | None = None, max_target_length: int | None = None,
                 truncate: bool = False, lm: bool = False, generate: bool = False):
        for name, n in (("max_length", max_length), ("max_target_length", max_target_length)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"{name} must be None or an int >= 1; got {n!r}")
        if lm and generate:
            raise ValueError("choose at most one of lm=True and generate=True")
        if (lm or generate) and (vocab is None or vocab.bos_id is None or vocab.eos_id is None):
            raise ValueError(f"{'lm' if lm else 'generate'}=True needs a vocab with <bos> and <eos> specials")
        self.vocab = vocab
        self.label_vocab = label_vocab
        self.char_vocab = char_vocab
        self.target_vocab = target_vocab
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.truncate = bool(truncate)
        self.lm = bool(lm)
        self.generate = bool(generate)
        self.truncated_: list[str] = []

    # ------------------------------------------------------------------ public

    def __call__(self, example) -> dict:
        if isinstance(example, SeriesExample):
            return self._series(example)
        if isinstance(example, PairExample):
            return self._pair(example)
        if isinstance(example, TaggedExample):
            return self._tagged(example)
        if isinstance(example, TextExample):
            return self._text(example)
        raise TypeError(f"cannot encode a {type(example).__name__}; expected TextExample, "
                        f"TaggedExample, PairExample or SeriesExample")

    def encode_all(self, examples: Iterable) -> list[dict]:
        """Encode every example; warn once with the count if any were truncated."""
        before = len(self.truncated_)
        items = [self(ex) for ex in examples]
        cut = self.truncated_[before:]
        if cut:
            warnings.warn(f"truncated {len(cut)} of {len(items)} sequence(s) to max_length="
                          f"{self.max_length} / max_target_length={self.max_target_length} "
                          f"(truncate=True); first at {cut[0]}", stacklevel=2)
        return items

    # ------------------------------------------------------------------ per example type

    def _text(self, ex: TextExample) -> dict:
        tokens = self._limit(ex.tokens, self.max_target_length if self.generate else self.max_length,
                             ex.where, "target" if self.generate else "input")
        ids = self._vocab("vocab", self.vocab).encode(tokens, where=ex.where)
        if self.lm:
            return {"inputs": [self.vocab.bos_id] + ids, "labels": ids + [self.vocab.eos_id]}
        if self.generate:
            if ex.label is None:
                raise ValueError(f"{ex.where}: generate=True needs a label (the condition); got None")
            item = {"targets": [self.vocab.bos_id] + ids + [self.vocab.eos_id]}
            self._label(item, ex.label, ex.where)
            item["condition"] = item.pop("labels")
            return item
        item = {"inputs": ids}
        self._chars(item, tokens)
        self._label(item, ex.label, ex.where)
        return item

    def _tagged(self, ex: TaggedExample) -> dict:
        tokens = self._limit(ex.tokens, self.max_length, ex.where, "input")
        item = {"inputs": self._vocab("vocab", self.vocab).encode(tokens, where=ex.where)}
        self._chars(item, tokens)
        if ex.tags is not None:
            tags = ex.tags[: len(tokens)]
            item["labels"] = self._vocab("label_vocab", self.label_vocab).encode(tags, where=ex.where)
        return item

    def _pair(self, ex: PairExample) -> dict:
        source = self._limit(ex.source, self.max_length, ex.where, "source")
        target = self._limit(ex.target, self.max_target_length, ex.where, "target")
        tv = self._vocab("target_vocab (or vocab)", self.target_vocab or self.vocab)
        if tv.bos_id is None or tv.eos_id is None:
            raise ValueError("the target vocabulary needs <bos> and <eos> specials")
        item = {"inputs": self._vocab("vocab", self.vocab).encode(source, where=ex.where),
                "targets": [tv.bos_id] + tv.encode(target, where=ex.where) + [tv.eos_id]}
        self._chars(item, source)
        return item

    def _series(self, ex: SeriesExample) -> dict:
        values = np.asarray(ex.values, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] < 1:
            raise ValueError(f"{ex.where}: series values must have shape (T, D) with T >= 1; "
                             f"got {values.shape}")
        item = {"inputs": self._limit(values, self.max_length, ex.where, "series")}
        self._label(item, ex.label, ex.where)
        return item

    # ------------------------------------------------------------------ helpers

    def _limit(self, seq, limit: int | None, where: str, side: str):
        if limit is None or len(seq) <= limit:
            return seq
        if not self.truncate:
            unit = "time steps" if side == "series" else "tokens"
            arg = "max_target_length" if side == "target" else "max_length"
            raise ValueError(f"{where}: {side} sequence has {len(seq)} {unit}, more than "
                             f"{arg}={limit}; raise {arg} (the config's data.{arg}; null for no limit) "
                             "or set truncate (data.truncate: true) to cut it (reported)")
        self.truncated_.append(where)
        return seq[:limit]

    def _chars(self, item: dict, tokens: list[str]) -> None:
        if self.char_vocab is not None:
            item["chars"] = [self.char_vocab.encode(t) for t in tokens]

    def _label(self, item: dict, label, where: str) -> None:
        if label is None:
            return
        if self.label_vocab is not None:
            item["labels"] = self.label_vocab.encode([str(label)], where=where)[0]
        elif isinstance(label, str):
            raise ValueError(f"{where}: label {label!r} is a class name but the Encoder has no "
                             f"label_vocab (use Vocab.for_labels)")
        elif isinstance(label, (list, tuple)):
            item["labels"] = [float(v) for v in label]
        else:
            item["labels"] = float(label)

    @staticmethod
    def _vocab(name: str, vocab: Vocab | None) -> Vocab:
        if vocab is None:
            raise ValueError(f"this example needs {name}, which the Encoder was not given")
        return vocab
