"""One-to-many: a sequence generated from a condition -- a class id or a vector.

    condition (B,) id -> embedding (B, C), or (B, C) vector
        --init-->  initial state of every decoder layer (h0 = tanh(W c), c0 = U c for LSTM)
        --input--> concatenated to every decoder input
    targets (B, T') BOS .. EOS -> embedding -> unidirectional Stack -> linear (B, T'-1, V)

Generation samples as the LanguageModel does (greedy, temperature, top-k).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (build_stack, check_batch, check_choice, check_class_labels, check_int,
                      check_rate, encoder_config)
from .decoding import STRATEGIES, forbid, greedy, sample
from .seq2seq import DECODER_REASON, Bridge, check_targets, target_count, target_loss

__all__ = ["Generator", "CONDITIONINGS"]

CONDITIONINGS = ("init", "input")


class Generator(nn.Module):
    """Condition -> token sequence.

    Args (keyword-only):
        vocab_size: V (id 0 = padding).
        num_classes: K, for a class-id condition (B,); or
        condition_size: C, for a vector condition (B, C) -- give exactly one.
        condition_dim: size of the learned class embedding (class conditions only).
        embedding_dim: E, token embedding size.
        decoder: ``rnnkit.Stack`` options (unidirectional).
        conditioning: ``init`` (the condition sets the initial state) or ``input`` (it is fed
            at every step).
        bos_id, eos_id: the specials that start and end a sequence.
        max_length: most tokens ``predict`` generates (EOS included).
        dropout: on token embeddings and decoder outputs.

    Batches: ``condition``, ``targets`` (B, T') BOS .. EOS, ``target_lengths``; ``predict``
    needs only ``condition``.
    """

    def __init__(self, *, vocab_size: int, num_classes: int | None = None,
                 condition_size: int | None = None, condition_dim: int = 32, embedding_dim: int = 64,
                 decoder: dict | None = None, conditioning: str = "init", bos_id: int = 2,
                 eos_id: int = 3, max_length: int = 50, dropout: float = 0.0) -> None:
        super().__init__()
        if (num_classes is None) == (condition_size is None):
            raise ValueError("give exactly one of num_classes (class-id conditions) or condition_size "
                             f"(vector conditions); got num_classes={num_classes!r}, "
                             f"condition_size={condition_size!r}")
        check_int("vocab_size", vocab_size, low=4)
        check_int("num_classes", num_classes, optional=True)
        check_int("condition_size", condition_size, optional=True)
        check_int("condition_dim", condition_dim)
        check_int("embedding_dim", embedding_dim)
        check_choice("conditioning", conditioning, CONDITIONINGS)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            check_int(name, value, low=0)
            if value >= vocab_size:
                raise ValueError(f"{name} must be a token id in [0, {vocab_size - 1}]; got {value}")
        check_int("max_length", max_length)
        check_rate("dropout", dropout)
        decoder = encoder_config(decoder, name="decoder", unidirectional_reason=DECODER_REASON)
        self.config = dict(vocab_size=vocab_size, num_classes=num_classes, condition_size=condition_size,
                           condition_dim=condition_dim, embedding_dim=embedding_dim, decoder=decoder,
                           conditioning=conditioning, bos_id=bos_id, eos_id=eos_id,
                           max_length=max_length, dropout=dropout)
        self.vocab_size, self.num_classes, self.condition_size = vocab_size, num_classes, condition_size
        self.conditioning, self.bos_id, self.eos_id = conditioning, bos_id, eos_id
        self.class_embedding = nn.Embedding(num_classes, condition_dim) if num_classes else None
        C = condition_dim if num_classes else condition_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.decoder = build_stack(embedding_dim + (C if conditioning == "input" else 0), decoder)
        self.bridge = Bridge(C, self.decoder) if conditioning == "init" else None
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(self.decoder.output_size, vocab_size)

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    def _condition(self, batch: dict) -> Tensor:
        """The condition as a vector (B, C)."""
        B = check_batch(batch, ("condition",))
        if self.class_embedding is not None:
            return self.class_embedding(check_class_labels(batch, "condition", self.num_classes, B, self.device))
        c = batch["condition"]
        if c.dim() != 2 or not c.is_floating_point() or c.shape[1] != self.condition_size:
            raise ValueError(f"batch['condition'] must be float vectors of shape (B, C) with C = condition_size "
                             f"= {self.condition_size}; got {c.dtype} {tuple(c.shape)}")
        return c.to(self.device, self.output.weight.dtype)

    def _start(self, c: Tensor) -> list | None:
        return self.bridge(c) if self.bridge is not None else None

    def _inputs(self, tokens: Tensor, c: Tensor) -> Tensor:
        x = self.drop(self.embedding(tokens))  # (B, T, E) or (B, E)
        if self.conditioning == "input":
            c = c[:, None].expand(-1, x.shape[1], -1) if x.dim() == 3 else c
            x = torch.cat([x, c], dim=-1)
        return x

    def forward(self, batch: dict) -> Tensor:
        """Teacher-forced next-token logits (B, T'-1, V), position t predicting targets[:, t+1]."""
        c = self._condition(batch)
        targets, n = check_targets(batch, vocab_size=self.vocab_size, device=self.device)
        if len(n) != len(c):
            raise ValueError(f"batch['targets'] must have the same B as batch['condition'] ({len(c)}); got {len(n)}")
        out, _ = self.decoder(self._inputs(targets[:, :-1], c), self._start(c), lengths=n - 1)
        return self.output(self.drop(out))

    def loss(self, batch: dict) -> Tensor:
        """Mean cross-entropy per real target token (EOS included, BOS not)."""
        return target_loss(self(batch), batch)

    def loss_count(self, batch: dict) -> int:
        """What ``loss`` is a mean over: the real target tokens (EOS included, BOS not)."""
        return target_count(batch)

    @torch.no_grad()
    def predict(self, batch: dict, *, strategy: str = "greedy", temperature: float = 1.0,
                top_k: int | None = None, seed: int | None = None,
                max_length: int | None = None) -> list[list[int]]:
        """Generate from each ``condition``: token ids without BOS and EOS. ``strategy`` is
        ``greedy`` or ``sample`` (``temperature``, ``top_k``; ``seed`` for reproducibility)."""
        check_choice("strategy", strategy, STRATEGIES)
        max_length = self.config["max_length"] if max_length is None else max_length
        c = self._condition(batch)

        def step(token: Tensor, bundle):
            states, cond = bundle
            y, states = self.decoder.step(self._inputs(token, cond), states)
            return forbid(self.output(y).log_softmax(-1), [0, self.bos_id]), (states, cond)

        bos = torch.full((len(c),), self.bos_id, dtype=torch.long, device=self.device)
        log_probs, bundle = step(bos, (self._start(c), c))
        if strategy == "greedy":
            return greedy(step, bundle, log_probs, max_length=max_length, eos_id=self.eos_id)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        return sample(step, bundle, log_probs, max_length=max_length, eos_id=self.eos_id,
                      temperature=temperature, top_k=top_k, generator=generator)
