"""Many-to-m: encoder-decoder with optional attention -- translation, summarisation,
transliteration.

    source (B, S) -> embedding -> encoder Stack (any; bidirectional allowed) -> memory (B, S, He)
                                                                          -> final states
    target (B, T') -> embedding -> decoder Stack (unidirectional), one token at a time -> (B, V)

How the decoder sees the source (``context``):

* ``init`` -- a bridge maps the encoder's final states (every layer, both directions, h and c)
  to the decoder's initial state of every layer: ``h0_l = tanh(W_l s)``, ``c0_l = U_l s``. It
  handles bidirectional encoders and different depths or sizes on the two sides.
* ``input`` -- as ``init``, and the encoder's top-layer final h (both directions) is also
  concatenated to every decoder input (Cho et al. 2014).
* ``attention`` -- as ``init``, and at each step the previous top decoder state queries the
  memory (``additive`` Bahdanau, ``dot`` / ``general`` Luong, masked on source padding); the
  context joins the decoder input and the output layer's input.

``share_weights=True`` uses one Stack as both encoder and decoder: it reads the source, then
continues from its own final state over the target (Sutskever et al. 2014 with tied weights);
it needs ``context="init"`` and a unidirectional encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Bidirectional, BiState, Stack
from ._common import (build_stack, check_batch, check_bool, check_choice, check_int, check_rate,
                      check_tokens, check_values, encoder_config, hidden_of, length_mask)
from .attention import ATTENTION_KINDS, Attention
from .decoding import beam_search, forbid, greedy

__all__ = ["Seq2Seq", "Bridge", "CONTEXTS", "check_targets"]

CONTEXTS = ("init", "input", "attention")
DECODER_REASON = "a decoder produces one token at a time and has no future tokens to read backward"


def _layer_state_sizes(stack: Stack) -> list[int]:
    """Width of each layer's final h as ``hidden_of`` returns it (Hf + Hb if bidirectional)."""
    return [layer.forward_layer.output_size + layer.backward_layer.output_size
            if isinstance(layer, Bidirectional) else layer.output_size for layer in stack.layers]


def _cells_of(state):
    """c of one layer's final state (both directions joined), or None for non-LSTM states."""
    if isinstance(state, BiState):
        f, b = _cells_of(state.forward), _cells_of(state.backward)
        return None if f is None else torch.cat([f, b], dim=-1)
    return state[1] if isinstance(state, tuple) else None


class Bridge(nn.Module):
    """A vector s (B, S) -> initial states for every layer of a unidirectional ``decoder``:
    h0_l = tanh(W_l s) and, for LSTM layers, c0_l = U_l s."""

    def __init__(self, input_size: int, decoder: Stack) -> None:
        super().__init__()
        self.sizes = [layer.output_size for layer in decoder.layers]
        self.is_lstm = decoder.layers[0].is_lstm
        self.h = nn.Linear(input_size, sum(self.sizes))
        self.c = nn.Linear(input_size, sum(self.sizes)) if self.is_lstm else None

    def forward(self, s: Tensor) -> list:
        hs = torch.tanh(self.h(s)).split(self.sizes, dim=-1)
        if not self.is_lstm:
            return list(hs)
        return list(zip(hs, self.c(s).split(self.sizes, dim=-1)))


def target_count(batch: dict) -> int:
    """The target tokens ``target_loss`` is a mean over: each row's length minus its BOS."""
    return int((batch["target_lengths"].long() - 1).sum())


def target_loss(logits: Tensor, batch: dict) -> Tensor:
    """Mean cross-entropy of teacher-forced logits (B, T'-1, V) per real target token: each
    step predicts the next token of ``batch["targets"]``, EOS included, BOS never."""
    y = batch["targets"][:, 1:].long().to(logits.device)
    keep = length_mask(batch["target_lengths"].long().to(logits.device) - 1, y.shape[1])
    return F.cross_entropy(logits[keep], y[keep])


