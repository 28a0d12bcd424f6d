"""Many-to-one: one label (or value) per sequence -- sentiment, text or series classification,
regression.

    inputs (B, T) ids or (B, T, D) values -> embedding -> Stack -> pool over time (B, F)
    -> dropout -> linear (B, K)

Pooling, always masked by length so that padding never changes the result:

* ``last`` -- a unidirectional top layer's output at each sequence's true end; for a
  bidirectional top layer, the forward state there joined with the backward state after it
  has read position 0 (both directions' final h, F = Hf + Hb whatever the merge).
* ``mean`` / ``max`` -- over the real steps of the top layer's output.
* ``attention`` -- additive attention with a learned query over the real steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (BigramFeatures, InputLayer, build_stack, check_batch, check_choice, check_class_labels,
                      check_int, check_rate, check_tokens, check_values, encoder_config,
                      final_features, final_size, length_mask)
from .attention import Attention
from .bilm import ContextualFeatures, contextual_config

__all__ = ["SequenceClassifier", "POOLINGS", "TASKS"]

POOLINGS = ("last", "mean", "max", "attention")
TASKS = ("classification", "regression")


class SequenceClassifier(nn.Module):
    """Classify (or regress) whole sequences.

    Args (keyword-only):
        num_classes: K, classes for ``classification``, target values for ``regression``.
        vocab_size: V for token-id inputs (B, T); or
        input_size: D for numeric inputs (B, T, D) -- give exactly one of the two.
        embedding_dim: E, token embedding size (ignored for numeric inputs).
        encoder: ``rnnkit.Stack`` options (see ``models.ENCODER_DEFAULTS``).
        pooling: ``last | mean | max | attention``.
        task: ``classification`` (cross-entropy on ``labels`` (B,) int64) or ``regression``
            (mean squared error on ``labels`` (B,) float when K = 1, or (B, K)).
        dropout: on the embeddings and on the pooled features.
        max_length: longest sequence accepted (None: any).
        contextual: a pre-trained biLM's vectors as extra token features (``ContextualFeatures``:
            ``{"bilm": BiLanguageModel config, "freeze": True}``), token-id inputs only.
        bigram_buckets: enables bigram features (``BigramFeatures``): each token's bigrams with
            its neighbours, hashed into this many rows of ``bigram_embedding_dim``, joined to the
            token embedding (character-level Chinese text); token-id inputs only.

    ``forward(batch)`` gives logits or values (B, K); ``predict(batch)`` class ids (B,) or
    values (B, K).
    """

    def __init__(self, *, num_classes: int, vocab_size: int | None = None,
                 input_size: int | None = None, embedding_dim: int = 64, encoder: dict | None = None,
                 pooling: str = "last", task: str = "classification", dropout: float = 0.0,
                 max_length: int | None = None, contextual: dict | None = None,
                 bigram_buckets: int | None = None, bigram_embedding_dim: int = 50) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        check_choice("task", task, TASKS)
        check_int("num_classes", num_classes, low=2 if task == "classification" else 1)
        check_rate("dropout", dropout)
        check_int("max_length", max_length, optional=True)
        encoder = encoder_config(encoder)
        contextual = contextual_config(contextual)
        if contextual is not None and vocab_size is None:
            raise ValueError("contextual features are per token: they need token-id inputs (vocab_size), "
                             f"not numeric values (input_size={input_size!r})")
        if bigram_buckets is not None and vocab_size is None:
            raise ValueError("bigram features pair neighbouring tokens: they need token-id inputs (vocab_size), "
                             f"not numeric values (input_size={input_size!r})")
        self.config = dict(num_classes=num_classes, vocab_size=vocab_size, input_size=input_size,
                           embedding_dim=embedding_dim, encoder=encoder, pooling=pooling, task=task,
                           dropout=dropout, max_length=max_length, contextual=contextual)
        if bigram_buckets is not None:  # only when given: older checkpoints' configs stay as they were
            self.config.update(bigram_buckets=bigram_buckets, bigram_embedding_dim=bigram_embedding_dim)
        self.num_classes, self.pooling, self.task, self.max_length = num_classes, pooling, task, max_length
        self.input = InputLayer(vocab_size=vocab_size, input_size=input_size,
                                embedding_dim=embedding_dim, dropout=dropout)
        self.contextual = None
        width = self.input.output_size
        self.bigrams = None
        if bigram_buckets is not None:  # dropped as the embeddings are
            self.bigrams = BigramFeatures(vocab_size, bigram_buckets, bigram_embedding_dim, dropout)
            width += self.bigrams.output_size
        if contextual is not None:
            self.contextual = ContextualFeatures(**contextual, vocab_size=vocab_size)
            width += self.contextual.output_size
        self.encoder = build_stack(width, encoder)
        features = final_size(self.encoder) if pooling == "last" else self.encoder.output_size
        self.attention = None
        if pooling == "attention":
            self.query = nn.Parameter(torch.randn(features) / features ** 0.5)
            self.attention = Attention(features, features, kind="additive")
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(features, num_classes)

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    def _inputs(self, batch) -> tuple[Tensor, Tensor]:
        if self.input.vocab_size is not None:
            return check_tokens(batch, vocab_size=self.input.vocab_size,
                                max_length=self.max_length, device=self.device)
        return check_values(batch, input_size=self.input.input_size, max_length=self.max_length,
                            device=self.device, dtype=self.output.weight.dtype)

    def pool(self, out: Tensor, states: list, lengths: Tensor) -> Tensor:
        """Top-layer output (B, T, H) and final states -> one vector per sequence (B, F)."""
        if self.pooling == "last":
            return final_features(out, states, lengths)
        valid = length_mask(lengths, out.shape[1])[..., None]  # (B, T, 1)
        if self.pooling == "mean":
            return (out * valid).sum(1) / lengths[:, None].to(out.dtype)
        if self.pooling == "max":
            return out.masked_fill(~valid, float("-inf")).max(dim=1).values
        query = self.query.expand(out.shape[0], -1)
        return self.attention(query, out, lengths)[0]

    def encoder_input(self, batch: dict) -> tuple[Tensor, Tensor]:
        """What the encoder reads, (B, T, D) -- embeddings [+ contextual features] or values --
        and the lengths (B,)."""
        x, lengths = self._inputs(batch)
        e = self.input(x)
        if self.bigrams is not None:
            e = torch.cat([e, self.bigrams(x, lengths)], dim=-1)  # (B, T, E+2D)
        if self.contextual is not None:
            e = torch.cat([e, self.contextual(x, lengths)], dim=-1)  # (B, T, E+2H)
        return e, lengths

    def forward(self, batch: dict) -> Tensor:
        """Logits (classification) or values (regression), (B, K)."""
        e, lengths = self.encoder_input(batch)
        out, states = self.encoder(e, lengths=lengths)  # (B, T, H)
        return self.output(self.drop(self.pool(out, states, lengths)))

    def _labels(self, batch, B: int) -> Tensor:
        if self.task == "classification":
            return check_class_labels(batch, "labels", self.num_classes, B, self.device)
        check_batch(batch, ("labels",))
        y, K = batch["labels"], self.num_classes
        if not y.is_floating_point() or not (tuple(y.shape) == (B, K) or (K == 1 and tuple(y.shape) == (B,))):
            want = f"(B,) = ({B},) or (B, K) = ({B}, {K})" if K == 1 else f"(B, K) = ({B}, {K})"
            raise ValueError(f"batch['labels'] for regression must be float targets of shape {want}; "
                             f"got {y.dtype} {tuple(y.shape)}")
        return y.reshape(B, K).to(self.device, self.output.weight.dtype)

    def loss(self, batch: dict) -> Tensor:
        """Mean cross-entropy (classification) or mean squared error (regression)."""
        scores = self(batch)
        y = self._labels(batch, scores.shape[0])
        if self.task == "classification":
            return F.cross_entropy(scores, y)
        return F.mse_loss(scores, y)

    @torch.no_grad()
    def predict(self, batch: dict) -> Tensor:
        """Class ids (B,) int64, or predicted values (B, K)."""
        scores = self(batch)
        return scores.argmax(-1) if self.task == "classification" else scores
