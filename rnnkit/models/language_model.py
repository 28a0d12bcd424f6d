"""Causal many-to-many: predict the next token at every step (word or character level -- the
model is the same, only the vocabulary differs).

    inputs (B, T) -> embedding -> unidirectional Stack (B, T, H) -> [proj H->E] -> linear (B, T, V)

Truncated BPTT: with ``carry_state=True`` each ``loss(batch)`` starts from the state the
previous batch ended in, detached so gradients stop at the batch boundary -- batches must then
be consecutive windows of the same streams (``rnnkit.data.LMStream``). The carried state starts
afresh when the batch size changes, when the model switches between train and eval mode (so a
trainer's epoch and its evaluation each read their stream from the start) and on
``reset_state()``. ``loss_and_state`` offers the same explicitly, for a caller that keeps the
state itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import IGNORE_INDEX
from ._common import (InputLayer, build_stack, check_batch, check_bool, check_choice, check_int,
                      check_rate, check_tokens, detach_state, encoder_config, last_step, length_mask)
from .decoding import STRATEGIES, forbid, greedy, sample

__all__ = ["LanguageModel", "TiedAdaptiveSoftmax", "BIDIRECTIONAL_LM_ERROR"]

BIDIRECTIONAL_LM_ERROR = (
    "a language model predicts each next token from the tokens before it, and a backward "
    "direction reads the very tokens it must predict: it trains to a near-perfect perplexity "
    "(~1.1) by copying them and then generates garbage such as 'travellerererer' when those "
    "tokens are not there (d2l.ai's bidirectional RNN warning). Use a unidirectional encoder")


def _check_cutoffs(cutoffs, vocab_size: int, tie_weights: bool, div) -> tuple[list[int] | None, float]:
    """The checked cutoffs (None: no adaptive softmax) and the cluster divisor (default: 4 untied,
    1 tied)."""
    if div is None:
        div = 1.0 if tie_weights else 4.0
    if isinstance(div, bool) or not isinstance(div, (int, float)) or not div >= 1:
        raise ValueError(f"adaptive_div must be a number >= 1 (each tail cluster's projection is the "
                         f"previous one's divided by it); got {div!r}")
    if cutoffs is None:
        return None, float(div)
    if tie_weights and div != 1:
        raise ValueError(f"with tie_weights the adaptive softmax scores every word by its embedding vector, "
                         f"so each cluster's projection keeps all E dimensions: adaptive_div must be 1 (or "
                         f"left out); got {div!r}")
    if not isinstance(cutoffs, (list, tuple)) or not cutoffs or \
            any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs):
        raise ValueError(f"adaptive_cutoffs must be a non-empty list of token ids; got {cutoffs!r}")
    cutoffs = list(cutoffs)
    if cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] > vocab_size - 1:
        raise ValueError(f"adaptive_cutoffs must increase strictly and lie in [1, {vocab_size - 1}] (the "
                         f"vocabulary has {vocab_size} ids, the most frequent first); got {cutoffs}")
    return cutoffs, float(div)


class TiedAdaptiveSoftmax(nn.Module):
    """An adaptive softmax whose word vectors are the input embedding's rows (Grave et al. 2017,
    tied as Baevski & Auli 2019 tie adaptive input and output).

    The head scores the ids below ``cutoffs[0]`` by ``h . e_w + b_w`` and each tail cluster by a
    vector of its own; a word of cluster ``i`` has ``log p(cluster i | h) + log p(w | cluster i, h)``
    with the second scored by ``(P_i h) . e_w + b_w`` over the cluster's words only. ``P_i`` is an
    E x E projection, initialised to the identity, and a cluster starts with the log of its size
    as its score, so at the start every word is scored about as in a tied full softmax. The
    embedding matrix ``weight`` (V x E) is an argument of every call, not a parameter here: it
    is stored once, in the embedding.
    """

    def __init__(self, dim: int, vocab_size: int, cutoffs: list[int]) -> None:
        super().__init__()
        self.bounds = list(cutoffs) + [vocab_size]
        n = len(cutoffs)
        self.cluster = nn.Linear(dim, n)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.tail = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n))
        # each cluster's first id, for bucketize (not in the state_dict: the config gives it)
        self.register_buffer("starts", torch.tensor(cutoffs), persistent=False)
        with torch.no_grad():  # at the start every id about equally likely, tail ids too
            for proj in self.tail:
                proj.weight.copy_(torch.eye(dim))
            self.cluster.weight.mul_(0.01)
            self.cluster.bias.copy_(torch.tensor([math.log(hi - lo) for lo, hi in zip(self.bounds, self.bounds[1:])]))

    def _head(self, h: Tensor, weight: Tensor) -> Tensor:
        c0 = self.bounds[0]
        return torch.cat([F.linear(h, weight[:c0], self.bias[:c0]), self.cluster(h)], -1).log_softmax(-1)

    def _tail(self, i: int, h: Tensor, weight: Tensor) -> Tensor:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return F.linear(self.tail[i](h), weight[lo:hi], self.bias[lo:hi]).log_softmax(-1)

    def log_prob(self, h: Tensor, weight: Tensor) -> Tensor:
        """Log-probabilities of every id, (N, E) -> (N, V)."""
        c0 = self.bounds[0]
        head = self._head(h, weight)
        parts = [head[:, :c0]] + [head[:, c0 + i, None] + self._tail(i, h, weight)
                                  for i in range(len(self.tail))]
        return torch.cat(parts, -1)

    def nll(self, h: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """-log p(target) per row (N,), computing only the head and the clusters of the targets."""
        c0 = self.bounds[0]
        head = self._head(h, weight)
        cluster = torch.bucketize(target, self.starts, right=True)
        lp = head.gather(1, torch.where(target < c0, target, c0 + cluster - 1)[:, None]).squeeze(1)
        for i in range(len(self.tail)):
            rows = (cluster == i + 1).nonzero().squeeze(1)
            if rows.numel():
                tail = self._tail(i, h.index_select(0, rows), weight)
                lp = lp.index_add(0, rows, tail.gather(1, (target[rows] - self.bounds[i])[:, None]).squeeze(1))
        return -lp


class LanguageModel(nn.Module):
    """Next-token language model.

    Args (keyword-only):
        vocab_size: V (id 0 = padding).
        embedding_dim: E.
        encoder: ``rnnkit.Stack`` options; must be unidirectional (see BIDIRECTIONAL_LM_ERROR).
        tie_weights: share the input embedding with the output layer (Press & Wolf 2017); when
            the top hidden size H differs from E, a linear H -> E projection comes first.
        dropout: on the embeddings and on the encoder output.
        adaptive_cutoffs: an adaptive softmax (Grave et al. 2017; ``nn.AdaptiveLogSoftmaxWithLoss``)
            instead of the full output layer: ids below the first cutoff form the head, each
            further range a tail cluster reached through the head, its hidden vector projected
            down by ``adaptive_div`` per cluster. The vocabulary's ids are in order of frequency,
            so the head holds the frequent words, and the training loss computes only the head
            and the clusters of the step's targets: on PTB (V = 10,000) about a third of the
            full softmax's arithmetic (docs/results.md). The model is the same normalised
            distribution at evaluation (``forward`` gives its log-probabilities, B x T x V).
            With ``tie_weights`` the head and the clusters score words by their embedding
            vectors (``TiedAdaptiveSoftmax``): each cluster has an E x E projection instead.
        adaptive_div: the factor by which each tail cluster's projection shrinks (default 4, the
            paper's; with ``tie_weights`` it must be 1, its default there).
        carry_state: truncated BPTT across consecutive batches (see the module docstring).
        eos_id: token that ends generation (None: generate ``max_new_tokens`` always).
        max_length: longest input accepted (None: any).

    Batches: ``inputs`` (B, T), ``lengths`` (B,), ``labels`` (B, T) = the next token of each
    input; labels -100 or 0 (padding) and steps past ``lengths`` are not scored.
    ``predict(batch)`` continues each prompt in ``inputs`` (see ``generate``).
    """

    def __init__(self, *, vocab_size: int, embedding_dim: int = 64, encoder: dict | None = None,
                 tie_weights: bool = False, dropout: float = 0.0, carry_state: bool = False,
                 eos_id: int | None = None, max_length: int | None = None,
                 adaptive_cutoffs: list[int] | None = None, adaptive_div: float | None = None) -> None:
        super().__init__()
        check_bool("tie_weights", tie_weights)
        adaptive_cutoffs, adaptive_div = _check_cutoffs(adaptive_cutoffs, vocab_size, tie_weights, adaptive_div)
        check_bool("carry_state", carry_state)
        check_rate("dropout", dropout)
        check_int("eos_id", eos_id, low=0, optional=True)
        check_int("max_length", max_length, optional=True)
        encoder = encoder_config(encoder, unidirectional_reason=BIDIRECTIONAL_LM_ERROR)
        self.config = dict(vocab_size=vocab_size, embedding_dim=embedding_dim, encoder=encoder,
                           tie_weights=tie_weights, dropout=dropout, carry_state=carry_state,
                           eos_id=eos_id, max_length=max_length)
        if adaptive_cutoffs is not None:  # only when given: older checkpoints' configs stay as they were
            self.config.update(adaptive_cutoffs=adaptive_cutoffs, adaptive_div=float(adaptive_div))
        self.vocab_size, self.carry_state, self.eos_id, self.max_length = (
            vocab_size, carry_state, eos_id, max_length)
        self.input = InputLayer(vocab_size=vocab_size, input_size=None, embedding_dim=embedding_dim,
                                dropout=dropout)
        if eos_id is not None and eos_id >= vocab_size:
            raise ValueError(f"eos_id must be a token id in [0, {vocab_size - 1}]; got {eos_id}")
        if tie_weights:
            # the embedding rows are also the output's word vectors: N(0, 1) rows (nn.Embedding's
            # default) give first logits h . e_w of std ~sqrt(E), a saturated softmax that SGD
            # takes epochs to undo; Zaremba et al. start every weight in +-0.1, as PyTorch's
            # word_language_model does the tied encoder
            with torch.no_grad():
                self.input.embedding.weight.uniform_(-0.1, 0.1)
                self.input.embedding.weight[0].zero_()
        self.encoder = build_stack(embedding_dim, encoder)
        H = self.encoder.output_size
        self.proj = nn.Linear(H, embedding_dim) if tie_weights and H != embedding_dim else nn.Identity()
        self.drop = nn.Dropout(dropout)
        # Tied: the output reuses the embedding matrix itself (no second parameter pointing at
        # it), so each weight is stored once in the state_dict.
        if adaptive_cutoffs is not None and int(H // (adaptive_div ** len(adaptive_cutoffs))) < 1:
            raise ValueError(f"adaptive_div {adaptive_div:g} leaves the last of the {len(adaptive_cutoffs)} tail "
                             f"clusters a projection of {H} // {adaptive_div:g}^{len(adaptive_cutoffs)} = 0 "
                             f"dimensions; lower "
                             f"adaptive_div, give fewer adaptive_cutoffs, or widen the encoder")
        if adaptive_cutoffs is None:
            self.adaptive = None
        elif tie_weights:
            self.adaptive = TiedAdaptiveSoftmax(embedding_dim, vocab_size, adaptive_cutoffs)
        else:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(H, vocab_size, adaptive_cutoffs, div_value=adaptive_div)
        self.output = None if tie_weights or self.adaptive is not None else nn.Linear(H, vocab_size)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if tie_weights and self.adaptive is None else None
        self.state_ = None  # the carried state (carry_state=True), detached
        self._state_training = True  # the mode state_ was computed in

    @property
    def tied_adaptive(self) -> bool:
        return isinstance(self.adaptive, TiedAdaptiveSoftmax)

    @property
    def device(self) -> torch.device:
        return self.input.embedding.weight.device

    def reset_state(self) -> None:
        """Forget the carried state: the next batch starts new streams (e.g. a new epoch)."""
        self.state_ = None

    def _logits(self, out: Tensor) -> Tensor:
        out = self.proj(self.drop(out))
        if self.adaptive is not None:  # log-probabilities: as logits, their softmax is the distribution
            flat = out.reshape(-1, out.shape[-1])
            lp = (self.adaptive.log_prob(flat, self.input.embedding.weight) if self.tied_adaptive
                  else self.adaptive.log_prob(flat))
            return lp.reshape(*out.shape[:-1], -1)
        if self.output is None:
            return F.linear(out, self.input.embedding.weight, self.output_bias)
        return self.output(out)

    def encoder_input(self, batch: dict) -> tuple[Tensor, Tensor]:
        """What the encoder reads: the embeddings (B, T, E), and the lengths (B,)."""
        ids, lengths = check_tokens(batch, vocab_size=self.vocab_size, max_length=self.max_length,
                                    device=self.device)
        return self.input(ids), lengths

    def forward(self, batch: dict, state=None) -> tuple[Tensor, list]:
        """Next-token logits (B, T, V) and the state at each sequence's true end (with an
        adaptive softmax the logits are its log-probabilities)."""
        x, lengths = self.encoder_input(batch)
        out, state = self.encoder(x, state, lengths=lengths)  # (B, T, H)
        return self._logits(out), state

    def _nll(self, batch: dict, state) -> tuple[Tensor, int, list]:
        """Summed NLL over the scored labels, their count, and the final state."""
        if self.adaptive is not None:
            x, lengths = self.encoder_input(batch)
            out, state = self.encoder(x, state, lengths=lengths)
            logits = None
        else:
            logits, state = self(batch, state)
        check_batch(batch, ("labels",))
        y, (B, T) = batch["labels"], batch["inputs"].shape
        if tuple(y.shape) != (B, T) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"batch['labels'] must be int64 next-token ids of shape (B, T) = ({B}, {T}); "
                             f"got {y.dtype} {tuple(y.shape)}")
        y = y.long().to(self.device)
        keep = length_mask(batch["lengths"].long().to(self.device), T) & (y != IGNORE_INDEX) & (y != 0)
        real = y[keep]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.vocab_size):
            raise ValueError(f"batch['labels'] must hold token ids in [0, {self.vocab_size - 1}] (or -100 "
                             f"to skip); got min {int(real.min())}, max {int(real.max())}")
        if logits is None:  # the head and the clusters of these targets only
            hidden = self.proj(self.drop(out))[keep]
            if not real.numel():
                nll = hidden.sum() * 0.0
            elif self.tied_adaptive:
                nll = self.adaptive.nll(hidden, real, self.input.embedding.weight).sum()
            else:
                nll = -self.adaptive(hidden, real).output.sum()
        else:
            nll = F.cross_entropy(logits[keep], real, reduction="sum")
        return nll, int(keep.sum()), state

    def loss_count(self, batch: dict) -> int:
        """The tokens ``loss`` is a mean over (labels not -100 or 0, within lengths)."""
        y, T = batch["labels"], batch["inputs"].shape[1]
        return int((length_mask(batch["lengths"].long().to(y.device), T) & (y != IGNORE_INDEX) & (y != 0)).sum())

    def loss_and_state(self, batch: dict, state=None) -> tuple[Tensor, list]:
        """Mean NLL per scored token starting from ``state``, and the final state (not detached)."""
        nll, n, state = self._nll(batch, state)
        return nll / max(n, 1), state

    def loss(self, batch: dict) -> Tensor:
        """Mean NLL per scored token; with ``carry_state`` it continues the previous batch."""
        if not self.carry_state:
            return self.loss_and_state(batch)[0]
        state = self.state_
        if state is not None and (self._batch_size(state) != batch["inputs"].shape[0]
                                  or self._state_training != self.training):
            state = None  # another batch size or mode cannot continue the same streams
        loss, state = self.loss_and_state(batch, state)
        self.state_, self._state_training = detach_state(state), self.training
        return loss

    @staticmethod
    def _batch_size(state) -> int:
        first = state[0]
        return (first[0] if isinstance(first, tuple) else first).shape[0]

    @torch.no_grad()
    def perplexity(self, batches: Iterable[dict]) -> float:
        """exp(mean NLL per scored token) over ``batches``; with ``carry_state`` the state runs
        through them in order (from a fresh start)."""
        total, count, state = 0.0, 0, None
        for batch in batches:
            if state is not None and (not self.carry_state or self._batch_size(state) != len(batch["inputs"])):
                state = None  # not carried, or another batch size: new streams
            nll, n, state = self._nll(batch, state)
            total, count = total + float(nll), count + n
        if count == 0:
            raise ValueError("perplexity needs at least one scored label; the batches had none")
        return math.exp(total / count)

    def _step(self, token: Tensor, state) -> tuple[Tensor, list]:
        y, state = self.encoder.step(self.input(token), state)  # (N, H)
        return forbid(self._logits(y).log_softmax(-1), [0]), state

    @torch.no_grad()
    def generate(self, batch: dict, *, max_new_tokens: int = 20, strategy: str = "greedy",
                 temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = None, stop_at_eos: bool = True) -> list[list[int]]:
        """Continue each prompt (batch ``inputs``/``lengths``): new token ids per sequence, up to
        ``max_new_tokens``, stopping before ``eos_id`` unless ``stop_at_eos`` is False (a model
        trained on a stream across lines, where ``eos_id`` is a line end: the ids then keep it).
        ``strategy`` is ``greedy`` or ``sample`` (with ``temperature`` and ``top_k``; ``seed``
        makes it reproducible)."""
        check_choice("strategy", strategy, STRATEGIES)
        logits, state = self(batch)
        lengths = batch["lengths"].long().to(self.device)
        log_probs = forbid(last_step(logits, lengths).log_softmax(-1), [0])  # (B, V) after each prompt
        eos_id = self.eos_id if stop_at_eos else None
        if strategy == "greedy":
            return greedy(self._step, state, log_probs, max_length=max_new_tokens, eos_id=eos_id)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        return sample(self._step, state, log_probs, max_length=max_new_tokens, eos_id=eos_id,
                      temperature=temperature, top_k=top_k, generator=generator)

    def predict(self, batch: dict, **options) -> list[list[int]]:
        """``generate(batch, **options)``: the continuation of each prompt."""
        return self.generate(batch, **options)