def check_targets(batch: dict, *, vocab_size: int, device) -> tuple[Tensor, Tensor]:
    """Validate ``targets`` (B, T') (BOS ... EOS) and ``target_lengths`` (B,) in [2, T']."""
    check_batch(batch, ("targets", "target_lengths"))
    y, n = batch["targets"], batch["target_lengths"]
    if y.dim() != 2 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"batch['targets'] must be int64 token ids of shape (B, T'); got {y.dtype} "
                         f"{tuple(y.shape)}")
    B, T = y.shape
    if n.dim() != 1 or len(n) != B or n.is_floating_point():
        raise ValueError(f"batch['target_lengths'] must be int64 of shape (B,) = ({B},); got {tuple(n.shape)}")
    if B == 0:
        raise ValueError("batch is empty: batch['targets'] has no rows; a batch needs at least one sequence")
    if int(n.min()) < 2 or int(n.max()) > T:
        raise ValueError(f"batch['target_lengths'] must be in [2, T'] = [2, {T}] (BOS and EOS included); "
                         f"got min {int(n.min())}, max {int(n.max())}")
    valid = length_mask(n.long(), T)
    real = y[valid]
    if int(real.min()) < 0 or int(real.max()) >= vocab_size:
        raise ValueError(f"batch['targets'] must hold token ids in [0, {vocab_size - 1}] (target vocab_size "
                         f"= {vocab_size}); got min {int(real.min())}, max {int(real.max())}")
    return y.long().masked_fill(~valid, 0).to(device), n.long().to(device)


