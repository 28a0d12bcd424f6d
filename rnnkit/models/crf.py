"""Linear-chain conditional random field over K tags, vectorised over the batch.

For emissions e (B, T, K) (one score per step and tag) and a tag sequence y of length L:

    score(y) = start[y_1] + sum_t e[t, y_t] + sum_{t=2..L} trans[y_{t-1}, y_t] + end[y_L]
    log Z    = log sum over all K^L tag sequences of exp(score)
    NLL(y)   = log Z - score(y)

log Z comes from the forward algorithm in log space:

    alpha_1[j] = start[j] + e[1, j]
    alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + trans[i, j]) + e[t, j]
    log Z      = logsumexp_j(alpha_L[j] + end[j])

and Viterbi decoding is the same recursion with max instead of logsumexp, plus backpointers.
Each sequence stops at its own length: past it, alpha is carried unchanged.

Transition constraints (``allowed_transitions`` for BIO / IOBES tag sets) add a large negative
constant to forbidden transitions, start and end tags, so a decoded path never uses them and
a forbidden gold path gets a large, finite loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import exporting
from ._common import check_choice, check_int, length_mask

__all__ = ["CRF", "allowed_transitions", "SCHEMES"]

SCHEMES = ("bio", "iobes")
_FORBIDDEN = -1e4


def _parse(tag: str, scheme: str) -> tuple[str, str]:
    prefixes = "BI" if scheme == "bio" else "BIES"
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[0] in prefixes and tag[1] == "-":
        return tag[0], tag[2:]
    allowed = ", ".join(f"{p}-<type>" for p in prefixes)
    raise ValueError(f"tags must follow the {scheme.upper()} scheme: 'O' or {allowed}; got {tag!r}")


def allowed_transitions(tags: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Which transitions a ``bio`` or ``iobes`` tag set allows.

    Returns bool tensors ``trans`` (K, K) indexed [from, to], ``start`` (K,) and ``end`` (K,).
    BIO: I-X only after B-X or I-X, never first. IOBES: after B-X or I-X comes I-X or E-X; after
    E, S or O comes B, S or O; a sequence starts with B, S or O and ends with E, S or O.
    """
    check_choice("scheme", scheme, SCHEMES)
    parsed = [_parse(t, scheme) for t in tags]
    K = len(tags)
    trans = torch.zeros(K, K, dtype=torch.bool)
    for i, (p, x) in enumerate(parsed):
        for j, (q, y) in enumerate(parsed):
            if scheme == "bio":
                ok = q != "I" or (p in "BI" and x == y)
            elif p in ("B", "I"):
                ok = q in ("I", "E") and x == y
            else:
                ok = q in ("B", "S", "O")
            trans[i, j] = ok
    if scheme == "bio":
        start = torch.tensor([p != "I" for p, _ in parsed])
        end = torch.ones(K, dtype=torch.bool)
    else:
        start = torch.tensor([p in ("B", "S", "O") for p, _ in parsed])
        end = torch.tensor([p in ("E", "S", "O") for p, _ in parsed])
    return trans, start, end


