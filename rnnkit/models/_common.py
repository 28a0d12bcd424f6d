"""What every task head shares: the encoder option dict, input embedding, state helpers and
batch validation.

Heads take their recurrent part as a JSON-safe dict of ``rnnkit.Stack`` options, e.g.
``encoder={"cell": "lstm", "hidden_sizes": [64, 64], "bidirectional": True}``; missing keys take
``ENCODER_DEFAULTS``. The dict is stored in ``head.config`` as given (after validation), so
``type(head)(**head.config)`` rebuilds the architecture.

Batch checks raise ``ValueError`` / ``TypeError`` naming the batch key, what came in and what
is allowed (docs/contracts.md, "Batches").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .._checks import _shape, check_bool, check_choice, check_int, check_rate, exporting
from ..layers import MERGES, Bidirectional, BiState, Stack
from ..recurrence import length_mask, zero_padding

__all__ = ["ENCODER_DEFAULTS", "encoder_config", "build_stack", "InputLayer", "BigramFeatures", "hidden_of",
           "final_features", "final_size", "map_state", "detach_state", "check_batch", "check_tokens",
           "check_values", "check_class_labels", "check_choice", "check_int", "check_rate",
           "check_bool", "length_mask", "last_step", "layer_outputs"]

ENCODER_DEFAULTS = {
    "cell": "gru",             # rnn | gru | lstm | any cell registered in layers.CELLS
    "hidden_sizes": [64],      # one H per layer ([Hf, Hb] for a bidirectional layer)
    "bidirectional": False,    # for all layers, or one bool per layer
    "merge": "concat",         # concat | sum | mul | mean ("none" cannot feed a head)
    "residual": False,         # residual connections from the second layer on
    "layer_norm": False,       # LayerNorm between layers
    "cell_layer_norm": False,  # layer-normalised GRU/LSTM cells
    "dropout": 0.0,            # dropout between layers
    "recurrent_dropout": 0.0,  # variational dropout on the recurrent state
}
# Passed to Stack only when given: they exist for some cells only.
_CELL_OPTIONS = ("nonlinearity", "forget_bias", "bias")


# ------------------------------------------------------------------------- arguments

def encoder_config(encoder: dict | None, *, name: str = "encoder",
                   unidirectional_reason: str | None = None) -> dict:
    """Validate a dict of Stack options and return a JSON-safe copy with defaults filled in.

    ``unidirectional_reason``: if given, a bidirectional setting is refused with this reason.
    """
    if encoder is None:
        encoder = {}
    if not isinstance(encoder, dict):
        raise TypeError(f"{name} must be a dict of rnnkit.Stack options such as "
                        f"{{'cell': 'gru', 'hidden_sizes': [64]}}; got {type(encoder).__name__}")
    allowed = (*ENCODER_DEFAULTS, *_CELL_OPTIONS)
    unknown = sorted(set(encoder) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(allowed)}")
    cfg = {**ENCODER_DEFAULTS, **encoder}
    sizes = cfg["hidden_sizes"]
    cfg["hidden_sizes"] = [sizes] if isinstance(sizes, int) else [
        list(s) if isinstance(s, (tuple, list)) else s for s in sizes]
    if not isinstance(cfg["bidirectional"], bool):
        cfg["bidirectional"] = list(cfg["bidirectional"])
    try:
        cfg = json.loads(json.dumps(cfg))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold only JSON values (str, int, float, bool, lists); "
                        f"got {encoder!r}") from None
    if cfg["merge"] == "none":
        raise ValueError(f"{name}['merge'] must be one of {', '.join(m for m in MERGES if m != 'none')} "
                         "for a task head (merge='none' keeps the directions on a separate axis); "
                         "got 'none'")
    bidi = cfg["bidirectional"]
    if unidirectional_reason and (bidi is True or (isinstance(bidi, list) and any(bidi))):
        raise ValueError(f"{name}['bidirectional'] must be False: {unidirectional_reason}; got {bidi!r}")
    return cfg


def build_stack(input_size: int, cfg: dict) -> Stack:
    """The Stack an ``encoder_config`` dict describes (Stack validates the values)."""
    options = dict(cfg)
    sizes = [tuple(s) if isinstance(s, list) else s for s in options.pop("hidden_sizes")]
    return Stack(input_size, sizes, **options)


def layer_outputs(stack: Stack, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
    """Every layer's output (B, T, H_k) of ``stack`` on x, as ``Stack.forward`` computes them
    (residual, layer norm and dropout between layers included, padding zeroed where those
    would write into it); the last equals ``stack(x, lengths=lengths)[0]``. ELMo's features
    mix all layers, and a Stack returns only its top."""
    from .. import recurrence

    B, T = x.shape[:2]
    valid = None
    if (stack.layer_norm or stack.residual) and lengths is not None:
        valid = recurrence.length_mask(lengths, T)[..., None].to(x.dtype)  # (B, T, 1)
    outputs, last = [], stack.num_layers - 1
    for i, (layer, proj, norm) in enumerate(zip(stack.layers, stack.projections, stack.norms)):
        y, _ = layer(x, lengths=lengths)
        if stack.residual and i > 0:
            y = y + proj(x)
        if i < last:
            y = stack.drop(norm(y))
            if valid is not None:
                y = y * valid
        outputs.append(y)
        x = y
    return outputs


class InputLayer(nn.Module):
    """Token ids (B, T) -> embeddings (B, T, E), or numeric values (B, T, D) passed through.

    Exactly one of ``vocab_size`` (ids; 0 is padding and embeds to zeros) or ``input_size``
    (values) is given. ``dropout`` applies to embeddings only: dropping raw numeric features
    would mostly add noise the model cannot undo.
    """

    def __init__(self, *, vocab_size: int | None, input_size: int | None, embedding_dim: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (token ids) or input_size (numeric "
                             f"values); got vocab_size={vocab_size!r}, input_size={input_size!r}")
        check_int("vocab_size", vocab_size, low=2, optional=True)
        check_int("input_size", input_size, optional=True)
        check_int("embedding_dim", embedding_dim)
        self.vocab_size, self.input_size = vocab_size, input_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0) if vocab_size else None
        self.output_size = embedding_dim if vocab_size else input_size
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.embedding(x)) if self.embedding is not None else x


class BigramFeatures(nn.Module):
    """Token ids (B, T) -> the embeddings of each token's two bigrams, ``(x[t-1], x[t])`` and
    ``(x[t], x[t+1])``, joined: (B, T, 2D).

    Character bigrams are what Chinese NER and sentiment models add to single characters (most
    words there are two characters long; Zhang & Yang 2018 use them beside the lattice). A bigram
    is hashed into one of ``buckets`` rows (fastText's hashing trick), so the model needs no
    bigram vocabulary: it reads the token ids it already gets, and so do ``predict``, ``serve``
    and the exported graph. Padding (id 0) marks both ends of a sentence. Two bigrams may share
    a row; with as many buckets as bigrams seen twice or more, those are mostly rare ones.
    """

    # ((key mod P) * M mod Q) mod buckets: a universal hash, spread whatever the bucket count (a
    # power of two too); key mod P times M stays below 2^63, so int64 never overflows
    P, M, Q = 2147483647, 2654435761, 4294967291

    def __init__(self, vocab_size: int, buckets: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_int("bigram_buckets", buckets, low=2)
        check_int("bigram_embedding_dim", dim)
        self.vocab_size, self.buckets = vocab_size, buckets
        self.embedding = nn.Embedding(buckets, dim)
        self.output_size = 2 * dim
        self.drop = nn.Dropout(dropout)

    def bucket(self, a: Tensor, b: Tensor) -> Tensor:
        """The row of bigram (a, b) of token ids in [0, vocab_size)."""
        return (a * self.vocab_size + b) % self.P * self.M % self.Q % self.buckets

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        B, T = ids.shape
        x = ids.masked_fill(~length_mask(lengths, T), 0)  # past the end reads as the boundary
        edge = x.new_zeros(B, 1)
        left = torch.cat([edge, x[:, :-1]], dim=1)
        right = torch.cat([x[:, 1:], edge], dim=1)
        rows = torch.stack([self.bucket(left, x), self.bucket(x, right)], dim=-1)  # (B, T, 2)
        return self.drop(self.embedding(rows).reshape(B, T, -1))


# ----------------------------------------------------------------------------- states

def hidden_of(state) -> Tensor:
    """h (B, H) of one layer's final state; a BiState gives [h_forward, h_backward] (B, Hf+Hb)."""
    if isinstance(state, BiState):
        return torch.cat([hidden_of(state.forward), hidden_of(state.backward)], dim=-1)
    return state[0] if isinstance(state, tuple) else state


def map_state(fn: Callable[[Tensor], Tensor], state):
    """Apply ``fn`` to every tensor in a (nested) state: tensors, (h, c), BiState, lists, None."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, BiState):
        return BiState(map_state(fn, state.forward), map_state(fn, state.backward))
    if isinstance(state, tuple):
        return tuple(map_state(fn, s) for s in state)
    if isinstance(state, list):
        return [map_state(fn, s) for s in state]
    raise TypeError(f"a state holds tensors, tuples, lists or None; got {type(state).__name__}")


def detach_state(state):
    return map_state(Tensor.detach, state)


def last_step(out: Tensor, lengths: Tensor) -> Tensor:
    """out (B, T, H) -> (B, H), the step at each sequence's true end."""
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
    return out.gather(1, index)[:, 0]


def final_size(stack: Stack) -> int:
    """F, the width of ``final_features`` for this stack."""
    top = stack.layers[-1]
    if isinstance(top, Bidirectional):
        return top.forward_layer.output_size + top.backward_layer.output_size
    return top.output_size


def final_features(out: Tensor, states: list, lengths: Tensor) -> Tensor:
    """The sequence summary behind ``pooling="last"``: (B, F).

    A unidirectional top layer gives its output at each sequence's true end (residual
    included). A bidirectional one gives the forward state there joined with the backward state
    after it has read position 0 -- both directions' final h, F = Hf + Hb whatever the merge.
    """
    top = states[-1]
    if isinstance(top, BiState):
        return hidden_of(top)
    return last_step(out, lengths)


# ---------------------------------------------------------------------------- batches

def check_batch(batch, required: Sequence[str]) -> int:
    """Check that ``batch`` is a dict holding tensors under ``required``; return B (> 0)."""
    if not isinstance(batch, dict):
        raise TypeError(f"batch must be a dict of tensors (docs/contracts.md); got {type(batch).__name__}")
    missing = [k for k in required if k not in batch]
    if missing:
        raise ValueError(f"batch is missing key(s) {', '.join(map(repr, missing))}; this head needs "
                         f"{', '.join(map(repr, required))}; got keys {', '.join(map(repr, batch)) or 'none'}")
    for k in required:
        if not isinstance(batch[k], Tensor):
            raise TypeError(f"batch['{k}'] must be a torch.Tensor; got {type(batch[k]).__name__}")
    B = batch[required[0]].shape[0] if batch[required[0]].dim() else 0
    if B == 0:
        raise ValueError(f"batch is empty: batch['{required[0]}'] has shape {_shape(batch[required[0]])}; "
                         "a batch needs at least one sequence")
    return B


def _check_lengths(batch, key: str, lengths_key: str, B: int, T: int,
                   max_length: int | None) -> Tensor:
    lengths = batch[lengths_key]
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"batch['{lengths_key}'] must be int64 of shape (B,) = ({B},); "
                         f"got {lengths.dtype} {_shape(lengths)}")
    if exporting():  # values are checked by the eager call and the export's parity check
        return lengths.long()
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > T:
        raise ValueError(f"batch['{lengths_key}'] must be in [1, T] = [1, {T}] (T from batch['{key}']); "
                         f"got min {lo}, max {hi}")
    if max_length is not None and hi > max_length:
        raise ValueError(f"batch['{key}'] holds a sequence of length {hi}, longer than max_length = "
                         f"{max_length} allowed by this head; cut or split it, or build the head with "
                         "a larger max_length")
    return lengths.long()


