"""Attention over a padded sequence of keys, masked by length.

Given a query q (B, Q) and keys k_s (B, S, K) with lengths (B,), each kind scores every key,
turns the scores into weights with a softmax over the real steps only, and returns the
weighted sum of the keys:

    additive (Bahdanau 2015):  e_s = v^T tanh(W_q q + W_k k_s)      (A = attention size)
    dot      (Luong 2015):     e_s = q^T k_s                          (needs Q == K)
    general  (Luong 2015):     e_s = q^T W k_s
    a = softmax(e) over s < length, exactly 0 on padding;  context = sum_s a_s k_s   (B, K)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_choice, check_int, length_mask

__all__ = ["Attention", "ATTENTION_KINDS", "masked_softmax"]

ATTENTION_KINDS = ("additive", "dot", "general")


def masked_softmax(scores: Tensor, lengths: Tensor | None) -> Tensor:
    """Softmax of scores (B, S) over the first ``lengths[b]`` entries; 0 elsewhere."""
    if lengths is None:
        return scores.softmax(dim=-1)
    valid = length_mask(lengths.to(scores.device), scores.shape[1])
    return scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)


class Attention(nn.Module):
    """``Attention(query_size, key_size, kind="additive", attention_size=None)``.

    ``forward(query (B, Q), keys (B, S, K), lengths (B,) or None, *, projected_keys=None)``
    returns ``(context (B, K), weights (B, S))``. A decoder that attends to the same keys at
    every step passes ``projected_keys=attention.project_keys(keys)``, computed once.
    """

    def __init__(self, query_size: int, key_size: int, *, kind: str = "additive",
                 attention_size: int | None = None) -> None:
        super().__init__()
        check_choice("kind", kind, ATTENTION_KINDS)
        check_int("query_size", query_size)
        check_int("key_size", key_size)
        check_int("attention_size", attention_size, optional=True)
        if kind == "dot" and query_size != key_size:
            raise ValueError(f"kind='dot' needs query_size == key_size; got {query_size} and {key_size} "
                             "(use kind='general' or 'additive' for different sizes)")
        self.kind, self.query_size, self.key_size = kind, query_size, key_size
        if kind == "additive":
            A = attention_size or key_size
            self.query_proj = nn.Linear(query_size, A, bias=False)
            self.key_proj = nn.Linear(key_size, A, bias=True)
            self.v = nn.Linear(A, 1, bias=False)
        elif kind == "general":
            self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """The query-independent part of the scores: (B, S, K) -> (B, S, A) (identity for dot)."""
        return keys if self.kind == "dot" else self.key_proj(keys)

    def forward(self, query: Tensor, keys: Tensor, lengths: Tensor | None = None, *,
                projected_keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if query.dim() != 2 or query.shape[1] != self.query_size:
            raise ValueError(f"query must have shape (B, Q) with Q = {self.query_size}; got {tuple(query.shape)}")
        if keys.dim() != 3 or keys.shape[2] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ValueError(f"keys must have shape (B, S, K) with B = {query.shape[0]}, K = {self.key_size}; "
                             f"got {tuple(keys.shape)}")
        pk = self.project_keys(keys) if projected_keys is None else projected_keys
        if self.kind == "additive":
            scores = self.v(torch.tanh(pk + self.query_proj(query)[:, None]))[..., 0]  # (B, S)
        else:
            scores = torch.bmm(pk, query[:, :, None])[..., 0]  # (B, S)
        weights = masked_softmax(scores, lengths)
        context = torch.bmm(weights[:, None], keys)[:, 0]  # (B, K)
        return context, weights

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, kind={self.kind!r}"
