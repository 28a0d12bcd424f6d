"""The public building blocks: one-direction layers, Bidirectional, and the deep Stack.

Every layer is batch-first and returns ``(output, state)``:

* ``RNN``, ``GRU``, ``LSTM`` -- one direction over time. ``state`` is h (B, H), or (h, c) for
  the LSTM, taken at each sequence's own last step.
* ``Bidirectional(layer, merge=...)`` -- a forward and a backward copy with their own weights.
  ``state`` is ``BiState(forward=..., backward=...)``: the backward state is the one after it
  has read position 0.
* ``Stack`` -- depth: a list of the layers above with dropout, residual connections and layer
  norm between them. ``state`` is a list with one entry per layer.

Layers only describe what to compute; ``recurrence`` decides how (torch's fused kernel, the
compiled loop or the Python loop).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import interop, recurrence
from ._checks import _shape, check_choice, check_input, check_lengths, check_rate, check_state, exporting
from .cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell, State
from .recurrence import BiPaths, Path
from .scan import MinGRU, MinLSTM

__all__ = ["Recurrent", "RNN", "GRU", "LSTM", "Bidirectional", "BiState", "Stack", "MERGES", "CELLS"]

MERGES = ("concat", "sum", "mul", "mean", "none")


class BiState(NamedTuple):
    """Final states of a bidirectional layer, named per direction."""

    forward: State
    backward: State


# ------------------------------------------------------------------ one-direction layers

class Recurrent(nn.Module):
    """A cell run over time in one direction. Use ``RNN``, ``GRU`` or ``LSTM``.

    ``forward(x, state=None, *, lengths=None, reverse=False)`` with x (B, T, D) returns the
    output (B, T, H), zero at padded steps, and the state at each sequence's true last step.
    ``reverse=True`` reads each sequence from its last real step back to its first.

    ``recompute_chunk=k`` bounds memory on long sequences: when gradients are recorded, the
    sequence runs in chunks of k steps under activation checkpointing, keeping only the state
    at chunk boundaries and recomputing each chunk's activations during backward (same
    outputs and gradients, about one more forward pass of compute).
    """

    kind: str = ""  # "rnn" | "gru" | "lstm": the torch.nn module it mirrors

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 recompute_chunk: int | None = None) -> None:
        super().__init__()
        check_rate("recurrent_dropout", recurrent_dropout)
        if recompute_chunk is not None and (isinstance(recompute_chunk, bool) or not isinstance(
                recompute_chunk, int) or recompute_chunk < 1):
            raise ValueError(f"recompute_chunk must be a positive int (time steps per chunk) or None; "
                             f"got {recompute_chunk!r}")
        self.recurrent_dropout = float(recurrent_dropout)
        self.recompute_chunk = recompute_chunk
        self.cell = self._make_cell(input_size, hidden_size, bias=bias, layer_norm=layer_norm)

    def _make_cell(self, input_size: int, hidden_size: int, *, bias: bool, layer_norm: bool):
        raise NotImplementedError

    input_size = property(lambda self: self.cell.input_size)
    hidden_size = property(lambda self: self.cell.hidden_size)
    output_size = property(lambda self: self.cell.hidden_size)
    is_lstm = property(lambda self: self.cell.is_lstm)

    @property
    def path(self) -> Path:
        """The execution path this layer takes in its current mode (train/eval), and why."""
        return recurrence.choose_path(self.cell, recurrent_dropout=self.recurrent_dropout,
                                      training=self.training)

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def forward(self, x: Tensor, state: State | None = None, *, lengths=None,
                reverse: bool = False) -> tuple[Tensor, State]:
        check_input(x, self.input_size)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, x.device)
        if state is not None:
            check_state(state, B, self.hidden_size, self.is_lstm)
        return recurrence.run(self.cell, x, state, lengths, reverse=reverse,
                              recurrent_dropout=self.recurrent_dropout, training=self.training,
                              recompute_chunk=self.recompute_chunk)

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step: x_t (B, D) -> (h_t (B, H), new state). Same math as ``forward``."""
        if not isinstance(x_t, Tensor) or x_t.dim() != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t must have shape (B, D) with D = input_size = {self.input_size}; "
                             f"got {_shape(x_t)}")
        if state is not None:
            check_state(state, x_t.shape[0], self.hidden_size, self.is_lstm)
        state = self.cell(x_t, state)
        return (state[0] if self.is_lstm else state), state

    # -- interop with torch.nn -----------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.RNNBase) -> "Recurrent":
        """A layer with the weights of a one-layer, one-direction torch.nn.RNN/GRU/LSTM."""
        interop.check_module(module, cls.__name__, kind=cls.kind or None, layers=1, bidirectional=False)
        layer = _layer_like(module)
        interop.copy_from_torch(layer.cell, module, 0)
        return layer

    def to_torch(self) -> nn.RNNBase:
        """A batch-first torch.nn.RNN/GRU/LSTM with this layer's weights."""
        module = interop.torch_module([self.cell], input_size=self.input_size, num_layers=1,
                                      bidirectional=False, dropout=0.0)
        interop.copy_to_torch(self.cell, module, 0)
        return module

    def extra_repr(self) -> str:
        return f"recurrent_dropout={self.recurrent_dropout}" if self.recurrent_dropout else ""