class Seq2Seq(nn.Module):
    """Encoder-decoder over token ids, or from numeric frames to tokens.

    Args (keyword-only):
        source_vocab_size, target_vocab_size: V_s, V_t (id 0 = padding on both sides).
        source_input_size: D, numeric source frames (B, S, D) read straight by the encoder
            (frames -> tokens), instead of source_vocab_size -- give exactly one of the two.
        embedding_dim: E, both embeddings.
        encoder: ``rnnkit.Stack`` options of the encoder (bidirectional allowed).
        decoder: ``rnnkit.Stack`` options of the decoder (unidirectional; default: the
            encoder's cell and sizes). Ignored with ``share_weights`` (must be None).
        context: ``init | input | attention`` (module docstring).
        attention: ``additive | dot | general``; attention_size: A for ``additive``.
        share_weights: one Stack as encoder and decoder.
        teacher_forcing: probability of feeding the gold previous token in training (else the
            model's own argmax); evaluation loss always uses the gold tokens.
        bos_id, eos_id: target-side specials.
        max_length: longest source accepted (None: any).
        max_target_length: most tokens ``predict`` generates (EOS included).
        beam_size, length_penalty: ``predict``'s defaults (beam_size 1 = greedy).
        dropout: on embeddings and decoder outputs.

    Batches: ``inputs`` (B, S) ids or (B, S, D) float frames, ``lengths``, ``targets`` (B, T')
    BOS..EOS, ``target_lengths``.
    ``forward(batch)`` gives teacher-forced logits (B, T'-1, V_t) for targets[:, 1:];
    ``predict(batch)`` token id lists without BOS and EOS.
    """

    def __init__(self, *, source_vocab_size: int | None = None, target_vocab_size: int,
                 source_input_size: int | None = None, embedding_dim: int = 64,
                 encoder: dict | None = None, decoder: dict | None = None, context: str = "attention",
                 attention: str = "additive", attention_size: int | None = None,
                 share_weights: bool = False, teacher_forcing: float = 1.0, bos_id: int = 2,
                 eos_id: int = 3, max_length: int | None = None, max_target_length: int = 50,
                 beam_size: int = 1, length_penalty: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if (source_vocab_size is None) == (source_input_size is None):
            raise ValueError("give exactly one of source_vocab_size (token ids) or source_input_size (numeric "
                             f"frames); got source_vocab_size={source_vocab_size!r}, "
                             f"source_input_size={source_input_size!r}")
        check_int("source_vocab_size", source_vocab_size, low=2, optional=True)
        check_int("source_input_size", source_input_size, optional=True)
        check_int("target_vocab_size", target_vocab_size, low=4)
        check_int("embedding_dim", embedding_dim)
        check_choice("context", context, CONTEXTS)
        check_choice("attention", attention, ATTENTION_KINDS)
        check_bool("share_weights", share_weights)
        check_rate("teacher_forcing", teacher_forcing, closed=True)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            check_int(name, value, low=0)
            if value >= target_vocab_size:
                raise ValueError(f"{name} must be a target token id in [0, {target_vocab_size - 1}]; got {value}")
        check_int("attention_size", attention_size, optional=True)
        check_int("max_length", max_length, optional=True)
        check_int("max_target_length", max_target_length)
        check_int("beam_size", beam_size)
        check_rate("length_penalty", length_penalty, high=float("inf"))
        check_rate("dropout", dropout)
        encoder = encoder_config(encoder, unidirectional_reason=(
            "share_weights=True runs the encoder's Stack as the decoder" if share_weights else None))
        if share_weights:
            if decoder is not None:
                raise ValueError("decoder must be None with share_weights=True (the encoder's Stack is the "
                                 f"decoder); got {decoder!r}")
            if context != "init":
                raise ValueError("share_weights=True needs context='init': the shared Stack takes the same "
                                 f"input width on both sides; got context={context!r}")
            if source_input_size is not None and source_input_size != embedding_dim:
                raise ValueError("share_weights=True runs one Stack over source frames and target embeddings: "
                                 f"source_input_size ({source_input_size}) must equal embedding_dim "
                                 f"({embedding_dim})")
        else:
            default = {k: encoder[k] for k in ("cell", "hidden_sizes")}
            decoder = encoder_config(decoder if decoder is not None else default, name="decoder",
                                     unidirectional_reason=DECODER_REASON)
        self.config = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                           source_input_size=source_input_size, embedding_dim=embedding_dim, encoder=encoder, decoder=decoder, context=context,
                           attention=attention, attention_size=attention_size, share_weights=share_weights,
                           teacher_forcing=teacher_forcing, bos_id=bos_id, eos_id=eos_id,
                           max_length=max_length, max_target_length=max_target_length,
                           beam_size=beam_size, length_penalty=length_penalty, dropout=dropout)
        self.context, self.share_weights, self.teacher_forcing = context, share_weights, teacher_forcing
        self.bos_id, self.eos_id, self.max_length = bos_id, eos_id, max_length
        self.source_input_size = source_input_size
        self.source_embedding = None if source_vocab_size is None else \
            nn.Embedding(source_vocab_size, embedding_dim, padding_idx=0)
        self.target_embedding = nn.Embedding(target_vocab_size, embedding_dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.encoder = build_stack(embedding_dim if source_input_size is None else source_input_size, encoder)
        He = self.encoder.output_size
        top = _layer_state_sizes(self.encoder)[-1]  # the input context: top final h
        extra = {"init": 0, "input": top, "attention": He}[context]
        # Shared: no second registration, so each weight appears once in the state_dict.
        self.decoder = None if share_weights else build_stack(embedding_dim + extra, decoder)
        Hd = self._decoder.output_size
        self.bridge = None
        if not share_weights:
            s = sum(_layer_state_sizes(self.encoder)) * (2 if self.encoder.layers[0].is_lstm else 1)
            self.bridge = Bridge(s, self._decoder)
        self.attention = Attention(Hd, He, kind=attention, attention_size=attention_size) \
            if context == "attention" else None
        self.output = nn.Linear(Hd + (He if context == "attention" else 0), target_vocab_size)

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    @property
    def _decoder(self) -> Stack:
        return self.encoder if self.decoder is None else self.decoder

    # -------------------------------------------------------------------------- encoding
    def encode(self, batch: dict) -> tuple[list, tuple]:
        """Source -> (decoder initial states, extra), ``extra`` being what each decoder step
        needs besides its state: () | (context,) | (memory, projected memory, lengths)."""
        if self.source_embedding is None:  # frames (B, S, D), padding zeroed, not dropped
            x, lengths = check_values(batch, input_size=self.source_input_size, max_length=self.max_length,
                                      device=self.device, dtype=self.output.weight.dtype)
        else:
            ids, lengths = check_tokens(batch, vocab_size=self.source_embedding.num_embeddings,
                                        max_length=self.max_length, device=self.device)
            x = self.drop(self.source_embedding(ids))
        memory, finals = self.encoder(x, lengths=lengths)  # (B, S, He)
        if self.share_weights:
            return finals, ()
        parts = [hidden_of(s) for s in finals]
        cells = [_cells_of(s) for s in finals]
        if cells[0] is not None:
            parts += cells
        states = self.bridge(torch.cat(parts, dim=-1))
        if self.context == "init":
            return states, ()
        if self.context == "input":
            return states, (hidden_of(finals[-1]),)
        return states, (memory, self.attention.project_keys(memory), lengths)

    def _decode_step(self, token: Tensor, states: list, extra: tuple):
        """One decoder step: previous token (N,) -> (logits (N, V_t), states, attention weights)."""
        x = self.drop(self.target_embedding(token))  # (N, E)
        weights = None
        if self.context == "input":
            x = torch.cat([x, extra[0]], dim=-1)
        elif self.context == "attention":
            memory, projected, lengths = extra
            c, weights = self.attention(hidden_of(states[-1]), memory, lengths, projected_keys=projected)
            x = torch.cat([x, c], dim=-1)  # (N, E + He)
        y, states = self._decoder.step(x, states)  # (N, Hd)
        if self.context == "attention":
            y = torch.cat([y, c], dim=-1)
        return self.output(self.drop(y)), states, weights

    def _step(self, token: Tensor, bundle):
        states, extra = bundle
        logits, states, _ = self._decode_step(token, states, extra)
        return forbid(logits.log_softmax(-1), [0, self.bos_id]), (states, extra)

    # -------------------------------------------------------------------- teacher forcing
    def _teacher_forced(self, batch: dict) -> tuple[Tensor, Tensor | None]:
        states, extra = self.encode(batch)
        targets, n = check_targets(batch, vocab_size=self.target_embedding.num_embeddings, device=self.device)
        if len(n) != len(batch["lengths"]):
            raise ValueError(f"batch['targets'] must have the same B as batch['inputs'] ({len(batch['lengths'])}); "
                             f"got {len(n)}")
        ratio = self.teacher_forcing if self.training else 1.0
        inputs = targets[:, :-1]  # (B, T'-1): BOS .. last token before EOS
        if ratio == 1.0 and self.context != "attention":
            # Every input is known: run the decoder over the whole target at once.
            x = self.drop(self.target_embedding(inputs))
            if self.context == "input":
                x = torch.cat([x, extra[0][:, None].expand(-1, x.shape[1], -1)], dim=-1)
            out, _ = self._decoder(x, states, lengths=n - 1)
            return self.output(self.drop(out)), None
        logits, weights, token = [], [], inputs[:, 0]
        for t in range(inputs.shape[1]):
            if t > 0:
                token = inputs[:, t]
                if ratio < 1.0:
                    own = logits[-1].argmax(-1)
                    token = torch.where(torch.rand(token.shape, device=token.device) < ratio, token, own)
            step_logits, states, w = self._decode_step(token, states, extra)
            logits.append(step_logits)
            weights.append(w)
        stacked = torch.stack(weights, dim=1) if weights[0] is not None else None  # (B, T'-1, S)
        return torch.stack(logits, dim=1), stacked

    def forward(self, batch: dict) -> Tensor:
        """Teacher-forced next-token logits (B, T'-1, V_t), position t predicting targets[:, t+1]."""
        return self._teacher_forced(batch)[0]

    @torch.no_grad()
    def attention_weights(self, batch: dict) -> Tensor:
        """Teacher-forced attention weights (B, T'-1, S): row t is where step t looked."""
        if self.attention is None:
            raise ValueError(f"attention_weights needs context='attention'; this model has context={self.context!r}")
        return self._teacher_forced(batch)[1]

    def loss(self, batch: dict) -> Tensor:
        """Mean cross-entropy per real target token (EOS included, BOS not)."""
        return target_loss(self(batch), batch)

    def loss_count(self, batch: dict) -> int:
        """What ``loss`` is a mean over: the real target tokens (EOS included, BOS not)."""
        return target_count(batch)

    # -------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def predict(self, batch: dict, *, beam_size: int | None = None, max_length: int | None = None,
                length_penalty: float | None = None) -> list[list[int]]:
        """Decode each source: target token ids without BOS and EOS. Beam search when
        ``beam_size`` (default: the configured one) is above 1, greedy otherwise."""
        cfg = self.config
        beam_size = cfg["beam_size"] if beam_size is None else beam_size
        max_length = cfg["max_target_length"] if max_length is None else max_length
        length_penalty = cfg["length_penalty"] if length_penalty is None else length_penalty
        states, extra = self.encode(batch)
        B = len(batch["lengths"])
        bos = torch.full((B,), self.bos_id, dtype=torch.long, device=self.device)
        log_probs, bundle = self._step(bos, (states, extra))
        if beam_size == 1:
            return greedy(self._step, bundle, log_probs, max_length=max_length, eos_id=self.eos_id)
        return beam_search(self._step, bundle, log_probs, beam_size=beam_size, max_length=max_length,
                           eos_id=self.eos_id, length_penalty=length_penalty)