def check_tokens(batch, key: str = "inputs", lengths_key: str = "lengths", *, vocab_size: int,
                 max_length: int | None = None, device=None) -> tuple[Tensor, Tensor]:
    """Validate token ids (B, T) in [0, V) at real steps and their lengths; return both."""
    B = check_batch(batch, (key, lengths_key))
    ids = batch[key]
    if ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"batch['{key}'] must be int64 token ids of shape (B, T); got {ids.dtype} {_shape(ids)}")
    T = ids.shape[1]
    if T == 0:
        raise ValueError(f"batch['{key}'] is empty along time: shape {_shape(ids)}; sequences need >= 1 step")
    lengths = _check_lengths(batch, key, lengths_key, B, T, max_length)
    valid = length_mask(lengths.to(ids.device), T)
    real = ids[valid] if not exporting() else None
    lo, hi = (int(real.min()), int(real.max())) if real is not None else (0, 0)
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"batch['{key}'] must hold token ids in [0, {vocab_size - 1}] (vocab_size = "
                         f"{vocab_size}); got min {lo}, max {hi}")
    # Whatever lies past a sequence's end is never read; zeroing it keeps any filler (even ids
    # outside the vocabulary) away from the embedding lookup.
    return ids.long().masked_fill(~valid, 0).to(device), lengths.to(device)