class RNN(Recurrent):
    """Elman RNN over time (``tanh`` or ``relu``). See ``cells.RNNCell`` for the equations."""

    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh",
                 bias: bool = True, recurrent_dropout: float = 0.0,
                 recompute_chunk: int | None = None) -> None:
        self._nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias=bias, recurrent_dropout=recurrent_dropout,
                         recompute_chunk=recompute_chunk)

    def _make_cell(self, input_size, hidden_size, *, bias, layer_norm):
        return RNNCell(input_size, hidden_size, bias=bias, nonlinearity=self._nonlinearity)


class GRU(Recurrent):
    """GRU over time, PyTorch's gate convention; ``layer_norm=True`` normalises the gate
    pre-activations (``cells.LayerNormGRUCell``, which has no biases and no fused kernel)."""

    kind = "gru"

    def _make_cell(self, input_size, hidden_size, *, bias, layer_norm):
        if layer_norm:
            return LayerNormGRUCell(input_size, hidden_size)
        return GRUCell(input_size, hidden_size, bias=bias)


class LSTM(Recurrent):
    """LSTM over time, gate order i, f, g, o; state (h, c). ``forget_bias`` initialises the
    forget gate's bias (None: torch.nn's uniform init); ``layer_norm=True`` uses
    ``cells.LayerNormLSTMCell``."""

    kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 forget_bias: float | None = 1.0, recompute_chunk: int | None = None) -> None:
        self._forget_bias = forget_bias
        super().__init__(input_size, hidden_size, bias=bias, layer_norm=layer_norm,
                         recurrent_dropout=recurrent_dropout, recompute_chunk=recompute_chunk)

    def _make_cell(self, input_size, hidden_size, *, bias, layer_norm):
        if layer_norm:
            return LayerNormLSTMCell(input_size, hidden_size, forget_bias=self._forget_bias)
        return LSTMCell(input_size, hidden_size, bias=bias,
                        forget_bias=self._forget_bias if bias else None)


CELLS = {"rnn": RNN, "gru": GRU, "lstm": LSTM, "mingru": MinGRU, "minlstm": MinLSTM}


# --------------------------------------------------------------------------- Bidirectional

