"""Decoding one token at a time: greedy, sampling (temperature, top-k) and batched beam search.

Shared by LanguageModel, Seq2Seq and Generator. A head describes its decoder as

    step(tokens (N,), state) -> (log_probs (N, V), state)

where ``state`` is any nesting of tensors (lists, tuples, BiState) whose first dimension is N
-- recurrent states, but also encoder memory and source lengths, so that beam search can
reorder everything with one ``index_select``. Each function starts from the first next-token
distribution ``log_probs`` (B, V), which the head computes (after the prompt, or from BOS), and
returns per sequence the list of generated token ids, stopping before ``eos_id`` (not included)
or after ``max_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._common import check_int, map_state

__all__ = ["greedy", "greedy_tokens", "sample", "beam_search", "forbid", "STRATEGIES", "Step"]

Step = Callable[[Tensor, object], tuple[Tensor, object]]
STRATEGIES = ("greedy", "sample")


def forbid(log_probs: Tensor, ids: list[int]) -> Tensor:
    """``log_probs`` with the tokens ``ids`` made impossible (e.g. padding and BOS, which a
    decoder must never emit)."""
    # A comparison with arange, not an index tensor: a constant tensor made inside an exported
    # loop's body cannot be serialised.
    vocab = torch.arange(log_probs.shape[-1], device=log_probs.device)
    banned = vocab == ids[0]
    for i in ids[1:]:
        banned = banned | (vocab == i)
    return log_probs.masked_fill(banned, float("-inf"))


def _trim(rows: list[list[int]], eos_id: int | None) -> list[list[int]]:
    if eos_id is None:
        return rows
    return [row[:row.index(eos_id)] if eos_id in row else row for row in rows]


def _loop(step: Step, state, log_probs: Tensor, choose: Callable[[Tensor], Tensor], *,
          max_length: int, eos_id: int | None) -> list[list[int]]:
    B = log_probs.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=log_probs.device)
    out = []
    for t in range(max_length):
        token = choose(log_probs)  # (B,)
        out.append(token)
        if eos_id is not None:
            done |= token == eos_id
        if bool(done.all()) or t == max_length - 1:
            break
        log_probs, state = step(token, state)
    return _trim(torch.stack(out, dim=1).tolist(), eos_id)


def greedy(step: Step, state, log_probs: Tensor, *, max_length: int,
           eos_id: int | None = None) -> list[list[int]]:
    """The most likely token at every step."""
    check_int("max_length", max_length)
    return _loop(step, state, log_probs, lambda lp: lp.argmax(dim=-1),
                 max_length=max_length, eos_id=eos_id)


def greedy_tokens(step: Step, state, log_probs: Tensor, *, max_length: int) -> Tensor:
    """``greedy`` as one tensor (B, max_length) of token ids, for an exported graph: all
    ``max_length`` steps run as one ``scan`` operator (no early stop, which would need the
    data); ``greedy``'s lists are each row cut before its first ``eos_id``."""
    from torch._higher_order_ops.scan import scan

    check_int("max_length", max_length)
    first = log_probs.argmax(dim=-1)  # (B,)
    if max_length == 1:
        return first[:, None]

    def body(carry, _):
        token, state = carry
        log_probs, state = step(token, state)
        token = log_probs.argmax(dim=-1)
        return (token, state), token.clone()

    steps = log_probs.new_zeros(max_length - 1, 1)  # scan takes its length from a tensor's first axis
    _, rest = scan(body, (first, state), steps)  # (max_length-1, B)
    return torch.cat([first[:, None], rest.transpose(0, 1)], dim=1)


def sample(step: Step, state, log_probs: Tensor, *, max_length: int, eos_id: int | None = None,
           temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """Sample each token from softmax(log_probs / temperature), restricted to the top_k most
    likely tokens if given. Pass a seeded ``generator`` for reproducible samples."""
    check_int("max_length", max_length)
    check_int("top_k", top_k, optional=True)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a float > 0 (use strategy='greedy' for the argmax); "
                         f"got {temperature!r}")

    def choose(lp: Tensor) -> Tensor:
        lp = lp / temperature
        if top_k is not None and top_k < lp.shape[-1]:
            kth = lp.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
            lp = lp.masked_fill(lp < kth, float("-inf"))
        probs = lp.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return _loop(step, state, log_probs, choose, max_length=max_length, eos_id=eos_id)


def beam_search(step: Step, state, log_probs: Tensor, *, beam_size: int, max_length: int,
                eos_id: int | None = None, length_penalty: float = 1.0) -> list[list[int]]:
    """Batched beam search: ``beam_size`` hypotheses per sequence, all sequences at once.

    A hypothesis that emits ``eos_id`` is finished: its score is frozen (it can only repeat EOS
    at no cost) while the others grow. At the end each sequence returns the hypothesis with the
    best ``score / length ** length_penalty`` (length counts the tokens including EOS;
    ``length_penalty = 0`` ranks by raw log-probability, which favours short outputs). With
    ``beam_size = 1`` this is greedy decoding.
    """
    check_int("beam_size", beam_size)
    check_int("max_length", max_length)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a float >= 0; got {length_penalty!r}")
    B, V = log_probs.shape
    k, device = beam_size, log_probs.device
    # Every beam starts as a copy; only the first may be chosen at step one, or the k beams
    # would be k copies of the same hypothesis.
    scores = torch.full((B, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    state = map_state(lambda t: t.repeat_interleave(k, dim=0), state)  # (B*k, ...)
    lp = log_probs[:, None].expand(B, k, V)
    done = torch.zeros(B, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, k, device=device)
    frozen = torch.full((V,), float("-inf"), device=device)
    if eos_id is not None:
        frozen[eos_id] = 0.0
    tokens, parents = [], []
    offsets = (torch.arange(B, device=device) * k)[:, None]  # (B, 1)
    for t in range(max_length):
        lp = torch.where(done[..., None], frozen, lp)
        top, index = (scores[..., None] + lp).reshape(B, k * V).topk(k, dim=-1)  # (B, k)
        parent, token = index // V, index % V
        was_done = done.gather(1, parent)
        lengths = lengths.gather(1, parent) + (~was_done).float()
        done = was_done | (token == eos_id) if eos_id is not None else was_done
        scores = top
        tokens.append(token)
        parents.append(parent)
        if bool(done.all()) or t == max_length - 1:
            break
        state = map_state(lambda s: s.index_select(0, (offsets + parent).reshape(-1)), state)
        lp, state = step(token.reshape(-1), state)
        lp = lp.view(B, k, V)
    best = (scores / lengths.clamp(min=1) ** length_penalty).argmax(dim=1)  # (B,)
    beam, path = best[:, None], []
    for token, parent in zip(reversed(tokens), reversed(parents)):
        path.append(token.gather(1, beam))
        beam = parent.gather(1, beam)
    rows = torch.cat(path[::-1], dim=1).tolist()  # (B, steps)
    return _trim(rows, eos_id)
