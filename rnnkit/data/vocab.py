"""Vocabularies: token <-> id maps fitted on training data, stored as JSON.

Two kinds, one class:

* token vocabularies (words, characters, target words) have specials at fixed ids --
  ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3 where present (docs/contracts.md) --
  and map unknown tokens to ``<unk>``;
* label vocabularies (classes, tags) have no specials, ids start at 0, and an unknown label is an
  error naming the label, where it occurred and the known labels (``Vocab.for_labels``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ._io import short_list

__all__ = ["Vocab", "PAD", "UNK", "BOS", "EOS", "SPECIALS"]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # their ids are their positions here, whenever present


class Vocab:
    """A token <-> id map.

    Args:
        min_freq: keep tokens seen at least this many times.
        max_size: largest number of entries, specials included (most frequent tokens kept).
        specials: reserved entries at the front. Any of ``<pad>, <unk>, <bos>, <eos>`` that is
            present must sit at its contract id (0, 1, 2, 3); further specials (``<mask>``) follow.
        unk: the token unknown tokens map to, or None to make an unknown token an error.
        name: what the entries are ("token", "char", "label", "tag"), used in error messages.

    ``fit(sequences)`` counts tokens (``fit_chars`` the characters of the tokens; ``fit_counts``
    takes the counts made elsewhere) and sets the
    fitted state ``itos_`` (id -> token), ``stoi_`` (token -> id) and ``counts_``. Ties in
    frequency are broken alphabetically, so the ids do not depend on the order of the data.
    """

    def __init__(self, *, min_freq: int = 1, max_size: int | None = None,
                 specials: Sequence[str] = SPECIALS, unk: str | None = UNK, name: str = "token"):
        specials = tuple(specials)
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1; got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < len(specials)):
            raise ValueError(f"max_size must be None or an int >= len(specials) = {len(specials)}; "
                             f"got {max_size!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct; got {specials}")
        for i, s in enumerate(SPECIALS):
            if s in specials and specials.index(s) != i:
                raise ValueError(f"special {s} must have id {i} (docs/contracts.md: <pad>=0, <unk>=1, "
                                 f"<bos>=2, <eos>=3 where present); got specials {specials}")
        if unk is not None and unk not in specials:
            raise ValueError(f"unk={unk!r} must be one of the specials {specials}, or None")
        self.min_freq = min_freq
        self.max_size = max_size
        self.specials = specials
        self.unk = unk
        self.name = name

    @classmethod
    def for_labels(cls, labels: Iterable[str], *, name: str = "label", sort: bool = True) -> Vocab:
        """A label vocabulary (no specials, unknown labels raise) over ``labels``.

        Labels are sorted (``sort=True``) so ids do not depend on data order; pass ``sort=False``
        to keep a given order, e.g. the ``@classLabel`` order of a ``.ts`` header.
        """
        labels = list(dict.fromkeys(str(x) for x in labels))
        vocab = cls(specials=(), unk=None, name=name)
        vocab._set(sorted(labels) if sort else labels, Counter())
        return vocab

    # ------------------------------------------------------------------ fitting

    def fit(self, sequences: Iterable[Iterable[str]]) -> Vocab:
        """Count the tokens of ``sequences`` (an iterable of token lists) and build the map."""
        counts = Counter()
        for seq in sequences:
            if isinstance(seq, str):
                raise TypeError("fit expects an iterable of token lists; got a str inside it "
                                "(for labels use Vocab.for_labels)")
            counts.update(seq)
        return self.fit_counts(counts)

    def fit_counts(self, counts: Mapping[str, int]) -> Vocab:
        """Build the map from token counts already made (``fit`` counts, then calls this): what a
        one-pass reader of a file too large to hold (``data.streaming``) uses."""
        counts = counts if isinstance(counts, Counter) else Counter(counts)
        kept = sorted((t for t, c in counts.items() if c >= self.min_freq and t not in self.specials),
                      key=lambda t: (-counts[t], t))
        if self.max_size is not None:
            kept = kept[: self.max_size - len(self.specials)]
        self._set(list(self.specials) + kept, counts)
        return self

    def fit_chars(self, sequences: Iterable[Iterable[str]]) -> Vocab:
        """Fit a character vocabulary: count the characters of every token in ``sequences``
        (token lists, as for ``fit``), for ``Encoder(char_vocab=...)``."""
        return self.fit(list(token) for seq in sequences for token in seq)

    def _set(self, itos: list[str], counts: Counter) -> None:
        self.itos_ = itos
        self.stoi_ = {t: i for i, t in enumerate(itos)}
        self.counts_ = dict(counts)

    def _check_fitted(self) -> None:
        if not hasattr(self, "itos_"):
            raise RuntimeError(f"this {self.name} vocabulary is not fitted yet; call fit(sequences) first")

    # ------------------------------------------------------------------ mapping

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.itos_)

    def __contains__(self, token: str) -> bool:
        self._check_fitted()
        return token in self.stoi_

    def __getitem__(self, token: str) -> int:
        return self.encode([token])[0]

    def encode(self, tokens: Iterable[str], *, where: str | None = None) -> list[int]:
        """Ids of ``tokens``. Unknown tokens map to ``unk``, or raise naming ``where`` if unk is None."""
        self._check_fitted()
        stoi = self.stoi_
        unk_id = stoi[self.unk] if self.unk is not None else None
        ids = []
        for t in tokens:
            i = stoi.get(t, unk_id)
            if i is None:
                at = f"{where}: " if where else ""
                raise ValueError(f"{at}unknown {self.name} {t!r}; known {self.name}s "
                                 f"({len(self.itos_)}): {short_list(self.itos_)}")
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        self._check_fitted()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos_):
                raise ValueError(f"{self.name} id {i} out of range [0, {len(self.itos_)})")
            out.append(self.itos_[i])
        return out

    def _id(self, token: str) -> int | None:
        self._check_fitted()
        return self.stoi_.get(token) if token in self.specials else None

    @property
    def pad_id(self) -> int | None:
        return self._id(PAD)

    @property
    def unk_id(self) -> int | None:
        return self._id(UNK)

    @property
    def bos_id(self) -> int | None:
        return self._id(BOS)

    @property
    def eos_id(self) -> int | None:
        return self._id(EOS)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """A JSON-safe dict; ``Vocab.from_dict(v.to_dict())`` gives the same map."""
        self._check_fitted()
        return {"itos": list(self.itos_), "specials": list(self.specials), "unk": self.unk,
                "min_freq": self.min_freq, "max_size": self.max_size, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        vocab = cls(min_freq=d.get("min_freq", 1), max_size=d.get("max_size"),
                    specials=d.get("specials", ()), unk=d.get("unk"), name=d.get("name", "token"))
        itos = list(d["itos"])
        if list(itos[: len(vocab.specials)]) != list(vocab.specials):
            raise ValueError(f"vocabulary dict is inconsistent: itos starts with "
                             f"{itos[: len(vocab.specials)]}, specials are {list(vocab.specials)}")
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary dict is inconsistent: itos has duplicate entries")
        vocab._set(itos, Counter())
        return vocab

    def __eq__(self, other) -> bool:
        return (isinstance(other, Vocab) and hasattr(self, "itos_") and hasattr(other, "itos_")
                and self.itos_ == other.itos_ and self.unk == other.unk)

    def __repr__(self) -> str:
        size = len(self.itos_) if hasattr(self, "itos_") else "unfitted"
        return f"Vocab(name={self.name!r}, size={size}, specials={self.specials}, unk={self.unk!r})"
