"""A bidirectional language model done right (ELMo, Peters et al. 2018): two causal language
models, one reading left to right and one right to left, that never see the word they predict.

    inputs (B, T) -> <bos> w_1 .. w_n <eos> -> shared embedding (B, T+2, E)
        -> forward Stack  (unidirectional), reading  <bos> w_1 .. w_n      -> predicts w_1 .. <eos>
        -> backward Stack (unidirectional), reading  <eos> w_n .. w_1      -> predicts w_n .. <bos>
        -> one shared output layer (optionally tied to the embedding) -> (B, T+1, V) per direction

A bidirectional *encoder* cannot be a language model: its backward half has already read the
token the forward half must predict (d2l.ai's warning; ``LanguageModel`` refuses one). Here the
two directions are separate Stacks that meet only in the loss -- the mean of the forward
next-token and the backward previous-token cross-entropy -- so the prediction of w_t reads
w_1 .. w_{t-1} (forward) or w_{t+1} .. w_n (backward) and nothing else. The backward Stack runs
on each sentence reversed within its own length (``recurrence.reverse_padded``, the same
gather ``Bidirectional`` uses), so it starts at the sentence's ``<eos>``, never at padding.

Batches are sentences (``inputs`` (B, T), ``lengths`` (B,)): the model adds ``<bos>`` and
``<eos>`` itself, so any data set's token batches can be read as they are (a tagger's or
classifier's ``labels``, if present, are ignored). ``contextual(batch)`` gives ELMo's vectors per
token: the forward and backward halves at every layer, the token layer, and their merge.

``ContextualFeatures`` puts a pre-trained biLM inside a tagger or classifier: its vectors, mixed
over layers with learned softmax weights and a scale (ELMo's scalar mix), join the word
embedding. The biLM's weights and the head-to-biLM vocabulary map are part of the head's own
state, so the head's checkpoint is complete without the biLM's folder.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..recurrence import reverse_padded
from ._common import (InputLayer, build_stack, check_bool, check_int, check_rate, check_tokens,
                      encoder_config, layer_outputs, length_mask)

__all__ = ["BiLanguageModel", "ContextualFeatures", "ScalarMix", "contextual_config",
           "BIDIRECTIONAL_BILM_ERROR"]

BIDIRECTIONAL_BILM_ERROR = (
    "each direction of a biLM is its own causal language model; a bidirectional layer inside "
    "one would let it read the token it predicts. Give a unidirectional encoder: the model "
    "already runs one forward and one backward Stack of it")


class BiLanguageModel(nn.Module):
    """ELMo-style bidirectional language model: a forward and a backward causal LM sharing the
    token embedding and the output layer.

    Args (keyword-only):
        vocab_size: V (0 = padding; ``bos_id`` and ``eos_id`` must be in the vocabulary).
        embedding_dim: E, shared by both directions.
        encoder: ``rnnkit.Stack`` options for *each* direction; must be unidirectional.
        tie_weights: the output layer reuses the embedding matrix (through a linear H -> E
            projection when the top hidden size H differs from E).
        dropout: on the embeddings and on each direction's top output.
        bos_id, eos_id: the ids that open and close every sentence (the vocabulary's).
        max_length: longest sentence accepted, boundaries not counted (None: any).

    ``forward(batch)`` gives (forward_logits, backward_logits), each (B, T, V): at step t, the
    forward model's and the backward model's scores for token t -- the first read only tokens
    before t, the second only tokens after it. ``loss(batch)`` also scores ``<eos>`` (forward)
    and ``<bos>`` (backward), as ELMo does, so each direction predicts n + 1 tokens per sentence.
    """

    def __init__(self, *, vocab_size: int, embedding_dim: int = 64, encoder: dict | None = None,
                 tie_weights: bool = False, dropout: float = 0.0, bos_id: int = 2, eos_id: int = 3,
                 max_length: int | None = None) -> None:
        super().__init__()
        check_int("vocab_size", vocab_size, low=4)
        check_int("embedding_dim", embedding_dim)
        check_bool("tie_weights", tie_weights)
        check_rate("dropout", dropout)
        check_int("max_length", max_length, optional=True)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            check_int(name, value, low=1)
            if value >= vocab_size:
                raise ValueError(f"{name} must be a token id in [1, {vocab_size - 1}]; got {value}")
        if bos_id == eos_id:
            raise ValueError(f"bos_id and eos_id must differ; got {bos_id} for both")
        encoder = encoder_config(encoder, unidirectional_reason=BIDIRECTIONAL_BILM_ERROR)
        self.config = dict(vocab_size=vocab_size, embedding_dim=embedding_dim, encoder=encoder,
                           tie_weights=tie_weights, dropout=dropout, bos_id=bos_id, eos_id=eos_id,
                           max_length=max_length)
        self.vocab_size, self.bos_id, self.eos_id, self.max_length = vocab_size, bos_id, eos_id, max_length
        self.input = InputLayer(vocab_size=vocab_size, input_size=None, embedding_dim=embedding_dim,
                                dropout=dropout)
        self.forward_encoder = build_stack(embedding_dim, encoder)
        self.backward_encoder = build_stack(embedding_dim, encoder)
        H = self.forward_encoder.output_size
        self.hidden_size = H
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(H, embedding_dim) if tie_weights and H != embedding_dim else nn.Identity()
        self.output = None if tie_weights else nn.Linear(H, vocab_size)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if tie_weights else None

    @property
    def device(self) -> torch.device:
        return self.input.embedding.weight.device

    @property
    def num_layers(self) -> int:
        return self.forward_encoder.num_layers

    # ------------------------------------------------------------------------ running

    def _framed(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Sentence ids (B, T) -> ``<bos> w_1 .. w_n <eos>`` (B, T+2), and lengths n + 2."""
        ids, lengths = check_tokens(batch, vocab_size=self.vocab_size, max_length=self.max_length,
                                    device=self.device)
        B, T = ids.shape
        framed = ids.new_zeros(B, T + 2)
        framed[:, 0] = self.bos_id
        framed[:, 1:T + 1] = ids
        framed.scatter_(1, (lengths + 1)[:, None], self.eos_id)
        return framed, lengths + 2

    def _run(self, framed: Tensor, lengths: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The token layer (B, T+2, E) and each layer's output per direction (B, T+2, H), all in
        reading order of the sentence (the backward outputs put back in place)."""
        x = self.input(framed)
        forward = layer_outputs(self.forward_encoder, x, lengths)
        backward = layer_outputs(self.backward_encoder, reverse_padded(x, lengths), lengths)
        return x, forward, [reverse_padded(h, lengths) for h in backward]

    def _logits(self, h: Tensor) -> Tensor:
        h = self.proj(self.drop(h))
        if self.output is None:
            return F.linear(h, self.input.embedding.weight, self.output_bias)
        return self.output(h)

    def scores(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Logits over the framed sentence: forward (B, T+1, V) at step j scores framed token
        j + 1, backward (B, T+1, V) at step j scores framed token j; their targets (B, T+1) each
        (0 where nothing is scored: past ``<eos>``)."""
        framed, lengths = self._framed(batch)
        _, forward, backward = self._run(framed, lengths)
        logits_f = self._logits(forward[-1][:, :-1])   # state after framed 0..j predicts j+1
        logits_b = self._logits(backward[-1][:, 1:])   # state after framed end..j+1 predicts j
        keep = length_mask(lengths - 1, framed.shape[1] - 1)  # n + 1 scored steps per sentence
        return logits_f, logits_b, framed[:, 1:].masked_fill(~keep, 0), framed[:, :-1].masked_fill(~keep, 0)

    def forward(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(forward_logits, backward_logits), each (B, T, V): both directions' scores for token
        t at step t (steps past a sentence's length are not predictions of its tokens)."""
        logits_f, logits_b, _, _ = self.scores(batch)
        return logits_f[:, :-1], logits_b[:, 1:]

    def direction_nll(self, batch: dict) -> tuple[Tensor, Tensor, int]:
        """Summed NLL of the forward and of the backward model, and the number of tokens each
        scored (the same for both: every word plus one boundary, per sentence)."""
        logits_f, logits_b, target_f, target_b = self.scores(batch)
        keep = target_f != 0
        nll_f = F.cross_entropy(logits_f[keep], target_f[keep], reduction="sum")
        nll_b = F.cross_entropy(logits_b[keep], target_b[keep], reduction="sum")
        return nll_f, nll_b, int(keep.sum())

    def loss_count(self, batch: dict) -> int:
        """The tokens ``loss`` is a mean over: every word plus one boundary, per sentence (what a
        distributed run weights each process's loss by)."""
        return int((batch["lengths"].long() + 1).sum())

    def loss(self, batch: dict) -> Tensor:
        """Mean of the two directions' mean NLL per scored token."""
        nll_f, nll_b, n = self.direction_nll(batch)
        return (nll_f + nll_b) / (2 * n)

    @torch.no_grad()
    def perplexity(self, batches: Iterable[dict]) -> dict:
        """``{"forward": ppl, "backward": ppl}`` over ``batches``."""
        total_f = total_b = 0.0
        count = 0
        for batch in batches:
            nll_f, nll_b, n = self.direction_nll(batch)
            total_f, total_b, count = total_f + float(nll_f), total_b + float(nll_b), count + n
        if count == 0:
            raise ValueError("perplexity needs at least one batch; got none")
        return {"forward": math.exp(total_f / count), "backward": math.exp(total_b / count)}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[list[int]]:
        """The forward model's most likely token at each position (reads only the tokens before
        it), one list of n ids per sentence: what the head is trained for, shown plainly."""
        logits_f, _ = self(batch)
        best = logits_f.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, batch["lengths"].tolist())]

    # --------------------------------------------------------------------- contextual

    def contextual(self, batch: dict) -> dict[str, Tensor]:
        """ELMo's vectors for every token of every sentence, at the sentence's own positions:

        * ``forward`` (B, T, L, H): layer k's forward state after reading w_1 .. w_t;
        * ``backward`` (B, T, L, H): layer k's backward state after reading w_n .. w_t;
        * ``tokens`` (B, T, E): the token layer (the embedding both directions read).

        Steps past a sentence's length are zeros. Each direction's state at w_t has read w_t
        itself (this is what makes it a representation of w_t); the *predictions* of w_t come
        from the neighbouring states, as ``forward`` describes.
        """
        framed, lengths = self._framed(batch)
        x, forward, backward = self._run(framed, lengths)
        T = framed.shape[1] - 2
        valid = length_mask(lengths - 2, T)[..., None, None]  # (B, T, 1, 1)
        f = torch.stack([h[:, 1:T + 1] for h in forward], dim=2) * valid
        b = torch.stack([h[:, 1:T + 1] for h in backward], dim=2) * valid
        return {"forward": f, "backward": b, "tokens": x[:, 1:T + 1] * valid[..., 0]}


def contextual_config(contextual: dict | None) -> dict | None:
    """Check a head's ``contextual`` option -- ``{"bilm": BiLanguageModel config, "freeze":
    bool}`` -- and return it with ``freeze`` filled in (True). A config file names a checkpoint
    instead (``contextual: {checkpoint: runs/bilm/best}``); ``rnnkit train`` reads it into this
    form and loads the weights (``ContextualFeatures.load_bilm``)."""
    if contextual is None:
        return None
    if not isinstance(contextual, dict):
        raise TypeError(f"contextual must be a dict such as {{'bilm': bilm.config, 'freeze': True}}; "
                        f"got {type(contextual).__name__}")
    if "checkpoint" in contextual:
        raise ValueError("contextual: checkpoint is read by rnnkit train (it loads the biLM and passes "
                         "its config as contextual['bilm']); in Python, build the head with "
                         "contextual={'bilm': bilm.config} and call head.contextual.load_bilm(...)")
    unknown = sorted(set(contextual) - {"bilm", "freeze"})
    if unknown or "bilm" not in contextual:
        raise ValueError(f"contextual takes bilm (a BiLanguageModel config, required) and freeze; got "
                         f"{', '.join(map(repr, contextual)) or 'nothing'}")
    return {"bilm": contextual["bilm"], "freeze": contextual.get("freeze", True)}


class ScalarMix(nn.Module):
    """ELMo's task-specific layer mix: ``gamma * sum_k softmax(s)_k * h_k`` over L layers of the
    same width (weights start equal: a plain average)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        check_int("num_layers", num_layers)
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: Tensor) -> Tensor:
        """layers (..., L, D) -> (..., D)."""
        return self.gamma * (layers * self.weights.softmax(0)[:, None]).sum(-2)


class ContextualFeatures(nn.Module):
    """A pre-trained biLM's vectors as extra input features of a tagger or classifier.

    Args (keyword-only):
        bilm: the ``BiLanguageModel``'s config (its ``.config``); its weights are loaded with
            ``load_bilm`` (``rnnkit train`` does it from ``contextual.checkpoint``) and saved
            with the head.
        vocab_size: the head's vocabulary size V; the buffer ``bilm_ids`` (V,) maps each head
            token id to the biLM's id for the same word (unknown to the biLM -> its ``<unk>``).
        freeze: keep the biLM's weights fixed (and the biLM in eval mode: no dropout); the mix
            and scale still learn. False fine-tunes the biLM with the head.

    Output per token (B, T, 2H): the scalar mix over the biLM's layers of [forward; backward]
    -- its recurrent layers, plus the token layer [e; e] when E equals H (ELMo's case, where
    both are 512), since a mix needs layers of one width.
    """

    def __init__(self, *, bilm: dict, vocab_size: int, freeze: bool = True) -> None:
        super().__init__()
        if not isinstance(bilm, dict):
            raise TypeError(f"contextual['bilm'] must be a BiLanguageModel config dict; got {type(bilm).__name__}")
        check_bool("freeze", freeze)
        check_int("vocab_size", vocab_size, low=2)
        self.bilm = BiLanguageModel(**bilm)
        self.freeze = freeze
        if freeze:
            self.bilm.requires_grad_(False)
        sizes = self.bilm.config["encoder"]["hidden_sizes"]
        H = self.bilm.hidden_size
        self.layers = [k for k, size in enumerate(sizes) if size == H]  # recurrent layers of width H
        self.use_tokens = self.bilm.config["embedding_dim"] == H
        self.mix = ScalarMix(len(self.layers) + int(self.use_tokens))
        self.output_size = 2 * H
        # head id -> biLM id: every word <unk> (1) until load_bilm maps the vocabularies
        ids = torch.ones(vocab_size, dtype=torch.long)
        ids[0] = 0
        self.register_buffer("bilm_ids", ids)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.bilm.eval()  # a frozen biLM gives the same vectors in training and evaluation
        return self

    @torch.no_grad()
    def load_bilm(self, bilm: BiLanguageModel, head_itos: list[str], bilm_stoi: dict[str, int],
                  unk_id: int = 1) -> dict:
        """Copy a trained biLM's weights in and map the head's vocabulary ``head_itos`` onto the
        biLM's ``bilm_stoi``; returns how many head tokens the biLM knows."""
        if bilm.config != self.bilm.config:
            raise ValueError("the biLM given to load_bilm was built with another config than "
                             "contextual['bilm']; build the head from the same biLM")
        if len(head_itos) != len(self.bilm_ids):
            raise ValueError(f"head_itos has {len(head_itos)} tokens but the head's vocab_size is "
                             f"{len(self.bilm_ids)}")
        self.bilm.load_state_dict(bilm.state_dict())
        ids = [0] + [bilm_stoi.get(t, unk_id) for t in head_itos[1:]]  # 0: padding stays padding
        self.bilm_ids.copy_(torch.tensor(ids))
        known = sum(t in bilm_stoi for t in head_itos[1:])
        return {"known": known, "total": len(head_itos) - 1}

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Head token ids (B, T) and lengths (B,) -> mixed biLM vectors (B, T, 2H)."""
        batch = {"inputs": self.bilm_ids[ids], "lengths": lengths}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            v = self.bilm.contextual(batch)
        layers = torch.cat([v["forward"], v["backward"]], dim=-1)[:, :, self.layers]  # (B, T, L', 2H)
        if self.use_tokens:
            tokens = torch.cat([v["tokens"], v["tokens"]], dim=-1)[:, :, None]
            layers = torch.cat([tokens, layers], dim=2)
        return self.mix(layers)