class CRF(nn.Module):
    """``CRF(num_tags, *, tags=None, scheme=None)``: a linear-chain CRF layer.

    Learned parameters ``transitions`` (K, K) [from, to], ``start`` (K,), ``end`` (K,). With
    ``tags`` (the K tag names) and ``scheme`` (``bio`` | ``iobes``), forbidden transitions are
    masked. Emissions are (B, T, K); ``lengths`` (B,) each in [1, T].
    """

    def __init__(self, num_tags: int, *, tags: list[str] | None = None, scheme: str | None = None) -> None:
        super().__init__()
        check_int("num_tags", num_tags)
        K = self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(K, K))
        self.start = nn.Parameter(torch.zeros(K))
        self.end = nn.Parameter(torch.zeros(K))
        nn.init.uniform_(self.transitions, -0.1, 0.1)
        penalties = [torch.zeros(K, K), torch.zeros(K), torch.zeros(K)]
        if scheme is not None:
            if tags is None or len(tags) != K:
                raise ValueError(f"scheme={scheme!r} needs tags, the names of all num_tags = {K} tags; "
                                 f"got {tags!r}")
            penalties = [(~allowed).float() * _FORBIDDEN for allowed in allowed_transitions(tags, scheme)]
        # Rebuilt from (tags, scheme), so not part of the saved weights.
        self.register_buffer("trans_penalty", penalties[0], persistent=False)
        self.register_buffer("start_penalty", penalties[1], persistent=False)
        self.register_buffer("end_penalty", penalties[2], persistent=False)

    def _potentials(self) -> tuple[Tensor, Tensor, Tensor]:
        return (self.transitions + self.trans_penalty, self.start + self.start_penalty,
                self.end + self.end_penalty)

    def _check(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions must have shape (B, T, K) with K = num_tags = {self.num_tags}; "
                             f"got {tuple(emissions.shape)}")
        B, T = emissions.shape[:2]
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"lengths must have shape (B,) = ({B},) with values in [1, {T}]; got "
                             f"{lengths.tolist()}")
        return length_mask(lengths.to(emissions.device), T)

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """log Z per sequence (B,) by the forward algorithm."""
        valid = self._check(emissions, lengths)
        trans, start, end = self._potentials()
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            # (B, K_from, 1) + (K_from, K_to) -> logsumexp over from -> (B, K_to)
            new = torch.logsumexp(alpha[:, :, None] + trans, dim=1) + emissions[:, t]
            alpha = torch.where(valid[:, t, None], new, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Unnormalised log score (B,) of the tag sequences ``tags`` (B, T)."""
        valid = self._check(emissions, lengths)
        trans, start, end = self._potentials()
        tags = tags.masked_fill(~valid, 0)
        emit = emissions.gather(2, tags[..., None])[..., 0]  # (B, T)
        s = start[tags[:, 0]] + (emit * valid).sum(1)
        pair = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        s = s + (pair * valid[:, 1:]).sum(1)
        last = tags.gather(1, (lengths.to(tags.device) - 1)[:, None])[:, 0]
        return s + end[last]

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Negative log-likelihood per sequence (B,): log Z - score(tags)."""
        return self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """Viterbi: the highest-scoring tag sequence of each row, as a list of its L tag ids."""
        path = self.best_paths(emissions, lengths).tolist()
        return [row[:n] for row, n in zip(path, lengths.tolist())]

    def best_paths(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Viterbi as a tensor (B, T) of tag ids; past each row's length, its last tag repeats.
        While exporting, both passes are ``scan`` operators, so the graph takes any T."""
        valid = self._check(emissions, lengths) if not exporting() else length_mask(lengths, emissions.shape[1])
        trans, start, end = self._potentials()
        B, T, K = emissions.shape
        keep = torch.arange(K, device=emissions.device).expand(B, K)

        def forward_step(delta: Tensor, inputs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            emit, on = inputs  # (B, K), (B, 1)
            best, arg = (delta[:, :, None] + trans).max(dim=1)  # (B, K_to)
            # Past a sequence's end the pointer is the identity, so backtracking from T-1
            # walks through the padding unchanged and reaches the true last tag.
            return torch.where(on, best + emit, delta), torch.where(on, arg, keep)

        def back_step(tag: Tensor, arg: Tensor) -> tuple[Tensor, Tensor]:
            tag = arg.gather(1, tag[:, None])[:, 0]
            return tag, tag.clone()

        if exporting():
            return self._graph_paths(emissions, valid)
        delta = start + emissions[:, 0]
        steps = (emissions[:, 1:].transpose(0, 1), valid[:, 1:].transpose(0, 1)[..., None])  # (T-1, B, .)
        pointers = []
        for t in range(T - 1):
            delta, arg = forward_step(delta, (steps[0][t], steps[1][t]))
            pointers.append(arg)
        tag = (delta + end).argmax(dim=1)
        path = [tag]
        for arg in reversed(pointers):
            tag, _ = back_step(tag, arg)
            path.append(tag)
        return torch.stack(path[::-1], dim=1)

    def _graph_paths(self, emissions: Tensor, valid: Tensor) -> Tensor:
        """``best_paths`` as two ``scan`` operators over all T steps (a scan of T - 1 steps
        would be empty for T = 1, which ONNX Runtime refuses): step 0 starts from zeros through
        a transition matrix whose every row is ``start``, so it gives start + emissions[:, 0];
        its pointers lead to a tag before the sequence, which the backward pass never emits."""
        from torch._higher_order_ops.scan import scan

        trans, start, end = self._potentials()
        B, T, K = emissions.shape
        first = (torch.arange(T, device=emissions.device) == 0)[:, None, None]  # (T, 1, 1)
        from_start = start.expand(K, K)

        def step(delta: Tensor, inputs):
            emit, on, is_first = inputs
            best, arg = (delta[:, :, None] + torch.where(is_first, from_start, trans)).max(dim=1)
            keep = torch.arange(K, device=emit.device).expand_as(arg)
            return torch.where(on, best + emit, delta), torch.where(on, arg, keep)

        xs = (emissions.transpose(0, 1), valid.transpose(0, 1)[..., None], first)
        delta, pointers = scan(step, emissions.new_zeros(B, K), xs)  # pointers (T, B, K)
        def back_step(tag: Tensor, arg: Tensor) -> tuple[Tensor, Tensor]:
            return arg.gather(1, tag[:, None])[:, 0], tag.clone()  # emits the tag it leaves

        _, path = scan(back_step, (delta + end).argmax(dim=1), pointers.flip(0))  # tags T-1 .. 0
        return path.flip(0).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"