class Bidirectional(nn.Module):
    """Run a layer forward and a copy of it backward, then merge the two outputs.

    ``Bidirectional(GRU(D, H), merge="concat")``: the backward layer is a deep copy of
    ``layer`` with freshly initialised weights, or ``backward_layer`` if given (it may have
    another hidden size; then only ``concat`` can merge). Output per merge, with Hf, Hb the two
    hidden sizes: ``concat`` (B, T, Hf+Hb); ``sum``, ``mul``, ``mean`` (B, T, H); ``none``
    (B, T, 2, H) with axis 2 = (forward, backward). Padded steps are zero in every merge. The
    backward direction starts at each sequence's own last token. The parameters do not depend
    on ``merge``, so a state_dict loads across merges.
    """

    def __init__(self, layer: nn.Module, *, backward_layer: nn.Module | None = None,
                 merge: str = "concat") -> None:
        super().__init__()
        check_choice("merge", merge, MERGES)
        if not isinstance(layer, nn.Module) or not hasattr(layer, "output_size"):
            raise TypeError(f"layer must be an rnnkit recurrent layer such as rnnkit.GRU(D, H); "
                            f"got {type(layer).__name__}")
        if isinstance(layer, (Bidirectional, Stack)):
            raise TypeError(f"layer must run in one direction; got {type(layer).__name__}")
        if backward_layer is None:
            backward_layer = copy.deepcopy(layer)
            backward_layer.reset_parameters()
        elif backward_layer.input_size != layer.input_size:
            raise ValueError(f"backward_layer.input_size must equal layer.input_size = "
                             f"{layer.input_size}; got {backward_layer.input_size}")
        if backward_layer.output_size != layer.output_size and merge != "concat":
            raise ValueError(f"merge={merge!r} needs both directions of the same size; got forward "
                             f"{layer.output_size} and backward {backward_layer.output_size}, "
                             f"which only merge='concat' allows")
        self.forward_layer = layer
        self.backward_layer = backward_layer
        self.merge = merge

    input_size = property(lambda self: self.forward_layer.input_size)
    is_lstm = property(lambda self: self.forward_layer.is_lstm)

    @property
    def output_size(self) -> int:
        """Features per step of the merged output (per direction for ``none``)."""
        f, b = self.forward_layer.output_size, self.backward_layer.output_size
        return f + b if self.merge == "concat" else f

    @property
    def path(self) -> BiPaths:
        """The path each direction takes in the current mode, and whether one call runs both
        (``together``): where both can share it, else each as a single direction
        (recurrence.bidirectional_paths)."""
        fw, bw = self.forward_layer, self.backward_layer
        if not (isinstance(fw, Recurrent) and isinstance(bw, Recurrent)):
            return BiPaths(fw.path, bw.path, False)  # parallel-scan layers each run on their own
        return recurrence.bidirectional_paths(
            fw.cell, bw.cell, recurrent_dropout=(fw.recurrent_dropout, bw.recurrent_dropout),
            training=self.training, recompute_chunk=(fw.recompute_chunk, bw.recompute_chunk))

    def reset_parameters(self) -> None:
        self.forward_layer.reset_parameters()
        self.backward_layer.reset_parameters()

    def forward(self, x: Tensor, state: BiState | None = None, *,
                lengths=None) -> tuple[Tensor, BiState]:
        check_input(x, self.input_size)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, x.device)
        fw, bw = self.forward_layer, self.backward_layer
        state = self._checked_state(state, B)
        if isinstance(fw, Recurrent) and isinstance(bw, Recurrent):
            out, f_state, b_state = recurrence.run_bidirectional(
                fw.cell, bw.cell, x, state, lengths,
                recurrent_dropout=(fw.recurrent_dropout, bw.recurrent_dropout), training=self.training,
                recompute_chunk=(fw.recompute_chunk, bw.recompute_chunk))
            if self.merge == "concat":  # the kernels already wrote (B, T, Hf+Hb): no copy
                return out, BiState(f_state, b_state)
            f_out, b_out = out.split([fw.output_size, bw.output_size], dim=-1)
        else:  # other layers (e.g. parallel-scan cells) reverse themselves
            f_out, f_state = fw(x, state[0], lengths=lengths)
            b_out, b_state = bw(x, state[1], lengths=lengths, reverse=True)
        return self.merge_outputs(f_out, b_out), BiState(f_state, b_state)

    def _checked_state(self, state, B: int, name: str = "state") -> tuple:
        """(forward, backward) initial states, each None or checked against the layer."""
        if state is None:
            return (None, None)
        if not (isinstance(state, tuple) and len(state) == 2):
            raise TypeError(f"{name} must be a BiState(forward, backward) or None; got {_shape(state)}")
        for s, layer, part in zip(state, (self.forward_layer, self.backward_layer), ("forward", "backward")):
            if s is not None:
                check_state(s, B, layer.output_size, layer.is_lstm, f"{name}.{part}")
        return tuple(state)

    def merge_outputs(self, f: Tensor, b: Tensor) -> Tensor:
        """Apply ``self.merge`` to the two directions' outputs (B, T, Hf) and (B, T, Hb)."""
        if self.merge == "concat":
            return torch.cat([f, b], dim=-1)  # (B, T, Hf+Hb)
        if self.merge == "sum":
            return f + b
        if self.merge == "mul":
            return f * b
        if self.merge == "mean":
            return (f + b) * 0.5
        return torch.stack([f, b], dim=2)  # (B, T, 2, H)

    @classmethod
    def from_torch(cls, module: nn.RNNBase, *, merge: str = "concat") -> "Bidirectional":
        """A Bidirectional layer with the weights of a one-layer bidirectional torch.nn module."""
        interop.check_module(module, cls.__name__, layers=1, bidirectional=True)
        fw, bw = _layer_like(module), _layer_like(module)
        interop.copy_from_torch(fw.cell, module, 0)
        interop.copy_from_torch(bw.cell, module, 0, "_reverse")
        return cls(fw, backward_layer=bw, merge=merge)

    def to_torch(self) -> nn.RNNBase:
        """A batch-first bidirectional torch.nn module with these weights (its output is the
        ``concat`` merge)."""
        cells = [_cell_of(self.forward_layer), _cell_of(self.backward_layer)]
        module = interop.torch_module(cells, input_size=self.input_size, num_layers=1,
                                      bidirectional=True, dropout=0.0)
        interop.copy_to_torch(cells[0], module, 0)
        interop.copy_to_torch(cells[1], module, 0, "_reverse")
        return module

    def extra_repr(self) -> str:
        return f"merge={self.merge!r}"


