"""Aligned many-to-many: one tag per token -- part-of-speech tagging, named entities -- or
per numeric frame (voice activity, per-frame events).

    inputs (B, T) -> word embedding [+ char features] [+ bigram features] -> Stack (B, T, H)
    or frames (B, T, D) ---------------------------------------> Stack (B, T, H)
    -> dropout -> linear emissions (B, T, K) -> softmax per step, a linear-chain CRF, or
    K independent sigmoids (multi-label: a set of labels per step)

Character features (``char_vocab_size`` given, batch key ``chars`` (B, T, C)) are a small
character BiLSTM (its two final states) or a CNN (max over the word's characters) per word,
concatenated to the word embedding: they carry capitalisation, suffixes and unknown words,
which POS and NER accuracy need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import exporting
from ..data.batching import IGNORE_INDEX
from ..layers import Stack
from ._common import (BigramFeatures, InputLayer, build_stack, check_batch, check_choice, check_int,
                      check_rate, check_tokens, check_values, encoder_config, hidden_of, length_mask)
from .bilm import ContextualFeatures, contextual_config
from .crf import CRF, SCHEMES

__all__ = ["SequenceTagger", "CharFeatures", "OUTPUTS", "CHAR_ENCODERS", "THRESHOLD"]

OUTPUTS = ("softmax", "crf", "sigmoid")
THRESHOLD = 0.5  # a sigmoid output predicts label k at a step where p_k >= THRESHOLD
CHAR_ENCODERS = ("lstm", "cnn")


class CharFeatures(nn.Module):
    """Char ids (B, T, C), 0 = padding -> one vector per word (B, T, F).

    ``lstm``: a one-layer character BiLSTM, F = 2 * hidden_size, its forward and backward final
    states. ``cnn``: a width-3 convolution, F = hidden_size, max over the word's characters.
    A word without characters (padding) gets zeros.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        if kind == "lstm":
            self.rnn = Stack(embedding_dim, [hidden_size], cell="lstm", bidirectional=True)
            self.output_size = 2 * hidden_size
        else:
            self.conv = nn.Conv1d(embedding_dim, hidden_size, kernel_size=3, padding=1)
            self.output_size = hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        B, T, C = chars.shape
        words = chars.reshape(B * T, C)
        n = (words != 0).sum(1)  # characters per word
        if exporting():
            # The words that are there, chosen by the data: W is a size only known when the
            # graph runs (a padded batch holds many empty slots, and characters cost per slot).
            real = (n > 0).nonzero()[:, 0]  # (W,)
            torch._check(real.shape[0] >= 1)  # every sequence has a first word
            feats = self._features(words.index_select(0, real), n.index_select(0, real))
            out = words.new_zeros(B * T, self.output_size, dtype=feats.dtype).index_copy(0, real, feats)
            return out.view(B, T, self.output_size)
        out = words.new_zeros(B * T, self.output_size, dtype=self.embedding.weight.dtype)
        real = n > 0
        if bool(real.any()):
            out = out.index_put((real.nonzero()[:, 0],), self._features(words[real], n[real]))
        return out.view(B, T, self.output_size)

    def _features(self, w: Tensor, n_w: Tensor) -> Tensor:
        """Char ids (W, C) of W words with n_w >= 1 characters each -> (W, F)."""
        e = self.embedding(w)  # (W, C, E)
        if self.kind == "lstm":
            _, states = self.rnn(e, lengths=n_w)
            return hidden_of(states[-1])  # (W, 2H)
        # Padding chars embed to zeros, as the convolution's own zero padding does, so a word's
        # features do not depend on C.
        h = self.conv(e.transpose(1, 2)).transpose(1, 2)  # (W, C, H)
        h = h.masked_fill(~length_mask(n_w, w.shape[1])[..., None], float("-inf"))
        return h.max(dim=1).values


