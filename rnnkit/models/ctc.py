"""Decoding CTC outputs (Graves et al., 2006): frames of symbol log-probabilities -> labellings.

A path ``pi`` is one symbol per frame (blank included); ``B(pi)`` merges repeated symbols and
then drops blanks (``a a - a b -`` -> ``a a b``). The probability of a labelling ``l`` is the sum
over every path with ``B(pi) = l`` of ``prod_t y[t, pi_t]``; ``torch.nn.CTCLoss`` is its
negative log.

* ``ctc_greedy`` -- best-path decoding: ``B(argmax_s y[t, s])``, the labelling of the single most
  probable path (not always the most probable labelling).
* ``ctc_prefix_beam`` -- prefix beam search: keeps the ``beam_size`` most probable prefixes,
  each with its probability split into paths ending in blank (``p_b``) and not (``p_nb``), so that
  a repeated symbol separated by a blank is a new symbol and one without is the same. With a
  beam as wide as the number of prefixes it is exact: the most probable labelling.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["ctc_greedy", "ctc_prefix_beam", "collapse"]


def collapse(path, blank: int = 0) -> list[int]:
    """``B``: merge repeats, then drop blanks."""
    out, prev = [], None
    for s in path:
        s = int(s)
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """(B, T, S) log-probabilities and lengths (B,) -> one labelling per sequence."""
    best = log_probs.argmax(-1)  # (B, T)
    return [collapse(best[b, :int(lengths[b])].tolist(), blank) for b in range(best.shape[0])]


def _logadd(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam(log_probs: Tensor, lengths: Tensor, *, beam_size: int = 8, blank: int = 0,
                    prune: float | None = None) -> list[list[int]]:
    """(B, T, S) log-probabilities -> the most probable labelling found per sequence.
    ``prune``: skip symbols whose log-probability at a frame is below it (None: try all)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1; got {beam_size}")
    y = log_probs.detach().double().cpu()
    return [_beam(y[b, :int(lengths[b])], beam_size, blank, prune) for b in range(y.shape[0])]


def _beam(y: Tensor, beam_size: int, blank: int, prune: float | None) -> list[int]:
    NEG = -math.inf
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, NEG)}  # prefix -> (log p_b, log p_nb)
    rows = y.tolist()
    for row in rows:
        symbols = range(len(row)) if prune is None else [s for s, p in enumerate(row) if p >= prune or s == blank]
        nxt: dict[tuple, list[float]] = {}

        def add(prefix, pb=NEG, pnb=NEG):
            cur = nxt.setdefault(prefix, [NEG, NEG])
            cur[0], cur[1] = _logadd(cur[0], pb), _logadd(cur[1], pnb)

        for prefix, (pb, pnb) in beams.items():
            total = _logadd(pb, pnb)
            for s in symbols:
                p = row[s]
                if s == blank:
                    add(prefix, pb=total + p)
                elif prefix and prefix[-1] == s:
                    add(prefix, pnb=pnb + p)            # the same symbol continued
                    add(prefix + (s,), pnb=pb + p)      # a new one after a blank
                else:
                    add(prefix + (s,), pnb=total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logadd(*kv[1]), reverse=True)[:beam_size]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return list(max(beams.items(), key=lambda kv: _logadd(*kv[1]))[0])