def check_values(batch, key: str = "inputs", lengths_key: str = "lengths", *, input_size: int,
                 max_length: int | None = None, device=None, dtype=None) -> tuple[Tensor, Tensor]:
    """Validate numeric input (B, T, D) and its lengths; return both."""
    B = check_batch(batch, (key, lengths_key))
    x = batch[key]
    if x.dim() != 3 or not x.is_floating_point() or x.shape[2] != input_size:
        raise ValueError(f"batch['{key}'] must be float values of shape (B, T, D) with D = input_size = "
                         f"{input_size}; got {x.dtype} {_shape(x)}")
    if x.shape[1] == 0:
        raise ValueError(f"batch['{key}'] is empty along time: shape {_shape(x)}; sequences need >= 1 step")
    lengths = _check_lengths(batch, key, lengths_key, B, x.shape[1], max_length)
    x = zero_padding(x, length_mask(lengths.to(x.device), x.shape[1]))  # the filler past each end
    return x.to(device=device, dtype=dtype), lengths.to(device)


def check_class_labels(batch, key: str, num_classes: int, B: int, device=None) -> Tensor:
    """Class ids (B,) in [0, K)."""
    check_batch(batch, (key,))
    y = batch[key]
    if y.dim() != 1 or y.shape[0] != B or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"batch['{key}'] must be int64 class ids of shape (B,) = ({B},); "
                         f"got {y.dtype} {_shape(y)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"batch['{key}'] must hold class ids in [0, {num_classes - 1}] "
                         f"(num_classes = {num_classes}); got min {lo}, max {hi}")
    return y.long().to(device)