class SequenceTagger(nn.Module):
    """Tag every token of a sequence.

    Args (keyword-only):
        vocab_size: V, word vocabulary (id 0 = padding); or
        input_size: D, numeric frames (B, T, D) read straight by the encoder, as the
            classifier reads them -- give exactly one of the two.
        num_tags: K.
        embedding_dim: E, word embedding size (ignored for frames).
        encoder: ``rnnkit.Stack`` options (see ``models.ENCODER_DEFAULTS``); bidirectional
            encoders are the usual choice.
        output: ``softmax`` (one tag per step), ``crf`` (linear-chain CRF, Viterbi) or
            ``sigmoid`` (K independent labels per step, binary cross-entropy, a label is
            predicted where its probability is >= 0.5).
        tags: the K tag names, needed by ``constraints``.
        constraints: None, ``bio`` or ``iobes``: forbid transitions the scheme does not allow
            (``crf`` only).
        char_vocab_size: enables character features from batch key ``chars`` (B, T, C).
        char_encoder: ``lstm | cnn``; char_embedding_dim, char_hidden_size: their sizes.
        dropout: on the word representation and on the encoder output.
        max_length: longest sentence accepted (None: any).
        contextual: a pre-trained biLM's vectors as extra word features (``ContextualFeatures``:
            ``{"bilm": BiLanguageModel config, "freeze": True}``), joined to the word embedding.
        bigram_buckets: enables bigram features (``BigramFeatures``): each token's bigrams with
            its left and right neighbours, hashed into this many rows of
            ``bigram_embedding_dim``, joined to the token embedding -- for character-level
            Chinese or Japanese tagging, where a token is one character.

    Batches: ``inputs`` (B, T) ids or (B, T, D) float frames, ``lengths`` (B,), ``labels``
    (B, T) with -100 at padding (softmax output also skips -100 inside a sentence; the CRF needs
    every real tag), or for ``sigmoid`` float multi-hot targets (B, T, K) in {0, 1} (steps past
    each length are ignored). ``predict(batch)`` returns one list of L tag ids per sentence; for
    ``sigmoid``, one list of L sorted lists of label ids (the set predicted at each step).
    """

    def __init__(self, *, vocab_size: int | None = None, num_tags: int, input_size: int | None = None,
                 embedding_dim: int = 64,
                 encoder: dict | None = None, output: str = "softmax", tags: list[str] | None = None,
                 constraints: str | None = None, char_vocab_size: int | None = None,
                 char_encoder: str = "lstm", char_embedding_dim: int = 16, char_hidden_size: int = 32,
                 dropout: float = 0.0, max_length: int | None = None,
                 contextual: dict | None = None, bigram_buckets: int | None = None,
                 bigram_embedding_dim: int = 50) -> None:
        super().__init__()
        check_choice("output", output, OUTPUTS)
        # K independent sigmoids can be one label (speech / not speech); a softmax needs two
        check_int("num_tags", num_tags, low=1 if output == "sigmoid" else 2)
        check_choice("constraints", constraints, (None, *SCHEMES))
        check_choice("char_encoder", char_encoder, CHAR_ENCODERS)
        check_int("char_vocab_size", char_vocab_size, low=2, optional=True)
        check_int("char_embedding_dim", char_embedding_dim)
        check_int("char_hidden_size", char_hidden_size)
        check_rate("dropout", dropout)
        check_int("max_length", max_length, optional=True)
        if tags is not None:
            if not isinstance(tags, (list, tuple)) or len(tags) != num_tags or not all(
                    isinstance(t, str) for t in tags):
                raise ValueError(f"tags must be a list of num_tags = {num_tags} tag names; got {tags!r}")
            tags = list(tags)
        if constraints is not None and output != "crf":
            raise ValueError(f"constraints={constraints!r} needs output='crf' (a softmax output has no "
                             f"transitions to constrain); got output={output!r}")
        if input_size is not None and (char_vocab_size is not None or contextual is not None
                                       or bigram_buckets is not None):
            raise ValueError("char_vocab_size, contextual and bigram_buckets are features of words: they need "
                             f"token-id inputs (vocab_size), not numeric frames (input_size={input_size!r})")
        encoder = encoder_config(encoder)
        contextual = contextual_config(contextual)
        self.config = dict(vocab_size=vocab_size, num_tags=num_tags, input_size=input_size,
                           embedding_dim=embedding_dim,
                           encoder=encoder, output=output, tags=tags, constraints=constraints,
                           char_vocab_size=char_vocab_size, char_encoder=char_encoder,
                           char_embedding_dim=char_embedding_dim, char_hidden_size=char_hidden_size,
                           dropout=dropout, max_length=max_length, contextual=contextual)
        if bigram_buckets is not None:  # only when given: older checkpoints' configs stay as they were
            self.config.update(bigram_buckets=bigram_buckets, bigram_embedding_dim=bigram_embedding_dim)
        self.num_tags, self.output_kind, self.max_length = num_tags, output, max_length
        self.input = InputLayer(vocab_size=vocab_size, input_size=input_size, embedding_dim=embedding_dim)
        self.chars = None
        width = self.input.output_size
        if char_vocab_size is not None:
            self.chars = CharFeatures(char_vocab_size, char_embedding_dim, char_hidden_size, char_encoder)
            width += self.chars.output_size
        self.bigrams = None
        if bigram_buckets is not None:
            self.bigrams = BigramFeatures(vocab_size, bigram_buckets, bigram_embedding_dim)
            width += self.bigrams.output_size
        self.contextual = None
        if contextual is not None:
            self.contextual = ContextualFeatures(**contextual, vocab_size=vocab_size)
            width += self.contextual.output_size
        self.drop = nn.Dropout(dropout)
        self.encoder = build_stack(width, encoder)
        self.emissions = nn.Linear(self.encoder.output_size, num_tags)
        self.crf = CRF(num_tags, tags=tags, scheme=constraints) if output == "crf" else None

    @property
    def device(self) -> torch.device:
        return self.emissions.weight.device

    def _chars(self, batch: dict, B: int, T: int) -> Tensor:
        check_batch(batch, ("chars",))
        chars, V = batch["chars"], self.chars.embedding.num_embeddings
        if chars.dim() != 3 or tuple(chars.shape[:2]) != (B, T) or chars.is_floating_point() or chars.shape[2] < 1:
            raise ValueError(f"batch['chars'] must be int64 char ids of shape (B, T, C) = ({B}, {T}, C); "
                             f"got {chars.dtype} {tuple(chars.shape)}")
        lo, hi = (int(chars.min()), int(chars.max())) if not exporting() else (0, 0)
        if lo < 0 or hi >= V:
            raise ValueError(f"batch['chars'] must hold char ids in [0, {V - 1}] (char_vocab_size = {V}); "
                             f"got min {lo}, max {hi}")
        return chars.long().to(self.device)

    def encoder_input(self, batch: dict) -> tuple[Tensor, Tensor]:
        """What the encoder reads: word embedding [+ char features] [+ contextual features]
        (B, T, W), after dropout, and the lengths (B,)."""
        if self.input.vocab_size is None:  # frames (B, T, D), padding zeroed; not dropped, as the
            # classifier does not drop numeric inputs (noise the model cannot undo)
            return check_values(batch, input_size=self.input.input_size, max_length=self.max_length,
                                device=self.device, dtype=self.emissions.weight.dtype)
        ids, lengths = check_tokens(batch, vocab_size=self.input.vocab_size,
                                    max_length=self.max_length, device=self.device)
        x = self.input(ids)  # (B, T, E)
        if self.chars is not None:
            x = torch.cat([x, self.chars(self._chars(batch, *ids.shape))], dim=-1)  # (B, T, E+F)
        if self.bigrams is not None:
            x = torch.cat([x, self.bigrams(ids, lengths)], dim=-1)  # (B, T, ... + 2D)
        if self.contextual is not None:
            x = torch.cat([x, self.contextual(ids, lengths)], dim=-1)  # (B, T, E+F+2H)
        return self.drop(x), lengths

    def forward(self, batch: dict) -> Tensor:
        """Emission scores (B, T, K); steps past each length are never scored by loss or predict."""
        x, lengths = self.encoder_input(batch)
        out, _ = self.encoder(x, lengths=lengths)
        return self.emissions(self.drop(out))

    def _multi_hot(self, batch: dict, lengths: Tensor) -> Tensor:
        """Sigmoid targets (B, T, K) in {0, 1}, zero past each length."""
        check_batch(batch, ("labels",))
        y, K = batch["labels"], self.num_tags
        B, T = len(lengths), int(batch["inputs"].shape[1])
        if y.dim() != 3 or tuple(y.shape) != (B, T, K) or not y.is_floating_point():
            raise ValueError(f"batch['labels'] for output='sigmoid' must be float multi-hot targets of shape "
                             f"(B, T, K) = ({B}, {T}, {K}); got {y.dtype} {tuple(y.shape)}")
        valid = length_mask(lengths, T)[..., None]  # (B, T, 1)
        y = y.to(self.device, self.emissions.weight.dtype)
        if not bool(((y == 0) | (y == 1))[valid.expand_as(y)].all()):
            raise ValueError("batch['labels'] for output='sigmoid' must hold 0 or 1 at every real step")
        return y * valid

    def _labels(self, batch: dict, lengths: Tensor) -> Tensor:
        check_batch(batch, ("labels",))
        y = batch["labels"]
        B, T = len(lengths), int(batch["inputs"].shape[1])
        if y.dim() != 2 or tuple(y.shape) != (B, T) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"batch['labels'] must be int64 tag ids of shape (B, T) = ({B}, {T}); "
                             f"got {y.dtype} {tuple(y.shape)}")
        y = y.long().to(self.device)
        valid = length_mask(lengths, T)
        real = y[valid]
        ok = (real >= 0) & (real < self.num_tags)
        if self.crf is None:
            ok |= real == IGNORE_INDEX
        if not bool(ok.all()):
            bad = real[~ok]
            extra = "" if self.crf is not None else f" or {IGNORE_INDEX} (ignored)"
            raise ValueError(f"batch['labels'] must hold tag ids in [0, {self.num_tags - 1}] (num_tags = "
                             f"{self.num_tags}){extra} at every real token; got {bad[:5].tolist()}")
        return y.masked_fill(~valid, IGNORE_INDEX)

    def loss(self, batch: dict) -> Tensor:
        """Softmax: mean cross-entropy per labelled token. CRF: mean NLL per sentence. Sigmoid:
        mean binary cross-entropy per (real step, label)."""
        scores = self(batch)
        lengths = batch["lengths"].long().to(self.device)
        if self.output_kind == "sigmoid":
            y = self._multi_hot(batch, lengths)
            valid = length_mask(lengths, scores.shape[1])  # (B, T)
            return F.binary_cross_entropy_with_logits(scores[valid], y[valid])
        y = self._labels(batch, lengths)
        if self.crf is None:
            return F.cross_entropy(scores.reshape(-1, self.num_tags), y.reshape(-1), ignore_index=IGNORE_INDEX)
        return self.crf.nll(scores, y.clamp(min=0), lengths).mean()

    def loss_count(self, batch: dict) -> int:
        """What ``loss`` is a mean over: labelled tokens (softmax) or sentences (CRF); the
        trainer weights each process's loss by it under torchrun."""
        lengths = batch["lengths"].long()
        if self.crf is not None:
            return int(lengths.shape[0])
        if self.output_kind == "sigmoid":
            return int(lengths.sum()) * self.num_tags
        y = batch["labels"]
        return int((length_mask(lengths.to(y.device), y.shape[1]) & (y != IGNORE_INDEX)).sum())

    @torch.no_grad()
    def predict(self, batch: dict) -> list[list[int]] | list[list[list[int]]]:
        """The tag ids of each sentence, one list of its L tags each (Viterbi for the CRF);
        sigmoid: per step, the sorted ids of the labels with probability >= 0.5."""
        scores = self(batch)
        lengths = batch["lengths"].long().to(self.device)
        if self.output_kind == "sigmoid":
            on = (torch.sigmoid(scores) >= THRESHOLD).tolist()  # (B, T, K)
            return [[[k for k, v in enumerate(step) if v] for step in row[:n]]
                    for row, n in zip(on, lengths.tolist())]
        if self.crf is not None:
            return self.crf.decode(scores, lengths)
        best = scores.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, lengths.tolist())]