# ---------------------------------------------------------------------------------- Stack

class Stack(nn.Module):
    """Deep recurrent network: layers of (bidirectional) RNN/GRU/LSTM, one after another.

    Args:
        input_size: D, features per input step.
        hidden_sizes: one entry per layer: H, or (Hf, Hb) for a bidirectional layer with
            per-direction sizes (``merge="concat"`` only).
        cell: ``rnn`` | ``gru`` | ``lstm`` (more cells register themselves in ``CELLS``).
        bidirectional: for all layers, or one bool per layer.
        merge: how bidirectional layers join their directions; ``none`` only for the last.
        residual: add each layer's input to its output from the second layer on (through a
            bias-free linear projection where the widths differ).
        layer_norm: LayerNorm over features between layers.
        cell_layer_norm: layer-normalised cells (GRU and LSTM).
        dropout: dropout between layers (not after the last), as torch.nn.GRU's ``dropout``.
        recurrent_dropout: variational dropout on the recurrent state, one mask per sequence.
        recompute_chunk: time steps per activation-checkpointing chunk, to bound memory on long
            sequences (RNN, GRU, LSTM; see ``Recurrent``).
        nonlinearity, forget_bias, bias: passed to the cells.

    ``forward(x, states=None, *, lengths=None)`` returns the last layer's output and a list of
    per-layer final states (``BiState`` for bidirectional layers).
    """

    def __init__(self, input_size: int, hidden_sizes: int | Sequence, *, cell: str = "gru",
                 bidirectional: bool | Sequence[bool] = False, merge: str = "concat",
                 residual: bool = False, layer_norm: bool = False, cell_layer_norm: bool = False,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 nonlinearity: str = "tanh", forget_bias: float | None = 1.0,
                 bias: bool = True, recompute_chunk: int | None = None) -> None:
        super().__init__()
        sizes = [hidden_sizes] if isinstance(hidden_sizes, int) else list(hidden_sizes)
        if not sizes:
            raise ValueError("hidden_sizes must name at least one layer; got []")
        L = len(sizes)
        check_choice("cell", cell, tuple(CELLS))
        check_choice("merge", merge, MERGES)
        check_rate("dropout", dropout)
        bidis = [bidirectional] * L if isinstance(bidirectional, bool) else list(bidirectional)
        if len(bidis) != L:
            raise ValueError(f"bidirectional must be a bool or one bool per layer ({L}); got {bidirectional!r}")
        if merge == "none" and (L > 1 or residual):
            raise ValueError("merge='none' keeps the directions on a separate axis, which no next layer "
                             "or residual can take; it is allowed only for a single-layer Stack without "
                             "residual. Use concat, sum, mul or mean")
        # the cell's name; each layer's .cell is the cell module itself
        self.cell_type, self.merge, self.residual = cell, merge, bool(residual)
        self.dropout = float(dropout)
        options = {"recurrent_dropout": recurrent_dropout}
        if cell in ("rnn", "gru", "lstm"):
            options["recompute_chunk"] = recompute_chunk
        elif recompute_chunk is not None:
            raise ValueError(f"recompute_chunk is for cell='rnn', 'gru' or 'lstm' (a scan keeps no per-step "
                             f"activations to recompute); got cell={cell!r}")
        if cell == "rnn":
            options.update(nonlinearity=nonlinearity, bias=bias)
            if cell_layer_norm:
                raise ValueError("cell_layer_norm is for cell='gru' or 'lstm'; got cell='rnn'")
        elif cell in ("gru", "lstm"):
            options.update(layer_norm=cell_layer_norm, bias=bias)
            if cell == "lstm":
                options["forget_bias"] = forget_bias
        else:  # registered cells without recurrent weights (mingru, minlstm) take bias only
            options["bias"] = bias
            if cell_layer_norm:
                raise ValueError(f"cell_layer_norm is for cell='gru' or 'lstm'; got cell={cell!r}")
        layer_cls = CELLS[cell]
        self.layers, self.projections, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        width = input_size
        for i, (size, bidi) in enumerate(zip(sizes, bidis)):
            pair = isinstance(size, (tuple, list))
            if pair and not bidi:
                raise ValueError(f"hidden_sizes[{i}] = {size!r} gives two directions' sizes, but layer {i} "
                                 "is not bidirectional")
            if bidi:
                f_size, b_size = (size if pair else (size, size))
                layer = Bidirectional(layer_cls(width, f_size, **options),
                                      backward_layer=layer_cls(width, b_size, **options), merge=merge)
            else:
                layer = layer_cls(width, size, **options)
            self.layers.append(layer)
            out_width = layer.output_size
            if self.residual and i > 0:
                self.projections.append(nn.Identity() if out_width == width
                                        else nn.Linear(width, out_width, bias=False))
            else:
                self.projections.append(nn.Identity())
            if layer_norm and i < L - 1:
                self.norms.append(nn.LayerNorm(out_width))
            else:
                self.norms.append(nn.Identity())
            width = out_width
        self.layer_norm = bool(layer_norm)
        self.input_size, self.output_size = input_size, width
        # Shaped as a torch.nn module could be: then one kernel call may run all layers.
        self._one_call = (L > 1 and cell in ("rnn", "gru", "lstm") and recompute_chunk is None
                          and not self.residual and not self.layer_norm and len(set(bidis)) == 1
                          and (merge == "concat" or not bidis[0]))
        self.drop = nn.Dropout(dropout)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def bidirectional(self) -> bool:
        return any(isinstance(layer, Bidirectional) for layer in self.layers)

    @property
    def paths(self) -> list:
        """Per layer, the execution path (a ``BiPaths`` of two for bidirectional layers)."""
        return [layer.path for layer in self.layers]

    def forward(self, x: Tensor, states: Sequence | None = None, *,
                lengths=None) -> tuple[Tensor, list]:
        check_input(x, self.input_size)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, x.device)
        if states is None:
            states = [None] * self.num_layers
        elif not isinstance(states, (list, tuple)) or len(states) != self.num_layers:
            raise ValueError(f"states must be a list with one state per layer ({self.num_layers}); "
                             f"got {_shape(states) if not isinstance(states, (list, tuple)) else len(states)}")
        if self._one_call:
            fused = self._forward_in_one_call(x, states, lengths)
            if fused is not None:
                return fused
        valid = None  # only a norm's shift or a residual can write into the padding
        if (self.layer_norm or self.residual) and lengths is not None and (
                exporting() or bool((lengths < T).any())):
            valid = recurrence.length_mask(lengths, T)[..., None].to(x.dtype)  # (B, T, 1)
        finals = []
        last = self.num_layers - 1
        for i, (layer, proj, norm, state) in enumerate(zip(self.layers, self.projections, self.norms, states)):
            y, final = layer(x, state, lengths=lengths)
            finals.append(final)
            if self.residual and i > 0:
                y = y + proj(x)
            if i < last:
                y = self.drop(norm(y))
                if valid is not None:
                    y = y * valid
            x = y
        return x, finals

    def _forward_in_one_call(self, x: Tensor, states: Sequence, lengths: Tensor | None):
        """All layers in one torch call, as torch.nn.GRU(num_layers=L) runs them (the batch is
        packed once, not once per layer); None when recurrence declines (another path)."""
        B = x.shape[0]
        cells, initial, rates = [], [], []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            if isinstance(layer, Bidirectional):
                directions = (layer.forward_layer, layer.backward_layer)
                initial += layer._checked_state(state, B, f"states[{i}]")
            else:
                directions = (layer,)
                if state is not None:
                    check_state(state, B, layer.hidden_size, layer.is_lstm, f"states[{i}]")
                initial.append(state)
            cells.append([d.cell for d in directions])
            rates += [d.recurrent_dropout for d in directions]
        result = recurrence.run_layers(cells, x, initial, lengths, dropout=self.dropout,
                                       recurrent_dropout=rates, training=self.training)
        if result is None:
            return None
        out, finals = result
        if len(cells[0]) == 2:
            finals = [BiState(finals[2 * k], finals[2 * k + 1]) for k in range(self.num_layers)]
        return out, finals

    def step(self, x_t: Tensor, states: Sequence | None = None) -> tuple[Tensor, list]:
        """One time step of a unidirectional stack (for decoders): x_t (B, D) -> (y_t, states)."""
        if self.bidirectional:
            raise ValueError("a bidirectional Stack cannot run step by step: its backward direction "
                             "needs the whole sequence first")
        y, states = self(x_t[:, None], states)
        return y[:, 0], states

    # -- interop with torch.nn -----------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.RNNBase) -> "Stack":
        """A Stack with the weights (and dropout) of a torch.nn.RNN/GRU/LSTM of any depth."""
        kind = interop.check_module(module, cls.__name__)
        options = dict(cell=kind, bidirectional=module.bidirectional, dropout=module.dropout,
                       bias=module.bias)
        if kind == "rnn":
            options["nonlinearity"] = module.nonlinearity
        if kind == "lstm":
            options["forget_bias"] = None
        stack = cls(module.input_size, [module.hidden_size] * module.num_layers, **options)
        for k, layer in enumerate(stack.layers):
            if module.bidirectional:
                interop.copy_from_torch(layer.forward_layer.cell, module, k)
                interop.copy_from_torch(layer.backward_layer.cell, module, k, "_reverse")
            else:
                interop.copy_from_torch(layer.cell, module, k)
        return stack

    def to_torch(self) -> nn.RNNBase:
        """A batch-first torch.nn module with these weights; only for stacks torch.nn can express
        (same size and direction in every layer, concat merge, no residual or layer norm)."""
        bidis = {isinstance(layer, Bidirectional) for layer in self.layers}
        sizes = {layer.output_size for layer in self.layers}
        if self.residual or self.layer_norm or len(bidis) != 1 or len(sizes) != 1 or (
                bidis == {True} and self.merge != "concat"):
            raise ValueError("to_torch needs a Stack that torch.nn can express: the same hidden size and "
                             "direction in every layer, merge='concat', residual=False, layer_norm=False")
        bidi = bidis.pop()
        per_layer = [(layer.forward_layer, layer.backward_layer) if bidi else (layer,) for layer in self.layers]
        cells = [[_cell_of(one) for one in directions] for directions in per_layer]
        module = interop.torch_module([c for layer in cells for c in layer], input_size=self.input_size,
                                      num_layers=self.num_layers, bidirectional=bidi, dropout=self.dropout)
        for k, layer in enumerate(cells):
            for cell, suffix in zip(layer, ("", "_reverse")):
                interop.copy_to_torch(cell, module, k, suffix)
        return module


def _layer_like(module) -> Recurrent:
    """An rnnkit layer of the kind and sizes of a torch.nn module (weights not copied)."""
    kind = interop.kind_of(module)
    if kind == "rnn":
        return RNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, bias=module.bias)
    if kind == "lstm":
        return LSTM(module.input_size, module.hidden_size, bias=module.bias, forget_bias=None)
    return GRU(module.input_size, module.hidden_size, bias=module.bias)


def _cell_of(layer):
    return getattr(layer, "cell", layer)  # a layer without a cell (MinGRU) is refused by name
