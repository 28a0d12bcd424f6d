"""Pretrained word vectors from word2vec / GloVe text files, aligned to a vocabulary.

The format: one word and its D values per line, separated by spaces; word2vec files start with
a ``count D`` header line, GloVe files do not. The user brings the file.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._io import PathLike, iter_lines, show
from .vocab import Vocab

__all__ = ["load_embeddings"]


def load_embeddings(path: PathLike, vocab: Vocab, *, dim: int | None = None, lowercase: bool = False,
                    init_std: float = 0.1, seed: int = 0,
                    encoding: str = "utf-8") -> tuple[Tensor, int]:
    """Read a word2vec/GloVe text file and return ``(weight (V, D) float32, found)``.

    Row i of ``weight`` is the vector of ``vocab.itos_[i]`` if the file has it; other rows are
    drawn from N(0, init_std^2) with ``seed`` (so a run is reproducible) and the ``<pad>`` row is
    zero. ``found`` counts vocabulary entries that got a pretrained vector.

    Args:
        dim: the expected D; None takes it from the header or the first vector. Every line
            must then have exactly D values (an error names ``path:line`` otherwise).
        lowercase: also match a vocabulary word by the file's lower-cased word when the exact
            form is absent (the first vector for a lower-cased form wins).

    Words containing spaces (a few in GloVe 840B) are read by taking the last D fields as the
    vector once D is known.
    """
    V = len(vocab)
    vectors: dict[int, Tensor] = {}
    lowered: dict[str, Tensor] = {}
    header_count = None
    rows = 0
    last_line = 0
    for line_no, line in iter_lines(path, encoding):
        last_line = line_no
        fields = line.rstrip().split(" ")
        if line_no == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
            header_count, header_dim = int(fields[0]), int(fields[1])
            if dim is not None and header_dim != dim:
                raise ValueError(f"{path}:1: header says D = {header_dim}, expected dim = {dim}")
            dim = header_dim
            continue
        if not line.strip():
            raise ValueError(f"{path}:{line_no}: blank line inside the vector file")
        if dim is None:
            dim = len(fields) - 1
            if dim < 1:
                raise ValueError(f"{path}:{line_no}: expected a word followed by its values, got {show(line)}")
        if len(fields) > dim + 1 and not _is_float(fields[-dim - 1]):
            fields = [" ".join(fields[:-dim])] + fields[-dim:]
        if len(fields) != dim + 1:
            raise ValueError(f"{path}:{line_no}: expected D = {dim} values after the word, got "
                             f"{len(fields) - 1}: {show(line, 60)}")
        rows += 1
        word = fields[0]
        i = vocab.stoi_.get(word)
        want_lower = lowercase and word.lower() not in lowered
        if i is None and not want_lower:
            continue
        try:
            vec = torch.tensor([float(v) for v in fields[1:]], dtype=torch.float32)
        except ValueError:
            raise ValueError(f"{path}:{line_no}: a value of {word!r} is not a number: {show(line, 60)}") from None
        if i is not None and i not in vectors:
            vectors[i] = vec
        if want_lower:
            lowered[word.lower()] = vec
    if dim is None or rows == 0:
        raise ValueError(f"{path}: no vectors found")
    if header_count is not None and header_count != rows:
        raise ValueError(f"{path}:{last_line}: the header announces {header_count} vectors but the file "
                         f"has {rows}; is the file truncated?")
    if lowercase:
        for word, i in vocab.stoi_.items():
            if i not in vectors and word.lower() in lowered:
                vectors[i] = lowered[word.lower()]

    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, dim, generator=g) * init_std  # (V, D)
    for i, vec in vectors.items():
        weight[i] = vec
    if vocab.pad_id is not None:
        weight[vocab.pad_id] = 0.0
    found = sum(1 for i in vectors if i != vocab.pad_id)
    return weight, found


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
